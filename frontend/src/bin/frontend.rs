//! `frontend`: Bazar's HTTP gateway. See `frontend --help`.
//!
//! Everything is in the library ([`bazar_frontend::main`]), compiled once;
//! the binary adds the allocator.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    bazar_frontend::main()
}
