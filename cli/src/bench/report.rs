//! What a benchmark measured: per-client recorders while it runs, and the
//! JSON report it leaves behind.
//!
//! Each client task records into its own [`Recorder`] (no locks on the hot
//! path); the recorders are merged once the level is over. Latency is kept
//! in an HDR histogram per operation, in microseconds with three significant
//! digits, and **only for successful requests**: a failure is counted under
//! its kind (`409 out_of_stock`, `timeout`, ...) and never folded into the
//! latency figures, so a fast error cannot make a system look quick.
//!
//! A [`BenchReport`] has one [`LevelReport`] per concurrency level. When a
//! level was run several times (`--repeat`, or `bazar bench merge` over
//! files), every number in it is the **median** over the repetitions, each
//! field taken separately, and `repetitions` keeps the individual samples;
//! the maps (error kinds, cache states) are totals over all repetitions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bazar_api::timing::TimingEntry;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms hold: one hour, in microseconds. Slower
/// answers are clamped to it (the request deadline is far below).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The format of [`BenchReport`]; bumped when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// The outcomes of one operation kind, as recorded by one or more clients.
#[derive(Debug, Clone)]
pub struct OpRecorder {
    /// Latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// `X-Bazar-Cache` values of successful reads (`hit`, `miss`, `bypass`).
    pub cache: BTreeMap<String, u64>,
    /// What successful answers' `Server-Timing` said, by tier or step.
    pub timing: BTreeMap<String, TierTime>,
}

/// What the answers' `Server-Timing` headers said of one tier or step
/// (`frontend`, `node`, `raft orders commit`, ...), summed: the report
/// shows the mean, beside the latency the client measured, so that a user
/// sees where a request's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TierTime {
    /// Answers that carried it.
    pub answers: u64,
    /// Their durations added up, milliseconds.
    pub total_ms: f64,
}

impl TierTime {
    /// The mean over the answers that carried it, milliseconds (0 for none).
    pub fn mean_ms(&self) -> f64 {
        if self.answers == 0 { 0.0 } else { self.total_ms / self.answers as f64 }
    }

    fn add(&mut self, other: &TierTime) {
        self.answers += other.answers;
        self.total_ms += other.total_ms;
    }
}

fn add_times(into: &mut BTreeMap<String, TierTime>, from: &BTreeMap<String, TierTime>) {
    for (k, v) in from {
        into.entry(k.clone()).or_default().add(v);
    }
}

impl OpRecorder {
    fn new() -> OpRecorder {
        OpRecorder {
            // Bounds are constants that hdrhistogram accepts, so this cannot fail.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
            cache: BTreeMap::new(),
            timing: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &OpRecorder) {
        // Same bounds on both sides: adding cannot fail.
        self.latency.add(&other.latency).expect("histograms with equal bounds");
        add_counts(&mut self.errors, &other.errors);
        add_counts(&mut self.cache, &other.cache);
        add_times(&mut self.timing, &other.timing);
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Everything one client (or, merged, one level) recorded, by operation name.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ops: BTreeMap<&'static str, OpRecorder>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn op(&mut self, op: &'static str) -> &mut OpRecorder {
        self.ops.entry(op).or_insert_with(OpRecorder::new)
    }

    /// Records a successful request of `op` that took `latency`, with the
    /// cache state the server reported, if any.
    pub fn success(&mut self, op: &'static str, latency: Duration, cache: Option<&str>) {
        let rec = self.op(op);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
        rec.latency.saturating_record(us);
        if let Some(state) = cache {
            *rec.cache.entry(state.to_string()).or_default() += 1;
        }
    }

    /// Records what a successful answer of `op` said of its time
    /// (`Server-Timing`): each metric with a duration, by its label.
    pub fn server_timing(&mut self, op: &'static str, entries: &[TimingEntry]) {
        let rec = self.op(op);
        for entry in entries {
            if let Some(dur) = entry.dur {
                rec.timing
                    .entry(entry.label())
                    .or_default()
                    .add(&TierTime { answers: 1, total_ms: dur.as_secs_f64() * 1e3 });
            }
        }
    }

    /// Records a failed request of `op`.
    pub fn failure(&mut self, op: &'static str, kind: &str) {
        *self.op(op).errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Adds another recorder's counts to this one.
    pub fn merge(&mut self, other: &Recorder) {
        for (name, rec) in &other.ops {
            self.op(name).merge(rec);
        }
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.ops.values().map(|r| r.latency.len()).sum()
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.ops.values().map(OpRecorder::errors_total).sum()
    }

    /// Summarizes what was recorded over `elapsed` with `clients` clients.
    pub fn level_report(&self, clients: usize, elapsed: Duration) -> LevelReport {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut all = OpRecorder::new();
        let mut ops = BTreeMap::new();
        for (name, rec) in &self.ops {
            all.merge(rec);
            ops.insert(name.to_string(), OpReport::from_recorder(rec, secs));
        }
        let total = OpReport::from_recorder(&all, secs);
        let sample = RepSample::of(&total);
        LevelReport { clients, elapsed_s: secs, total, ops, repetitions: vec![sample] }
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Latency percentiles of successful requests, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    fn median_of(all: &[Latency]) -> Latency {
        Latency {
            mean_us: median_f64(all.iter().map(|l| l.mean_us)),
            p50_us: median_u64(all.iter().map(|l| l.p50_us)),
            p90_us: median_u64(all.iter().map(|l| l.p90_us)),
            p99_us: median_u64(all.iter().map(|l| l.p99_us)),
            p999_us: median_u64(all.iter().map(|l| l.p999_us)),
            max_us: median_u64(all.iter().map(|l| l.max_us)),
        }
    }

    /// The value of one percentile.
    pub fn get(&self, p: Percentile) -> u64 {
        match p {
            Percentile::P50 => self.p50_us,
            Percentile::P90 => self.p90_us,
            Percentile::P99 => self.p99_us,
            Percentile::P999 => self.p999_us,
            Percentile::Max => self.max_us,
        }
    }
}

/// A latency figure that can be reported or plotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Percentile {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Slowest request.
    Max,
}

impl Percentile {
    /// All of them, in order.
    pub const ALL: [Percentile; 5] =
        [Percentile::P50, Percentile::P90, Percentile::P99, Percentile::P999, Percentile::Max];

    /// Short name, e.g. `p99.9`.
    pub fn label(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P99 => "p99",
            Percentile::P999 => "p99.9",
            Percentile::Max => "max",
        }
    }
}

/// One operation kind at one level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency of successful requests.
    pub latency: Latency,
    /// Failures by kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_kinds: BTreeMap<String, u64>,
    /// `X-Bazar-Cache` values of successful reads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache: BTreeMap<String, u64>,
    /// `Server-Timing` of successful answers, by tier or step (merged
    /// repetitions add up, so the mean is over all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timing: BTreeMap<String, TierTime>,
}

impl OpReport {
    fn from_recorder(rec: &OpRecorder, secs: f64) -> OpReport {
        let ok = rec.latency.len();
        OpReport {
            ok,
            errors: rec.errors_total(),
            throughput: ok as f64 / secs,
            latency: Latency::of(&rec.latency),
            error_kinds: rec.errors.clone(),
            cache: rec.cache.clone(),
            timing: rec.timing.clone(),
        }
    }

    fn median_of(all: &[&OpReport]) -> OpReport {
        let mut error_kinds = BTreeMap::new();
        let mut cache = BTreeMap::new();
        let mut timing = BTreeMap::new();
        for r in all {
            add_counts(&mut error_kinds, &r.error_kinds);
            add_counts(&mut cache, &r.cache);
            add_times(&mut timing, &r.timing);
        }
        let latencies: Vec<Latency> = all.iter().map(|r| r.latency).collect();
        OpReport {
            ok: median_u64(all.iter().map(|r| r.ok)),
            errors: median_u64(all.iter().map(|r| r.errors)),
            throughput: median_f64(all.iter().map(|r| r.throughput)),
            latency: Latency::median_of(&latencies),
            error_kinds,
            cache,
            timing,
        }
    }
}

/// The headline numbers of one repetition of a level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RepSample {
    /// Successful requests per second.
    pub throughput: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile, microseconds.
    pub p999_us: u64,
    /// Failed requests.
    pub errors: u64,
}

impl RepSample {
    fn of(r: &OpReport) -> RepSample {
        RepSample {
            throughput: r.throughput,
            p50_us: r.latency.p50_us,
            p99_us: r.latency.p99_us,
            p999_us: r.latency.p999_us,
            errors: r.errors,
        }
    }
}

/// One concurrency level: every operation together, and each on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelReport {
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Length of the measured window (to the last answer), seconds.
    pub elapsed_s: f64,
    /// Every operation together (serialized inline: `ok`, `errors`,
    /// `throughput`, `latency`, `error_kinds`, `cache`).
    #[serde(flatten)]
    pub total: OpReport,
    /// Each operation kind on its own (`lookup`, `buy`, `put`, ...).
    pub ops: BTreeMap<String, OpReport>,
    /// The headline numbers of every repetition this level summarizes.
    #[serde(default)]
    pub repetitions: Vec<RepSample>,
}

impl LevelReport {
    /// The median of several runs of the same level, field by field.
    pub fn median_of(all: &[&LevelReport]) -> LevelReport {
        let totals: Vec<&OpReport> = all.iter().map(|l| &l.total).collect();
        let total = OpReport::median_of(&totals);
        let mut names: Vec<&String> = all.iter().flat_map(|l| l.ops.keys()).collect();
        names.sort();
        names.dedup();
        let ops = names
            .into_iter()
            .map(|name| {
                let of_name: Vec<&OpReport> = all.iter().filter_map(|l| l.ops.get(name)).collect();
                (name.clone(), OpReport::median_of(&of_name))
            })
            .collect();
        LevelReport {
            clients: all.first().map_or(0, |l| l.clients),
            elapsed_s: median_f64(all.iter().map(|l| l.elapsed_s)),
            total,
            ops,
            repetitions: all.iter().flat_map(|l| l.repetitions.iter().copied()).collect(),
        }
    }

    /// One operation's figures, or the level's total for `None`.
    pub fn op_or_total(&self, op: Option<&str>) -> Option<&OpReport> {
        match op {
            None => Some(&self.total),
            Some(name) => self.ops.get(name),
        }
    }
}

/// The result of `bazar bench`: what was run, and one row per concurrency level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Format version ([`REPORT_VERSION`]).
    pub version: u32,
    /// Free text naming the scenario, from `--label`.
    #[serde(default)]
    pub label: Option<String>,
    /// What was driven: `bazar`, `etcd-put`, `etcd-range-linearizable`,
    /// `etcd-range-serializable` or `http-get`.
    pub target: String,
    /// Base URLs (or the URL template) the clients were spread over.
    pub endpoints: Vec<String>,
    /// Read consistency asked of Bazar, if any.
    #[serde(default)]
    pub consistency: Option<String>,
    /// Operation mix, as weights (Bazar only).
    #[serde(default)]
    pub mix: BTreeMap<String, u32>,
    /// Book ids used, inclusive (`1..7`).
    pub books: String,
    /// Open loop (`--rate`): requests a second, all clients together;
    /// absent for a closed loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Measured seconds per level, when run by time.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Measured requests per level, when run by count.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Warm-up seconds before each measured window.
    pub warmup_s: f64,
    /// Repetitions per level (medians are reported).
    pub repeat: u32,
    /// Unix time the run started.
    pub started_unix: u64,
    /// One row per concurrency level, in the order run.
    pub levels: Vec<LevelReport>,
}

impl BenchReport {
    /// Merges runs of the same scenario (e.g. one file per round of a script)
    /// into one report of medians per concurrency level. The description is
    /// the first report's.
    pub fn merge(reports: &[BenchReport]) -> Option<BenchReport> {
        let first = reports.first()?;
        let mut clients: Vec<usize> = reports.iter().flat_map(|r| r.levels.iter().map(|l| l.clients)).collect();
        clients.sort_unstable();
        clients.dedup();
        let levels = clients
            .into_iter()
            .map(|c| {
                let of_c: Vec<&LevelReport> =
                    reports.iter().flat_map(|r| r.levels.iter().filter(move |l| l.clients == c)).collect();
                LevelReport::median_of(&of_c)
            })
            .collect();
        Some(BenchReport {
            repeat: reports.iter().map(|r| r.repeat).sum(),
            started_unix: reports.iter().map(|r| r.started_unix).min().unwrap_or(first.started_unix),
            levels,
            ..first.clone()
        })
    }

    /// The level run with `clients` clients.
    pub fn level(&self, clients: usize) -> Option<&LevelReport> {
        self.levels.iter().find(|l| l.clients == clients)
    }

    /// A human table: one row per level, then one per operation when the mix
    /// has several, then error kinds.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let what = self.label.as_deref().unwrap_or(&self.target);
        let consistency = self.consistency.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let lp = match self.rate_per_s {
            Some(rate) => format!("open loop at {rate}/s, latency from when each request was due"),
            None => "closed loop".to_string(),
        };
        let _ =
            writeln!(out, "{what} ({}{consistency}), {lp}, {} repetition(s), latency in ms", self.target, self.repeat);
        let _ = writeln!(
            out,
            "{:>7}  {:<16} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "CLIENTS", "OP", "REQ/S", "P50", "P90", "P99", "P99.9", "MAX", "ERRORS"
        );
        for level in &self.levels {
            row(&mut out, level.clients, "all", &level.total);
            if level.ops.len() > 1 {
                for (name, op) in &level.ops {
                    row(&mut out, level.clients, name, op);
                }
            }
            for (kind, n) in &level.total.error_kinds {
                let _ = writeln!(out, "{:>7}  errors: {n} × {kind}", "");
            }
            if !level.total.cache.is_empty() {
                let states: Vec<String> = level.total.cache.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(out, "{:>7}  cache: {}", "", states.join(", "));
            }
            for (name, op) in &level.ops {
                if let Some(line) = timing_line(op) {
                    let _ = writeln!(out, "{:>7}  {name} time, mean ms: {line}", "");
                }
            }
        }
        out
    }
}

/// Where an operation's time went: the mean latency the client measured,
/// then each tier's and step's mean as the answers' `Server-Timing` said
/// (outer tiers first). `None` when the answers said nothing.
fn timing_line(r: &OpReport) -> Option<String> {
    if r.timing.is_empty() {
        return None;
    }
    let rank = |label: &str| match label.split(' ').next() {
        Some("frontend") => 0,
        Some("cache") => 1,
        Some("node") => 2,
        _ => 3,
    };
    let mut tiers: Vec<(&String, &TierTime)> = r.timing.iter().collect();
    tiers.sort_by_key(|(label, _)| rank(label));
    // The outer tier is in every answer; a step in fewer (a cache hit, a
    // read-index round) says in which share of them.
    let most = tiers.iter().map(|(_, t)| t.answers).max().unwrap_or(0);
    let parts: Vec<String> = tiers
        .iter()
        .map(|(label, t)| {
            let share = if t.answers < most {
                format!(" (in {:.0}% of answers)", 100.0 * t.answers as f64 / most as f64)
            } else {
                String::new()
            };
            format!("{label} {:.3}{share}", t.mean_ms())
        })
        .collect();
    Some(format!("client {:.3}; {}", r.latency.mean_us / 1000.0, parts.join(", ")))
}

fn row(out: &mut String, clients: usize, op: &str, r: &OpReport) {
    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    let _ = writeln!(
        out,
        "{clients:>7}  {op:<16} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        r.throughput,
        ms(r.latency.p50_us),
        ms(r.latency.p90_us),
        ms(r.latency.p99_us),
        ms(r.latency.p999_us),
        ms(r.latency.max_us),
        r.errors
    );
}

/// Median of floats (mean of the middle two for an even count; 0 when empty).
pub fn median_f64(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// Median of integers, rounded down for an even count (0 when empty).
pub fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { v[mid - 1] / 2 + v[mid] / 2 + (v[mid - 1] % 2 + v[mid] % 2) / 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(clients: usize, latencies_ms: &[u64], errors: &[&str]) -> LevelReport {
        let mut rec = Recorder::new();
        for &ms in latencies_ms {
            rec.success("lookup", Duration::from_millis(ms), Some("hit"));
        }
        for e in errors {
            rec.failure("buy", e);
        }
        rec.level_report(clients, Duration::from_secs(1))
    }

    #[test]
    fn failures_are_counted_by_kind_and_kept_out_of_latency() {
        let l = level(4, &[1, 2, 3], &["timeout", "409 out_of_stock", "timeout"]);
        assert_eq!(l.total.ok, 3);
        assert_eq!(l.total.errors, 3);
        assert_eq!(l.total.error_kinds["timeout"], 2);
        assert_eq!(l.ops["buy"].ok, 0);
        assert_eq!(l.ops["buy"].latency, Latency::default());
        // The slowest success is 3 ms; errors add nothing to latency.
        assert!((2990..=3010).contains(&l.total.latency.max_us), "{}", l.total.latency.max_us);
        assert!((l.total.throughput - 3.0).abs() < 1e-9);
        assert_eq!(l.total.cache["hit"], 3);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let ms: Vec<u64> = (1..=1000).collect();
        let l = level(1, &ms, &[]);
        let near = |got: u64, want_ms: u64| got.abs_diff(want_ms * 1000) <= want_ms; // 0.1 %
        assert!(near(l.total.latency.p50_us, 500), "{}", l.total.latency.p50_us);
        assert!(near(l.total.latency.p90_us, 900), "{}", l.total.latency.p90_us);
        assert!(near(l.total.latency.p99_us, 990), "{}", l.total.latency.p99_us);
        assert!(near(l.total.latency.p999_us, 999), "{}", l.total.latency.p999_us);
        assert!(near(l.total.latency.max_us, 1000), "{}", l.total.latency.max_us);
    }

    #[test]
    fn merging_recorders_adds_their_counts() {
        let mut a = Recorder::new();
        a.success("buy", Duration::from_millis(5), None);
        a.failure("buy", "timeout");
        let mut b = Recorder::new();
        b.success("buy", Duration::from_millis(7), None);
        b.success("lookup", Duration::from_millis(1), Some("miss"));
        a.merge(&b);
        assert_eq!(a.ok(), 3);
        assert_eq!(a.errors(), 1);
    }

    #[test]
    fn merged_reports_take_medians_per_level_and_sum_maps() {
        let report = |tp_ms: u64, err: &str| BenchReport {
            version: REPORT_VERSION,
            label: Some("x".into()),
            target: "bazar".into(),
            endpoints: vec!["http://a".into()],
            consistency: None,
            mix: BTreeMap::new(),
            books: "1..7".into(),
            rate_per_s: None,
            duration_s: Some(1.0),
            requests: None,
            warmup_s: 0.0,
            repeat: 1,
            started_unix: 10,
            levels: vec![level(1, &vec![tp_ms; tp_ms as usize], &[err]), level(8, &[1], &[])],
        };
        let merged = BenchReport::merge(&[report(1, "a"), report(5, "b"), report(3, "a")]).unwrap();
        assert_eq!(merged.repeat, 3);
        let one = merged.level(1).unwrap();
        assert_eq!(one.total.ok, 3);
        assert!((one.total.throughput - 3.0).abs() < 1e-9);
        assert_eq!(one.total.error_kinds["a"], 2);
        assert_eq!(one.total.error_kinds["b"], 1);
        assert_eq!(one.repetitions.len(), 3);
        assert_eq!(merged.level(8).unwrap().repetitions.len(), 3);
        let text = merged.table();
        assert!(text.contains("errors: 2 × a"), "{text}");
    }

    #[test]
    fn server_timing_is_summed_per_tier_and_shown_beside_the_client_latency() {
        let timing = |value: &str| bazar_api::timing::parse(value);
        let mut rec = Recorder::new();
        rec.success("buy", Duration::from_millis(5), None);
        rec.server_timing("buy", &timing(r#"frontend;dur=4, node;dur=3, raft;desc="orders commit";dur=2"#));
        rec.success("buy", Duration::from_millis(7), None);
        rec.server_timing("buy", &timing(r#"frontend;dur=6, node;dur=5"#));
        let mut other = Recorder::new();
        other.success("buy", Duration::from_millis(6), None);
        other.server_timing("buy", &timing("frontend;dur=5, cache;desc=hit"));
        rec.merge(&other);

        let level = rec.level_report(2, Duration::from_secs(1));
        let buy = &level.ops["buy"];
        assert_eq!(buy.timing["frontend"], TierTime { answers: 3, total_ms: 15.0 });
        assert_eq!(buy.timing["node"], TierTime { answers: 2, total_ms: 8.0 });
        assert_eq!(buy.timing["raft orders commit"].mean_ms(), 2.0);
        assert!(!buy.timing.contains_key("cache hit"), "a metric without a duration adds no time");

        let line = timing_line(buy).unwrap();
        assert!(line.starts_with("client 6."), "{line}");
        assert!(
            line.contains(
                "; frontend 5.000, node 4.000 (in 67% of answers), raft orders commit 2.000 (in 33% of answers)"
            ),
            "{line}"
        );
        let twice = OpReport::median_of(&[buy, buy]);
        assert_eq!(twice.timing["frontend"], TierTime { answers: 6, total_ms: 30.0 }, "repetitions add up");
        assert_eq!(timing_line(&level.ops["buy"]), timing_line(&twice), "and keep the same means");
    }

    #[test]
    fn medians_of_odd_even_and_empty_inputs() {
        assert_eq!(median_u64([3, 1, 2].into_iter()), 2);
        assert_eq!(median_u64([4, 1, 3, 2].into_iter()), 2);
        assert_eq!(median_u64([u64::MAX, u64::MAX].into_iter()), u64::MAX);
        assert_eq!(median_u64(std::iter::empty()), 0);
        assert!((median_f64([1.0, 4.0].into_iter()) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn report_json_round_trips() {
        let l = level(2, &[1, 2], &["timeout"]);
        let text = serde_json::to_string(&l).unwrap();
        let back: LevelReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.total.ok, l.total.ok);
        assert_eq!(back.total.error_kinds, l.total.error_kinds);
    }
}
