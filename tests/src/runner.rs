//! The workload of a chaos run: concurrent clients buying, restocking,
//! changing prices and reading, recording everything in a [`History`].
//!
//! The runner knows nothing about how the servers were started: it is given
//! HTTP endpoints (raft nodes, or a frontend) and an admin token, and talks
//! to them through [`bazar_client::Client`] like any user would. Writes sent
//! to a node that does not lead are redirected by the client library.
//!
//! # What each client does
//! Each client is a *process* in the history and runs one operation at a
//! time (but for a double-clicked buy), chosen by [`Mix`] weights, until the
//! run's duration is over:
//!
//! - **buy** with a fresh idempotency key. When the outcome is unknown (a
//!   timeout, `503`, a broken connection) the client retries *the same key*
//!   on the next endpoint, for up to [`RunnerConfig::retry_budget`], except
//!   that one unknown buy in [`RunnerConfig::abandon_one_in`] is abandoned,
//!   so the checker must work out its outcome from the final state. To make
//!   timeouts happen even without faults, one buy in
//!   [`RunnerConfig::impatient_one_in`] is first sent with a tiny deadline
//!   and retried at once, while the server is still settling it; one in
//!   [`RunnerConfig::double_one_in`] is sent twice at the same time (a
//!   double-click); and one acknowledged buy in
//!   [`RunnerConfig::resend_one_in`] is sent again with its key, which must
//!   return the same order.
//! - **restock** and **set-price** (admin). They carry no idempotency key, so
//!   they are retried only after a refusal that guarantees nothing was
//!   proposed (`421 not_leader`, connection refused); after an unknown
//!   outcome the client moves on and the checker allows either outcome.
//! - **lookup** at a consistency chosen by weight, on a random endpoint, so
//!   that followers serve reads too.
//! - **read-order** of an order some client saw acknowledged.
//! - **search**: the first page of one of [`RunnerConfig::topics`], at a
//!   consistency chosen by weight; every book listed is a read of that book.
//!
//! Every attempt is one operation in the history: an `invoke` stamped just
//! before the request is sent, and an `ok`, `fail` or `info` stamped just
//! after the answer (or the lack of one) — see [`crate::history`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bazar_api::model::MAX_PAGE_LIMIT;
use bazar_api::{Consistency, ErrorCode, Order};
use bazar_client::{Client, ClientError, TransportKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::history::{Answer, CachedPromise, Call, Failure, History, Record};
use crate::{Error, Result};

/// The buyer the prober's buys name.
pub const PROBER: &str = "prober";

/// Relative weights of the operations a client picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Buys.
    pub buy: u32,
    /// Restocks.
    pub restock: u32,
    /// Price changes.
    pub set_price: u32,
    /// Book lookups.
    pub lookup: u32,
    /// Order reads.
    pub read_order: u32,
    /// Searches by topic.
    pub search: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { buy: 45, restock: 8, set_price: 7, lookup: 29, read_order: 7, search: 4 }
    }
}

/// What to run, against what.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Base URLs of the servers to talk to (nodes, or a frontend).
    pub endpoints: Vec<String>,
    /// The admin token, for restocks and price changes.
    pub admin_token: String,
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients start new operations. An operation under way at the
    /// end finishes (a buy keeps retrying its key for its retry budget).
    pub duration: Duration,
    /// The books to use. The run must be the only writer of these books.
    pub books: Vec<u64>,
    /// How often each operation is picked.
    pub mix: Mix,
    /// Weights of `cached`, `lease` and `linearizable` reads, in that order.
    pub read_levels: [u32; 3],
    /// Largest quantity of one buy.
    pub max_quantity: u64,
    /// Largest quantity of one restock.
    pub max_restock: u64,
    /// Prices a price change picks from.
    pub prices: Vec<u64>,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Deadline of an impatient first attempt of a buy.
    pub impatient_timeout: Duration,
    /// One buy in this many starts impatient (0: never).
    pub impatient_one_in: u32,
    /// One acknowledged buy in this many is sent again with its key (0: never).
    pub resend_one_in: u32,
    /// One unknown buy in this many is not retried (0: never).
    pub abandon_one_in: u32,
    /// One buy in this many is sent twice at once with the same key, to two
    /// endpoints (0: never).
    pub double_one_in: u32,
    /// How long a buy keeps retrying its key after unknown outcomes.
    pub retry_budget: Duration,
    /// Books to buy down to a low stock before the run, as (book, stock), so
    /// that buys also meet an empty shelf.
    pub low_stock: Vec<(u64, u64)>,
    /// Deadline of the prober's buys; `None`: no prober. The prober is one
    /// more client that only buys single copies, each with a fresh key and
    /// one attempt, moving to the next endpoint after any failure, so that
    /// the history shows within tens of milliseconds when writes work again
    /// after a fault.
    pub probe_timeout: Option<Duration>,
    /// Topics that searches pick from.
    pub topics: Vec<String>,
    /// What the frontends among the endpoints promise of `cached` reads,
    /// recorded in the history for the checker; `None`: no endpoint is a
    /// frontend (or its promise is not to be judged).
    pub cached: Option<CachedPromise>,
    /// Seed of every random choice (endpoints, operations, arguments).
    pub seed: u64,
}

impl RunnerConfig {
    /// Defaults for `endpoints`: 8 clients for 10 s over the seven classic
    /// books, book 7 bought down to 10 copies. Restocks add about as many
    /// copies as buys take, so stock wanders, and buys meet both full and
    /// empty shelves.
    pub fn new(endpoints: Vec<String>, admin_token: impl Into<String>) -> RunnerConfig {
        RunnerConfig {
            endpoints,
            admin_token: admin_token.into(),
            clients: 8,
            duration: Duration::from_secs(10),
            books: (1..=7).collect(),
            mix: Mix::default(),
            read_levels: [2, 3, 5],
            max_quantity: 3,
            max_restock: 20,
            prices: vec![1000, 1500, 2000, 2500],
            timeout: Duration::from_secs(2),
            impatient_timeout: Duration::from_millis(5),
            impatient_one_in: 20,
            resend_one_in: 10,
            abandon_one_in: 8,
            double_one_in: 20,
            retry_budget: Duration::from_secs(8),
            low_stock: vec![(7, 10)],
            probe_timeout: Some(Duration::from_millis(500)),
            topics: vec!["distributed systems".into(), "undergraduate school".into()],
            cached: None,
            seed: rand::random(),
        }
    }
}

/// Reads the books and existing orders into a [`Record::Setup`], after
/// buying the [`RunnerConfig::low_stock`] books down. Retries through
/// transient failures for up to `timeout`.
pub async fn setup(config: &RunnerConfig, history: &History, timeout: Duration) -> Result<()> {
    let clients = clients(config, config.timeout.max(Duration::from_secs(5)))?;
    let deadline = Instant::now() + timeout;
    let tag: u64 = rand::random();
    for &(book, target) in &config.low_stock {
        let stock = retrying(&clients, deadline, &format!("lookup {book}"), |c| async move {
            c.lookup(book, Some(Consistency::Linearizable)).await.map(|r| r.value.stock)
        })
        .await?;
        if stock > target {
            let key = format!("setup-{tag:x}-{book}");
            retrying(&clients, deadline, &format!("buy {book}"), |c| {
                let key = key.clone();
                async move { c.buy(book, stock - target, Some(&key)).await }
            })
            .await?;
        }
    }
    let mut books = Vec::new();
    for &book in &config.books {
        let what = format!("lookup {book}");
        let read = retrying(&clients, deadline, &what, |c| async move {
            c.lookup(book, Some(Consistency::Linearizable)).await.map(|r| r.value)
        });
        books.push(read.await?);
    }
    let orders = retrying(&clients, deadline, "list orders", |c| async move {
        c.list_all_orders(&bazar_api::OrderFilter::All, Some(Consistency::Linearizable)).await
    })
    .await?;
    history.record(Record::Setup { time: history.now(), books, orders, cached: config.cached.clone() });
    Ok(())
}

/// Calls `f` on one endpoint after another until it succeeds or `deadline` passes.
async fn retrying<T, F, Fut>(clients: &[Client], deadline: Instant, what: &str, mut f: F) -> Result<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = bazar_client::Result<T>>,
{
    let mut n = 0;
    loop {
        match f(clients[n % clients.len()].clone()).await {
            Ok(v) => return Ok(v),
            Err(_) if Instant::now() < deadline => {
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(Error::Cluster(format!("setup: {what}: {e}"))),
        }
    }
}

/// One client per endpoint, sharing one connection pool, with deadline `timeout`.
fn clients(config: &RunnerConfig, timeout: Duration) -> Result<Vec<Client>> {
    if config.endpoints.is_empty() {
        return Err(Error::Cluster("no endpoints to run against".into()));
    }
    let http = reqwest::Client::builder()
        // A dead node refuses at once; a paused one never answers the SYN
        // backlog past this, and an unsent request is a cheap retry.
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| Error::Cluster(format!("HTTP client: {e}")))?;
    config
        .endpoints
        .iter()
        .map(|url| {
            Client::builder(url.clone())
                .admin_token(config.admin_token.clone())
                .timeout(timeout)
                .http_client(http.clone())
                .build()
                .map_err(|e| Error::Cluster(format!("client for {url}: {e}")))
        })
        .collect()
}

/// What a run did, in numbers; the history has the details.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Operations invoked (attempts).
    pub invoked: u64,
}

/// State shared by the clients of one run.
struct Shared {
    history: History,
    config: RunnerConfig,
    clients: Vec<Client>,
    impatient: Vec<Client>,
    next_op: AtomicU64,
    /// Orders some client saw acknowledged, for order reads.
    acked: Mutex<Vec<u64>>,
    /// Random prefix of this run's keys, so that runs on one cluster never share a key.
    tag: String,
}

/// Runs the workload for its duration and returns when every client has
/// finished its last operation.
pub async fn run(config: RunnerConfig, history: History) -> Result<RunStats> {
    let shared = Arc::new(Shared {
        clients: clients(&config, config.timeout)?,
        impatient: clients(&config, config.impatient_timeout)?,
        // Not from the seed: a replayed seed must not reuse keys on a cluster.
        tag: format!("r{:08x}", rand::random::<u32>()),
        history,
        config,
        next_op: AtomicU64::new(1),
        acked: Mutex::new(Vec::new()),
    });
    let stop = Instant::now() + shared.config.duration;
    let mut tasks = Vec::new();
    for process in 0..shared.config.clients as u64 {
        let mut worker = Worker {
            rng: StdRng::seed_from_u64(shared.config.seed ^ (process.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            endpoint: process as usize % shared.clients.len(),
            process,
            n: 0,
            shared: shared.clone(),
        };
        tasks.push(tokio::spawn(async move { worker.run(stop).await }));
    }
    if let Some(deadline) = shared.config.probe_timeout {
        let process = shared.config.clients as u64;
        let mut prober = Worker {
            rng: StdRng::seed_from_u64(shared.config.seed ^ 0x9B0B),
            endpoint: 0,
            process,
            n: 0,
            shared: shared.clone(),
        };
        tasks.push(tokio::spawn(async move { prober.probe(stop, deadline).await }));
    }
    for task in tasks {
        task.await.map_err(|e| Error::Cluster(format!("a workload client panicked: {e}")))?;
    }
    Ok(RunStats { invoked: shared.next_op.load(Ordering::Relaxed) - 1 })
}

/// How an attempt ended, as the history records it.
enum Completion {
    /// The answer, `X-Bazar-Served-By` and `X-Bazar-Index` of a read, and
    /// the catalog index of a write.
    Ok(Answer, Option<String>, Option<u64>, Option<u64>),
    Fail(Failure),
    Info(Failure),
}

/// The history's view of a client error.
pub fn failure(e: &ClientError) -> Failure {
    let code = match e {
        ClientError::Problem(p) => p.code.as_str().to_string(),
        ClientError::Status { status, .. } => format!("status-{status}"),
        ClientError::Transport { kind: TransportKind::Connect, .. } => "connect".into(),
        ClientError::Transport { kind: TransportKind::Timeout, .. } => "timeout".into(),
        ClientError::Transport { kind: TransportKind::Broken, .. } => "broken".into(),
        ClientError::Decode(_) => "decode".into(),
        ClientError::Invalid(_) => "invalid".into(),
    };
    Failure { code, status: e.status(), order_id: e.problem().and_then(|p| p.order_id), detail: e.to_string() }
}

/// Whether a write was refused before anything was proposed, so that
/// sending it again cannot apply it twice: `not_leader`, a connection never
/// made, or `unavailable` saying `write_outcome: not_applied`.
fn refused(e: &ClientError) -> bool {
    e.is_code(ErrorCode::NotLeader)
        || (e.is_code(ErrorCode::Unavailable) && !e.outcome_unknown())
        || matches!(e, ClientError::Transport { kind: TransportKind::Connect, .. })
}

/// Classifies an error: rejections and refusals are `fail`, the rest `info`.
fn complete_err(e: &ClientError) -> Completion {
    if e.outcome_unknown() { Completion::Info(failure(e)) } else { Completion::Fail(failure(e)) }
}

struct Worker {
    shared: Arc<Shared>,
    process: u64,
    rng: StdRng,
    endpoint: usize,
    /// Operations started by this client, for unique keys.
    n: u64,
}

impl Worker {
    async fn run(&mut self, stop: Instant) {
        while Instant::now() < stop {
            self.n += 1;
            let c = &self.shared.config;
            let m = c.mix;
            let book = c.books[self.rng.random_range(0..c.books.len())];
            let total = m.buy + m.restock + m.set_price + m.lookup + m.read_order + m.search;
            let mut pick = self.rng.random_range(0..total.max(1));
            if pick < m.buy {
                let quantity = self.rng.random_range(1..=c.max_quantity.max(1));
                self.buy(book, quantity).await;
                continue;
            }
            pick -= m.buy;
            if pick < m.restock {
                let quantity = self.rng.random_range(1..=c.max_restock.max(1));
                self.catalog_write(Call::Restock { book, quantity }).await;
                continue;
            }
            pick -= m.restock;
            if pick < m.set_price {
                let price_cents = c.prices[self.rng.random_range(0..c.prices.len())];
                self.catalog_write(Call::SetPrice { book, price_cents }).await;
                continue;
            }
            pick -= m.set_price;
            let consistency = self.consistency();
            if pick < m.lookup {
                self.read(Call::Lookup { book, consistency }).await;
                continue;
            }
            pick -= m.lookup;
            let topics = &self.shared.config.topics;
            if pick < m.search && !topics.is_empty() {
                let topic = topics[self.rng.random_range(0..topics.len())].clone();
                self.read(Call::Search { topic, consistency }).await;
                continue;
            }
            let order = {
                let acked = self.shared.acked.lock().await;
                (!acked.is_empty()).then(|| acked[self.rng.random_range(0..acked.len())])
            };
            match order {
                Some(order_id) => self.read(Call::ReadOrder { order_id, consistency }).await,
                None => self.read(Call::Lookup { book, consistency }).await,
            }
        }
    }

    fn one_in(&mut self, n: u32) -> bool {
        n > 0 && self.rng.random_range(0..n) == 0
    }

    fn consistency(&mut self) -> Consistency {
        let [cached, lease, lin] = self.shared.config.read_levels;
        let pick = self.rng.random_range(0..(cached + lease + lin).max(1));
        if pick < cached {
            Consistency::Cached
        } else if pick < cached + lease {
            Consistency::Lease
        } else {
            Consistency::Linearizable
        }
    }

    fn rotate(&mut self) {
        self.endpoint = (self.endpoint + 1) % self.shared.clients.len();
    }

    /// Records the invocation of `call` on the current endpoint; returns its op id.
    fn invoke(&self, call: Call, endpoint: usize) -> u64 {
        let op = self.shared.next_op.fetch_add(1, Ordering::Relaxed);
        let endpoint = self.shared.clients[endpoint].base_url().to_string();
        let history = &self.shared.history;
        history.record(Record::Invoke { time: history.now(), process: self.process, op, call, endpoint });
        op
    }

    fn complete(&self, op: u64, completion: Completion) {
        let history = &self.shared.history;
        let (time, process) = (history.now(), self.process);
        history.record(match completion {
            Completion::Ok(answer, served_by, index, catalog_index) => {
                Record::Ok { time, process, op, answer, served_by, index, catalog_index }
            }
            Completion::Fail(error) => Record::Fail { time, process, op, error },
            Completion::Info(error) => Record::Info { time, process, op, error },
        });
    }

    async fn pause(&mut self) {
        let ms = self.rng.random_range(10..50);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The prober: one-attempt buys, as buyer [`PROBER`], of one copy with a fresh key each, under
    /// `deadline`; an unknown outcome is left to the checker (the final
    /// state decides it).
    async fn probe(&mut self, stop: Instant, deadline: Duration) {
        let Ok(prober) = clients(&self.shared.config, deadline) else { return };
        while Instant::now() < stop {
            self.n += 1;
            let c = &self.shared.config;
            let book = c.books[self.rng.random_range(0..c.books.len())];
            let key = format!("{}-probe-{}", self.shared.tag, self.n);
            let buyer = Some(PROBER.to_string());
            let op = self.invoke(Call::Buy { book, quantity: 1, key: key.clone(), attempt: 1, buyer }, self.endpoint);
            match prober[self.endpoint].buy_written(book, 1, Some(PROBER), Some(&key)).await {
                Ok(w) => self.complete(op, Completion::Ok(Answer::Order(w.value), None, None, w.catalog_index)),
                Err(e) => {
                    self.complete(op, complete_err(&e));
                    if !e.is_code(ErrorCode::OutOfStock) {
                        self.rotate();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one attempt of a buy to `endpoint` and records it.
    async fn buy_attempt(
        &self,
        book: u64,
        quantity: u64,
        key: &str,
        attempt: u32,
        endpoint: usize,
        impatient: bool,
    ) -> bazar_client::Result<Order> {
        // Each client process buys as its own buyer, so that the checker
        // can tell whether an order keeps the buyer it was acknowledged for.
        let buyer = format!("client-{}", self.process);
        let call = Call::Buy { book, quantity, key: key.to_string(), attempt, buyer: Some(buyer.clone()) };
        let op = self.invoke(call, endpoint);
        let clients = if impatient { &self.shared.impatient } else { &self.shared.clients };
        let result = clients[endpoint].buy_written(book, quantity, Some(&buyer), Some(key)).await;
        match &result {
            Ok(w) => {
                self.complete(op, Completion::Ok(Answer::Order(w.value.clone()), None, None, w.catalog_index));
                self.shared.acked.lock().await.push(w.value.order_id);
            }
            Err(e) => self.complete(op, complete_err(e)),
        }
        result.map(|w| w.value)
    }

    async fn buy(&mut self, book: u64, quantity: u64) {
        let key = format!("{}-c{}-{}", self.shared.tag, self.process, self.n);
        let give_up = Instant::now() + self.shared.config.retry_budget;
        let mut impatient = self.one_in(self.shared.config.impatient_one_in);
        let mut resent = false;
        let mut attempt = 0;
        if self.one_in(self.shared.config.double_one_in) {
            // Two requests with one key at once, as a double-clicked button
            // sends them: both must answer the same order.
            let other = (self.endpoint + 1) % self.shared.clients.len();
            let (a, b) = tokio::join!(
                self.buy_attempt(book, quantity, &key, 1, self.endpoint, false),
                self.buy_attempt(book, quantity, &key, 2, other, false)
            );
            attempt = 2;
            let decided = |r: &bazar_client::Result<Order>| match r {
                Ok(_) => true,
                Err(e) => !(e.outcome_unknown() || refused(e)),
            };
            if decided(&a) || decided(&b) {
                return;
            }
        }
        loop {
            attempt += 1;
            let was_impatient = std::mem::take(&mut impatient);
            match self.buy_attempt(book, quantity, &key, attempt, self.endpoint, was_impatient).await {
                Ok(_) => {
                    if resent || !self.one_in(self.shared.config.resend_one_in) {
                        return;
                    }
                    // Deliberately send the same buy again: it must answer the same order.
                    resent = true;
                    self.rotate();
                    continue;
                }
                Err(e) => {
                    let unknown = e.outcome_unknown();
                    if !(unknown || refused(&e)) || Instant::now() > give_up {
                        return;
                    }
                    if was_impatient {
                        // Retry at once: the first attempt is most likely
                        // still being settled on the server.
                        continue;
                    }
                    if unknown && self.one_in(self.shared.config.abandon_one_in) {
                        return;
                    }
                }
            }
            self.rotate();
            self.pause().await;
        }
    }

    /// A restock or price change: retried only after a refusal.
    async fn catalog_write(&mut self, call: Call) {
        let give_up = Instant::now() + self.shared.config.retry_budget;
        loop {
            let op = self.invoke(call.clone(), self.endpoint);
            let client = self.shared.clients[self.endpoint].clone();
            let result = match call {
                Call::Restock { book, quantity } => client.restock_written(book, quantity).await,
                Call::SetPrice { book, price_cents } => client.set_price_written(book, price_cents).await,
                _ => unreachable!("not a catalog write: {call:?}"),
            };
            match result {
                Ok(w) => {
                    self.complete(op, Completion::Ok(Answer::Book(w.value), None, None, w.catalog_index));
                    return;
                }
                Err(e) => {
                    self.complete(op, complete_err(&e));
                    if !refused(&e) || Instant::now() > give_up {
                        return;
                    }
                }
            }
            self.rotate();
            self.pause().await;
        }
    }

    /// A lookup or order read on a random endpoint; never retried.
    async fn read(&mut self, call: Call) {
        let endpoint = self.rng.random_range(0..self.shared.clients.len());
        let op = self.invoke(call.clone(), endpoint);
        let client = &self.shared.clients[endpoint];
        let completion = match call {
            Call::Lookup { book, consistency } => match client.lookup(book, Some(consistency)).await {
                Ok(r) => Completion::Ok(Answer::Book(r.value), r.meta.served_by, r.meta.index, None),
                Err(e) => complete_err(&e),
            },
            Call::ReadOrder { order_id, consistency } => match client.order(order_id, Some(consistency)).await {
                Ok(r) => Completion::Ok(Answer::Order(r.value), r.meta.served_by, r.meta.index, None),
                Err(e) => complete_err(&e),
            },
            Call::Search { ref topic, consistency } => {
                match client.search(topic, Some(MAX_PAGE_LIMIT), None, Some(consistency)).await {
                    Ok(r) => Completion::Ok(Answer::Books(r.value.books), r.meta.served_by, r.meta.index, None),
                    Err(e) => complete_err(&e),
                }
            }
            _ => unreachable!("not a read: {call:?}"),
        };
        self.complete(op, completion);
    }
}
