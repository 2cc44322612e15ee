//! Books, orders, and the request bodies that create or change them.
//!
//! Every request body is validated here, by the same functions, wherever it
//! enters the system (frontend, node, client), so that bad input is refused
//! with the same words everywhere and never reaches a Raft log.
//!
//! The types stored in the nodes' state machines ([`Book`], [`Order`],
//! [`NewBook`], [`BookPatch`]) use a compact binary encoding (postcard), so
//! they avoid serde attributes that only make sense for self-describing
//! formats (`skip_serializing_if`, `flatten`, `untagged`), and a field is
//! only ever added at the end (the nodes read the shorter, older rows).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::isbn;

/// Largest quantity a single buy or restock may carry.
pub const MAX_QUANTITY: u64 = 1_000_000;
/// Largest price of a book, in cents (ten million dollars).
pub const MAX_PRICE_CENTS: u64 = 1_000_000_000;
/// Largest stock a book may be created with.
pub const MAX_INITIAL_STOCK: u64 = 1_000_000_000;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// Longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 100;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Longest buyer name, in bytes.
pub const MAX_BUYER_BYTES: usize = 64;
/// Default page size of listings.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// Largest page size of listings.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// The two Raft groups of a Bazar cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Books and their stock.
    Catalog,
    /// Orders.
    Orders,
}

impl Group {
    /// Both groups, in a fixed order.
    pub const ALL: [Group; 2] = [Group::Catalog, Group::Orders];

    /// The group's name as used in paths and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Catalog => "catalog",
            Group::Orders => "orders",
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Group {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "catalog" => Ok(Group::Catalog),
            "orders" => Ok(Group::Orders),
            other => Err(format!("unknown group {other:?}: expected \"catalog\" or \"orders\"")),
        }
    }
}

/// The seven books of the classic Bazar/Pygmy lab catalog, with ids 1 to 7
/// in this order: (title, topic, price in cents). A fresh cluster loads them
/// unless told otherwise; the benchmarks store the same values elsewhere.
pub const CLASSICS: [(&str, &str, u64); 7] = [
    ("How to get a good grade in DOS in 40 minutes a day", "distributed systems", 4000),
    ("RPCs for Noobs", "distributed systems", 2500),
    ("Xen and the Art of Surviving Undergraduate School", "undergraduate school", 3000),
    ("Cooking for the Impatient Undergrad", "undergraduate school", 1500),
    ("How to finish Project 3 on time", "distributed systems", 3500),
    ("Why theory classes are so hard", "undergraduate school", 2000),
    ("Spring in the Pioneer Valley", "undergraduate school", 1200),
];
/// A book in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Catalog-assigned id, starting at 1.
    pub id: u64,
    /// ISBN-13, thirteen bare digits.
    pub isbn: String,
    /// Title.
    pub title: String,
    /// Topic searched by `GET /books?topic=`.
    pub topic: String,
    /// Price in cents.
    pub price_cents: u64,
    /// Copies in stock.
    pub stock: u64,
}

/// Body of `POST /books`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBook {
    /// ISBN-13 (hyphens and spaces allowed; stored normalized).
    pub isbn: String,
    /// Title, 1 to [`MAX_TITLE_CHARS`] characters.
    pub title: String,
    /// Topic, 1 to [`MAX_TOPIC_CHARS`] characters.
    pub topic: String,
    /// Price in cents, at most [`MAX_PRICE_CENTS`].
    pub price_cents: u64,
    /// Initial stock, at most [`MAX_INITIAL_STOCK`]; 0 when absent.
    #[serde(default)]
    pub stock: u64,
}

impl NewBook {
    /// Checks every field and normalizes the ISBN, title and topic.
    pub fn validate(mut self) -> Result<NewBook, String> {
        self.isbn = isbn::normalize(&self.isbn).map_err(|e| format!("isbn: {e}"))?;
        self.title = validate_text("title", &self.title, MAX_TITLE_CHARS)?;
        self.topic = validate_text("topic", &self.topic, MAX_TOPIC_CHARS)?;
        validate_price(self.price_cents)?;
        if self.stock > MAX_INITIAL_STOCK {
            return Err(format!("stock must be at most {MAX_INITIAL_STOCK}"));
        }
        Ok(self)
    }
}

/// Body of `PATCH /books/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookPatch {
    /// New price in cents.
    #[serde(default)]
    pub price_cents: Option<u64>,
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New topic.
    #[serde(default)]
    pub topic: Option<String>,
}

impl BookPatch {
    /// Checks that at least one field is set and every set field is valid.
    pub fn validate(mut self) -> Result<BookPatch, String> {
        if self.price_cents.is_none() && self.title.is_none() && self.topic.is_none() {
            return Err("nothing to change: give price_cents, title or topic".into());
        }
        if let Some(p) = self.price_cents {
            validate_price(p)?;
        }
        if let Some(t) = &self.title {
            self.title = Some(validate_text("title", t, MAX_TITLE_CHARS)?);
        }
        if let Some(t) = &self.topic {
            self.topic = Some(validate_text("topic", t, MAX_TOPIC_CHARS)?);
        }
        Ok(self)
    }
}

/// Body of `POST /books/{id}/buy`: a JSON object whose fields may each be
/// left out, but not given as `null` (an array, or a `null` where a number
/// or a name belongs, is refused rather than read as a default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuyRequest {
    /// Copies to buy; 1 when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    /// Who buys (see [`validate_buyer`]); an anonymous buy when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer: Option<String>,
}

impl BuyRequest {
    /// The quantity to buy, checked against the limits.
    pub fn quantity(&self) -> Result<u64, String> {
        validate_quantity(self.quantity.unwrap_or(1))
    }

    /// The buyer, checked, if one is named.
    pub fn buyer(&self) -> Result<Option<String>, String> {
        match &self.buyer {
            None => Ok(None),
            Some(b) => validate_buyer(b).map(|()| Some(b.clone())),
        }
    }
}

// Written by hand because serde's derive also accepts a struct as a JSON
// array (`[5]` would buy five copies) and reads `null` into an `Option`.
impl<'de> Deserialize<'de> for BuyRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BuyRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a JSON object such as {"quantity": 2, "buyer": "manar"}"#)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<BuyRequest, A::Error> {
                use serde::de::Error;
                let mut request = BuyRequest::default();
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "quantity" if request.quantity.is_none() => request.quantity = Some(map.next_value()?),
                        "buyer" if request.buyer.is_none() => request.buyer = Some(map.next_value()?),
                        "quantity" | "buyer" => return Err(A::Error::custom(format!("duplicate field `{field}`"))),
                        other => {
                            return Err(A::Error::custom(format!(
                                "unknown field `{other}`, expected `quantity` or `buyer`"
                            )));
                        }
                    }
                }
                Ok(request)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Body of `POST /books/{id}/restock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    /// Copies to add.
    pub quantity: u64,
}

impl RestockRequest {
    /// The quantity to add, checked against the limits.
    pub fn quantity(&self) -> Result<u64, String> {
        validate_quantity(self.quantity)
    }
}

/// Checks a buy or restock quantity: 1 to [`MAX_QUANTITY`].
pub fn validate_quantity(quantity: u64) -> Result<u64, String> {
    if quantity == 0 {
        return Err("quantity must be at least 1".into());
    }
    if quantity > MAX_QUANTITY {
        return Err(format!("quantity must be at most {MAX_QUANTITY}"));
    }
    Ok(quantity)
}

fn validate_price(price_cents: u64) -> Result<(), String> {
    if price_cents > MAX_PRICE_CENTS {
        return Err(format!("price_cents must be at most {MAX_PRICE_CENTS}"));
    }
    Ok(())
}

fn validate_text(field: &str, value: &str, max_chars: usize) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(format!("{field} must be at most {max_chars} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(value.to_string())
}

/// Checks an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key must be visible ASCII characters".into());
    }
    Ok(())
}

/// Checks a buyer's name: 1 to [`MAX_BUYER_BYTES`] ASCII letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit. Names are compared
/// exactly (`Manar` and `manar` are two buyers).
pub fn validate_buyer(buyer: &str) -> Result<(), String> {
    let ok_len = !buyer.is_empty() && buyer.len() <= MAX_BUYER_BYTES;
    let ok_first = buyer.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let ok_rest = buyer.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok_len && ok_first && ok_rest {
        Ok(())
    } else {
        Err(format!(
            "buyer must be 1 to {MAX_BUYER_BYTES} ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// Normalizes a topic for indexing and search: trimmed and lowercased, so that
/// `?topic=Distributed%20Systems` finds books filed under "distributed systems".
pub fn topic_key(topic: &str) -> String {
    topic.trim().to_lowercase()
}

/// Status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Recorded; stock not yet reserved. A pending order is always driven to an
    /// outcome by the orders leader.
    Pending,
    /// Stock was reserved; the sale happened.
    Confirmed,
    /// Stock could not be reserved; nothing changed in the catalog.
    Rejected,
}

impl OrderStatus {
    /// The status as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order, as recorded by the orders group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Assigned by the orders group, starting at 1.
    pub order_id: u64,
    /// The book bought.
    pub book_id: u64,
    /// Copies bought.
    pub quantity: u64,
    /// Price per copy when the stock was reserved (0 until then).
    pub unit_price_cents: u64,
    /// `quantity * unit_price_cents` (0 until confirmed).
    pub total_cents: u64,
    /// Where the order stands.
    pub status: OrderStatus,
    /// Why the order was rejected (`out_of_stock`, `not_found`), else null.
    pub reason: Option<String>,
    /// When the proposing leader recorded the order (RFC 3339).
    pub created_at: String,
    /// The idempotency key the order was created under, if any.
    pub idempotency_key: Option<String>,
    /// Who bought, when the buy named a buyer (always null for orders placed
    /// before buyers existed). Kept last: the nodes read orders stored
    /// without it by its position (see the node's `compat` module).
    pub buyer: Option<String>,
}

/// One page of books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookPage {
    /// Books in id order.
    pub books: Vec<Book>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One page of orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// Orders in id order.
    pub orders: Vec<Order>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Which orders `GET /orders` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderFilter {
    /// Every order.
    All,
    /// The orders of one book (`?book_id=`).
    Book(u64),
    /// The orders of one buyer (`?buyer=`).
    Buyer(String),
}

impl OrderFilter {
    /// Parses the `book_id` and `buyer` query parameters of `GET /orders`
    /// (an empty one counts as absent); at most one may be given.
    pub fn parse(book_id: Option<&str>, buyer: Option<&str>) -> Result<OrderFilter, String> {
        match (book_id.filter(|s| !s.is_empty()), buyer.filter(|s| !s.is_empty())) {
            (None, None) => Ok(OrderFilter::All),
            (Some(_), Some(_)) => Err("give book_id or buyer, not both".into()),
            (Some(raw), None) => match raw.parse::<u64>() {
                Ok(id) if id > 0 => Ok(OrderFilter::Book(id)),
                _ => Err(format!("invalid book_id {raw:?}: expected a positive integer")),
            },
            (None, Some(buyer)) => validate_buyer(buyer).map(|()| OrderFilter::Buyer(buyer.to_string())),
        }
    }
}

/// Parses a listing's `limit` and `cursor` query parameters.
///
/// Cursors are the decimal id after which the next page starts; they are
/// opaque to clients but kept readable for operators.
pub fn parse_paging(limit: Option<&str>, cursor: Option<&str>) -> Result<(usize, u64), String> {
    let limit = match limit {
        None | Some("") => DEFAULT_PAGE_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit must be an integer from 1 to {MAX_PAGE_LIMIT}")),
        },
    };
    let after = match cursor {
        None | Some("") => 0,
        Some(s) => s.parse::<u64>().map_err(|_| format!("invalid cursor {s:?}"))?,
    };
    Ok((limit, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_book() -> NewBook {
        NewBook {
            isbn: "978-0-306-40615-7".into(),
            title: "  RPCs for Noobs ".into(),
            topic: "distributed systems".into(),
            price_cents: 1999,
            stock: 5,
        }
    }

    #[test]
    fn new_book_is_normalized() {
        let b = new_book().validate().unwrap();
        assert_eq!(b.isbn, "9780306406157");
        assert_eq!(b.title, "RPCs for Noobs");
    }

    #[test]
    fn new_book_rejects_bad_fields() {
        let mut b = new_book();
        b.title = "   ".into();
        assert!(b.validate().unwrap_err().contains("title"));
        let mut b = new_book();
        b.price_cents = MAX_PRICE_CENTS + 1;
        assert!(b.validate().unwrap_err().contains("price_cents"));
        let mut b = new_book();
        b.isbn = "123".into();
        assert!(b.validate().unwrap_err().starts_with("isbn"));
        let mut b = new_book();
        b.topic = "a\u{0}b".into();
        assert!(b.validate().unwrap_err().contains("control"));
    }

    #[test]
    fn quantities_outside_limits_are_refused() {
        assert!(validate_quantity(0).is_err());
        assert!(validate_quantity(MAX_QUANTITY + 1).is_err());
        assert_eq!(validate_quantity(3), Ok(3));
        assert_eq!(BuyRequest::default().quantity(), Ok(1));
    }

    #[test]
    fn buy_bodies_are_objects_without_nulls() {
        let parse = |s: &str| serde_json::from_str::<BuyRequest>(s);
        assert_eq!(parse(r#"{}"#).unwrap(), BuyRequest::default());
        let full = parse(r#"{"quantity": 2, "buyer": "manar"}"#).unwrap();
        assert_eq!((full.quantity().unwrap(), full.buyer().unwrap()), (2, Some("manar".to_string())));
        for bad in [r#"[5]"#, r#"[]"#, r#"null"#, r#"5"#, r#"{"quantity":null}"#, r#"{"buyer":null}"#] {
            assert!(parse(bad).is_err(), "{bad} must be refused");
        }
        assert!(parse(r#"{"quantity":1,"quantity":2}"#).is_err(), "duplicate fields are refused");
    }

    #[test]
    fn order_filters_parse_one_of_book_and_buyer() {
        assert_eq!(OrderFilter::parse(None, Some("")), Ok(OrderFilter::All));
        assert_eq!(OrderFilter::parse(Some("3"), None), Ok(OrderFilter::Book(3)));
        assert_eq!(OrderFilter::parse(None, Some("manar")), Ok(OrderFilter::Buyer("manar".into())));
        assert!(OrderFilter::parse(Some("3"), Some("manar")).is_err());
        assert!(OrderFilter::parse(Some("0"), None).is_err());
        assert!(OrderFilter::parse(None, Some("bad name")).is_err());
    }

    #[test]
    fn buyer_names_are_checked() {
        for good in ["manar", "Manar", "a", "j.doe_2-x", &"b".repeat(MAX_BUYER_BYTES)] {
            assert_eq!(validate_buyer(good), Ok(()), "{good}");
        }
        for bad in ["", "-lead", ".x", "has space", "é", "a/b", "a\u{0}", &"b".repeat(MAX_BUYER_BYTES + 1)] {
            assert!(validate_buyer(bad).is_err(), "{bad:?} must be refused");
        }
        let request = BuyRequest { quantity: None, buyer: Some("no way".into()) };
        assert!(request.buyer().is_err());
    }

    #[test]
    fn unknown_fields_and_negative_numbers_do_not_parse() {
        assert!(serde_json::from_str::<BuyRequest>(r#"{"quantitty":2}"#).is_err());
        assert!(serde_json::from_str::<BuyRequest>(r#"{"quantity":-2}"#).is_err());
        assert!(serde_json::from_str::<RestockRequest>(r#"{"quantity":1.5}"#).is_err());
    }

    #[test]
    fn empty_patch_is_refused() {
        assert!(BookPatch::default().validate().is_err());
        let p = BookPatch { price_cents: Some(10), ..Default::default() };
        assert!(p.validate().is_ok());
    }

    #[test]
    fn paging_parses_and_bounds() {
        assert_eq!(parse_paging(None, None), Ok((DEFAULT_PAGE_LIMIT, 0)));
        assert_eq!(parse_paging(Some("10"), Some("42")), Ok((10, 42)));
        assert!(parse_paging(Some("0"), None).is_err());
        assert!(parse_paging(Some("100000"), None).is_err());
        assert!(parse_paging(None, Some("x")).is_err());
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(validate_idempotency_key("abc-123").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key(&"k".repeat(200)).is_err());
    }
}
