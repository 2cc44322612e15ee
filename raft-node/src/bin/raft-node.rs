//! `raft-node`: one Bazar replica. See `raft-node --help`.
//!
//! Everything is in the library ([`bazar_node::main`]), compiled once; the
//! binary adds the allocator.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    bazar_node::main()
}
