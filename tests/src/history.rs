//! The history of a chaos run: every operation as it was invoked and as it
//! completed, every fault, and the cluster's state at the end.
//!
//! The model is Jepsen's. A client *process* invokes an operation
//! ([`Record::Invoke`]) and later learns one of three completions, paired
//! with the invocation by the operation id:
//!
//! - [`Record::Ok`]: the operation happened, and here is what it returned;
//! - [`Record::Fail`]: the operation did not happen (a refusal before
//!   anything was proposed), or, for a buy, it was *rejected* for lack of
//!   stock (code `out_of_stock`: the order exists, rejected, and no stock was
//!   taken);
//! - [`Record::Info`]: nobody knows (a timeout, a broken connection, `503`).
//!   The operation may take effect at any time after its invocation, or
//!   never. A history checker must allow both.
//!
//! Times are nanoseconds since the start of the run on a monotonic clock
//! ([`Clock`]) shared by the clients and the nemesis, so that "A completed
//! before B was invoked" is a fact of the real-time order that a
//! linearizability checker can rely on: an invocation is stamped before the
//! request is sent and a completion after the answer is read.
//!
//! A history is a JSON-lines file, one [`Record`] per line, written as the
//! run goes ([`History::to_file`]) and read back by [`read`], so that a run
//! can be checked again, or inspected, after the fact:
//!
//! ```text
//! {"type":"invoke","time":1200345,"process":3,"op":17,"call":{"f":"buy","book":2,"quantity":1,"key":"c3-17","attempt":1},"endpoint":"http://127.0.0.1:40111"}
//! {"type":"ok","time":9034511,"process":3,"op":17,"answer":{"order":{"order_id":12,...}}}
//! {"type":"fault","time":5000000000,"phase":"start","fault":"kill-leader catalog","nodes":[2]}
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bazar_api::{Book, Consistency, Digest, Order};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Nanoseconds since the start of a run.
pub type Nanos = u64;

/// The monotonic clock of a run: every timestamp in a history comes from one.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock { start: std::time::Instant::now() }
    }

    /// Nanoseconds since the clock started.
    pub fn now(&self) -> Nanos {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// `POST /books/{book}/buy` with `Idempotency-Key: key`. Every attempt of
    /// one logical buy carries the same key; `attempt` counts from 1.
    Buy {
        /// The book.
        book: u64,
        /// Copies.
        quantity: u64,
        /// The idempotency key, unique to one logical buy.
        key: String,
        /// Which attempt of this key.
        attempt: u32,
        /// Who buys (every attempt of a key names the same buyer); absent
        /// in histories recorded before buyers existed.
        #[serde(default)]
        buyer: Option<String>,
    },
    /// `POST /books/{book}/restock` (no idempotency key: never re-sent after
    /// an unknown outcome).
    Restock {
        /// The book.
        book: u64,
        /// Copies added.
        quantity: u64,
    },
    /// `PATCH /books/{book}` with a new price.
    SetPrice {
        /// The book.
        book: u64,
        /// The new price.
        price_cents: u64,
    },
    /// `GET /books/{book}?consistency=`.
    Lookup {
        /// The book.
        book: u64,
        /// The consistency asked for.
        consistency: Consistency,
    },
    /// `GET /orders/{order_id}?consistency=`.
    ReadOrder {
        /// The order.
        order_id: u64,
        /// The consistency asked for.
        consistency: Consistency,
    },
    /// `GET /books?topic=&consistency=`: the first page of a topic's books.
    Search {
        /// The topic.
        topic: String,
        /// The consistency asked for.
        consistency: Consistency,
    },
}

impl Call {
    /// Whether the call may change the store.
    pub fn is_write(&self) -> bool {
        matches!(self, Call::Buy { .. } | Call::Restock { .. } | Call::SetPrice { .. })
    }

    /// A short name of the operation kind, for tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Buy { .. } => "buy",
            Call::Restock { .. } => "restock",
            Call::SetPrice { .. } => "set-price",
            Call::Lookup { .. } => "lookup",
            Call::ReadOrder { .. } => "read-order",
            Call::Search { .. } => "search",
        }
    }
}

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// A book: after a restock or price change, or as read.
    Book(Book),
    /// An order: the confirmed order of a buy, or as read.
    Order(Order),
    /// The books of a search page, in the order listed.
    Books(Vec<Book>),
}

/// Why a call did not succeed, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The problem code (`out_of_stock`, `not_leader`, `unavailable`, ...) or,
    /// without a problem document, `connect`, `timeout`, `broken`,
    /// `status-<n>`, `decode` or `invalid`.
    pub code: String,
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// The order a rejected buy recorded, when the server said.
    pub order_id: Option<u64>,
    /// Human-readable detail.
    pub detail: String,
}

/// Where a fault stands: begun, in place, healed, skipped, or the cluster after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// The fault was injected at this time.
    Start,
    /// Every action injecting the fault was done by this time (a buy first
    /// sent after it cannot have raced the fault).
    InPlace,
    /// The fault was healed at this time.
    Heal,
    /// The fault could not be injected (e.g. no agreed leader); nothing changed.
    Skip,
    /// After the heal, every node answered and both groups had a leader again.
    Recovered,
    /// After the heal, the cluster did not become healthy in time (the
    /// record's `fault` says why): a liveness failure.
    Unhealthy,
}

/// What a run's frontends promise of `cached` reads (read-your-writes
/// through the same frontend, and staleness bounded by `max_staleness_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPromise {
    /// The endpoints that are frontends (exactly as in [`Record::Invoke`]).
    pub frontends: Vec<String>,
    /// The frontends' `--max-staleness-ms`.
    pub max_staleness_ms: u64,
}

/// What the checker needs to know about the cluster once everything healed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// When the listing of every order began and completed. An order listed
    /// here was decided (or left pending) before the completion time.
    pub orders_read: Option<(Nanos, Nanos)>,
    /// Every order, read linearizably after waiting for pending orders to settle.
    pub orders: Vec<Order>,
    /// When the books were read (begin, completion), after the orders.
    pub books_read: Option<(Nanos, Nanos)>,
    /// Every book, read linearizably.
    pub books: Vec<Book>,
    /// Nodes whose digests were asked for.
    pub nodes: Vec<u64>,
    /// Each node's digest of each group, after waiting for them to converge.
    pub digests: Vec<Digest>,
    /// Nodes that still reported buys reserved in the catalog but not yet
    /// recorded as orders (`unclaimed_buys` in `/health`) when the wait for
    /// them ended: (node, count). Empty when every buy was settled.
    #[serde(default)]
    pub unclaimed: Vec<(u64, u64)>,
    /// What could not be collected.
    pub errors: Vec<String>,
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The state before any operation: the books the workload uses and the
    /// orders that existed already (not the workload's).
    Setup {
        /// When it was read.
        time: Nanos,
        /// The books, read linearizably.
        books: Vec<Book>,
        /// Orders that existed before the run.
        orders: Vec<Order>,
        /// What the `cached` reads of the run were promised, when some went
        /// through frontends; absent: `cached` reads are not judged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cached: Option<CachedPromise>,
    },
    /// A client invoked an operation.
    Invoke {
        /// When.
        time: Nanos,
        /// The client.
        process: u64,
        /// Pairs the invocation with its completion; unique in the history.
        op: u64,
        /// What was asked.
        call: Call,
        /// Which server it was sent to (a node or a frontend).
        endpoint: String,
    },
    /// The operation succeeded.
    Ok {
        /// When the answer was read.
        time: Nanos,
        /// The client.
        process: u64,
        /// The operation.
        op: u64,
        /// What it returned.
        answer: Answer,
        /// `X-Bazar-Served-By` of a read.
        #[serde(default)]
        served_by: Option<String>,
        /// `X-Bazar-Index` of a read.
        #[serde(default)]
        index: Option<u64>,
        /// The catalog index a write committed at (`X-Bazar-Index` of a
        /// restock or price change, `X-Bazar-Catalog-Index` of a buy), when
        /// the server said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        catalog_index: Option<u64>,
    },
    /// The operation did not happen, or (a buy answered `out_of_stock`) was rejected.
    Fail {
        /// When the answer was read.
        time: Nanos,
        /// The client.
        process: u64,
        /// The operation.
        op: u64,
        /// Why.
        error: Failure,
    },
    /// The outcome of the operation is unknown.
    Info {
        /// When the client gave up waiting.
        time: Nanos,
        /// The client.
        process: u64,
        /// The operation.
        op: u64,
        /// What the client saw.
        error: Failure,
    },
    /// The nemesis injected or healed a fault, or saw the cluster recover (or not).
    Fault {
        /// When.
        time: Nanos,
        /// What happened.
        phase: FaultPhase,
        /// The fault, e.g. `kill-leader-catalog` (for a skip or an
        /// unhealthy cluster, followed by the reason).
        fault: String,
        /// The nodes it acted on.
        nodes: Vec<u64>,
    },
    /// The cluster's state after the run, once every fault was healed.
    Final(FinalState),
}

impl Record {
    /// The record's timestamp (the final state: when its orders were listed).
    pub fn time(&self) -> Nanos {
        match self {
            Record::Setup { time, .. }
            | Record::Invoke { time, .. }
            | Record::Ok { time, .. }
            | Record::Fail { time, .. }
            | Record::Info { time, .. }
            | Record::Fault { time, .. } => *time,
            Record::Final(f) => f.orders_read.map_or(Nanos::MAX, |(start, _)| start),
        }
    }
}

struct Inner {
    records: Vec<Record>,
    sink: Option<BufWriter<File>>,
    /// The first write error; later records are still kept in memory.
    error: Option<String>,
}

/// A history being recorded: kept in memory and, optionally, appended to a
/// JSON-lines file as it grows. Cheap to clone; clones record into the same
/// history. Recording never blocks on anything but a short mutex.
#[derive(Clone)]
pub struct History {
    clock: Clock,
    inner: Arc<Mutex<Inner>>,
}

impl History {
    /// A history kept in memory only.
    pub fn in_memory(clock: Clock) -> History {
        History { clock, inner: Arc::new(Mutex::new(Inner { records: Vec::new(), sink: None, error: None })) }
    }

    /// A history kept in memory and written to `path` (created or truncated).
    pub fn to_file(clock: Clock, path: &Path) -> Result<History> {
        let file = File::create(path).map_err(|e| Error::Io(format!("creating {}: {e}", path.display())))?;
        let history = History::in_memory(clock);
        history.inner.lock().expect("history lock").sink = Some(BufWriter::new(file));
        Ok(history)
    }

    /// The run's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Now, on the run's clock.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Appends a record.
    pub fn record(&self, record: Record) {
        let mut inner = self.inner.lock().expect("history lock");
        if let Some(sink) = inner.sink.as_mut() {
            let written = serde_json::to_writer(&mut *sink, &record)
                .map_err(|e| e.to_string())
                .and_then(|()| sink.write_all(b"\n").map_err(|e| e.to_string()));
            if let Err(e) = written
                && inner.error.is_none()
            {
                inner.error = Some(e);
            }
        }
        inner.records.push(record);
    }

    /// How many records there are so far.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("history lock").records.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every record so far, in the order they were recorded
    /// (nearly, not exactly, time order: sort by [`Record::time`] if it matters).
    pub fn records(&self) -> Vec<Record> {
        self.inner.lock().expect("history lock").records.clone()
    }

    /// Flushes the file, and reports the first write error if there was one.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.inner.lock().expect("history lock");
        if let Some(sink) = inner.sink.as_mut()
            && let Err(e) = sink.flush()
            && inner.error.is_none()
        {
            inner.error = Some(e.to_string());
        }
        match &inner.error {
            Some(e) => Err(Error::Io(format!("writing the history: {e}"))),
            None => Ok(()),
        }
    }
}

/// Reads a JSON-lines history file.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let file = File::open(path).map_err(|e| Error::Io(format!("opening {}: {e}", path.display())))?;
    let mut records = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::Io(format!("reading {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line)
            .map_err(|e| Error::History(format!("{} line {}: {e}", path.display(), n + 1)))?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_file_reads_back_as_it_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let history = History::to_file(Clock::start(), &path).unwrap();
        let call = Call::Buy { book: 2, quantity: 1, key: "c1-1".into(), attempt: 1, buyer: Some("c1".into()) };
        history.record(Record::Invoke { time: 5, process: 1, op: 1, call, endpoint: "http://n1".into() });
        let failure =
            Failure { code: "timeout".into(), status: None, order_id: None, detail: "no answer in 1s".into() };
        history.record(Record::Info { time: 9, process: 1, op: 1, error: failure });
        history.record(Record::Fault {
            time: 7,
            phase: FaultPhase::Start,
            fault: "kill-leader catalog".into(),
            nodes: vec![2],
        });
        history.record(Record::Final(FinalState::default()));
        history.flush().unwrap();
        assert_eq!(read(&path).unwrap(), history.records());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().starts_with(r#"{"type":"invoke","time":5"#), "{text}");
        assert!(text.contains(r#""f":"buy""#), "{text}");
    }

    #[test]
    fn a_malformed_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"type\":\"fault\",\"time\":1,\"phase\":\"start\",\"fault\":\"x\",\"nodes\":[]}\nnot json\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
