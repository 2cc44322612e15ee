//! `bazar-lazyfs`: mounts lazyfs, a file system that loses unsynced writes
//! on a simulated power cut (see `bazar_tests::lazyfs`).
//!
//! `bazar-lazyfs --backing DIR MOUNTPOINT` serves until a signal: `SIGUSR1`
//! cuts the power (the backing directory keeps only what was synced) and
//! `SIGTERM`/`SIGINT` unmount cleanly. Exits 0 after either.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Flags of `bazar-lazyfs`.
#[derive(Parser)]
#[command(about = "A FUSE pass-through file system that drops unsynced writes on SIGUSR1 (a power cut)")]
struct Args {
    /// The directory holding the data (what the disk would hold).
    #[arg(long)]
    backing: PathBuf,
    /// Where to mount it.
    mountpoint: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bazar_tests::lazyfs::serve(&args.backing, &args.mountpoint) {
        Ok(Some(cut)) => {
            println!("power cut: {cut:?}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("unmounted cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bazar-lazyfs: {e}");
            ExitCode::FAILURE
        }
    }
}
