//! The nemesis: injects faults on a schedule while the workload runs, and
//! always leaves the cluster healed.
//!
//! Faults are described once ([`Fault`]: "kill the catalog leader", "isolate
//! a minority", "cut the orders leader's outgoing packets", "make a
//! follower's clock run fast") and carried out as primitive [`Action`]s on
//! nodes (kill, start, pause, resume, isolate, rejoin, cut and mend one
//! direction of a link, set a clock's rate, step a clock, cut the power) by
//! a [`FaultInjector`]. The injector is the only part that knows how nodes
//! run: [`crate::Cluster`] implements it for local processes (signals,
//! iptables rules between the nodes' own loopback addresses, see
//! [`crate::partition`], where clients keep reaching every node,
//! libfaketime, see [`crate::clock`], and power cuts on [`crate::lazyfs`]
//! mounts); a container harness implements it
//! with `docker kill/pause/network disconnect` (clients cut off with the
//! node). What an injector cannot do is skipped ([`FaultInjector::supports`]).
//!
//! # Promises
//! - **Bounded.** [`run`] starts faults only within
//!   [`Schedule::duration`]; each lasts [`Schedule::hold`] and is followed
//!   by [`Schedule::quiet`] healthy time. The whole schedule ends by
//!   `start_after + duration + hold` plus the time the actions take.
//! - **Healed.** Each fault is healed by its inverse actions, and at the end
//!   every node the nemesis ever killed, paused, isolated or cut is started,
//!   resumed, rejoined or mended, whatever failed before.
//! - **Recorded.** Every fault is a [`Record::Fault`] in the history (start,
//!   in place, heal, or skip when it could not be carried out, e.g. no
//!   agreed leader), stamped on the run's clock so that the checker can
//!   measure how long writes were unavailable after it. The start is
//!   stamped *before* the first action and "in place" after the last one
//!   (a cut takes a few iptables calls): windows measured from the start
//!   with writes first sent once the fault is in place are upper bounds.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bazar_api::Group;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::history::{FaultPhase, History, Record};
use crate::{Cluster, Error, Result};
use bazar_client::cluster::AddNodeOptions;

/// A fault, described by what it does to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `kill -9` a random node; start it again when healing.
    KillNode,
    /// `kill -9` the leader of a group; start it again when healing.
    KillLeader(Group),
    /// `SIGSTOP` a random node; `SIGCONT` when healing.
    PauseNode,
    /// `SIGSTOP` the leader of a group; `SIGCONT` when healing.
    PauseLeader(Group),
    /// `kill -9` every node, then start them all again at once.
    RestartAll,
    /// Cut the leader of a group off every other node, both ways; with
    /// local processes its clients still reach it, so it keeps being asked
    /// for reads and writes while the majority elects a new leader.
    PartitionLeader(Group),
    /// Cut a random minority of the nodes off the network.
    IsolateMinority,
    /// Split the nodes but a random one into two halves that cannot reach
    /// each other, while that one (the bridge) reaches both.
    Bridge,
    /// Drop every packet the leader of a group sends its peers; theirs still
    /// reach it (one-way loss).
    OneWayLeader(Group),
    /// Cut the orders leader off every other node; at the end of the hold,
    /// kill another node, then heal the partition while that node starts again.
    PartitionRestart,
    /// Two faults at once: `SIGSTOP` a random follower of a group, then
    /// `kill -9` its leader while the follower stays frozen; both healed
    /// together. Needs five nodes, so that a majority survives both.
    Overlap(Group),
    /// A membership change under load: a random node (the leader too) is
    /// removed from both groups, leadership moving away first; healing adds
    /// it back, as a learner that catches up and then a voter.
    RemoveAndAdd,
    /// Make a node's clock run fast or slow by [`Schedule::clock_ratio`],
    /// without a jump, for the hold; true again when healing.
    ClockRate(ClockTarget, Speed),
    /// Step a node's clock (monotonic and wall) by [`CLOCK_JUMP_MS`], forward
    /// or back. Nothing to heal: the clock goes on from where it jumped.
    ClockJump(ClockTarget, Direction),
    /// Make the leader of a group's clock run slow (by
    /// [`Schedule::clock_ratio`]) and cut it off every other node: the case a lease without a drift margin
    /// gets wrong (the old leader trusts its lease longer than the others
    /// keep their promise not to elect another). Healed both ways.
    ClockSlowPartitionLeader(Group),
    /// Power loss of a random node: `kill -9`, then every write it did not
    /// `fsync` is lost (its data directory is a lazyfs mount); started
    /// again on what its disk kept when healing.
    PowerLossNode,
    /// Power loss of every node at once: all killed, all their unsynced
    /// writes lost, then all started again.
    PowerLossAll,
}

/// Whose clock a clock fault changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockTarget {
    /// The leader of the group.
    Leader(Group),
    /// A random node that does not lead the group.
    Follower(Group),
}

/// A clock running fast or slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speed {
    /// [`Schedule::clock_ratio`] times as fast as true time.
    Fast,
    /// [`Schedule::clock_ratio`] times as slow.
    Slow,
}

/// Which way a clock jumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Forward: time passes at once.
    Forward,
    /// Back. On a leader, this breaks the assumption that `lease` reads
    /// rest on (a monotonic clock never goes back; see [`crate::clock`]),
    /// so [`Fault::CLOCK`] makes backward jumps on followers only.
    Back,
}

/// How far a clock jumps, milliseconds: several election timeouts.
pub const CLOCK_JUMP_MS: i32 = 2_000;

impl Fault {
    /// Every fault that local processes support.
    pub const PROCESS: [Fault; 7] = [
        Fault::KillNode,
        Fault::KillLeader(Group::Catalog),
        Fault::KillLeader(Group::Orders),
        Fault::PauseNode,
        Fault::PauseLeader(Group::Catalog),
        Fault::PauseLeader(Group::Orders),
        Fault::RestartAll,
    ];

    /// Network faults between nodes that local processes carry out too
    /// (as root, with iptables; see [`crate::partition`]).
    pub const PARTITION: [Fault; 5] = [
        Fault::PartitionLeader(Group::Orders),
        Fault::Bridge,
        Fault::OneWayLeader(Group::Orders),
        Fault::PartitionLeader(Group::Catalog),
        Fault::PartitionRestart,
    ];

    /// Clock faults on leaders and followers that local processes carry out
    /// with libfaketime (see [`crate::clock`]), within the assumptions of
    /// `lease` reads: rates within the drift bound, forward jumps, backward
    /// jumps of followers.
    pub const CLOCK: [Fault; 8] = [
        Fault::ClockRate(ClockTarget::Leader(Group::Catalog), Speed::Slow),
        Fault::ClockRate(ClockTarget::Follower(Group::Orders), Speed::Fast),
        Fault::ClockJump(ClockTarget::Leader(Group::Orders), Direction::Forward),
        Fault::ClockRate(ClockTarget::Leader(Group::Orders), Speed::Fast),
        Fault::ClockJump(ClockTarget::Follower(Group::Catalog), Direction::Back),
        Fault::ClockRate(ClockTarget::Follower(Group::Catalog), Speed::Slow),
        Fault::ClockJump(ClockTarget::Follower(Group::Orders), Direction::Forward),
        Fault::ClockRate(ClockTarget::Leader(Group::Orders), Speed::Slow),
    ];

    /// Clock faults that also need partitions (root, iptables).
    pub const CLOCK_PARTITION: [Fault; 2] =
        [Fault::ClockSlowPartitionLeader(Group::Catalog), Fault::ClockSlowPartitionLeader(Group::Orders)];

    /// Whether the fault acts on a clock (the nodes must run under
    /// libfaketime, see [`crate::Cluster::start_with_clocks`]).
    pub fn is_clock(self) -> bool {
        matches!(self, Fault::ClockRate(..) | Fault::ClockJump(..) | Fault::ClockSlowPartitionLeader(_))
    }

    /// Power losses (need nodes on lazyfs, see [`crate::ClusterOptions::lazyfs`]).
    pub const POWER: [Fault; 2] = [Fault::PowerLossNode, Fault::PowerLossAll];

    /// Whether the fault kills the leader of a group (guarantees §6.7 bounds
    /// how long writes may stop after one).
    pub fn kills_a_leader(self) -> bool {
        matches!(self, Fault::KillLeader(_) | Fault::Overlap(_))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillNode => f.write_str("kill-node"),
            Fault::KillLeader(g) => write!(f, "kill-leader-{g}"),
            Fault::PauseNode => f.write_str("pause-node"),
            Fault::PauseLeader(g) => write!(f, "pause-leader-{g}"),
            Fault::RestartAll => f.write_str("restart-all"),
            Fault::PartitionLeader(g) => write!(f, "partition-leader-{g}"),
            Fault::IsolateMinority => f.write_str("isolate-minority"),
            Fault::Bridge => f.write_str("bridge"),
            Fault::OneWayLeader(g) => write!(f, "one-way-leader-{g}"),
            Fault::PartitionRestart => f.write_str("partition-restart"),
            Fault::PowerLossNode => f.write_str("power-loss-node"),
            Fault::PowerLossAll => f.write_str("power-loss-all"),
            Fault::Overlap(g) => write!(f, "kill-leader-and-pause-follower-{g}"),
            Fault::RemoveAndAdd => f.write_str("remove-and-add-node"),
            Fault::ClockRate(target, speed) => {
                let speed = match speed {
                    Speed::Fast => "fast",
                    Speed::Slow => "slow",
                };
                write!(f, "clock-{speed}-{target}")
            }
            Fault::ClockJump(target, Direction::Forward) => write!(f, "clock-jump-{target}"),
            Fault::ClockJump(target, Direction::Back) => write!(f, "clock-jump-back-{target}"),
            Fault::ClockSlowPartitionLeader(g) => write!(f, "clock-slow-partition-leader-{g}"),
        }
    }
}

impl fmt::Display for ClockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockTarget::Leader(g) => write!(f, "leader-{g}"),
            ClockTarget::Follower(g) => write!(f, "follower-{g}"),
        }
    }
}

impl FromStr for ClockTarget {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ClockTarget, String> {
        if let Some(g) = s.strip_prefix("leader-") {
            g.parse().map(ClockTarget::Leader)
        } else if let Some(g) = s.strip_prefix("follower-") {
            g.parse().map(ClockTarget::Follower)
        } else {
            Err(format!("{s:?} is not leader-GROUP or follower-GROUP"))
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Fault, String> {
        let with_group = |rest: &str, make: fn(Group) -> Fault| rest.parse::<Group>().map(make);
        let clock = |rest: &str, make: fn(ClockTarget) -> Fault| rest.parse::<ClockTarget>().map(make);
        match s {
            "kill-node" => Ok(Fault::KillNode),
            "pause-node" => Ok(Fault::PauseNode),
            "restart-all" => Ok(Fault::RestartAll),
            "isolate-minority" => Ok(Fault::IsolateMinority),
            "bridge" => Ok(Fault::Bridge),
            "partition-restart" => Ok(Fault::PartitionRestart),
            "remove-and-add-node" => Ok(Fault::RemoveAndAdd),
            "power-loss-node" => Ok(Fault::PowerLossNode),
            "power-loss-all" => Ok(Fault::PowerLossAll),
            _ => {
                if let Some(rest) = s.strip_prefix("kill-leader-and-pause-follower-") {
                    with_group(rest, Fault::Overlap)
                } else if let Some(rest) = s.strip_prefix("kill-leader-") {
                    with_group(rest, Fault::KillLeader)
                } else if let Some(rest) = s.strip_prefix("pause-leader-") {
                    with_group(rest, Fault::PauseLeader)
                } else if let Some(rest) = s.strip_prefix("partition-leader-") {
                    with_group(rest, Fault::PartitionLeader)
                } else if let Some(rest) = s.strip_prefix("one-way-leader-") {
                    with_group(rest, Fault::OneWayLeader)
                } else if let Some(rest) = s.strip_prefix("clock-slow-partition-leader-") {
                    with_group(rest, Fault::ClockSlowPartitionLeader)
                } else if let Some(rest) = s.strip_prefix("clock-fast-") {
                    clock(rest, |t| Fault::ClockRate(t, Speed::Fast))
                } else if let Some(rest) = s.strip_prefix("clock-slow-") {
                    clock(rest, |t| Fault::ClockRate(t, Speed::Slow))
                } else if let Some(rest) = s.strip_prefix("clock-jump-back-") {
                    clock(rest, |t| Fault::ClockJump(t, Direction::Back))
                } else if let Some(rest) = s.strip_prefix("clock-jump-") {
                    clock(rest, |t| Fault::ClockJump(t, Direction::Forward))
                } else {
                    Err(format!(
                        "unknown fault {s:?}: expected kill-node, kill-leader-{{catalog,orders}}, pause-node, \
                         pause-leader-{{catalog,orders}}, restart-all, partition-leader-{{catalog,orders}}, \
                         isolate-minority, bridge, one-way-leader-{{catalog,orders}}, partition-restart, \
                         kill-leader-and-pause-follower-{{catalog,orders}}, remove-and-add-node, \
                         clock-{{fast,slow,jump,jump-back}}-{{leader,follower}}-{{catalog,orders}}, \
                         clock-slow-partition-leader-{{catalog,orders}}, power-loss-node or power-loss-all"
                    ))
                }
            }
        }
    }
}

/// One primitive action on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Kill the node abruptly (`kill -9`, `docker kill`).
    Kill(u64),
    /// Start a killed node again with its data; a no-op on a running node.
    Start(u64),
    /// Freeze the node (`SIGSTOP`, `docker pause`).
    Pause(u64),
    /// Unfreeze it.
    Resume(u64),
    /// Cut the node off the network: it reaches nobody and nobody reaches it.
    Isolate(u64),
    /// Connect it again.
    Rejoin(u64),
    /// Drop what the first node sends the second (one direction of a link).
    Cut(u64, u64),
    /// Let it through again.
    Mend(u64, u64),
    /// Remove the node from both groups' memberships (it keeps running).
    Remove(u64),
    /// Add it back to both groups: a learner until caught up, then a voter;
    /// a no-op on a member.
    Add(u64),
    /// Make the node's clock run at this rate, per mille of true time (1000:
    /// true), from now on, without a jump.
    ClockRate(u64, u32),
    /// Step the node's clock by this many milliseconds (back when negative).
    ClockJump(u64, i32),
    /// Kill the node and cut its power: what it did not sync is lost.
    /// Starting it again powers it on.
    PowerCut(u64),
}

impl Action {
    /// The action that undoes this one (starting, resuming, rejoining,
    /// mending and a true clock undo themselves). A jump is not undone,
    /// which would be a jump back: its inverse does nothing.
    pub fn inverse(self) -> Action {
        match self {
            Action::Kill(n) | Action::Start(n) | Action::PowerCut(n) => Action::Start(n),
            Action::Pause(n) | Action::Resume(n) => Action::Resume(n),
            Action::Isolate(n) | Action::Rejoin(n) => Action::Rejoin(n),
            Action::Cut(a, b) | Action::Mend(a, b) => Action::Mend(a, b),
            Action::Remove(n) | Action::Add(n) => Action::Add(n),
            Action::ClockRate(n, _) => Action::ClockRate(n, 1_000),
            Action::ClockJump(n, _) => Action::ClockJump(n, 0),
        }
    }

    /// Whether this action breaks something (its inverse heals it).
    pub fn breaks(self) -> bool {
        matches!(
            self,
            Action::Kill(_)
                | Action::Pause(_)
                | Action::Isolate(_)
                | Action::Cut(..)
                | Action::Remove(_)
                | Action::PowerCut(_)
        ) || matches!(self, Action::ClockRate(_, rate) if rate != 1_000)
    }

    /// The node acted on (of a link, the sending end).
    pub fn node(self) -> u64 {
        match self {
            Action::Kill(n)
            | Action::Start(n)
            | Action::Pause(n)
            | Action::Resume(n)
            | Action::Isolate(n)
            | Action::Rejoin(n)
            | Action::PowerCut(n)
            | Action::Cut(n, _)
            | Action::Mend(n, _)
            | Action::Remove(n)
            | Action::Add(n)
            | Action::ClockRate(n, _)
            | Action::ClockJump(n, _) => n,
        }
    }

    /// Every node acted on (both ends of a link).
    pub fn nodes(self) -> Vec<u64> {
        match self {
            Action::Cut(a, b) | Action::Mend(a, b) => vec![a, b],
            a => vec![a.node()],
        }
    }

    /// Whether it acts on the network rather than on a process.
    pub fn is_network(self) -> bool {
        matches!(self, Action::Isolate(_) | Action::Rejoin(_) | Action::Cut(..) | Action::Mend(..))
    }

    /// Whether it acts on a node's clock.
    pub fn is_clock(self) -> bool {
        matches!(self, Action::ClockRate(..) | Action::ClockJump(..))
    }
}

/// Carries out actions on the nodes of one cluster.
///
/// Implementations must make every action idempotent (starting a running
/// node, resuming a running one, rejoining a connected one change nothing),
/// because healing at the end of a schedule repeats actions to be sure.
pub trait FaultInjector: Send {
    /// Ids of every node.
    fn node_ids(&self) -> Vec<u64>;

    /// Whether this injector can carry out `action`.
    fn supports(&self, action: Action) -> bool;

    /// Carries out one action.
    fn act(&mut self, action: Action) -> impl Future<Output = Result<()>> + Send;

    /// The leader of `group` that the reachable nodes agree on, if any.
    fn find_leader(&mut self, group: Group) -> impl Future<Output = Option<u64>> + Send;

    /// Waits until every node is up and both groups have a leader.
    fn wait_healthy(&mut self, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
}

/// Local `raft-node` processes: kill, pause and restart with signals; cut
/// links between nodes with iptables rules on their peer addresses (as
/// root, see [`crate::partition`]), which leave every node reachable by
/// clients; change clocks through libfaketime, on a cluster started with
/// [`Cluster::start_with_clocks`] (see [`crate::clock`]). Rules are removed
/// when healed, and when the cluster is dropped.
impl FaultInjector for Cluster {
    fn node_ids(&self) -> Vec<u64> {
        self.ids()
    }

    fn supports(&self, action: Action) -> bool {
        if action.is_clock() {
            return self.controls_clocks();
        }
        match action {
            Action::PowerCut(_) => self.on_lazyfs(),
            a => !a.is_network() || crate::partition::available().is_ok(),
        }
    }

    async fn act(&mut self, action: Action) -> Result<()> {
        match action {
            Action::Kill(n) => self.kill(n),
            Action::Start(n) => self.ensure_running(n),
            Action::Pause(n) => self.pause(n),
            Action::Resume(n) => self.resume(n),
            Action::Isolate(n) => self.partition(n)?,
            Action::Rejoin(n) => self.rejoin(n)?,
            Action::Cut(a, b) => self.cut_one_way(a, b)?,
            Action::Mend(a, b) => self.mend_one_way(a, b)?,
            Action::Remove(n) => {
                let admin = self.admin();
                admin
                    .remove_node(n, Duration::from_secs(30), &mut |_| {})
                    .await
                    .map_err(|e| Error::Cluster(format!("removing node {n}: {e}")))?;
            }
            Action::Add(n) => {
                let options = AddNodeOptions { deadline: Duration::from_secs(60), ..AddNodeOptions::default() };
                self.admin()
                    .add_node(n, &self.addr(n), options, &mut |_| {})
                    .await
                    .map_err(|e| Error::Cluster(format!("adding node {n} back: {e}")))?;
            }
            Action::ClockRate(n, per_mille) => self.set_clock_rate(n, f64::from(per_mille) / 1000.0)?,
            Action::ClockJump(_, 0) => {}
            Action::ClockJump(n, ms) => self.jump_clock(n, f64::from(ms) / 1000.0)?,
            Action::PowerCut(n) => self.power_cut(n)?,
        }
        Ok(())
    }

    async fn find_leader(&mut self, group: Group) -> Option<u64> {
        self.leader(group).await
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        self.try_wait_ready(timeout).await.map_err(Error::Cluster)
    }
}

/// When and which faults to inject.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The faults, in the order they are injected (cycling), or picked at
    /// random when `random` is set.
    pub faults: Vec<Fault>,
    /// Pick faults at random (seeded) instead of cycling.
    pub random: bool,
    /// Healthy time before the first fault.
    pub start_after: Duration,
    /// No fault starts later than this after `start_after`.
    pub duration: Duration,
    /// How long a fault lasts before it is healed.
    pub hold: Duration,
    /// Healthy time after each heal.
    pub quiet: Duration,
    /// How long to wait for an agreed leader before skipping a leader fault.
    pub leader_wait: Duration,
    /// How long the cluster may take to be healthy again after a heal
    /// (every node answers, both groups have an agreed leader). Longer is
    /// recorded as [`FaultPhase::Unhealthy`], a liveness failure.
    pub recover_timeout: Duration,
    /// Seed for picking faults and nodes.
    pub seed: u64,
    /// How many times faster than true time a fast clock runs, and slower a
    /// slow one: at most the nodes' `--max-clock-rate-ratio` (default 2),
    /// whose assumption the clock faults then keep.
    pub clock_ratio: f64,
}

impl Schedule {
    /// Cycles through `faults` for `duration`, holding each 2 s with 2 s
    /// of quiet after, starting after 2 s.
    pub fn cycle(faults: Vec<Fault>, duration: Duration) -> Schedule {
        Schedule {
            faults,
            random: false,
            start_after: Duration::from_secs(2),
            duration,
            hold: Duration::from_secs(2),
            quiet: Duration::from_secs(2),
            leader_wait: Duration::from_secs(5),
            recover_timeout: Duration::from_secs(10),
            seed: rand::random(),
            clock_ratio: 2.0,
        }
    }
}

/// What the nemesis did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReport {
    /// The fault.
    pub fault: Fault,
    /// The nodes it acted on (empty when skipped).
    pub nodes: Vec<u64>,
    /// Why it was not injected, if it was not.
    pub skipped: Option<String>,
}

/// Runs `schedule` against `injector`, recording every fault in `history`,
/// and heals everything before returning.
pub async fn run<I: FaultInjector>(injector: &mut I, schedule: &Schedule, history: &History) -> Vec<FaultReport> {
    let mut nemesis = Nemesis {
        history,
        rng: StdRng::seed_from_u64(schedule.seed),
        leader_wait: schedule.leader_wait,
        broken: BTreeSet::new(),
        clock_ratio: schedule.clock_ratio,
    };
    let mut reports = Vec::new();
    tokio::time::sleep(schedule.start_after).await;
    let end = Instant::now() + schedule.duration;
    let mut i = 0;
    while Instant::now() < end && !schedule.faults.is_empty() {
        let fault = if schedule.random {
            schedule.faults[nemesis.rng.random_range(0..schedule.faults.len())]
        } else {
            schedule.faults[i % schedule.faults.len()]
        };
        i += 1;
        let (report, before_heal) = nemesis.inject(injector, fault).await;
        let injected = report.skipped.is_none();
        reports.push(report);
        if injected {
            tokio::time::sleep(schedule.hold).await;
        }
        if injected {
            nemesis.act_all(injector, &fault.to_string(), before_heal).await;
            nemesis.heal(injector, &fault.to_string()).await;
            nemesis.recover(injector, &fault.to_string(), schedule.recover_timeout).await;
        }
        tokio::time::sleep(if injected { schedule.quiet } else { Duration::from_millis(500) }).await;
    }
    if !nemesis.broken.is_empty() {
        nemesis.heal(injector, "final heal").await;
        nemesis.recover(injector, "final heal", schedule.recover_timeout).await;
    }
    reports
}

/// The leader of `group`, asking for up to `wait` (an election may be under way).
async fn leader<I: FaultInjector>(injector: &mut I, group: Group, wait: Duration) -> std::result::Result<u64, String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(leader) = injector.find_leader(group).await {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            return Err(format!("no agreed {group} leader within {wait:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Nemesis<'h> {
    history: &'h History,
    rng: StdRng,
    leader_wait: Duration,
    /// Actions to undo: everything injected and not yet healed.
    broken: BTreeSet<Action>,
    /// See [`Schedule::clock_ratio`].
    clock_ratio: f64,
}

impl Nemesis<'_> {
    fn record(&self, phase: FaultPhase, fault: &str, nodes: Vec<u64>) {
        let fault = fault.to_string();
        self.history.record(Record::Fault { time: self.history.now(), phase, fault, nodes });
    }

    /// The actions that make `fault`, and those to carry out at the end of
    /// its hold, just before healing, or why it cannot be made.
    async fn plan<I: FaultInjector>(
        &mut self,
        injector: &mut I,
        fault: Fault,
    ) -> std::result::Result<(Vec<Action>, Vec<Action>), String> {
        let nodes = injector.node_ids();
        if nodes.is_empty() {
            return Err("no nodes".into());
        }
        let random = nodes[self.rng.random_range(0..nodes.len())];
        let wait = self.leader_wait;
        let mut before_heal = Vec::new();
        let actions = match fault {
            Fault::KillNode => vec![Action::Kill(random)],
            Fault::PauseNode => vec![Action::Pause(random)],
            Fault::KillLeader(g) => vec![Action::Kill(leader(injector, g, wait).await?)],
            Fault::PauseLeader(g) => vec![Action::Pause(leader(injector, g, wait).await?)],
            Fault::PartitionLeader(g) => vec![Action::Isolate(leader(injector, g, wait).await?)],
            Fault::RestartAll => {
                nodes.iter().map(|n| Action::Kill(*n)).chain(nodes.iter().map(|n| Action::Start(*n))).collect()
            }
            Fault::PowerLossNode => vec![Action::PowerCut(random)],
            Fault::PowerLossAll => {
                // Every process dies first, so that none outlives another's
                // power cut; then the disks lose their unsynced writes.
                let kills = nodes.iter().map(|n| Action::Kill(*n));
                let cuts = nodes.iter().map(|n| Action::PowerCut(*n));
                kills.chain(cuts).chain(nodes.iter().map(|n| Action::Start(*n))).collect()
            }
            Fault::IsolateMinority => {
                let mut shuffled = nodes.clone();
                for k in (1..shuffled.len()).rev() {
                    shuffled.swap(k, self.rng.random_range(0..=k));
                }
                let minority = ((nodes.len() - 1) / 2).max(1);
                shuffled.into_iter().take(minority).map(Action::Isolate).collect()
            }
            Fault::Bridge => {
                if nodes.len() < 3 {
                    return Err("a bridge needs three nodes".into());
                }
                let mut shuffled = nodes.clone();
                for k in (1..shuffled.len()).rev() {
                    shuffled.swap(k, self.rng.random_range(0..=k));
                }
                // shuffled[0] is the bridge; the rest split in two halves.
                let rest = &shuffled[1..];
                let (left, right) = rest.split_at(rest.len() / 2);
                let mut cuts = Vec::new();
                for a in left {
                    for b in right {
                        cuts.extend([Action::Cut(*a, *b), Action::Cut(*b, *a)]);
                    }
                }
                cuts
            }
            Fault::OneWayLeader(g) => {
                let l = leader(injector, g, wait).await?;
                nodes.iter().filter(|n| **n != l).map(|n| Action::Cut(l, *n)).collect()
            }
            Fault::RemoveAndAdd => vec![Action::Remove(random)],
            Fault::Overlap(g) => {
                if nodes.len() < 5 {
                    return Err("two faults at once need five nodes, so that a majority survives".into());
                }
                let l = leader(injector, g, wait).await?;
                let followers: Vec<u64> = nodes.iter().copied().filter(|n| *n != l).collect();
                let f = followers[self.rng.random_range(0..followers.len())];
                vec![Action::Pause(f), Action::Kill(l)]
            }
            Fault::ClockRate(target, speed) => {
                let node = self.clock_target(injector, target).await?;
                vec![Action::ClockRate(node, self.clock_rate(speed))]
            }
            Fault::ClockJump(target, direction) => {
                let node = self.clock_target(injector, target).await?;
                let ms = if direction == Direction::Forward { CLOCK_JUMP_MS } else { -CLOCK_JUMP_MS };
                vec![Action::ClockJump(node, ms)]
            }
            Fault::ClockSlowPartitionLeader(g) => {
                let l = leader(injector, g, wait).await?;
                vec![Action::ClockRate(l, self.clock_rate(Speed::Slow)), Action::Isolate(l)]
            }
            Fault::PartitionRestart => {
                let l = leader(injector, Group::Orders, wait).await?;
                let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != l).collect();
                if others.is_empty() {
                    return Err("no other node to restart".into());
                }
                before_heal.push(Action::Kill(others[self.rng.random_range(0..others.len())]));
                vec![Action::Isolate(l)]
            }
        };
        Ok((actions, before_heal))
    }

    /// A fast or slow clock's rate, per mille.
    fn clock_rate(&self, speed: Speed) -> u32 {
        let rate = match speed {
            Speed::Fast => self.clock_ratio,
            Speed::Slow => 1.0 / self.clock_ratio,
        };
        (rate * 1000.0).round().clamp(1.0, 1_000_000.0) as u32
    }

    /// The node a clock fault acts on.
    async fn clock_target<I: FaultInjector>(
        &mut self,
        injector: &mut I,
        target: ClockTarget,
    ) -> std::result::Result<u64, String> {
        match target {
            ClockTarget::Leader(g) => leader(injector, g, self.leader_wait).await,
            ClockTarget::Follower(g) => {
                let l = leader(injector, g, self.leader_wait).await?;
                let others: Vec<u64> = injector.node_ids().into_iter().filter(|n| *n != l).collect();
                if others.is_empty() {
                    return Err(format!("no {g} follower"));
                }
                Ok(others[self.rng.random_range(0..others.len())])
            }
        }
    }

    /// Injects `fault`; returns what was done and the actions to carry out
    /// just before healing it.
    async fn inject<I: FaultInjector>(&mut self, injector: &mut I, fault: Fault) -> (FaultReport, Vec<Action>) {
        let name = fault.to_string();
        let (actions, before_heal) = match self.plan(injector, fault).await {
            Ok(planned) => planned,
            Err(why) => {
                self.record(FaultPhase::Skip, &format!("{name}: {why}"), Vec::new());
                return (FaultReport { fault, nodes: Vec::new(), skipped: Some(why) }, Vec::new());
            }
        };
        if let Some(a) = actions.iter().chain(&before_heal).find(|a| !injector.supports(**a)) {
            let why = format!("this injector cannot {a:?}");
            self.record(FaultPhase::Skip, &format!("{name}: {why}"), Vec::new());
            return (FaultReport { fault, nodes: Vec::new(), skipped: Some(why) }, Vec::new());
        }
        let nodes: Vec<u64> = actions.iter().flat_map(|a| a.nodes()).collect::<BTreeSet<_>>().into_iter().collect();
        self.record(FaultPhase::Start, &name, nodes.clone());
        self.act_all(injector, &name, actions).await;
        self.record(FaultPhase::InPlace, &name, nodes.clone());
        (FaultReport { fault, nodes, skipped: None }, before_heal)
    }

    /// Carries out `actions` in order, remembering what they break.
    async fn act_all<I: FaultInjector>(&mut self, injector: &mut I, name: &str, actions: Vec<Action>) {
        for action in actions {
            // Remember the fault before acting: a half-done action must be healed too.
            if action.breaks() {
                self.broken.insert(action);
            } else {
                self.broken.retain(|b| b.inverse() != action.inverse());
            }
            if let Err(e) = injector.act(action).await {
                self.record(FaultPhase::Skip, &format!("{name}: {action:?} failed: {e}"), action.nodes());
            }
        }
    }

    /// Waits for the cluster to be healthy again and records whether it was.
    async fn recover<I: FaultInjector>(&mut self, injector: &mut I, name: &str, timeout: Duration) {
        match injector.wait_healthy(timeout).await {
            Ok(()) => self.record(FaultPhase::Recovered, name, Vec::new()),
            Err(e) => {
                // The first line: the rest of a harness's message is logs.
                let why = e.to_string();
                let why = why.lines().next().unwrap_or("");
                self.record(FaultPhase::Unhealthy, &format!("{name}: {why}"), Vec::new());
            }
        }
    }

    /// Undoes every broken action, retrying each a few times, and records
    /// the heal (also when there was nothing left to undo, as after
    /// `restart-all`, so that every fault has an end).
    async fn heal<I: FaultInjector>(&mut self, injector: &mut I, name: &str) {
        let nodes: Vec<u64> = self.broken.iter().flat_map(|a| a.nodes()).collect::<BTreeSet<_>>().into_iter().collect();
        // Resume before anything else: a paused node cannot be restarted
        // cleanly. Then start killed nodes and mend links, in that order:
        // a partition heals while the nodes restart.
        let mut undo: Vec<Action> = self.broken.iter().map(|a| a.inverse()).collect();
        undo.sort_by_key(|a| !matches!(a, Action::Resume(_)));
        for action in undo {
            for attempt in 1..=3 {
                match injector.act(action).await {
                    Ok(()) => break,
                    Err(e) if attempt == 3 => {
                        self.record(
                            FaultPhase::Skip,
                            &format!("{name}: healing {action:?} failed: {e}"),
                            action.nodes(),
                        );
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        self.broken.clear();
        self.record(FaultPhase::Heal, name, nodes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Clock;

    /// An injector that only remembers what it was asked to do.
    struct Recorder {
        nodes: Vec<u64>,
        leader: Option<u64>,
        actions: Vec<Action>,
        partitions: bool,
        healthy: bool,
    }

    impl FaultInjector for Recorder {
        fn node_ids(&self) -> Vec<u64> {
            self.nodes.clone()
        }
        fn supports(&self, action: Action) -> bool {
            self.partitions || !action.is_network()
        }
        async fn act(&mut self, action: Action) -> Result<()> {
            self.actions.push(action);
            Ok(())
        }
        async fn find_leader(&mut self, _group: Group) -> Option<u64> {
            self.leader
        }
        async fn wait_healthy(&mut self, _timeout: Duration) -> Result<()> {
            if self.healthy { Ok(()) } else { Err(Error::Cluster("node 2 does not answer\nlogs...".into())) }
        }
    }

    fn schedule(faults: Vec<Fault>) -> Schedule {
        Schedule {
            faults,
            random: false,
            start_after: Duration::ZERO,
            duration: Duration::from_millis(1),
            hold: Duration::ZERO,
            quiet: Duration::ZERO,
            leader_wait: Duration::from_millis(100),
            recover_timeout: Duration::from_secs(1),
            seed: 7,
            clock_ratio: 2.0,
        }
    }

    #[test]
    fn faults_parse_from_their_names() {
        let overlaps = [Fault::Overlap(Group::Catalog), Fault::Overlap(Group::Orders), Fault::RemoveAndAdd];
        let clock = [
            Fault::ClockJump(ClockTarget::Leader(Group::Catalog), Direction::Back),
            Fault::ClockRate(ClockTarget::Follower(Group::Orders), Speed::Slow),
        ];
        for fault in Fault::PROCESS
            .into_iter()
            .chain(Fault::PARTITION)
            .chain([Fault::IsolateMinority])
            .chain(overlaps)
            .chain(Fault::POWER)
            .chain(Fault::CLOCK)
            .chain(Fault::CLOCK_PARTITION)
            .chain(clock)
        {
            assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
        }
        assert_eq!(
            "clock-jump-back-follower-orders".parse::<Fault>().unwrap().to_string(),
            "clock-jump-back-follower-orders"
        );
        assert!("clock-fast-nobody-orders".parse::<Fault>().is_err());
        assert!("kill-leader-nobody".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().unwrap_err().contains("restart-all"));
    }

    #[tokio::test]
    async fn overlapping_faults_freeze_a_follower_and_kill_the_leader_then_heal_both() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3, 4, 5], leader: Some(2), actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        let reports = run(&mut rec, &schedule(vec![Fault::Overlap(Group::Orders)]), &history).await;
        assert_eq!(reports[0].skipped, None);
        let paused = match rec.actions[0] {
            Action::Pause(n) => n,
            a => panic!("first a follower is frozen, not {a:?}"),
        };
        assert_ne!(paused, 2);
        assert_eq!(rec.actions[1], Action::Kill(2));
        // Both undone.
        assert!(rec.actions.contains(&Action::Resume(paused)) && rec.actions.contains(&Action::Start(2)));

        // Three nodes cannot keep a majority through two faults: skipped.
        let mut small =
            Recorder { nodes: vec![1, 2, 3], leader: Some(2), actions: vec![], partitions: false, healthy: true };
        let reports = run(&mut small, &schedule(vec![Fault::Overlap(Group::Orders)]), &history).await;
        assert!(reports[0].skipped.as_deref().is_some_and(|w| w.contains("five nodes")), "{reports:?}");
        assert!(small.actions.is_empty());
    }

    #[tokio::test]
    async fn a_leader_kill_is_healed_by_starting_the_same_node() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(2), actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        let reports = run(&mut rec, &schedule(vec![Fault::KillLeader(Group::Catalog)]), &history).await;
        assert_eq!(reports[0].nodes, vec![2]);
        assert_eq!(rec.actions, vec![Action::Kill(2), Action::Start(2)]);
        let phases: Vec<FaultPhase> = history
            .records()
            .iter()
            .filter_map(|r| match r {
                Record::Fault { phase, .. } => Some(*phase),
                _ => None,
            })
            .collect();
        assert_eq!(phases, vec![FaultPhase::Start, FaultPhase::InPlace, FaultPhase::Heal, FaultPhase::Recovered]);
    }

    #[tokio::test]
    async fn a_cluster_that_does_not_recover_after_a_heal_is_recorded_unhealthy() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(2), actions: vec![], partitions: false, healthy: false };
        let history = History::in_memory(Clock::start());
        run(&mut rec, &schedule(vec![Fault::KillNode]), &history).await;
        let unhealthy: Vec<String> = history
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Fault { phase: FaultPhase::Unhealthy, fault, .. } => Some(fault),
                _ => None,
            })
            .collect();
        assert_eq!(unhealthy, vec!["kill-node: node 2 does not answer".to_string()]);
    }

    #[tokio::test]
    async fn a_fault_without_a_leader_is_skipped_and_changes_nothing() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: None, actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        let reports = run(&mut rec, &schedule(vec![Fault::PauseLeader(Group::Orders)]), &history).await;
        assert!(reports[0].skipped.is_some());
        assert!(rec.actions.is_empty());
    }

    #[tokio::test]
    async fn partitions_are_skipped_by_an_injector_without_a_network() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(1), actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        let reports = run(&mut rec, &schedule(vec![Fault::IsolateMinority]), &history).await;
        assert!(reports[0].skipped.as_deref().unwrap().contains("Isolate"), "{reports:?}");
        assert!(rec.actions.is_empty());
        let mut rec =
            Recorder { nodes: vec![1, 2, 3, 4, 5], leader: Some(1), actions: vec![], partitions: true, healthy: true };
        run(&mut rec, &schedule(vec![Fault::IsolateMinority]), &history).await;
        let isolated: Vec<_> = rec.actions.iter().filter(|a| matches!(a, Action::Isolate(_))).collect();
        let rejoined: Vec<_> = rec.actions.iter().filter(|a| matches!(a, Action::Rejoin(_))).collect();
        assert_eq!((isolated.len(), rejoined.len()), (2, 2), "{:?}", rec.actions);
    }

    #[tokio::test]
    async fn a_bridge_cuts_the_two_halves_both_ways_and_mends_every_cut() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(1), actions: vec![], partitions: true, healthy: true };
        let history = History::in_memory(Clock::start());
        let reports = run(&mut rec, &schedule(vec![Fault::Bridge]), &history).await;
        let cuts: Vec<_> = rec.actions.iter().filter(|a| matches!(a, Action::Cut(..))).copied().collect();
        let mends: BTreeSet<_> = rec.actions.iter().filter(|a| matches!(a, Action::Mend(..))).copied().collect();
        assert_eq!(cuts.len(), 2, "{:?}", rec.actions);
        let (Action::Cut(a, b), Action::Cut(c, d)) = (cuts[0], cuts[1]) else { unreachable!() };
        assert_eq!((a, b), (d, c), "one link, both ways");
        assert_eq!(mends, cuts.iter().map(|c| c.inverse()).collect());
        assert_eq!(reports[0].nodes.len(), 2, "the bridge itself is not acted on");
    }

    #[tokio::test]
    async fn one_way_loss_cuts_what_the_leader_sends() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(2), actions: vec![], partitions: true, healthy: true };
        let history = History::in_memory(Clock::start());
        run(&mut rec, &schedule(vec![Fault::OneWayLeader(Group::Orders)]), &history).await;
        use Action::*;
        assert_eq!(rec.actions, vec![Cut(2, 1), Cut(2, 3), Mend(2, 1), Mend(2, 3)]);
    }

    #[tokio::test]
    async fn a_partition_heals_while_a_follower_restarts() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(3), actions: vec![], partitions: true, healthy: true };
        let history = History::in_memory(Clock::start());
        run(&mut rec, &schedule(vec![Fault::PartitionRestart]), &history).await;
        use Action::*;
        let killed = match rec.actions.get(1) {
            Some(Kill(n)) if *n != 3 => *n,
            _ => panic!("a follower is killed after the partition: {:?}", rec.actions),
        };
        assert_eq!(rec.actions, vec![Isolate(3), Kill(killed), Start(killed), Rejoin(3)]);
        // Without partitions, the whole fault is skipped.
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(3), actions: vec![], partitions: false, healthy: true };
        run(&mut rec, &schedule(vec![Fault::PartitionRestart]), &history).await;
        assert!(rec.actions.is_empty());
    }

    #[tokio::test]
    async fn a_clock_rate_is_made_true_again_and_a_jump_is_not_undone() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(2), actions: vec![], partitions: true, healthy: true };
        let history = History::in_memory(Clock::start());
        let faults = vec![
            Fault::ClockRate(ClockTarget::Leader(Group::Orders), Speed::Slow),
            Fault::ClockRate(ClockTarget::Follower(Group::Orders), Speed::Fast),
            Fault::ClockJump(ClockTarget::Leader(Group::Catalog), Direction::Forward),
            Fault::ClockSlowPartitionLeader(Group::Catalog),
        ];
        for fault in faults {
            run(&mut rec, &schedule(vec![fault]), &history).await;
        }
        use Action::*;
        assert_eq!(rec.actions[..2], [ClockRate(2, 500), ClockRate(2, 1_000)]);
        let ClockRate(follower, 2_000) = rec.actions[2] else { panic!("{:?}", rec.actions) };
        assert_ne!(follower, 2, "a follower's clock, not the leader's");
        assert_eq!(rec.actions[3], ClockRate(follower, 1_000));
        assert_eq!(rec.actions[4], ClockJump(2, CLOCK_JUMP_MS), "{:?}", rec.actions);
        let slow_partition: BTreeSet<_> = rec.actions[5..].iter().copied().collect();
        assert_eq!(
            slow_partition,
            BTreeSet::from([ClockRate(2, 500), Isolate(2), ClockRate(2, 1_000), Rejoin(2)]),
            "{:?}",
            rec.actions
        );
        assert_eq!(rec.actions.len(), 9, "nothing undoes the jump: {:?}", rec.actions);
    }

    #[tokio::test]
    async fn restarting_all_nodes_kills_every_node_then_starts_every_node() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(1), actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        run(&mut rec, &schedule(vec![Fault::RestartAll]), &history).await;
        use Action::*;
        assert_eq!(rec.actions, vec![Kill(1), Kill(2), Kill(3), Start(1), Start(2), Start(3)]);
    }

    #[tokio::test]
    async fn a_power_loss_of_every_node_kills_them_all_before_cutting_any_disk() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(1), actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        run(&mut rec, &schedule(vec![Fault::PowerLossAll]), &history).await;
        use Action::*;
        assert_eq!(
            rec.actions,
            vec![Kill(1), Kill(2), Kill(3), PowerCut(1), PowerCut(2), PowerCut(3), Start(1), Start(2), Start(3)]
        );
    }

    #[tokio::test]
    async fn a_node_power_loss_is_healed_by_starting_the_same_node() {
        let mut rec =
            Recorder { nodes: vec![1, 2, 3], leader: Some(1), actions: vec![], partitions: false, healthy: true };
        let history = History::in_memory(Clock::start());
        run(&mut rec, &schedule(vec![Fault::PowerLossNode]), &history).await;
        let [Action::PowerCut(n), Action::Start(m)] = rec.actions[..] else { panic!("{:?}", rec.actions) };
        assert_eq!(n, m);
    }
}
