//! Clock faults on real processes: nodes run with libfaketime preloaded
//! (see `bazar_tests::clock`), and the nemesis makes a leader's or a
//! follower's clock run fast or slow, or jump, while the mixed workload
//! runs; the history must pass every check, `lease` reads included. And
//! the planted bug that the fix of `lease` reads removed — a read lease as
//! long as the followers' promise not to vote — is caught under a slow
//! leader cut off its peers.
//!
//! Without libfaketime every test fails and says why, unless
//! `BAZAR_SKIP_CLOCKS=1`; the ones that also cut links need root and
//! iptables (`BAZAR_SKIP_PARTITIONS=1`). A failing test keeps the cluster's
//! data, logs and `history.jsonl`.

use std::time::Duration;

use bazar_api::{Group, WatchEvent};
use bazar_tests::chaos::{self, ChaosConfig, Outcome};
use bazar_tests::checker::checks;
use bazar_tests::history::{FaultPhase, Record};
use bazar_tests::nemesis::Fault;
use bazar_tests::{ADMIN_TOKEN, Cluster, clock, partition};
use futures::StreamExt;
use tokio::time::Instant;

/// Heartbeats node `id` sends on a `/watch` stream in `window` of true time
/// (it sends one every 100 ms of its own clock).
async fn heartbeats(cluster: &Cluster, id: u64, window: Duration) -> usize {
    let mut stream = cluster.client(id).watch(Group::Catalog, 0).await.expect("a watch stream");
    // Past the replay and the first heartbeat.
    while let Some(event) = stream.next().await {
        if matches!(event.expect("a watch event"), WatchEvent::Heartbeat { .. }) {
            break;
        }
    }
    let end = Instant::now() + window;
    let mut count = 0;
    while let Ok(Some(event)) = tokio::time::timeout_at(end, stream.next()).await {
        if matches!(event.expect("a watch event"), WatchEvent::Heartbeat { .. }) {
            count += 1;
        }
    }
    count
}

/// The proof that the clock faults act on what the node measures time
/// with: tokio's timers and `Instant` (CLOCK_MONOTONIC through the C
/// library), changed while the node runs. Its `/watch` heartbeats, one per
/// 100 ms of its clock, come four times as often at x4 and a quarter as
/// often at x0.25.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libfaketime_makes_a_running_nodes_clock_run_fast_and_slow() {
    if !clock::required() {
        return;
    }
    let mut cluster = Cluster::start_with_clocks(3, &[]).await;
    let window = Duration::from_secs(2);
    let true_rate = heartbeats(&cluster, 1, window).await;
    cluster.set_clock_rate(1, 4.0).expect("x4");
    let fast = heartbeats(&cluster, 1, window).await;
    cluster.set_clock_rate(1, 0.25).expect("x0.25");
    let slow = heartbeats(&cluster, 1, window).await;
    cluster.set_clock_rate(1, 1.0).expect("x1");
    let back = heartbeats(&cluster, 1, window).await;
    eprintln!("heartbeats in {window:?}: true {true_rate}, x4 {fast}, x0.25 {slow}, true again {back}");
    assert!((15..=21).contains(&true_rate), "about 20 at the true rate: {true_rate}");
    assert!(fast >= 3 * true_rate, "x4: {fast} against {true_rate}");
    assert!(slow * 3 <= true_rate, "x0.25: {slow} against {true_rate}");
    assert!((15..=21).contains(&back), "true again: {back}");
    // And the node, its clock changed under it three times, still serves.
    cluster.wait_ready(Duration::from_secs(10)).await;
}

/// Runs `faults` (cycling) under load for `seconds` on `cluster` with
/// reads weighted toward `lease` (the run's config then adjusted by
/// `tweak`), and returns the outcome, whatever the verdict.
async fn run_on(
    cluster: &mut Cluster,
    faults: Vec<Fault>,
    seconds: u64,
    tweak: impl FnOnce(&mut ChaosConfig),
) -> Outcome {
    let mut config = ChaosConfig::new(cluster.endpoints(), ADMIN_TOKEN, faults, Duration::from_secs(seconds));
    // cached : lease : linearizable. Lease reads are what clocks can break.
    config.runner.read_levels = [1, 6, 3];
    tweak(&mut config);
    chaos::run_on_cluster(cluster, &config).await.expect("the chaos run")
}

/// Asserts that the run kept every promise and exercised lease reads.
fn assert_kept_every_promise(outcome: &Outcome) {
    let report = &outcome.report;
    eprintln!("{}", report.table());
    assert!(report.passed(), "violations:\n{}", report.violations().join("\n"));
    assert!(report.conclusive(), "a linearizability search gave up: {:?}", report.books);
    let injected = outcome.faults.iter().filter(|f| f.skipped.is_none()).count();
    assert!(injected >= 3, "the nemesis injected faults: {:?}", outcome.faults);
    assert!(report.buys.acknowledged > 50, "the workload made progress: {:?}", report.buys);
    let lease_reads: usize = report.books.iter().map(|b| b.lease_reads).sum();
    assert!(lease_reads > 100, "lease reads were checked: {:?}", report.books);
}

/// Leaders' and followers' clocks running at twice and half the true rate
/// (the drift the nodes' default `--max-clock-rate-ratio` allows), and
/// jumping forward (leaders, followers) and back (followers): no violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_slow_and_jumping_clocks_on_leaders_and_followers_keep_lease_reads_linearizable() {
    if !clock::required() {
        return;
    }
    let mut cluster = Cluster::start_with_clocks(3, &[]).await;
    let outcome = run_on(&mut cluster, Fault::CLOCK.to_vec(), 40, |_| {}).await;
    assert_kept_every_promise(&outcome);
    let kinds: Vec<String> =
        outcome.faults.iter().filter(|f| f.skipped.is_none()).map(|f| f.fault.to_string()).collect();
    eprintln!("clock faults injected: {kinds:?}");
    assert!(kinds.iter().any(|k| k.contains("-leader-")) && kinds.iter().any(|k| k.contains("-follower-")));
    assert!(kinds.iter().any(|k| k.starts_with("clock-jump")), "{kinds:?}");
}

/// The operations that the nemesis's partitioned, slowed leaders answered
/// with a stale `lease` read, as named by the checker's evidence.
fn slowed_leader_endpoints(cluster: &Cluster) -> Vec<String> {
    let records = bazar_tests::history::read(&cluster.dir().join("history.jsonl")).expect("the history");
    records
        .iter()
        .filter_map(|r| match r {
            Record::Fault { phase: FaultPhase::Start, fault, nodes, .. }
                if fault.starts_with("clock-slow-partition-leader") =>
            {
                Some(format!("on http://{}:", cluster.client_addr(nodes[0])))
            }
            _ => None,
        })
        .collect()
}

/// How much slower than true time the slowed leaders' clocks run, and the
/// drift bound the nodes are told (`--max-clock-rate-ratio`): 4, beyond the
/// default 2, because openraft's followers do not campaign before their
/// promise not to vote (300 ms) *and* an election timeout (150–300 ms) are
/// over. At a rate of 1/2, a lease without margin (300 ms on the slow clock:
/// 600 ms) overlaps the new leader's first writes only now and then; at 1/4
/// (1.2 s), in every partition.
const SLOW_RATIO: &str = "4";

/// The schedule of the slowed leaders' partitions: what goes wrong does so
/// within the first 1.2 s of each, so many short ones (held 1.5 s, 1 s
/// apart), and nearly every read at `lease`.
fn slow_partitions(config: &mut ChaosConfig) {
    config.schedule.clock_ratio = SLOW_RATIO.parse().expect("a ratio");
    config.schedule.hold = Duration::from_millis(1_500);
    config.schedule.quiet = Duration::from_secs(1);
    config.runner.read_levels = [0, 9, 1];
}

/// A leader whose clock runs at a quarter of the true rate, cut off its
/// peers while clients still reach it, on nodes that allow for that drift
/// (`--max-clock-rate-ratio 4`): the others elect a new leader once their
/// promise not to vote (300 ms) is over, while the old leader's read lease
/// (150 ms / 4 on its clock: 150 ms) is long over. No stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_cut_off_its_peers_serves_no_stale_lease_read() {
    if !clock::required() || !partition::required() {
        return;
    }
    let mut cluster = Cluster::start_with_clocks(3, &["--max-clock-rate-ratio", SLOW_RATIO]).await;
    let outcome = run_on(&mut cluster, Fault::CLOCK_PARTITION.to_vec(), 24, slow_partitions).await;
    assert_kept_every_promise(&outcome);
    let resumes = outcome.report.leader_partition_resumes();
    assert!(resumes.len() >= 2, "writes resumed after each slowed leader's partition: {:?}", outcome.report.faults);
}

/// The same schedule on nodes with the planted bug: the read lease as long
/// as the followers' promise not to vote (300 ms), on a clock running at a
/// quarter of the rate: the old leader trusts its lease for 1.2 s while the
/// others elect a new leader after 450–600 ms. The checker must report
/// stale lease reads answered by a slowed leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_read_lease_without_a_drift_margin() {
    if !clock::required() || !partition::required() {
        return;
    }
    let args = ["--max-clock-rate-ratio", SLOW_RATIO, "--planted-bug", "lease-without-drift-margin"];
    let mut cluster = Cluster::start_with_clocks(3, &args).await;
    let outcome = run_on(&mut cluster, Fault::CLOCK_PARTITION.to_vec(), 24, slow_partitions).await;
    let report = &outcome.report;
    eprintln!("{}", report.table());
    let stale: Vec<_> = report.books.iter().filter(|b| b.verdict.contains("lease reads are stale")).collect();
    assert!(!stale.is_empty(), "the stale lease reads went unnoticed: {:?}", report.books);
    assert!(
        report.violations().iter().any(|v| v.starts_with(&format!("[{}]", checks::LINEARIZABLE_BOOKS))),
        "{}",
        report.violations().join("\n")
    );
    let slowed = slowed_leader_endpoints(&cluster);
    let culprit = |verdict: &str| verdict.split("cannot be: ").nth(1).unwrap_or("").to_string();
    let at_slowed = stale.iter().filter(|b| slowed.iter().any(|p| culprit(&b.verdict).contains(p))).count();
    eprintln!("{at_slowed} of {} books with stale lease reads point at a slowed, partitioned leader", stale.len());
    assert!(at_slowed > 0, "{slowed:?}: {:?}", stale.iter().map(|b| &b.verdict).collect::<Vec<_>>());
    eprintln!("caught, as expected: {}", stale[0].verdict);
}
