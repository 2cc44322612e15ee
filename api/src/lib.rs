//! Wire types shared by every Bazar component.
//!
//! The raft nodes, the frontend, the `bazar` client library and the tests all
//! speak JSON over HTTP; this crate is the single definition of that JSON. It
//! deliberately depends on nothing heavier than serde, so that the client does
//! not pull in RocksDB or openraft.
//!
//! - [`model`]: books, orders and the request bodies that create or change them,
//!   with the validation every entry point applies before anything is proposed.
//! - [`problem`]: RFC 9457 problem documents and the machine-readable error codes.
//! - [`isbn`]: ISBN-13 validation and generation.
//! - [`read`]: read consistency levels and the headers that describe a read.
//! - [`events`]: the change-event stream served by `GET /watch`.
//! - [`cluster`]: cluster status, digests and admin requests.
//! - [`backup`]: the backup file's layout, manifest and checks.
//! - [`timing`]: reading the `Server-Timing` header every answer carries.

#![warn(missing_docs)]

pub mod backup;
pub mod cluster;
pub mod events;
pub mod isbn;
pub mod model;
pub mod problem;
pub mod read;
pub mod timing;

pub use cluster::{
    AddLearnerRequest, ChangeMembershipRequest, ClusterStatus, Digest, GroupHealth, GroupStatus, InitRequest,
    MemberInfo, NodeHealth, RemoveNodeRequest, RowCount, StateLost, TransferLeaderRequest,
};
pub use events::WatchEvent;
pub use model::{
    Book, BookPage, BookPatch, BuyRequest, Group, NewBook, Order, OrderFilter, OrderPage, OrderStatus, RestockRequest,
};
pub use problem::{ErrorCode, Problem, WriteOutcome};
pub use read::Consistency;

/// Header carrying an idempotency key on `POST /books/{id}/buy`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header naming where a read was served from: `hit`, `miss` or `bypass`.
pub const CACHE_HEADER: &str = "x-bazar-cache";
/// Header naming who served a read: a node id, or `cache`.
pub const SERVED_BY_HEADER: &str = "x-bazar-served-by";
/// Header carrying the log index an answer reflects: on a read, the applied
/// index it was read at; on a write, the index the write was committed at
/// (of the orders group, for a buy).
pub const INDEX_HEADER: &str = "x-bazar-index";
/// On a buy: the catalog log index at which its stock was reserved.
pub const CATALOG_INDEX_HEADER: &str = "x-bazar-catalog-index";
/// Query parameter of reads: serve only once the replica has applied this
/// index (so that a client that saw a write at index N reads it back).
pub const MIN_INDEX_PARAM: &str = "min_index";
/// Content type of problem documents.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
