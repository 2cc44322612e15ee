//! The orders group: the record of every buy.
//!
//! # Commands
//! A buy is recorded by [`OrdersCommand::Record`] once its stock reservation
//! in the catalog has an outcome (see [`crate::buy`]): the order is written
//! in its final state, `confirmed` or `rejected`.
//!
//! # Invariants
//! - One idempotency key maps to at most one order: `Record` with a known key
//!   returns that order (or refuses, if the key was used for a different book
//!   or quantity) and creates nothing.
//! - An order's outcome never changes once recorded.
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
    },
}

impl fmt::Display for OrdersCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrdersCommand::Record { book_id, quantity, outcome, .. } => {
                write!(f, "record(book {book_id}, {quantity}, {outcome:?})")
            }
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

/// What an orders command returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersResponse {
    /// Nothing to report (blank and membership entries).
    #[default]
    Done,
    /// The order after the command; `existing` when `Record` found an order
    /// recorded earlier under the same idempotency key.
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
            OrdersCommand::Record { key, book_id, quantity, created_at, outcome, catalog_index } => {
                if let Some(order_id) = txn.get_value::<u64>(&key_row(key))? {
                    let order = txn.get_value::<Order>(&order_row(order_id))?.ok_or_else(|| {
                        io::Error::other(format!("idempotency key points at missing order {order_id}"))
                    })?;
                    if order.book_id != *book_id || order.quantity != *quantity {
                        return nothing(OrdersResponse::KeyReused { order_id });
                    }
                    return nothing(OrdersResponse::Order { order, existing: true });
                }
                let order_id = txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1);
                let (status, unit_price_cents, reason) = match outcome {
                    Outcome::Confirmed { unit_price_cents } => (OrderStatus::Confirmed, *unit_price_cents, None),
                    Outcome::Rejected { reason } => (OrderStatus::Rejected, 0, Some(reason.clone())),
                };
                let order = Order {
                    order_id,
                    book_id: *book_id,
                    quantity: *quantity,
                    unit_price_cents,
                    // Bounded by MAX_PRICE_CENTS * MAX_QUANTITY, far below u64::MAX.
                    total_cents: unit_price_cents.saturating_mul(*quantity),
                    status,
                    reason,
                    created_at: created_at.clone(),
                    idempotency_key: Some(key.clone()),
                };
                txn.put_value(order_row(order_id), &order)?;
                txn.put_value(key_row(key), &order_id)?;
                txn.put(history_row(*book_id, order_id), Vec::new());
                txn.put_value(reservation_index_row(order_id), catalog_index)?;
                txn.put_value(COUNTER_NEXT_ID.to_vec(), &(order_id + 1))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::testing::TestDb;

    fn record(db: &mut TestDb, key: &str, book_id: u64, quantity: u64, outcome: Outcome) -> OrdersResponse {
        db.apply::<Orders>(OrdersCommand::Record {
            key: key.into(),
            book_id,
            quantity,
            created_at: "2026-11-21T10:00:00.000Z".into(),
            outcome,
            catalog_index: 42,
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
        assert_eq!(Orders::list(&db.view::<Orders>(), None, 0, 10).unwrap().0.len(), 1, "one order per key");
        assert_eq!(Orders::by_key(&db.view::<Orders>(), "k1").unwrap(), Some(first));
    }

    #[test]
    fn reusing_a_key_for_a_different_buy_is_refused() {
        let mut db = TestDb::new();
        recorded(record(&mut db, "k1", 3, 2, confirmed(1)));
        assert_eq!(record(&mut db, "k1", 3, 5, confirmed(1)), OrdersResponse::KeyReused { order_id: 1 });
        assert_eq!(record(&mut db, "k1", 4, 2, confirmed(1)), OrdersResponse::KeyReused { order_id: 1 });
    }

    #[test]
    fn an_unrecorded_reservation_is_recorded_once_after_a_coordinator_crash() {
        use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, ReservationOutcome};
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
        // The old leader reserved stock for a buy, then crashed before recording it.
        let reserve =
            CatalogCommand::Reserve { key: "buy-1".into(), book_id: 1, quantity: 3, created_at: "then".into() };
        let CatalogResponse::Reservation(first) = db.apply::<Catalog>(reserve.clone()).response else { panic!() };

        // The new leader finds it unclaimed and records it from the reservation alone.
        let unclaimed = Catalog::unclaimed(&db.view::<Catalog>(), 10).unwrap();
        assert_eq!(unclaimed, vec![("buy-1".to_string(), first.clone())]);
        let ReservationOutcome::Reserved { unit_price_cents } = first.outcome else { panic!() };
        let (order, _) = recorded(
            db.apply::<Orders>(OrdersCommand::Record {
                key: "buy-1".into(),
                book_id: first.book_id,
                quantity: first.quantity,
                created_at: first.created_at.clone(),
                outcome: Outcome::Confirmed { unit_price_cents },
                catalog_index: first.index,
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

    #[test]
    fn order_history_lists_a_books_orders_in_pages() {
        let mut db = TestDb::new();
        for (i, book) in [1, 2, 1, 1, 2].into_iter().enumerate() {
            recorded(record(&mut db, &format!("k{i}"), book, 1, confirmed(1)));
        }
        let view = db.view::<Orders>();
        let (page, next) = Orders::list(&view, Some(1), 0, 2).unwrap();
        assert_eq!(page.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![1, 3]);
        let (page, next) = Orders::list(&view, Some(1), next.unwrap(), 2).unwrap();
        assert_eq!((page.iter().map(|o| o.order_id).collect::<Vec<_>>(), next), (vec![4], None));
    }
}
