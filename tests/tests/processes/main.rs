//! The real-process tests: clusters of `raft-node` and `frontend`
//! processes under faults, one module per subject (each module says what
//! it covers).
//!
//! One test binary rather than one per file: in a release build each binary
//! compiled and linked the same dependencies' generic code again. Run one
//! subject with its module's name as the filter, e.g.
//! `cargo test --release -p bazar-tests --test processes -- chaos::`; the
//! test command runs them one at a time (`--test-threads=1`).

mod amnesia;
mod backup;
mod browser;
mod chaos;
mod clocks;
mod cluster;
mod containers;
mod failover;
mod frontend;
mod hostile;
mod operations;
mod partitions;
mod powerloss;
mod tls;
