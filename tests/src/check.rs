//! Checks of guarantees §6 against a cluster's final state and what the
//! clients were told (a [`Ledger`]), and the collection of that final state.
//!
//! | invariant | checked by |
//! |---|---|
//! | 1 no oversell, stock never negative | [`state_problems`] (confirmed ≤ initial + restocks) |
//! | 2 conservation per book | [`state_problems`] |
//! | 3 acknowledged buys survive | [`state_problems`] |
//! | 4 one order per idempotency key | [`state_problems`] |
//! | 5 replicas converge | [`converged`], [`collect_final`] |
//! | 7 nothing stays pending | [`wait_no_pending`], [`collect_final`] |
//!
//! These checks need only the end state. The history checker
//! ([`crate::checker`]) builds a [`Ledger`] from a history and runs them,
//! and adds what needs the whole history: linearizability (invariant 6),
//! consistent answers per idempotency key, and unavailability windows.
//! Tests that make a few requests by hand fill a [`Ledger`] themselves and
//! call [`check_all`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bazar_api::{Book, Consistency, Digest, Group, Order, OrderStatus};
use bazar_client::Client;
use tokio::time::Instant;

use crate::history::{FinalState, History};
use crate::{Cluster, health_within_a_second};

/// What the clients were told, as the end-state checks need it.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Buys answered 201, with the order they returned (one per key).
    pub acked: Vec<Order>,
    /// Buys answered 409 out_of_stock (order ids, 0 when not given).
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

/// Waits until every live node reports the same applied index and digest
/// for `group`, and returns it.
pub async fn converged(cluster: &mut Cluster, group: Group, timeout: Duration) -> Result<Digest, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut digests = Vec::new();
        for id in cluster.live_ids() {
            match cluster.client(id).digest(group).await {
                Ok(d) => digests.push(d),
                Err(e) => digests.push(Digest {
                    group,
                    node_id: id,
                    applied_index: 0,
                    digest: format!("error: {e}"),
                    rows: Default::default(),
                }),
            }
        }
        let agree = digests.windows(2).all(|w| w[0].applied_index == w[1].applied_index && w[0].digest == w[1].digest);
        if agree && !digests.is_empty() && !digests[0].digest.starts_with("error") {
            return Ok(digests.remove(0));
        }
        if Instant::now() > deadline {
            return Err(format!("{group} replicas did not converge within {timeout:?}: {digests:#?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every order, read linearizably from some live node.
pub async fn all_orders(cluster: &mut Cluster) -> Result<Vec<Order>, String> {
    let mut errors = Vec::new();
    for id in cluster.live_ids() {
        match cluster.client(id).list_all_orders(&bazar_api::OrderFilter::All, Some(Consistency::Linearizable)).await {
            Ok(o) => return Ok(o),
            Err(e) => errors.push(format!("node {id}: {e}")),
        }
    }
    Err(format!("could not list orders: {errors:?}"))
}

/// Every book, read linearizably from some live node.
pub async fn all_books(cluster: &mut Cluster) -> Result<Vec<Book>, String> {
    let mut errors = Vec::new();
    for id in cluster.live_ids() {
        match cluster.client(id).list_all_books(None, Some(Consistency::Linearizable)).await {
            Ok(b) => return Ok(b),
            Err(e) => errors.push(format!("node {id}: {e}")),
        }
    }
    Err(format!("could not list books: {errors:?}"))
}

/// The nodes that report unclaimed buys (a reservation whose order may not
/// be recorded yet), with how many; a node that does not answer within a
/// second cannot vouch for its replica and is listed with `u64::MAX`.
pub async fn unclaimed_buys(nodes: &[(u64, Client)]) -> Vec<(u64, u64)> {
    let mut unclaimed = Vec::new();
    for (id, client) in nodes {
        match health_within_a_second(client).await {
            Some(h) if h.unclaimed_buys == 0 => {}
            Some(h) => unclaimed.push((*id, h.unclaimed_buys)),
            None => unclaimed.push((*id, u64::MAX)),
        }
    }
    unclaimed
}

/// Waits until no order is pending (invariant 7) and returns all orders.
pub async fn wait_no_pending(cluster: &mut Cluster, timeout: Duration) -> Result<Vec<Order>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        // A buy is settled once its order is recorded and its reservation
        // claimed: every live replica must report no unclaimed buys.
        let live: Vec<(u64, Client)> = cluster.live_ids().into_iter().map(|id| (id, cluster.client(id))).collect();
        let unclaimed = unclaimed_buys(&live).await;
        let orders = all_orders(cluster).await;
        if unclaimed.is_empty()
            && let Ok(orders) = &orders
            && orders.iter().all(|o| o.status != OrderStatus::Pending)
        {
            return Ok(orders.clone());
        }
        if Instant::now() > deadline {
            let pending: Vec<u64> = orders
                .map(|o| o.iter().filter(|o| o.status == OrderStatus::Pending).map(|o| o.order_id).collect())
                .unwrap_or_default();
            return Err(format!(
                "buys still unsettled after {timeout:?}: pending orders {pending:?}, unclaimed per node {unclaimed:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the checks found, for the test's output.
#[derive(Debug)]
pub struct Summary {
    /// Orders in the cluster.
    pub orders: usize,
    /// Confirmed ones.
    pub confirmed: usize,
    /// Buys the workload saw acknowledged.
    pub acked: usize,
    /// Buys whose outcome the workload never learned.
    pub unknown: usize,
}

/// A broken invariant found in an end state: the invariant's number in
/// guarantees §6 (0: an answer the API does not allow) and the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which invariant.
    pub invariant: u8,
    /// What was found.
    pub detail: String,
}

/// Checks invariants 1–4 on the final `orders` and `books` against `ledger`,
/// given each book's `initial` stock. `orders` must be the orders made since
/// `initial` was read.
pub fn state_problems(initial: &BTreeMap<u64, u64>, ledger: &Ledger, orders: &[Order], books: &[Book]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |invariant, detail| problems.push(Problem { invariant, detail });
    let by_id: HashMap<u64, &Order> = orders.iter().map(|o| (o.order_id, o)).collect();

    // 3: every acknowledged buy is there, confirmed, as acknowledged.
    for acked in &ledger.acked {
        match by_id.get(&acked.order_id) {
            None => problem(3, format!("acknowledged order {} is lost", acked.order_id)),
            Some(o) if o.status != OrderStatus::Confirmed => {
                problem(3, format!("acknowledged order {} is {}", o.order_id, o.status))
            }
            Some(o)
                if o.book_id != acked.book_id
                    || o.quantity != acked.quantity
                    || o.unit_price_cents != acked.unit_price_cents
                    || o.idempotency_key != acked.idempotency_key
                    || o.buyer != acked.buyer =>
            {
                problem(3, format!("order {} differs from its acknowledgement: {o:?} vs {acked:?}", o.order_id))
            }
            Some(_) => {}
        }
    }

    // 4: at most one order per idempotency key.
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for o in orders {
        if let Some(k) = &o.idempotency_key {
            per_key.entry(k).or_default().push(o.order_id);
        }
    }
    for (k, ids) in &per_key {
        if ids.len() > 1 {
            problem(4, format!("idempotency key {k} has {} orders: {ids:?}", ids.len()));
        }
    }

    // 1 and 2: conservation per book; restocks of unknown outcome may or may not count.
    let mut confirmed_qty: BTreeMap<u64, u64> = BTreeMap::new();
    for o in orders.iter().filter(|o| o.status == OrderStatus::Confirmed) {
        *confirmed_qty.entry(o.book_id).or_default() += o.quantity;
    }
    for book in books {
        let Some(&start) = initial.get(&book.id) else { continue };
        let restocked = ledger.restocked.get(&book.id).copied().unwrap_or(0);
        let maybe = ledger.restocked_unknown.get(&book.id).copied().unwrap_or(0);
        let sold = confirmed_qty.get(&book.id).copied().unwrap_or(0);
        if sold > start + restocked + maybe {
            problem(
                1,
                format!(
                    "book {}: oversold: {sold} confirmed, only {} ever stocked",
                    book.id,
                    start + restocked + maybe
                ),
            );
            continue;
        }
        // stock = start + restocked + x - sold, for some x in 0..=maybe.
        let low = i128::from(start) + i128::from(restocked) - i128::from(sold);
        let high = low + i128::from(maybe);
        if !(low..=high).contains(&i128::from(book.stock)) {
            problem(
                2,
                format!(
                    "book {}: stock {} but initial {start} + restocks {restocked} (+ up to {maybe} of unknown outcome) - confirmed {sold} gives {low}..={high}",
                    book.id, book.stock
                ),
            );
        }
    }
    if !ledger.unexpected.is_empty() {
        problem(0, format!("unexpected answers: {:?}", ledger.unexpected));
    }
    problems
}

/// Checks invariants 1–4 (see [`state_problems`]); on success, counts.
pub fn check_state(
    initial: &BTreeMap<u64, u64>,
    ledger: &Ledger,
    orders: &[Order],
    books: &[Book],
) -> Result<Summary, String> {
    let problems = state_problems(initial, ledger, orders, books);
    if problems.is_empty() {
        Ok(Summary {
            orders: orders.len(),
            confirmed: orders.iter().filter(|o| o.status == OrderStatus::Confirmed).count(),
            acked: ledger.acked.len(),
            unknown: ledger.unknown.len(),
        })
    } else {
        Err(problems.iter().map(|p| format!("invariant {}: {}", p.invariant, p.detail)).collect::<Vec<_>>().join("\n"))
    }
}

/// Reads the final state of a cluster through `nodes` (every node, by id),
/// once the run is over and every fault healed: waits up to `settle` for
/// pending orders to be decided (invariant 7), lists every order and then
/// every book linearizably, and waits up to `converge` for every node to
/// report the same digest of each group (invariant 5). What it cannot get is
/// in [`FinalState::errors`]; it never panics, so that the checker reports it.
pub async fn collect_final(
    nodes: &[(u64, Client)],
    history: &History,
    settle: Duration,
    converge: Duration,
) -> FinalState {
    let mut state = FinalState { nodes: nodes.iter().map(|(id, _)| *id).collect(), ..FinalState::default() };
    let deadline = Instant::now() + settle;
    // A buy whose coordinator was lost after one of its two commits may
    // have taken stock in the catalog without an order, or placed an order
    // without a reservation; the orders leader settles it. Wait until no
    // replica holds such a buy, so that the orders listed next account for
    // every reservation.
    loop {
        let unclaimed = unclaimed_buys(nodes).await;
        if unclaimed.is_empty() || Instant::now() > deadline {
            state.unclaimed = unclaimed.into_iter().filter(|(_, n)| *n != u64::MAX).collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut n = 0;
    loop {
        let (_, client) = &nodes[n % nodes.len()];
        n += 1;
        let start = history.now();
        match client.list_all_orders(&bazar_api::OrderFilter::All, Some(Consistency::Linearizable)).await {
            Ok(orders) => {
                let settled = orders.iter().all(|o| o.status != OrderStatus::Pending);
                if settled || Instant::now() > deadline {
                    state.orders_read = Some((start, history.now()));
                    state.orders = orders;
                    break;
                }
            }
            Err(e) if Instant::now() > deadline => {
                state.errors.push(format!("could not list the orders within {settle:?}: {e}"));
                break;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10).max(settle);
    loop {
        let (_, client) = &nodes[n % nodes.len()];
        n += 1;
        let start = history.now();
        match client.list_all_books(None, Some(Consistency::Linearizable)).await {
            Ok(books) => {
                state.books_read = Some((start, history.now()));
                state.books = books;
                break;
            }
            Err(e) if Instant::now() > deadline => {
                state.errors.push(format!("could not list the books: {e}"));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let deadline = Instant::now() + converge;
    loop {
        let mut digests = Vec::new();
        for (id, client) in nodes {
            for group in Group::ALL {
                match client.digest(group).await {
                    Ok(d) => digests.push(d),
                    Err(e) => digests.push(Digest {
                        group,
                        node_id: *id,
                        applied_index: 0,
                        digest: format!("error: {e}"),
                        rows: Default::default(),
                    }),
                }
            }
        }
        let agree = Group::ALL.iter().all(|g| {
            let mine: Vec<&Digest> = digests.iter().filter(|d| d.group == *g).collect();
            mine.windows(2).all(|w| w[0].applied_index == w[1].applied_index && w[0].digest == w[1].digest)
                && mine.iter().all(|d| !d.digest.starts_with("error"))
        });
        if agree || Instant::now() > deadline {
            state.digests = digests;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    state
}

/// Runs every check after the faults have healed: nothing pending within
/// `pending_timeout`, invariants 1–4, and both groups converged.
pub async fn check_all(
    cluster: &mut Cluster,
    initial: &BTreeMap<u64, u64>,
    ledger: &Ledger,
    pending_timeout: Duration,
) -> Summary {
    let orders = wait_no_pending(cluster, pending_timeout).await.unwrap_or_else(|e| panic!("invariant 7: {e}"));
    let books = all_books(cluster).await.unwrap_or_else(|e| panic!("{e}"));
    let summary = check_state(initial, ledger, &orders, &books).unwrap_or_else(|e| panic!("invariants violated:\n{e}"));
    for group in Group::ALL {
        converged(cluster, group, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("invariant 5: {e}"));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, book: u64, qty: u64, status: OrderStatus, key: &str) -> Order {
        Order {
            order_id: id,
            book_id: book,
            quantity: qty,
            unit_price_cents: 100,
            total_cents: 100 * qty,
            status,
            reason: None,
            created_at: "2026-11-21T00:00:00Z".into(),
            idempotency_key: Some(key.into()),
            buyer: None,
        }
    }

    fn book(id: u64, stock: u64) -> Book {
        Book { id, isbn: String::new(), title: String::new(), topic: String::new(), price_cents: 100, stock }
    }

    #[test]
    fn consistent_state_passes() {
        let initial = BTreeMap::from([(1, 10)]);
        let o = order(1, 1, 3, OrderStatus::Confirmed, "a");
        let ledger = Ledger { acked: vec![o.clone()], ..Default::default() };
        assert!(check_state(&initial, &ledger, &[o], &[book(1, 7)]).is_ok());
    }

    #[test]
    fn a_lost_acknowledged_buy_is_caught() {
        let initial = BTreeMap::from([(1, 10)]);
        let o = order(1, 1, 3, OrderStatus::Confirmed, "a");
        let ledger = Ledger { acked: vec![o], ..Default::default() };
        let err = check_state(&initial, &ledger, &[], &[book(1, 10)]).unwrap_err();
        assert!(err.contains("lost"), "{err}");
    }

    #[test]
    fn an_acknowledged_order_found_with_another_buyer_is_caught() {
        let initial = BTreeMap::from([(1, 10)]);
        let acked = Order { buyer: Some("manar".into()), ..order(1, 1, 3, OrderStatus::Confirmed, "a") };
        let found = Order { buyer: Some("ali".into()), ..acked.clone() };
        let ledger = Ledger { acked: vec![acked], ..Default::default() };
        let err = check_state(&initial, &ledger, &[found], &[book(1, 7)]).unwrap_err();
        assert!(err.contains("differs from its acknowledgement"), "{err}");
    }

    #[test]
    fn a_double_order_for_one_key_is_caught() {
        let initial = BTreeMap::from([(1, 10)]);
        let orders = [order(1, 1, 1, OrderStatus::Confirmed, "a"), order(2, 1, 1, OrderStatus::Confirmed, "a")];
        let err = check_state(&initial, &Ledger::default(), &orders, &[book(1, 8)]).unwrap_err();
        assert!(err.contains("2 orders"), "{err}");
    }

    #[test]
    fn broken_conservation_and_oversell_are_caught() {
        let initial = BTreeMap::from([(1, 10)]);
        let orders = [order(1, 1, 3, OrderStatus::Confirmed, "a")];
        let err = check_state(&initial, &Ledger::default(), &orders, &[book(1, 8)]).unwrap_err();
        assert!(err.contains("stock 8"), "{err}");
        let orders = [order(1, 1, 11, OrderStatus::Confirmed, "a")];
        let err = check_state(&initial, &Ledger::default(), &orders, &[book(1, 0)]).unwrap_err();
        assert!(err.contains("oversold"), "{err}");
    }

    #[test]
    fn restocks_of_unknown_outcome_may_or_may_not_count() {
        let initial = BTreeMap::from([(1, 10)]);
        let mut ledger = Ledger::default();
        ledger.restocked_unknown.insert(1, 5);
        assert!(check_state(&initial, &ledger, &[], &[book(1, 10)]).is_ok());
        assert!(check_state(&initial, &ledger, &[], &[book(1, 15)]).is_ok());
        assert!(check_state(&initial, &ledger, &[], &[book(1, 16)]).is_err());
    }
}
