//! Short chaos schedules on real processes: the mixed workload (buys with
//! retried keys, restocks, price changes, reads at every consistency level)
//! runs while the nemesis kills, pauses and restarts nodes, and (as root,
//! with iptables) cuts links between them while clients keep reaching every
//! node; the history and the final state must pass every check of
//! guarantees §6, including linearizability of every book. Each schedule takes
//! well under a minute; `scripts/chaos.sh` runs long ones.
//!
//! A failing test keeps the cluster's data, logs and `history.jsonl` (the
//! path is printed) so that `bazar-chaos check` can replay the verdict.

use std::time::Duration;

use bazar_api::Group;
use bazar_tests::chaos::{self, ChaosConfig, Outcome};
use bazar_tests::checker::checks;
use bazar_tests::frontend::FrontendProc;
use bazar_tests::history::{CachedPromise, Call, FaultPhase, Record};
use bazar_tests::nemesis::Fault;
use bazar_tests::{ADMIN_TOKEN, Cluster, partition};

/// Runs `faults` (cycling) under load for `seconds` on a fresh 3-node
/// cluster and asserts that the run kept every promise. With `frontend`,
/// the workload goes through a frontend as well as straight to the nodes.
async fn chaos(faults: Vec<Fault>, seconds: u64, frontend: bool) -> Outcome {
    chaos_on(&mut Cluster::start(3, &[]).await, faults, seconds, frontend).await
}

async fn chaos_on(cluster: &mut Cluster, faults: Vec<Fault>, seconds: u64, frontend: bool) -> Outcome {
    let frontend: Option<&[&str]> = if frontend { Some(&[]) } else { None };
    let outcome = run_on(cluster, faults, seconds, frontend, |_| {}).await;
    let report = &outcome.report;
    eprintln!("{}", report.table());
    assert!(report.passed(), "violations:\n{}", report.violations().join("\n"));
    assert!(report.conclusive(), "a linearizability search gave up: {:?}", report.books);
    let injected = outcome.faults.iter().filter(|f| f.skipped.is_none()).count();
    assert!(injected >= 2, "the nemesis injected faults: {:?}", outcome.faults);
    assert!(report.buys.acknowledged > 50, "the workload made progress: {:?}", report.buys);
    outcome
}

/// Runs `faults` under load for `seconds` on `cluster` (the run's config
/// adjusted by `tweak`) and returns the outcome, whatever the verdict. With
/// `frontend` (its extra flags), the workload also goes through a frontend,
/// and the checker judges its `cached` reads.
async fn run_on(
    cluster: &mut Cluster,
    faults: Vec<Fault>,
    seconds: u64,
    frontend: Option<&[&str]>,
    tweak: impl FnOnce(&mut ChaosConfig),
) -> Outcome {
    let mut endpoints = cluster.endpoints();
    let fe = match frontend {
        Some(flags) => Some(FrontendProc::start(cluster, "frontend", flags).await),
        None => None,
    };
    let mut cached = None;
    if let Some(fe) = &fe {
        let url = format!("http://{}", fe.addr);
        endpoints.insert(0, url.clone());
        // The frontend's default --max-staleness-ms.
        cached = Some(CachedPromise { frontends: vec![url], max_staleness_ms: 1000 });
    }
    let mut config = ChaosConfig::new(endpoints, ADMIN_TOKEN, faults, Duration::from_secs(seconds));
    config.runner.cached = cached;
    tweak(&mut config);
    chaos::run_on_cluster(cluster, &config).await.expect("the chaos run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_each_groups_leader_under_mixed_load_keeps_every_promise() {
    let outcome = chaos(vec![Fault::KillLeader(Group::Catalog), Fault::KillLeader(Group::Orders)], 22, false).await;
    // The checker holds leader kills to guarantees §6.7 (writes resume within 2 s).
    assert!(!outcome.report.leader_kill_resumes().is_empty(), "{:?}", outcome.report.faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_leaders_and_followers_keeps_reads_linearizable() {
    let outcome =
        chaos(vec![Fault::PauseLeader(Group::Catalog), Fault::PauseNode, Fault::PauseLeader(Group::Orders)], 22, false)
            .await;
    let checked = outcome.report.books.iter().map(|b| b.linearizable_reads + b.lease_reads).sum::<usize>();
    assert!(checked > 100, "reads were checked: {:?}", outcome.report.books);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_and_restarting_every_node_lose_nothing_acknowledged() {
    chaos(vec![Fault::RestartAll, Fault::KillNode], 22, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_through_a_frontend_and_the_nodes_keeps_every_promise_through_faults() {
    let faults = vec![Fault::KillLeader(Group::Orders), Fault::PauseNode, Fault::KillLeader(Group::Catalog)];
    let outcome = chaos(faults, 22, true).await;
    // Strong reads through the frontend are checked like any other, and
    // its cached reads against its promises.
    assert!(outcome.report.books.iter().all(|b| b.linearizable_reads > 0), "{:?}", outcome.report.books);
    assert!(outcome.report.cached_reads_checked > 50, "cached reads were judged: {}", outcome.report.table());
}

/// A frontend with a planted bug that forgets the writes it acknowledged:
/// its cache may answer a read right after a write from before it. The
/// checker must report read-your-writes violations, and name them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_frontend_that_forgets_its_own_writes() {
    let mut cluster = Cluster::start(3, &[]).await;
    let flags: &[&str] = &["--planted-bug", "ignore-read-your-writes"];
    let outcome = run_on(&mut cluster, vec![Fault::PauseNode], 14, Some(flags), |config| {
        // Everything through the frontend, most reads cached, few books:
        // reads follow writes of the same book closely.
        config.runner.endpoints.truncate(1);
        config.runner.read_levels = [8, 1, 1];
        config.runner.books = vec![1, 2, 3];
        config.runner.mix.lookup += 20;
    })
    .await;
    let report = &outcome.report;
    eprintln!("{}", report.table());
    let ryw: Vec<_> =
        report.violations().into_iter().filter(|v| v.starts_with(&format!("[{}]", checks::CACHED_RYW))).collect();
    assert!(!ryw.is_empty(), "the planted bug went unnoticed:\n{}", report.table());
    eprintln!("caught, as expected: {}", ryw[0]);
}

/// Operations invoked on `endpoint` while each `fault` held (from its start
/// to its heal), as (writes, lease and linearizable reads).
fn asked_during(records: &[Record], fault: &str, endpoint_of: impl Fn(u64) -> String) -> (usize, usize) {
    let (mut writes, mut reads) = (0, 0);
    let mut held: Option<(u64, String)> = None;
    for record in records {
        match record {
            Record::Fault { time, phase: FaultPhase::Start, fault: f, nodes } if f == fault && nodes.len() == 1 => {
                held = Some((*time, endpoint_of(nodes[0])));
            }
            Record::Fault { phase: FaultPhase::Heal, .. } => held = None,
            Record::Invoke { call, endpoint, .. } => {
                let Some((_, old_leader)) = &held else { continue };
                if endpoint != old_leader {
                    continue;
                }
                match call {
                    Call::Buy { .. } | Call::Restock { .. } | Call::SetPrice { .. } => writes += 1,
                    Call::Lookup { consistency, .. } | Call::ReadOrder { consistency, .. }
                        if *consistency != bazar_api::Consistency::Cached =>
                    {
                        reads += 1
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    (writes, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_its_peers_but_not_its_clients_loses_no_write_and_serves_no_stale_read() {
    if !partition::required() {
        return;
    }
    let mut cluster = Cluster::start(3, &[]).await;
    let faults = vec![Fault::PartitionLeader(Group::Orders), Fault::PartitionLeader(Group::Catalog)];
    let outcome = chaos_on(&mut cluster, faults, 24, false).await;
    // Passed: no acknowledged write lost, every lease and linearizable read
    // linearizable. Writes resumed on the majority side within the bound.
    let resumes = outcome.report.leader_partition_resumes();
    assert!(resumes.len() >= 2, "{:?}", outcome.report.faults);
    // The deposed leaders were asked for writes and reads meanwhile.
    let records = bazar_tests::history::read(&cluster.dir().join("history.jsonl")).expect("the history");
    let endpoint_of = |id: u64| format!("http://{}", cluster.client_addr(id));
    let mut asked = (0, 0);
    for fault in ["partition-leader-orders", "partition-leader-catalog"] {
        let (w, r) = asked_during(&records, fault, endpoint_of);
        asked = (asked.0 + w, asked.1 + r);
    }
    eprintln!("asked the partitioned leaders: {} writes, {} lease/linearizable reads", asked.0, asked.1);
    assert!(asked.0 > 0 && asked.1 > 0, "the workload kept asking the old leader: {asked:?}");
    assert!(cluster.cuts().is_empty(), "healed: {:?}", cluster.cuts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_one_way_loss_and_a_partition_healing_during_a_restart_keep_every_promise() {
    if !partition::required() {
        return;
    }
    chaos(vec![Fault::Bridge, Fault::OneWayLeader(Group::Orders), Fault::PartitionRestart], 24, false).await;
}

/// The same faults on nodes with a planted bug that only a deposed leader
/// can turn into wrong answers: a node that believes it leads serves lease
/// and linearizable reads from its own state, unconfirmed. The checker must
/// catch the stale reads of the leader cut off its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_partitioned_leader_serving_unconfirmed_reads() {
    if !partition::required() {
        return;
    }
    let mut cluster = Cluster::start(3, &["--planted-bug", "unconfirmed-leader-reads"]).await;
    let faults = vec![Fault::PartitionLeader(Group::Catalog), Fault::PartitionLeader(Group::Orders)];
    let outcome = run_on(&mut cluster, faults, 20, None, |config| {
        // More strong reads, so that the deposed leader is asked often.
        config.runner.read_levels = [0, 1, 1];
    })
    .await;
    let report = &outcome.report;
    eprintln!("{}", report.table());
    let stale: Vec<_> = report.books.iter().filter(|b| b.verdict.contains("NOT linearizable")).collect();
    assert!(!stale.is_empty(), "the planted stale reads went unnoticed: {:?}", report.books);
    assert!(
        report.violations().iter().any(|v| v.starts_with(&format!("[{}]", checks::LINEARIZABLE_BOOKS))),
        "{}",
        report.violations().join("\n")
    );
    // The reads the evidence names went to a leader cut off its peers (a
    // new leader that has not applied its predecessor's last entries can
    // answer stale too under this bug: not every book need point there).
    let records = bazar_tests::history::read(&cluster.dir().join("history.jsonl")).expect("the history");
    let partitioned: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Fault { phase: FaultPhase::Start, fault, nodes, .. } if fault.starts_with("partition-leader") => {
                Some(format!("on http://{}:", cluster.client_addr(nodes[0])))
            }
            _ => None,
        })
        .collect();
    let culprit = |verdict: &str| verdict.split("cannot be: ").nth(1).unwrap_or("").to_string();
    let at_partitioned = stale.iter().filter(|b| partitioned.iter().any(|p| culprit(&b.verdict).contains(p))).count();
    eprintln!("{at_partitioned} of {} stale books point at a partitioned leader", stale.len());
    assert!(at_partitioned > 0, "{partitioned:?}: {:?}", stale.iter().map(|b| &b.verdict).collect::<Vec<_>>());
    eprintln!("caught, as expected: {}", stale[0].verdict);
}

/// Two faults at once: on five nodes, a follower is frozen and the leader
/// killed while it stays frozen, for each group in turn. Three nodes remain,
/// a majority: writes must resume within the bound, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_and_a_killed_leader_at_once_on_five_nodes_keep_every_promise() {
    let mut cluster = Cluster::start(5, &[]).await;
    let faults = vec![Fault::Overlap(Group::Orders), Fault::Overlap(Group::Catalog)];
    let outcome = chaos_on(&mut cluster, faults, 22, false).await;
    assert!(outcome.report.leader_kill_resumes().len() >= 2, "{:?}", outcome.report.faults);
}

/// Snapshots every 200 entries with 20 kept behind them: a follower that
/// was killed or frozen for the hold comes back further behind than the
/// log reaches, so the leader sends it a snapshot while the workload and
/// the faults go on, and a frontend's change stream has to resume across
/// purged logs. Every promise holds, and snapshots were indeed installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_built_and_installed_under_faults_keep_every_promise() {
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "200", "--snapshot-keep-logs", "20"]).await;
    let faults = vec![Fault::PauseNode, Fault::KillNode, Fault::KillLeader(Group::Orders)];
    chaos_on(&mut cluster, faults, 24, true).await;
    let mut installed = 0;
    for id in cluster.ids() {
        let text = cluster.client(id).metrics().await.expect("metrics");
        installed += text
            .lines()
            .filter(|l| l.starts_with("bazar_snapshot_installed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    assert!(installed > 0, "no snapshot was installed: the schedule did not exercise snapshot installs");
    eprintln!("{installed} snapshot installs counted on the nodes at the end");
}

/// Membership changes while the nemesis runs: a random node (the leader
/// too, which hands leadership over first) is removed from both groups and
/// added back, between kills and pauses of other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_and_adding_back_nodes_under_load_and_faults_keeps_every_promise() {
    let faults = vec![Fault::RemoveAndAdd, Fault::PauseLeader(Group::Orders), Fault::RemoveAndAdd, Fault::KillNode];
    let outcome = chaos(faults, 26, false).await;
    let changes = outcome.faults.iter().filter(|f| f.fault == Fault::RemoveAndAdd && f.skipped.is_none()).count();
    assert!(changes >= 2, "membership changed under load: {:?}", outcome.faults);
}

/// Idempotency keys kept for a short window (4 s) while leaders are killed
/// and nodes paused: purge rounds forget the keys of the run's first buys
/// in both groups during the run, racing with retries, settlements and the
/// resumer, and every promise holds, exactly-once per key included. The
/// clients stop retrying a key well within the window (1 s of retries of
/// at most 2 s each), as clients must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_purged_after_a_short_retention_window_under_faults_keep_every_promise() {
    let mut cluster = Cluster::start(3, &["--idempotency-retention=4s"]).await;
    let faults = vec![Fault::KillLeader(Group::Orders), Fault::PauseNode, Fault::KillLeader(Group::Catalog)];
    let outcome = run_on(&mut cluster, faults, 22, None, |c| c.runner.retry_budget = Duration::from_secs(1)).await;
    let report = &outcome.report;
    eprintln!("{}", report.table());
    assert!(report.passed(), "violations:\n{}", report.violations().join("\n"));
    assert!(report.conclusive(), "a linearizability search gave up: {:?}", report.books);
    assert!(report.buys.acknowledged > 50, "the workload made progress: {:?}", report.buys);
    // The purge ran: the replicated counters of a live node say how many
    // keys each group dropped.
    let http = reqwest::Client::new();
    let mut purged = (0u64, 0u64);
    for endpoint in cluster.endpoints() {
        let Ok(r) = http.get(format!("{endpoint}/metrics")).send().await else { continue };
        let text = r.text().await.unwrap_or_default();
        let sample =
            |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or(0);
        purged = purged.max((
            sample("bazar_idempotency_keys_purged_total{group=\"catalog\"}"),
            sample("bazar_idempotency_keys_purged_total{group=\"orders\"}"),
        ));
    }
    eprintln!("keys purged during the run: catalog {}, orders {}", purged.0, purged.1);
    assert!(purged.0 > 50 && purged.1 > 50, "the purge forgot keys in both groups during the run: {purged:?}");
}
