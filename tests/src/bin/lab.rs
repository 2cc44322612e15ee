//! `bazar-lab`: a local Bazar cluster for learning and teaching. Starts raft
//! nodes and a frontend on loopback, and a supervisor through which the web
//! lab's fault buttons kill, pause, restart and isolate the nodes. Prints
//! the storefront's and the lab's addresses; Ctrl-C stops every process it
//! started and removes every firewall rule it made.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bazar_tests::ADMIN_TOKEN;
use bazar_tests::lab::{self, Lab, LabConfig};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// A local Bazar cluster with a web lab whose buttons inject real faults.
#[derive(Parser)]
#[command(name = "bazar-lab", version)]
struct Args {
    /// Raft nodes to start.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where the frontend (storefront and lab) listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    frontend: SocketAddr,
    /// Where the supervisor listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The lab token (default: a random one).
    #[arg(long, env = "BAZAR_LAB_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() || !args.frontend.ip().is_loopback() {
        eprintln!("bazar-lab: the lab listens on loopback addresses only (127.0.0.0/8)");
        return ExitCode::from(2);
    }
    if !(1..=9).contains(&args.nodes) {
        eprintln!("bazar-lab: --nodes must be between 1 and 9");
        return ExitCode::from(2);
    }
    let token = args.token.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bazar-lab: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let config = LabConfig { nodes: args.nodes, frontend: args.frontend, listen: args.listen, token };
    eprintln!("bazar-lab: starting {} raft nodes and a frontend...", config.nodes);
    let lab = match Lab::start(&config, &listener).await {
        Ok(lab) => Arc::new(lab),
        Err(e) => {
            eprintln!("bazar-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Bazar lab is up.");
    println!("  storefront:  {}/", lab.frontend_url());
    println!("  lab:         {}", lab.lab_link());
    println!("  staff page admin token: {ADMIN_TOKEN}");
    println!("  supervisor:  {} (Bearer lab token)", lab.supervisor_url());
    println!("Ctrl-C stops every process and removes every firewall rule.");
    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = lab::serve(lab.clone(), listener, shutdown).await;
    eprintln!("bazar-lab: stopping");
    lab.stop().await;
    // Dropping the lab removes its data directory.
    drop(lab);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bazar-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
