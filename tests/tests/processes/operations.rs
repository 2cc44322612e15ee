//! What an operator does to a running cluster, done under load with real
//! processes: adding a node, removing one (the leader of a group), replacing
//! a dead node with an empty one, and restarting every node in turn.
//!
//! Each test runs the chaos workload (buys with retried keys, restocks,
//! price changes, reads at every consistency level, and a prober buying one
//! copy every few tens of milliseconds) while the operation happens through
//! `bazar_client::cluster::ClusterAdmin`, the code behind `bazar cluster
//! add-node | remove-node`. Afterwards the history and the final state must
//! pass every check of guarantees §6, and where the operation touches a
//! leader, the longest pause between two successful writes must stay under
//! the 2 s the spec allows after losing a leader.

use std::collections::BTreeSet;
use std::time::Duration;

use bazar_api::Group;
use bazar_client::Client;
use bazar_client::cluster::{AddNodeOptions, CATCH_UP_LAG, ClusterAdmin, ClusterView, Progress};
use bazar_tests::chaos::{self, ChaosConfig};
use bazar_tests::checker::Report;
use bazar_tests::history::{Call, Clock, History, Nanos, Record};
use bazar_tests::runner::{self, RunStats};
use bazar_tests::{ADMIN_TOKEN, Cluster};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The spec's bound on write unavailability after losing a leader.
const WRITE_GAP_BOUND: Duration = Duration::from_secs(2);

/// The workload, running.
struct Load {
    config: ChaosConfig,
    history: History,
    task: JoinHandle<bazar_tests::Result<RunStats>>,
}

/// Starts the workload against every node of `cluster` for `duration`.
async fn start_load(cluster: &Cluster, duration: Duration) -> Load {
    let config = ChaosConfig::new(cluster.endpoints(), ADMIN_TOKEN, Vec::new(), duration);
    let history = History::in_memory(Clock::start());
    eprintln!("workload seed {}", config.runner.seed);
    runner::setup(&config.runner, &history, Duration::from_secs(30)).await.expect("workload setup");
    let task = tokio::spawn(runner::run(config.runner.clone(), history.clone()));
    Load { config, history, task }
}

impl Load {
    /// Waits for the workload to end, then checks the history and the final
    /// state as read from `members` (every node of both groups).
    async fn finish(self, cluster: &mut Cluster, members: &[u64]) -> (Report, Vec<Record>) {
        let stats = self.task.await.expect("workload task").expect("workload");
        eprintln!("workload: {} operations", stats.invoked);
        cluster.wait_ready(Duration::from_secs(30)).await;
        let nodes: Vec<(u64, Client)> = members.iter().map(|id| (*id, cluster.client(*id))).collect();
        let report = chaos::finish(&nodes, &self.history, &self.config).await.expect("final state");
        eprintln!("{}", report.table());
        assert!(report.passed(), "invariants violated:\n{}", report.violations().join("\n"));
        assert!(report.buys.acknowledged > 20, "the workload made progress: {:?}", report.buys);
        (report, self.history.records())
    }
}

/// Cluster administration through `ids`.
fn admin(cluster: &Cluster, ids: &[u64]) -> ClusterAdmin {
    let seeds = ids.iter().map(|id| format!("http://{}", cluster.addr(*id))).collect();
    ClusterAdmin::new(cluster.client(ids[0]), seeds)
}

fn show(p: &Progress) {
    eprintln!("  {p}");
}

/// The longest time without a successful buy, and without a successful
/// catalog write (restock, price change), between `from` and `to`. A buy
/// needs both groups; a catalog write needs the catalog only.
fn longest_write_gaps(records: &[Record], from: Nanos, to: Nanos) -> (Duration, Duration) {
    let mut calls = std::collections::HashMap::new();
    let (mut buys, mut catalog) = (vec![from, to], vec![from, to]);
    for r in records {
        match r {
            Record::Invoke { op, call, .. } => {
                calls.insert(*op, call.clone());
            }
            Record::Ok { op, time, .. } if (from..=to).contains(time) => match calls.get(op) {
                Some(Call::Buy { .. }) => buys.push(*time),
                Some(Call::Restock { .. } | Call::SetPrice { .. }) => catalog.push(*time),
                _ => {}
            },
            _ => {}
        }
    }
    let longest = |mut times: Vec<Nanos>| {
        times.sort_unstable();
        Duration::from_nanos(times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0))
    };
    (longest(buys), longest(catalog))
}

fn assert_voters(view: &ClusterView, expected: &BTreeSet<u64>) {
    for g in &view.groups {
        assert_eq!(&g.voters(), expected, "voters of the {} group: {view:#?}", g.group);
        assert!(g.leader_id.is_some_and(|l| expected.contains(&l)), "the {} group has a leader: {view:#?}", g.group);
        assert!(g.members.iter().all(|m| m.voter), "no learner is left behind: {view:#?}");
    }
}

/// Waits until the leader of each group has purged the start of its log, so
/// that a node added now can only catch up from a snapshot.
async fn wait_purged(admin: &ClusterAdmin, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let view = admin.status().await.expect("cluster status");
        let purged = view.groups.iter().all(|g| {
            let leader = g.leader_id.and_then(|l| g.member(l));
            leader.and_then(|l| l.purged_index).unwrap_or(0) > 0
        });
        if purged {
            return;
        }
        assert!(Instant::now() < deadline, "the leaders did not purge their logs: {view:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until node `id` is back in both groups and no more than
/// [`CATCH_UP_LAG`] entries behind either leader.
async fn wait_caught_up(admin: &ClusterAdmin, id: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(view) = admin.status().await {
            let back = view.groups.iter().all(|g| {
                g.leader_id.is_some()
                    && g.member(id).is_some_and(|m| {
                        m.role != "unreachable" && (g.leader_id == Some(id) || m.lag.is_some_and(|l| l <= CATCH_UP_LAG))
                    })
            });
            if back {
                return;
            }
            assert!(Instant::now() < deadline, "node {id} did not catch up within {timeout:?}: {view:#?}");
        }
        assert!(Instant::now() < deadline, "no cluster status within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_under_load_catches_up_from_a_snapshot_and_becomes_a_voter() {
    // Snapshots every 100 entries, keeping 20 behind them: the leaders soon
    // purge what a new node would need from the log.
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "100", "--snapshot-keep-logs", "20"]).await;
    let admin = admin(&cluster, &[1, 2, 3]);
    let load = start_load(&cluster, Duration::from_secs(14)).await;
    wait_purged(&admin, Duration::from_secs(20)).await;

    let addr = cluster.spawn_new(4);
    let started = Instant::now();
    let view = admin.add_node(4, &addr, AddNodeOptions::default(), &mut show).await.expect("add-node");
    eprintln!("node 4 joined both groups as a voter in {:?}", started.elapsed());
    assert_voters(&view, &BTreeSet::from([1, 2, 3, 4]));

    let status = cluster.client(4).cluster_status().await.expect("node 4 answers");
    for g in &status.groups {
        assert!(g.snapshot_index.unwrap_or(0) > 0, "node 4 caught up from a snapshot: {g:?}");
    }
    let metrics = cluster.client(4).metrics().await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bazar_snapshot_installed_total{group=\"catalog\"}") && !l.ends_with(" 0")),
        "node 4 counts the snapshot it installed"
    );
    // Running it again is harmless.
    admin.add_node(4, &addr, AddNodeOptions::default(), &mut show).await.expect("add-node again");
    load.finish(&mut cluster, &[1, 2, 3, 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_catalog_leader_under_load_moves_leadership_away_first() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let rest: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let admin = admin(&cluster, &cluster.ids());
    let load = start_load(&cluster, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let from = load.history.now();
    let view = admin.remove_node(leader, Duration::from_secs(30), &mut show).await.expect("remove-node");
    let to = load.history.now();
    assert_voters(&view, &rest.iter().copied().collect());
    // The operator stops the removed node.
    cluster.stop(leader).await;
    // Leave time for writes to show that they never stopped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let until = load.history.now().max(to);

    let (_, records) = load.finish(&mut cluster, &rest).await;
    let (buys, catalog) = longest_write_gaps(&records, from, until);
    eprintln!("removing node {leader} took {:?}; longest pause: buys {buys:?}, catalog writes {catalog:?}", {
        Duration::from_nanos(to - from)
    });
    assert!(buys < WRITE_GAP_BOUND && catalog < WRITE_GAP_BOUND, "writes paused too long: {buys:?}, {catalog:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_an_empty_one_with_the_same_id_under_load() {
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "200", "--snapshot-keep-logs", "50"]).await;
    // The orders leader dies and loses its disk: the worst node to lose.
    let victim = cluster.wait_leader(Group::Orders, None, Duration::from_secs(10)).await;
    let rest: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != victim).collect();
    let admin = admin(&cluster, &cluster.ids());
    let load = start_load(&cluster, Duration::from_secs(16)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.wipe(victim);

    // 1. Remove the dead member (an empty node may not take over its vote).
    let view = admin.remove_node(victim, Duration::from_secs(30), &mut show).await.expect("remove-node");
    assert_voters(&view, &rest.iter().copied().collect());
    // 2. Start the replacement, empty, with the same id and address.
    cluster.restart(victim);
    // 3. Add it back: it catches up (from a snapshot once the log was purged) and votes again.
    let started = Instant::now();
    let view =
        admin.add_node(victim, &cluster.addr(victim), AddNodeOptions::default(), &mut show).await.expect("add-node");
    eprintln!("node {victim} replaced in {:?}", started.elapsed());
    let all = cluster.ids();
    assert_voters(&view, &all.iter().copied().collect());
    load.finish(&mut cluster, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_pauses_writes_for_less_than_an_election() {
    let mut cluster = Cluster::start(3, &[]).await;
    let admin = admin(&cluster, &cluster.ids());
    let load = start_load(&cluster, Duration::from_secs(24)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let from = load.history.now();
    for id in cluster.ids() {
        let started = Instant::now();
        // SIGTERM: a leader hands its groups over before it stops.
        cluster.stop(id).await;
        let stopped = started.elapsed();
        cluster.restart(id);
        wait_caught_up(&admin, id, Duration::from_secs(20)).await;
        eprintln!("node {id}: stopped in {stopped:?}, back and caught up after {:?}", started.elapsed());
    }
    let to = load.history.now();
    assert!(
        Duration::from_nanos(to) < load.config.runner.duration,
        "the restarts outlasted the workload; the pauses would not be measured"
    );

    let all = cluster.ids();
    let (_, records) = load.finish(&mut cluster, &all).await;
    let (buys, catalog) = longest_write_gaps(&records, from, to);
    eprintln!(
        "rolling restart took {:?}; longest pause: buys {buys:?}, catalog writes {catalog:?}",
        Duration::from_nanos(to - from)
    );
    assert!(buys < WRITE_GAP_BOUND && catalog < WRITE_GAP_BOUND, "writes paused too long: {buys:?}, {catalog:?}");

    // Every group's leader was stopped at some point and handed off first.
    let logs: String = cluster
        .ids()
        .iter()
        .map(|id| std::fs::read_to_string(cluster.dir().join(format!("node-{id}.log"))).unwrap_or_default())
        .collect();
    for group in Group::ALL {
        assert!(
            logs.lines().any(|l| l.contains("leadership transferred") && l.contains(&format!("group={group}"))),
            "a stopping {group} leader handed leadership off"
        );
    }
}
