//! `bazar`: the command-line client of the Bazar bookstore.
//!
//! Thin on purpose: arguments, behaviour and exit codes live in
//! [`bazar_cli::cli`], where they are documented and tested.

use std::process::ExitCode;

use bazar_cli::cli::{self, Cli};
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("lab") {
        return cli::lab(&args[2..]);
    }
    let cli = Cli::parse();
    match cli::runtime(&cli) {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
