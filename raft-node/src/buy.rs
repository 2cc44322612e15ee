//! Buying: one operation across the two groups, settled in one round of
//! commits.
//!
//! The orders leader coordinates every buy, identified by its idempotency
//! key (the client's, or one the node makes up). Two proposals go out at
//! once, one to each group, and the buy is answered when both are committed:
//!
//! - **Place** a `pending` order in the orders group
//!   ([`OrdersCommand::Place`]), which gives the buy its order id; a key
//!   already placed or recorded returns its order.
//! - **Reserve** stock in the catalog group under the key
//!   ([`CatalogCommand::Reserve`]). The catalog takes the copies if there
//!   are enough, and remembers the reservation and its outcome under the key
//!   whatever happens, so proposing it again, from any node, any number of
//!   times, returns the first outcome and takes stock at most once. A
//!   reservation that needs an order enters the catalog's *unclaimed* set.
//!   This commit decides the buy.
//!
//! Then, off the client's path:
//!
//! - **Settle**: the reservations' outcomes are written into their orders,
//!   many buys per [`OrdersCommand::Settle`].
//! - **Claim**: settled keys are removed from the unclaimed set, many per
//!   [`CatalogCommand::Claim`].
//!
//! Until its settlement is applied, a read that meets a pending order shows
//! it settled from the reservation under its key ([`Orders::resolve`], the
//! same rule apply uses), reading the catalog at lease consistency or
//! stronger, so that a buy answered `201` reads back `confirmed` at once.
//!
//! Why it is safe: the reservation is the only step that touches stock, once
//! per key; the order is derived from the reservation's remembered outcome,
//! once per key; a pending order is only a placeholder, which the
//! reservation under its key decides. So a coordinator may crash, lose its
//! leadership, or time out at any point, and re-running the steps for a key
//! (by a retry, or by a new leader) converges to one order and one stock
//! change. Stock is taken once per confirmed order and never for a rejected
//! one, which gives conservation: initial + restocks − confirmed quantities
//! = stock, once every buy is settled.
//!
//! Liveness: the orders leader runs a resumer (`Coordinator::resume_unsettled`), which settles
//! every unclaimed reservation and every pending order that no request on
//! this node is handling (reserving the stock of a pending order whose
//! reservation was never made), so a buy left half-done by a crash is
//! settled within about a second of a new leader being elected.
//!
//! A buy whose outcome is unknown to the coordinator (a timeout after a
//! step was proposed) is answered `503 unavailable`, never as a failure:
//! retrying with the same `Idempotency-Key` returns the one true outcome.
//!
//! The protocol lives in [`Coordinator`], which owns its state (the keys
//! being handled, the settlement and claim queues) and its background
//! loops, and sees the two groups only through [`Log`]: a write on the
//! leader, a write from anywhere, a linearized read, a view. The node wires
//! it to its Raft groups; the tests in `buy/tests.rs` wire it to logs that
//! drop answers, time out, change leaders and crash at each step, under
//! paused time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::{Consistency, Order, OrderStatus};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, Reservation, ReservationOutcome};
use crate::config::PlantedBug;
use crate::error::{Error, Result};
use crate::orders::{Orders, OrdersCommand, OrdersResponse, Settlement, same_buy, settled};
use crate::raft::{Committed, RaftGroup};
use crate::sm::{StateMachine, View};

/// One group's log as the buy protocol uses it. [`RaftGroup`] is the real
/// one; the tests have logs that fail on purpose.
pub trait Log<S: StateMachine>: Send + Sync + 'static {
    /// A view of this replica's state machine.
    fn view(&self) -> View<'_>;
    /// Whether this node leads the group.
    fn is_leader(&self) -> bool;
    /// The error telling a client to go to the leader.
    fn not_leader(&self) -> Error;
    /// Proposes `cmd` on this node, which must lead the group. `NotLeader`
    /// or `Unavailable`: nothing was proposed; `OutcomeUnknown`: it may
    /// have been applied.
    fn write(&self, cmd: S::Command, deadline: Instant) -> impl Future<Output = Result<Committed<S::Response>>> + Send;
    /// Proposes an idempotent `cmd` wherever the leader is, retrying until
    /// `deadline`.
    fn write_anywhere(
        &self,
        cmd: S::Command,
        deadline: Instant,
    ) -> impl Future<Output = Result<Committed<S::Response>>> + Send;
    /// Waits until this replica reflects every write acknowledged before
    /// the call.
    fn linearize(&self, deadline: Instant) -> impl Future<Output = Result<()>> + Send;
}

impl<S: StateMachine> Log<S> for RaftGroup<S> {
    fn view(&self) -> View<'_> {
        RaftGroup::view(self)
    }
    fn is_leader(&self) -> bool {
        RaftGroup::is_leader(self)
    }
    fn not_leader(&self) -> Error {
        RaftGroup::not_leader(self)
    }
    fn write(&self, cmd: S::Command, deadline: Instant) -> impl Future<Output = Result<Committed<S::Response>>> + Send {
        RaftGroup::write(self, cmd, deadline)
    }
    fn write_anywhere(
        &self,
        cmd: S::Command,
        deadline: Instant,
    ) -> impl Future<Output = Result<Committed<S::Response>>> + Send {
        RaftGroup::write_anywhere(self, cmd, deadline)
    }
    fn linearize(&self, deadline: Instant) -> impl Future<Output = Result<()>> + Send {
        RaftGroup::linearize(self, Consistency::Linearizable, deadline)
    }
}

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

/// What a buyer asks for: `quantity` copies of book `book_id`, for `buyer`
/// (anonymous when `None`), under idempotency key `key` (or a fresh one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The book.
    pub book_id: u64,
    /// Copies.
    pub quantity: u64,
    /// Who buys.
    pub buyer: Option<String>,
    /// The client's idempotency key, if it gave one.
    pub key: Option<String>,
}

/// The buy protocol on one node: it answers buys while the node leads the
/// orders group, and its background loops settle, claim and resume buys.
pub struct Coordinator<C, O> {
    catalog: Arc<C>,
    orders: Arc<O>,
    /// Idempotency keys of buys some task of this node is handling right
    /// now.
    settling: Mutex<HashSet<String>>,
    /// Reserved buys waiting to be written into their orders, each with the
    /// catalog index its reservation was seen at.
    settlements: Queue<(Settlement, u64)>,
    /// Settled buys waiting to be claimed in the catalog.
    claims: Queue<String>,
    /// Buys that looked again because a purge of idempotency keys committed
    /// while they were being decided (see [`crate::retention`]).
    stale_retries: AtomicU64,
    /// How long each background step may take.
    request_timeout: Duration,
    /// Cancelled when the node shuts down: the loops stop.
    shutdown: CancellationToken,
    planted_bug: Option<PlantedBug>,
}

/// The coordinator of a node's real Raft groups.
pub type NodeCoordinator = Coordinator<RaftGroup<Catalog>, RaftGroup<Orders>>;

impl<C: Log<Catalog>, O: Log<Orders>> Coordinator<C, O> {
    /// A coordinator of buys across `catalog` and `orders`; its loops stop
    /// when `shutdown` is cancelled. `planted_bug`: see
    /// [`PlantedBug::SettleWithoutReservation`].
    pub fn new(
        catalog: Arc<C>,
        orders: Arc<O>,
        request_timeout: Duration,
        shutdown: CancellationToken,
        planted_bug: Option<PlantedBug>,
    ) -> Self {
        Coordinator {
            catalog,
            orders,
            settling: Mutex::default(),
            settlements: Queue::default(),
            claims: Queue::default(),
            stale_retries: AtomicU64::new(0),
            request_timeout,
            shutdown,
            planted_bug,
        }
    }

    /// Starts the background loops: settling, claiming, and resuming
    /// interrupted buys while this node leads the orders group.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().resume_unsettled()),
            tokio::spawn(self.clone().settle_reserved()),
            tokio::spawn(self.clone().claim_recorded()),
        ]
    }

    /// Buys that looked again because a purge committed meanwhile.
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries.load(Relaxed)
    }

    /// Buys as `request` asks. This node must lead the orders group.
    pub async fn buy(&self, request: Purchase, deadline: Instant) -> Result<Bought> {
        let Purchase { book_id, quantity, buyer, key } = request;
        if !self.orders.is_leader() {
            return Err(self.orders.not_leader());
        }
        let client_key = key.is_some();
        let key = key.unwrap_or_else(new_key);
        let unknown = |e| unknown_outcome(e, &key, client_key);
        let mut checked_book = false;
        // The order this request has met under the key, if any: should a purge
        // forget the key while the request looks again, that is still its buy.
        let mut known: Option<u64> = None;
        loop {
            // A retry of a buy already recorded: its one outcome. The view this
            // is decided on travels with the proposals (see `crate::retention`).
            let seen = {
                let view = self.orders.view();
                if let Some(bought) = already_recorded(&view, &key, book_id, quantity, buyer.as_deref())? {
                    return outcome(bought);
                }
                match (Orders::by_key(&view, &key)?, known) {
                    (Some(pending), _) => known = Some(pending.order_id),
                    (None, Some(order_id)) => {
                        return forgotten_meanwhile(&view, order_id, book_id, quantity, &buyer);
                    }
                    (None, None) => {}
                }
                self.decided_on(&view)?
            };
            if !checked_book {
                self.ensure_book_exists(book_id, deadline).await?;
                checked_book = true;
            }
            let _claim = Settling::claim(&self.settling, &key);
            // Taken after the look at the orders: a buy placed under a key
            // forgotten by a purge is created after the purge.
            let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let place = OrdersCommand::Place {
                key: key.clone(),
                book_id,
                quantity,
                created_at: created_at.clone(),
                buyer: buyer.clone(),
                seen,
            };
            let reserve =
                CatalogCommand::Reserve { key: key.clone(), book_id, quantity, created_at, buyer: buyer.clone(), seen };
            let (placed, reserved) = futures::future::join(
                self.orders.write(place, deadline),
                self.catalog.write_anywhere(reserve, deadline),
            )
            .await;
            let reserved = reserved.map_err(unknown)?;
            let placed = placed.map_err(unknown)?;
            let order = match placed.response {
                OrdersResponse::Order { order, .. } => {
                    known = Some(order.order_id);
                    Some(order)
                }
                OrdersResponse::Stale => None,
                other => return Err(Error::Internal(format!("unexpected answer to place: {other:?}"))),
            };
            if let Some(order) = &order
                && order.status != OrderStatus::Pending
            {
                // Settled by another attempt under this key in the meantime.
                if !same_buy(order, book_id, quantity, buyer.as_deref()) {
                    return Err(key_reused(&key));
                }
                let catalog_index = match &reserved.response {
                    CatalogResponse::Reservation(r) => r.index,
                    _ => 0,
                };
                return outcome(Bought { order: order.clone(), orders_index: placed.index, catalog_index });
            }
            let reservation = match reserved.response {
                CatalogResponse::Reservation(r) => Some(r),
                CatalogResponse::Stale => None,
                CatalogResponse::KeyReused => return Err(key_reused(&key)),
                other => return Err(Error::Internal(format!("unexpected answer to reserve: {other:?}"))),
            };
            let (Some(order), Some(reservation)) = (order, reservation) else {
                // Decided on a view older than a purge of idempotency keys that
                // committed meanwhile: look again. Whatever either proposal made
                // (a pending order, a reservation) belongs to this key's buy,
                // which the next round finds.
                if Instant::now() >= deadline {
                    return Err(unknown(Error::OutcomeUnknown("a purge of idempotency keys kept intervening".into())));
                }
                self.stale_retries.fetch_add(1, Relaxed);
                continue;
            };
            // The reservation decides the order placed under its key (even one
            // placed for another buy by a request reusing the key): this is the
            // order the settlement will write, and what reads show until then.
            let settlement = Settlement::of(&key, &reservation);
            let order = settled(order, &settlement);
            self.settlements.push((settlement, if seen > 0 { reserved.index } else { 0 }));
            if reservation.outcome == ReservationOutcome::NoSuchBook {
                return Err(Error::NotFound(format!("no book with id {book_id}")));
            }
            return outcome(Bought { order, orders_index: placed.index, catalog_index: reservation.index });
        }
    }

    /// The orders index a proposal says it was decided on: the index of
    /// `view`, once any idempotency key was ever purged (seen by either
    /// group's replica here), and 0 before, which keeps commands in the layout
    /// earlier versions read (see [`crate::compat`]).
    fn decided_on(&self, view: &View<'_>) -> Result<u64> {
        if self.fenced(view)? { Ok(view.applied_index()?) } else { Ok(0) }
    }

    /// Whether any idempotency key was ever purged, as `orders` or this
    /// node's catalog replica shows.
    fn fenced(&self, orders: &View<'_>) -> Result<bool> {
        Ok(Orders::fenced(orders)? || Catalog::fenced(&self.catalog.view())?)
    }

    /// The catalog index a settlement says its reservation was seen alive at:
    /// `index`, once any key was ever purged, else 0 (as
    /// [`Coordinator::decided_on`]).
    fn catalog_seen(&self, index: u64) -> Result<u64> {
        Ok(if self.fenced(&self.orders.view())? { index } else { 0 })
    }

    /// Fails with `NotFound`, writing nothing, unless the book exists. A miss on
    /// the local replica may just be lag, so it is confirmed with a linearizable
    /// read; a hit is final, since books are never deleted.
    async fn ensure_book_exists(&self, book_id: u64, deadline: Instant) -> Result<()> {
        if Catalog::book(&self.catalog.view(), book_id)?.is_some() {
            return Ok(());
        }
        self.catalog.linearize(deadline).await?;
        match Catalog::book(&self.catalog.view(), book_id)? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("no book with id {book_id}"))),
        }
    }

    /// Records the order of reservation `r`, seen alive at catalog index
    /// `seen_at` (settling the order placed under its key, if any), then
    /// queues its claim.
    async fn record(&self, key: &str, r: &Reservation, seen_at: u64, deadline: Instant) -> Result<Bought> {
        let catalog_seen = self.catalog_seen(seen_at)?;
        let written = self.orders.write(Settlement::of(key, r).into_record(catalog_seen), deadline).await?;
        match written.response {
            OrdersResponse::Order { order, existing } => {
                self.claims.push(key.to_string());
                // Recorded earlier by another attempt: report that attempt's
                // reservation index (the same reservation, remembered by key).
                let catalog_index = if existing {
                    Orders::reservation_index(&self.orders.view(), order.order_id)?.unwrap_or(r.index)
                } else {
                    r.index
                };
                Ok(Bought { order, orders_index: written.index, catalog_index })
            }
            OrdersResponse::KeyReused { .. } => Err(key_reused(key)),
            OrdersResponse::Stale => Err(Error::Unavailable(
                "the reservation was read before a purge of idempotency keys; read again".into(),
            )),
            other => Err(Error::Internal(format!("unexpected answer to record: {other:?}"))),
        }
    }

    /// Writes queued settlements into their orders in batches, then queues
    /// their claims, until shutdown. A batch that fails is dropped: its
    /// reservations stay unclaimed, and the resumer settles them.
    async fn settle_reserved(self: Arc<Self>) {
        while let Some(batch) = self.settlements.next_batch(&self.shutdown).await {
            // One view for the lot: the oldest any of them was seen at.
            let catalog_seen = batch.iter().map(|(_, seen)| *seen).min().unwrap_or(0);
            let records: Vec<Settlement> = batch.into_iter().map(|(s, _)| s).collect();
            let keys: Vec<String> = records.iter().map(|s| s.key.clone()).collect();
            let deadline = Instant::now() + self.request_timeout;
            // Settlements refused as stale are skipped by the state machine and
            // stay unclaimed; the claim of those keys then finds nothing to do
            // until the resumer records them.
            match self.orders.write(OrdersCommand::Settle { records, catalog_seen }, deadline).await {
                Ok(_) => keys.into_iter().for_each(|k| self.claims.push(k)),
                Err(e) => tracing::warn!(error = %e, buys = keys.len(), "settling buys failed; the resumer will retry"),
            }
        }
    }

    /// Proposes queued claims in batches, until shutdown. A batch that fails
    /// is dropped: its keys stay unclaimed, and the resumer finds their
    /// orders settled and queues them again.
    async fn claim_recorded(self: Arc<Self>) {
        while let Some(keys) = self.claims.next_batch(&self.shutdown).await {
            let n = keys.len();
            let deadline = Instant::now() + self.request_timeout;
            if let Err(e) = self.catalog.write_anywhere(CatalogCommand::Claim { keys }, deadline).await {
                tracing::warn!(error = %e, buys = n, "claiming recorded buys failed; the resumer will retry");
            }
        }
    }

    /// While this node leads the orders group, settles every buy that no
    /// request is handling: records each unclaimed reservation (and claims
    /// those already settled), and reserves and settles each pending order.
    /// Runs until shutdown.
    async fn resume_unsettled(self: Arc<Self>) {
        // When this leader first saw each unsettled key, by its own clock.
        let mut first_seen: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(SCAN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.orders.is_leader() {
                first_seen.clear();
                continue;
            }
            let unsettled = match self.unsettled() {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "listing unsettled buys");
                    continue;
                }
            };
            let now = Instant::now();
            let keys: HashSet<&str> = unsettled.iter().map(Unsettled::key).collect();
            first_seen.retain(|k, _| keys.contains(k.as_str()));
            for buy in unsettled {
                let seen = *first_seen.entry(buy.key().to_string()).or_insert(now);
                let busy = self.settling.lock().expect("settling set poisoned").contains(buy.key());
                if busy || now.duration_since(seen) < GRACE {
                    continue;
                }
                tokio::spawn(self.clone().resume(buy));
            }
        }
    }

    fn unsettled(&self) -> Result<Vec<Unsettled>> {
        let catalog = self.catalog.view();
        let at = catalog.applied_index()?;
        let mut out: Vec<Unsettled> =
            Catalog::unclaimed(&catalog, BATCH)?.into_iter().map(|(key, r)| Unsettled::Reserved(key, r, at)).collect();
        let orders = self.orders.view();
        let seen = self.decided_on(&orders)?;
        let placed = Orders::pending(&orders, BATCH)?;
        out.extend(placed.into_iter().filter(|o| o.idempotency_key.is_some()).map(|o| Unsettled::Placed(o, seen)));
        Ok(out)
    }

    /// Finishes one buy, unless a request or another resumer task holds it.
    async fn resume(self: Arc<Self>, buy: Unsettled) {
        let key = buy.key().to_string();
        let Some(_claim) = Settling::claim(&self.settling, &key) else { return };
        let deadline = Instant::now() + self.request_timeout;
        let (reservation, seen_at) = match buy {
            Unsettled::Reserved(_, r, seen_at) => (r, seen_at),
            Unsettled::Placed(order, _) if self.planted_bug == Some(PlantedBug::SettleWithoutReservation) => {
                // The planted bug: a pending order is taken as reserved, and
                // no stock is taken for it.
                let made_up = Reservation {
                    book_id: order.book_id,
                    quantity: order.quantity,
                    created_at: order.created_at.clone(),
                    outcome: ReservationOutcome::Reserved { unit_price_cents: order.unit_price_cents },
                    index: 0,
                    claim_seq: None,
                    buyer: order.buyer.clone(),
                };
                (made_up, 0)
            }
            Unsettled::Placed(order, seen) => {
                // Reserving again is harmless: the catalog returns the first
                // reservation under the key, if there is one.
                let reserve = CatalogCommand::Reserve {
                    key: key.clone(),
                    book_id: order.book_id,
                    quantity: order.quantity,
                    created_at: order.created_at.clone(),
                    buyer: order.buyer.clone(),
                    seen,
                };
                match self.catalog.write_anywhere(reserve, deadline).await {
                    Ok(w) => match w.response {
                        CatalogResponse::Reservation(r) => (r, w.index),
                        // Reserved for another buy under the same key: that
                        // reservation decides the order, once this replica has it.
                        CatalogResponse::KeyReused => {
                            let view = self.catalog.view();
                            match (Catalog::reservation(&view, &key), view.applied_index()) {
                                (Ok(Some(r)), Ok(at)) => (r, at),
                                (Ok(None), _) => return,
                                (Err(e), _) | (_, Err(e)) => {
                                    return tracing::error!(error = %e, "reading a reservation");
                                }
                            }
                        }
                        // Decided on a view older than a purge: the next scan looks again.
                        CatalogResponse::Stale => return,
                        other => return tracing::error!(response = ?other, "unexpected answer to reserve"),
                    },
                    Err(e) => return tracing::warn!(error = %e, "could not reserve a pending order's stock yet"),
                }
            }
        };
        match Orders::by_key(&self.orders.view(), &key) {
            Ok(Some(o)) if o.status != OrderStatus::Pending => self.claims.push(key),
            Ok(_) => match self.record(&key, &reservation, seen_at, deadline).await {
                Ok(b) => {
                    tracing::info!(order_id = b.order.order_id, status = %b.order.status, "settled an interrupted buy")
                }
                Err(e) => tracing::warn!(error = %e, "could not settle an interrupted buy yet"),
            },
            Err(e) => tracing::error!(error = %e, "reading orders"),
        }
    }
}

/// The answer to a request that met order `order_id` under its key, and
/// then found the key forgotten by a retention purge: the purge only
/// forgets settled buys, so the order is settled, and it is this request's.
fn forgotten_meanwhile(
    view: &View<'_>,
    order_id: u64,
    book_id: u64,
    quantity: u64,
    buyer: &Option<String>,
) -> Result<Bought> {
    match Orders::order(view, order_id)? {
        Some(order) if order.status != OrderStatus::Pending => {
            if !same_buy(&order, book_id, quantity, buyer.as_deref()) {
                return Err(Error::IdempotencyKeyReused(format!(
                    "the key's order {order_id} was for a different book, quantity or buyer"
                )));
            }
            outcome(Bought { order, orders_index: view.applied_index()?, catalog_index: 0 })
        }
        _ => Err(Error::Internal(format!("order {order_id} lost its key while unsettled"))),
    }
}

fn key_reused(key: &str) -> Error {
    Error::IdempotencyKeyReused(format!("Idempotency-Key {key:?} was used for a different book, quantity or buyer"))
}

/// The order already settled under `key`, in `view` of the orders.
fn already_recorded(
    view: &View<'_>,
    key: &str,
    book_id: u64,
    quantity: u64,
    buyer: Option<&str>,
) -> Result<Option<Bought>> {
    let Some(order) = Orders::by_key(view, key)?.filter(|o| o.status != OrderStatus::Pending) else {
        return Ok(None);
    };
    if !same_buy(&order, book_id, quantity, buyer) {
        return Err(key_reused(key));
    }
    let catalog_index = Orders::reservation_index(view, order.order_id)?.unwrap_or(0);
    Ok(Some(Bought { order, orders_index: view.applied_index()?, catalog_index }))
}

/// When a step may have been applied but its answer was lost, the outcome is
/// unknown to this request: it is reported as such (`503`, `write_outcome`
/// `unknown`), never as a failed buy, with the key to retry under.
fn unknown_outcome(e: Error, key: &str, client_key: bool) -> Error {
    match e {
        Error::NotLeader { .. } | Error::Unavailable(_) | Error::OutcomeUnknown(_) => {
            let retry = if client_key {
                "retry with the same Idempotency-Key to learn its outcome".to_string()
            } else {
                format!("retry with Idempotency-Key: {key} to learn its outcome")
            };
            Error::OutcomeUnknown(format!("the buy was not settled in time ({e}); {retry}"))
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

/// Marks a buy as being handled by this node for as long as it lives.
struct Settling<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> Settling<'a> {
    /// Claims `key` in `set` (the coordinator's `settling`), or returns
    /// `None` when another task holds it. The lock is released before a
    /// claim is built: a claim's `Drop` takes the same lock.
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

/// Work gathered for a background task to propose in batches: settlements
/// of buys, or keys to claim.
struct Queue<T> {
    items: Mutex<Vec<T>>,
    wake: Notify,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue { items: Mutex::new(Vec::new()), wake: Notify::new() }
    }
}

impl<T> Queue<T> {
    /// Queues `item`.
    fn push(&self, item: T) {
        self.items.lock().expect("queue poisoned").push(item);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.items.lock().expect("queue poisoned"))
    }

    /// Waits for the first item, lets more gather for `LINGER`, then takes
    /// them all; `None` once `shutdown` is cancelled.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<T>> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.wake.notified() => {}
            }
            tokio::time::sleep(LINGER).await;
            let items = self.take();
            if !items.is_empty() {
                return Some(items);
            }
        }
    }
}

/// How long settlements and claims gather before being proposed together.
const LINGER: Duration = Duration::from_millis(20);

/// How long an unsettled buy may sit before the resumer takes it over from
/// the request that made it.
const GRACE: Duration = Duration::from_millis(500);
/// How often the orders leader looks for unsettled buys.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Unclaimed reservations, and pending orders, handled per scan, at most.
const BATCH: usize = 256;

/// A buy the resumer may have to finish, with the view it was found in.
enum Unsettled {
    /// A reservation not yet claimed, seen at this catalog index: its
    /// order may be pending or missing.
    Reserved(String, Reservation, u64),
    /// A pending order, and the orders index it was decided on (as
    /// [`Coordinator::decided_on`]): its reservation may be missing.
    Placed(Order, u64),
}

impl Unsettled {
    fn key(&self) -> &str {
        match self {
            Unsettled::Reserved(key, ..) => key,
            Unsettled::Placed(order, _) => order.idempotency_key.as_deref().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests;
