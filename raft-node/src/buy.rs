//! Buying: one operation across the two groups.
//!
//! The orders leader coordinates every buy:
//!
//! 1. **Record** the order as `pending` in the orders group
//!    ([`OrdersCommand::Create`]). With an idempotency key, a retry finds the
//!    order made the first time instead of making a second one.
//! 2. **Reserve** stock in the catalog group, keyed by the order id
//!    ([`CatalogCommand::Reserve`]). The catalog remembers the outcome of
//!    every reservation, so proposing it again, from any node, any number of
//!    times, returns the first outcome and takes stock at most once.
//! 3. **Resolve** the order `confirmed` or `rejected` from that outcome
//!    ([`OrdersCommand::Resolve`]); an order is resolved at most once.
//!
//! Why this is safe: step 2 is the only one that touches stock, and it is
//! idempotent per order; step 3 is a pure function of step 2's remembered
//! outcome. So a coordinator may crash, lose its leadership, or time out at
//! any point, and re-running steps 2–3 for a pending order (by a retry or by
//! a new leader) converges to the same single outcome. Stock is taken once per
//! confirmed order and never for a rejected one, which gives conservation:
//! initial + restocks − confirmed quantities = stock, once nothing is pending.
//!
//! Liveness: the orders leader runs [`resume_pending`], which settles every
//! pending order that no request on this node is settling, so an order left
//! pending by a crash is resolved within about a second of a new leader
//! being elected.
//!
//! A buy whose outcome is unknown to the coordinator (a timeout after step 1)
//! is answered `503 unavailable`, never as a failure: retrying with the same
//! `Idempotency-Key` returns the one true outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::{Consistency, Order, OrderStatus};
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, Reservation};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::orders::{Orders, OrdersCommand, OrdersResponse, Outcome};

/// A settled buy and the log indexes that reflect it: a read of the orders
/// group at `orders_index` or later sees the order, and a read of the catalog
/// at `catalog_index` or later sees the stock it took.
#[derive(Debug, Clone)]
pub struct Bought {
    /// The confirmed order.
    pub order: Order,
    /// Orders log index at which the order was last written.
    pub orders_index: u64,
    /// Catalog log index at which its reservation was committed.
    pub catalog_index: u64,
}

/// Buys `quantity` copies of book `book_id`. This node must lead the orders group.
pub async fn buy(node: &Node, book_id: u64, quantity: u64, key: Option<String>, deadline: Instant) -> Result<Bought> {
    if !node.orders.is_leader() {
        return Err(node.orders.not_leader());
    }
    ensure_book_exists(node, book_id, deadline).await?;

    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let create = OrdersCommand::Create { idempotency_key: key.clone(), book_id, quantity, created_at };
    let created = node.orders.write(create, deadline).await?;
    let order = match created.response {
        OrdersResponse::Order { order, .. } => order,
        OrdersResponse::KeyReused { order_id } => {
            return Err(Error::IdempotencyKeyReused(format!(
                "Idempotency-Key {:?} was used for order {order_id}, a different book or quantity",
                key.unwrap_or_default()
            )));
        }
        other => return Err(Error::Internal(format!("unexpected answer to create: {other:?}"))),
    };

    let bought = if order.status == OrderStatus::Pending {
        settle(node, order, deadline).await.map_err(unknown_outcome)?
    } else {
        // Settled by an earlier attempt: this node applied the Create that
        // found it, so its replica holds the recorded reservation index.
        let catalog_index = Orders::reservation_index(&node.orders.view(), order.order_id)?.unwrap_or(0);
        Bought { order, orders_index: created.index, catalog_index }
    };
    outcome(bought)
}

/// After the order was recorded, a failure leaves its outcome unknown to this
/// request; it is reported as unavailable, never as a failed buy.
fn unknown_outcome(e: Error) -> Error {
    match e {
        Error::NotLeader { .. } | Error::Unavailable(_) => Error::Unavailable(format!(
            "the buy was recorded but not settled in time ({e}); retry with the same Idempotency-Key to learn its outcome"
        )),
        other => other,
    }
}

/// Turns a settled order into the answer for its buyer.
fn outcome(bought: Bought) -> Result<Bought> {
    let order = &bought.order;
    match order.status {
        OrderStatus::Confirmed => Ok(bought),
        OrderStatus::Rejected if order.reason.as_deref() == Some("not_found") => {
            Err(Error::NotFound(format!("no book with id {}", order.book_id)))
        }
        OrderStatus::Rejected => Err(Error::OutOfStock {
            detail: format!(
                "not enough copies of book {} for {} (order {})",
                order.book_id, order.quantity, order.order_id
            ),
            order_id: Some(order.order_id),
            orders_index: Some(bought.orders_index),
        }),
        OrderStatus::Pending => Err(Error::Unavailable(format!(
            "order {} is still pending; retry with the same Idempotency-Key",
            order.order_id
        ))),
    }
}

/// Fails with `NotFound` unless the book exists. A miss on the local replica
/// may just be lag, so it is confirmed with a linearizable read.
async fn ensure_book_exists(node: &Node, book_id: u64, deadline: Instant) -> Result<()> {
    if Catalog::book(&node.catalog.view(), book_id)?.is_some() {
        return Ok(());
    }
    node.catalog.linearize(Consistency::Linearizable, deadline).await?;
    match Catalog::book(&node.catalog.view(), book_id)? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(format!("no book with id {book_id}"))),
    }
}

/// Marks an order as being settled by this node for as long as it lives.
struct Settling<'a> {
    set: &'a Mutex<HashSet<u64>>,
    order_id: u64,
}

impl<'a> Settling<'a> {
    /// Claims `order_id` in `set` (the node's `settling`), or returns `None`
    /// when another task holds it. The guard is released before a claim is
    /// built: a claim's `Drop` takes the same lock.
    fn claim(set: &'a Mutex<HashSet<u64>>, order_id: u64) -> Option<Settling<'a>> {
        let inserted = set.lock().expect("settling set poisoned").insert(order_id);
        inserted.then(|| Settling { set, order_id })
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("settling set poisoned").remove(&self.order_id);
    }
}

/// Steps 2 and 3: reserve stock for a pending order and resolve it.
pub async fn settle(node: &Node, order: Order, deadline: Instant) -> Result<Bought> {
    let _claim = Settling::claim(&node.settling, order.order_id);
    let reserve =
        CatalogCommand::Reserve { order_id: order.order_id, book_id: order.book_id, quantity: order.quantity };
    let reserved = node.catalog.write_anywhere(reserve, deadline).await?;
    let reservation = match reserved.response {
        CatalogResponse::Reservation(r) => r,
        other => return Err(Error::Internal(format!("unexpected answer to reserve: {other:?}"))),
    };
    let outcome = match reservation {
        Reservation::Reserved { unit_price_cents } => Outcome::Confirmed { unit_price_cents },
        Reservation::OutOfStock { .. } => Outcome::Rejected { reason: "out_of_stock".into() },
        Reservation::NoSuchBook => Outcome::Rejected { reason: "not_found".into() },
    };
    let resolve = OrdersCommand::Resolve { order_id: order.order_id, outcome, catalog_index: reserved.index };
    let resolved = node.orders.write(resolve, deadline).await?;
    match resolved.response {
        OrdersResponse::Order { order, existing } => {
            // When another settler resolved it first, its reservation index is
            // the one recorded; a re-applied reservation returns the same
            // outcome at a later index, which also reflects the stock change.
            let catalog_index = if existing {
                Orders::reservation_index(&node.orders.view(), order.order_id)?.unwrap_or(reserved.index)
            } else {
                reserved.index
            };
            Ok(Bought { order, orders_index: resolved.index, catalog_index })
        }
        other => Err(Error::Internal(format!("unexpected answer to resolve: {other:?}"))),
    }
}

/// How long a pending order may sit before the resumer takes it over from
/// the request that created it.
const GRACE: Duration = Duration::from_millis(500);
/// How often the orders leader looks for pending orders.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Pending orders settled concurrently by the resumer, at most.
const BATCH: usize = 256;

/// While this node leads the orders group, settles pending orders that no
/// request is settling. Runs until the node shuts down.
pub async fn resume_pending(node: Arc<Node>) {
    // When this leader first saw each pending order, by its own clock: the
    // order's `created_at` comes from whichever leader made it.
    let mut first_seen: HashMap<u64, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !node.orders.is_leader() {
            first_seen.clear();
            continue;
        }
        let pending = match Orders::pending(&node.orders.view(), BATCH) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "listing pending orders");
                continue;
            }
        };
        let now = Instant::now();
        first_seen.retain(|id, _| pending.iter().any(|o| o.order_id == *id));
        for order in pending {
            let seen = *first_seen.entry(order.order_id).or_insert(now);
            let busy = node.settling.lock().expect("settling set poisoned").contains(&order.order_id);
            if busy || now.duration_since(seen) < GRACE {
                continue;
            }
            let node = node.clone();
            tokio::spawn(async move {
                let id = order.order_id;
                match settle(&node, order, Instant::now() + node.request_timeout()).await {
                    Ok(b) => tracing::info!(order_id = id, status = %b.order.status, "resumed pending order"),
                    Err(e) => tracing::warn!(order_id = id, error = %e, "could not settle pending order yet"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a failed claim used to build its `Settling` eagerly and
    /// drop it while still holding the lock, deadlocking the thread (and
    /// with it the node's runtime) whenever a retried buy met the
    /// pending-order resumer on the same order; had it not deadlocked, the
    /// drop would have released the other task's claim.
    #[test]
    fn a_second_claim_of_an_order_is_refused_and_keeps_the_first() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let set = Mutex::new(HashSet::new());
            let first = Settling::claim(&set, 7).expect("the first claim succeeds");
            let second = Settling::claim(&set, 7).is_none();
            let kept = set.lock().unwrap().contains(&7);
            drop(first);
            let released = set.lock().unwrap().is_empty();
            let _ = done.send((second, kept, released));
        });
        let outcome = finished.recv_timeout(Duration::from_secs(5)).expect("claiming twice deadlocked");
        assert_eq!(outcome, (true, true, true), "(second refused, first kept, released on drop)");
    }
}
