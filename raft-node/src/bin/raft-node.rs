//! `raft-node`: one Bazar replica. See `raft-node --help`.

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = bazar_node::Args::parse();
    let log_format = args.log_format;
    let config = args.resolve()?;
    bazar_node::init_tracing(log_format, config.id);
    let listener = bazar_node::Listeners::bind(&config.listen).await?;
    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    bazar_node::run(config, listener, shutdown).await
}
