//! The catalog group: books and their stock.
//!
//! # Commands
//! Every change to a book is a [`CatalogCommand`] in the catalog's Raft log:
//! adding a book, restocking, changing price/title/topic, reserving stock for
//! an order, and loading the initial catalog.
//!
//! # Invariants
//! - Stock never goes negative: a reservation larger than the stock is
//!   refused and changes nothing.
//! - Reservations are keyed by the buy's idempotency key and remembered,
//!   whatever their outcome, until the retention window has passed and the
//!   buy is settled ([`CatalogCommand::Purge`], see [`crate::retention`]):
//!   re-applying `Reserve` for a key returns the first outcome and changes
//!   nothing. This is what makes the buy protocol safe to retry from any
//!   orders leader (see [`crate::buy`]). After a purge, a new reservation
//!   decided on a view of the orders older than the purge's fence is
//!   refused ([`CatalogResponse::Stale`]).
//! - A reservation that needs an order (taken, or refused for lack of stock)
//!   stays in the *unclaimed* set until `Claim` removes it, which the orders
//!   leader does once the order is recorded. An unclaimed reservation is a
//!   buy in flight, or one whose coordinator crashed: the orders leader
//!   records it.
//! - Hence, per book: initial stock + restocks − reserved quantities = stock.
//! - ISBNs are unique.
//!
//! # Layout in `catalog_sm`
//! | key | value |
//! |---|---|
//! | `b` id | [`Book`] |
//! | `t` topic `\0` id | (empty): the topic index searched by `GET /books?topic=` |
//! | `i` isbn | book id |
//! | `r` idempotency key | [`Reservation`] |
//! | `u` seq | idempotency key: the unclaimed set, in reservation order |
//! | `c` name | also `next_claim_seq` and `claim_floor` (every unclaimed seq is ≥ it) |
//! | `c` name | counters and flags (`next_book_id`, `seeded`; `purge_fence`, `retained_reservations`, `purged_reservations`: see [`crate::retention`]) |

pub mod compat;

use std::fmt;
use std::io;

use bazar_api::events::{book_key, topic_key};
use bazar_api::model::topic_key as normalize_topic;
use bazar_api::{Book, BookPatch, Group, NewBook};
use serde::{Deserialize, Serialize};

use crate::sm::{Applied, StateMachine, Txn, View};
use crate::store::{be, from_be};
use compat::decode_reservation;

openraft::declare_raft_types!(
    /// openraft types of the catalog group.
    pub CatalogTypes:
        D = CatalogCommand,
        R = CatalogResponse,
        Node = crate::incarnation::Member,
);

/// A change to the catalog.
///
/// Stored as [`crate::catalog::compat::CatalogWire`], which also reads the layouts of
/// earlier versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "crate::catalog::compat::CatalogWire", into = "crate::catalog::compat::CatalogWire")]
pub enum CatalogCommand {
    /// Add a book (already validated); the catalog assigns its id.
    AddBook(NewBook),
    /// Add `quantity` copies to a book's stock.
    Restock {
        /// The book.
        book_id: u64,
        /// Copies to add.
        quantity: u64,
    },
    /// Change a book's price, title or topic (already validated).
    Update {
        /// The book.
        book_id: u64,
        /// What to change.
        patch: BookPatch,
    },
    /// Take `quantity` copies out of stock for a buy, once per key.
    Reserve {
        /// The buy's idempotency key: the identity of the reservation.
        key: String,
        /// The book.
        book_id: u64,
        /// Copies to take.
        quantity: u64,
        /// When the coordinator started the buy (RFC 3339), kept so that the
        /// order can be recorded from the reservation alone after a crash.
        created_at: String,
        /// Who buys, kept for the same reason.
        buyer: Option<String>,
        /// The orders applied index of the view in which the proposer found
        /// no settled order under the key (0: no purge had happened in its
        /// view); a new reservation decided on a view older than the last
        /// purge is refused (see [`crate::retention`]).
        seen: u64,
    },
    /// Remove recorded buys from the unclaimed set.
    Claim {
        /// Their idempotency keys.
        keys: Vec<String>,
    },
    /// Load initial books; a book whose id or ISBN exists is skipped, so
    /// re-proposing a chunk after a crash is harmless.
    Seed {
        /// The books, with their ids.
        books: Vec<Book>,
    },
    /// Mark the initial load as complete.
    SeedComplete,
    /// Purge the reservations of settled buys past the retention window,
    /// before the orders group forgets their keys
    /// ([`crate::orders::OrdersCommand::Forget`]); see [`crate::retention`].
    Purge {
        /// The orders applied index at which every one of these buys was
        /// settled: from now on, a new reservation decided on an older view
        /// of the orders is refused.
        fence: u64,
        /// The keys, each with the log index of the reservation it must
        /// still name (a reservation made again under the key after an
        /// earlier purge is another buy's, and stays).
        keys: Vec<(String, u64)>,
    },
}

impl fmt::Display for CatalogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogCommand::AddBook(b) => write!(f, "add-book({})", b.isbn),
            CatalogCommand::Restock { book_id, quantity } => write!(f, "restock({book_id}, {quantity})"),
            CatalogCommand::Update { book_id, .. } => write!(f, "update({book_id})"),
            CatalogCommand::Reserve { book_id, quantity, .. } => write!(f, "reserve(book {book_id}, {quantity})"),
            CatalogCommand::Claim { keys } => write!(f, "claim({} buys)", keys.len()),
            CatalogCommand::Seed { books } => write!(f, "seed({} books)", books.len()),
            CatalogCommand::SeedComplete => write!(f, "seed-complete"),
            CatalogCommand::Purge { keys, .. } => write!(f, "purge({} reservations)", keys.len()),
        }
    }
}

/// What happened to a reservation's copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationOutcome {
    /// The copies were taken out of stock at this price.
    Reserved {
        /// Price per copy at reservation time.
        unit_price_cents: u64,
    },
    /// Not enough stock; nothing changed.
    OutOfStock {
        /// Stock when the reservation was refused.
        available: u64,
    },
    /// No such book; nothing changed, and no order is recorded.
    NoSuchBook,
}

/// A reservation, remembered under the buy's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The book.
    pub book_id: u64,
    /// Copies asked for.
    pub quantity: u64,
    /// When the coordinator started the buy.
    pub created_at: String,
    /// What happened.
    pub outcome: ReservationOutcome,
    /// The catalog log index it was committed at.
    pub index: u64,
    /// Its place in the unclaimed set, when it needs an order.
    pub claim_seq: Option<u64>,
    /// Who buys. Kept last: rows stored before buyers existed end before it
    /// (see [`crate::compat`]).
    pub buyer: Option<String>,
}

/// What a catalog command returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogResponse {
    /// Done, nothing to report (also the answer to blank and membership entries).
    #[default]
    Done,
    /// The book after the change.
    Book(Book),
    /// No book has that id.
    NotFound,
    /// Another book has that ISBN.
    DuplicateIsbn {
        /// The book that has it.
        existing_id: u64,
    },
    /// The restock would overflow the stock counter.
    StockOverflow,
    /// The reservation (the first one, when re-applied).
    Reservation(Reservation),
    /// The idempotency key was used for a different book, quantity or buyer.
    KeyReused,
    /// How many seed books were inserted.
    Seeded {
        /// Books inserted (skipped ones not counted).
        inserted: u64,
    },
    /// Refused, nothing changed: a new reservation decided on a view of the
    /// orders older than the last purge (see [`crate::retention`]); the
    /// proposer looks again and retries.
    Stale,
    /// How many reservations a [`CatalogCommand::Purge`] removed.
    Purged {
        /// Reservations removed (those already gone are not counted).
        reservations: u64,
    },
}

/// The catalog state machine.
pub struct Catalog;

const COUNTER_NEXT_ID: &[u8] = b"cnext_book_id";
const FLAG_SEEDED: &[u8] = b"cseeded";

/// Key change events use for "anything in the catalog may have changed".
pub const ALL_KEY: &str = "catalog/*";

fn book_row(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'b');
    k.extend_from_slice(&be(id));
    k
}

fn topic_prefix(topic: &str) -> Vec<u8> {
    let topic = normalize_topic(topic);
    let mut k = Vec::with_capacity(topic.len() + 10);
    k.push(b't');
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k
}

fn topic_row(topic: &str, id: u64) -> Vec<u8> {
    let mut k = topic_prefix(topic);
    k.extend_from_slice(&be(id));
    k
}

fn isbn_row(isbn: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(14);
    k.push(b'i');
    k.extend_from_slice(isbn.as_bytes());
    k
}

fn reservation_row(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'r');
    k.extend_from_slice(key.as_bytes());
    k
}

fn unclaimed_row(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'u');
    k.extend_from_slice(&be(seq));
    k
}

const COUNTER_NEXT_CLAIM: &[u8] = b"cnext_claim_seq";
const COUNTER_CLAIM_FLOOR: &[u8] = b"cclaim_floor";
/// The orders index of the last purge's fence (see `Purge`).
const COUNTER_PURGE_FENCE: &[u8] = b"cpurge_fence";
/// Reservations made since retention existed and not purged yet.
const COUNTER_RETAINED: &[u8] = b"cretained_reservations";
/// Reservations purged, in total.
const COUNTER_PURGED: &[u8] = b"cpurged_reservations";

fn counter(txn: &Txn<'_>, name: &[u8]) -> io::Result<u64> {
    Ok(txn.get_value::<u64>(name)?.unwrap_or(0))
}

fn keys_of(book: &Book) -> Vec<String> {
    vec![book_key(book.id), topic_key(&normalize_topic(&book.topic))]
}

/// Writes a book and its index rows.
fn insert(txn: &mut Txn<'_>, book: &Book) -> io::Result<()> {
    txn.put_value(book_row(book.id), book)?;
    txn.put(topic_row(&book.topic, book.id), Vec::new());
    txn.put_value(isbn_row(&book.isbn), &book.id)
}

impl StateMachine for Catalog {
    type Command = CatalogCommand;
    type Response = CatalogResponse;
    type C = CatalogTypes;
    const GROUP: Group = Group::Catalog;

    fn row_kind(prefix: u8) -> &'static str {
        match prefix {
            b'b' => "books",
            b't' => "topic_index",
            b'i' => "isbn_index",
            b'r' => "reservations",
            b'u' => "unclaimed",
            b'c' => "counters",
            _ => "other",
        }
    }

    fn apply(txn: &mut Txn<'_>, index: u64, cmd: &CatalogCommand) -> io::Result<Applied<CatalogResponse>> {
        let nothing = |response| Ok(Applied { response, keys: Vec::new() });
        match cmd {
            CatalogCommand::AddBook(new) => {
                if let Some(existing_id) = txn.get_value::<u64>(&isbn_row(&new.isbn))? {
                    return nothing(CatalogResponse::DuplicateIsbn { existing_id });
                }
                let id = txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1);
                let book = Book {
                    id,
                    isbn: new.isbn.clone(),
                    title: new.title.clone(),
                    topic: new.topic.clone(),
                    price_cents: new.price_cents,
                    stock: new.stock,
                };
                insert(txn, &book)?;
                txn.put_value(COUNTER_NEXT_ID.to_vec(), &(id + 1))?;
                let keys = keys_of(&book);
                Ok(Applied { response: CatalogResponse::Book(book), keys })
            }
            CatalogCommand::Restock { book_id, quantity } => {
                let Some(mut book) = txn.get_value::<Book>(&book_row(*book_id))? else {
                    return nothing(CatalogResponse::NotFound);
                };
                let Some(stock) = book.stock.checked_add(*quantity) else {
                    return nothing(CatalogResponse::StockOverflow);
                };
                book.stock = stock;
                txn.put_value(book_row(book.id), &book)?;
                let keys = keys_of(&book);
                Ok(Applied { response: CatalogResponse::Book(book), keys })
            }
            CatalogCommand::Update { book_id, patch } => {
                let Some(mut book) = txn.get_value::<Book>(&book_row(*book_id))? else {
                    return nothing(CatalogResponse::NotFound);
                };
                let mut keys = keys_of(&book);
                if let Some(price) = patch.price_cents {
                    book.price_cents = price;
                }
                if let Some(title) = &patch.title {
                    book.title = title.clone();
                }
                if let Some(topic) = &patch.topic {
                    if normalize_topic(topic) != normalize_topic(&book.topic) {
                        txn.delete(topic_row(&book.topic, book.id));
                        txn.put(topic_row(topic, book.id), Vec::new());
                        keys.push(topic_key(&normalize_topic(topic)));
                    }
                    book.topic = topic.clone();
                }
                txn.put_value(book_row(book.id), &book)?;
                Ok(Applied { response: CatalogResponse::Book(book), keys })
            }
            CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer, seen } => {
                let row = reservation_row(key);
                if let Some(first) = txn.get_with(&row, decode_reservation)? {
                    if first.book_id != *book_id || first.quantity != *quantity || first.buyer != *buyer {
                        return nothing(CatalogResponse::KeyReused);
                    }
                    return nothing(CatalogResponse::Reservation(first));
                }
                if *seen < counter(txn, COUNTER_PURGE_FENCE)? {
                    // The proposer looked at the orders before this key's
                    // buy may have been settled and purged: reserving now
                    // could take stock a second time for one order.
                    return nothing(CatalogResponse::Stale);
                }
                let (outcome, keys) = match txn.get_value::<Book>(&book_row(*book_id))? {
                    None => (ReservationOutcome::NoSuchBook, Vec::new()),
                    Some(book) if book.stock < *quantity => {
                        (ReservationOutcome::OutOfStock { available: book.stock }, Vec::new())
                    }
                    Some(mut book) => {
                        book.stock -= quantity;
                        txn.put_value(book_row(book.id), &book)?;
                        (ReservationOutcome::Reserved { unit_price_cents: book.price_cents }, keys_of(&book))
                    }
                };
                let claim_seq = if outcome == ReservationOutcome::NoSuchBook {
                    None
                } else {
                    let seq = txn.get_value::<u64>(COUNTER_NEXT_CLAIM)?.unwrap_or(0);
                    txn.put_value(unclaimed_row(seq), key)?;
                    txn.put_value(COUNTER_NEXT_CLAIM.to_vec(), &(seq + 1))?;
                    Some(seq)
                };
                let reservation = Reservation {
                    book_id: *book_id,
                    quantity: *quantity,
                    created_at: created_at.clone(),
                    outcome,
                    index,
                    claim_seq,
                    buyer: buyer.clone(),
                };
                txn.put_value(row, &reservation)?;
                let retained = counter(txn, COUNTER_RETAINED)?;
                txn.put_value(COUNTER_RETAINED.to_vec(), &(retained + 1))?;
                Ok(Applied { response: CatalogResponse::Reservation(reservation), keys })
            }
            CatalogCommand::Purge { fence, keys } => {
                let mut purged = 0;
                for (key, reservation_index) in keys {
                    let row = reservation_row(key);
                    let Some(r) = txn.get_with(&row, decode_reservation)? else { continue };
                    if r.index != *reservation_index {
                        continue;
                    }
                    // A settled buy may not be claimed yet: its place in the
                    // unclaimed set goes with it.
                    if let Some(seq) = r.claim_seq {
                        txn.delete(unclaimed_row(seq));
                    }
                    txn.delete(row);
                    purged += 1;
                }
                let next = txn.get_value::<u64>(COUNTER_NEXT_CLAIM)?.unwrap_or(0);
                txn.raise_floor(COUNTER_CLAIM_FLOOR, 0, next, unclaimed_row)?;
                let was = counter(txn, COUNTER_PURGE_FENCE)?;
                txn.put_value(COUNTER_PURGE_FENCE.to_vec(), &was.max(*fence))?;
                let retained = counter(txn, COUNTER_RETAINED)?;
                txn.put_value(COUNTER_RETAINED.to_vec(), &retained.saturating_sub(purged))?;
                let total = counter(txn, COUNTER_PURGED)?;
                txn.put_value(COUNTER_PURGED.to_vec(), &(total + purged))?;
                nothing(CatalogResponse::Purged { reservations: purged })
            }
            CatalogCommand::Claim { keys } => {
                for key in keys {
                    if let Some(seq) =
                        txn.get_with(&reservation_row(key), decode_reservation)?.and_then(|r| r.claim_seq)
                    {
                        txn.delete(unclaimed_row(seq));
                    }
                }
                // Move the floor past the claimed front of the set.
                let next = txn.get_value::<u64>(COUNTER_NEXT_CLAIM)?.unwrap_or(0);
                txn.raise_floor(COUNTER_CLAIM_FLOOR, 0, next, unclaimed_row)?;
                nothing(CatalogResponse::Done)
            }
            CatalogCommand::Seed { books } => {
                let mut next_id = txn.get_value::<u64>(COUNTER_NEXT_ID)?.unwrap_or(1);
                let mut inserted = 0;
                for book in books {
                    if txn.contains(&book_row(book.id))? || txn.contains(&isbn_row(&book.isbn))? {
                        continue;
                    }
                    insert(txn, book)?;
                    next_id = next_id.max(book.id + 1);
                    inserted += 1;
                }
                txn.put_value(COUNTER_NEXT_ID.to_vec(), &next_id)?;
                let keys = if inserted > 0 { vec![ALL_KEY.to_string()] } else { Vec::new() };
                Ok(Applied { response: CatalogResponse::Seeded { inserted }, keys })
            }
            CatalogCommand::SeedComplete => {
                txn.put_value(FLAG_SEEDED.to_vec(), &true)?;
                nothing(CatalogResponse::Done)
            }
        }
    }
}

/// Reads of the catalog, from a consistent view.
impl Catalog {
    /// The book with id `id`.
    pub fn book(view: &View<'_>, id: u64) -> io::Result<Option<Book>> {
        view.get(&book_row(id))
    }

    /// Up to `limit` books with ids above `after`, in id order, under `topic`
    /// (all books when `None`), and the cursor of the next page if there is one.
    pub fn search(
        view: &View<'_>,
        topic: Option<&str>,
        after: u64,
        limit: usize,
    ) -> io::Result<(Vec<Book>, Option<u64>)> {
        let mut books = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        match topic {
            Some(topic) => {
                let prefix = topic_prefix(topic);
                let start = topic_row(topic, after.saturating_add(1));
                let mut ids = Vec::with_capacity(limit.min(1024));
                view.scan(&prefix, &start, |key, _| {
                    if ids.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    ids.push(from_be(&key[prefix.len()..]).ok_or_else(|| io::Error::other("bad topic row"))?);
                    Ok(true)
                })?;
                for id in ids {
                    // The index and the rows come from one snapshot, so the book exists.
                    if let Some(book) = Catalog::book(view, id)? {
                        books.push(book);
                    }
                }
            }
            None => {
                view.scan(b"b", &book_row(after.saturating_add(1)), |_, value| {
                    if books.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    books.push(crate::store::log::decode(value)?);
                    Ok(true)
                })?;
            }
        }
        let next = if more { books.last().map(|b| b.id) } else { None };
        Ok((books, next))
    }

    /// The reservation made under `key`.
    pub fn reservation(view: &View<'_>, key: &str) -> io::Result<Option<Reservation>> {
        view.get_with(&reservation_row(key), decode_reservation)
    }

    /// How many reservations are unclaimed, counting up to `limit`.
    pub fn unclaimed_count(view: &View<'_>, limit: u64) -> io::Result<u64> {
        let mut n = 0;
        Catalog::scan_unclaimed(view, |_| {
            n += 1;
            Ok(n < limit)
        })?;
        Ok(n)
    }

    /// Up to `limit` unclaimed reservations, oldest first: buys whose order
    /// may not be recorded yet.
    pub fn unclaimed(view: &View<'_>, limit: usize) -> io::Result<Vec<(String, Reservation)>> {
        let mut keys = Vec::new();
        Catalog::scan_unclaimed(view, |key| {
            keys.push(key);
            Ok(keys.len() < limit)
        })?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(r) = Catalog::reservation(view, &key)? {
                out.push((key, r));
            }
        }
        Ok(out)
    }

    fn scan_unclaimed(view: &View<'_>, mut visit: impl FnMut(String) -> io::Result<bool>) -> io::Result<()> {
        let floor = view.get::<u64>(COUNTER_CLAIM_FLOOR)?.unwrap_or(0);
        view.scan(b"u", &unclaimed_row(floor), |_, value| visit(crate::store::log::decode(value)?))
    }

    /// Whether any reservation was ever purged: then proposers must say
    /// which view of the orders they decided on (see [`crate::retention`]).
    pub fn fenced(view: &View<'_>) -> io::Result<bool> {
        Ok(view.get::<u64>(COUNTER_PURGE_FENCE)?.unwrap_or(0) > 0)
    }

    /// Reservations retained (those made since retention existed) and
    /// purged in total.
    pub fn reservation_counts(view: &View<'_>) -> io::Result<(u64, u64)> {
        Ok((view.get::<u64>(COUNTER_RETAINED)?.unwrap_or(0), view.get::<u64>(COUNTER_PURGED)?.unwrap_or(0)))
    }

    /// Whether the initial catalog load completed.
    pub fn is_seeded(view: &View<'_>) -> io::Result<bool> {
        Ok(view.get::<bool>(FLAG_SEEDED)?.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::testing::TestDb;

    fn book(id: u64, stock: u64) -> Book {
        Book {
            id,
            isbn: bazar_api::isbn::from_number(id),
            title: format!("Book {id}"),
            topic: "distributed systems".into(),
            price_cents: 1000 + id,
            stock,
        }
    }

    fn seeded(books: Vec<Book>) -> TestDb {
        let mut db = TestDb::new();
        db.apply::<Catalog>(CatalogCommand::Seed { books });
        db
    }

    fn stock(db: &TestDb, id: u64) -> u64 {
        Catalog::book(&db.view::<Catalog>(), id).unwrap().unwrap().stock
    }

    fn reserve(db: &mut TestDb, key: &str, book_id: u64, quantity: u64) -> CatalogResponse {
        let created_at = "2026-11-21T10:00:00.000Z".to_string();
        db.apply::<Catalog>(CatalogCommand::Reserve {
            seen: 0,
            key: key.into(),
            book_id,
            quantity,
            created_at,
            buyer: None,
        })
        .response
    }

    /// The outcome of a reservation answer.
    fn outcome(r: &CatalogResponse) -> ReservationOutcome {
        match r {
            CatalogResponse::Reservation(r) => r.outcome,
            other => panic!("expected a reservation, got {other:?}"),
        }
    }

    fn unclaimed(db: &TestDb) -> Vec<String> {
        Catalog::unclaimed(&db.view::<Catalog>(), 100).unwrap().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn buy_takes_copies_out_of_stock_at_the_current_price() {
        let mut db = seeded(vec![book(1, 5)]);
        let r = reserve(&mut db, "k1", 1, 3);
        assert_eq!(outcome(&r), ReservationOutcome::Reserved { unit_price_cents: 1001 });
        assert_eq!(stock(&db, 1), 2);
        assert_eq!(unclaimed(&db), vec!["k1".to_string()], "the buy awaits its order");
    }

    #[test]
    fn out_of_stock_changes_nothing_but_still_needs_an_order() {
        let mut db = seeded(vec![book(1, 5)]);
        let created_at = String::from("t");
        let applied = db.apply::<Catalog>(CatalogCommand::Reserve {
            seen: 0,
            key: "k1".into(),
            book_id: 1,
            quantity: 6,
            created_at,
            buyer: None,
        });
        assert_eq!(outcome(&applied.response), ReservationOutcome::OutOfStock { available: 5 });
        assert!(applied.keys.is_empty(), "no change, no event");
        assert_eq!(stock(&db, 1), 5);
        assert_eq!(unclaimed(&db), vec!["k1".to_string()], "a rejected order is recorded too");
    }

    #[test]
    fn idempotent_retry_of_a_reservation_returns_the_first_outcome() {
        let mut db = seeded(vec![book(1, 5), book(2, 1)]);
        let first = reserve(&mut db, "k7", 1, 3);
        assert_eq!(reserve(&mut db, "k7", 1, 3), first, "the same reservation, index included");
        assert_eq!(stock(&db, 1), 2, "stock taken once");

        // A refused reservation stays refused, even after a restock.
        let refused = reserve(&mut db, "k8", 2, 2);
        db.apply::<Catalog>(CatalogCommand::Restock { book_id: 2, quantity: 10 });
        assert_eq!(reserve(&mut db, "k8", 2, 2), refused);
        assert_eq!(stock(&db, 2), 11);
        let remembered = Catalog::reservation(&db.view::<Catalog>(), "k8").unwrap().unwrap();
        assert_eq!(remembered.outcome, ReservationOutcome::OutOfStock { available: 1 });
    }

    #[test]
    fn a_key_reused_for_another_buy_is_refused_and_changes_nothing() {
        let mut db = seeded(vec![book(1, 5), book(2, 5)]);
        reserve(&mut db, "k", 1, 1);
        assert_eq!(reserve(&mut db, "k", 1, 2), CatalogResponse::KeyReused);
        assert_eq!(reserve(&mut db, "k", 2, 1), CatalogResponse::KeyReused);
        let by_another = CatalogCommand::Reserve {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 1,
            created_at: "t".into(),
            buyer: Some("manar".into()),
        };
        assert_eq!(db.apply::<Catalog>(by_another).response, CatalogResponse::KeyReused, "another buyer");
        assert_eq!((stock(&db, 1), stock(&db, 2)), (4, 5));
    }

    #[test]
    fn a_reservation_remembers_its_buyer() {
        let mut db = seeded(vec![book(1, 5)]);
        let reserve = CatalogCommand::Reserve {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 1,
            created_at: "t".into(),
            buyer: Some("manar".into()),
        };
        let CatalogResponse::Reservation(first) = db.apply::<Catalog>(reserve.clone()).response else { panic!() };
        assert_eq!(first.buyer.as_deref(), Some("manar"));
        assert_eq!(db.apply::<Catalog>(reserve).response, CatalogResponse::Reservation(first.clone()));
        assert_eq!(Catalog::reservation(&db.view::<Catalog>(), "k").unwrap(), Some(first));
    }

    #[test]
    fn reservation_for_an_unknown_book_is_refused_remembered_and_needs_no_order() {
        let mut db = seeded(vec![book(1, 5)]);
        assert_eq!(outcome(&reserve(&mut db, "k1", 99, 1)), ReservationOutcome::NoSuchBook);
        let remembered = Catalog::reservation(&db.view::<Catalog>(), "k1").unwrap().unwrap();
        assert_eq!(remembered.outcome, ReservationOutcome::NoSuchBook);
        assert!(unclaimed(&db).is_empty());
    }

    #[test]
    fn the_unclaimed_set_keeps_reservation_order_and_skips_claimed_rows() {
        let mut db = seeded(vec![book(1, 10)]);
        for key in ["a", "b", "c", "d"] {
            reserve(&mut db, key, 1, 1);
        }
        db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["b".into()] });
        assert_eq!(unclaimed(&db), vec!["a", "c", "d"]);
        // Claiming the oldest moves the floor past every claimed row at the front.
        db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["a".into()] });
        let view = db.view::<Catalog>();
        assert_eq!(view.get::<u64>(COUNTER_CLAIM_FLOOR).unwrap(), Some(2), "floor at c");
        assert_eq!(Catalog::unclaimed_count(&view, 100).unwrap(), 2);
        drop(view);
        db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["c".into(), "d".into()] });
        assert!(unclaimed(&db).is_empty());
        assert_eq!(db.view::<Catalog>().get::<u64>(COUNTER_CLAIM_FLOOR).unwrap(), Some(4));
        // New reservations land after the floor.
        reserve(&mut db, "e", 1, 1);
        assert_eq!(unclaimed(&db), vec!["e"]);
    }

    #[test]
    fn claiming_removes_recorded_buys_from_the_unclaimed_set_only() {
        let mut db = seeded(vec![book(1, 5)]);
        reserve(&mut db, "a", 1, 1);
        reserve(&mut db, "b", 1, 1);
        db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["a".into(), "never-reserved".into()] });
        assert_eq!(unclaimed(&db), vec!["b".to_string()]);
        // Claiming twice is harmless; the reservation itself is kept.
        db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["a".into()] });
        assert!(Catalog::reservation(&db.view::<Catalog>(), "a").unwrap().is_some());
        assert_eq!(stock(&db, 1), 3);
    }

    #[test]
    fn restock_adds_copies_and_refuses_unknown_books_and_overflow() {
        let mut db = seeded(vec![book(1, 5)]);
        let r = db.apply::<Catalog>(CatalogCommand::Restock { book_id: 1, quantity: 10 });
        assert!(matches!(r.response, CatalogResponse::Book(ref b) if b.stock == 15));
        assert_eq!(r.keys, vec!["book/1".to_string(), "topic/distributed systems".to_string()]);
        let r = db.apply::<Catalog>(CatalogCommand::Restock { book_id: 2, quantity: 1 });
        assert_eq!(r.response, CatalogResponse::NotFound);
        let r = db.apply::<Catalog>(CatalogCommand::Restock { book_id: 1, quantity: u64::MAX });
        assert_eq!(r.response, CatalogResponse::StockOverflow);
        assert_eq!(stock(&db, 1), 15);
    }

    #[test]
    fn price_change_applies_to_later_buys_only() {
        let mut db = seeded(vec![book(1, 5)]);
        reserve(&mut db, "k1", 1, 1);
        let patch = BookPatch { price_cents: Some(4242), ..Default::default() };
        db.apply::<Catalog>(CatalogCommand::Update { book_id: 1, patch });
        assert_eq!(outcome(&reserve(&mut db, "k2", 1, 1)), ReservationOutcome::Reserved { unit_price_cents: 4242 });
        let first = Catalog::reservation(&db.view::<Catalog>(), "k1").unwrap().unwrap();
        assert_eq!(first.outcome, ReservationOutcome::Reserved { unit_price_cents: 1001 });
    }

    #[test]
    fn topic_change_moves_the_book_between_searches() {
        let mut db = seeded(vec![book(1, 5), book(2, 5)]);
        let patch = BookPatch { topic: Some("Cooking".into()), ..Default::default() };
        let r = db.apply::<Catalog>(CatalogCommand::Update { book_id: 2, patch });
        assert!(
            r.keys.contains(&"topic/cooking".to_string()) && r.keys.contains(&"topic/distributed systems".to_string())
        );
        let view = db.view::<Catalog>();
        let (ds, _) = Catalog::search(&view, Some("distributed systems"), 0, 10).unwrap();
        let (cooking, _) = Catalog::search(&view, Some("COOKING "), 0, 10).unwrap();
        assert_eq!(ds.iter().map(|b| b.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(cooking.iter().map(|b| b.id).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn search_pages_through_a_topic_in_id_order() {
        let db = seeded((1..=5).map(|i| book(i, 1)).collect());
        let view = db.view::<Catalog>();
        let (page1, next) = Catalog::search(&view, Some("distributed systems"), 0, 2).unwrap();
        assert_eq!(page1.iter().map(|b| b.id).collect::<Vec<_>>(), vec![1, 2]);
        let (page2, next) = Catalog::search(&view, Some("distributed systems"), next.unwrap(), 2).unwrap();
        assert_eq!(page2.iter().map(|b| b.id).collect::<Vec<_>>(), vec![3, 4]);
        let (page3, next) = Catalog::search(&view, Some("distributed systems"), next.unwrap(), 2).unwrap();
        assert_eq!((page3.len(), next), (1, None));
        let (none, next) = Catalog::search(&view, Some("nothing here"), 0, 2).unwrap();
        assert!(none.is_empty() && next.is_none());
        let (all, _) = Catalog::search(&view, None, 3, 10).unwrap();
        assert_eq!(all.iter().map(|b| b.id).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn adding_a_book_assigns_the_next_id_and_refuses_duplicate_isbns() {
        let mut db = seeded(vec![book(1, 5), book(7, 5)]);
        let new =
            NewBook { isbn: "9780306406157".into(), title: "New".into(), topic: "t".into(), price_cents: 1, stock: 0 };
        let r = db.apply::<Catalog>(CatalogCommand::AddBook(new.clone()));
        assert!(matches!(r.response, CatalogResponse::Book(ref b) if b.id == 8));
        let r = db.apply::<Catalog>(CatalogCommand::AddBook(new));
        assert_eq!(r.response, CatalogResponse::DuplicateIsbn { existing_id: 8 });
    }

    #[test]
    fn reseeding_never_overwrites_books_that_changed() {
        let mut db = seeded(vec![book(1, 5)]);
        reserve(&mut db, "k1", 1, 2);
        let r = db.apply::<Catalog>(CatalogCommand::Seed { books: vec![book(1, 5), book(2, 5)] });
        assert_eq!(r.response, CatalogResponse::Seeded { inserted: 1 });
        assert_eq!(stock(&db, 1), 3);
        assert!(!Catalog::is_seeded(&db.view::<Catalog>()).unwrap());
        db.apply::<Catalog>(CatalogCommand::SeedComplete);
        assert!(Catalog::is_seeded(&db.view::<Catalog>()).unwrap());
    }

    #[test]
    fn stock_is_conserved_and_never_negative_over_random_operations() {
        let mut db = seeded((1..=3).map(|i| book(i, 10)).collect());
        let mut rng_state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let mut restocked = [0u64; 4];
        let mut reserved = [0u64; 4];
        let mut orders: Vec<(u64, u64, u64, CatalogResponse)> = Vec::new();
        for order_id in 1..=500 {
            let book_id = next() % 3 + 1;
            let quantity = next() % 7 + 1;
            match next() % 4 {
                0 => {
                    db.apply::<Catalog>(CatalogCommand::Restock { book_id, quantity });
                    restocked[book_id as usize] += quantity;
                }
                1 if !orders.is_empty() => {
                    // Retry an earlier order, as a new orders leader would.
                    let (id, b, q, first) = orders[(next() % orders.len() as u64) as usize].clone();
                    assert_eq!(reserve(&mut db, &format!("k{id}"), b, q), first, "retry of buy {id}");
                }
                _ => {
                    let answer = reserve(&mut db, &format!("k{order_id}"), book_id, quantity);
                    if let ReservationOutcome::Reserved { .. } = outcome(&answer) {
                        reserved[book_id as usize] += quantity;
                    }
                    orders.push((order_id, book_id, quantity, answer));
                }
            }
        }
        for id in 1..=3u64 {
            assert_eq!(stock(&db, id), 10 + restocked[id as usize] - reserved[id as usize], "book {id}");
        }
    }
}
