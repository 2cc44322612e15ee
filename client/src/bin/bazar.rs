//! `bazar`: the command-line client of the Bazar bookstore.
//!
//! Thin on purpose: arguments, behaviour and exit codes live in
//! [`bazar_client::cli`], where they are documented and tested.

use std::process::ExitCode;

use bazar_client::cli::{self, Cli};
use clap::Parser;

// One command at a time: a single-threaded runtime starts faster and is all
// a CLI needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
