//! `bench-ceiling`: the HTTP ceiling of Bazar's benchmarks.
//!
//! Serves `GET /books/{id}` with a fixed book as JSON (serialized per
//! request, as a real handler would) and `GET /health`, with axum on a
//! multi-threaded tokio runtime, and nothing else: no storage, no consensus,
//! no cache. What `bazar bench --target http-get` measures against it is the
//! best any HTTP service on this machine and with this load tool can do,
//! which is what Bazar's cached lookups are held to (`scripts/bench.sh`).

use std::net::SocketAddr;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use bazar_cli::bench::sample_book;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A trivial HTTP server returning a book's JSON: the benchmarks' ceiling.
#[derive(Debug, Parser)]
#[command(name = "bench-ceiling", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7199")]
    listen: SocketAddr,
}

fn app() -> Router {
    Router::new()
        .route("/books/{id}", get(|Path(id): Path<u64>| async move { Json(sample_book(id)) }))
        .route("/health", get(|| async { "ok" }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("bench-ceiling: serving GET /books/{{id}} on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).with_graceful_shutdown(shutdown()).await
}

/// Resolves on SIGTERM (how scripts stop it) or Ctrl-C.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
