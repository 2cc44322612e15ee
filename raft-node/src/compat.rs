//! Reading what earlier versions wrote.
//!
//! Log entries, forwarded writes and state-machine rows are postcard, which
//! is not self-describing: a value is its fields in order, and an enum
//! variant is its position. So a stored layout is never changed in place.
//! A new layout gets a new variant (commands) or a new trailing field (rows),
//! and this module reads both, so that a node reads the logs, snapshots and
//! data directories written by the versions before it.
//!
//! # Versions
//! | version | what changed | how old bytes are read |
//! |---|---|---|
//! | 1 | (the first layout) | |
//! | 2 | buys name their buyer: [`OrdersCommand`] and [`CatalogCommand::Reserve`] carry `buyer`; [`Order`] and [`Reservation`] rows end with it | commands: the version-1 variants keep their positions and are read with no buyer; rows: a row that ends before `buyer` is a version-1 row |
//! | 3 | idempotency keys are kept for a retention window: `Place`, `Reserve`, `Record` and `Settle` carry the view they were decided on (`seen`, `catalog_seen`); new commands `Forget` (orders) and `Purge` (catalog) | the version-1 and -2 variants keep their positions and are read with a view of 0 (decided before any purge) |
//!
//! A command is written in the oldest layout that holds it: a buy that names
//! no buyer is still written as version 1 wrote it, and a command decided
//! on a view of 0 (no key was ever purged in the proposer's view) as
//! version 2 or 1 wrote it. A command read with a view of 0 is refused as
//! stale once a purge has happened, which is safe: its proposer looks
//! again and resends it in the new layout. So during a rolling
//! upgrade the nodes not yet restarted keep reading the log, as long as no
//! buy names a buyer before every node runs version 2 (an older node cannot
//! read a newer layout). Rows have no such concern between nodes except in
//! snapshots, and an older node reading a newer row ignores the trailing
//! field (postcard ignores trailing bytes).

// The frozen layouts below mirror, field for field, types documented where
// they live now (`Order`, `Reservation`, the commands); their fields are
// not documented twice.
#![allow(missing_docs)]

use std::io;

use bazar_api::{Book, BookPatch, NewBook, Order, OrderStatus};
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogCommand, Reservation, ReservationOutcome};
use crate::orders::{OrdersCommand, Outcome, Settlement};

fn invalid(e: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// An [`Order`] row of either version.
pub fn decode_order(bytes: &[u8]) -> io::Result<Order> {
    match postcard::from_bytes::<Order>(bytes) {
        Ok(order) => Ok(order),
        Err(new) => match postcard::from_bytes::<OrderV1>(bytes) {
            Ok(v1) => Ok(v1.into()),
            Err(_) => Err(invalid(new)),
        },
    }
}

/// A [`Reservation`] row of either version.
pub fn decode_reservation(bytes: &[u8]) -> io::Result<Reservation> {
    match postcard::from_bytes::<Reservation>(bytes) {
        Ok(r) => Ok(r),
        Err(new) => match postcard::from_bytes::<ReservationV1>(bytes) {
            Ok(v1) => Ok(v1.into()),
            Err(_) => Err(invalid(new)),
        },
    }
}

/// An order as version 1 stored it: an [`Order`] without `buyer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderV1 {
    pub order_id: u64,
    pub book_id: u64,
    pub quantity: u64,
    pub unit_price_cents: u64,
    pub total_cents: u64,
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub created_at: String,
    pub idempotency_key: Option<String>,
}

impl From<OrderV1> for Order {
    fn from(o: OrderV1) -> Order {
        let OrderV1 {
            order_id,
            book_id,
            quantity,
            unit_price_cents,
            total_cents,
            status,
            reason,
            created_at,
            idempotency_key,
        } = o;
        Order {
            order_id,
            book_id,
            quantity,
            unit_price_cents,
            total_cents,
            status,
            reason,
            created_at,
            idempotency_key,
            buyer: None,
        }
    }
}

/// A reservation as version 1 stored it: a [`Reservation`] without `buyer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationV1 {
    pub book_id: u64,
    pub quantity: u64,
    pub created_at: String,
    pub outcome: ReservationOutcome,
    pub index: u64,
    pub claim_seq: Option<u64>,
}

impl From<ReservationV1> for Reservation {
    fn from(r: ReservationV1) -> Reservation {
        let ReservationV1 { book_id, quantity, created_at, outcome, index, claim_seq } = r;
        Reservation { book_id, quantity, created_at, outcome, index, claim_seq, buyer: None }
    }
}

/// A settlement as version 1 wrote it: a [`Settlement`] without `buyer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementV1 {
    pub key: String,
    pub book_id: u64,
    pub quantity: u64,
    pub created_at: String,
    pub outcome: Outcome,
    pub catalog_index: u64,
}

impl From<SettlementV1> for Settlement {
    fn from(s: SettlementV1) -> Settlement {
        let SettlementV1 { key, book_id, quantity, created_at, outcome, catalog_index } = s;
        Settlement { key, book_id, quantity, created_at, outcome, catalog_index, buyer: None }
    }
}

/// [`OrdersCommand`] as stored: every variant any version wrote, each at its
/// position forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersWire {
    /// Version 1 of `Record`.
    RecordV1(SettlementV1),
    /// Version 1 of `Place`.
    PlaceV1 { key: String, book_id: u64, quantity: u64, created_at: String },
    /// Version 1 of `Settle`.
    SettleV1 { records: Vec<SettlementV1> },
    /// `Record`, with the buyer.
    Record(Settlement),
    /// `Place`, with the buyer.
    Place { key: String, book_id: u64, quantity: u64, created_at: String, buyer: Option<String> },
    /// `Settle`, with the buyers.
    Settle { records: Vec<Settlement> },
    /// `Record`, with the catalog view it was decided on (version 3).
    RecordSeen { settlement: Settlement, catalog_seen: u64 },
    /// `Place`, with the orders view it was decided on (version 3).
    PlaceSeen { key: String, book_id: u64, quantity: u64, created_at: String, buyer: Option<String>, seen: u64 },
    /// `Settle`, with the catalog view it was decided on (version 3).
    SettleSeen { records: Vec<Settlement>, catalog_seen: u64 },
    /// `Forget` (version 3).
    Forget { catalog_index: u64, keys: Vec<(String, u64)> },
}

impl From<OrdersWire> for OrdersCommand {
    fn from(w: OrdersWire) -> OrdersCommand {
        match w {
            OrdersWire::RecordV1(s) => Settlement::from(s).into_record(0),
            OrdersWire::Record(s) => s.into_record(0),
            OrdersWire::RecordSeen { settlement, catalog_seen } => settlement.into_record(catalog_seen),
            OrdersWire::PlaceV1 { key, book_id, quantity, created_at } => {
                OrdersCommand::Place { key, book_id, quantity, created_at, buyer: None, seen: 0 }
            }
            OrdersWire::Place { key, book_id, quantity, created_at, buyer } => {
                OrdersCommand::Place { key, book_id, quantity, created_at, buyer, seen: 0 }
            }
            OrdersWire::PlaceSeen { key, book_id, quantity, created_at, buyer, seen } => {
                OrdersCommand::Place { key, book_id, quantity, created_at, buyer, seen }
            }
            OrdersWire::SettleV1 { records } => {
                OrdersCommand::Settle { records: records.into_iter().map(Settlement::from).collect(), catalog_seen: 0 }
            }
            OrdersWire::Settle { records } => OrdersCommand::Settle { records, catalog_seen: 0 },
            OrdersWire::SettleSeen { records, catalog_seen } => OrdersCommand::Settle { records, catalog_seen },
            OrdersWire::Forget { catalog_index, keys } => OrdersCommand::Forget { catalog_index, keys },
        }
    }
}

impl From<Settlement> for SettlementV1 {
    /// Drops the buyer: only for settlements that name none.
    fn from(s: Settlement) -> SettlementV1 {
        let Settlement { key, book_id, quantity, created_at, outcome, catalog_index, buyer: _ } = s;
        SettlementV1 { key, book_id, quantity, created_at, outcome, catalog_index }
    }
}

impl From<OrdersCommand> for OrdersWire {
    fn from(c: OrdersCommand) -> OrdersWire {
        match c {
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
                let s = Settlement { key, book_id, quantity, created_at, outcome, catalog_index, buyer };
                match (catalog_seen, &s.buyer) {
                    (0, None) => OrdersWire::RecordV1(s.into()),
                    (0, Some(_)) => OrdersWire::Record(s),
                    _ => OrdersWire::RecordSeen { settlement: s, catalog_seen },
                }
            }
            OrdersCommand::Place { key, book_id, quantity, created_at, buyer: None, seen: 0 } => {
                OrdersWire::PlaceV1 { key, book_id, quantity, created_at }
            }
            OrdersCommand::Place { key, book_id, quantity, created_at, buyer, seen: 0 } => {
                OrdersWire::Place { key, book_id, quantity, created_at, buyer }
            }
            OrdersCommand::Place { key, book_id, quantity, created_at, buyer, seen } => {
                OrdersWire::PlaceSeen { key, book_id, quantity, created_at, buyer, seen }
            }
            OrdersCommand::Settle { records, catalog_seen: 0 } if records.iter().all(|s| s.buyer.is_none()) => {
                OrdersWire::SettleV1 { records: records.into_iter().map(SettlementV1::from).collect() }
            }
            OrdersCommand::Settle { records, catalog_seen: 0 } => OrdersWire::Settle { records },
            OrdersCommand::Settle { records, catalog_seen } => OrdersWire::SettleSeen { records, catalog_seen },
            OrdersCommand::Forget { catalog_index, keys } => OrdersWire::Forget { catalog_index, keys },
        }
    }
}

/// [`CatalogCommand`] as stored: every variant any version wrote, each at
/// its position forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogWire {
    AddBook(NewBook),
    Restock {
        book_id: u64,
        quantity: u64,
    },
    Update {
        book_id: u64,
        patch: BookPatch,
    },
    /// Version 1 of `Reserve`.
    ReserveV1 {
        key: String,
        book_id: u64,
        quantity: u64,
        created_at: String,
    },
    Claim {
        keys: Vec<String>,
    },
    Seed {
        books: Vec<Book>,
    },
    SeedComplete,
    /// `Reserve`, with the buyer.
    Reserve {
        key: String,
        book_id: u64,
        quantity: u64,
        created_at: String,
        buyer: Option<String>,
    },
    /// `Reserve`, with the view of the orders it was decided on (version 3).
    ReserveSeen {
        key: String,
        book_id: u64,
        quantity: u64,
        created_at: String,
        buyer: Option<String>,
        seen: u64,
    },
    /// `Purge` (version 3).
    Purge {
        fence: u64,
        keys: Vec<(String, u64)>,
    },
}

impl From<CatalogWire> for CatalogCommand {
    fn from(w: CatalogWire) -> CatalogCommand {
        match w {
            CatalogWire::AddBook(b) => CatalogCommand::AddBook(b),
            CatalogWire::Restock { book_id, quantity } => CatalogCommand::Restock { book_id, quantity },
            CatalogWire::Update { book_id, patch } => CatalogCommand::Update { book_id, patch },
            CatalogWire::ReserveV1 { key, book_id, quantity, created_at } => {
                CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer: None, seen: 0 }
            }
            CatalogWire::Reserve { key, book_id, quantity, created_at, buyer } => {
                CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer, seen: 0 }
            }
            CatalogWire::ReserveSeen { key, book_id, quantity, created_at, buyer, seen } => {
                CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer, seen }
            }
            CatalogWire::Purge { fence, keys } => CatalogCommand::Purge { fence, keys },
            CatalogWire::Claim { keys } => CatalogCommand::Claim { keys },
            CatalogWire::Seed { books } => CatalogCommand::Seed { books },
            CatalogWire::SeedComplete => CatalogCommand::SeedComplete,
        }
    }
}

impl From<CatalogCommand> for CatalogWire {
    fn from(c: CatalogCommand) -> CatalogWire {
        match c {
            CatalogCommand::AddBook(b) => CatalogWire::AddBook(b),
            CatalogCommand::Restock { book_id, quantity } => CatalogWire::Restock { book_id, quantity },
            CatalogCommand::Update { book_id, patch } => CatalogWire::Update { book_id, patch },
            CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer: None, seen: 0 } => {
                CatalogWire::ReserveV1 { key, book_id, quantity, created_at }
            }
            CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer, seen: 0 } => {
                CatalogWire::Reserve { key, book_id, quantity, created_at, buyer }
            }
            CatalogCommand::Reserve { key, book_id, quantity, created_at, buyer, seen } => {
                CatalogWire::ReserveSeen { key, book_id, quantity, created_at, buyer, seen }
            }
            CatalogCommand::Purge { fence, keys } => CatalogWire::Purge { fence, keys },
            CatalogCommand::Claim { keys } => CatalogWire::Claim { keys },
            CatalogCommand::Seed { books } => CatalogWire::Seed { books },
            CatalogCommand::SeedComplete => CatalogWire::SeedComplete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::log::{decode, encode};

    /// Bytes exactly as version 1 wrote them: its types had these layouts
    /// (the `*V1` structs, and the first variants of the wire enums).
    fn v1_order() -> OrderV1 {
        OrderV1 {
            order_id: 7,
            book_id: 2,
            quantity: 3,
            unit_price_cents: 250,
            total_cents: 750,
            status: OrderStatus::Confirmed,
            reason: None,
            created_at: "2026-11-21T10:00:00.000Z".into(),
            idempotency_key: Some("k".into()),
        }
    }

    #[test]
    fn a_version_1_order_row_reads_with_no_buyer() {
        let bytes = encode(&v1_order()).unwrap();
        assert!(decode::<Order>(&bytes).is_err(), "the new layout alone cannot read it");
        let order = decode_order(&bytes).unwrap();
        assert_eq!(order, Order::from(v1_order()));
        assert_eq!(order.buyer, None);
    }

    #[test]
    fn a_new_order_row_keeps_its_buyer() {
        let order = Order { buyer: Some("manar".into()), ..Order::from(v1_order()) };
        assert_eq!(decode_order(&encode(&order).unwrap()).unwrap(), order);
        let anonymous = Order::from(v1_order());
        assert_eq!(decode_order(&encode(&anonymous).unwrap()).unwrap(), anonymous);
    }

    #[test]
    fn garbage_is_an_error_not_an_order() {
        assert!(decode_order(&[0xff, 0xff]).is_err());
        assert!(decode_reservation(&[]).is_err());
    }

    #[test]
    fn a_version_1_reservation_row_reads_with_no_buyer() {
        let v1 = ReservationV1 {
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            outcome: ReservationOutcome::Reserved { unit_price_cents: 10 },
            index: 9,
            claim_seq: Some(4),
        };
        let r = decode_reservation(&encode(&v1).unwrap()).unwrap();
        assert_eq!(r, Reservation::from(v1));
        let with_buyer = Reservation { buyer: Some("b".into()), ..r };
        assert_eq!(decode_reservation(&encode(&with_buyer).unwrap()).unwrap(), with_buyer);
    }

    /// Version 1's commands, with the layouts it wrote (positions 0-2 of the
    /// orders enum, 0-6 of the catalog enum).
    #[derive(Serialize)]
    enum OrdersV1 {
        Record { key: String, book_id: u64, quantity: u64, created_at: String, outcome: Outcome, catalog_index: u64 },
        Place { key: String, book_id: u64, quantity: u64, created_at: String },
        Settle { records: Vec<SettlementV1> },
    }

    #[derive(Serialize)]
    #[allow(dead_code)]
    enum CatalogV1 {
        AddBook(NewBook),
        Restock { book_id: u64, quantity: u64 },
        Update { book_id: u64, patch: BookPatch },
        Reserve { key: String, book_id: u64, quantity: u64, created_at: String },
        Claim { keys: Vec<String> },
    }

    fn settlement_v1() -> SettlementV1 {
        SettlementV1 {
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            outcome: Outcome::Confirmed { unit_price_cents: 5 },
            catalog_index: 3,
        }
    }

    #[test]
    fn version_1_log_entries_read_as_commands_with_no_buyer() {
        let place = OrdersV1::Place { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(
            decode::<OrdersCommand>(&encode(&place).unwrap()).unwrap(),
            OrdersCommand::Place {
                seen: 0,
                key: "k".into(),
                book_id: 1,
                quantity: 2,
                created_at: "t".into(),
                buyer: None
            }
        );
        let s = settlement_v1();
        let record = OrdersV1::Record {
            key: s.key.clone(),
            book_id: s.book_id,
            quantity: s.quantity,
            created_at: s.created_at.clone(),
            outcome: s.outcome.clone(),
            catalog_index: s.catalog_index,
        };
        let expected = Settlement::from(settlement_v1());
        assert_eq!(decode::<OrdersCommand>(&encode(&record).unwrap()).unwrap(), expected.clone().into_record(0));
        let settle = OrdersV1::Settle { records: vec![settlement_v1(), settlement_v1()] };
        assert_eq!(
            decode::<OrdersCommand>(&encode(&settle).unwrap()).unwrap(),
            OrdersCommand::Settle { catalog_seen: 0, records: vec![expected.clone(), expected] }
        );

        let reserve = CatalogV1::Reserve { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(
            decode::<CatalogCommand>(&encode(&reserve).unwrap()).unwrap(),
            CatalogCommand::Reserve {
                seen: 0,
                key: "k".into(),
                book_id: 1,
                quantity: 2,
                created_at: "t".into(),
                buyer: None
            }
        );
        let claim = CatalogV1::Claim { keys: vec!["a".into()] };
        assert_eq!(
            decode::<CatalogCommand>(&encode(&claim).unwrap()).unwrap(),
            CatalogCommand::Claim { keys: vec!["a".into()] }
        );
    }

    #[test]
    fn commands_without_a_buyer_are_written_as_version_1_wrote_them() {
        let place = OrdersCommand::Place {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: None,
        };
        let v1 = OrdersV1::Place { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(encode(&place).unwrap(), encode(&v1).unwrap());
        let settle = OrdersCommand::Settle { catalog_seen: 0, records: vec![Settlement::from(settlement_v1())] };
        let v1 = OrdersV1::Settle { records: vec![settlement_v1()] };
        assert_eq!(encode(&settle).unwrap(), encode(&v1).unwrap());
        let reserve = CatalogCommand::Reserve {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: None,
        };
        let v1 = CatalogV1::Reserve { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(encode(&reserve).unwrap(), encode(&v1).unwrap());
    }

    #[test]
    fn new_commands_round_trip_with_their_buyer() {
        let place = OrdersCommand::Place {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: Some("manar".into()),
        };
        assert_eq!(decode::<OrdersCommand>(&encode(&place).unwrap()).unwrap(), place);
        let settle = OrdersCommand::Settle {
            catalog_seen: 0,
            records: vec![Settlement { buyer: Some("x".into()), ..Settlement::from(settlement_v1()) }],
        };
        assert_eq!(decode::<OrdersCommand>(&encode(&settle).unwrap()).unwrap(), settle);
        let reserve = CatalogCommand::Reserve {
            seen: 0,
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: Some("manar".into()),
        };
        assert_eq!(decode::<CatalogCommand>(&encode(&reserve).unwrap()).unwrap(), reserve);
    }

    #[test]
    fn version_3_commands_round_trip_and_a_view_of_0_keeps_the_older_layout() {
        let place = |seen| OrdersCommand::Place {
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: None,
            seen,
        };
        let v1 = OrdersV1::Place { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(encode(&place(0)).unwrap(), encode(&v1).unwrap(), "no purge yet: version 1's bytes");
        let reserve = |seen| CatalogCommand::Reserve {
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: Some("b".into()),
            seen,
        };
        let record = |catalog_seen| Settlement::from(settlement_v1()).into_record(catalog_seen);
        let settle =
            |catalog_seen| OrdersCommand::Settle { records: vec![Settlement::from(settlement_v1())], catalog_seen };
        for seen in [0, 7] {
            assert_eq!(decode::<OrdersCommand>(&encode(&place(seen)).unwrap()).unwrap(), place(seen));
            assert_eq!(decode::<CatalogCommand>(&encode(&reserve(seen)).unwrap()).unwrap(), reserve(seen));
            assert_eq!(decode::<OrdersCommand>(&encode(&record(seen)).unwrap()).unwrap(), record(seen));
            assert_eq!(decode::<OrdersCommand>(&encode(&settle(seen)).unwrap()).unwrap(), settle(seen));
        }
        let forget = OrdersCommand::Forget { catalog_index: 9, keys: vec![("k".into(), 3)] };
        assert_eq!(decode::<OrdersCommand>(&encode(&forget).unwrap()).unwrap(), forget);
        let purge = CatalogCommand::Purge { fence: 4, keys: vec![("k".into(), 2)] };
        assert_eq!(decode::<CatalogCommand>(&encode(&purge).unwrap()).unwrap(), purge);
    }
}
