//! The orders group: the record of every buy.
//!
//! # Commands
//! A buy is recorded as `pending` by [`OrdersCommand::Create`] and later
//! resolved, exactly once, by [`OrdersCommand::Resolve`] (see [`crate::buy`]).
//!
//! # Invariants
//! - One idempotency key maps to at most one order: `Create` with a known key
//!   returns that order (or refuses, if the key was used for a different book
//!   or quantity) and creates nothing.
//! - An order leaves `pending` once, and its outcome never changes afterwards:
//!   `Resolve` on a resolved order is a no-op that returns the order.
//! - Order ids are assigned by the state machine from a counter, so every
//!   replica assigns the same id to the same entry.
//!
//! # Layout in `orders_sm`
//! | key | value |
//! |---|---|
//! | `o` order_id | [`Order`] |
//! | `k` idempotency key | order id |
//! | `h` book_id order_id | (empty): a book's order history |
//! | `p` order_id | (empty): the pending set, scanned by the orders leader |
//! | `x` order_id | catalog index of the order's reservation |
//! | `c` name | counters (`next_order_id`) |

use std::fmt;
use std::io;

use bazar_api::events::{book_orders_key, order_key};
use bazar_api::{Group, Order, OrderStatus};
use serde::{Deserialize, Serialize};

use crate::sm::{Applied, StateMachine, Txn, View};
use crate::store::{be, from_be};

openraft::declare_raft_types!(
    /// openraft types of the orders group.
    pub OrdersTypes:
        D = OrdersCommand,
        R = OrdersResponse,
);

/// A change to the orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersCommand {
    /// Record a new pending order (or find the one made under the same key).
    Create {
        /// Deduplicates retries of the same buy.
        idempotency_key: Option<String>,
        /// The book.
        book_id: u64,
        /// Copies.
        quantity: u64,
        /// The proposing leader's clock, RFC 3339 (carried in the command so
        /// that apply stays deterministic).
        created_at: String,
    },
    /// Settle a pending order.
    Resolve {
        /// The order.
        order_id: u64,
        /// How it ended.
        outcome: Outcome,
        /// The catalog log index at which the reservation was committed, kept
        /// so that any later answer about this order can tell a client which
        /// catalog index reflects it (read-your-writes).
        catalog_index: u64,
    },
}

impl fmt::Display for OrdersCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrdersCommand::Create { book_id, quantity, .. } => write!(f, "create(book {book_id}, {quantity})"),
            OrdersCommand::Resolve { order_id, outcome, .. } => write!(f, "resolve({order_id}, {outcome:?})"),
        }
    }
}

/// How a pending order ends.
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

/// What an orders command returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersResponse {
    /// Nothing to report (blank and membership entries).
    #[default]
    Done,
    /// The order after the command; `existing` when `Create` found an order
    /// made earlier under the same idempotency key.
    Order {
        /// The order.
        order: Order,
        /// Whether it existed before this command.
        existing: bool,
    },
    /// The idempotency key was used for a different book or quantity.
    KeyReused {
        /// The order made under that key.
        order_id: u64,
    },
    /// No order has that id.
    NotFound,
}

/// The orders state machine.
pub struct Orders;

const COUNTER_NEXT_ID: &[u8] = b"cnext_order_id";

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

fn pending_row(order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'p');
    k.extend_from_slice(&be(order_id));
    k
}

fn reservation_index_row(order_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'x');
    k.extend_from_slice(&be(order_id));
    k
}

fn keys_of(order: &Order) -> Vec<String> {
    vec![order_key(order.order_id), book_orders_key(order.book_id)]
}

impl StateMachine for Orders {
    type Command = OrdersCommand;
    type Response = OrdersResponse;
    type C = OrdersTypes;
    const GROUP: Group = Group::Orders;

    fn apply(txn: &mut Txn<'_>, _index: u64, cmd: &OrdersCommand) -> io::Result<Applied<OrdersResponse>> {
        let nothing = |response| Ok(Applied { response, keys: Vec::new() });
        match cmd {
            OrdersCommand::Create { idempotency_key, book_id, quantity, created_at } => {
                if let Some(key) = idempotency_key
                    && let Some(order_id) = txn.get_value::<u64>(&key_row(key))?
                {
                    let order = txn.get_value::<Order>(&order_row(order_id))?.ok_or_else(|| {
                        io::Error::other(format!("idempotency key points at missing order {order_id}"))
                    })?;
                    if order.book_id != *book_id || order.quantity != *quantity {
                        return nothing(OrdersResponse::KeyReused { order_id });
                    }
                    return nothing(OrdersResponse::Order { order, existing: true });
                }
                let order_id = txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1);
                let order = Order {
                    order_id,
                    book_id: *book_id,
                    quantity: *quantity,
                    unit_price_cents: 0,
                    total_cents: 0,
                    status: OrderStatus::Pending,
                    reason: None,
                    created_at: created_at.clone(),
                    idempotency_key: idempotency_key.clone(),
                };
                txn.put_value(order_row(order_id), &order)?;
                if let Some(key) = idempotency_key {
                    txn.put_value(key_row(key), &order_id)?;
                }
                txn.put(history_row(*book_id, order_id), Vec::new());
                txn.put(pending_row(order_id), Vec::new());
                txn.put_value(COUNTER_NEXT_ID.to_vec(), &(order_id + 1))?;
                let keys = keys_of(&order);
                Ok(Applied { response: OrdersResponse::Order { order, existing: false }, keys })
            }
            OrdersCommand::Resolve { order_id, outcome, catalog_index } => {
                let Some(mut order) = txn.get_value::<Order>(&order_row(*order_id))? else {
                    return nothing(OrdersResponse::NotFound);
                };
                if order.status != OrderStatus::Pending {
                    return nothing(OrdersResponse::Order { order, existing: true });
                }
                match outcome {
                    Outcome::Confirmed { unit_price_cents } => {
                        order.status = OrderStatus::Confirmed;
                        order.unit_price_cents = *unit_price_cents;
                        // Bounded by MAX_PRICE_CENTS * MAX_QUANTITY, far below u64::MAX.
                        order.total_cents = unit_price_cents.saturating_mul(order.quantity);
                    }
                    Outcome::Rejected { reason } => {
                        order.status = OrderStatus::Rejected;
                        order.reason = Some(reason.clone());
                    }
                }
                txn.put_value(order_row(order.order_id), &order)?;
                txn.delete(pending_row(order.order_id));
                txn.put_value(reservation_index_row(order.order_id), catalog_index)?;
                let keys = keys_of(&order);
                Ok(Applied { response: OrdersResponse::Order { order, existing: false }, keys })
            }
        }
    }
}

/// Reads of the orders, from a consistent view.
impl Orders {
    /// The order with id `id`.
    pub fn order(view: &View<'_>, id: u64) -> io::Result<Option<Order>> {
        view.get(&order_row(id))
    }

    /// The catalog index at which a resolved order's reservation was committed.
    pub fn reservation_index(view: &View<'_>, order_id: u64) -> io::Result<Option<u64>> {
        view.get(&reservation_index_row(order_id))
    }

    /// The order made under an idempotency key.
    pub fn by_key(view: &View<'_>, key: &str) -> io::Result<Option<Order>> {
        match view.get::<u64>(&key_row(key))? {
            Some(id) => Orders::order(view, id),
            None => Ok(None),
        }
    }

    /// Up to `limit` orders with ids above `after`, in id order, of one book
    /// (all orders when `None`), and the cursor of the next page if any.
    pub fn list(
        view: &View<'_>,
        book_id: Option<u64>,
        after: u64,
        limit: usize,
    ) -> io::Result<(Vec<Order>, Option<u64>)> {
        let mut orders = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        match book_id {
            Some(book_id) => {
                let prefix = history_row(book_id, 0)[..9].to_vec();
                let mut ids = Vec::new();
                view.scan(&prefix, &history_row(book_id, after.saturating_add(1)), |key, _| {
                    if ids.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    ids.push(from_be(&key[9..]).ok_or_else(|| io::Error::other("bad history row"))?);
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
                    orders.push(crate::store::log::decode(value)?);
                    Ok(true)
                })?;
            }
        }
        let next = if more { orders.last().map(|o| o.order_id) } else { None };
        Ok((orders, next))
    }

    /// Up to `limit` pending orders, oldest first.
    pub fn pending(view: &View<'_>, limit: usize) -> io::Result<Vec<Order>> {
        let mut ids = Vec::new();
        view.scan(b"p", b"p", |key, _| {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::testing::TestDb;

    fn create(db: &mut TestDb, key: Option<&str>, book_id: u64, quantity: u64) -> OrdersResponse {
        db.apply::<Orders>(OrdersCommand::Create {
            idempotency_key: key.map(str::to_string),
            book_id,
            quantity,
            created_at: "2026-11-21T10:00:00.000Z".into(),
        })
        .response
    }

    fn created(r: OrdersResponse) -> (Order, bool) {
        match r {
            OrdersResponse::Order { order, existing } => (order, existing),
            other => panic!("expected an order, got {other:?}"),
        }
    }

    #[test]
    fn buy_records_a_pending_order_with_the_next_id() {
        let mut db = TestDb::new();
        let (a, existing) = created(create(&mut db, None, 3, 2));
        let (b, _) = created(create(&mut db, None, 3, 1));
        assert!(!existing);
        assert_eq!((a.order_id, b.order_id), (1, 2));
        assert_eq!(a.status, OrderStatus::Pending);
        assert_eq!(a.created_at, "2026-11-21T10:00:00.000Z", "timestamp comes from the command");
        let pending: Vec<u64> = Orders::pending(&db.view::<Orders>(), 10).unwrap().iter().map(|o| o.order_id).collect();
        assert_eq!(pending, vec![1, 2]);
    }

    #[test]
    fn idempotent_retry_with_the_same_key_returns_the_first_order() {
        let mut db = TestDb::new();
        let (first, _) = created(create(&mut db, Some("k1"), 3, 2));
        let (again, existing) = created(create(&mut db, Some("k1"), 3, 2));
        assert!(existing);
        assert_eq!(again, first);
        assert_eq!(Orders::list(&db.view::<Orders>(), None, 0, 10).unwrap().0.len(), 1, "one order per key");
        assert_eq!(Orders::by_key(&db.view::<Orders>(), "k1").unwrap(), Some(first));
    }

    #[test]
    fn reusing_a_key_for_a_different_buy_is_refused() {
        let mut db = TestDb::new();
        created(create(&mut db, Some("k1"), 3, 2));
        assert_eq!(create(&mut db, Some("k1"), 3, 5), OrdersResponse::KeyReused { order_id: 1 });
        assert_eq!(create(&mut db, Some("k1"), 4, 2), OrdersResponse::KeyReused { order_id: 1 });
    }

    #[test]
    fn an_order_is_resolved_once_and_keeps_its_first_outcome() {
        let mut db = TestDb::new();
        created(create(&mut db, None, 3, 2));
        let confirm = OrdersCommand::Resolve {
            order_id: 1,
            outcome: Outcome::Confirmed { unit_price_cents: 250 },
            catalog_index: 42,
        };
        let (order, _) = created(db.apply::<Orders>(confirm).response);
        assert_eq!((order.status, order.unit_price_cents, order.total_cents), (OrderStatus::Confirmed, 250, 500));
        assert_eq!(Orders::reservation_index(&db.view::<Orders>(), 1).unwrap(), Some(42));
        let reject = OrdersCommand::Resolve {
            order_id: 1,
            outcome: Outcome::Rejected { reason: "out_of_stock".into() },
            catalog_index: 43,
        };
        let applied = db.apply::<Orders>(reject);
        let (again, existing) = created(applied.response);
        assert!(existing && applied.keys.is_empty());
        assert_eq!(again.status, OrderStatus::Confirmed);
        assert_eq!(Orders::reservation_index(&db.view::<Orders>(), 1).unwrap(), Some(42), "first resolution kept");
        assert!(Orders::pending(&db.view::<Orders>(), 10).unwrap().is_empty());
        let missing = OrdersCommand::Resolve {
            order_id: 9,
            outcome: Outcome::Confirmed { unit_price_cents: 1 },
            catalog_index: 1,
        };
        assert_eq!(db.apply::<Orders>(missing).response, OrdersResponse::NotFound);
    }

    #[test]
    fn pending_order_recovery_settles_once_after_a_coordinator_crash() {
        use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, Reservation};
        let mut db = TestDb::new();
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
        // The old leader recorded the order and reserved stock, then crashed.
        let (order, _) = created(create(&mut db, Some("buy-1"), 1, 3));
        let reserve = CatalogCommand::Reserve { order_id: order.order_id, book_id: 1, quantity: 3 };
        let first = db.apply::<Catalog>(reserve.clone()).response;

        // The new leader finds it pending and runs steps 2 and 3 again.
        let pending = Orders::pending(&db.view::<Orders>(), 10).unwrap();
        assert_eq!(pending.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![order.order_id]);
        let again = db.apply::<Catalog>(reserve).response;
        assert_eq!(again, first);
        let CatalogResponse::Reservation(Reservation::Reserved { unit_price_cents }) = again else { panic!() };
        let resolve = OrdersCommand::Resolve {
            order_id: order.order_id,
            outcome: Outcome::Confirmed { unit_price_cents },
            catalog_index: 2,
        };
        let (settled, _) = created(db.apply::<Orders>(resolve).response);
        assert_eq!(settled.status, OrderStatus::Confirmed);
        assert_eq!(Catalog::book(&db.view::<Catalog>(), 1).unwrap().unwrap().stock, 1, "taken once");
        assert!(Orders::pending(&db.view::<Orders>(), 10).unwrap().is_empty());

        // The client's retry with its key sees the one outcome.
        let (retry, existing) = created(create(&mut db, Some("buy-1"), 1, 3));
        assert!(existing);
        assert_eq!(retry.status, OrderStatus::Confirmed);
    }

    #[test]
    fn order_history_lists_a_books_orders_in_pages() {
        let mut db = TestDb::new();
        for book in [1, 2, 1, 1, 2] {
            created(create(&mut db, None, book, 1));
        }
        let view = db.view::<Orders>();
        let (page, next) = Orders::list(&view, Some(1), 0, 2).unwrap();
        assert_eq!(page.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![1, 3]);
        let (page, next) = Orders::list(&view, Some(1), next.unwrap(), 2).unwrap();
        assert_eq!((page.iter().map(|o| o.order_id).collect::<Vec<_>>(), next), (vec![4], None));
    }
}
