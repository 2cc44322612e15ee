//! One chaos run, start to verdict: set up, run the workload while the
//! nemesis injects faults, heal, collect the final state, check the history.
//!
//! [`run`] is what the integration tests, the `bazar-chaos` binary and the
//! container tests call. It is independent of how nodes run: the caller
//! passes a [`FaultInjector`] for its nodes, clients for every node (for the
//! final state: digests are per node) and the workload's endpoints in
//! [`RunnerConfig::endpoints`] (nodes, or a frontend).
//!
//! Timeline, all on the history's clock:
//!
//! ```text
//! setup ─┬─ workload ─────────────────────────────────────────┬─ heal ─ final state ─ check
//!        └─ start_after ─ fault ─ hold ─ heal ─ quiet ─ ... ──┘
//! ```
//!
//! The nemesis's schedule must end before the workload does, so that writes
//! are measured resuming after the last fault; [`ChaosConfig::new`] keeps a
//! tail of healthy load after it.

use std::time::Duration;

use bazar_client::Client;

use crate::check::collect_final;
use crate::checker::{CheckConfig, Report, check_history};
use crate::history::{Clock, FaultPhase, History, Record};
use crate::nemesis::{self, Fault, FaultInjector, FaultReport, Schedule};
use crate::runner::{self, RunnerConfig};
use crate::{Cluster, Error, Result};

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The workload.
    pub runner: RunnerConfig,
    /// The faults.
    pub schedule: Schedule,
    /// How long to wait for pending orders to settle once healed (guarantees §6.7: 5 s).
    pub settle: Duration,
    /// How long to wait for the replicas to converge once healed.
    pub converge: Duration,
    /// How long the cluster may take to become healthy after the last heal.
    pub heal_timeout: Duration,
    /// How the history is checked.
    pub check: CheckConfig,
}

impl ChaosConfig {
    /// A run of `duration` against `endpoints`, cycling through `faults`
    /// while leaving 4 s of healthy load at the end.
    pub fn new(endpoints: Vec<String>, admin_token: &str, faults: Vec<Fault>, duration: Duration) -> ChaosConfig {
        let mut runner = RunnerConfig::new(endpoints, admin_token);
        runner.duration = duration;
        let mut schedule = Schedule::cycle(faults, Duration::ZERO);
        let busy = schedule.start_after + schedule.hold + Duration::from_secs(4);
        schedule.duration = duration.saturating_sub(busy);
        schedule.seed = runner.seed;
        ChaosConfig {
            runner,
            schedule,
            settle: Duration::from_secs(5),
            converge: Duration::from_secs(30),
            heal_timeout: Duration::from_secs(60),
            check: CheckConfig::default(),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The checker's verdict and numbers.
    pub report: Report,
    /// What the nemesis did.
    pub faults: Vec<FaultReport>,
    /// Operations the workload invoked.
    pub invoked: u64,
}

/// Runs the workload and the nemesis together, then checks. Returns an
/// error only when the run could not be carried out (no setup, a panic);
/// broken invariants, a cluster that never became healthy again included,
/// are in the report.
pub async fn run<I: FaultInjector>(
    injector: &mut I,
    nodes: &[(u64, Client)],
    config: &ChaosConfig,
    history: &History,
) -> Result<Outcome> {
    runner::setup(&config.runner, history, Duration::from_secs(30)).await?;
    let load = tokio::spawn(runner::run(config.runner.clone(), history.clone()));
    let faults = nemesis::run(injector, &config.schedule, history).await;
    let stats = load.await.map_err(|e| Error::Cluster(format!("the workload panicked: {e}")))??;
    if let Err(e) = injector.wait_healthy(config.heal_timeout).await {
        // A liveness failure, for the checker to report with the rest.
        let why = e.to_string();
        let fault = format!("end of run: {}", why.lines().next().unwrap_or(""));
        history.record(Record::Fault { time: history.now(), phase: FaultPhase::Unhealthy, fault, nodes: Vec::new() });
    }
    let report = finish(nodes, history, config).await?;
    Ok(Outcome { report, faults, invoked: stats.invoked })
}

/// [`run`] on a local [`Cluster`], the common case of the tests: the
/// history goes to `history.jsonl` in the cluster's directory (kept when a
/// test fails), the final state is read from every node, and the seed and
/// the history's path are printed first, so that a failed run can be found
/// and replayed.
pub async fn run_on_cluster(cluster: &mut Cluster, config: &ChaosConfig) -> Result<Outcome> {
    let path = cluster.dir().join("history.jsonl");
    let history = History::to_file(Clock::start(), &path)?;
    eprintln!("seed {}, history in {}", config.runner.seed, path.display());
    let nodes: Vec<_> = cluster.ids().into_iter().map(|id| (id, cluster.client(id))).collect();
    run(cluster, &nodes, config, &history).await
}

/// Once the workload is over and every fault healed: collects the final
/// state through `nodes` into the history, flushes it, and checks it.
pub async fn finish(nodes: &[(u64, Client)], history: &History, config: &ChaosConfig) -> Result<Report> {
    let state = collect_final(nodes, history, config.settle, config.converge).await;
    history.record(Record::Final(state));
    history.flush()?;
    let records = history.records();
    let check = config.check.clone();
    // The search is CPU-bound: keep it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || check_history(&records, &check))
        .await
        .map_err(|e| Error::Cluster(format!("the checker panicked: {e}")))
}
