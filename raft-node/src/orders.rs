//! The orders group: the record of every buy.
//!
//! # Commands
//! A buy places its order with [`OrdersCommand::Place`] while its stock is
//! reserved in the catalog, both at once (see [`crate::buy`]): the order is
//! `pending` until the reservation's outcome is written into it by
//! [`OrdersCommand::Settle`] (many buys per command, off the client's path)
//! or [`OrdersCommand::Record`] (one buy; it also writes an order that was
//! never placed, in its final state).
//!
//! # Invariants
//! - One idempotency key maps to at most one order: `Place` with a known key
//!   returns that order and creates nothing; `Record` with a key whose order
//!   is settled returns it (or refuses, if the key was used for a different
//!   book or quantity).
//! - A pending order is a placeholder for the reservation under its key: the
//!   reservation decides its outcome, and its book and quantity too, should
//!   another request have placed the key for a different buy. [`settled`] is
//!   that one rule, used both by apply and by reads that meet a pending order.
//! - An order's outcome never changes once settled.
//! - An order's buyer is the one its reservation names, like its book and
//!   quantity: a key reused with another buyer is refused like one reused
//!   with another quantity, and a settled order's buyer never changes.
//! - Order ids are assigned by the state machine from a counter, so every
//!   replica assigns the same id to the same entry.
//!
//! # Layout in `orders_sm`
//! | key | value |
//! |---|---|
//! | `o` order_id | [`Order`] |
//! | `k` idempotency key | order id |
//! | `h` book_id order_id | (empty): a book's order history |
//! | `x` order_id | catalog index of the order's reservation |
//! | `p` order_id | (empty): the pending orders |
//! | `b` buyer 0x00 order_id | (empty): a buyer's order history |
//! | `e` created_at 0x00 order_id | idempotency key: the retained keys of settled orders, oldest first |
//! | `c` name | counters (`next_order_id`, `pending_floor`: every pending order's id is ≥ it; `forget_fence`, `catalog_fence`, `retained_keys`, `forgotten_keys`: see [`crate::retention`]) |
//!
//! # Retention
//! The idempotency rows of a settled buy (`k`, `x`, `e`) are kept for the
//! retention window, then [`OrdersCommand::Forget`] removes them; the
//! order and its history rows stay. A pending order is never forgotten
//! (only settled orders have an `e` row). Commands decided on a view older
//! than the last purge, that would create or settle an order, are refused
//! as [`OrdersResponse::Stale`]: the argument is in [`crate::retention`].

pub mod compat;

use std::fmt;
use std::io;

use bazar_api::events::{book_orders_key, buyer_orders_key, order_key};
use bazar_api::{Group, Order, OrderFilter, OrderStatus};
use serde::{Deserialize, Serialize};

use crate::catalog::{Reservation, ReservationOutcome};
use crate::sm::{Applied, StateMachine, Txn, View};
use crate::store::{be, from_be};
use compat::decode_order;

openraft::declare_raft_types!(
    /// openraft types of the orders group.
    pub OrdersTypes:
        D = OrdersCommand,
        R = OrdersResponse,
        Node = crate::incarnation::Member,
);

/// A change to the orders.
///
/// Stored as [`crate::orders::compat::OrdersWire`], which also reads the layouts of
/// earlier versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "crate::orders::compat::OrdersWire", into = "crate::orders::compat::OrdersWire")]
pub enum OrdersCommand {
    /// Record a buy whose reservation has an outcome (or find the order
    /// recorded earlier under the same idempotency key).
    Record {
        /// The buy's idempotency key.
        key: String,
        /// The book.
        book_id: u64,
        /// Copies.
        quantity: u64,
        /// When the coordinator started the buy (RFC 3339), carried in the
        /// command so that apply stays deterministic.
        created_at: String,
        /// How the reservation ended.
        outcome: Outcome,
        /// The catalog log index at which the reservation was committed, kept
        /// so that any later answer about this order can tell a client which
        /// catalog index reflects it (read-your-writes).
        catalog_index: u64,
        /// Who bought, as the reservation names it.
        buyer: Option<String>,
        /// The catalog log index at which the proposer saw the reservation
        /// alive (0: no purge had happened in its view); see
        /// [`crate::retention`] for the fence it is checked against.
        catalog_seen: u64,
    },
    /// Place a `pending` order for a buy whose reservation is being made (or
    /// find the order placed or recorded earlier under the same key).
    Place {
        /// The buy's idempotency key.
        key: String,
        /// The book.
        book_id: u64,
        /// Copies.
        quantity: u64,
        /// When the coordinator started the buy (RFC 3339).
        created_at: String,
        /// Who buys.
        buyer: Option<String>,
        /// The orders applied index of the view in which the coordinator
        /// found no settled order under the key (0: no purge had happened
        /// in its view); see [`crate::retention`].
        seen: u64,
    },
    /// Record many buys at once, each exactly as [`OrdersCommand::Record`].
    Settle {
        /// The buys, in order.
        records: Vec<Settlement>,
        /// The oldest catalog index at which the proposer saw one of their
        /// reservations (as `catalog_seen` of [`OrdersCommand::Record`]).
        catalog_seen: u64,
    },
    /// Forget the idempotency keys of settled buys past the retention
    /// window, after the catalog purged their reservations
    /// ([`crate::catalog::CatalogCommand::Purge`]); see [`crate::retention`].
    /// The orders stay; a key forgotten here is unknown to later buys.
    Forget {
        /// The catalog log index at which the reservations were purged:
        /// from now on, a settlement of a reservation seen before it is
        /// refused as stale.
        catalog_index: u64,
        /// The keys, each with the order it must still name.
        keys: Vec<(String, u64)>,
    },
}

/// A buy's reservation, to be written into its order: the fields of
/// [`OrdersCommand::Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The buy's idempotency key.
    pub key: String,
    /// The book reserved.
    pub book_id: u64,
    /// Copies reserved.
    pub quantity: u64,
    /// When the coordinator started the buy (RFC 3339).
    pub created_at: String,
    /// How the reservation ended.
    pub outcome: Outcome,
    /// The catalog log index at which the reservation was committed.
    pub catalog_index: u64,
    /// Who bought, as the reservation names it.
    pub buyer: Option<String>,
}

impl Settlement {
    /// The settlement of the reservation made under `key`.
    pub fn of(key: &str, r: &Reservation) -> Settlement {
        Settlement {
            key: key.to_string(),
            book_id: r.book_id,
            quantity: r.quantity,
            created_at: r.created_at.clone(),
            outcome: Outcome::of(&r.outcome),
            catalog_index: r.index,
            buyer: r.buyer.clone(),
        }
    }

    /// The command recording this one buy.
    pub fn into_record(self, catalog_seen: u64) -> OrdersCommand {
        let Settlement { key, book_id, quantity, created_at, outcome, catalog_index, buyer } = self;
        OrdersCommand::Record { key, book_id, quantity, created_at, outcome, catalog_index, buyer, catalog_seen }
    }
}

impl fmt::Display for OrdersCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrdersCommand::Record { book_id, quantity, outcome, .. } => {
                write!(f, "record(book {book_id}, {quantity}, {outcome:?})")
            }
            OrdersCommand::Place { book_id, quantity, .. } => write!(f, "place(book {book_id}, {quantity})"),
            OrdersCommand::Settle { records, .. } => write!(f, "settle({} buys)", records.len()),
            OrdersCommand::Forget { keys, .. } => write!(f, "forget({} keys)", keys.len()),
        }
    }
}

/// How a buy ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Stock was reserved at this price.
    Confirmed {
        /// Price per copy.
        unit_price_cents: u64,
    },
    /// Stock could not be reserved.
    Rejected {
        /// `out_of_stock` or `not_found`.
        reason: String,
    },
}

impl Outcome {
    /// The order outcome of a reservation outcome.
    pub fn of(r: &ReservationOutcome) -> Outcome {
        match r {
            ReservationOutcome::Reserved { unit_price_cents } => {
                Outcome::Confirmed { unit_price_cents: *unit_price_cents }
            }
            ReservationOutcome::OutOfStock { .. } => Outcome::Rejected { reason: "out_of_stock".into() },
            ReservationOutcome::NoSuchBook => Outcome::Rejected { reason: "not_found".into() },
        }
    }
}

/// `order` with the reservation `s` written into it: its outcome (status,
/// price, total, reason), and the reservation's book, quantity, buyer and
/// time.
/// The one rule that settles a pending order, in apply and in reads.
pub fn settled(mut order: Order, s: &Settlement) -> Order {
    let (status, unit_price_cents, reason) = match &s.outcome {
        Outcome::Confirmed { unit_price_cents } => (OrderStatus::Confirmed, *unit_price_cents, None),
        Outcome::Rejected { reason } => (OrderStatus::Rejected, 0, Some(reason.clone())),
    };
    order.book_id = s.book_id;
    order.quantity = s.quantity;
    order.created_at = s.created_at.clone();
    order.status = status;
    order.unit_price_cents = unit_price_cents;
    // Bounded by MAX_PRICE_CENTS * MAX_QUANTITY, far below u64::MAX.
    order.total_cents = unit_price_cents.saturating_mul(s.quantity);
    order.reason = reason;
    order.idempotency_key = Some(s.key.clone());
    order.buyer = s.buyer.clone();
    order
}

/// Whether a settled `order` was made for the buy `s` describes: the same
/// book, quantity and buyer. Otherwise the buy reuses the order's key.
pub fn same_buy(order: &Order, book_id: u64, quantity: u64, buyer: Option<&str>) -> bool {
    order.book_id == book_id && order.quantity == quantity && order.buyer.as_deref() == buyer
}

/// What an orders command returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersResponse {
    /// Nothing to report (blank and membership entries).
    #[default]
    Done,
    /// The order after the command; `existing` when `Record` found an order
    /// settled earlier under the same idempotency key, or `Place` found any
    /// order under it.
    Order {
        /// The order.
        order: Order,
        /// Whether it existed before this command.
        existing: bool,
    },
    /// The idempotency key was used for a different book, quantity or buyer.
    KeyReused {
        /// The order made under that key.
        order_id: u64,
    },
    /// Refused, nothing changed: the command was decided on a view older
    /// than the last purge of idempotency keys (see [`crate::retention`]);
    /// the proposer looks again and retries.
    Stale,
    /// How many keys a [`OrdersCommand::Forget`] forgot.
    Forgot {
        /// Keys forgotten (those already gone are not counted).
        keys: u64,
    },
}

/// A settled buy whose idempotency key is past the retention window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredKey {
    /// The key.
    pub key: String,
    /// Its order.
    pub order_id: u64,
    /// The catalog index of the order's reservation (which names it there).
    pub reservation_index: u64,
}

/// The orders state machine.
pub struct Orders;

const COUNTER_NEXT_ID: &[u8] = b"cnext_order_id";
/// Every pending order's id is at least this.
const COUNTER_PENDING_FLOOR: &[u8] = b"cpending_floor";
/// Orders index of the last `Forget`: a `Place` decided on an older view
/// must not create an order.
const COUNTER_FORGET_FENCE: &[u8] = b"cforget_fence";
/// Catalog index of the purge before the last `Forget`: a settlement of a
/// reservation seen before it must not create or settle an order.
const COUNTER_CATALOG_FENCE: &[u8] = b"ccatalog_fence";
/// Keys with an `e` row.
const COUNTER_RETAINED: &[u8] = b"cretained_keys";
/// Keys forgotten, in total.
const COUNTER_FORGOTTEN: &[u8] = b"cforgotten_keys";

fn order_row(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'o');
    k.extend_from_slice(&be(id));
    k
}

fn key_row(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'k');
    k.extend_from_slice(key.as_bytes());
    k
}

fn history_row(book_id: u64, order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'h');
    k.extend_from_slice(&be(book_id));
    k.extend_from_slice(&be(order_id));
    k
}

fn reservation_index_row(order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'x');
    k.extend_from_slice(&be(order_id));
    k
}

fn pending_row(order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'p');
    k.extend_from_slice(&be(order_id));
    k
}

fn expiry_row(created_at: &str, order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(created_at.len() + 10);
    k.push(b'e');
    k.extend_from_slice(created_at.as_bytes());
    k.push(0);
    k.extend_from_slice(&be(order_id));
    k
}

fn buyer_row(buyer: &str, order_id: u64) -> Vec<u8> {
    let mut k = buyer_prefix(buyer);
    k.extend_from_slice(&be(order_id));
    k
}

/// Buyer names never contain 0x00 (see `bazar_api::validate_buyer`), so the
/// separator keeps one buyer's rows apart from those of a longer name.
fn buyer_prefix(buyer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(buyer.len() + 10);
    k.push(b'b');
    k.extend_from_slice(buyer.as_bytes());
    k.push(0);
    k
}

fn keys_of(order: &Order) -> Vec<String> {
    let mut keys = vec![order_key(order.order_id), book_orders_key(order.book_id)];
    if let Some(buyer) = &order.buyer {
        keys.push(buyer_orders_key(buyer));
    }
    keys
}

/// The order row `id`, in any layout a version wrote.
fn get_order(txn: &Txn<'_>, id: u64) -> io::Result<Option<Order>> {
    txn.get_with(&order_row(id), decode_order)
}

impl StateMachine for Orders {
    type Command = OrdersCommand;
    type Response = OrdersResponse;
    type C = OrdersTypes;
    const GROUP: Group = Group::Orders;

    fn row_kind(prefix: u8) -> &'static str {
        match prefix {
            b'o' => "orders",
            b'h' => "book_history",
            b'b' => "buyer_history",
            b'k' => "idempotency_keys",
            b'x' => "reservation_indexes",
            b'e' => "key_expiry",
            b'p' => "pending",
            b'c' => "counters",
            _ => "other",
        }
    }

    fn apply(txn: &mut Txn<'_>, index: u64, cmd: &OrdersCommand) -> io::Result<Applied<OrdersResponse>> {
        match cmd {
            OrdersCommand::Record {
                key,
                book_id,
                quantity,
                created_at,
                outcome,
                catalog_index,
                buyer,
                catalog_seen,
            } => {
                let s = Settlement {
                    key: key.clone(),
                    book_id: *book_id,
                    quantity: *quantity,
                    created_at: created_at.clone(),
                    outcome: outcome.clone(),
                    catalog_index: *catalog_index,
                    buyer: buyer.clone(),
                };
                let mut keys = Vec::new();
                let response = record(txn, &s, *catalog_seen, &mut keys)?;
                raise_pending_floor(txn)?;
                Ok(Applied { response, keys })
            }
            OrdersCommand::Settle { records, catalog_seen } => {
                let mut keys = Vec::new();
                for s in records {
                    record(txn, s, *catalog_seen, &mut keys)?;
                }
                raise_pending_floor(txn)?;
                Ok(Applied { response: OrdersResponse::Done, keys })
            }
            OrdersCommand::Forget { catalog_index, keys } => {
                let forgot = forget(txn, index, *catalog_index, keys)?;
                Ok(Applied { response: OrdersResponse::Forgot { keys: forgot }, keys: Vec::new() })
            }
            OrdersCommand::Place { key, book_id, quantity, created_at, buyer, seen } => {
                if let Some(order) = by_key(txn, key)? {
                    return Ok(Applied { response: OrdersResponse::Order { order, existing: true }, keys: Vec::new() });
                }
                if *seen < counter(txn, COUNTER_FORGET_FENCE)? {
                    // The coordinator looked before the key may have been
                    // forgotten: the order it would create could be a
                    // second one for a buy it did not see settled.
                    return Ok(Applied { response: OrdersResponse::Stale, keys: Vec::new() });
                }
                let order = Order {
                    order_id: txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1),
                    book_id: *book_id,
                    quantity: *quantity,
                    unit_price_cents: 0,
                    total_cents: 0,
                    status: OrderStatus::Pending,
                    reason: None,
                    created_at: created_at.clone(),
                    idempotency_key: Some(key.clone()),
                    buyer: buyer.clone(),
                };
                insert(txn, &order)?;
                txn.put(pending_row(order.order_id), Vec::new());
                Ok(Applied { keys: keys_of(&order), response: OrdersResponse::Order { order, existing: false } })
            }
        }
    }
}

/// The order under idempotency key `key`, inside an apply.
fn by_key(txn: &Txn<'_>, key: &str) -> io::Result<Option<Order>> {
    let Some(order_id) = txn.get_value::<u64>(&key_row(key))? else {
        return Ok(None);
    };
    let order = get_order(txn, order_id)?
        .ok_or_else(|| io::Error::other(format!("idempotency key points at missing order {order_id}")))?;
    Ok(Some(order))
}

/// Writes a new order with the next id, and its key and history rows.
fn insert(txn: &mut Txn<'_>, order: &Order) -> io::Result<()> {
    txn.put_value(order_row(order.order_id), order)?;
    if let Some(key) = &order.idempotency_key {
        txn.put_value(key_row(key), &order.order_id)?;
    }
    txn.put(history_row(order.book_id, order.order_id), Vec::new());
    if let Some(buyer) = &order.buyer {
        txn.put(buyer_row(buyer, order.order_id), Vec::new());
    }
    txn.put_value(COUNTER_NEXT_ID.to_vec(), &(order.order_id + 1))
}

/// Moves the pending floor past the settled front of the pending orders.
fn raise_pending_floor(txn: &mut Txn<'_>) -> io::Result<()> {
    let next = txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1);
    txn.raise_floor(COUNTER_PENDING_FLOOR, 1, next, pending_row)
}

/// Records one buy: settles its pending order, or writes its order in its
/// final state when none was placed, or finds the order settled earlier.
/// Pushes the change-event keys of what it wrote onto `keys`.
fn record(txn: &mut Txn<'_>, s: &Settlement, catalog_seen: u64, keys: &mut Vec<String>) -> io::Result<OrdersResponse> {
    let found = by_key(txn, &s.key)?;
    if let Some(order) = &found
        && order.status != OrderStatus::Pending
    {
        if !same_buy(order, s.book_id, s.quantity, s.buyer.as_deref()) {
            return Ok(OrdersResponse::KeyReused { order_id: order.order_id });
        }
        return Ok(OrdersResponse::Order { order: order.clone(), existing: true });
    }
    if catalog_seen < counter(txn, COUNTER_CATALOG_FENCE)? {
        // The reservation was seen before the last purge: it may be one
        // whose order was settled and forgotten, which must not decide a
        // second order.
        return Ok(OrdersResponse::Stale);
    }
    let order = match found {
        Some(pending) => {
            let placed_for = pending.book_id;
            let placed_by = pending.buyer.clone();
            let order = settled(pending, s);
            if order.book_id != placed_for {
                txn.delete(history_row(placed_for, order.order_id));
                txn.put(history_row(order.book_id, order.order_id), Vec::new());
                keys.push(book_orders_key(placed_for));
            }
            if order.buyer != placed_by {
                if let Some(buyer) = &placed_by {
                    txn.delete(buyer_row(buyer, order.order_id));
                    keys.push(buyer_orders_key(buyer));
                }
                if let Some(buyer) = &order.buyer {
                    txn.put(buyer_row(buyer, order.order_id), Vec::new());
                }
            }
            txn.delete(pending_row(order.order_id));
            txn.put_value(order_row(order.order_id), &order)?;
            order
        }
        None => {
            // Never placed: settle an empty order with the next id; `settled`
            // fills in everything else from the reservation.
            let order_id = txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1);
            let blank = Order {
                order_id,
                book_id: 0,
                quantity: 0,
                unit_price_cents: 0,
                total_cents: 0,
                status: OrderStatus::Pending,
                reason: None,
                created_at: String::new(),
                idempotency_key: None,
                buyer: None,
            };
            let order = settled(blank, s);
            insert(txn, &order)?;
            order
        }
    };
    txn.put_value(reservation_index_row(order.order_id), &s.catalog_index)?;
    txn.put_value(expiry_row(&order.created_at, order.order_id), &s.key)?;
    let retained = counter(txn, COUNTER_RETAINED)?;
    txn.put_value(COUNTER_RETAINED.to_vec(), &(retained + 1))?;
    keys.extend(keys_of(&order));
    Ok(OrdersResponse::Order { order, existing: false })
}

fn counter(txn: &Txn<'_>, name: &[u8]) -> io::Result<u64> {
    Ok(txn.get_value::<u64>(name)?.unwrap_or(0))
}

/// Forgets the idempotency rows of `keys` (each with the order it must
/// still name, and only if that order is settled), and raises the fences:
/// commands decided before this entry (`index`) that would create an
/// order, or settle one from a reservation seen before `catalog_index`,
/// are refused from now on. Returns how many keys were forgotten.
fn forget(txn: &mut Txn<'_>, index: u64, catalog_index: u64, keys: &[(String, u64)]) -> io::Result<u64> {
    let mut forgot = 0;
    for (key, order_id) in keys {
        if txn.get_value::<u64>(&key_row(key))? != Some(*order_id) {
            continue;
        }
        let Some(order) = get_order(txn, *order_id)? else { continue };
        if order.status == OrderStatus::Pending {
            // Never: only settled orders are listed as expired. Kept as a
            // guard, since forgetting an unsettled buy could settle it twice.
            continue;
        }
        txn.delete(key_row(key));
        txn.delete(reservation_index_row(*order_id));
        txn.delete(expiry_row(&order.created_at, *order_id));
        forgot += 1;
    }
    let retained = counter(txn, COUNTER_RETAINED)?;
    txn.put_value(COUNTER_RETAINED.to_vec(), &retained.saturating_sub(forgot))?;
    let forgotten = counter(txn, COUNTER_FORGOTTEN)?;
    txn.put_value(COUNTER_FORGOTTEN.to_vec(), &(forgotten + forgot))?;
    txn.put_value(COUNTER_FORGET_FENCE.to_vec(), &index)?;
    let fence = counter(txn, COUNTER_CATALOG_FENCE)?.max(catalog_index);
    txn.put_value(COUNTER_CATALOG_FENCE.to_vec(), &fence).map(|()| forgot)
}

/// Reads of the orders, from a consistent view.
impl Orders {
    /// The order with id `id`.
    pub fn order(view: &View<'_>, id: u64) -> io::Result<Option<Order>> {
        view.get_with(&order_row(id), decode_order)
    }

    /// The catalog index at which a resolved order's reservation was committed.
    pub fn reservation_index(view: &View<'_>, order_id: u64) -> io::Result<Option<u64>> {
        view.get(&reservation_index_row(order_id))
    }

    /// Up to `limit` pending orders, oldest first.
    pub fn pending(view: &View<'_>, limit: usize) -> io::Result<Vec<Order>> {
        let mut ids = Vec::new();
        view.scan(b"p", &pending_row(Orders::pending_floor(view)?), |key, _| {
            ids.push(from_be(&key[1..]).ok_or_else(|| io::Error::other("bad pending row"))?);
            Ok(ids.len() < limit)
        })?;
        let mut orders = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(order) = Orders::order(view, id)? {
                orders.push(order);
            }
        }
        Ok(orders)
    }

    /// How many orders are pending, counting up to `limit`.
    pub fn pending_count(view: &View<'_>, limit: u64) -> io::Result<u64> {
        let mut n = 0;
        view.scan(b"p", &pending_row(Orders::pending_floor(view)?), |_, _| {
            n += 1;
            Ok(n < limit)
        })?;
        Ok(n)
    }

    /// Up to `limit` settled buys whose idempotency key is retained and
    /// whose `created_at` sorts before `cutoff` (RFC 3339, as orders store
    /// it), oldest first: the keys a purge may forget.
    pub fn expired(view: &View<'_>, cutoff: &str, limit: usize) -> io::Result<Vec<ExpiredKey>> {
        let mut rows = Vec::new();
        let end = expiry_row(cutoff, 0);
        view.scan(b"e", b"e", |row, value| {
            if row >= end.as_slice() || rows.len() == limit {
                return Ok(false);
            }
            let id = from_be(&row[row.len() - 8..]).ok_or_else(|| io::Error::other("bad expiry row"))?;
            rows.push((crate::store::log::decode::<String>(value)?, id));
            Ok(true)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, order_id) in rows {
            let reservation_index = Orders::reservation_index(view, order_id)?.unwrap_or(0);
            out.push(ExpiredKey { key, order_id, reservation_index });
        }
        Ok(out)
    }

    /// Whether any key was ever forgotten: then proposers must say which
    /// view they decided on (see [`crate::retention`]).
    pub fn fenced(view: &View<'_>) -> io::Result<bool> {
        Ok(view.get::<u64>(COUNTER_FORGET_FENCE)?.unwrap_or(0) > 0)
    }

    /// Idempotency keys retained (those of settled buys since retention
    /// existed) and forgotten in total.
    pub fn key_counts(view: &View<'_>) -> io::Result<(u64, u64)> {
        Ok((view.get::<u64>(COUNTER_RETAINED)?.unwrap_or(0), view.get::<u64>(COUNTER_FORGOTTEN)?.unwrap_or(0)))
    }

    fn pending_floor(view: &View<'_>) -> io::Result<u64> {
        Ok(view.get::<u64>(COUNTER_PENDING_FLOOR)?.unwrap_or(1))
    }

    /// `order` as it will be once settled, when it is pending and `catalog`
    /// holds the reservation under its key; otherwise `order` itself. This
    /// is how a read shows a placed buy whose reservation is committed but
    /// not yet written into the order.
    pub fn resolve(order: Order, catalog: &View<'_>) -> io::Result<Order> {
        if order.status != OrderStatus::Pending {
            return Ok(order);
        }
        let Some(key) = order.idempotency_key.as_deref() else {
            return Ok(order);
        };
        match crate::catalog::Catalog::reservation(catalog, key)? {
            Some(r) => {
                let settlement = Settlement::of(key, &r);
                Ok(settled(order, &settlement))
            }
            None => Ok(order),
        }
    }

    /// The order made under an idempotency key.
    pub fn by_key(view: &View<'_>, key: &str) -> io::Result<Option<Order>> {
        match view.get::<u64>(&key_row(key))? {
            Some(id) => Orders::order(view, id),
            None => Ok(None),
        }
    }

    /// Up to `limit` orders with ids above `after`, in id order, of those
    /// `which` selects, and the cursor of the next page if any. A book's or
    /// a buyer's orders come from their index, never a scan of all orders.
    pub fn list(
        view: &View<'_>,
        which: &OrderFilter,
        after: u64,
        limit: usize,
    ) -> io::Result<(Vec<Order>, Option<u64>)> {
        let mut orders = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let indexed = match which {
            OrderFilter::All => None,
            OrderFilter::Book(book_id) => {
                Some((history_row(*book_id, 0)[..9].to_vec(), history_row(*book_id, after.saturating_add(1))))
            }
            OrderFilter::Buyer(buyer) => Some((buyer_prefix(buyer), buyer_row(buyer, after.saturating_add(1)))),
        };
        match indexed {
            Some((prefix, from)) => {
                let mut ids = Vec::new();
                view.scan(&prefix, &from, |key, _| {
                    if ids.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    ids.push(from_be(&key[prefix.len()..]).ok_or_else(|| io::Error::other("bad order index row"))?);
                    Ok(true)
                })?;
                for id in ids {
                    if let Some(order) = Orders::order(view, id)? {
                        orders.push(order);
                    }
                }
            }
            None => {
                view.scan(b"o", &order_row(after.saturating_add(1)), |_, value| {
                    if orders.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    orders.push(decode_order(value)?);
                    Ok(true)
                })?;
            }
        }
        let next = if more { orders.last().map(|o| o.order_id) } else { None };
        Ok((orders, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::testing::TestDb;

    fn record(db: &mut TestDb, key: &str, book_id: u64, quantity: u64, outcome: Outcome) -> OrdersResponse {
        db.apply::<Orders>(OrdersCommand::Record {
            catalog_seen: 0,
            key: key.into(),
            book_id,
            quantity,
            created_at: "2026-11-21T10:00:00.000Z".into(),
            outcome,
            catalog_index: 42,
            buyer: None,
        })
        .response
    }

    fn confirmed(unit_price_cents: u64) -> Outcome {
        Outcome::Confirmed { unit_price_cents }
    }

    fn recorded(r: OrdersResponse) -> (Order, bool) {
        match r {
            OrdersResponse::Order { order, existing } => (order, existing),
            other => panic!("expected an order, got {other:?}"),
        }
    }

    #[test]
    fn buy_records_a_confirmed_order_with_the_next_id() {
        let mut db = TestDb::new();
        let (a, existing) = recorded(record(&mut db, "a", 3, 2, confirmed(250)));
        let (b, _) = recorded(record(&mut db, "b", 3, 1, confirmed(250)));
        assert!(!existing);
        assert_eq!((a.order_id, b.order_id), (1, 2));
        assert_eq!((a.status, a.unit_price_cents, a.total_cents), (OrderStatus::Confirmed, 250, 500));
        assert_eq!(a.created_at, "2026-11-21T10:00:00.000Z", "timestamp comes from the command");
        assert_eq!(a.idempotency_key.as_deref(), Some("a"));
        assert_eq!(Orders::reservation_index(&db.view::<Orders>(), 1).unwrap(), Some(42));
    }

    #[test]
    fn out_of_stock_records_a_rejected_order_with_its_reason() {
        let mut db = TestDb::new();
        let (order, _) = recorded(record(&mut db, "a", 3, 2, Outcome::Rejected { reason: "out_of_stock".into() }));
        assert_eq!(
            (order.status, order.reason.as_deref(), order.total_cents),
            (OrderStatus::Rejected, Some("out_of_stock"), 0)
        );
    }

    #[test]
    fn idempotent_retry_with_the_same_key_returns_the_first_order() {
        let mut db = TestDb::new();
        let (first, _) = recorded(record(&mut db, "k1", 3, 2, confirmed(100)));
        // A retry, even with another (later) price, finds the recorded order.
        let (again, existing) = recorded(record(&mut db, "k1", 3, 2, confirmed(999)));
        assert!(existing);
        assert_eq!(again, first);
        assert_eq!(
            Orders::list(&db.view::<Orders>(), &OrderFilter::All, 0, 10).unwrap().0.len(),
            1,
            "one order per key"
        );
        assert_eq!(Orders::by_key(&db.view::<Orders>(), "k1").unwrap(), Some(first));
    }

    #[test]
    fn reusing_a_key_for_a_different_buy_is_refused() {
        let mut db = TestDb::new();
        recorded(record(&mut db, "k1", 3, 2, confirmed(1)));
        assert_eq!(record(&mut db, "k1", 3, 5, confirmed(1)), OrdersResponse::KeyReused { order_id: 1 });
        assert_eq!(record(&mut db, "k1", 4, 2, confirmed(1)), OrdersResponse::KeyReused { order_id: 1 });
    }

    /// Seeds the catalog with book 1: 4 copies at 300 cents.
    fn seed_one_book(db: &mut TestDb) {
        use crate::catalog::{Catalog, CatalogCommand};
        db.apply::<Catalog>(CatalogCommand::Seed {
            books: vec![bazar_api::Book {
                id: 1,
                isbn: bazar_api::isbn::from_number(1),
                title: "B".into(),
                topic: "t".into(),
                price_cents: 300,
                stock: 4,
            }],
        });
    }

    #[test]
    fn an_unrecorded_reservation_is_recorded_once_after_a_coordinator_crash() {
        use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, ReservationOutcome};
        let mut db = TestDb::new();
        seed_one_book(&mut db);
        // The old leader reserved stock for a buy, then crashed before recording it.
        let reserve = CatalogCommand::Reserve {
            seen: 0,
            key: "buy-1".into(),
            book_id: 1,
            quantity: 3,
            created_at: "then".into(),
            buyer: None,
        };
        let CatalogResponse::Reservation(first) = db.apply::<Catalog>(reserve.clone()).response else { panic!() };

        // The new leader finds it unclaimed and records it from the reservation alone.
        let unclaimed = Catalog::unclaimed(&db.view::<Catalog>(), 10).unwrap();
        assert_eq!(unclaimed, vec![("buy-1".to_string(), first.clone())]);
        let ReservationOutcome::Reserved { unit_price_cents } = first.outcome else { panic!() };
        let (order, _) = recorded(
            db.apply::<Orders>(OrdersCommand::Record {
                catalog_seen: 0,
                key: "buy-1".into(),
                book_id: first.book_id,
                quantity: first.quantity,
                created_at: first.created_at.clone(),
                outcome: Outcome::Confirmed { unit_price_cents },
                catalog_index: first.index,
                buyer: None,
            })
            .response,
        );
        assert_eq!((order.status, order.created_at.as_str()), (OrderStatus::Confirmed, "then"));
        db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["buy-1".into()] });
        assert!(Catalog::unclaimed(&db.view::<Catalog>(), 10).unwrap().is_empty());

        // The client's retry with its key reserves nothing more and finds the order.
        let CatalogResponse::Reservation(again) = db.apply::<Catalog>(reserve).response else { panic!() };
        assert_eq!(again, first);
        assert_eq!(Catalog::book(&db.view::<Catalog>(), 1).unwrap().unwrap().stock, 1, "taken once");
        let (retry, existing) = recorded(record(&mut db, "buy-1", 1, 3, Outcome::Confirmed { unit_price_cents }));
        assert!(existing);
        assert_eq!(retry, order);
    }

    fn place(db: &mut TestDb, key: &str, book_id: u64, quantity: u64) -> (Order, bool) {
        recorded(
            db.apply::<Orders>(OrdersCommand::Place {
                seen: 0,
                key: key.into(),
                book_id,
                quantity,
                created_at: "2026-11-22T10:00:00.000Z".into(),
                buyer: None,
            })
            .response,
        )
    }

    fn settlement(key: &str, book_id: u64, quantity: u64, outcome: Outcome) -> Settlement {
        Settlement {
            key: key.into(),
            book_id,
            quantity,
            created_at: "2026-11-22T10:00:00.000Z".into(),
            outcome,
            catalog_index: 7,
            buyer: None,
        }
    }

    fn pending_ids(db: &TestDb) -> Vec<u64> {
        Orders::pending(&db.view::<Orders>(), 100).unwrap().iter().map(|o| o.order_id).collect()
    }

    #[test]
    fn a_placed_order_is_pending_until_its_settlement_and_keeps_its_id() {
        let mut db = TestDb::new();
        let (placed, existing) = place(&mut db, "a", 3, 2);
        assert!(!existing);
        assert_eq!((placed.order_id, placed.status, placed.total_cents), (1, OrderStatus::Pending, 0));
        assert_eq!(pending_ids(&db), vec![1]);
        // Placing again (a retry) finds it.
        assert_eq!(place(&mut db, "a", 3, 2), (placed.clone(), true));

        let settle = OrdersCommand::Settle { catalog_seen: 0, records: vec![settlement("a", 3, 2, confirmed(250))] };
        let applied = db.apply::<Orders>(settle);
        assert_eq!(applied.keys, vec![order_key(1), book_orders_key(3)]);
        let order = Orders::order(&db.view::<Orders>(), 1).unwrap().unwrap();
        assert_eq!((order.order_id, order.status, order.total_cents), (1, OrderStatus::Confirmed, 500));
        assert_eq!(order, settled(placed, &settlement("a", 3, 2, confirmed(250))), "apply and reads agree");
        assert!(pending_ids(&db).is_empty());
        assert_eq!(Orders::reservation_index(&db.view::<Orders>(), 1).unwrap(), Some(7));
        // Settling again, and placing again, change nothing.
        db.apply::<Orders>(OrdersCommand::Settle {
            catalog_seen: 0,
            records: vec![settlement("a", 3, 2, confirmed(999))],
        });
        assert_eq!(place(&mut db, "a", 3, 2), (order.clone(), true));
        assert_eq!(Orders::order(&db.view::<Orders>(), 1).unwrap(), Some(order));
    }

    #[test]
    fn one_settle_writes_many_orders_and_records_unplaced_ones() {
        let mut db = TestDb::new();
        place(&mut db, "a", 1, 1);
        place(&mut db, "b", 2, 1);
        let records = vec![
            settlement("b", 2, 1, Outcome::Rejected { reason: "out_of_stock".into() }),
            settlement("a", 1, 1, confirmed(10)),
            settlement("never-placed", 1, 3, confirmed(10)),
        ];
        db.apply::<Orders>(OrdersCommand::Settle { catalog_seen: 0, records });
        let (orders, _) = Orders::list(&db.view::<Orders>(), &OrderFilter::All, 0, 10).unwrap();
        let summary: Vec<_> = orders.iter().map(|o| (o.order_id, o.status, o.total_cents)).collect();
        assert_eq!(
            summary,
            vec![(1, OrderStatus::Confirmed, 10), (2, OrderStatus::Rejected, 0), (3, OrderStatus::Confirmed, 30)]
        );
        assert!(pending_ids(&db).is_empty());
    }

    #[test]
    fn the_reservation_decides_a_pending_order_placed_for_another_buy_under_its_key() {
        let mut db = TestDb::new();
        // A request reused key "k" for book 2 and placed first; the catalog
        // reserved "k" for book 1 (another request's), which decides.
        place(&mut db, "k", 2, 5);
        let (order, existing) = recorded(record(&mut db, "k", 1, 1, confirmed(40)));
        assert!(!existing);
        assert_eq!((order.order_id, order.book_id, order.quantity, order.total_cents), (1, 1, 1, 40));
        let view = db.view::<Orders>();
        assert!(
            Orders::list(&view, &OrderFilter::Book(2), 0, 10).unwrap().0.is_empty(),
            "moved out of book 2's history"
        );
        assert_eq!(Orders::list(&view, &OrderFilter::Book(1), 0, 10).unwrap().0, vec![order]);
    }

    #[test]
    fn a_read_shows_a_pending_order_settled_once_its_reservation_is_committed() {
        use crate::catalog::{Catalog, CatalogCommand};
        let mut db = TestDb::new();
        seed_one_book(&mut db);
        let (placed, _) = place(&mut db, "k", 1, 3);
        let unreserved = Orders::resolve(placed.clone(), &db.view::<Catalog>()).unwrap();
        assert_eq!(unreserved, placed, "no reservation yet: still pending");
        let reserve = CatalogCommand::Reserve {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 3,
            created_at: placed.created_at.clone(),
            buyer: None,
        };
        db.apply::<Catalog>(reserve);
        let shown = Orders::resolve(placed, &db.view::<Catalog>()).unwrap();
        assert_eq!((shown.status, shown.total_cents), (OrderStatus::Confirmed, 900));
    }

    #[test]
    fn the_pending_floor_skips_settled_orders_and_stops_at_the_oldest_pending_one() {
        let mut db = TestDb::new();
        for key in ["a", "b", "c", "d"] {
            place(&mut db, key, 1, 1);
        }
        let settle = |keys: &[&str]| OrdersCommand::Settle {
            catalog_seen: 0,
            records: keys.iter().map(|k| settlement(k, 1, 1, confirmed(1))).collect(),
        };
        db.apply::<Orders>(settle(&["b"]));
        assert_eq!(pending_ids(&db), vec![1, 3, 4]);
        assert_eq!(Orders::pending_floor(&db.view::<Orders>()).unwrap(), 1, "order 1 still pending");
        db.apply::<Orders>(settle(&["a", "c"]));
        assert_eq!(Orders::pending_floor(&db.view::<Orders>()).unwrap(), 4);
        assert_eq!(pending_ids(&db), vec![4]);
        assert_eq!(Orders::pending_count(&db.view::<Orders>(), 100).unwrap(), 1);
    }

    #[test]
    fn order_history_lists_a_books_orders_in_pages() {
        let mut db = TestDb::new();
        for (i, book) in [1, 2, 1, 1, 2].into_iter().enumerate() {
            recorded(record(&mut db, &format!("k{i}"), book, 1, confirmed(1)));
        }
        let view = db.view::<Orders>();
        let (page, next) = Orders::list(&view, &OrderFilter::Book(1), 0, 2).unwrap();
        assert_eq!(page.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![1, 3]);
        let (page, next) = Orders::list(&view, &OrderFilter::Book(1), next.unwrap(), 2).unwrap();
        assert_eq!((page.iter().map(|o| o.order_id).collect::<Vec<_>>(), next), (vec![4], None));
    }

    fn place_by(db: &mut TestDb, key: &str, book_id: u64, buyer: &str) -> Order {
        recorded(
            db.apply::<Orders>(OrdersCommand::Place {
                seen: 0,
                key: key.into(),
                book_id,
                quantity: 1,
                created_at: "2026-12-04T10:00:00.000Z".into(),
                buyer: Some(buyer.into()),
            })
            .response,
        )
        .0
    }

    fn by(buyer: &str, s: Settlement) -> Settlement {
        Settlement { buyer: Some(buyer.into()), ..s }
    }

    fn ids(orders: &[Order]) -> Vec<u64> {
        orders.iter().map(|o| o.order_id).collect()
    }

    #[test]
    fn a_buyers_orders_are_listed_from_their_index_in_pages() {
        let mut db = TestDb::new();
        for (i, buyer) in ["manar", "ali", "manar", "manar.x", "manar"].into_iter().enumerate() {
            let key = format!("k{i}");
            let placed = place_by(&mut db, &key, 1, buyer);
            assert_eq!(placed.buyer.as_deref(), Some(buyer));
            db.apply::<Orders>(OrdersCommand::Settle {
                catalog_seen: 0,
                records: vec![by(buyer, settlement(&key, 1, 1, confirmed(5)))],
            });
        }
        let view = db.view::<Orders>();
        let manar = OrderFilter::Buyer("manar".into());
        let (page, next) = Orders::list(&view, &manar, 0, 2).unwrap();
        assert_eq!((ids(&page), next), (vec![1, 3], Some(3)));
        assert!(page.iter().all(|o| o.buyer.as_deref() == Some("manar") && o.status == OrderStatus::Confirmed));
        let (page, next) = Orders::list(&view, &manar, 3, 2).unwrap();
        assert_eq!((ids(&page), next), (vec![5], None), "not the orders of manar.x");
        assert!(Orders::list(&view, &OrderFilter::Buyer("nobody".into()), 0, 10).unwrap().0.is_empty());
        assert_eq!(ids(&Orders::list(&view, &OrderFilter::Buyer("manar.x".into()), 0, 10).unwrap().0), vec![4]);
    }

    #[test]
    fn a_key_reused_by_another_buyer_is_refused_and_the_buyer_never_changes() {
        let mut db = TestDb::new();
        let first =
            recorded(db.apply::<Orders>(by("manar", settlement("k", 1, 1, confirmed(5))).into_record(0)).response).0;
        assert_eq!(first.buyer.as_deref(), Some("manar"));
        let other = db.apply::<Orders>(by("ali", settlement("k", 1, 1, confirmed(5))).into_record(0)).response;
        assert_eq!(other, OrdersResponse::KeyReused { order_id: 1 });
        let anonymous = db.apply::<Orders>(settlement("k", 1, 1, confirmed(5)).into_record(0)).response;
        assert_eq!(anonymous, OrdersResponse::KeyReused { order_id: 1 });
        let (again, existing) =
            recorded(db.apply::<Orders>(by("manar", settlement("k", 1, 1, confirmed(5))).into_record(0)).response);
        assert!(existing);
        assert_eq!(again, first);
    }

    #[test]
    fn the_reservations_buyer_decides_a_pending_order_and_moves_it_between_buyers() {
        let mut db = TestDb::new();
        place_by(&mut db, "k", 1, "ali");
        let applied = db.apply::<Orders>(OrdersCommand::Settle {
            catalog_seen: 0,
            records: vec![by("manar", settlement("k", 1, 1, confirmed(5)))],
        });
        assert!(applied.keys.contains(&buyer_orders_key("ali")) && applied.keys.contains(&buyer_orders_key("manar")));
        let view = db.view::<Orders>();
        assert!(Orders::list(&view, &OrderFilter::Buyer("ali".into()), 0, 10).unwrap().0.is_empty());
        let (manar, _) = Orders::list(&view, &OrderFilter::Buyer("manar".into()), 0, 10).unwrap();
        assert_eq!((ids(&manar), manar[0].buyer.as_deref()), (vec![1], Some("manar")));
    }

    #[test]
    fn orders_stored_before_buyers_existed_still_read_page_and_settle() {
        use crate::orders::compat::OrderV1;
        let mut db = TestDb::new();
        // Two orders as version 1 wrote them, one settled, one pending.
        for (id, status) in [(1, OrderStatus::Confirmed), (2, OrderStatus::Pending)] {
            let v1 = OrderV1 {
                order_id: id,
                book_id: 1,
                quantity: 1,
                unit_price_cents: if status == OrderStatus::Confirmed { 5 } else { 0 },
                total_cents: if status == OrderStatus::Confirmed { 5 } else { 0 },
                status,
                reason: None,
                created_at: "2026-11-01T10:00:00.000Z".into(),
                idempotency_key: Some(format!("old-{id}")),
            };
            db.put_raw::<Orders>(order_row(id), crate::store::log::encode(&v1).unwrap());
            db.put_raw::<Orders>(key_row(&format!("old-{id}")), crate::store::log::encode(&id).unwrap());
            db.put_raw::<Orders>(history_row(1, id), Vec::new());
        }
        db.put_raw::<Orders>(COUNTER_NEXT_ID.to_vec(), crate::store::log::encode(&3u64).unwrap());
        let view = db.view::<Orders>();
        let (all, _) = Orders::list(&view, &OrderFilter::All, 0, 10).unwrap();
        assert_eq!((ids(&all), all[0].buyer.clone()), (vec![1, 2], None));
        assert_eq!(ids(&Orders::list(&view, &OrderFilter::Book(1), 0, 1).unwrap().0), vec![1]);
        drop(view);
        // A retry of the old settled buy finds it; the old pending one settles.
        let (again, existing) = recorded(record(&mut db, "old-1", 1, 1, confirmed(5)));
        assert!(existing && again.order_id == 1);
        db.apply::<Orders>(OrdersCommand::Settle {
            catalog_seen: 0,
            records: vec![settlement("old-2", 1, 1, confirmed(5))],
        });
        let settled = Orders::order(&db.view::<Orders>(), 2).unwrap().unwrap();
        assert_eq!((settled.status, settled.buyer), (OrderStatus::Confirmed, None));
        let (new, _) = recorded(record(&mut db, "new", 1, 1, confirmed(5)));
        assert_eq!(new.order_id, 3);
    }
}
