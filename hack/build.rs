//! Nothing to build: present so that the `[build-dependencies]` in
//! Cargo.toml take part in resolving the host side's features.

fn main() {}
