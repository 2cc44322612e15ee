//! `bazar bench`: a closed- or open-loop load generator for Bazar, and for
//! the systems Bazar is compared with, driven by the same code.
//!
//! **The model.** For each concurrency level of `--clients`, N client tasks
//! each keep exactly one request in flight: a client sends its next request
//! when the previous answer has arrived (closed loop), over a keep-alive
//! connection from one shared pool. A level first runs `--warmup` unmeasured
//! (connections open, caches fill), then a measured window of `--duration` or
//! `--requests`. A request belongs to the window when it *starts* inside it;
//! the window ends when its last request has answered, and throughput is the
//! successful requests divided by that length.
//!
//! **Open loop.** With `--rate N`, each of the N clients' share of the rate
//! is a schedule: a request is due every `clients / N` seconds (the clients'
//! first requests spread over one interval), it belongs to the window when
//! it is *due* inside it, and its latency counts from when it was due, not
//! from when the client, still waiting for an earlier answer, could send it
//! (as wrk2 does). So a stall shows in every request that queued behind it,
//! which a closed loop hides (coordinated omission).
//!
//! **What is measured.** Per operation: successes with their latency in an
//! HDR histogram (p50/p90/p99/p99.9/max), failures counted by kind and kept
//! out of the latency, and for reads the `X-Bazar-Cache` state the answer
//! reported, and for Bazar's answers what their `Server-Timing` said of each
//! tier and step (summed, shown as means beside the client's latency). See
//! [`report`] for the JSON and how repetitions become medians.
//!
//! **Targets.** `bazar` runs the `--mix` of lookups, searches, buys,
//! restocks and `lookup_after_buy` (a buy, then the first lookup of the book
//! it changed) against a frontend or raft nodes. `etcd-put`,
//! `etcd-range-linearizable`, `etcd-range-serializable` drive etcd's HTTP/JSON
//! gateway (v3 API), and `http-get` any URL (the trivial `bench-ceiling`
//! server): the baselines of `scripts/bench.sh`, measured by the same loop,
//! pool and decoding as Bazar.
//!
//! **Fairness to the machine.** The load generator runs on the machine it
//! measures; it keeps its per-request work small (no locks on the hot path:
//! each client records into its own histogram, merged at the end of a level)
//! and reports what it sees, noise included. Repeat runs and compare medians.

pub mod plot;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bazar_api::model::CLASSICS;
use bazar_api::{Book, Consistency, isbn};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;

use crate::values::ConsistencyArg;
use bazar_client::client::Client;
use bazar_client::endpoint::normalize_base_url;
use bazar_client::error::{ClientError, Result};
use report::{BenchReport, Percentile, Recorder};
use workload::{ClientState, TargetKind, Workload};

const AFTER_HELP: &str = "\
Examples:
  bazar bench --clients 1,8,64 --duration 10s --mix lookup=100 --consistency linearizable
  bazar bench -f 127.0.0.1:7101 --endpoints 127.0.0.1:7101,127.0.0.1:7102 --mix buy=100 --plot buys.svg
  bazar bench --mix lookup_after_buy=100 --consistency cached --clients 8
  bazar bench --target etcd-put --endpoints 127.0.0.1:2379 --clients 64
  bazar bench --target http-get --url 'http://127.0.0.1:7199/books/{id}' --clients 1,64
  bazar bench merge --out lookups.json run1.json run2.json run3.json
  bazar bench plot --out cmp.svg bazar=lookups.json etcd=etcd.json

Buys use unique idempotency keys; before a run that buys, books of --books
whose stock is low are restocked (this needs the admin token).";

/// `bazar bench`: run a benchmark, or work on saved results.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Work on saved results instead of running.
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// What to run, when running (the flags of `bazar bench`).
    #[command(flatten)]
    pub run: RunArgs,
}

/// What to do with saved results.
#[derive(Debug, Subcommand)]
pub enum BenchAction {
    /// Merge repetitions of one scenario (JSON results) into medians per level.
    Merge(MergeArgs),
    /// Plot saved results side by side: throughput and latency against clients.
    Plot(PlotArgs),
}

/// `bazar bench merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Where to write the merged JSON.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Results to merge (from `bazar bench --out`).
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
}

/// `bazar bench plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The SVG to write.
    #[arg(long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// Title above the plots.
    #[arg(long)]
    pub title: Option<String>,
    /// Latency figures to draw.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "p50,p99")]
    pub percentiles: Vec<Percentile>,
    /// Series as LABEL=FILE, or LABEL=FILE:OP to plot one operation of a
    /// mixed run (e.g. lookup_after_buy).
    #[arg(required = true, value_name = "LABEL=FILE[:OP]")]
    pub series: Vec<String>,
}

/// How a benchmark runs.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Concurrent clients; a list runs one level each (e.g. 1,8,64,256).
    #[arg(long, short = 'n', value_delimiter = ',', default_value = "8", value_name = "N,...")]
    pub clients: Vec<usize>,
    /// Measured time per level (e.g. 10s, 500ms, 2m) [default: 10s, unless --requests].
    #[arg(long, short = 'd', value_parser = parse_duration, value_name = "TIME", conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measured requests per level, instead of a duration.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Open loop: N requests a second in all, spread evenly over the
    /// clients, each due at a fixed time whether or not the answers before
    /// it came back, its latency counted from when it was due (as wrk2
    /// does), so that queueing behind a slow answer shows. A client still
    /// waiting for an answer sends its next request as soon as it has it.
    /// Without it, a closed loop: each client sends its next request when
    /// its last one is answered.
    #[arg(long, value_parser = parse_rate, value_name = "N")]
    pub rate: Option<f64>,
    /// Unmeasured time before each level.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "TIME")]
    pub warmup: Duration,
    /// Runs of each level; the report gives medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub repeat: u32,
    /// Operation weights for --target bazar: lookup, search, buy, restock,
    /// lookup_after_buy.
    #[arg(long, short = 'm', value_parser = Mix::parse, default_value = "lookup=80,search=10,buy=10,restock=0")]
    pub mix: Mix,
    /// Read consistency for lookups and searches [default: the server's].
    #[arg(long, short = 'c', value_enum, value_name = "LEVEL")]
    pub consistency: Option<ConsistencyArg>,
    /// Book ids to use, inclusive (e.g. 1..7, or 1..1000000 for a generated catalog).
    #[arg(long, value_parser = parse_book_range, default_value = "1..7", value_name = "A..B")]
    pub books: (u64, u64),
    /// Topics searched, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "distributed systems,undergraduate school")]
    pub topics: Vec<String>,
    /// What to load.
    #[arg(long, value_enum, default_value = "bazar")]
    pub target: TargetKind,
    /// URL template for --target http-get; `{id}` becomes a book id.
    #[arg(long, value_name = "URL", required_if_eq("target", "http-get"))]
    pub url: Option<String>,
    /// Servers to spread the clients over, round robin [default: --frontend].
    /// For etcd: its client URLs.
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    pub endpoints: Vec<String>,
    /// Key prefix of the books in etcd.
    #[arg(long, default_value = "bazar/books/", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// Do not restock books (buys) or preload etcd keys (ranges) before running.
    #[arg(long)]
    pub no_prepare: bool,
    /// A name for this scenario, kept in the JSON.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the JSON results to this file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Draw throughput and latency percentiles against clients to this SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Worker threads of the load generator [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// A kind of Bazar request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `GET /books/{id}`.
    Lookup,
    /// `GET /books?topic=`.
    Search,
    /// `POST /books/{id}/buy` of one copy, with a unique idempotency key.
    Buy,
    /// `POST /books/{id}/restock` of one copy (admin).
    Restock,
    /// A buy, then a lookup of the same book: the lookup's latency is the
    /// first read after an invalidation (a cache miss behind a frontend).
    LookupAfterBuy,
}

impl Op {
    const ALL: [Op; 5] = [Op::Lookup, Op::Search, Op::Buy, Op::Restock, Op::LookupAfterBuy];

    /// The name used in `--mix` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Search => "search",
            Op::Buy => "buy",
            Op::Restock => "restock",
            Op::LookupAfterBuy => "lookup_after_buy",
        }
    }

    fn writes(self) -> bool {
        matches!(self, Op::Buy | Op::Restock | Op::LookupAfterBuy)
    }
}

/// Operation weights: each request picks an operation with probability
/// weight / total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    /// Parses `lookup=80,search=10,buy=10,restock=0` (`-` and `_` alike).
    pub fn parse(text: &str) -> std::result::Result<Mix, String> {
        let mut weights: BTreeMap<Op, u32> = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("{part:?} is not OP=WEIGHT"))?;
            let name = name.trim().replace('-', "_");
            let op = Op::ALL.into_iter().find(|op| op.name() == name).ok_or_else(|| {
                format!("unknown operation {name:?}: expected lookup, search, buy, restock or lookup_after_buy")
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} must be a whole number, got {weight:?}"))?;
            *weights.entry(op).or_default() += weight;
        }
        let weights: Vec<(Op, u32)> = weights.into_iter().filter(|&(_, w)| w > 0).collect();
        let total = weights.iter().try_fold(0u32, |sum, &(_, w)| sum.checked_add(w)).ok_or("weights too large")?;
        if total == 0 {
            return Err("the mix needs at least one operation with a positive weight".into());
        }
        Ok(Mix { weights, total })
    }

    /// Picks the next operation.
    pub fn pick(&self, rng: &mut impl Rng) -> Op {
        let mut ticket = rng.random_range(0..self.total);
        for &(op, weight) in &self.weights {
            if ticket < weight {
                return op;
            }
            ticket -= weight;
        }
        self.weights[self.weights.len() - 1].0
    }

    /// Whether any operation writes.
    pub fn writes(&self) -> bool {
        self.weights.iter().any(|(op, _)| op.writes())
    }

    /// Whether `op` has a positive weight.
    pub fn has(&self, op: Op) -> bool {
        self.weights.iter().any(|&(o, _)| o == op)
    }

    /// The weights by name, for reports.
    pub fn to_map(&self) -> BTreeMap<String, u32> {
        self.weights.iter().map(|&(op, w)| (op.name().to_string(), w)).collect()
    }
}

/// Parses a `--rate`: requests a second, `1000` or `1000/s`.
pub fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("'{text}' is not a rate: a positive number of requests a second, e.g. 500 or 500/s")),
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms, s or m")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (at most one day)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses an inclusive id range `A..B` (also `A..=B`, or one id).
pub fn parse_book_range(text: &str) -> std::result::Result<(u64, u64), String> {
    let bad = || format!("{text:?} is not a book id range like 1..7");
    let (a, b) = match text.split_once("..") {
        Some((a, b)) => (a.trim(), b.trim().trim_start_matches('=')),
        None => (text.trim(), text.trim()),
    };
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || b < a {
        return Err(format!("{text:?}: book ids start at 1 and the range must not be empty"));
    }
    Ok((a, b))
}

/// The book every baseline serves and stores: a classic title for ids 1 to 7,
/// a generated one beyond, so that values have the size of Bazar's books.
pub fn sample_book(id: u64) -> Book {
    let (title, topic, price_cents) = match CLASSICS.get((id as usize).wrapping_sub(1)) {
        Some(&(title, topic, price)) => (title.to_string(), topic.to_string(), price),
        None => (format!("Synthetic Volume {id}"), "distributed systems".to_string(), 2500),
    };
    Book { id, isbn: isbn::from_number(id), title, topic, price_cents, stock: 1000 }
}

/// Connection settings of a run: the CLI's global options.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `--frontend`: where Bazar requests go when no `--endpoints` are given.
    pub frontend: String,
    /// Admin token, for restocks.
    pub admin_token: Option<String>,
    /// Per-request deadline.
    pub timeout: Duration,
}

/// Runs `bazar bench` or one of its actions; returns the report of a run.
pub async fn execute(args: &BenchArgs, conn: &Connection, json: bool) -> Result<Option<BenchReport>> {
    match &args.action {
        Some(BenchAction::Merge(merge)) => {
            let reports = merge.inputs.iter().map(|p| load_report(p)).collect::<Result<Vec<_>>>()?;
            let merged = BenchReport::merge(&reports).ok_or_else(|| ClientError::Invalid("nothing to merge".into()))?;
            save_report(&merge.out, &merged)?;
            Ok(Some(merged))
        }
        Some(BenchAction::Plot(plot)) => {
            let mut loaded = Vec::new();
            for spec in &plot.series {
                let (label, rest) = spec
                    .split_once('=')
                    .ok_or_else(|| ClientError::Invalid(format!("series {spec:?} is not LABEL=FILE[:OP]")))?;
                let (file, op) = match rest.rsplit_once(':') {
                    Some((file, op)) if !op.contains('/') && !op.is_empty() => (file, Some(op.to_string())),
                    _ => (rest, None),
                };
                loaded.push((label.to_string(), load_report(Path::new(file))?, op));
            }
            let series: Vec<plot::Series<'_>> = loaded
                .iter()
                .map(|(label, report, op)| plot::Series { label: label.clone(), report, op: op.clone() })
                .collect();
            let title = plot.title.clone().unwrap_or_else(|| "Bazar benchmark".into());
            plot::draw(&plot.out, &title, &series, &plot.percentiles).map_err(ClientError::Invalid)?;
            Ok(None)
        }
        None => {
            let report = run(&args.run, conn, !json && std::io::stderr().is_terminal()).await?;
            if let Some(path) = &args.run.out {
                save_report(path, &report)?;
            }
            if let Some(path) = &args.run.plot {
                let series =
                    [plot::Series { label: report.label.clone().unwrap_or_default(), report: &report, op: None }];
                let title = report.label.clone().unwrap_or_else(|| format!("{} benchmark", report.target));
                plot::draw(path, &title, &series, &Percentile::ALL).map_err(ClientError::Invalid)?;
            }
            Ok(Some(report))
        }
    }
}

fn load_report(path: &Path) -> Result<BenchReport> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Invalid(format!("{} is not a bench result: {e}", path.display())))
}

fn save_report(path: &Path, report: &BenchReport) -> Result<()> {
    let mut text = serde_json::to_string_pretty(report).map_err(|e| ClientError::Invalid(e.to_string()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| ClientError::Invalid(format!("cannot write {}: {e}", path.display())))
}

/// Builds the workload of a run: endpoints, pool, clients.
fn workload(args: &RunArgs, conn: &Connection) -> Result<Workload> {
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let http = reqwest::Client::builder()
        .connect_timeout(conn.timeout.min(Duration::from_secs(2)))
        // Keep every client's connection alive between requests and levels.
        .pool_max_idle_per_host(max_clients.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ClientError::Invalid(format!("cannot build HTTP client: {e}")))?;
    let raw: Vec<String> = if args.target == TargetKind::HttpGet {
        vec![args.url.clone().ok_or_else(|| ClientError::Invalid("--target http-get needs --url".into()))?]
    } else if args.endpoints.is_empty() {
        vec![conn.frontend.clone()]
    } else {
        args.endpoints.clone()
    };
    let urls: Vec<String> = if args.target == TargetKind::HttpGet {
        raw
    } else {
        raw.iter().map(|e| normalize_base_url(e)).collect::<Result<_>>()?
    };
    let mut clients = Vec::new();
    if args.target == TargetKind::Bazar {
        for url in &urls {
            let mut builder = Client::builder(url.as_str()).timeout(conn.timeout).http_client(http.clone());
            if let Some(token) = &conn.admin_token {
                builder = builder.admin_token(token.clone());
            }
            clients.push(builder.build()?);
        }
    }
    Ok(Workload {
        target: args.target,
        clients,
        http,
        urls,
        mix: args.mix.clone(),
        books: args.books,
        topics: if args.topics.is_empty() { vec!["distributed systems".into()] } else { args.topics.clone() },
        consistency: args.consistency.map(Consistency::from),
        etcd_prefix: args.etcd_prefix.clone(),
        nonce: rand::random(),
        timeout: conn.timeout,
    })
}

/// Runs every level of `args` and returns the report.
pub async fn run(args: &RunArgs, conn: &Connection, progress: bool) -> Result<BenchReport> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        return Err(ClientError::Invalid("--clients must be at least 1".into()));
    }
    let duration = match (args.duration, args.requests) {
        (_, Some(0)) => return Err(ClientError::Invalid("--requests must be at least 1".into())),
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let work = Arc::new(workload(args, conn)?);
    prepare(args, &work).await?;
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut levels = Vec::new();
    let mut level_run = 0;
    for &clients in &args.clients {
        let mut reps = Vec::new();
        for rep in 0..args.repeat {
            level_run += 1;
            let plan =
                Plan { clients, warmup: args.warmup, duration, requests: args.requests, rate: args.rate, level_run };
            let what = if args.repeat > 1 {
                format!("{clients} clients, run {}", rep + 1)
            } else {
                format!("{clients} clients")
            };
            reps.push(run_level(&work, &plan, progress.then_some(what.as_str())).await);
        }
        levels.push(report::LevelReport::median_of(&reps.iter().collect::<Vec<_>>()));
    }
    Ok(BenchReport {
        version: report::REPORT_VERSION,
        label: args.label.clone(),
        target: args.target.name().to_string(),
        endpoints: work.urls.clone(),
        consistency: (args.target == TargetKind::Bazar)
            .then(|| args.consistency.map(|c| Consistency::from(c).to_string()))
            .flatten()
            .or_else(|| match args.target {
                TargetKind::EtcdRangeLinearizable => Some("linearizable".into()),
                TargetKind::EtcdRangeSerializable => Some("serializable".into()),
                _ => None,
            }),
        mix: if args.target == TargetKind::Bazar { args.mix.to_map() } else { BTreeMap::new() },
        books: format!("{}..{}", args.books.0, args.books.1),
        rate_per_s: args.rate,
        duration_s: duration.map(|d| d.as_secs_f64()),
        requests: if duration.is_some() { None } else { args.requests },
        warmup_s: args.warmup.as_secs_f64(),
        repeat: args.repeat,
        started_unix,
        levels,
    })
}

/// Restocks books (runs that buy) or preloads etcd keys (range runs).
async fn prepare(args: &RunArgs, work: &Workload) -> Result<()> {
    if args.no_prepare {
        return Ok(());
    }
    match args.target {
        TargetKind::Bazar if args.mix.writes() && (args.mix.has(Op::Buy) || args.mix.has(Op::LookupAfterBuy)) => {
            if work.clients.first().is_some_and(|c| !c.has_admin_token()) {
                eprintln!("bench: no admin token, so books are not restocked: buys may run out of stock");
                return Ok(());
            }
            let n = workload::prepare_stock(work).await?;
            if n > 0 {
                eprintln!("bench: restocked {n} book(s) before buying");
            }
        }
        TargetKind::EtcdRangeLinearizable | TargetKind::EtcdRangeSerializable => {
            workload::prepare_etcd(work).await.map_err(ClientError::Invalid)?;
        }
        _ => {}
    }
    Ok(())
}

/// One level of one run.
struct Plan {
    clients: usize,
    warmup: Duration,
    duration: Option<Duration>,
    requests: Option<u64>,
    /// Open loop: requests a second, all clients together.
    rate: Option<f64>,
    /// Which level run of the benchmark this is (1, 2, ...): part of the
    /// idempotency keys, so that no two level runs share one.
    level_run: u64,
}

/// Counters the progress bar reads while clients run.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    errors: AtomicU64,
    measuring: AtomicBool,
    done: AtomicBool,
    /// Open loop: requests due before the deadline that were never sent.
    unsent: AtomicU64,
}

async fn run_level(work: &Arc<Workload>, plan: &Plan, progress: Option<&str>) -> report::LevelReport {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = plan.duration.map(|d| measure_from + d);
    // Tickets for --requests: each measured request takes one.
    let tickets = plan.requests.map(|n| Arc::new(AtomicU64::new(n)));
    let bar = progress.map(|what| progress_bar(what, plan));
    let ticker =
        bar.clone().map(|bar| tokio::spawn(tick(bar, live.clone(), start, plan.warmup, plan.duration.is_some())));

    // Open loop: each client sends its share of the rate, one request every
    // `interval`, the clients' first requests spread over one interval.
    let interval = plan.rate.map(|rate| Duration::from_secs_f64(plan.clients as f64 / rate));
    let mut tasks = Vec::with_capacity(plan.clients);
    for index in 0..plan.clients {
        let work = work.clone();
        let live = live.clone();
        let tickets = tickets.clone();
        let level_run = plan.level_run;
        let mut due = interval.map(|i| start + i.mul_f64(index as f64 / plan.clients as f64));
        tasks.push(tokio::spawn(async move {
            let mut state = ClientState::new(&work, level_run, index);
            let mut recorder = Recorder::new();
            let mut last_answer = measure_from;
            loop {
                // In an open loop a request belongs to the time it was due,
                // however late it could be sent.
                let now = match due {
                    Some(due) => {
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let measured = now >= measure_from;
                if measured {
                    live.measuring.store(true, Ordering::Relaxed);
                    // A client that fell behind its schedule stops at the
                    // deadline too: what it could not send is reported.
                    if deadline.is_some_and(|d| now >= d || Instant::now() >= d) {
                        if let (Some(d), Some(due), Some(i)) = (deadline, due, interval)
                            && due < d
                        {
                            live.unsent.fetch_add(
                                ((d - due).as_secs_f64() / i.as_secs_f64()).ceil() as u64,
                                Ordering::Relaxed,
                            );
                        }
                        break;
                    }
                    if let Some(tickets) = &tickets
                        && tickets.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1)).is_err()
                    {
                        break;
                    }
                }
                let (ok, errors) = (recorder.ok(), recorder.errors());
                state.due = due;
                work.step(&mut state, &mut recorder, measured).await;
                if let (Some(d), Some(i)) = (&mut due, interval) {
                    *d += i;
                }
                if measured {
                    last_answer = Instant::now();
                    live.ok.fetch_add(recorder.ok() - ok, Ordering::Relaxed);
                    live.errors.fetch_add(recorder.errors() - errors, Ordering::Relaxed);
                }
            }
            (recorder, last_answer)
        }));
    }
    let mut total = Recorder::new();
    let mut end = measure_from;
    for task in tasks {
        // A client task only panics on a bug; its numbers are lost, the rest stand.
        if let Ok((recorder, last)) = task.await {
            total.merge(&recorder);
            end = end.max(last);
        }
    }
    live.done.store(true, Ordering::Relaxed);
    // Up to one request per client is the boundary: due just before the
    // deadline while the one before it was still out.
    let unsent = live.unsent.load(Ordering::Relaxed);
    if unsent > plan.clients as u64 {
        eprintln!(
            "bench: {} clients fell {unsent} request(s) behind the --rate schedule by the end: the target (or this \
             load generator) did not keep up; the latencies include the queueing, the unsent requests are not counted",
            plan.clients
        );
    }
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    total.level_report(plan.clients, end.saturating_duration_since(measure_from))
}

fn progress_bar(what: &str, plan: &Plan) -> ProgressBar {
    let (len, template) = match plan.duration {
        Some(d) => (d.as_millis() as u64, "{prefix:>16} [{bar:25}] {msg}"),
        None => (plan.requests.unwrap_or(0), "{prefix:>16} [{bar:25}] {pos}/{len} {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(5));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

async fn tick(bar: ProgressBar, live: Arc<Live>, start: Instant, warmup: Duration, by_time: bool) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    let mut last = (Instant::now(), 0u64);
    while !live.done.load(Ordering::Relaxed) {
        interval.tick().await;
        let ok = live.ok.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        if !live.measuring.load(Ordering::Relaxed) {
            bar.set_message(format!("warm-up, {:.1} s left", warmup.saturating_sub(start.elapsed()).as_secs_f64()));
            continue;
        }
        let now = Instant::now();
        let rate = (ok - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, ok);
        let position = if by_time { start.elapsed().saturating_sub(warmup).as_millis() as u64 } else { ok + errors };
        bar.set_position(position);
        bar.set_message(format!("{ok} ok, {errors} err, {rate:.0}/s"));
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn mix_parses_weights_and_picks_only_weighted_ops() {
        let mix = Mix::parse("lookup=80, search=10,buy=10,restock=0").unwrap();
        assert_eq!(mix.to_map(), BTreeMap::from([("lookup".into(), 80), ("search".into(), 10), ("buy".into(), 10)]));
        assert!(mix.writes());
        assert!(!mix.has(Op::Restock));
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = BTreeMap::new();
        for _ in 0..10_000 {
            *counts.entry(mix.pick(&mut rng)).or_insert(0) += 1;
        }
        assert!(!counts.contains_key(&Op::Restock));
        assert!((7_500..8_500).contains(&counts[&Op::Lookup]), "{counts:?}");
        assert_eq!(Mix::parse("lookup-after-buy=1").unwrap().to_map()["lookup_after_buy"], 1);
    }

    #[test]
    fn bad_mixes_are_refused() {
        assert!(Mix::parse("lookup=0").is_err());
        assert!(Mix::parse("lookup").is_err());
        assert!(Mix::parse("steal=3").is_err());
        assert!(Mix::parse("buy=-1").is_err());
        assert!(!Mix::parse("lookup=1,search=2").unwrap().writes());
    }

    #[test]
    fn durations_and_ranges_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_book_range("1..7").unwrap(), (1, 7));
        assert_eq!(parse_book_range("1..=1000000").unwrap(), (1, 1_000_000));
        assert_eq!(parse_book_range("4").unwrap(), (4, 4));
        assert!(parse_book_range("0..7").is_err());
        assert!(parse_book_range("7..1").is_err());
    }

    #[test]
    fn sample_books_are_valid_and_sized_like_the_classics() {
        let book = sample_book(2);
        assert_eq!(book.title, "RPCs for Noobs");
        assert!(isbn::normalize(&book.isbn).is_ok());
        assert!(sample_book(1_000_000).title.contains("1000000"));
    }
}
