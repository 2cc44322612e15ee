//! The change-event stream served by a node's `GET /watch?group=G&from=INDEX`.
//!
//! Events are delivered in log-index order, one JSON object per line (or as
//! server-sent events). An `applied` event is sent only after the state
//! machine has durably applied that index, so a read issued after receiving it
//! reflects the change. Heartbeats are sent periodically even when nothing is
//! written, so a subscriber can tell a quiet group from a broken stream.
//!
//! Keys name what changed:
//! - `book/{id}`: a book's fields or stock;
//! - `topic/{topic}`: the set or content of books under a (normalized) topic;
//! - `order/{id}`: an order;
//! - `book-orders/{book_id}`: the order history of a book;
//! - `buyer-orders/{buyer}`: the order history of a buyer.

use serde::{Deserialize, Serialize};

/// One event of the change stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The log entry at `index` was applied and changed `keys`.
    Applied {
        /// Log index of the entry.
        index: u64,
        /// What changed (see the module docs).
        keys: Vec<String>,
    },
    /// Periodic liveness and progress report.
    Heartbeat {
        /// The node sending the stream.
        node_id: u64,
        /// Highest index applied by this node.
        applied_index: u64,
        /// Highest index this node knows the leader committed.
        commit_index: u64,
        /// The group's leader as this node sees it.
        leader_id: Option<u64>,
    },
    /// The stream cannot replay from the requested index (it is older than the
    /// node keeps, or the node restarted): the subscriber must drop everything
    /// it cached for this group, then continues from `applied_index`.
    Reset {
        /// Index after which events will follow.
        applied_index: u64,
        /// Why a reset was needed.
        reason: String,
    },
}

/// Key of a book.
pub fn book_key(id: u64) -> String {
    format!("book/{id}")
}

/// Key of a topic (already normalized with [`crate::model::topic_key`]).
pub fn topic_key(topic: &str) -> String {
    format!("topic/{topic}")
}

/// Key of an order.
pub fn order_key(id: u64) -> String {
    format!("order/{id}")
}

/// Key of the order history of a book.
pub fn book_orders_key(book_id: u64) -> String {
    format!("book-orders/{book_id}")
}

/// Key of the order history of a buyer.
pub fn buyer_orders_key(buyer: &str) -> String {
    format!("buyer-orders/{buyer}")
}
