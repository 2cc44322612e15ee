//! Faults under load: kill -9 of each group's leader, a paused leader, and a
//! restart of every node at once. After each, the history of the workload and
//! the final state must pass every check of guarantees §6: nothing
//! acknowledged lost, one order per key, stock conserved and never oversold,
//! replicas converged, nothing left pending, every book linearizable.

use std::collections::BTreeMap;
use std::time::Duration;

use bazar_api::Group;
use bazar_tests::chaos::{self, ChaosConfig};
use bazar_tests::check::{Ledger, check_all};
use bazar_tests::checker::Report;
use bazar_tests::history::{Clock, History};
use bazar_tests::runner;
use bazar_tests::{ADMIN_TOKEN, Cluster};
use tokio::time::Instant;

fn classic_stock() -> BTreeMap<u64, u64> {
    (1..=7).map(|id| (id, 1000)).collect()
}

/// A run of the workload, recorded.
struct Load {
    config: ChaosConfig,
    history: History,
}

/// Runs the workload for `duration` while `fault` runs after `delay`.
async fn under_load<F, Fut>(cluster: &mut Cluster, duration: Duration, delay: Duration, fault: F) -> Load
where
    F: FnOnce(&mut Cluster) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let config = ChaosConfig::new(cluster.endpoints(), ADMIN_TOKEN, Vec::new(), duration);
    let history = History::in_memory(Clock::start());
    runner::setup(&config.runner, &history, Duration::from_secs(30)).await.expect("setup");
    let load = tokio::spawn(runner::run(config.runner.clone(), history.clone()));
    tokio::time::sleep(delay).await;
    fault(cluster).await;
    load.await.expect("workload").expect("workload");
    Load { config, history }
}

/// Once the faults are healed: checks the history and the final state.
async fn check_healed(cluster: &mut Cluster, load: Load) -> Report {
    cluster.wait_ready(Duration::from_secs(30)).await;
    let nodes: Vec<_> = cluster.ids().into_iter().map(|id| (id, cluster.client(id))).collect();
    let report = chaos::finish(&nodes, &load.history, &load.config).await.expect("final state");
    eprintln!("{}", report.table());
    assert!(report.passed(), "invariants violated:\n{}", report.violations().join("\n"));
    report
}

async fn kill_leader_under_load(group: Group) {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(group, None, Duration::from_secs(10)).await;
    let load = under_load(&mut cluster, Duration::from_secs(6), Duration::from_secs(2), |c| {
        c.kill(leader);
        async {}
    })
    .await;
    let new_leader = cluster.wait_leader(group, Some(leader), Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    cluster.restart(leader);
    let report = check_healed(&mut cluster, load).await;
    assert!(report.buys.acknowledged > 20, "the workload made progress: {:?}", report.buys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_catalog_leader_under_load_loses_no_acknowledged_buy() {
    kill_leader_under_load(Group::Catalog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_orders_leader_under_load_loses_no_acknowledged_buy() {
    kill_leader_under_load(Group::Orders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_at_once_keeps_every_acknowledged_buy() {
    let mut cluster = Cluster::start(3, &[]).await;
    let load = under_load(&mut cluster, Duration::from_secs(5), Duration::from_secs(2), |c| {
        for id in c.ids() {
            c.kill(id);
        }
        for id in c.ids() {
            c.restart(id);
        }
        async {}
    })
    .await;
    let report = check_healed(&mut cluster, load).await;
    assert!(report.buys.acknowledged > 10, "{:?}", report.buys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_rejoins_without_losing_writes() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Group::Orders, None, Duration::from_secs(10)).await;
    let load = under_load(&mut cluster, Duration::from_secs(7), Duration::from_secs(1), |c| {
        c.pause(leader);
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    })
    .await;
    cluster.resume(leader);
    check_healed(&mut cluster, load).await;
}

/// Time from killing `group`'s leader until a buy is acknowledged again.
async fn time_to_resume(cluster: &mut Cluster, group: Group, attempt: u64, ledger: &mut Ledger) -> Duration {
    let leader = cluster.wait_leader(group, None, Duration::from_secs(10)).await;
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    // Warm up: make sure buys succeed before the fault.
    let warm = cluster.client(survivors[0]).buy(1, 1, Some(&format!("warm-{group}-{attempt}"))).await.unwrap();
    ledger.acked.push(warm);
    cluster.kill(leader);
    let killed = Instant::now();
    let key = format!("resume-{group}-{attempt}");
    let mut i = 0;
    loop {
        let client = cluster.client(survivors[i % survivors.len()]);
        i += 1;
        match tokio::time::timeout(Duration::from_millis(500), client.buy(2, 1, Some(&key))).await {
            Ok(Ok(order)) => {
                ledger.acked.push(order);
                break;
            }
            _ if killed.elapsed() > Duration::from_secs(10) => panic!("writes did not resume within 10 s"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let resumed = killed.elapsed();
    cluster.restart(leader);
    cluster.wait_ready(Duration::from_secs(30)).await;
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_within_two_seconds_after_a_leader_is_killed() {
    // guarantees §6.7: with the default election timeout (150-300 ms),
    // writes resume within 2 s of losing the leader of either group.
    let mut cluster = Cluster::start(3, &[]).await;
    let mut times = Vec::new();
    let mut ledger = Ledger::default();
    for (attempt, group) in [Group::Catalog, Group::Orders, Group::Catalog, Group::Orders].into_iter().enumerate() {
        let t = time_to_resume(&mut cluster, group, attempt as u64, &mut ledger).await;
        eprintln!("{group} leader killed: writes resumed after {t:?}");
        times.push((group, t));
    }
    for (group, t) in &times {
        assert!(*t < Duration::from_secs(2), "writes resumed {t:?} after the {group} leader was killed: {times:?}");
    }
    check_all(&mut cluster, &classic_stock(), &ledger, Duration::from_secs(5)).await;
}
