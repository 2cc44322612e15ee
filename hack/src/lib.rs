//! No code. This crate only takes part in feature resolution: every member
//! of the workspace depends on it, and its `Cargo.toml` explains why.
