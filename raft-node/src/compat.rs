//! Reading what earlier versions wrote.
//!
//! Log entries, forwarded writes and state-machine rows are postcard, which
//! is not self-describing: a value is its fields in order, and an enum
//! variant is its position. So a stored layout is never changed in place.
//! A new layout gets a new variant (commands) or a new trailing field (rows),
//! and this module reads both, so that a node reads the logs, snapshots and
//! data directories written by the versions before it.
//!
//! # Versions
//! | version | what changed | how old bytes are read |
//! |---|---|---|
//! | 1 | (the first layout) | |
//! | 2 | buys name their buyer: [`OrdersCommand`](crate::orders::OrdersCommand) and [`CatalogCommand::Reserve`](crate::catalog::CatalogCommand::Reserve) carry `buyer`; [`Order`](bazar_api::Order) and [`Reservation`](crate::catalog::Reservation) rows end with it | commands: the version-1 variants keep their positions and are read with no buyer; rows: a row that ends before `buyer` is a version-1 row |
//! | 3 | idempotency keys are kept for a retention window: `Place`, `Reserve`, `Record` and `Settle` carry the view they were decided on (`seen`, `catalog_seen`); new commands `Forget` (orders) and `Purge` (catalog) | the version-1 and -2 variants keep their positions and are read with a view of 0 (decided before any purge) |
//!
//! A command is written in the oldest layout that holds it: a buy that names
//! no buyer is still written as version 1 wrote it, and a command decided
//! on a view of 0 (no key was ever purged in the proposer's view) as
//! version 2 or 1 wrote it. A command read with a view of 0 is refused as
//! stale once a purge has happened, which is safe: its proposer looks
//! again and resends it in the new layout. So during a rolling
//! upgrade the nodes not yet restarted keep reading the log, as long as no
//! buy names a buyer before every node runs version 2 (an older node cannot
//! read a newer layout). Rows have no such concern between nodes except in
//! snapshots, and an older node reading a newer row ignores the trailing
//! field (postcard ignores trailing bytes).

//!
//! Each group keeps its old layouts next to its types: [`crate::catalog::compat`]
//! (reservations, catalog commands) and [`crate::orders::compat`] (orders,
//! settlements, orders commands). This module holds what they share.

use std::io;

use serde::de::DeserializeOwned;

/// A row stored in the current layout `New` or in the older `Old`: the
/// current one is tried first, and the error reported is its error.
pub fn decode_either<New, Old>(bytes: &[u8]) -> io::Result<New>
where
    New: DeserializeOwned,
    Old: DeserializeOwned + Into<New>,
{
    match postcard::from_bytes::<New>(bytes) {
        Ok(new) => Ok(new),
        Err(new) => match postcard::from_bytes::<Old>(bytes) {
            Ok(old) => Ok(old.into()),
            Err(_) => Err(io::Error::new(io::ErrorKind::InvalidData, new)),
        },
    }
}
