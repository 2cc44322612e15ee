//! The orders' older layouts: order rows, settlements and orders commands as
//! earlier versions wrote them (the version table is in [`crate::compat`]).

// The frozen layouts below mirror, field for field, types documented where
// they live now; their fields are not documented twice.
#![allow(missing_docs)]

use std::io;

use bazar_api::{Order, OrderStatus};
use serde::{Deserialize, Serialize};

use super::{OrdersCommand, Outcome, Settlement};
use crate::compat::decode_either;

/// An [`Order`] row of either version.
pub fn decode_order(bytes: &[u8]) -> io::Result<Order> {
    decode_either::<Order, OrderV1>(bytes)
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
        assert!(decode_order(&[]).is_err());
    }

    /// Version 1's orders commands, with the layouts it wrote (positions 0-2
    /// of the enum).
    #[derive(Serialize)]
    enum OrdersV1 {
        Record { key: String, book_id: u64, quantity: u64, created_at: String, outcome: Outcome, catalog_index: u64 },
        Place { key: String, book_id: u64, quantity: u64, created_at: String },
        Settle { records: Vec<SettlementV1> },
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

    fn place(buyer: Option<&str>, seen: u64) -> OrdersCommand {
        OrdersCommand::Place {
            key: "k".into(),
            book_id: 1,
            quantity: 2,
            created_at: "t".into(),
            buyer: buyer.map(Into::into),
            seen,
        }
    }

    #[test]
    fn version_1_log_entries_read_as_commands_with_no_buyer() {
        let v1 = OrdersV1::Place { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(decode::<OrdersCommand>(&encode(&v1).unwrap()).unwrap(), place(None, 0));
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
    }

    #[test]
    fn commands_without_a_buyer_are_written_as_version_1_wrote_them() {
        let v1 = OrdersV1::Place { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(encode(&place(None, 0)).unwrap(), encode(&v1).unwrap(), "no purge yet: version 1's bytes");
        let settle = OrdersCommand::Settle { catalog_seen: 0, records: vec![Settlement::from(settlement_v1())] };
        let v1 = OrdersV1::Settle { records: vec![settlement_v1()] };
        assert_eq!(encode(&settle).unwrap(), encode(&v1).unwrap());
    }

    #[test]
    fn new_commands_round_trip_with_their_buyer_and_view() {
        let with_buyer = Settlement { buyer: Some("x".into()), ..Settlement::from(settlement_v1()) };
        for seen in [0, 7] {
            for buyer in [None, Some("manar")] {
                let p = place(buyer, seen);
                assert_eq!(decode::<OrdersCommand>(&encode(&p).unwrap()).unwrap(), p);
            }
            for s in [Settlement::from(settlement_v1()), with_buyer.clone()] {
                let record = s.clone().into_record(seen);
                assert_eq!(decode::<OrdersCommand>(&encode(&record).unwrap()).unwrap(), record);
                let settle = OrdersCommand::Settle { records: vec![s], catalog_seen: seen };
                assert_eq!(decode::<OrdersCommand>(&encode(&settle).unwrap()).unwrap(), settle);
            }
        }
        let forget = OrdersCommand::Forget { catalog_index: 9, keys: vec![("k".into(), 3)] };
        assert_eq!(decode::<OrdersCommand>(&encode(&forget).unwrap()).unwrap(), forget);
    }
}
