//! `GET /metrics`: Prometheus text exposition (format 0.0.4).
//!
//! What an operator watches, by family (`group` is `catalog` or `orders`):
//!
//! | family | kind | what |
//! |---|---|---|
//! | `bazar_raft_state{group,state}` | gauge | 1 for this node's role (leader, follower, candidate, learner, shutdown) |
//! | `bazar_raft_is_leader`, `_term`, `_leader_id` | gauge | who leads, in which term |
//! | `bazar_raft_{last_log,committed,applied,snapshot,purged}_index` | gauge | how far the log, commit, apply, snapshot and purge are |
//! | `bazar_raft_voters`, `bazar_raft_learners` | gauge | the membership |
//! | `bazar_raft_follower_lag{follower}`, `_follower_matched_index`, `_follower_ack_age_seconds` | gauge | on the leader: each follower's progress and last acknowledgement |
//! | `bazar_raft_quorum_ack_age_seconds` | gauge | on the leader: time since a quorum last acknowledged it |
//! | `bazar_raft_{committed,applied,appended,proposed}_entries_total` | counter | commit, apply, log-write and proposal rates |
//! | `bazar_raft_proposal_batches_total`, `_read_index_requests_total`, `_read_index_rounds_total` | counter | work shared by concurrent writes and reads |
//! | `bazar_raft_{apply,append}_batches_total`, `_append_rpcs_total`, `_votes_total`, `_heartbeats_total`, `_leader_transfers_total` | counter | Raft activity |
//! | `bazar_snapshot_{built,installed}_total`, `_build_seconds_total`, `_install_seconds_total` | counter | snapshot events |
//! | `bazar_snapshot_last_{built,installed}_bytes`, `_last_{build,install}_seconds`, `bazar_raft_snapshot_bytes` | gauge | the last snapshot built and installed, and the one on disk |
//! | `bazar_wal_sync_duration_seconds`, `bazar_wal_append_duration_seconds` | histogram | each WAL fsync; each log append from write to durable |
//! | `bazar_wal_syncs_total`, `_synced_appends_total`, `_sync_seconds_total` | counter | group commit: appends per fsync |
//! | `bazar_rocksdb_sst_bytes{group,cf}`, `_memtable_bytes{group,cf}`, `_estimated_keys{group,cf}`, `_wal_bytes`, `_block_cache_bytes` | gauge | storage sizes |
//! | `bazar_incarnation_refused_rpcs_total`, `bazar_incarnation_refused_by_peers_total` | counter | Raft RPCs this node refused because the sender knows it as another incarnation (it lost its state), and RPCs peers refused for that reason |
//! | `bazar_incarnation_state_lost`, `bazar_incarnation_peer_state_lost{peer}` | gauge | 1 while this node, or that peer, is refused as another incarnation (see `crate::incarnation`) |
//! | `process_resident_memory_bytes`, `process_open_fds` | gauge | the process |
//! | `bazar_http_requests_total{method,route,status}`, `bazar_http_request_duration_seconds` | counter, histogram | the HTTP edge |
//!
//! Each family is written once, with its `# HELP` and `# TYPE` lines, and
//! then its samples for every group, as the format requires.
//!
//! Every label takes a bounded set of values, whatever clients send: the
//! HTTP `method` is one of the standard methods or `other`, the `route` a
//! route template of the router or `unmatched`, the `status` one the node
//! answers with.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bazar_api::Group;
use openraft::{Instant as _, ServerState};

use crate::node::Node;
use crate::raft::RaftGroup;
use crate::sm::{SnapshotStore, StateMachine};
use crate::stats::{Histogram, HistogramSnapshot, LATENCY_BUCKETS, RaftCounters};
use crate::store::Purpose;

/// Request counts and latencies.
#[derive(Default)]
pub struct HttpMetrics {
    inner: Mutex<HttpInner>,
}

#[derive(Default)]
struct HttpInner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, elapsed: std::time::Duration) {
        let mut inner = self.inner.lock().expect("metrics poisoned");
        *inner.requests.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        inner.latency.entry((method.to_string(), route.to_string())).or_default().observe(elapsed);
    }
}

/// The `method` label: a standard method, else `other` (a client may send
/// any token as a method).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware recording every request.
pub async fn track(State(http): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    // A route template of the router (a fixed set), never the raw path.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let (mut response, steps) = crate::timing::scope(next.run(req)).await;
    let took = started.elapsed();
    response.headers_mut().append(crate::timing::SERVER_TIMING, crate::timing::header("node", took, &steps));
    http.record(method, &route, response.status().as_u16(), took);
    response
}

/// Writes Prometheus text, one family at a time.
struct Exposition {
    out: String,
}

/// Label pairs of one sample.
type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one sample per group.
    fn per_group(&mut self, name: &str, kind: &str, help: &str, values: [u64; 2]) {
        self.family(name, kind, help);
        for (group, value) in Group::ALL.iter().zip(values) {
            self.sample(name, &[("group", group.as_str())], value);
        }
    }

    fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&h.cumulative) {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_secs);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

const STATES: [ServerState; 5] =
    [ServerState::Leader, ServerState::Follower, ServerState::Candidate, ServerState::Learner, ServerState::Shutdown];

/// One group's Raft state, read once per scrape. Plain numbers, so that
/// both groups (whose openraft type configurations differ) are written by
/// the same code.
struct RaftSample {
    state: ServerState,
    term: u64,
    leader: u64,
    last_log: u64,
    committed: u64,
    applied: u64,
    snapshot: u64,
    purged: u64,
    voters: u64,
    learners: u64,
    /// On the leader: each follower's progress.
    followers: Vec<FollowerRow>,
    /// On the leader: seconds since a quorum acknowledged it.
    quorum_ack_age: Option<f64>,
}

/// One follower's progress, as the leader sees it.
struct FollowerRow {
    id: String,
    matched: u64,
    lag: u64,
    ack_age_secs: Option<f64>,
}

fn raft_sample<S: StateMachine>(g: &RaftGroup<S>) -> RaftSample {
    let m = g.metrics();
    let index = |l: Option<&openraft::alias::LogIdOf<S::C>>| l.map(|l| l.index).unwrap_or(0);
    let last_log = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    let followers = m
        .replication
        .as_ref()
        .map(|replication| {
            replication
                .iter()
                .map(|(id, matched)| {
                    let matched = index(matched.as_ref());
                    let acked = m.heartbeat.as_ref().and_then(|h| h.get(id)).and_then(|t| t.as_ref());
                    FollowerRow {
                        id: id.to_string(),
                        matched,
                        lag: last_log.saturating_sub(matched),
                        ack_age_secs: acked.map(|t| t.elapsed().as_secs_f64()),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    RaftSample {
        state: m.state,
        term: m.current_term,
        leader: m.current_leader.unwrap_or(0),
        last_log,
        committed: index(m.cluster_committed.as_ref()),
        applied: index(m.last_applied.as_ref()),
        snapshot: index(m.snapshot.as_ref()),
        purged: index(m.purged.as_ref()),
        voters: membership.voter_ids().count() as u64,
        learners: membership.learner_ids().count() as u64,
        followers,
        quorum_ack_age: m.last_quorum_acked.as_ref().map(|t| t.elapsed().as_secs_f64()),
    }
}

/// Raft gauges of both groups, and the counters openraft reported.
fn raft_families(x: &mut Exposition, samples: &[RaftSample; 2], counters: [&RaftCounters; 2]) {
    let gauge = |x: &mut Exposition, name: &str, help: &str, f: fn(&RaftSample) -> u64| {
        x.per_group(name, "gauge", help, [f(&samples[0]), f(&samples[1])]);
    };
    x.family("bazar_raft_state", "gauge", "1 for this node's role in the group.");
    for (group, sample) in Group::ALL.iter().zip(samples) {
        for s in STATES {
            let labels = [("group", group.as_str()), ("state", state_name(s))];
            x.sample("bazar_raft_state", &labels, u8::from(s == sample.state));
        }
    }
    gauge(x, "bazar_raft_is_leader", "Whether this node leads the group.", |s| {
        u64::from(s.state == ServerState::Leader)
    });
    gauge(x, "bazar_raft_term", "Current term.", |s| s.term);
    gauge(x, "bazar_raft_leader_id", "The leader this node knows of (0: none).", |s| s.leader);
    gauge(x, "bazar_raft_last_log_index", "Last index in this node's log.", |s| s.last_log);
    gauge(x, "bazar_raft_committed_index", "Highest index known committed.", |s| s.committed);
    gauge(x, "bazar_raft_applied_index", "Highest index applied to this node's state machine.", |s| s.applied);
    gauge(x, "bazar_raft_snapshot_index", "Last index covered by this node's current snapshot.", |s| s.snapshot);
    gauge(x, "bazar_raft_purged_index", "Last index purged from this node's log.", |s| s.purged);
    gauge(x, "bazar_raft_voters", "Voters in the group's membership.", |s| s.voters);
    gauge(x, "bazar_raft_learners", "Learners in the group's membership.", |s| s.learners);

    let follower_family = |x: &mut Exposition, name: &str, help: &str, f: fn(&FollowerRow) -> Option<f64>| {
        x.family(name, "gauge", help);
        for (group, sample) in Group::ALL.iter().zip(samples) {
            for row in &sample.followers {
                if let Some(value) = f(row) {
                    x.sample(name, &[("group", group.as_str()), ("follower", &row.id)], value);
                }
            }
        }
    };
    follower_family(
        x,
        "bazar_raft_follower_lag",
        "On the leader: entries each follower is behind the leader's last log index.",
        |r| Some(r.lag as f64),
    );
    follower_family(
        x,
        "bazar_raft_follower_matched_index",
        "On the leader: last index known replicated to each follower.",
        |r| Some(r.matched as f64),
    );
    follower_family(
        x,
        "bazar_raft_follower_ack_age_seconds",
        "On the leader: seconds since each follower last acknowledged it.",
        |r| r.ack_age_secs,
    );
    x.family(
        "bazar_raft_quorum_ack_age_seconds",
        "gauge",
        "On the leader: seconds since a quorum last acknowledged it.",
    );
    for (group, sample) in Group::ALL.iter().zip(samples) {
        if let Some(age) = sample.quorum_ack_age {
            x.sample("bazar_raft_quorum_ack_age_seconds", &[("group", group.as_str())], age);
        }
    }

    let counter = |x: &mut Exposition, name: &str, help: &str, f: fn(&RaftCounters) -> &AtomicU64| {
        x.per_group(name, "counter", help, counters.map(|c| f(c).load(Relaxed)));
    };
    counter(x, "bazar_raft_committed_entries_total", "Entries seen committed since this node started.", |c| {
        &c.committed_entries
    });
    counter(x, "bazar_raft_applied_entries_total", "Entries applied to the state machine.", |c| &c.applied_entries);
    counter(x, "bazar_raft_apply_batches_total", "Batches of entries applied.", |c| &c.apply_batches);
    counter(x, "bazar_raft_appended_entries_total", "Entries written to this node's log.", |c| &c.appended_entries);
    counter(x, "bazar_raft_append_batches_total", "Batches of entries written to the log.", |c| &c.append_batches);
    counter(x, "bazar_raft_proposed_entries_total", "Client writes proposed by this node as leader.", |c| {
        &c.proposed_entries
    });
    counter(x, "bazar_raft_proposal_batches_total", "Batches the proposed client writes went to openraft in.", |c| {
        &c.proposal_batches
    });
    counter(
        x,
        "bazar_raft_read_index_requests_total",
        "Reads that needed a read index here (lease or linearizable, local or for a follower).",
        |c| &c.read_index_requests,
    );
    counter(x, "bazar_raft_read_index_rounds_total", "Read indexes asked for: one per round of waiting reads.", |c| {
        &c.read_index_rounds
    });
    counter(x, "bazar_raft_append_rpcs_total", "AppendEntries RPCs received from a leader.", |c| &c.append_rpcs);
    counter(x, "bazar_raft_votes_total", "Vote requests handled.", |c| &c.votes);
    counter(x, "bazar_raft_heartbeats_total", "Heartbeat rounds sent as leader.", |c| &c.heartbeats);
    counter(
        x,
        "bazar_raft_leader_transfers_total",
        "Leadership transfers this node started (admin calls and graceful shutdowns).",
        |c| &c.leader_transfers,
    );
}

fn snapshot_families(x: &mut Exposition, stores: [&SnapshotStore; 2]) {
    let load = |f: fn(&crate::sm::snapshot::SnapshotStats) -> &AtomicU64| stores.map(|s| f(s.stats()).load(Relaxed));
    let secs = |millis: [u64; 2]| millis.map(|m| m as f64 / 1e3);
    x.per_group("bazar_snapshot_built_total", "counter", "Snapshots built from this node's state.", load(|s| &s.built));
    x.per_group(
        "bazar_snapshot_installed_total",
        "counter",
        "Snapshots received from a leader and installed.",
        load(|s| &s.installed),
    );
    x.per_group(
        "bazar_snapshot_last_built_bytes",
        "gauge",
        "Size of the last snapshot built.",
        load(|s| &s.last_built_bytes),
    );
    x.per_group(
        "bazar_snapshot_last_installed_bytes",
        "gauge",
        "Size of the last snapshot installed.",
        load(|s| &s.last_installed_bytes),
    );
    let float_family = |x: &mut Exposition, name: &str, kind: &str, help: &str, values: [f64; 2]| {
        x.family(name, kind, help);
        for (group, v) in Group::ALL.iter().zip(values) {
            x.sample(name, &[("group", group.as_str())], v);
        }
    };
    float_family(
        x,
        "bazar_snapshot_last_build_seconds",
        "gauge",
        "Time the last snapshot build took.",
        secs(load(|s| &s.last_build_millis)),
    );
    float_family(
        x,
        "bazar_snapshot_last_install_seconds",
        "gauge",
        "Time the last snapshot installation took (verify and write, after the transfer).",
        secs(load(|s| &s.last_install_millis)),
    );
    float_family(
        x,
        "bazar_snapshot_build_seconds_total",
        "counter",
        "Time spent building snapshots.",
        secs(load(|s| &s.build_millis)),
    );
    float_family(
        x,
        "bazar_snapshot_install_seconds_total",
        "counter",
        "Time spent installing snapshots.",
        secs(load(|s| &s.install_millis)),
    );
    x.per_group(
        "bazar_raft_snapshot_bytes",
        "gauge",
        "Size of the snapshot files on disk.",
        stores.map(SnapshotStore::size_bytes),
    );
}

fn storage_families(x: &mut Exposition, node: &Node) {
    let store = &node.store;
    let cfs = [(Purpose::Log, "log"), (Purpose::Raft, "raft"), (Purpose::Sm, "sm"), (Purpose::SmMeta, "sm_meta")];
    let per_cf = |x: &mut Exposition, name: &str, help: &str, property: &str| {
        x.family(name, "gauge", help);
        for group in Group::ALL {
            for (purpose, cf) in cfs {
                let value =
                    store.db().property_int_value_cf(store.cf(group, purpose), property).ok().flatten().unwrap_or(0);
                x.sample(name, &[("group", group.as_str()), ("cf", cf)], value);
            }
        }
    };
    per_cf(
        x,
        "bazar_rocksdb_sst_bytes",
        "Size of the live SST files of a column family.",
        "rocksdb.total-sst-files-size",
    );
    per_cf(
        x,
        "bazar_rocksdb_memtable_bytes",
        "Size of a column family's memtables.",
        "rocksdb.cur-size-all-mem-tables",
    );
    per_cf(
        x,
        "bazar_rocksdb_estimated_keys",
        "Estimated number of keys in a column family.",
        "rocksdb.estimate-num-keys",
    );

    let wal_bytes: u64 = std::fs::read_dir(node.config.data_dir.join("rocksdb"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|ext| ext == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    x.family("bazar_rocksdb_wal_bytes", "gauge", "Size of RocksDB's write-ahead log files.");
    x.sample("bazar_rocksdb_wal_bytes", &[], wal_bytes);
    let cache = store.db().property_int_value("rocksdb.block-cache-usage").ok().flatten().unwrap_or(0);
    x.family("bazar_rocksdb_block_cache_bytes", "gauge", "Memory held by RocksDB's block cache.");
    x.sample("bazar_rocksdb_block_cache_bytes", &[], cache);

    let wal = store.wal().stats();
    x.family("bazar_wal_syncs_total", "counter", "WAL fsyncs (each one covers every append queued before it).");
    x.sample("bazar_wal_syncs_total", &[], wal.syncs.load(Relaxed));
    x.family("bazar_wal_synced_appends_total", "counter", "Log appends made durable by those fsyncs.");
    x.sample("bazar_wal_synced_appends_total", &[], wal.callbacks.load(Relaxed));
    x.family("bazar_wal_sync_seconds_total", "counter", "Time spent in WAL fsyncs.");
    x.sample("bazar_wal_sync_seconds_total", &[], wal.sync_micros.load(Relaxed) as f64 / 1e6);
    x.family("bazar_wal_sync_duration_seconds", "histogram", "Duration of each WAL fsync.");
    x.histogram("bazar_wal_sync_duration_seconds", &[], &wal.sync_latency.snapshot());
    x.family(
        "bazar_wal_append_duration_seconds",
        "histogram",
        "Time from a log append's write to its durability (waiting for, then sharing, an fsync).",
    );
    x.histogram("bazar_wal_append_duration_seconds", &[], &wal.append_latency.snapshot());
}

fn incarnation_families(x: &mut Exposition, node: &Node) {
    let alarms = node.peers.alarms();
    x.family(
        "bazar_incarnation_refused_rpcs_total",
        "counter",
        "Raft RPCs this node refused: the sender knows it as another incarnation (it lost its state).",
    );
    x.sample("bazar_incarnation_refused_rpcs_total", &[], alarms.refused_total.load(Relaxed));
    x.family(
        "bazar_incarnation_refused_by_peers_total",
        "counter",
        "Raft RPCs peers refused: they are another incarnation than the membership records (they lost their state).",
    );
    x.sample("bazar_incarnation_refused_by_peers_total", &[], alarms.refused_by_peers_total.load(Relaxed));
    x.family("bazar_incarnation_state_lost", "gauge", "1 while this node refuses RPCs as another incarnation.");
    x.sample("bazar_incarnation_state_lost", &[], u64::from(!alarms.refusals().is_empty()));
    x.family(
        "bazar_incarnation_peer_state_lost",
        "gauge",
        "1 for a peer that refuses this node's RPCs as another incarnation: remove and re-add it.",
    );
    for alarm in alarms.refusals_by_peers() {
        x.sample("bazar_incarnation_peer_state_lost", &[("peer", &alarm.peer.to_string())], 1);
    }
}

fn process_families(x: &mut Exposition) {
    if let Some(rss) = crate::stats::resident_memory_bytes() {
        x.family("process_resident_memory_bytes", "gauge", "Resident memory of the process.");
        x.sample("process_resident_memory_bytes", &[], rss);
    }
    if let Some(fds) = crate::stats::open_fds() {
        x.family("process_open_fds", "gauge", "Open file descriptors of the process.");
        x.sample("process_open_fds", &[], fds);
    }
}

fn http_families(x: &mut Exposition, metrics: &HttpMetrics) {
    let inner = metrics.inner.lock().expect("metrics poisoned");
    x.family("bazar_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for ((method, route, status), n) in &inner.requests {
        let status = status.to_string();
        x.sample("bazar_http_requests_total", &[("method", method), ("route", route), ("status", &status)], n);
    }
    x.family("bazar_http_request_duration_seconds", "histogram", "Time to answer HTTP requests, by route.");
    for ((method, route), h) in &inner.latency {
        x.histogram("bazar_http_request_duration_seconds", &[("method", method), ("route", route)], &h.snapshot());
    }
}

/// Idempotency keys retained and purged, from each group's replicated
/// counters (every replica agrees at one applied index), and what this
/// node's purges did.
fn retention_families(x: &mut Exposition, node: &Node) {
    let (reservations, purged) = crate::catalog::Catalog::reservation_counts(&node.catalog.view()).unwrap_or_default();
    let (keys, forgotten) = crate::orders::Orders::key_counts(&node.orders.view()).unwrap_or_default();
    x.per_group(
        "bazar_idempotency_keys_retained",
        "gauge",
        "Idempotency keys kept: reservations in the catalog, settled keys in the orders (rows made since retention exists).",
        [reservations, keys],
    );
    x.per_group(
        "bazar_idempotency_keys_purged_total",
        "counter",
        "Idempotency keys purged past the retention window: reservations in the catalog, keys in the orders.",
        [purged, forgotten],
    );
    let r = &node.retention;
    x.family("bazar_retention_rounds_total", "counter", "Purge rounds this node ran as orders leader.");
    x.sample("bazar_retention_rounds_total", &[], r.rounds.load(Relaxed));
    x.family(
        "bazar_retention_stale_retries_total",
        "counter",
        "Buys that looked at the orders again because a purge committed while they were decided.",
    );
    x.sample("bazar_retention_stale_retries_total", &[], node.buy.stale_retries());
    x.family("bazar_retention_window_seconds", "gauge", "The idempotency retention window.");
    x.sample("bazar_retention_window_seconds", &[], node.config.idempotency_retention.as_secs_f64());
}

/// The whole exposition of `node`, with the requests `http` counted.
pub fn exposition(node: &Node, http: &HttpMetrics) -> String {
    let mut x = Exposition { out: String::with_capacity(16 << 10) };
    let samples = [raft_sample(&node.catalog), raft_sample(&node.orders)];
    raft_families(&mut x, &samples, [node.counters(Group::Catalog), node.counters(Group::Orders)]);
    snapshot_families(&mut x, [node.catalog.snapshots(), node.orders.snapshots()]);
    storage_families(&mut x, node);
    incarnation_families(&mut x, node);
    retention_families(&mut x, node);
    process_families(&mut x);
    http_families(&mut x, http);
    x.out
}

/// `GET /metrics`
pub async fn render(State(node): State<Arc<Node>>, Extension(http): Extension<Arc<HttpMetrics>>) -> Response {
    // Reading RocksDB properties and /proc is quick but blocking.
    let body = tokio::task::spawn_blocking(move || exposition(&node, &http)).await.unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
