//! The `bazar` command-line tool and its load generator, on the typed client
//! of [`bazar_client`].
//!
//! The binaries stay thin: `bazar` parses its arguments with [`cli::Cli`] and
//! runs [`cli::run`]; `bench-ceiling` serves the benchmarks' HTTP ceiling.
//! What they do lives here, where it is documented and tested:
//!
//! - [`cli`]: the commands, how outcomes become output and exit codes, and
//!   the admin-token file.
//! - [`bench`](mod@bench): `bazar bench`, the closed- and open-loop load
//!   generator, its reports and plots.
//! - [`values`]: command-line values both of them take (consistency, group).
//!
//! This crate carries the tools' weight (clap, HDR histograms, the progress
//! bar, plotters, mimalloc) so that the client library does not.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod values;
