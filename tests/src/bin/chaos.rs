//! `bazar-chaos`: long chaos runs on demand, and re-checking saved histories.
//!
//! `bazar-chaos run` starts its own cluster of `raft-node` processes (free
//! loopback ports, a temporary directory), runs the workload against it while
//! the nemesis injects faults for `--duration`, writes the history, checks it
//! and prints the summary table. Exit status: 0 when every check passed, 1
//! on a violation, 2 when the run could not be carried out.
//!
//! `bazar-chaos check FILE` checks a history written by an earlier run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bazar_tests::chaos::{self, ChaosConfig};
use bazar_tests::checker::{CheckConfig, check_history, secs};
use bazar_tests::frontend::FrontendProc;
use bazar_tests::history::{self, CachedPromise, Clock, History};
use bazar_tests::nemesis::Fault;
use bazar_tests::{ADMIN_TOKEN, Cluster, ClusterOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bazar-chaos", about = "Jepsen-style chaos runs against a local Bazar cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster, run workload and faults, check the history.
    Run(RunArgs),
    /// Check a history file written by an earlier run.
    Check {
        /// The history (JSON lines).
        file: PathBuf,
        /// Bound on writes resuming after a leader kill, seconds (0: do not judge).
        #[arg(long, default_value_t = 2.0)]
        resume_bound: f64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// How long the workload runs, seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Raft nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Faults to cycle through, comma-separated: the process faults
    /// (kill-node, kill-leader-catalog, kill-leader-orders, pause-node,
    /// pause-leader-catalog, pause-leader-orders, restart-all) and, as root
    /// with iptables, the network ones between nodes, which clients still
    /// reach (partition-leader-catalog, partition-leader-orders,
    /// isolate-minority, bridge, one-way-leader-catalog,
    /// one-way-leader-orders, partition-restart), two at once
    /// (kill-leader-and-pause-follower-catalog, -orders: five nodes or more),
    /// a membership change (remove-and-add-node), with libfaketime the clock
    /// faults (clock-fast-, clock-slow-, clock-jump- and clock-jump-back-
    /// followed by leader- or follower- and the group, e.g.
    /// clock-slow-leader-orders; clock-slow-partition-leader-catalog, -orders
    /// also need iptables) and, with --power, power losses (power-loss-node,
    /// power-loss-all); default: every process fault, and the network ones
    /// with --partitions, the clock ones with --clocks, the power ones with
    /// --power.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Add the network faults to the default faults (needs root and iptables).
    #[arg(long)]
    partitions: bool,
    /// Add the clock faults to the default faults (needs libfaketime; with
    /// --partitions, also a slow leader cut off its peers). The nodes run
    /// with libfaketime preloaded whenever a clock fault is asked for.
    #[arg(long)]
    clocks: bool,
    /// How many times faster than true time the clock faults make a fast
    /// clock run, and slower a slow one; also passed to the nodes as
    /// --max-clock-rate-ratio, the drift they allow for.
    #[arg(long, default_value_t = 2.0)]
    clock_ratio: f64,
    /// Run every node's data directory on lazyfs, which drops unsynced
    /// writes on a power cut, and add the power losses to the default
    /// faults (needs root and /dev/fuse).
    #[arg(long)]
    power: bool,
    /// Pick faults at random instead of cycling.
    #[arg(long)]
    random: bool,
    /// How long each fault lasts, seconds.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Healthy time after each fault, seconds.
    #[arg(long, default_value_t = 2.0)]
    quiet: f64,
    /// Deadline of one client attempt, milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Seed of every random choice [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the history.
    #[arg(long, default_value = "chaos-history.jsonl")]
    history: PathBuf,
    /// Start a frontend in front of the nodes and send the workload to it
    /// as well as straight to the nodes.
    #[arg(long)]
    frontend: bool,
    /// Send the workload here instead of to the nodes (e.g. a frontend of
    /// your own); repeatable. The nodes still serve the final state.
    #[arg(long)]
    endpoint: Vec<String>,
    /// Extra flags for every raft node, e.g. "--snapshot-logs 500".
    #[arg(long, allow_hyphen_values = true)]
    node_args: Option<String>,
    /// Keep the cluster's data and logs even when every check passed.
    #[arg(long)]
    keep: bool,
    /// Bound on writes resuming after a leader kill, seconds (0: do not judge).
    #[arg(long, default_value_t = 2.0)]
    resume_bound: f64,
}

fn resume_bound(seconds: f64) -> Option<Duration> {
    (seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bazar-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Check { file, resume_bound: bound } => {
            let records = match history::read(&file) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("bazar-chaos: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = CheckConfig { resume_bound: resume_bound(bound), ..CheckConfig::default() };
            let report = check_history(&records, &config);
            print!("{}", report.table());
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let node_args: Vec<String> =
        args.node_args.as_deref().unwrap_or("").split_whitespace().map(str::to_string).collect();
    let mut node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let clock_ratio = args.clock_ratio.to_string();
    if args.clock_ratio != 2.0 {
        node_args.extend(["--max-clock-rate-ratio", &clock_ratio]);
    }
    if args.power
        && let Err(why) = bazar_tests::lazyfs::available()
    {
        eprintln!("bazar-chaos: --power: {why}");
        return ExitCode::from(2);
    }
    let mut faults = if args.faults.is_empty() { Fault::PROCESS.to_vec() } else { args.faults.clone() };
    if args.partitions {
        if let Err(why) = bazar_tests::partition::available() {
            eprintln!("bazar-chaos: --partitions: {why}");
            return ExitCode::from(2);
        }
        if args.faults.is_empty() {
            faults.extend(Fault::PARTITION);
        }
    }
    if args.clocks && args.faults.is_empty() {
        faults.extend(Fault::CLOCK);
        if args.partitions {
            faults.extend(Fault::CLOCK_PARTITION);
        }
    }
    if args.power && args.faults.is_empty() {
        faults.extend(Fault::POWER);
    }
    let clocks = faults.iter().any(|f| f.is_clock());
    let clock_library = if clocks {
        match bazar_tests::clock::library() {
            Ok(library) => Some(library),
            Err(why) => {
                eprintln!("bazar-chaos: clock faults: {why}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    eprintln!("bazar-chaos: starting {} raft nodes{}", args.nodes, if clocks { " under libfaketime" } else { "" });
    let options = ClusterOptions { lazyfs: args.power, clock_library, ..Default::default() };
    let mut cluster = Cluster::start_with(args.nodes, &node_args, options).await;
    eprintln!("bazar-chaos: cluster data in {}", cluster.dir().display());
    let mut endpoints = if args.endpoint.is_empty() { cluster.endpoints() } else { args.endpoint.clone() };
    let frontend = if args.frontend { Some(FrontendProc::start(&cluster, "frontend", &[]).await) } else { None };
    let mut cached = None;
    if let Some(fe) = &frontend {
        eprintln!("bazar-chaos: frontend on {}", fe.addr);
        let url = format!("http://{}", fe.addr);
        endpoints.insert(0, url.clone());
        // The checker judges its cached reads against its default staleness bound.
        cached = Some(CachedPromise { frontends: vec![url], max_staleness_ms: 1000 });
    }
    let duration = Duration::from_secs(args.duration);
    let mut config = ChaosConfig::new(endpoints, ADMIN_TOKEN, faults, duration);
    config.runner.cached = cached;
    config.runner.clients = args.clients;
    config.runner.timeout = Duration::from_millis(args.timeout_ms);
    config.schedule.random = args.random;
    config.schedule.clock_ratio = args.clock_ratio;
    config.schedule.hold = Duration::from_secs_f64(args.hold);
    config.schedule.quiet = Duration::from_secs_f64(args.quiet);
    let busy = config.schedule.start_after + config.schedule.hold + Duration::from_secs(4);
    config.schedule.duration = duration.saturating_sub(busy);
    if let Some(seed) = args.seed {
        config.runner.seed = seed;
        config.schedule.seed = seed;
    }
    config.check.resume_bound = resume_bound(args.resume_bound);

    let history = match History::to_file(Clock::start(), &args.history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bazar-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "bazar-chaos: {} clients for {} s, faults {} (hold {:.1} s, quiet {:.1} s), seed {}, history {}",
        config.runner.clients,
        args.duration,
        config.schedule.faults.iter().map(Fault::to_string).collect::<Vec<_>>().join(","),
        args.hold,
        args.quiet,
        config.runner.seed,
        args.history.display()
    );
    let progress = {
        let history = history.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("bazar-chaos: {:>5.0} s, {} history records", secs(history.now()), history.len());
            }
        })
    };
    let nodes: Vec<_> = cluster.ids().into_iter().map(|id| (id, cluster.client(id))).collect();
    let outcome = chaos::run(&mut cluster, &nodes, &config, &history).await;
    progress.abort();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bazar-chaos: the run could not be carried out: {e}\n{}", cluster.logs_tail(30));
            cluster.keep_data();
            return ExitCode::from(2);
        }
    };
    println!("{}", outcome.report.table());
    println!("history: {} ({} operations)", args.history.display(), outcome.invoked);
    if args.keep || !outcome.report.passed() {
        cluster.keep_data();
    }
    if outcome.report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
