//! The catalog's older layouts: reservation rows and catalog commands as
//! earlier versions wrote them (the version table is in [`crate::compat`]).

// The frozen layouts below mirror, field for field, types documented where
// they live now; their fields are not documented twice.
#![allow(missing_docs)]

use std::io;

use bazar_api::{Book, BookPatch, NewBook};
use serde::{Deserialize, Serialize};

use super::{CatalogCommand, Reservation, ReservationOutcome};
use crate::compat::decode_either;

/// A [`Reservation`] row of either version.
pub fn decode_reservation(bytes: &[u8]) -> io::Result<Reservation> {
    decode_either::<Reservation, ReservationV1>(bytes)
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

    #[test]
    fn garbage_is_an_error_not_a_reservation() {
        assert!(decode_reservation(&[]).is_err());
        assert!(decode_reservation(&[0xff, 0xff]).is_err());
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

    /// Version 1's catalog commands, with the layouts it wrote (positions
    /// 0-6 of the enum).
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum CatalogV1 {
        AddBook(NewBook),
        Restock { book_id: u64, quantity: u64 },
        Update { book_id: u64, patch: BookPatch },
        Reserve { key: String, book_id: u64, quantity: u64, created_at: String },
        Claim { keys: Vec<String> },
    }

    fn reserve(buyer: Option<&str>, seen: u64) -> CatalogCommand {
        CatalogCommand::Reserve {
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
        let v1 = CatalogV1::Reserve { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(decode::<CatalogCommand>(&encode(&v1).unwrap()).unwrap(), reserve(None, 0));
        let claim = CatalogV1::Claim { keys: vec!["a".into()] };
        assert_eq!(
            decode::<CatalogCommand>(&encode(&claim).unwrap()).unwrap(),
            CatalogCommand::Claim { keys: vec!["a".into()] }
        );
    }

    #[test]
    fn commands_without_a_buyer_are_written_as_version_1_wrote_them() {
        let v1 = CatalogV1::Reserve { key: "k".into(), book_id: 1, quantity: 2, created_at: "t".into() };
        assert_eq!(encode(&reserve(None, 0)).unwrap(), encode(&v1).unwrap());
    }

    #[test]
    fn new_commands_round_trip_with_their_buyer_and_view() {
        for seen in [0, 7] {
            for buyer in [None, Some("manar")] {
                let r = reserve(buyer, seen);
                assert_eq!(decode::<CatalogCommand>(&encode(&r).unwrap()).unwrap(), r);
            }
        }
        let purge = CatalogCommand::Purge { fence: 4, keys: vec![("k".into(), 2)] };
        assert_eq!(decode::<CatalogCommand>(&encode(&purge).unwrap()).unwrap(), purge);
    }
}
