//! `GET /metrics`: Prometheus text exposition.
//!
//! Per group: Raft state, term, leader, log/commit/apply/snapshot indexes and
//! sizes. Node-wide: WAL syncs, HTTP requests by route and status, and request
//! latency histograms by route.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::node::Node;
use crate::raft::RaftGroup;
use crate::sm::StateMachine;
use crate::store::Purpose;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

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
    fn record(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut inner = self.inner.lock().expect("metrics poisoned");
        *inner.requests.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        inner.latency.entry((method.to_string(), route.to_string())).or_default().observe(secs);
    }
}

/// Middleware recording every request.
pub async fn track(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    node.http_metrics.record(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

fn group_metrics<S: StateMachine>(out: &mut String, g: &RaftGroup<S>, node: &Node) {
    let m = g.metrics();
    let group = S::GROUP;
    let gauge = |out: &mut String, name: &str, value: u64| {
        let _ = writeln!(out, "bazar_raft_{name}{{group=\"{group}\"}} {value}");
    };
    gauge(out, "is_leader", u64::from(m.state.is_leader()));
    gauge(out, "term", m.current_term);
    gauge(out, "leader_id", m.current_leader.unwrap_or(0));
    gauge(out, "last_log_index", m.last_log_index.unwrap_or(0));
    gauge(out, "committed_index", m.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0));
    gauge(out, "applied_index", m.last_applied.as_ref().map(|l| l.index).unwrap_or(0));
    gauge(out, "snapshot_index", m.snapshot.as_ref().map(|l| l.index).unwrap_or(0));
    gauge(out, "purged_index", m.purged.as_ref().map(|l| l.index).unwrap_or(0));
    gauge(out, "snapshot_bytes", g.snapshots().size_bytes());
    for (purpose, name) in [(Purpose::Log, "log"), (Purpose::Sm, "sm")] {
        let _ = writeln!(
            out,
            "bazar_rocksdb_sst_bytes{{group=\"{group}\",cf=\"{name}\"}} {}",
            node.store.cf_size_bytes(group, purpose)
        );
    }
    if let Some(replication) = &m.replication {
        let last = m.last_log_index.unwrap_or(0);
        for (id, matched) in replication {
            let lag = last.saturating_sub(matched.as_ref().map(|l| l.index).unwrap_or(0));
            let _ = writeln!(out, "bazar_raft_follower_lag{{group=\"{group}\",follower=\"{id}\"}} {lag}");
        }
    }
}

/// `GET /metrics`
pub async fn render(State(node): State<Arc<Node>>) -> Response {
    let mut out = String::with_capacity(8192);
    let _ = writeln!(out, "# HELP bazar_raft_is_leader Whether this node leads the group.");
    let _ = writeln!(out, "# TYPE bazar_raft_is_leader gauge");
    group_metrics(&mut out, &node.catalog, &node);
    group_metrics(&mut out, &node.orders, &node);

    let wal = node.store.wal().stats();
    let _ = writeln!(out, "# TYPE bazar_wal_syncs_total counter");
    let _ = writeln!(out, "bazar_wal_syncs_total {}", wal.syncs.load(Relaxed));
    let _ = writeln!(out, "# TYPE bazar_wal_synced_appends_total counter");
    let _ = writeln!(out, "bazar_wal_synced_appends_total {}", wal.callbacks.load(Relaxed));
    let _ = writeln!(out, "# TYPE bazar_wal_sync_seconds_total counter");
    let _ = writeln!(out, "bazar_wal_sync_seconds_total {}", wal.sync_micros.load(Relaxed) as f64 / 1e6);

    let inner = node.http_metrics.inner.lock().expect("metrics poisoned");
    let _ = writeln!(out, "# TYPE bazar_http_requests_total counter");
    for ((method, route, status), n) in &inner.requests {
        let _ =
            writeln!(out, "bazar_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE bazar_http_request_duration_seconds histogram");
    for ((method, route), h) in &inner.latency {
        let labels = format!("method=\"{method}\",route=\"{route}\"");
        for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
            let _ = writeln!(out, "bazar_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "bazar_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "bazar_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "bazar_http_request_duration_seconds_count{{{labels}}} {}", h.count);
    }
    drop(inner);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
