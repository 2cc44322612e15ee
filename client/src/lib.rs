//! A typed client for Bazar.
//!
//! This is the one way Rust code talks to a Bazar cluster: the frontend, the
//! `bazar` CLI and its benchmarks (crate `bazar-cli`) and the integration
//! tests all go through [`Client`], so retry, redirect and error rules live
//! in one place. It speaks JSON over HTTP with the wire types of
//! [`bazar_api`] and deliberately depends on neither RocksDB nor openraft,
//! nor on the command line's argument parser, histograms or plots.
//!
//! ```no_run
//! # async fn demo() -> bazar_client::Result<()> {
//! use bazar_client::{Client, Consistency};
//!
//! let client = Client::builder("127.0.0.1:8080").admin_token("secret").build()?;
//! let page = client.search("distributed systems", None, None, Some(Consistency::Linearizable)).await?;
//! println!("{} books, {}", page.value.books.len(), page.meta);
//! let order = client.buy(1, 2, Some("my-key-1")).await?;
//! println!("order {} is {}", order.order_id, order.status);
//! # Ok(())
//! # }
//! ```
//!
//! - [`client`]: [`Client`], its builder, and [`Read`] results carrying where a
//!   read was served from.
//! - [`error`]: [`ClientError`], and the rule for when a write's outcome is
//!   unknown.
//! - [`cluster`]: the cluster-wide status view and the membership operations
//!   (`add-node`, `remove-node`, leadership transfers, snapshots).
//! - [`watch`]: decoding a node's change-event stream.
//! - [`endpoint`]: turning `host:port` or URLs into base URLs.

#![warn(missing_docs)]

pub mod client;
pub mod cluster;
pub mod endpoint;
pub mod error;
pub mod watch;

pub use bazar_api::timing::TimingEntry;
pub use bazar_api::{
    Book, BookPage, BookPatch, ClusterStatus, Consistency, Digest, ErrorCode, Group, NewBook, NodeHealth, Order,
    OrderPage, OrderStatus, Problem, WatchEvent,
};
pub use client::{Client, ClientBuilder, DEFAULT_TIMEOUT, MAX_LEADER_HOPS, Read, ReadMeta, Written};
pub use endpoint::normalize_base_url;
pub use error::{ClientError, Result, TransportKind};
pub use watch::WatchStream;
