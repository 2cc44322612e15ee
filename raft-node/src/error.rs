//! The node's error type.
//!
//! Errors split into two kinds:
//! - outcomes that travel back to the client as a problem document (not
//!   found, out of stock, bad input, not the leader, unavailable): every
//!   variant except `Internal`;
//! - `Internal`: a failure of this node (a storage error, a bug). The client
//!   gets a bare 500; the details go to the log. Storage failures inside
//!   openraft do not surface here: they stop the Raft group, and the node's
//!   requests then fail as `Unavailable`.

use bazar_api::{ErrorCode, Group, Problem, WriteOutcome};

/// Errors of the node crate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No such book, order or route.
    #[error("{0}")]
    NotFound(String),
    /// Malformed or out-of-bounds input.
    #[error("{0}")]
    InvalidInput(String),
    /// Not enough stock for a buy; nothing changed.
    #[error("{detail}")]
    OutOfStock {
        /// What was asked and what was there.
        detail: String,
        /// The rejected order, when one was recorded.
        order_id: Option<u64>,
        /// The orders log index of the rejection, when one was recorded.
        orders_index: Option<u64>,
    },
    /// A conflicting resource exists (a duplicate ISBN).
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key was reused for a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// A missing or wrong token.
    #[error("{0}")]
    Unauthorized(String),
    /// This node does not lead the group the request needs.
    #[error("this node does not lead the {group} group")]
    NotLeader {
        /// The group.
        group: Group,
        /// Its leader, if known.
        leader_id: Option<u64>,
        /// The leader's address, if known.
        leader_addr: Option<String>,
    },
    /// No leader, quorum or caught-up replica in time; nothing was
    /// proposed.
    #[error("{0}")]
    Unavailable(String),
    /// A write was proposed and did not commit in time, or its answer was
    /// lost: it may have been applied, or may still be.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A failure of this node; logged, not shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The node crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            // A replica in the middle of installing a snapshot (see `View::applied_index`).
            std::io::ErrorKind::ResourceBusy => Error::Unavailable(e.to_string()),
            _ => Error::Internal(format!("storage: {e}")),
        }
    }
}

impl Error {
    /// The problem document sent to clients.
    pub fn to_problem(&self) -> Problem {
        match self {
            Error::NotFound(d) => Problem::new(ErrorCode::NotFound, d),
            Error::InvalidInput(d) => Problem::new(ErrorCode::InvalidInput, d),
            Error::OutOfStock { detail, order_id, .. } => {
                let mut p = Problem::new(ErrorCode::OutOfStock, detail);
                p.order_id = *order_id;
                p
            }
            Error::Conflict(d) => Problem::new(ErrorCode::Conflict, d),
            Error::IdempotencyKeyReused(d) => Problem::new(ErrorCode::IdempotencyKeyReused, d),
            Error::Unauthorized(d) => Problem::new(ErrorCode::Unauthorized, d),
            Error::NotLeader { group, leader_id, leader_addr } => {
                Problem::not_leader(group.as_str(), *leader_id, leader_addr.clone())
            }
            Error::Unavailable(d) => Problem::unavailable(d, 1).with_write_outcome(WriteOutcome::NotApplied),
            Error::OutcomeUnknown(d) => Problem::unavailable(d, 1).with_write_outcome(WriteOutcome::Unknown),
            Error::Internal(_) => Problem::new(ErrorCode::Internal, "internal error; see the node's log"),
        }
    }
}
