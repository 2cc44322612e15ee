//! `GET /metrics` of a frontend: requests and latencies per route, cache
//! counters, replica health and load, change streams.
//!
//! Counters are plain atomics indexed by route, so recording a request on the
//! cache-hit path costs a few relaxed increments, no lock. Every label set is
//! fixed, whatever clients send: a request is counted under one of the
//! [`Route`]s (a made-up method or path is `other`) and a status class; the
//! other labels name groups and the configured nodes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bazar_api::Group;

use crate::Frontend;

/// The routes measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /books`
    Search,
    /// `GET /books/{id}`
    Lookup,
    /// `POST /books/{id}/buy`
    Buy,
    /// `POST /books`
    AddBook,
    /// `POST /books/{id}/restock`
    Restock,
    /// `PATCH /books/{id}`
    UpdateBook,
    /// `GET /orders/{id}`
    Order,
    /// `GET /orders`
    Orders,
    /// Everything else.
    Other,
}

const ROUTES: [(Route, &str, &str); 9] = [
    (Route::Search, "GET", "/books"),
    (Route::Lookup, "GET", "/books/{id}"),
    (Route::Buy, "POST", "/books/{id}/buy"),
    (Route::AddBook, "POST", "/books"),
    (Route::Restock, "POST", "/books/{id}/restock"),
    (Route::UpdateBook, "PATCH", "/books/{id}"),
    (Route::Order, "GET", "/orders/{id}"),
    (Route::Orders, "GET", "/orders"),
    (Route::Other, "ANY", "other"),
];

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

#[derive(Default)]
struct RouteStats {
    /// By status class: 1xx..5xx at 1..=5.
    by_class: [AtomicU64; 6],
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// Request counters of the frontend.
#[derive(Default)]
pub struct Metrics {
    routes: [RouteStats; ROUTES.len()],
}

impl Metrics {
    /// Records one request.
    pub fn record(&self, route: Route, status: u16, micros: u64) {
        let i = ROUTES.iter().position(|(r, _, _)| *r == route).unwrap_or(ROUTES.len() - 1);
        let s = &self.routes[i];
        s.by_class[usize::from(status / 100).min(5)].fetch_add(1, Relaxed);
        if let Some(b) = BUCKETS_US.iter().position(|bound| micros <= *bound) {
            s.buckets[b].fetch_add(1, Relaxed);
        }
        s.count.fetch_add(1, Relaxed);
        s.sum_us.fetch_add(micros, Relaxed);
    }

    /// Requests of `route` answered so far with a `2xx`, for rates (the lab
    /// samples it; nothing on the request path reads it).
    pub fn succeeded(&self, route: Route) -> u64 {
        let i = ROUTES.iter().position(|(r, _, _)| *r == route).unwrap_or(ROUTES.len() - 1);
        self.routes[i].by_class[2].load(Relaxed)
    }
}

/// Renders the Prometheus text exposition.
pub fn render(front: &Frontend) -> String {
    let mut out = String::with_capacity(8192);
    let m = &front.metrics;
    let _ = writeln!(out, "# TYPE bazar_frontend_requests_total counter");
    for ((_, method, path), s) in ROUTES.iter().zip(&m.routes) {
        for (class, n) in s.by_class.iter().enumerate().skip(1) {
            let n = n.load(Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "bazar_frontend_requests_total{{method=\"{method}\",route=\"{path}\",status=\"{class}xx\"}} {n}"
                );
            }
        }
    }
    let _ = writeln!(out, "# TYPE bazar_frontend_request_duration_seconds histogram");
    for ((_, method, path), s) in ROUTES.iter().zip(&m.routes) {
        let count = s.count.load(Relaxed);
        if count == 0 {
            continue;
        }
        let labels = format!("method=\"{method}\",route=\"{path}\"");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_US.iter().zip(&s.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                out,
                "bazar_frontend_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(out, "bazar_frontend_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "bazar_frontend_request_duration_seconds_sum{{{labels}}} {}",
            s.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "bazar_frontend_request_duration_seconds_count{{{labels}}} {count}");
    }

    let c = &front.cache.stats;
    let (entries, weight) = front.cache.size();
    for (name, kind, value) in [
        ("bazar_frontend_cache_hits_total", "counter", c.hits.load(Relaxed)),
        ("bazar_frontend_cache_misses_total", "counter", c.misses.load(Relaxed)),
        ("bazar_frontend_cache_bypasses_total", "counter", c.bypasses.load(Relaxed)),
        ("bazar_frontend_cache_evictions_total", "counter", c.evictions.load(Relaxed)),
        ("bazar_frontend_cache_fills_refused_total", "counter", c.fills_refused.load(Relaxed)),
        ("bazar_frontend_cache_flushes_total", "counter", c.flushes.load(Relaxed)),
        ("bazar_frontend_cache_entries", "gauge", entries),
        ("bazar_frontend_cache_weight_bytes", "gauge", weight),
    ] {
        let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
    }
    let _ = writeln!(out, "# TYPE bazar_frontend_cache_fresh gauge");
    let _ = writeln!(out, "# TYPE bazar_frontend_stream_index gauge");
    for group in Group::ALL {
        let s = front.cache.status(group);
        let _ = writeln!(out, "bazar_frontend_cache_fresh{{group=\"{group}\"}} {}", u8::from(s.fresh));
        let _ = writeln!(out, "bazar_frontend_stream_index{{group=\"{group}\"}} {}", s.stream_index);
    }
    let _ = writeln!(out, "# TYPE bazar_frontend_replica_healthy gauge");
    let _ = writeln!(out, "# TYPE bazar_frontend_replica_in_flight gauge");
    for r in front.replicas.all() {
        let _ = writeln!(out, "bazar_frontend_replica_healthy{{node=\"{}\"}} {}", r.id, u8::from(r.is_healthy()));
        let _ = writeln!(out, "bazar_frontend_replica_in_flight{{node=\"{}\"}} {}", r.id, r.in_flight());
    }
    out
}
