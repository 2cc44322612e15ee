//! The buy protocol against logs that fail on purpose, in paused time.
//!
//! Two coordinators, nodes 0 and 1, share one pair of state machines (the
//! committed state of both groups) through [`FakeLog`]s, with node 0
//! leading the orders group. Each scenario plans one fault at one step of
//! one buy: place, reserve, settle, record or claim. The fault may refuse
//! the step, time it out, lose its answer after it committed, commit it only
//! after its deadline, hand the orders leadership to the other node, or
//! crash the node before or after the step commits. A client retries its
//! buy under the same key at whichever node leads; a crashed node never
//! answers again, and the other one takes the orders leadership over. Then,
//! once the background loops have had time, every buy must be settled
//! exactly once, stock conserved, and every answer the client got must be
//! what the logs say.
//!
//! Tokio's clock is paused: sleeps and deadlines advance it at once, so the
//! whole table runs in well under a second of real time.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use bazar_api::{Group, NewBook, OrderFilter};
use rocksdb::WriteBatch;

use super::*;
use crate::sm::Txn;
use crate::store::{Purpose, Store};

/// The step of the protocol a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Place,
    Reserve,
    Settle,
    Record,
    Claim,
    /// Commands the scenarios do not target (adding books).
    Other,
}

trait Stepped {
    fn step(&self) -> Step;
}

impl Stepped for CatalogCommand {
    fn step(&self) -> Step {
        match self {
            CatalogCommand::Reserve { .. } => Step::Reserve,
            CatalogCommand::Claim { .. } => Step::Claim,
            _ => Step::Other,
        }
    }
}

impl Stepped for OrdersCommand {
    fn step(&self) -> Step {
        match self {
            OrdersCommand::Place { .. } => Step::Place,
            OrdersCommand::Settle { .. } => Step::Settle,
            OrdersCommand::Record { .. } => Step::Record,
            OrdersCommand::Forget { .. } => Step::Other,
        }
    }
}

/// What goes wrong at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Refused, nothing proposed (no leader, no quorum).
    Refuse,
    /// Not committed by the deadline, and never.
    Timeout,
    /// Committed, but the answer is lost.
    LoseAnswer,
    /// Not committed by the deadline, committed just after it.
    CommitLate,
    /// The orders leadership moves to the other node before the step.
    Depose,
    /// The step commits, then the orders leadership moves.
    DeposeAfter,
    /// The node crashes before proposing the step.
    CrashBefore,
    /// The step commits, then the node crashes.
    CrashAfter,
}

const FAULTS: [Fault; 8] = [
    Fault::Refuse,
    Fault::Timeout,
    Fault::LoseAnswer,
    Fault::CommitLate,
    Fault::Depose,
    Fault::DeposeAfter,
    Fault::CrashBefore,
    Fault::CrashAfter,
];
const STEPS: [Step; 5] = [Step::Place, Step::Reserve, Step::Settle, Step::Record, Step::Claim];

/// The committed state of both groups, the orders leader, the nodes that
/// crashed, and the fault still to come.
struct Cluster {
    _dir: tempfile::TempDir,
    store: Store,
    indexes: Mutex<[u64; 2]>,
    orders_leader: AtomicUsize,
    crashed: Mutex<HashSet<usize>>,
    planned: Mutex<Vec<(Step, Fault)>>,
    fired: Mutex<Vec<(Step, Fault)>>,
}

impl Cluster {
    fn new() -> Arc<Cluster> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        Arc::new(Cluster {
            _dir: dir,
            store,
            indexes: Mutex::new([0, 0]),
            orders_leader: AtomicUsize::new(0),
            crashed: Mutex::default(),
            planned: Mutex::default(),
            fired: Mutex::default(),
        })
    }

    /// Commits `cmd` as the next entry of `S`'s log.
    fn commit<S: StateMachine>(&self, cmd: &S::Command) -> Committed<S::Response> {
        let index = {
            let mut indexes = self.indexes.lock().unwrap();
            let slot = &mut indexes[S::GROUP as usize];
            *slot += 1;
            *slot
        };
        let mut txn = Txn::new(self.store.db(), self.store.cf(S::GROUP, Purpose::Sm));
        let applied = S::apply(&mut txn, index, cmd).expect("apply");
        let mut batch = WriteBatch::default();
        txn.write_into(&mut batch);
        self.store.db().write(batch).expect("write");
        Committed { response: applied.response, index }
    }

    /// The first fault planned at `step`, if any; each fires once.
    fn fault_at(&self, step: Step) -> Option<Fault> {
        let mut planned = self.planned.lock().unwrap();
        let at = planned.iter().position(|(s, _)| *s == step)?;
        let (s, fault) = planned.remove(at);
        self.fired.lock().unwrap().push((s, fault));
        Some(fault)
    }

    fn is_crashed(&self, node: usize) -> bool {
        self.crashed.lock().unwrap().contains(&node)
    }

    fn depose(&self, node: usize) {
        let _ = self.orders_leader.compare_exchange(node, 1 - node, SeqCst, SeqCst);
    }

    fn view<S: StateMachine>(&self) -> View<'_> {
        View::new(&self.store, S::GROUP)
    }
}

/// Node `node`'s handle on group `S` of the shared cluster.
struct FakeLog<S> {
    cluster: Arc<Cluster>,
    node: usize,
    _group: PhantomData<fn() -> S>,
}

impl<S: StateMachine> FakeLog<S>
where
    S::Command: Stepped,
{
    fn new(cluster: &Arc<Cluster>, node: usize) -> Arc<Self> {
        Arc::new(FakeLog { cluster: cluster.clone(), node, _group: PhantomData })
    }

    /// Whether proposing here needs the orders leadership (the catalog's
    /// writes are forwarded to its leader, wherever it is).
    fn needs_leadership(&self) -> bool {
        S::GROUP == Group::Orders
    }

    fn leads(&self) -> bool {
        !self.cluster.is_crashed(self.node) && self.cluster.orders_leader.load(SeqCst) == self.node
    }

    fn refused(&self) -> Error {
        Error::NotLeader { group: S::GROUP, leader_id: None, leader_addr: None }
    }

    fn unknown(&self, why: &str) -> Error {
        Error::OutcomeUnknown(format!("the {} group {why}; the outcome is unknown", S::GROUP))
    }

    /// One proposal, faults included. A crashed node never answers.
    async fn propose(&self, cmd: S::Command, deadline: Instant) -> Result<Committed<S::Response>> {
        if self.cluster.is_crashed(self.node) {
            std::future::pending::<()>().await;
        }
        if self.needs_leadership() && !self.leads() {
            return Err(self.refused());
        }
        let Some(fault) = self.cluster.fault_at(cmd.step()) else {
            return Ok(self.cluster.commit::<S>(&cmd));
        };
        match fault {
            Fault::Refuse => Err(self.refused()),
            Fault::Timeout => {
                tokio::time::sleep_until(deadline).await;
                Err(self.unknown("did not commit in time"))
            }
            Fault::LoseAnswer => {
                self.cluster.commit::<S>(&cmd);
                Err(self.unknown("lost the answer"))
            }
            Fault::CommitLate => {
                tokio::time::sleep_until(deadline).await;
                let cluster = self.cluster.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    cluster.commit::<S>(&cmd);
                });
                Err(self.unknown("did not commit in time"))
            }
            Fault::Depose => {
                self.cluster.depose(self.node);
                Err(self.refused())
            }
            Fault::DeposeAfter => {
                self.cluster.commit::<S>(&cmd);
                self.cluster.depose(self.node);
                Err(self.unknown("changed leader while the write was in flight"))
            }
            Fault::CrashBefore | Fault::CrashAfter => {
                if fault == Fault::CrashAfter {
                    self.cluster.commit::<S>(&cmd);
                }
                self.cluster.crashed.lock().unwrap().insert(self.node);
                std::future::pending().await
            }
        }
    }
}

impl<S: StateMachine> Log<S> for FakeLog<S>
where
    S::Command: Stepped,
{
    fn view(&self) -> View<'_> {
        self.cluster.view::<S>()
    }

    fn is_leader(&self) -> bool {
        self.leads()
    }

    fn not_leader(&self) -> Error {
        self.refused()
    }

    async fn write(&self, cmd: S::Command, deadline: Instant) -> Result<Committed<S::Response>> {
        self.propose(cmd, deadline).await
    }

    /// As the real one: retries refusals and unknown outcomes until the
    /// deadline.
    async fn write_anywhere(&self, cmd: S::Command, deadline: Instant) -> Result<Committed<S::Response>> {
        loop {
            let pause = Duration::from_millis(10);
            match FakeLog::<S>::propose(self, cmd.clone(), deadline).await {
                Err(Error::NotLeader { .. } | Error::Unavailable(_) | Error::OutcomeUnknown(_))
                    if Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn linearize(&self, _deadline: Instant) -> Result<()> {
        if self.cluster.is_crashed(self.node) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

type Fakes = Coordinator<FakeLog<Catalog>, FakeLog<Orders>>;

/// What a client was told about its buy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    Confirmed(u64),
    Rejected(u64),
    /// Every attempt ended unknown.
    Nothing,
}

/// A client buying `quantity` of book 1 under `key`, retrying at the orders
/// leader of the moment while the outcome is unknown.
async fn client(cluster: &Cluster, nodes: &[Arc<Fakes>], key: &str, quantity: u64) -> Told {
    for _ in 0..10 {
        let leader = cluster.orders_leader.load(SeqCst);
        let purchase = Purchase { book_id: 1, quantity, buyer: Some("ada".into()), key: Some(key.into()) };
        let deadline = Instant::now() + Duration::from_secs(2);
        // A crashed node's request never ends: the client gives up on it.
        match tokio::time::timeout(Duration::from_secs(3), nodes[leader].buy(purchase, deadline)).await {
            Ok(Ok(bought)) => return Told::Confirmed(bought.order.order_id),
            Ok(Err(Error::OutOfStock { order_id: Some(id), .. })) => return Told::Rejected(id),
            Ok(Err(Error::OutcomeUnknown(_) | Error::Unavailable(_) | Error::NotLeader { .. })) | Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Ok(Err(e)) => panic!("buy {key}: unexpected error {e}"),
        }
    }
    Told::Nothing
}

/// The faults that put `fault` at `step`: a record is made only by the
/// resumer, which the first settlement's refusal calls in.
fn plan(step: Step, fault: Fault) -> Vec<(Step, Fault)> {
    match step {
        Step::Record => vec![(Step::Settle, Fault::Refuse), (step, fault)],
        _ => vec![(step, fault)],
    }
}

/// Runs one scenario and returns what went wrong, if anything.
async fn scenario(faults: Vec<(Step, Fault)>, bug: Option<PlantedBug>) -> Vec<String> {
    let cluster = Cluster::new();
    let book =
        NewBook { isbn: "9780306406157".into(), title: "Dune".into(), topic: "sf".into(), price_cents: 700, stock: 5 };
    cluster.commit::<Catalog>(&CatalogCommand::AddBook(book));
    *cluster.planned.lock().unwrap() = faults.clone();
    let shutdowns = [CancellationToken::new(), CancellationToken::new()];
    let nodes: Vec<Arc<Fakes>> = (0..2)
        .map(|n| {
            Arc::new(Coordinator::new(
                FakeLog::new(&cluster, n),
                FakeLog::new(&cluster, n),
                Duration::from_secs(2),
                shutdowns[n].clone(),
                bug,
            ))
        })
        .collect();
    for node in &nodes {
        node.start();
    }
    // A crashed orders leader is replaced by the other node, as an election
    // would; its loops stop.
    let watcher = {
        let cluster = cluster.clone();
        let shutdowns = shutdowns.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let leader = cluster.orders_leader.load(SeqCst);
                if cluster.is_crashed(leader) {
                    shutdowns[leader].cancel();
                    cluster.orders_leader.store(1 - leader, SeqCst);
                }
            }
        })
    };
    let first = client(&cluster, &nodes, "k1", 2).await;
    let second = client(&cluster, &nodes, "k2", 4).await;
    // Time for the loops: settling, claiming, and resuming after the grace.
    tokio::time::sleep(Duration::from_secs(10)).await;
    watcher.abort();
    for s in &shutdowns {
        s.cancel();
    }
    let mut violations = check(&cluster, &[("k1", 2, &first), ("k2", 4, &second)]);
    let fired = cluster.fired.lock().unwrap().clone();
    if fired.len() != faults.len() {
        violations.push(format!("planned {faults:?}, fired only {fired:?}"));
    }
    violations
}

/// The invariants, once every buy had time to settle.
fn check(cluster: &Cluster, buys: &[(&str, u64, &Told)]) -> Vec<String> {
    let mut violations = Vec::new();
    let orders = cluster.view::<Orders>();
    let catalog = cluster.view::<Catalog>();
    let (all, _) = Orders::list(&orders, &OrderFilter::All, 0, 100).unwrap();
    if let Some(p) = all.iter().find(|o| o.status == OrderStatus::Pending) {
        violations.push(format!("order {} is still pending", p.order_id));
    }
    let unclaimed = Catalog::unclaimed(&catalog, 100).unwrap();
    if !unclaimed.is_empty() {
        violations.push(format!("{} reservations are still unclaimed", unclaimed.len()));
    }
    for (key, quantity, told) in buys {
        let of_key: Vec<&Order> = all.iter().filter(|o| o.idempotency_key.as_deref() == Some(*key)).collect();
        let [order] = of_key[..] else {
            violations.push(format!("{key}: {} orders", of_key.len()));
            continue;
        };
        if order.quantity != *quantity {
            violations.push(format!("{key}: order {} is for {} copies", order.order_id, order.quantity));
        }
        let reserved = Catalog::reservation(&catalog, key).unwrap();
        let took_stock = matches!(reserved.as_ref().map(|r| &r.outcome), Some(ReservationOutcome::Reserved { .. }));
        if took_stock != (order.status == OrderStatus::Confirmed) {
            violations.push(format!(
                "{key}: order {} is {} but its reservation is {reserved:?}",
                order.order_id, order.status
            ));
        }
        match told {
            Told::Confirmed(id) if *id != order.order_id || order.status != OrderStatus::Confirmed => {
                violations.push(format!("{key}: told confirmed as order {id}, the log has {order:?}"))
            }
            Told::Rejected(id) if *id != order.order_id || order.status != OrderStatus::Rejected => {
                violations.push(format!("{key}: told rejected as order {id}, the log has {order:?}"))
            }
            _ => {}
        }
    }
    let confirmed: u64 = all.iter().filter(|o| o.status == OrderStatus::Confirmed).map(|o| o.quantity).sum();
    let stock = Catalog::book(&catalog, 1).unwrap().expect("the book").stock;
    if stock + confirmed != 5 {
        violations.push(format!("stock {stock} + confirmed {confirmed} != the 5 copies there were"));
    }
    violations
}

#[tokio::test(start_paused = true)]
async fn buys_settle_once_without_faults() {
    assert_eq!(scenario(Vec::new(), None).await, Vec::<String>::new());
}

/// Every fault at every step: the table the protocol must survive.
#[tokio::test(start_paused = true)]
async fn buys_settle_once_whatever_fails_at_each_step() {
    let mut failed = Vec::new();
    for step in STEPS {
        for fault in FAULTS {
            let violations = scenario(plan(step, fault), None).await;
            if !violations.is_empty() {
                failed.push(format!("{fault:?} at {step:?}: {}", violations.join("; ")));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} scenarios broke the buy:\n{}",
        failed.len(),
        STEPS.len() * FAULTS.len(),
        failed.join("\n")
    );
}

/// The planted bug: the resumer settles a pending order without reserving
/// its stock. A node crashing between placing an order and reserving its
/// stock leaves exactly such an order, and the check catches it.
#[tokio::test(start_paused = true)]
async fn a_resumer_settling_without_a_reservation_is_caught() {
    let violations =
        scenario(plan(Step::Reserve, Fault::CrashBefore), Some(PlantedBug::SettleWithoutReservation)).await;
    assert!(
        violations.iter().any(|v| v.contains("its reservation is None"))
            && violations.iter().any(|v| v.contains("!= the 5 copies there were")),
        "the planted bug went unnoticed: {violations:?}"
    );
}

/// Regression: a failed claim used to build its `Settling` eagerly and
/// drop it while still holding the lock, deadlocking the thread (and
/// with it the node's runtime) whenever a retried buy met the resumer on
/// the same buy; had it not deadlocked, the drop would have released the
/// other task's claim.
#[test]
fn a_second_claim_of_a_buy_is_refused_and_keeps_the_first() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let set = Mutex::new(HashSet::new());
        let first = Settling::claim(&set, "k").expect("the first claim succeeds");
        let second = Settling::claim(&set, "k").is_none();
        let kept = set.lock().unwrap().contains("k");
        drop(first);
        let released = set.lock().unwrap().is_empty();
        let _ = done.send((second, kept, released));
    });
    let outcome = finished.recv_timeout(Duration::from_secs(5)).expect("claiming twice deadlocked");
    assert_eq!(outcome, (true, true, true), "(second refused, first kept, released on drop)");
}

#[test]
fn claims_are_taken_in_one_batch() {
    let claims = Queue::<String>::default();
    claims.push("a".into());
    claims.push("b".into());
    assert_eq!(claims.take(), vec!["a".to_string(), "b".to_string()]);
    assert!(claims.take().is_empty());
}
