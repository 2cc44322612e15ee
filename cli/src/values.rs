//! Command-line values shared by the commands ([`crate::cli`]) and the load
//! generator ([`crate::bench`]).

use bazar_api::{Consistency, Group};
use clap::ValueEnum;

/// Read consistency, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// From the frontend's cache; staleness bounded by its --max-staleness.
    Cached,
    /// Read index under the leader's lease; no quorum round trip.
    Lease,
    /// Read index confirmed by a quorum; reflects every acknowledged write.
    Linearizable,
}

impl From<ConsistencyArg> for Consistency {
    fn from(c: ConsistencyArg) -> Consistency {
        match c {
            ConsistencyArg::Cached => Consistency::Cached,
            ConsistencyArg::Lease => Consistency::Lease,
            ConsistencyArg::Linearizable => Consistency::Linearizable,
        }
    }
}

/// A Raft group, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupArg {
    /// Books and stock.
    Catalog,
    /// Orders.
    Orders,
}

impl From<GroupArg> for Group {
    fn from(g: GroupArg) -> Group {
        match g {
            GroupArg::Catalog => Group::Catalog,
            GroupArg::Orders => Group::Orders,
        }
    }
}
