//! Buying: one operation across the two groups, in two commits.
//!
//! The orders leader coordinates every buy, identified by its idempotency
//! key (the client's, or one the node makes up):
//!
//! 1. **Reserve** stock in the catalog group under the key
//!    ([`CatalogCommand::Reserve`]). The catalog takes the copies if there
//!    are enough, and remembers the reservation and its outcome under the key
//!    whatever happens, so proposing it again, from any node, any number of
//!    times, returns the first outcome and takes stock at most once. A
//!    reservation that needs an order enters the catalog's *unclaimed* set.
//!    This commit decides the buy.
//! 2. **Record** the order in the orders group, directly in its final state
//!    (`confirmed` or `rejected`), from the reservation
//!    ([`OrdersCommand::Record`]). Recording is idempotent by key too: the
//!    second time, it returns the order recorded the first time.
//! 3. **Claim**, off the client's path: recorded keys are removed from the
//!    unclaimed set in batches ([`CatalogCommand::Claim`]).
//!
//! Why it is safe: step 1 is the only one that touches stock, once per key;
//! step 2 derives the order from step 1's remembered outcome, once per key.
//! So a coordinator may crash, lose its leadership, or time out at any point,
//! and re-running the steps for a key (by a retry, or by a new leader)
//! converges to one order and one stock change. Stock is taken once per
//! confirmed order and never for a rejected one, which gives conservation:
//! initial + restocks − confirmed quantities = stock, once every reservation
//! is recorded.
//!
//! Liveness: the orders leader runs [`resume_unclaimed`], which records every
//! unclaimed reservation that no request on this node is handling, so a buy
//! left half-done by a crash is recorded within about a second of a new
//! leader being elected, and then claimed.
//!
//! A buy whose outcome is unknown to the coordinator (a timeout after step 1
//! was proposed) is answered `503 unavailable`, never as a failure: retrying
//! with the same `Idempotency-Key` returns the one true outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::{Order, OrderStatus};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, Reservation, ReservationOutcome};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::orders::{Orders, OrdersCommand, OrdersResponse, Outcome};

/// A settled buy and the log indexes that reflect it: a read of the orders
/// group at `orders_index` or later sees the order, and a read of the catalog
/// at `catalog_index` or later sees the stock it took.
#[derive(Debug, Clone)]
pub struct Bought {
    /// The recorded order.
    pub order: Order,
    /// Orders log index at which the order was recorded (or later).
    pub orders_index: u64,
    /// Catalog log index at which its reservation was committed.
    pub catalog_index: u64,
}

/// A fresh idempotency key for a buy whose client gave none.
fn new_key() -> String {
    format!("node-{:032x}", rand::random::<u128>())
}

/// Buys `quantity` copies of book `book_id` under idempotency key `key` (or a
/// fresh one). This node must lead the orders group.
pub async fn buy(node: &Node, book_id: u64, quantity: u64, key: Option<String>, deadline: Instant) -> Result<Bought> {
    if !node.orders.is_leader() {
        return Err(node.orders.not_leader());
    }
    let client_key = key.is_some();
    let key = key.unwrap_or_else(new_key);
    // A retry of a buy already recorded: its one outcome.
    if let Some(bought) = already_recorded(node, &key, book_id, quantity)? {
        return outcome(bought);
    }
    ensure_book_exists(node, book_id, deadline).await?;
    let unknown = |e| unknown_outcome(e, &key, client_key);
    let _claim = Settling::claim(&node.settling, &key);
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let reserve = CatalogCommand::Reserve { key: key.clone(), book_id, quantity, created_at };
    let reserved = node.catalog.write_anywhere(reserve, deadline).await.map_err(unknown)?;
    let reservation = match reserved.response {
        CatalogResponse::Reservation(r) => r,
        CatalogResponse::KeyReused => return Err(key_reused(&key)),
        other => return Err(Error::Internal(format!("unexpected answer to reserve: {other:?}"))),
    };
    if reservation.outcome == ReservationOutcome::NoSuchBook {
        return Err(Error::NotFound(format!("no book with id {book_id}")));
    }
    let bought = record(node, &key, &reservation, deadline).await.map_err(unknown)?;
    outcome(bought)
}

/// Fails with `NotFound`, writing nothing, unless the book exists. A miss on
/// the local replica may just be lag, so it is confirmed with a linearizable
/// read; a hit is final, since books are never deleted.
async fn ensure_book_exists(node: &Node, book_id: u64, deadline: Instant) -> Result<()> {
    if Catalog::book(&node.catalog.view(), book_id)?.is_some() {
        return Ok(());
    }
    node.catalog.linearize(bazar_api::Consistency::Linearizable, deadline).await?;
    match Catalog::book(&node.catalog.view(), book_id)? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(format!("no book with id {book_id}"))),
    }
}

fn key_reused(key: &str) -> Error {
    Error::IdempotencyKeyReused(format!("Idempotency-Key {key:?} was used for a different book or quantity"))
}

/// The order already recorded under `key`, from this node's replica.
fn already_recorded(node: &Node, key: &str, book_id: u64, quantity: u64) -> Result<Option<Bought>> {
    let view = node.orders.view();
    let Some(order) = Orders::by_key(&view, key)? else {
        return Ok(None);
    };
    if order.book_id != book_id || order.quantity != quantity {
        return Err(key_reused(key));
    }
    let catalog_index = Orders::reservation_index(&view, order.order_id)?.unwrap_or(0);
    Ok(Some(Bought { order, orders_index: view.applied_index()?, catalog_index }))
}

/// When a step may have been applied but its answer was lost, the outcome is
/// unknown to this request: it is reported as unavailable, never as a failed
/// buy, with the key to retry under.
fn unknown_outcome(e: Error, key: &str, client_key: bool) -> Error {
    match e {
        Error::NotLeader { .. } | Error::Unavailable(_) => {
            let retry = if client_key {
                "retry with the same Idempotency-Key to learn its outcome".to_string()
            } else {
                format!("retry with Idempotency-Key: {key} to learn its outcome")
            };
            Error::Unavailable(format!("the buy was not settled in time ({e}); {retry}"))
        }
        other => other,
    }
}

/// Turns a recorded order into the answer for its buyer.
fn outcome(bought: Bought) -> Result<Bought> {
    let order = &bought.order;
    match order.status {
        OrderStatus::Confirmed => Ok(bought),
        OrderStatus::Rejected | OrderStatus::Pending => Err(Error::OutOfStock {
            detail: format!(
                "not enough copies of book {} for {} (order {})",
                order.book_id, order.quantity, order.order_id
            ),
            order_id: Some(order.order_id),
            orders_index: Some(bought.orders_index),
        }),
    }
}

/// Step 2: records the order of reservation `r`, then queues its claim.
pub async fn record(node: &Node, key: &str, r: &Reservation, deadline: Instant) -> Result<Bought> {
    let outcome = match r.outcome {
        ReservationOutcome::Reserved { unit_price_cents } => Outcome::Confirmed { unit_price_cents },
        ReservationOutcome::OutOfStock { .. } => Outcome::Rejected { reason: "out_of_stock".into() },
        ReservationOutcome::NoSuchBook => {
            return Err(Error::Internal(format!("reservation {key:?} is for no book: nothing to record")));
        }
    };
    let cmd = OrdersCommand::Record {
        key: key.to_string(),
        book_id: r.book_id,
        quantity: r.quantity,
        created_at: r.created_at.clone(),
        outcome,
        catalog_index: r.index,
    };
    let written = node.orders.write(cmd, deadline).await?;
    match written.response {
        OrdersResponse::Order { order, existing } => {
            node.claims.push(key.to_string());
            // Recorded earlier by another attempt: report that attempt's
            // reservation index (the same reservation, remembered by key).
            let catalog_index = if existing {
                Orders::reservation_index(&node.orders.view(), order.order_id)?.unwrap_or(r.index)
            } else {
                r.index
            };
            Ok(Bought { order, orders_index: written.index, catalog_index })
        }
        OrdersResponse::KeyReused { .. } => Err(key_reused(key)),
        other => Err(Error::Internal(format!("unexpected answer to record: {other:?}"))),
    }
}

/// Marks a buy as being handled by this node for as long as it lives.
struct Settling<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> Settling<'a> {
    /// Claims `key` in `set` (the node's `settling`), or returns `None` when
    /// another task holds it. The lock is released before a claim is built:
    /// a claim's `Drop` takes the same lock.
    fn claim(set: &'a Mutex<HashSet<String>>, key: &str) -> Option<Settling<'a>> {
        let inserted = set.lock().expect("settling set poisoned").insert(key.to_string());
        inserted.then(|| Settling { set, key: key.to_string() })
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("settling set poisoned").remove(&self.key);
    }
}

/// Keys of recorded buys waiting to be claimed in the catalog.
#[derive(Default)]
pub struct Claims {
    keys: Mutex<Vec<String>>,
    wake: Notify,
}

impl Claims {
    /// Queues `key` for claiming.
    pub fn push(&self, key: String) {
        self.keys.lock().expect("claims poisoned").push(key);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.keys.lock().expect("claims poisoned"))
    }
}

/// How long claims gather before being proposed together.
const CLAIM_LINGER: Duration = Duration::from_millis(20);

/// Proposes queued claims in batches. Runs until the node shuts down. A
/// batch that fails is dropped: its keys stay unclaimed, and the resumer
/// finds their orders recorded and queues them again.
pub async fn claim_recorded(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = node.claims.wake.notified() => {}
        }
        tokio::time::sleep(CLAIM_LINGER).await;
        let keys = node.claims.take();
        if keys.is_empty() {
            continue;
        }
        let n = keys.len();
        let deadline = Instant::now() + node.request_timeout();
        if let Err(e) = node.catalog.write_anywhere(CatalogCommand::Claim { keys }, deadline).await {
            tracing::warn!(error = %e, buys = n, "claiming recorded buys failed; the resumer will retry");
        }
    }
}

/// How long an unclaimed reservation may sit before the resumer takes it
/// over from the request that made it.
const GRACE: Duration = Duration::from_millis(500);
/// How often the orders leader looks for unclaimed reservations.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Unclaimed reservations handled per scan, at most.
const BATCH: usize = 256;

/// While this node leads the orders group, records every unclaimed
/// reservation that no request is handling, and claims those already
/// recorded. Runs until the node shuts down.
pub async fn resume_unclaimed(node: Arc<Node>) {
    // When this leader first saw each unclaimed key, by its own clock.
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
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
        let unclaimed = match Catalog::unclaimed(&node.catalog.view(), BATCH) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "listing unclaimed reservations");
                continue;
            }
        };
        let now = Instant::now();
        first_seen.retain(|k, _| unclaimed.iter().any(|(key, _)| key == k));
        for (key, reservation) in unclaimed {
            let seen = *first_seen.entry(key.clone()).or_insert(now);
            let busy = node.settling.lock().expect("settling set poisoned").contains(&key);
            if busy || now.duration_since(seen) < GRACE {
                continue;
            }
            let node = node.clone();
            tokio::spawn(async move {
                let Some(_claim) = Settling::claim(&node.settling, &key) else { return };
                match Orders::by_key(&node.orders.view(), &key) {
                    Ok(Some(_)) => node.claims.push(key),
                    Ok(None) => {
                        match record(&node, &key, &reservation, Instant::now() + node.request_timeout()).await {
                            Ok(b) => {
                                tracing::info!(order_id = b.order.order_id, status = %b.order.status, "recorded an interrupted buy")
                            }
                            Err(e) => tracing::warn!(error = %e, "could not record an interrupted buy yet"),
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reading orders"),
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
    /// with it the node's runtime) whenever a retried buy met the resumer on
    /// the same buy; had it not deadlocked, the drop would have released the
    /// other task's claim.
    #[test]
    fn a_second_claim_of_a_buy_is_refused_and_keeps_the_first() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let set = Mutex::new(HashSet::new());
            let first = Settling::claim(&set, "k").expect("the first claim succeeds");
            let second = Settling::claim(&set, "k").is_none();
            let kept = set.lock().unwrap().contains("k");
            drop(first);
            let released = set.lock().unwrap().is_empty();
            let _ = done.send((second, kept, released));
        });
        let outcome = finished.recv_timeout(Duration::from_secs(5)).expect("claiming twice deadlocked");
        assert_eq!(outcome, (true, true, true), "(second refused, first kept, released on drop)");
    }

    #[test]
    fn claims_are_taken_in_one_batch() {
        let claims = Claims::default();
        claims.push("a".into());
        claims.push("b".into());
        assert_eq!(claims.take(), vec!["a".to_string(), "b".to_string()]);
        assert!(claims.take().is_empty());
    }
}
