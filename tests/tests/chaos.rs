//! Short chaos schedules on real processes: the mixed workload (buys with
//! retried keys, restocks, price changes, reads at every consistency level)
//! runs while the nemesis kills, pauses and restarts nodes; the history and
//! the final state must pass every check of SPEC section 6, including
//! linearizability of every book. Each schedule takes well under a minute;
//! `scripts/chaos.sh` runs long ones.
//!
//! A failing test keeps the cluster's data, logs and `history.jsonl` (the
//! path is printed) so that `bazar-chaos check` can replay the verdict.

use std::time::Duration;

use bazar_api::Group;
use bazar_tests::chaos::{self, ChaosConfig, Outcome};
use bazar_tests::frontend::FrontendProc;
use bazar_tests::history::{Clock, History};
use bazar_tests::nemesis::Fault;
use bazar_tests::{ADMIN_TOKEN, Cluster};

/// Runs `faults` (cycling) under load for `seconds` on a fresh 3-node
/// cluster and asserts that the run kept every promise. With `frontend`,
/// the workload goes through a frontend as well as straight to the nodes.
async fn chaos(faults: Vec<Fault>, seconds: u64, frontend: bool) -> Outcome {
    let mut cluster = Cluster::start(3, &[]).await;
    let mut endpoints = cluster.endpoints();
    let fe = if frontend { Some(FrontendProc::start(&cluster, "frontend", &[]).await) } else { None };
    if let Some(fe) = &fe {
        endpoints.insert(0, format!("http://{}", fe.addr));
    }
    let config = ChaosConfig::new(endpoints, ADMIN_TOKEN, faults, Duration::from_secs(seconds));
    let path = cluster.dir().join("history.jsonl");
    let history = History::to_file(Clock::start(), &path).expect("history file");
    eprintln!("seed {}, history in {}", config.runner.seed, path.display());
    let nodes: Vec<_> = cluster.ids().into_iter().map(|id| (id, cluster.client(id))).collect();
    let outcome = chaos::run(&mut cluster, &nodes, &config, &history).await.expect("the chaos run");
    let report = &outcome.report;
    eprintln!("{}", report.table());
    assert!(report.passed(), "violations:\n{}", report.violations().join("\n"));
    assert!(report.conclusive(), "a linearizability search gave up: {:?}", report.books);
    let injected = outcome.faults.iter().filter(|f| f.skipped.is_none()).count();
    assert!(injected >= 2, "the nemesis injected faults: {:?}", outcome.faults);
    assert!(report.buys.acknowledged > 50, "the workload made progress: {:?}", report.buys);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_each_groups_leader_under_mixed_load_keeps_every_promise() {
    let outcome = chaos(vec![Fault::KillLeader(Group::Catalog), Fault::KillLeader(Group::Orders)], 22, false).await;
    // The checker holds leader kills to SPEC invariant 7 (writes resume within 2 s).
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
    // Strong reads through the frontend are checked like any other.
    assert!(outcome.report.books.iter().all(|b| b.linearizable_reads > 0), "{:?}", outcome.report.books);
}
