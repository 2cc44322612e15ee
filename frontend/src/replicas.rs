//! The raft nodes as this frontend sees them: health, leaders, load.
//!
//! A probe task asks every node's `/health` each probe interval. A node that
//! answers is healthy; one that does not, or whose request just failed, is
//! unhealthy until a probe succeeds again. So a dead replica stops receiving
//! reads within one probe interval (at once, if a request hits it first) and
//! gets them back within one interval of recovering.
//!
//! Probes also tell who leads each group, and give *commit samples*: a node
//! that leads a group, and whose leadership a quorum acknowledged
//! `quorum_ack_age_ms` ago, reports its commit index. Every write
//! acknowledged before `sent_at - quorum_ack_age` has an index at or below
//! that commit index. The cache uses these samples to bound staleness.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::{Group, NodeHealth};
use tokio::time::Instant;

use crate::config::Balance;

/// Leaders older than this since their last quorum acknowledgement are not
/// trusted for commit samples: they may have been deposed without knowing.
const MAX_TRUSTED_ACK_AGE: Duration = Duration::from_millis(1000);
/// Commit samples kept per group.
const SAMPLES_KEPT: usize = 64;

/// One raft node.
pub struct Replica {
    /// Node id.
    pub id: u64,
    /// host:port.
    pub addr: String,
    /// `http://host:port`, or `https://` under TLS.
    pub base: String,
    healthy: AtomicBool,
    in_flight: AtomicU64,
    /// Milliseconds since the frontend started at the last successful probe.
    last_ok_ms: AtomicU64,
}

impl Replica {
    /// Whether the last probe or request succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Requests in flight from this frontend.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Counts a request in flight for as long as the guard lives.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight to a replica.
pub struct InFlight(Arc<Replica>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What a leader reported about its commit index, and when that held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSample {
    /// The leader's term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// A moment at which every acknowledged write had an index ≤ `commit`.
    pub at: Instant,
}

struct GroupView {
    /// (term, leader id); id 0 when unknown. The highest term wins, so a
    /// deposed leader that still believes it leads cannot take the place of
    /// its successor.
    leader: Mutex<(u64, u64)>,
    samples: Mutex<VecDeque<CommitSample>>,
}

/// The replica set.
pub struct Replicas {
    list: Vec<Arc<Replica>>,
    balance: Balance,
    next: AtomicUsize,
    groups: [GroupView; 2],
    started: Instant,
}

/// Index of a group in per-group arrays.
pub fn slot(group: Group) -> usize {
    match group {
        Group::Catalog => 0,
        Group::Orders => 1,
    }
}

impl Replicas {
    /// The nodes `(id, host:port)`, balanced by `balance`.
    pub fn new(nodes: &[(u64, String)], balance: Balance, scheme: &str) -> Replicas {
        let list = nodes
            .iter()
            .map(|(id, addr)| {
                Arc::new(Replica {
                    id: *id,
                    addr: addr.clone(),
                    base: format!("{scheme}://{addr}"),
                    // Optimistic until the first probe says otherwise.
                    healthy: AtomicBool::new(true),
                    in_flight: AtomicU64::new(0),
                    last_ok_ms: AtomicU64::new(0),
                })
            })
            .collect();
        let group = || GroupView { leader: Mutex::new((0, 0)), samples: Mutex::new(VecDeque::new()) };
        Replicas { list, balance, next: AtomicUsize::new(0), groups: [group(), group()], started: Instant::now() }
    }

    /// All replicas.
    pub fn all(&self) -> &[Arc<Replica>] {
        &self.list
    }

    /// The replica with id `id`.
    pub fn by_id(&self, id: u64) -> Option<&Arc<Replica>> {
        self.list.iter().find(|r| r.id == id)
    }

    /// A replica to read from, skipping `tried`: a healthy one chosen by the
    /// balancing policy, or, when none is healthy, any untried one (probes
    /// may be behind the truth).
    pub fn pick(&self, tried: &[u64]) -> Option<Arc<Replica>> {
        let candidates: Vec<&Arc<Replica>> =
            self.list.iter().filter(|r| r.is_healthy() && !tried.contains(&r.id)).collect();
        let chosen = match self.balance {
            _ if candidates.is_empty() => None,
            Balance::RoundRobin => {
                let n = self.next.fetch_add(1, Relaxed);
                Some(candidates[n % candidates.len()])
            }
            Balance::LeastOutstanding => {
                // Rotate the start so ties are spread, then take the least loaded.
                let n = self.next.fetch_add(1, Relaxed);
                (0..candidates.len()).map(|i| candidates[(n + i) % candidates.len()]).min_by_key(|r| r.in_flight())
            }
        };
        chosen.or_else(|| self.list.iter().find(|r| !tried.contains(&r.id))).cloned()
    }

    /// Marks a replica unhealthy after a failed request.
    pub fn failed(&self, replica: &Replica) {
        if replica.healthy.swap(false, Relaxed) {
            tracing::warn!(node = replica.id, addr = %replica.addr, "replica marked unhealthy");
        }
    }

    /// The leader of `group`, if known.
    pub fn leader(&self, group: Group) -> Option<Arc<Replica>> {
        let (_, id) = *self.groups[slot(group)].leader.lock().expect("leader poisoned");
        self.by_id(id).cloned()
    }

    /// Records a `not_leader` hint naming the leader of `group` (or none).
    pub fn set_leader(&self, group: Group, id: Option<u64>) {
        self.groups[slot(group)].leader.lock().expect("leader poisoned").1 = id.unwrap_or(0);
    }

    /// Commit samples of `group`, oldest first.
    pub fn samples(&self, group: Group) -> Vec<CommitSample> {
        self.groups[slot(group)].samples.lock().expect("samples poisoned").iter().copied().collect()
    }

    /// Milliseconds since the last successful probe of `replica`, if any.
    pub fn probe_age(&self, replica: &Replica) -> Option<u64> {
        let ok = replica.last_ok_ms.load(Relaxed);
        (ok > 0).then(|| (self.started.elapsed().as_millis() as u64).saturating_sub(ok))
    }

    /// Folds one probe answer in: health, leaders, commit samples. Returns
    /// the groups that got a new commit sample.
    pub fn record_probe(&self, replica: &Replica, sent_at: Instant, health: Option<NodeHealth>) -> Vec<Group> {
        let Some(health) = health else {
            self.failed(replica);
            return Vec::new();
        };
        if !replica.healthy.swap(true, Relaxed) {
            tracing::info!(node = replica.id, addr = %replica.addr, "replica healthy");
        }
        replica.last_ok_ms.store((self.started.elapsed().as_millis() as u64).max(1), Relaxed);
        let mut sampled = Vec::new();
        for (group, g) in &health.groups {
            let view = &self.groups[slot(*group)];
            if let Some(leader) = g.leader_id {
                let mut known = view.leader.lock().expect("leader poisoned");
                // A newer term always wins; within a term, the word of the
                // node that leads it wins.
                if g.term > known.0 || (g.term == known.0 && (g.is_leader || known.1 == 0)) {
                    *known = (g.term, leader);
                }
            }
            let Some(age) = g.quorum_ack_age_ms.map(Duration::from_millis) else { continue };
            if !g.is_leader || age > MAX_TRUSTED_ACK_AGE {
                continue;
            }
            let sample = CommitSample { term: g.term, commit: g.committed_index, at: sent_at - age };
            let mut samples = view.samples.lock().expect("samples poisoned");
            // A sample from an older term than the newest one known comes
            // from a deposed leader: ignore it.
            if samples.back().is_some_and(|last| last.term > sample.term || last.at >= sample.at) {
                continue;
            }
            samples.push_back(sample);
            while samples.len() > SAMPLES_KEPT {
                samples.pop_front();
            }
            sampled.push(*group);
        }
        sampled
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bazar_api::GroupHealth;

    use super::*;

    fn health(node: u64, leader: u64, term: u64, commit: u64, ack_ms: Option<u64>) -> NodeHealth {
        let g = GroupHealth {
            leader_id: Some(leader),
            term,
            is_leader: node == leader,
            committed_index: commit,
            applied_index: commit,
            quorum_ack_age_ms: ack_ms,
        };
        NodeHealth {
            status: "ok".into(),
            node_id: node,
            initialized: true,
            catalog_seeded: true,
            leaders: BTreeMap::new(),
            groups: BTreeMap::from([(Group::Catalog, g)]),
            unclaimed_buys: 0,
            incarnation: None,
            state_lost: None,
        }
    }

    fn replicas(balance: Balance) -> Replicas {
        Replicas::new(&[(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())], balance, "http")
    }

    #[test]
    fn round_robin_skips_unhealthy_and_tried_replicas() {
        let r = replicas(Balance::RoundRobin);
        r.failed(r.by_id(2).unwrap());
        let picks: Vec<u64> = (0..4).map(|_| r.pick(&[]).unwrap().id).collect();
        assert!(!picks.contains(&2), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&3));
        assert_eq!(r.pick(&[1, 3]).unwrap().id, 2, "an unhealthy replica beats none at all");
        assert!(r.pick(&[1, 2, 3]).is_none());
    }

    #[test]
    fn least_outstanding_prefers_idle_replicas() {
        let r = replicas(Balance::LeastOutstanding);
        let _busy1 = r.by_id(1).unwrap().start();
        let _busy3 = r.by_id(3).unwrap().start();
        assert_eq!(r.pick(&[]).unwrap().id, 2);
    }

    #[test]
    fn probes_track_health_leaders_and_trusted_commit_samples() {
        let r = replicas(Balance::RoundRobin);
        let now = Instant::now();
        r.record_probe(r.by_id(2).unwrap(), now, None);
        assert!(!r.by_id(2).unwrap().is_healthy());
        assert_eq!(r.record_probe(r.by_id(2).unwrap(), now, Some(health(2, 1, 3, 10, None))), vec![]);
        assert!(r.by_id(2).unwrap().is_healthy());
        assert_eq!(r.leader(Group::Catalog).unwrap().id, 1);

        // The leader's report becomes a sample, dated back by its ack age.
        let got = r.record_probe(r.by_id(1).unwrap(), now, Some(health(1, 1, 3, 12, Some(40))));
        assert_eq!(got, vec![Group::Catalog]);
        let s = r.samples(Group::Catalog);
        assert_eq!((s[0].term, s[0].commit, s[0].at), (3, 12, now - Duration::from_millis(40)));

        // A leader out of touch with its quorum, or of an older term, is not trusted.
        let later = now + Duration::from_millis(10);
        assert!(r.record_probe(r.by_id(1).unwrap(), later, Some(health(1, 1, 3, 13, Some(5000)))).is_empty());
        assert!(r.record_probe(r.by_id(3).unwrap(), later, Some(health(3, 3, 2, 99, Some(1)))).is_empty());
        assert_eq!(r.samples(Group::Catalog).len(), 1);
        assert_eq!(r.leader(Group::Catalog).unwrap().id, 1, "a deposed leader does not take over");

        // A newer term's leader does, even when reported by a follower.
        r.record_probe(r.by_id(2).unwrap(), later, Some(health(2, 3, 4, 20, None)));
        assert_eq!(r.leader(Group::Catalog).unwrap().id, 3);
    }
}
