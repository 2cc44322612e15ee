//! A buying workload that keeps going through faults and records what it was told.
//!
//! Each client buys random books with a fresh idempotency key per buy and
//! retries the *same* key, on any node, until it gets a definite answer or its
//! retry budget runs out (then the buy's outcome is recorded as unknown). The
//! [`Ledger`] is what the checker compares with the final state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::{ErrorCode, Order};
use bazar_client::{Client, ClientError};
use rand::Rng;
use tokio::time::Instant;

/// What the workload was told.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Buys answered 201, with the order they returned.
    pub acked: Vec<Order>,
    /// Buys answered 409 out_of_stock (order ids).
    pub rejected: Vec<u64>,
    /// Idempotency keys of buys whose outcome stayed unknown.
    pub unknown: Vec<String>,
    /// Copies added by restocks answered 200, per book.
    pub restocked: BTreeMap<u64, u64>,
    /// Copies of restocks whose outcome stayed unknown, per book.
    pub restocked_unknown: BTreeMap<u64, u64>,
    /// Answers that should never happen (a 4xx other than out_of_stock, a decode error).
    pub unexpected: Vec<String>,
    /// Attempts that failed and were retried.
    pub retries: u64,
}

impl Ledger {
    /// Merges another client's ledger into this one.
    pub fn merge(&mut self, other: Ledger) {
        self.acked.extend(other.acked);
        self.rejected.extend(other.rejected);
        self.unknown.extend(other.unknown);
        for (k, v) in other.restocked {
            *self.restocked.entry(k).or_default() += v;
        }
        for (k, v) in other.restocked_unknown {
            *self.restocked_unknown.entry(k).or_default() += v;
        }
        self.unexpected.extend(other.unexpected);
        self.retries += other.retries;
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// How long to start new operations.
    pub duration: Duration,
    /// Books to buy from.
    pub books: Vec<u64>,
    /// Largest quantity per buy.
    pub max_quantity: u64,
    /// One operation in this many is a restock (0: never).
    pub restock_one_in: u32,
    /// How long one operation may keep retrying before its outcome is unknown.
    pub retry_budget: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 8,
            duration: Duration::from_secs(5),
            books: (1..=7).collect(),
            max_quantity: 3,
            restock_one_in: 10,
            retry_budget: Duration::from_secs(15),
        }
    }
}

/// Whether a failed attempt should be retried (on another node, after a pause).
fn retryable(e: &ClientError) -> bool {
    e.is_transport()
        || e.is_code(ErrorCode::Unavailable)
        || e.is_code(ErrorCode::NotLeader)
        || e.status().is_some_and(|s| s >= 500)
}

/// Runs the workload against `clients` (one per node; requests rotate over
/// them when one fails) and returns the merged ledger.
pub async fn run(clients: Vec<Client>, workload: Workload) -> Ledger {
    let clients = Arc::new(clients);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop_at = Instant::now() + workload.duration;
    let mut tasks = Vec::new();
    for c in 0..workload.clients {
        let clients = clients.clone();
        let ledger = ledger.clone();
        let w = workload.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Ledger::default();
            let mut n = 0u64;
            let mut node = c % clients.len();
            while Instant::now() < stop_at {
                n += 1;
                let (book, quantity, restock) = {
                    let mut rng = rand::rng();
                    let book = w.books[rng.random_range(0..w.books.len())];
                    let restock = w.restock_one_in > 0 && rng.random_range(0..w.restock_one_in) == 0;
                    (book, rng.random_range(1..=w.max_quantity), restock)
                };
                if restock {
                    restock_once(&clients, &mut node, book, quantity, &w, &mut mine).await;
                } else {
                    let key = format!("client{c}-buy{n}");
                    buy_once(&clients, &mut node, book, quantity, &key, &w, &mut mine).await;
                }
            }
            ledger.lock().unwrap().merge(mine);
        }));
    }
    for t in tasks {
        t.await.expect("workload task");
    }
    Arc::try_unwrap(ledger).expect("ledger").into_inner().unwrap()
}

async fn buy_once(
    clients: &[Client],
    node: &mut usize,
    book: u64,
    quantity: u64,
    key: &str,
    w: &Workload,
    ledger: &mut Ledger,
) {
    let give_up = Instant::now() + w.retry_budget;
    loop {
        match clients[*node].buy(book, quantity, Some(key)).await {
            Ok(order) => {
                ledger.acked.push(order);
                return;
            }
            Err(e) if e.is_code(ErrorCode::OutOfStock) => {
                ledger.rejected.push(e.problem().and_then(|p| p.order_id).unwrap_or(0));
                return;
            }
            Err(e) if retryable(&e) && Instant::now() < give_up => {
                ledger.retries += 1;
                *node = (*node + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if retryable(&e) => {
                ledger.unknown.push(key.to_string());
                return;
            }
            Err(e) => {
                ledger.unexpected.push(format!("buy {key}: {e}"));
                return;
            }
        }
    }
}

async fn restock_once(
    clients: &[Client],
    node: &mut usize,
    book: u64,
    quantity: u64,
    w: &Workload,
    ledger: &mut Ledger,
) {
    let give_up = Instant::now() + w.retry_budget;
    loop {
        match clients[*node].restock(book, quantity).await {
            Ok(_) => {
                *ledger.restocked.entry(book).or_default() += quantity;
                return;
            }
            // Refused before anything was proposed: safe to try elsewhere.
            Err(e) if e.is_code(ErrorCode::NotLeader) || (e.is_transport() && !e.outcome_unknown()) => {
                if Instant::now() > give_up {
                    return;
                }
            }
            // A restock has no idempotency key: never retry one that may
            // have been applied; count it as unknown.
            Err(e) if e.outcome_unknown() => {
                *ledger.restocked_unknown.entry(book).or_default() += quantity;
                return;
            }
            Err(e) => {
                ledger.unexpected.push(format!("restock {book}: {e}"));
                return;
            }
        }
        ledger.retries += 1;
        *node = (*node + 1) % clients.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
