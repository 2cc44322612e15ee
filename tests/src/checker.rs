//! The history checker: reads a history (see [`crate::history`]) with the
//! cluster's final state and decides, with evidence, whether the run kept
//! every promise of guarantees §6.
//!
//! | check | how |
//! |---|---|
//! | answers | every answer is one the API allows for the request: a buy's `201` is a confirmed order for that book, quantity and key, priced `quantity × unit`; failures are `out_of_stock` (buys), refusals (`not_leader`, connection refused) or of unknown outcome (timeouts, `503`); a `500` or a stray `4xx` is a violation |
//! | 1 no oversell, 2 conservation, 3 acknowledged buys survive | [`crate::check::state_problems`] on a [`Ledger`] built from the history and the final books and orders |
//! | 4 one order per key | every definite answer to one key names the same order with the same outcome; the final state has at most one order per key and no order for a key nobody sent |
//! | 5 replicas converge | every node reported the same digest at the same applied index, per group |
//! | 6 linearizable catalog | per book, the writes and the `linearizable` and `lease` reads are linearizable ([`crate::linearizability`]); a failure that disappears without lease reads is reported as a lease violation |
//! | 6 linearizable order reads | a `linearizable` or `lease` read of an order invoked after the order was acknowledged finds it confirmed, as acknowledged; no read of an order contradicts its final state |
//! | 6 cached: read-your-writes | through a frontend, a `cached` read of a book (a lookup or a search listing it) reflects every write of that book acknowledged through the same frontend before the read began: its `X-Bazar-Index` is at least the write's catalog index; a `cached` order read finds an order acknowledged through that frontend before, confirmed |
//! | 6 cached: bounded staleness | through any frontend, a `cached` read reflects every write acknowledged more than the frontends' `--max-staleness` before it began (by index, as above, and by value: the book as read must be one the book held at some moment from `max_staleness` before the read began to its answer) |
//! | 7 nothing pending | no order is pending, and no replica holds a buy reserved but not recorded, in the final state |
//! | 7 writes resume | after each leader kill or leader partition ([`loses_a_leader`]), a buy invoked after the fault is decided within [`CheckConfig::resume_bound`]: a leader was elected among the nodes that still form a majority |
//! | 7 healthy again | after each heal, the nemesis saw every node answer and both groups agree on a leader within its bound (a hung node is caught here) |
//!
//! # The model of one book
//! Books are independent objects and linearizability is compositional, so
//! each book's history is checked on its own against [`BookModel`]: a
//! (stock, price) register that restocks and price changes write (their
//! answers carry the book right after), buys take from (at the current
//! price, never below zero) or are refused by (fewer copies than asked),
//! and reads observe. What each operation contributes depends on what is
//! known of its outcome:
//!
//! - a buy is one operation per idempotency key, from the first attempt's
//!   invocation to the first *definite* answer (`201`: it took stock at the
//!   order's unit price; `409`: it was refused). Without one, the final
//!   state decides: a confirmed or rejected order means the same, but known
//!   only by the time the orders were listed; no order means the buy never
//!   happened; a pending order (itself a violation) may take stock or not;
//! - a restock or price change answered `200` happened between invocation
//!   and answer, and its answer is an observation; one of unknown outcome may
//!   happen at any time after its invocation, or never;
//! - a search is a read of every book it lists, at its consistency level;
//! - `cached` reads are not required to be linearizable and are left out
//!   (the cached checks judge those that went through a frontend);
//! - the final read of every book is one more linearizable read.
//!
//! # Unavailability
//! For each fault, the time from its injection to the first decision
//! (`201` or `409`) of a buy whose key was first sent after it was in place
//! (once its last action was done, so that the buy cannot have raced it):
//! such a buy commits in both groups, so this is when writes work again
//! everywhere.
//! The runner's prober sends one every few tens of milliseconds with a
//! short deadline, so the measure is not blurred by clients waiting out
//! long timeouts on a paused node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use bazar_api::{Book, Consistency, Group, Order, OrderStatus};

use crate::check::{Ledger, state_problems};
use crate::history::{Answer, CachedPromise, Call, Failure, FaultPhase, FinalState, Nanos, Record};
use crate::linearizability::{self, BookModel, BookOp, BookState, Evidence, Operation, Verdict};

/// Names of the checks, in report order.
pub mod checks {
    /// Answers are ones the API allows.
    pub const ANSWERS: &str = "answers allowed by the API";
    /// Invariant 1.
    pub const NO_OVERSELL: &str = "1 no oversell";
    /// Invariant 2.
    pub const CONSERVATION: &str = "2 conservation per book";
    /// Invariant 3.
    pub const DURABLE: &str = "3 acknowledged buys survive";
    /// Invariant 4.
    pub const ONE_ORDER: &str = "4 one order per key";
    /// Invariant 5.
    pub const CONVERGED: &str = "5 replicas converge";
    /// Invariant 6 on the catalog.
    pub const LINEARIZABLE_BOOKS: &str = "6 linearizable books";
    /// Invariant 6 on order reads.
    pub const ORDER_READS: &str = "6 linearizable order reads";
    /// `cached` reads through a frontend see that frontend's writes.
    pub const CACHED_RYW: &str = "6 cached: read-your-writes";
    /// `cached` reads through a frontend lag by at most `max_staleness`.
    pub const CACHED_STALENESS: &str = "6 cached: bounded staleness";
    /// Invariant 7: nothing pending.
    pub const NOTHING_PENDING: &str = "7 nothing left pending";
    /// Invariant 7: writes resume after a leader kill or partition.
    pub const RESUME: &str = "7 writes resume after leader loss";
    /// Invariant 7: with every fault healed, the cluster is healthy again.
    pub const RECOVERS: &str = "7 healthy again after each heal";
    /// The history itself is complete.
    pub const HISTORY: &str = "history complete";

    /// Every check, in report order.
    pub const ALL: [&str; 14] = [
        HISTORY,
        ANSWERS,
        NO_OVERSELL,
        CONSERVATION,
        DURABLE,
        ONE_ORDER,
        CONVERGED,
        LINEARIZABLE_BOOKS,
        ORDER_READS,
        CACHED_RYW,
        CACHED_STALENESS,
        NOTHING_PENDING,
        RESUME,
        RECOVERS,
    ];
}

/// How to check.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Search steps allowed per book before the verdict is "unknown".
    pub max_steps: u64,
    /// Bound on the time for writes to resume after a leader kill or
    /// partition (guarantees §6.7: 2 s); `None` reports the times without judging them.
    pub resume_bound: Option<Duration>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig { max_steps: 20_000_000, resume_bound: Some(Duration::from_secs(2)) }
    }
}

/// Invocations and completions of one kind of operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Invoked.
    pub invoked: u64,
    /// Succeeded.
    pub ok: u64,
    /// Failed (did not happen, or a buy was refused for lack of stock).
    pub fail: u64,
    /// Unknown outcome.
    pub info: u64,
}

/// What became of the logical buys (one per idempotency key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuyStats {
    /// Distinct keys.
    pub keys: u64,
    /// Keys with a `201`.
    pub acknowledged: u64,
    /// Keys with a `409 out_of_stock`.
    pub rejected: u64,
    /// Keys without any definite answer.
    pub unknown: u64,
    /// ...of which the final state shows confirmed.
    pub unknown_confirmed: u64,
    /// ...rejected.
    pub unknown_rejected: u64,
    /// ...never recorded: the buy did not happen.
    pub unknown_absent: u64,
    /// Attempts beyond the first (retries and deliberate re-sends).
    pub extra_attempts: u64,
}

/// The linearizability verdict of one book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookCheck {
    /// The book.
    pub book: u64,
    /// Operations in its history (writes and checked reads).
    pub ops: usize,
    /// Of which linearizable reads.
    pub linearizable_reads: usize,
    /// Of which lease reads.
    pub lease_reads: usize,
    /// Of which of unknown outcome.
    pub unknown: usize,
    /// `linearizable`, `NOT linearizable: ...` or `unknown: ...`.
    pub verdict: String,
    /// Whether the search was conclusive.
    pub conclusive: bool,
}

/// The unavailability window after one fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    /// The fault's name.
    pub fault: String,
    /// The nodes it acted on.
    pub nodes: Vec<u64>,
    /// When it was injected.
    pub start: Nanos,
    /// When it was healed.
    pub healed: Option<Nanos>,
    /// When the cluster was seen healthy again after the heal.
    pub recovered: Option<Nanos>,
    /// How long after `start` the first buy invoked after it was decided.
    pub resumed_after: Option<Nanos>,
}

/// One check and what broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Its name (see [`checks`]).
    pub name: &'static str,
    /// Violations found, each with its evidence.
    pub violations: Vec<String>,
}

/// The checker's verdict, with the evidence and the numbers of the run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Time between the first and the last operation record.
    pub span: Nanos,
    /// Attempts per operation kind.
    pub ops: BTreeMap<&'static str, Counts>,
    /// Logical buys.
    pub buys: BuyStats,
    /// Reads at each consistency level that returned a book.
    pub reads: HashMap<Consistency, u64>,
    /// Order reads checked against acknowledgements.
    pub order_reads_checked: u64,
    /// `cached` reads of books through a frontend judged for
    /// read-your-writes and staleness (a search counts once per book).
    pub cached_reads_checked: u64,
    /// Linearizability per book.
    pub books: Vec<BookCheck>,
    /// Unavailability after each fault.
    pub faults: Vec<FaultWindow>,
    /// Every check, with its violations.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Every violation, named by its check.
    pub fn violations(&self) -> Vec<String> {
        self.checks.iter().flat_map(|c| c.violations.iter().map(move |v| format!("[{}] {v}", c.name))).collect()
    }

    /// Whether no check found a violation.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.violations.is_empty())
    }

    /// Whether every book's linearizability search finished.
    pub fn conclusive(&self) -> bool {
        self.books.iter().all(|b| b.conclusive)
    }

    /// Writes-resume times after leader kills.
    pub fn leader_kill_resumes(&self) -> Vec<Nanos> {
        self.faults.iter().filter(|f| f.fault.starts_with("kill-leader")).filter_map(|f| f.resumed_after).collect()
    }

    /// Writes-resume times after a leader was cut off its peers.
    pub fn leader_partition_resumes(&self) -> Vec<Nanos> {
        self.faults
            .iter()
            .filter(|f| loses_a_leader(&f.fault) && !f.fault.starts_with("kill-leader"))
            .filter_map(|f| f.resumed_after)
            .collect()
    }

    /// The summary table: faults and how long writes stopped after each,
    /// operations, buys, the checks and the verdict.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "faults ({}):", self.faults.len());
        let _ = writeln!(
            w,
            "  {:>3}  {:>8}  {:<24} {:<7} {:>8}  {:>13}  writes resumed after",
            "#", "at (s)", "fault", "nodes", "held (s)", "healthy after"
        );
        for (i, f) in self.faults.iter().enumerate() {
            let nodes = f.nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let held = f.healed.map_or("-".into(), |h| format!("{:.1}", secs(h.saturating_sub(f.start))));
            let healthy = match (f.healed, f.recovered) {
                (Some(h), Some(r)) => format!("{:.3} s", secs(r.saturating_sub(h))),
                (Some(_), None) => "NOT HEALTHY".into(),
                _ => "-".into(),
            };
            let resumed = f.resumed_after.map_or("no decided buy after it".into(), |r| format!("{:.3} s", secs(r)));
            let _ = writeln!(
                w,
                "  {:>3}  {:>8.1}  {:<24} {:<7} {:>8}  {healthy:>13}  {resumed}",
                i + 1,
                secs(f.start),
                f.fault,
                nodes,
                held
            );
        }
        for (what, resumes) in [("kill", self.leader_kill_resumes()), ("partition", self.leader_partition_resumes())] {
            if !resumes.is_empty() {
                let _ = writeln!(
                    w,
                    "  writes resumed after a leader {what}: p50 {:.3} s, max {:.3} s (n = {})",
                    secs(percentile(&resumes, 50)),
                    secs(percentile(&resumes, 100)),
                    resumes.len()
                );
            }
        }
        let _ = writeln!(w, "operations over {:.1} s:", secs(self.span));
        let _ = writeln!(w, "  {:<11} {:>8} {:>8} {:>8} {:>8}", "kind", "invoked", "ok", "fail", "unknown");
        let mut total = Counts::default();
        for (kind, c) in &self.ops {
            let _ = writeln!(w, "  {kind:<11} {:>8} {:>8} {:>8} {:>8}", c.invoked, c.ok, c.fail, c.info);
            total.invoked += c.invoked;
            total.ok += c.ok;
            total.fail += c.fail;
            total.info += c.info;
        }
        let _ =
            writeln!(w, "  {:<11} {:>8} {:>8} {:>8} {:>8}", "total", total.invoked, total.ok, total.fail, total.info);
        let b = &self.buys;
        let _ = writeln!(
            w,
            "buys: {} keys, {} acknowledged, {} rejected (out of stock), {} unknown to their client \
             (final state: {} confirmed, {} rejected, {} never happened), {} extra attempts",
            b.keys,
            b.acknowledged,
            b.rejected,
            b.unknown,
            b.unknown_confirmed,
            b.unknown_rejected,
            b.unknown_absent,
            b.extra_attempts
        );
        let read = |c| self.reads.get(&c).copied().unwrap_or(0);
        let _ = writeln!(
            w,
            "reads: {} linearizable and {} lease (checked), {} cached ({} book reads through frontends checked); \
             {} order reads checked",
            read(Consistency::Linearizable),
            read(Consistency::Lease),
            read(Consistency::Cached),
            self.cached_reads_checked,
            self.order_reads_checked
        );
        let _ = writeln!(w, "linearizability per book:");
        for b in &self.books {
            let _ = writeln!(
                w,
                "  book {:>3}: {:>6} ops ({} linearizable reads, {} lease reads, {} of unknown outcome): {}",
                b.book,
                b.ops,
                b.linearizable_reads,
                b.lease_reads,
                b.unknown,
                first_line(&b.verdict)
            );
        }
        let _ = writeln!(w, "checks:");
        for c in &self.checks {
            let mark = if c.violations.is_empty() { "ok  " } else { "FAIL" };
            let _ = writeln!(w, "  [{mark}] {:<36} {} violations", c.name, c.violations.len());
        }
        let violations = self.violations();
        for v in violations.iter().take(20) {
            let _ = writeln!(w, "  - {v}");
        }
        if violations.len() > 20 {
            let _ = writeln!(w, "  ... and {} more", violations.len() - 20);
        }
        let verdict = if !self.passed() {
            "FAIL"
        } else if self.conclusive() {
            "PASS"
        } else {
            "PASS (some linearizability searches inconclusive)"
        };
        let _ = writeln!(w, "violations: {}  result: {verdict}", violations.len());
        out
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Seconds, for humans.
pub fn secs(n: Nanos) -> f64 {
    n as f64 / 1e9
}

/// The `p`-th percentile (nearest rank) of `values`; 0 when empty.
pub fn percentile(values: &[Nanos], p: usize) -> Nanos {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    v[rank - 1]
}

/// How an operation completed.
#[derive(Debug, Clone)]
enum Done {
    Ok { answer: Answer },
    Fail(Failure),
    Info(Failure),
}

/// One operation: its invocation and completion.
#[derive(Debug, Clone)]
struct Op {
    id: u64,
    process: u64,
    call: Call,
    endpoint: String,
    invoke: Nanos,
    /// Completion time and how; an invocation without completion is unknown.
    done: Option<(Nanos, Done)>,
    /// `X-Bazar-Index` of a read.
    index: Option<u64>,
    /// The catalog index a write committed at.
    catalog_index: Option<u64>,
}

impl Op {
    fn ret(&self) -> Option<Nanos> {
        self.done.as_ref().map(|(t, _)| *t)
    }

    fn ok(&self) -> Option<&Answer> {
        match &self.done {
            Some((_, Done::Ok { answer })) => Some(answer),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let outcome = match &self.done {
            None => "no completion".to_string(),
            Some((t, d)) => {
                let what = match d {
                    Done::Ok { answer: Answer::Book(b) } => {
                        format!("ok: stock {} price {}", b.stock, b.price_cents)
                    }
                    Done::Ok { answer: Answer::Order(o) } => {
                        format!("ok: order {} {} at {}", o.order_id, o.status, o.unit_price_cents)
                    }
                    Done::Ok { answer: Answer::Books(books) } => {
                        let listed: Vec<String> = books
                            .iter()
                            .map(|b| format!("{}: stock {} price {}", b.id, b.stock, b.price_cents))
                            .collect();
                        format!("ok: [{}]", listed.join(", "))
                    }
                    Done::Fail(f) => format!("fail: {}", f.code),
                    Done::Info(f) => format!("unknown ({})", f.code),
                };
                format!("{what} at {:.6} s", secs(*t))
            }
        };
        let index = match (self.index, self.catalog_index) {
            (Some(i), _) => format!(", index {i}"),
            (None, Some(i)) => format!(", catalog index {i}"),
            (None, None) => String::new(),
        };
        format!(
            "op {} by client {} on {}: {:?}, invoked {:.6} s, {outcome}{index}",
            self.id,
            self.process,
            self.endpoint,
            self.call,
            secs(self.invoke)
        )
    }
}

/// Fail codes that say a request was refused before anything happened. An
/// `unavailable` answer is recorded as a failure only when it says
/// `write_outcome: not_applied` (otherwise its outcome is unknown: info).
fn is_refusal(code: &str) -> bool {
    matches!(code, "not_leader" | "connect" | "unavailable")
}

/// The outcome of one logical buy (one key).
#[derive(Debug, Clone)]
struct Buy {
    key: String,
    book: u64,
    quantity: u64,
    buyer: Option<String>,
    call: Nanos,
    /// First definite answer: when, and the order (confirmed) or the rejected order id.
    definite: Option<(Nanos, Result<Order, Option<u64>>)>,
    attempts: Vec<usize>,
}

/// Checks a history: `records` as read from a history file or taken from
/// a [`crate::history::History`].
pub fn check_history(records: &[Record], config: &CheckConfig) -> Report {
    let mut report = Report::default();
    let mut found: BTreeMap<&'static str, Vec<String>> = checks::ALL.iter().map(|c| (*c, Vec::new())).collect();
    let mut violation = |check: &'static str, detail: String| found.entry(check).or_default().push(detail);

    // ---- gather --------------------------------------------------------
    let mut setup: Option<(&Vec<Book>, &Vec<Order>)> = None;
    let mut cached_promise: Option<&CachedPromise> = None;
    let mut final_state: Option<&FinalState> = None;
    let mut ops: Vec<Op> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut fault_records = Vec::new();
    for r in records {
        match r {
            Record::Setup { books, orders, cached, .. } => {
                setup = Some((books, orders));
                cached_promise = cached.as_ref();
            }
            Record::Invoke { time, process, op, call, endpoint } => {
                index.insert(*op, ops.len());
                ops.push(Op {
                    id: *op,
                    process: *process,
                    call: call.clone(),
                    endpoint: endpoint.clone(),
                    invoke: *time,
                    done: None,
                    index: None,
                    catalog_index: None,
                });
            }
            Record::Ok { time, op, answer, index: read_index, catalog_index, .. } => {
                complete(&mut ops, &index, *op, *time, Done::Ok { answer: answer.clone() }, &mut violation);
                if let Some(&i) = index.get(op) {
                    ops[i].index = *read_index;
                    ops[i].catalog_index = *catalog_index;
                }
            }
            Record::Fail { time, op, error, .. } => {
                complete(&mut ops, &index, *op, *time, Done::Fail(error.clone()), &mut violation)
            }
            Record::Info { time, op, error, .. } => {
                complete(&mut ops, &index, *op, *time, Done::Info(error.clone()), &mut violation)
            }
            Record::Fault { time, phase, fault, nodes } => fault_records.push((*time, *phase, fault, nodes)),
            Record::Final(f) => final_state = Some(f),
        }
    }
    let Some((setup_books, setup_orders)) = setup else {
        violation(checks::HISTORY, "no setup record: the initial state is unknown".into());
        return finish(report, found);
    };
    let Some(fin) = final_state else {
        violation(checks::HISTORY, "no final state recorded".into());
        return finish(report, found);
    };
    for e in &fin.errors {
        violation(checks::HISTORY, format!("final state: {e}"));
    }
    let first = ops.iter().map(|o| o.invoke).min().unwrap_or(0);
    let last = ops.iter().filter_map(|o| o.ret()).chain(ops.iter().map(|o| o.invoke)).max().unwrap_or(0);
    report.span = last.saturating_sub(first);

    // ---- counts and answers --------------------------------------------
    for op in &ops {
        let c = report.ops.entry(op.call.kind()).or_default();
        c.invoked += 1;
        match &op.done {
            Some((_, Done::Ok { .. })) => c.ok += 1,
            Some((_, Done::Fail(_))) => c.fail += 1,
            _ => c.info += 1,
        }
        if let Some(problem) = answer_problem(op) {
            violation(checks::ANSWERS, format!("{problem}: {}", op.describe()));
        }
        if let (Call::Lookup { consistency, .. } | Call::Search { consistency, .. }, Some(_)) = (&op.call, op.ok()) {
            *report.reads.entry(*consistency).or_default() += 1;
        }
    }

    // ---- buys, one per key ---------------------------------------------
    let mut buys: BTreeMap<String, Buy> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Call::Buy { book, quantity, key, buyer, .. } = &op.call else { continue };
        let buy = buys.entry(key.clone()).or_insert_with(|| Buy {
            key: key.clone(),
            book: *book,
            quantity: *quantity,
            buyer: buyer.clone(),
            call: op.invoke,
            definite: None,
            attempts: Vec::new(),
        });
        if (buy.book, buy.quantity, &buy.buyer) != (*book, *quantity, buyer) {
            violation(checks::HISTORY, format!("key {key} was sent for two different buys: {}", op.describe()));
        }
        buy.call = buy.call.min(op.invoke);
        buy.attempts.push(i);
        let answer = match &op.done {
            Some((t, Done::Ok { answer: Answer::Order(o) })) => Some((*t, Ok(o.clone()))),
            Some((t, Done::Fail(f))) if f.code == "out_of_stock" => Some((*t, Err(f.order_id))),
            _ => None,
        };
        if let Some((t, outcome)) = answer {
            match &buy.definite {
                Some((_, first)) if !same_outcome(first, &outcome) => violation(
                    checks::ONE_ORDER,
                    format!("key {key} got two different answers: {first:?} and then {outcome:?} ({})", op.describe()),
                ),
                _ => {}
            }
            if buy.definite.as_ref().is_none_or(|(first, _)| t < *first) {
                buy.definite = Some((t, outcome));
            }
        }
    }

    // ---- the final state against what clients were told -----------------
    let before: BTreeSet<u64> = setup_orders.iter().map(|o| o.order_id).collect();
    let new_orders: Vec<Order> = fin.orders.iter().filter(|o| !before.contains(&o.order_id)).cloned().collect();
    let final_by_key: HashMap<&str, &Order> =
        new_orders.iter().filter_map(|o| o.idempotency_key.as_deref().map(|k| (k, o))).collect();
    let final_by_id: HashMap<u64, &Order> = fin.orders.iter().map(|o| (o.order_id, o)).collect();
    let mut ledger = Ledger::default();
    for buy in buys.values() {
        report.buys.keys += 1;
        report.buys.extra_attempts += buy.attempts.len() as u64 - 1;
        match &buy.definite {
            Some((_, Ok(order))) => {
                report.buys.acknowledged += 1;
                ledger.acked.push(order.clone());
            }
            Some((_, Err(order_id))) => {
                report.buys.rejected += 1;
                ledger.rejected.push(order_id.unwrap_or(0));
                if let Some(o) = final_by_key.get(buy.key.as_str())
                    && o.status != OrderStatus::Rejected
                {
                    violation(
                        checks::ONE_ORDER,
                        format!("key {} was answered out_of_stock but its order is {o:?}", buy.key),
                    );
                }
            }
            None => {
                // Refused before anything was proposed, every time: the
                // key must have made nothing.
                let refused_every_time = buy
                    .attempts
                    .iter()
                    .all(|i| matches!(&ops[*i].done, Some((_, Done::Fail(f))) if is_refusal(&f.code)));
                if refused_every_time && let Some(o) = final_by_key.get(buy.key.as_str()) {
                    violation(
                        checks::ONE_ORDER,
                        format!("key {} was refused at every attempt (nothing applied), yet it made {o:?}", buy.key),
                    );
                }
                report.buys.unknown += 1;
                ledger.unknown.push(buy.key.clone());
                match final_by_key.get(buy.key.as_str()).map(|o| o.status) {
                    Some(OrderStatus::Confirmed) => report.buys.unknown_confirmed += 1,
                    Some(OrderStatus::Rejected) => report.buys.unknown_rejected += 1,
                    Some(OrderStatus::Pending) => {}
                    None => report.buys.unknown_absent += 1,
                }
            }
        }
    }
    for o in &new_orders {
        let Some(key) = &o.idempotency_key else {
            violation(checks::ONE_ORDER, format!("order {} has no idempotency key; nobody sent it: {o:?}", o.order_id));
            continue;
        };
        match buys.get(key) {
            None => {
                violation(checks::ONE_ORDER, format!("order {} has key {key}, which nobody sent: {o:?}", o.order_id))
            }
            Some(b) if (b.book, b.quantity, &b.buyer) != (o.book_id, o.quantity, &o.buyer) => violation(
                checks::ONE_ORDER,
                format!(
                    "order {} is for book {} × {} by {:?}, but key {key} asked for book {} × {} by {:?}",
                    o.order_id, o.book_id, o.quantity, o.buyer, b.book, b.quantity, b.buyer
                ),
            ),
            Some(_) => {}
        }
        if o.status == OrderStatus::Pending {
            violation(checks::NOTHING_PENDING, format!("order {} is still pending: {o:?}", o.order_id));
        }
    }
    for (node, count) in &fin.unclaimed {
        violation(
            checks::NOTHING_PENDING,
            format!("node {node} still holds {count} buy(s) reserved in the catalog but not recorded as orders"),
        );
    }
    for op in &ops {
        match (&op.call, &op.done) {
            (Call::Restock { book, quantity }, Some((_, Done::Ok { .. }))) => {
                *ledger.restocked.entry(*book).or_default() += quantity;
            }
            (Call::Restock { book, quantity }, None | Some((_, Done::Info(_)))) => {
                *ledger.restocked_unknown.entry(*book).or_default() += quantity;
            }
            _ => {}
        }
    }
    let initial: BTreeMap<u64, u64> = setup_books.iter().map(|b| (b.id, b.stock)).collect();
    for p in state_problems(&initial, &ledger, &new_orders, &fin.books) {
        let check = match p.invariant {
            1 => checks::NO_OVERSELL,
            2 => checks::CONSERVATION,
            3 => checks::DURABLE,
            4 => checks::ONE_ORDER,
            _ => checks::ANSWERS,
        };
        violation(check, p.detail);
    }
    for b in &fin.books {
        if initial.contains_key(&b.id) && b.stock > u64::MAX / 2 {
            violation(checks::NO_OVERSELL, format!("book {} has a stock of {}: it went below zero", b.id, b.stock));
        }
    }

    // ---- 5: digests -----------------------------------------------------
    for group in Group::ALL {
        let digests: Vec<_> = fin.digests.iter().filter(|d| d.group == group).collect();
        let nodes: BTreeSet<u64> = digests.iter().map(|d| d.node_id).collect();
        let agree = digests.windows(2).all(|w| w[0].applied_index == w[1].applied_index && w[0].digest == w[1].digest);
        if !agree
            || nodes != fin.nodes.iter().copied().collect()
            || digests.iter().any(|d| d.digest.starts_with("error"))
        {
            let list: Vec<String> =
                digests.iter().map(|d| format!("node {} at {}: {}", d.node_id, d.applied_index, d.digest)).collect();
            violation(checks::CONVERGED, format!("{group} replicas differ after healing: {}", list.join("; ")));
        }
    }

    // ---- 6: order reads -------------------------------------------------
    let mut acked_at: HashMap<u64, (Nanos, &Order)> = HashMap::new();
    for buy in buys.values() {
        if let Some((t, Ok(order))) = &buy.definite {
            acked_at.insert(order.order_id, (*t, order));
        }
    }
    for op in &ops {
        let Call::ReadOrder { order_id, consistency } = &op.call else { continue };
        let strong = *consistency != Consistency::Cached;
        let after_ack = acked_at.get(order_id).filter(|(t, _)| *t < op.invoke);
        if strong && after_ack.is_some() {
            report.order_reads_checked += 1;
        }
        match &op.done {
            Some((_, Done::Ok { answer: Answer::Order(read) })) => {
                if let Some(fo) = final_by_id.get(order_id) {
                    let contradicts = (read.book_id, read.quantity, &read.idempotency_key, &read.buyer)
                        != (fo.book_id, fo.quantity, &fo.idempotency_key, &fo.buyer)
                        || (read.status != OrderStatus::Pending && read.status != fo.status);
                    if contradicts {
                        violation(
                            checks::ORDER_READS,
                            format!(
                                "a read saw order {order_id} as {read:?}, but it ended as {fo:?}: {}",
                                op.describe()
                            ),
                        );
                    }
                } else {
                    violation(
                        checks::ORDER_READS,
                        format!("a read saw order {order_id}, which the final state does not have: {}", op.describe()),
                    );
                }
                if strong
                    && let Some((t, acked)) = after_ack
                    && (read.status != OrderStatus::Confirmed || read.unit_price_cents != acked.unit_price_cents)
                {
                    violation(
                        checks::ORDER_READS,
                        format!(
                            "stale read: order {order_id} was acknowledged at {:.6} s, but a later {consistency} read saw {read:?}: {}",
                            secs(*t),
                            op.describe()
                        ),
                    );
                }
            }
            Some((_, Done::Fail(f))) if f.code == "not_found" => {
                if strong && let Some((t, _)) = after_ack {
                    violation(
                        checks::ORDER_READS,
                        format!(
                            "stale read: order {order_id} was acknowledged at {:.6} s, but a later {consistency} read found nothing: {}",
                            secs(*t),
                            op.describe()
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    // ---- 6: cached reads through frontends --------------------------------
    if let Some(promise) = cached_promise {
        let books: BTreeSet<u64> = setup_books.iter().map(|b| b.id).collect();
        for (check, detail) in cached_index_problems(&ops, &books, promise, &mut report) {
            violation(check, detail);
        }
        for detail in cached_order_problems(&ops, &buys, promise) {
            violation(checks::CACHED_RYW, detail);
        }
    }

    // ---- 6: linearizability per book -------------------------------------
    let listed = fin.orders_read.map(|(_, end)| end);
    for book in setup_books {
        let history = book_history(book, &ops, &buys, &final_by_key, listed, fin);
        let check = check_book(book, &history, config);
        let linearizable = check.verdict.starts_with("linearizable");
        if !linearizable && check.conclusive {
            violation(checks::LINEARIZABLE_BOOKS, check.verdict.clone());
        }
        report.books.push(check);
        // Cached reads by value: each must be a state the book held at some
        // moment of [invoked - max_staleness, answered]. Judged only on a
        // history that is linearizable without them.
        if let (Some(promise), true) = (cached_promise, linearizable) {
            let cached = cached_book_reads(book, &ops, promise);
            if !cached.is_empty() {
                let mut with = history.clone();
                with.extend(cached);
                with.sort_by_key(|e| (e.op.call, e.op.ret));
                let model = BookModel { initial: BookState { stock: book.stock, price_cents: book.price_cents } };
                let all: Vec<Operation<BookOp>> = with.iter().map(|e| e.op.clone()).collect();
                if let Verdict::NotLinearizable(e) = linearizability::check(&model, &all, config.max_steps) {
                    violation(
                        checks::CACHED_STALENESS,
                        format!(
                            "a cached read saw a state book {} did not hold within {} ms before it: {}",
                            book.id,
                            promise.max_staleness_ms,
                            evidence(book.id, &with, &e)
                        ),
                    );
                }
            }
        }
    }

    // ---- 7: recovery after each heal --------------------------------------
    for (time, phase, fault, _) in &fault_records {
        if *phase == FaultPhase::Unhealthy {
            violation(checks::RECOVERS, format!("at {:.3} s, after healing {fault}", secs(*time)));
        }
    }

    // ---- 7: unavailability windows ---------------------------------------
    // A re-sent key may be answered from the orders group alone (the order
    // was decided before); only a key first sent after the fault needs a
    // fresh commit in both groups. Each decided buy: (key first sent, decided).
    let decided_buys: Vec<(Nanos, Nanos)> = ops
        .iter()
        .filter_map(|o| match (&o.call, &o.done) {
            (Call::Buy { key, .. }, Some((t, Done::Ok { .. }))) => Some((buys[key].call, *t)),
            (Call::Buy { key, .. }, Some((t, Done::Fail(f)))) if f.code == "out_of_stock" => Some((buys[key].call, *t)),
            _ => None,
        })
        .collect();
    for (i, (time, phase, fault, nodes)) in fault_records.iter().enumerate() {
        if *phase != FaultPhase::Start {
            continue;
        }
        // The nemesis is sequential: what follows a start, up to the next
        // start, is about this fault.
        let after: Vec<_> = fault_records[i + 1..].iter().take_while(|(_, p, ..)| *p != FaultPhase::Start).collect();
        let healed = after.iter().find(|(_, p, ..)| *p == FaultPhase::Heal).map(|(t, ..)| *t);
        let recovered = after.iter().find(|(_, p, ..)| *p == FaultPhase::Recovered).map(|(t, ..)| *t);
        // Histories from before the "in place" record: from the start.
        let in_place = after.iter().find(|(_, p, ..)| *p == FaultPhase::InPlace).map_or(*time, |(t, ..)| *t);
        let resumed = decided_buys.iter().filter(|(inv, _)| *inv >= in_place).map(|(_, done)| done - time).min();
        if let (Some(bound), true) = (config.resume_bound, loses_a_leader(fault)) {
            let bound_ns = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
            match resumed {
                Some(r) if r <= bound_ns => {}
                Some(r) => violation(
                    checks::RESUME,
                    format!("writes resumed {:.3} s after {fault} at {:.3} s (bound {bound:?})", secs(r), secs(*time)),
                ),
                None => violation(checks::RESUME, format!("no buy was decided after {fault} at {:.3} s", secs(*time))),
            }
        }
        report.faults.push(FaultWindow {
            fault: fault.to_string(),
            nodes: nodes.to_vec(),
            start: *time,
            healed,
            recovered,
            resumed_after: resumed,
        });
    }
    finish(report, found)
}

/// The books a successful read of books saw, with the index it was read at:
/// a lookup sees one book, a search every book it lists.
fn books_read(op: &Op) -> Vec<&Book> {
    match (&op.call, op.ok()) {
        (Call::Lookup { .. }, Some(Answer::Book(b))) => vec![b],
        (Call::Search { .. }, Some(Answer::Books(books))) => books.iter().collect(),
        _ => Vec::new(),
    }
}

/// Whether `op` is a `cached` read of books through a frontend.
fn cached_through_frontend(op: &Op, promise: &CachedPromise) -> bool {
    matches!(
        &op.call,
        Call::Lookup { consistency: Consistency::Cached, .. } | Call::Search { consistency: Consistency::Cached, .. }
    ) && promise.frontends.contains(&op.endpoint)
}

/// A write acknowledged: when, at which catalog index, and its position in
/// the operations.
type Ack = (Nanos, u64, usize);

/// Writes of one book acknowledged with their catalog index, by time of
/// acknowledgement, with the highest index acknowledged up to each.
struct AckedWrites(Vec<Ack>);

impl AckedWrites {
    fn new(mut acks: Vec<Ack>) -> AckedWrites {
        acks.sort();
        let mut best: Option<(u64, usize)> = None;
        for a in &mut acks {
            if best.is_none_or(|(i, _)| a.1 > i) {
                best = Some((a.1, a.2));
            }
            (a.1, a.2) = best.expect("set above");
        }
        AckedWrites(acks)
    }

    /// The highest catalog index acknowledged strictly before `t`, and the
    /// write (op position) that had it.
    fn before(&self, t: Nanos) -> Option<(u64, usize)> {
        let n = self.0.partition_point(|(at, ..)| *at < t);
        n.checked_sub(1).map(|k| (self.0[k].1, self.0[k].2))
    }
}

/// Read-your-writes and staleness of `cached` book reads through frontends,
/// by index: a read at index `j` of a book reflects a write of it committed
/// at catalog index `i` only if `j >= i` (a frontend never serves an entry
/// filled before an invalidation it processed). Counts the reads judged.
fn cached_index_problems(
    ops: &[Op],
    books: &BTreeSet<u64>,
    promise: &CachedPromise,
    report: &mut Report,
) -> Vec<(&'static str, String)> {
    // Acknowledged writes of each book (any endpoint), and of each (book, endpoint).
    let mut any: HashMap<u64, Vec<Ack>> = HashMap::new();
    let mut same: HashMap<(u64, &str), Vec<Ack>> = HashMap::new();
    for (k, op) in ops.iter().enumerate() {
        let book = match (&op.call, op.ok()) {
            (Call::Restock { book, .. } | Call::SetPrice { book, .. }, Some(_)) => *book,
            (Call::Buy { book, .. }, Some(Answer::Order(o))) if o.status == OrderStatus::Confirmed => *book,
            _ => continue,
        };
        let (Some(ret), Some(index)) = (op.ret(), op.catalog_index) else { continue };
        any.entry(book).or_default().push((ret, index, k));
        same.entry((book, op.endpoint.as_str())).or_default().push((ret, index, k));
    }
    let any: HashMap<u64, AckedWrites> = any.into_iter().map(|(b, v)| (b, AckedWrites::new(v))).collect();
    let same: HashMap<(u64, &str), AckedWrites> = same.into_iter().map(|(b, v)| (b, AckedWrites::new(v))).collect();
    let staleness = promise.max_staleness_ms * 1_000_000;
    let mut problems = Vec::new();
    for op in ops.iter().filter(|op| cached_through_frontend(op, promise)) {
        let Some(read_at) = op.index else { continue };
        for b in books_read(op).into_iter().filter(|b| books.contains(&b.id)) {
            report.cached_reads_checked += 1;
            if let Some((i, w)) = same.get(&(b.id, op.endpoint.as_str())).and_then(|a| a.before(op.invoke))
                && read_at < i
            {
                problems.push((
                    checks::CACHED_RYW,
                    format!(
                        "book {} read at index {read_at}, but this frontend had acknowledged a write of it at \
                         index {i} before the read began: {} (the write: {})",
                        b.id,
                        op.describe(),
                        ops[w].describe()
                    ),
                ));
            }
            if let Some((i, w)) = any
                .get(&b.id)
                .and_then(|a| a.before(op.invoke.saturating_sub(staleness)))
                .filter(|_| op.invoke > staleness)
                && read_at < i
            {
                problems.push((
                    checks::CACHED_STALENESS,
                    format!(
                        "book {} read at index {read_at}, older than a write of it at index {i} acknowledged \
                         more than {} ms before the read began: {} (the write: {})",
                        b.id,
                        promise.max_staleness_ms,
                        op.describe(),
                        ops[w].describe()
                    ),
                ));
            }
        }
    }
    problems
}

/// Read-your-writes of `cached` order reads through a frontend: an order
/// acknowledged (`201`) through a frontend, then read `cached` through it,
/// is found confirmed.
fn cached_order_problems(ops: &[Op], buys: &BTreeMap<String, Buy>, promise: &CachedPromise) -> Vec<String> {
    // (order, endpoint) -> earliest acknowledgement through that endpoint.
    let mut acked: HashMap<(u64, &str), (Nanos, usize)> = HashMap::new();
    for buy in buys.values() {
        for &k in &buy.attempts {
            let op = &ops[k];
            if let (Some(Answer::Order(o)), Some(t)) = (op.ok(), op.ret()) {
                let e = acked.entry((o.order_id, op.endpoint.as_str())).or_insert((t, k));
                if t < e.0 {
                    *e = (t, k);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for op in ops {
        let Call::ReadOrder { order_id, consistency: Consistency::Cached } = &op.call else { continue };
        if !promise.frontends.contains(&op.endpoint) {
            continue;
        }
        let Some(&(t, w)) = acked.get(&(*order_id, op.endpoint.as_str())) else { continue };
        if t >= op.invoke {
            continue;
        }
        let seen = match &op.done {
            Some((_, Done::Ok { answer: Answer::Order(o) })) if o.status == OrderStatus::Confirmed => continue,
            Some((_, Done::Ok { answer: Answer::Order(o) })) => format!("it as {}", o.status),
            Some((_, Done::Fail(f))) if f.code == "not_found" => "nothing".to_string(),
            _ => continue,
        };
        problems.push(format!(
            "order {order_id} was acknowledged through this frontend at {:.6} s, but a later cached read there found \
             {seen}: {} (the buy: {})",
            secs(t),
            op.describe(),
            ops[w].describe()
        ));
    }
    problems
}

/// The `cached` reads of `book` through frontends, as reads that may take
/// effect from `max_staleness` before their invocation to their answer.
fn cached_book_reads(book: &Book, ops: &[Op], promise: &CachedPromise) -> Vec<BookEntry> {
    let staleness = promise.max_staleness_ms * 1_000_000;
    let mut entries = Vec::new();
    for op in ops.iter().filter(|op| cached_through_frontend(op, promise)) {
        let Some(ret) = op.ret() else { continue };
        for b in books_read(op).into_iter().filter(|b| b.id == book.id) {
            let state = BookState { stock: b.stock, price_cents: b.price_cents };
            let call = op.invoke.saturating_sub(staleness);
            let label = format!("(cached, may take effect from {:.6} s) {}", secs(call), op.describe());
            entries.push(BookEntry {
                op: Operation { call, ret: Some(ret), op: BookOp::Read(state) },
                label,
                lease: false,
            });
        }
    }
    entries
}

/// Whether the fault named `fault` takes a group's leader away, so that
/// writes resume only once the others elect one: a leader killed, or cut
/// off its peers (the nemesis's `kill-leader-*`, `partition-leader-*`,
/// `partition-restart` and `clock-slow-partition-leader-*`).
pub fn loses_a_leader(fault: &str) -> bool {
    ["kill-leader", "partition-leader", "partition-restart", "clock-slow-partition-leader"]
        .iter()
        .any(|p| fault.starts_with(p))
}

fn finish(mut report: Report, found: BTreeMap<&'static str, Vec<String>>) -> Report {
    report.checks = checks::ALL
        .iter()
        .map(|name| CheckResult { name, violations: found.get(name).cloned().unwrap_or_default() })
        .collect();
    report
}

fn complete(
    ops: &mut [Op],
    index: &HashMap<u64, usize>,
    op: u64,
    time: Nanos,
    done: Done,
    violation: &mut impl FnMut(&'static str, String),
) {
    match index.get(&op) {
        Some(&i) if ops[i].done.is_none() => ops[i].done = Some((time, done)),
        Some(_) => violation(checks::HISTORY, format!("op {op} completed twice")),
        None => violation(checks::HISTORY, format!("op {op} completed without being invoked")),
    }
}

fn same_outcome(a: &Result<Order, Option<u64>>, b: &Result<Order, Option<u64>>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => x.is_none() || y.is_none() || x == y,
        _ => false,
    }
}

/// Why an answer is not one the API allows for its request, if it is not.
fn answer_problem(op: &Op) -> Option<String> {
    let (_, done) = op.done.as_ref()?;
    match (done, &op.call) {
        (Done::Ok { answer: Answer::Order(o) }, Call::Buy { book, quantity, key, buyer, .. }) => {
            if o.status != OrderStatus::Confirmed {
                Some(format!("a 201 carried a {} order", o.status))
            } else if (o.book_id, o.quantity, o.idempotency_key.as_deref(), &o.buyer)
                != (*book, *quantity, Some(key.as_str()), buyer)
            {
                Some(format!("the order is not the one asked for: {o:?}"))
            } else if o.total_cents != o.quantity * o.unit_price_cents {
                Some(format!("total {} is not {} × {}", o.total_cents, o.quantity, o.unit_price_cents))
            } else {
                None
            }
        }
        (Done::Ok { answer: Answer::Book(b) }, Call::Restock { book, .. } | Call::Lookup { book, .. }) => {
            (b.id != *book).then(|| format!("answered with book {}", b.id))
        }
        (Done::Ok { answer: Answer::Book(b) }, Call::SetPrice { book, price_cents }) => {
            (b.id != *book || b.price_cents != *price_cents).then(|| format!("answered with {b:?}"))
        }
        (Done::Ok { answer: Answer::Order(o) }, Call::ReadOrder { order_id, .. }) => {
            (o.order_id != *order_id).then(|| format!("answered with order {}", o.order_id))
        }
        (Done::Ok { answer: Answer::Books(books) }, Call::Search { topic, .. }) => books
            .iter()
            .find(|b| !b.topic.eq_ignore_ascii_case(topic))
            .map(|b| format!("listed book {} of topic {:?}", b.id, b.topic)),
        (Done::Ok { answer }, _) => Some(format!("answered with {answer:?}")),
        (Done::Fail(f), call) => {
            let allowed = is_refusal(&f.code)
                || (f.code == "out_of_stock" && matches!(call, Call::Buy { .. }))
                || (f.code == "not_found" && matches!(call, Call::ReadOrder { .. }));
            (!allowed).then(|| format!("refused with {} ({})", f.code, f.detail))
        }
        // Timeouts, broken connections and 503 are what faults look like; a
        // 500 is a server failing where guarantees §3 allows only a 503.
        (Done::Info(f), _) => (f.code == "internal" || (f.code.starts_with("status-5") && f.code != "status-503"))
            .then(|| format!("the server failed with {} ({})", f.code, f.detail)),
    }
}

/// One operation of a book's history, with a description for the evidence.
#[derive(Debug, Clone)]
struct BookEntry {
    op: Operation<BookOp>,
    label: String,
    /// A `lease` read: linearizable only under bounded clock drift.
    lease: bool,
}

/// One book's history for the linearizability search.
fn book_history(
    book: &Book,
    ops: &[Op],
    buys: &BTreeMap<String, Buy>,
    final_by_key: &HashMap<&str, &Order>,
    listed: Option<Nanos>,
    fin: &FinalState,
) -> Vec<BookEntry> {
    let state = |b: &Book| BookState { stock: b.stock, price_cents: b.price_cents };
    let mut history = Vec::new();
    for op in ops {
        let ret = op.ret();
        let (id, o, lease) = match (&op.call, &op.done) {
            (Call::Restock { book, quantity }, done) => {
                let after = match done {
                    Some((_, Done::Ok { answer: Answer::Book(b) })) => Some(state(b)),
                    None | Some((_, Done::Info(_))) => None,
                    _ => continue,
                };
                (*book, BookOp::Restock { quantity: *quantity, after }, false)
            }
            (Call::SetPrice { book, price_cents }, done) => {
                let after = match done {
                    Some((_, Done::Ok { answer: Answer::Book(b) })) => Some(state(b)),
                    None | Some((_, Done::Info(_))) => None,
                    _ => continue,
                };
                (*book, BookOp::SetPrice { price_cents: *price_cents, after }, false)
            }
            (Call::Lookup { book, consistency }, Some((_, Done::Ok { answer: Answer::Book(b) })))
                if *consistency != Consistency::Cached =>
            {
                (*book, BookOp::Read(state(b)), *consistency == Consistency::Lease)
            }
            (Call::Search { consistency, .. }, Some((_, Done::Ok { answer: Answer::Books(books) })))
                if *consistency != Consistency::Cached =>
            {
                let Some(b) = books.iter().find(|b| b.id == book.id) else { continue };
                (b.id, BookOp::Read(state(b)), *consistency == Consistency::Lease)
            }
            _ => continue,
        };
        if id != book.id {
            continue;
        }
        // A write without an answer may take effect at any time, or never.
        let known = !matches!(o, BookOp::Restock { after: None, .. } | BookOp::SetPrice { after: None, .. });
        let op_ = Operation { call: op.invoke, ret: if known { ret } else { None }, op: o };
        history.push(BookEntry { op: op_, label: op.describe(), lease });
    }
    for buy in buys.values().filter(|b| b.book == book.id) {
        let q = buy.quantity;
        let entry = match &buy.definite {
            Some((t, Ok(order))) => {
                Some((Some(*t), BookOp::Take { quantity: q, unit_price_cents: Some(order.unit_price_cents) }))
            }
            Some((t, Err(_))) => Some((Some(*t), BookOp::Refuse { quantity: q })),
            None => match final_by_key.get(buy.key.as_str()) {
                // Decided after its client gave up: known by the time the orders were listed.
                Some(o) if o.status == OrderStatus::Confirmed => {
                    Some((listed, BookOp::Take { quantity: q, unit_price_cents: Some(o.unit_price_cents) }))
                }
                Some(o) if o.status == OrderStatus::Rejected && o.reason.as_deref() == Some("out_of_stock") => {
                    Some((listed, BookOp::Refuse { quantity: q }))
                }
                Some(o) if o.status == OrderStatus::Rejected => None,
                // Pending (a violation of its own): it may yet take stock, or not.
                Some(_) => Some((None, BookOp::Take { quantity: q, unit_price_cents: None })),
                // Never recorded: the buy did not happen.
                None if listed.is_some() => None,
                // Without a final listing nobody knows.
                None => Some((None, BookOp::Take { quantity: q, unit_price_cents: None })),
            },
        };
        if let Some((ret, o)) = entry {
            let label = format!(
                "buy key {} of {q} copies ({} attempts), first invoked {:.6} s, decided {}: {o:?}",
                buy.key,
                buy.attempts.len(),
                secs(buy.call),
                ret.map_or("never (unknown)".into(), |t| format!("by {:.6} s", secs(t)))
            );
            history.push(BookEntry { op: Operation { call: buy.call, ret, op: o }, label, lease: false });
        }
    }
    if let (Some((start, end)), Some(b)) = (fin.books_read, fin.books.iter().find(|b| b.id == book.id)) {
        history.push(BookEntry {
            op: Operation { call: start, ret: Some(end), op: BookOp::Read(state(b)) },
            label: format!("the final linearizable read, [{:.6} s, {:.6} s]: {b:?}", secs(start), secs(end)),
            lease: false,
        });
    }
    history.sort_by_key(|e| (e.op.call, e.op.ret));
    history
}

/// Runs the search on one book, starting from its state at setup; when it
/// fails and lease reads took part, tells whether the failure needs them.
fn check_book(book: &Book, history: &[BookEntry], config: &CheckConfig) -> BookCheck {
    let model = BookModel { initial: BookState { stock: book.stock, price_cents: book.price_cents } };
    let ops: Vec<Operation<BookOp>> = history.iter().map(|e| e.op.clone()).collect();
    let reads = history.iter().filter(|e| matches!(e.op.op, BookOp::Read(_))).count();
    let lease_reads = history.iter().filter(|e| e.lease).count();
    let mut check = BookCheck {
        book: book.id,
        ops: history.len(),
        linearizable_reads: reads - lease_reads,
        lease_reads,
        unknown: history.iter().filter(|e| e.op.ret.is_none()).count(),
        verdict: "linearizable".into(),
        conclusive: true,
    };
    match linearizability::check(&model, &ops, config.max_steps) {
        Verdict::Linearizable => {}
        Verdict::Unknown { steps } => {
            check.conclusive = false;
            check.verdict = format!("unknown: the search gave up after {steps} steps");
        }
        Verdict::NotLinearizable(e) => {
            let mut text = evidence(book.id, history, &e);
            if lease_reads > 0 {
                let without: Vec<Operation<BookOp>> =
                    history.iter().filter(|e| !e.lease).map(|e| e.op.clone()).collect();
                if linearizability::check(&model, &without, config.max_steps).is_linearizable() {
                    text = format!("{text}\n  (linearizable without its lease reads: the lease reads are stale)");
                }
            }
            check.verdict = text;
        }
    }
    check
}

/// Evidence of a failed search, for a human to follow.
fn evidence(book: u64, history: &[BookEntry], e: &Evidence<BookState>) -> String {
    let stuck = &history[e.stuck];
    let end = |o: &Operation<BookOp>| o.ret.unwrap_or(Nanos::MAX);
    let overlaps = |a: &Operation<BookOp>, b: &Operation<BookOp>| a.call <= end(b) && b.call <= end(a);
    let mut out = format!(
        "book {book}: NOT linearizable ({} operations). The longest legal order found places {} of them and leaves \
         stock {} at price {}. Next, this operation must be placed and cannot be: {}",
        history.len(),
        e.linearized.len(),
        e.state.stock,
        e.state.price_cents,
        stuck.label
    );
    let _ = write!(out, "\n  the last operations placed:");
    for i in e.linearized.iter().rev().take(4).rev() {
        let _ = write!(out, "\n    {}", history[*i].label);
    }
    let _ = write!(out, "\n  operations concurrent with it:");
    for (i, other) in history.iter().enumerate().filter(|(i, o)| *i != e.stuck && overlaps(&o.op, &stuck.op)).take(8) {
        let placed = if e.linearized.contains(&i) { "placed" } else { "not placed" };
        let _ = write!(out, "\n    ({placed}) {}", other.label);
    }
    out
}

#[cfg(test)]
mod tests {
    use bazar_api::Digest;

    use super::*;
    use crate::history::Failure;

    const MS: Nanos = 1_000_000;

    fn book(id: u64, stock: u64, price_cents: u64) -> Book {
        Book { id, isbn: String::new(), title: String::new(), topic: "t".into(), price_cents, stock }
    }

    fn order(id: u64, book: u64, quantity: u64, unit: u64, status: OrderStatus, key: &str) -> Order {
        let confirmed = status == OrderStatus::Confirmed;
        Order {
            order_id: id,
            book_id: book,
            quantity,
            unit_price_cents: if confirmed { unit } else { 0 },
            total_cents: if confirmed { unit * quantity } else { 0 },
            status,
            reason: (status == OrderStatus::Rejected).then(|| "out_of_stock".into()),
            created_at: "2026-11-21T00:00:00Z".into(),
            idempotency_key: Some(key.into()),
            buyer: Some(BUYER.into()),
        }
    }

    /// The buyer of every buy a [`Script`] makes.
    const BUYER: &str = "manar";

    fn failure(code: &str) -> Failure {
        Failure { code: code.into(), status: None, order_id: None, detail: code.into() }
    }

    /// Writes test histories: times in milliseconds.
    struct Script {
        records: Vec<Record>,
        next: u64,
        fin: FinalState,
        endpoint: String,
    }

    enum Then {
        Ok(Answer),
        Fail(&'static str),
        Info(&'static str),
    }

    impl Script {
        /// Book 1 with `stock` copies at 100 cents.
        fn new(stock: u64) -> Script {
            let records =
                vec![Record::Setup { time: 0, books: vec![book(1, stock, 100)], orders: vec![], cached: None }];
            let digest = |node_id, group| Digest {
                group,
                node_id,
                applied_index: 9,
                digest: "d".into(),
                rows: Default::default(),
            };
            let fin = FinalState {
                orders_read: Some((1000 * MS, 1010 * MS)),
                books_read: Some((1020 * MS, 1030 * MS)),
                books: vec![book(1, stock, 100)],
                nodes: vec![1, 2],
                digests: Group::ALL.iter().flat_map(|g| [digest(1, *g), digest(2, *g)]).collect(),
                ..FinalState::default()
            };
            Script { records, next: 1, fin, endpoint: "n1".into() }
        }

        /// Judges cached reads through endpoint `fe` with this staleness bound.
        fn frontend(&mut self, max_staleness_ms: u64) -> &mut Script {
            let Record::Setup { cached, .. } = &mut self.records[0] else { unreachable!() };
            *cached = Some(CachedPromise { frontends: vec!["fe".into()], max_staleness_ms });
            self
        }

        /// Sends the next operations to `endpoint`.
        fn on(&mut self, endpoint: &str) -> &mut Script {
            self.endpoint = endpoint.into();
            self
        }

        /// The last operation answered at (read) or committed at (write) `index`.
        fn at(&mut self, at: u64) -> &mut Script {
            let Some(Record::Ok { index, catalog_index, .. }) = self.records.last_mut() else { unreachable!() };
            (*index, *catalog_index) = (Some(at), Some(at));
            self
        }

        fn op(&mut self, call: Call, from: u64, to: u64, then: Then) -> &mut Script {
            let op = self.next;
            self.next += 1;
            let (time, process) = (to * MS, op);
            let endpoint = self.endpoint.clone();
            self.records.push(Record::Invoke { time: from * MS, process, op, call, endpoint });
            self.records.push(match then {
                Then::Ok(answer) => {
                    Record::Ok { time, process, op, answer, served_by: None, index: None, catalog_index: None }
                }
                Then::Fail(code) => Record::Fail { time, process, op, error: failure(code) },
                Then::Info(code) => Record::Info { time, process, op, error: failure(code) },
            });
            self
        }

        fn buy(&mut self, key: &str, quantity: u64, from: u64, to: u64, then: Then) -> &mut Script {
            self.op(
                Call::Buy { book: 1, quantity, key: key.into(), attempt: 1, buyer: Some(BUYER.into()) },
                from,
                to,
                then,
            )
        }

        fn restock(&mut self, quantity: u64, from: u64, to: u64, then: Then) -> &mut Script {
            self.op(Call::Restock { book: 1, quantity }, from, to, then)
        }

        fn read(&mut self, consistency: Consistency, from: u64, to: u64, stock: u64) -> &mut Script {
            self.op(Call::Lookup { book: 1, consistency }, from, to, Then::Ok(Answer::Book(book(1, stock, 100))))
        }

        fn finally(&mut self, stock: u64, orders: Vec<Order>) -> &mut Script {
            self.fin.books = vec![book(1, stock, 100)];
            self.fin.orders = orders;
            self
        }

        fn check(&mut self) -> Report {
            let mut records = self.records.clone();
            records.push(Record::Final(self.fin.clone()));
            check_history(&records, &CheckConfig::default())
        }
    }

    fn confirmed(id: u64, quantity: u64, key: &str) -> Order {
        order(id, 1, quantity, 100, OrderStatus::Confirmed, key)
    }

    fn ok_order(o: &Order) -> Then {
        Then::Ok(Answer::Order(o.clone()))
    }

    fn ok_book(stock: u64, price: u64) -> Then {
        Then::Ok(Answer::Book(book(1, stock, price)))
    }

    /// The violations of `report`, by check.
    fn failed(report: &Report) -> Vec<&'static str> {
        report.checks.iter().filter(|c| !c.violations.is_empty()).map(|c| c.name).collect()
    }

    #[test]
    fn a_legal_concurrent_history_passes() {
        let o1 = confirmed(1, 2, "k1");
        let report = Script::new(10)
            // A buy and a restock overlap; the restock's answer shows it came second.
            .buy("k1", 2, 10, 20, ok_order(&o1))
            .restock(3, 15, 25, ok_book(11, 100))
            .read(Consistency::Linearizable, 30, 31, 11)
            // A price change, and a lease read overlapping it that saw the old price.
            .op(Call::SetPrice { book: 1, price_cents: 200 }, 32, 40, ok_book(11, 200))
            .read(Consistency::Lease, 35, 36, 11)
            .op(Call::SetPrice { book: 1, price_cents: 100 }, 41, 45, ok_book(11, 100))
            // Out of stock is a refusal, and a cached read may be stale.
            .buy("k2", 50, 46, 47, Then::Fail("out_of_stock"))
            .read(Consistency::Cached, 48, 49, 10)
            .finally(11, vec![o1, order(2, 1, 50, 0, OrderStatus::Rejected, "k2")])
            .check();
        assert!(report.passed(), "{}", report.table());
        assert!(report.conclusive());
        assert_eq!(report.buys.acknowledged, 1);
        assert_eq!(report.buys.rejected, 1);
        assert_eq!(report.books[0].lease_reads, 1);
    }

    #[test]
    fn a_restock_of_unknown_outcome_may_or_may_not_have_happened() {
        for (final_stock, pass) in [(10, true), (15, true), (12, false)] {
            let report = Script::new(10).restock(5, 10, 20, Then::Info("timeout")).finally(final_stock, vec![]).check();
            assert_eq!(report.passed(), pass, "final stock {final_stock}: {}", report.table());
        }
        // Once a read saw it, it cannot un-happen.
        let report = Script::new(10)
            .restock(5, 10, 20, Then::Info("timeout"))
            .read(Consistency::Linearizable, 30, 31, 15)
            .read(Consistency::Linearizable, 32, 33, 10)
            .finally(15, vec![])
            .check();
        assert_eq!(failed(&report), vec![checks::LINEARIZABLE_BOOKS], "{}", report.table());
    }

    #[test]
    fn a_buy_of_unknown_outcome_is_decided_by_the_final_state() {
        let o1 = confirmed(1, 2, "k1");
        let report = Script::new(10).buy("k1", 2, 10, 20, Then::Info("timeout")).finally(8, vec![o1.clone()]).check();
        assert!(report.passed(), "{}", report.table());
        assert_eq!(report.buys.unknown_confirmed, 1);
        // The order says it took two copies; the stock says it did not.
        let report = Script::new(10).buy("k1", 2, 10, 20, Then::Info("timeout")).finally(10, vec![o1]).check();
        assert_eq!(failed(&report), vec![checks::CONSERVATION, checks::LINEARIZABLE_BOOKS], "{}", report.table());
        // No order: it never happened, so it cannot have taken stock.
        let report = Script::new(10).buy("k1", 2, 10, 20, Then::Info("timeout")).finally(8, vec![]).check();
        assert_eq!(failed(&report), vec![checks::CONSERVATION, checks::LINEARIZABLE_BOOKS], "{}", report.table());
    }

    #[test]
    fn an_acknowledged_order_whose_buyer_changed_is_caught() {
        let o1 = confirmed(1, 2, "k1");
        let changed = Order { buyer: Some("someone-else".into()), ..o1.clone() };
        let report = Script::new(10).buy("k1", 2, 10, 20, ok_order(&o1)).finally(8, vec![changed.clone()]).check();
        let failed = failed(&report);
        assert!(failed.contains(&checks::DURABLE), "{}", report.table());
        assert!(failed.contains(&checks::ONE_ORDER), "{}", report.table());
        // And an answer naming another buyer than the one asked for.
        let report = Script::new(10).buy("k1", 2, 10, 20, ok_order(&changed)).finally(8, vec![changed]).check();
        assert!(report.violations().iter().any(|v| v.contains("not the one asked for")), "{}", report.table());
    }

    #[test]
    fn an_order_read_with_another_buyer_than_it_ends_with_is_caught() {
        let o1 = confirmed(1, 2, "k1");
        let read = Order { buyer: None, ..o1.clone() };
        let report = Script::new(10)
            .buy("k1", 2, 10, 20, ok_order(&o1))
            .op(Call::ReadOrder { order_id: 1, consistency: Consistency::Linearizable }, 30, 40, ok_order(&read))
            .finally(8, vec![o1])
            .check();
        assert_eq!(failed(&report), vec![checks::ORDER_READS], "{}", report.table());
    }

    #[test]
    fn a_lost_acknowledged_buy_is_caught() {
        let o1 = confirmed(1, 2, "k1");
        let report = Script::new(10).buy("k1", 2, 10, 20, ok_order(&o1)).finally(10, vec![]).check();
        let failed = failed(&report);
        assert!(failed.contains(&checks::DURABLE), "{}", report.table());
        assert!(failed.contains(&checks::LINEARIZABLE_BOOKS), "{}", report.table());
        assert!(report.violations().iter().any(|v| v.contains("acknowledged order 1 is lost")));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_restock_is_caught_with_evidence() {
        let report = Script::new(10)
            .restock(3, 10, 20, ok_book(13, 100))
            .read(Consistency::Linearizable, 30, 40, 10)
            .finally(13, vec![])
            .check();
        assert_eq!(failed(&report), vec![checks::LINEARIZABLE_BOOKS], "{}", report.table());
        let verdict = &report.books[0].verdict;
        assert!(verdict.contains("NOT linearizable"), "{verdict}");
        assert!(verdict.contains("Lookup"), "the evidence names the stale read: {verdict}");
        assert!(verdict.contains("leaves stock 13"), "{verdict}");
    }

    #[test]
    fn a_stale_lease_read_is_reported_as_such() {
        let report = Script::new(10)
            .restock(3, 10, 20, ok_book(13, 100))
            .read(Consistency::Lease, 30, 40, 10)
            .finally(13, vec![])
            .check();
        assert_eq!(failed(&report), vec![checks::LINEARIZABLE_BOOKS]);
        assert!(report.books[0].verdict.contains("lease reads are stale"), "{}", report.books[0].verdict);
    }

    #[test]
    fn a_double_order_for_one_key_is_caught() {
        let (a, b) = (confirmed(1, 1, "k1"), confirmed(2, 1, "k1"));
        let report = Script::new(10).buy("k1", 1, 10, 20, ok_order(&a)).finally(8, vec![a.clone(), b.clone()]).check();
        assert!(failed(&report).contains(&checks::ONE_ORDER), "{}", report.table());
        assert!(report.violations().iter().any(|v| v.contains("has 2 orders")));
        // Two answers naming different orders for one key.
        let report = Script::new(10)
            .buy("k1", 1, 10, 20, ok_order(&a))
            .buy("k1", 1, 30, 40, ok_order(&b))
            .finally(9, vec![a])
            .check();
        assert!(report.violations().iter().any(|v| v.contains("two different answers")), "{}", report.table());
        // An order nobody asked for.
        let report = Script::new(10).finally(9, vec![confirmed(7, 1, "ghost")]).check();
        assert!(report.violations().iter().any(|v| v.contains("nobody sent")), "{}", report.table());
    }

    #[test]
    fn an_oversell_is_caught() {
        let (a, b) = (confirmed(1, 2, "k1"), confirmed(2, 2, "k2"));
        let report = Script::new(3)
            .buy("k1", 2, 10, 20, ok_order(&a))
            .buy("k2", 2, 30, 40, ok_order(&b))
            .finally(0, vec![a, b])
            .check();
        let failed = failed(&report);
        assert!(failed.contains(&checks::NO_OVERSELL), "{}", report.table());
        assert!(failed.contains(&checks::LINEARIZABLE_BOOKS), "{}", report.table());
    }

    #[test]
    fn a_stale_order_read_is_caught() {
        let a = confirmed(1, 2, "k1");
        let report = Script::new(10)
            .buy("k1", 2, 10, 20, ok_order(&a))
            .op(
                Call::ReadOrder { order_id: 1, consistency: Consistency::Linearizable },
                30,
                40,
                Then::Fail("not_found"),
            )
            // Cached reads may lag.
            .op(Call::ReadOrder { order_id: 1, consistency: Consistency::Cached }, 30, 40, Then::Fail("not_found"))
            .finally(8, vec![a])
            .check();
        assert_eq!(failed(&report), vec![checks::ORDER_READS], "{}", report.table());
        assert_eq!(report.violations().len(), 1);
    }

    #[test]
    fn divergent_replicas_and_pending_orders_are_caught() {
        let mut script = Script::new(10);
        script.fin.digests[1].digest = "other".into();
        let pending = order(1, 1, 1, 0, OrderStatus::Pending, "k1");
        let report = script.buy("k1", 1, 10, 20, Then::Info("timeout")).finally(10, vec![pending]).check();
        assert_eq!(failed(&report), vec![checks::CONVERGED, checks::NOTHING_PENDING], "{}", report.table());
    }

    #[test]
    fn a_reservation_never_recorded_as_an_order_is_caught() {
        let mut script = Script::new(10);
        script.fin.unclaimed = vec![(2, 1)];
        let report = script.buy("k1", 1, 10, 20, Then::Info("timeout")).finally(10, vec![]).check();
        assert_eq!(failed(&report), vec![checks::NOTHING_PENDING], "{}", report.table());
    }

    #[test]
    fn answers_the_api_does_not_allow_are_violations() {
        let report = Script::new(10)
            .restock(1, 10, 20, Then::Fail("invalid_input"))
            .buy("k1", 1, 30, 40, Then::Info("internal"))
            .buy("k2", 1, 50, 60, Then::Info("unavailable"))
            .finally(10, vec![])
            .check();
        assert_eq!(failed(&report), vec![checks::ANSWERS], "{}", report.table());
        assert_eq!(report.violations().len(), 2, "{}", report.table());
    }

    /// A `503` that says `write_outcome: not_applied` is recorded as a
    /// failure (nothing happened), and the API allows it.
    #[test]
    fn an_unavailable_answer_that_applied_nothing_is_allowed() {
        let report = Script::new(10)
            .buy("k1", 1, 10, 20, Then::Fail("unavailable"))
            .op(Call::Lookup { book: 1, consistency: Consistency::Linearizable }, 30, 40, Then::Fail("unavailable"))
            .finally(10, vec![])
            .check();
        assert!(report.passed(), "{}", report.table());
    }

    /// ...and a buy answered so must not have happened.
    #[test]
    fn a_buy_said_not_applied_that_happened_is_a_violation() {
        let a = confirmed(1, 1, "k1");
        let report = Script::new(10).buy("k1", 1, 10, 20, Then::Fail("unavailable")).finally(9, vec![a]).check();
        assert!(!report.passed(), "{}", report.table());
    }

    #[test]
    fn writes_must_resume_soon_after_a_leader_kill() {
        let fault =
            |time, phase| Record::Fault { time: time * MS, phase, fault: "kill-leader-catalog".into(), nodes: vec![1] };
        let (a, b) = (confirmed(1, 1, "k1"), confirmed(2, 1, "k2"));
        let mut script = Script::new(10);
        script.records.push(fault(100, FaultPhase::Start));
        script.records.push(fault(400, FaultPhase::Heal));
        // Invoked before the fault: does not count, however late it completes.
        script.buy("k1", 1, 90, 150, ok_order(&a));
        script.buy("k2", 1, 200, 700, ok_order(&b));
        let report = script.finally(8, vec![a.clone(), b.clone()]).check();
        assert!(report.passed(), "{}", report.table());
        assert_eq!(report.faults[0].resumed_after, Some(600 * MS));
        assert_eq!(report.faults[0].healed, Some(400 * MS));
        assert_eq!(report.leader_kill_resumes(), vec![600 * MS]);

        let mut script = Script::new(10);
        script.records.push(fault(100, FaultPhase::Start));
        script.buy("k1", 1, 200, 2500, ok_order(&a));
        let report = script.finally(9, vec![a]).check();
        assert_eq!(failed(&report), vec![checks::RESUME], "{}", report.table());
    }

    /// A deposed leader cut off its peers, still reachable by clients,
    /// answering reads from its own state while the majority moved on.
    #[test]
    fn stale_reads_from_a_minority_leader_are_caught_and_writes_must_resume_on_the_majority() {
        let fault = |time, phase| Record::Fault {
            time: time * MS,
            phase,
            fault: "partition-leader-catalog".into(),
            nodes: vec![1],
        };
        let o1 = confirmed(1, 1, "k1");
        for consistency in [Consistency::Linearizable, Consistency::Lease] {
            let mut script = Script::new(10);
            script.records.push(fault(100, FaultPhase::Start));
            // The new leader on the majority side takes a restock and a buy...
            script.restock(3, 150, 300, ok_book(13, 100));
            script.buy("k1", 1, 200, 400, ok_order(&o1));
            // ... and the old one, asked after both, answers from before them.
            script.read(consistency, 450, 460, 10);
            script.records.push(fault(2000, FaultPhase::Heal));
            let report = script.finally(12, vec![o1.clone()]).check();
            assert_eq!(failed(&report), vec![checks::LINEARIZABLE_BOOKS], "{}", report.table());
            assert_eq!(report.leader_partition_resumes(), vec![300 * MS]);
            if consistency == Consistency::Lease {
                assert!(report.books[0].verdict.contains("lease reads are stale"), "{}", report.books[0].verdict);
            }
        }
        // Answered from after them: legal.
        let mut script = Script::new(10);
        script.records.push(fault(100, FaultPhase::Start));
        script.restock(3, 150, 300, ok_book(13, 100));
        script.buy("k1", 1, 200, 400, ok_order(&o1));
        script.read(Consistency::Linearizable, 450, 460, 12);
        assert!(script.finally(12, vec![o1.clone()]).check().passed());
        // A buy that raced the cut (first sent before it was in place) does
        // not show that writes resumed.
        let mut script = Script::new(10);
        script.records.push(fault(100, FaultPhase::Start));
        script.buy("k1", 1, 110, 130, ok_order(&o1));
        script.records.push(fault(150, FaultPhase::InPlace));
        let report = script.finally(9, vec![o1.clone()]).check();
        assert_eq!(failed(&report), vec![checks::RESUME], "{}", report.table());
        // No write decided within the bound after the leader was cut off.
        let mut script = Script::new(10);
        script.records.push(fault(100, FaultPhase::Start));
        script.buy("k1", 1, 200, 2500, ok_order(&o1));
        let report = script.finally(9, vec![o1]).check();
        assert_eq!(failed(&report), vec![checks::RESUME], "{}", report.table());
    }

    #[test]
    fn a_cached_read_that_misses_a_write_acknowledged_through_its_frontend_is_caught() {
        let caught = Script::new(10)
            .frontend(1000)
            .on("fe")
            .restock(5, 10, 20, ok_book(15, 100))
            .at(12)
            // Within the staleness bound, but through the frontend that
            // acknowledged the restock: it must be seen.
            .read(Consistency::Cached, 30, 31, 10)
            .at(11)
            .finally(15, vec![])
            .check();
        assert!(failed(&caught).contains(&checks::CACHED_RYW), "{:?}", caught.violations());

        // The same read through a node, or seeing the restock, is fine.
        let elsewhere = Script::new(10)
            .frontend(1000)
            .on("fe")
            .restock(5, 10, 20, ok_book(15, 100))
            .at(12)
            .on("n1")
            .read(Consistency::Cached, 30, 31, 10)
            .at(11)
            .on("fe")
            .read(Consistency::Cached, 32, 33, 15)
            .at(12)
            .finally(15, vec![])
            .check();
        assert!(elsewhere.passed(), "{:?}", elsewhere.violations());
        assert_eq!(elsewhere.cached_reads_checked, 1);
    }

    #[test]
    fn a_cached_read_older_than_the_staleness_bound_is_caught_by_index_and_by_value() {
        let stale = |index: Option<u64>| {
            let mut s = Script::new(10);
            s.frontend(100).restock(5, 10, 20, ok_book(15, 100)).at(12).on("fe");
            // 20 ms + 100 ms of staleness < 200 ms: too old.
            s.read(Consistency::Cached, 200, 201, 10);
            if let Some(i) = index {
                s.at(i);
            }
            s.finally(15, vec![]).check()
        };
        let by_index = stale(Some(11));
        assert!(failed(&by_index).contains(&checks::CACHED_STALENESS), "{:?}", by_index.violations());
        // Without an index, the value alone gives it away.
        let by_value = stale(None);
        assert_eq!(failed(&by_value), vec![checks::CACHED_STALENESS], "{:?}", by_value.violations());

        // Within the bound a cached read may lag a write of another endpoint.
        let fresh_enough = Script::new(10)
            .frontend(100)
            .restock(5, 10, 20, ok_book(15, 100))
            .at(12)
            .on("fe")
            .read(Consistency::Cached, 90, 91, 10)
            .at(11)
            .finally(15, vec![])
            .check();
        assert!(fresh_enough.passed(), "{:?}", fresh_enough.violations());
    }

    #[test]
    fn a_cached_order_read_that_misses_an_order_acknowledged_through_its_frontend_is_caught() {
        let o = confirmed(1, 2, "k1");
        let report = Script::new(10)
            .frontend(1000)
            .on("fe")
            .buy("k1", 2, 10, 20, ok_order(&o))
            .op(Call::ReadOrder { order_id: 1, consistency: Consistency::Cached }, 30, 40, Then::Fail("not_found"))
            .finally(8, vec![o.clone()])
            .check();
        assert_eq!(failed(&report), vec![checks::CACHED_RYW], "{:?}", report.violations());
    }

    #[test]
    fn a_stale_strong_search_listing_is_caught() {
        let listing = |stock| Then::Ok(Answer::Books(vec![book(1, stock, 100)]));
        let search = |c| Call::Search { topic: "t".into(), consistency: c };
        let report = Script::new(10)
            .restock(5, 10, 20, ok_book(15, 100))
            .op(search(Consistency::Linearizable), 30, 40, listing(10))
            .finally(15, vec![])
            .check();
        assert_eq!(failed(&report), vec![checks::LINEARIZABLE_BOOKS], "{:?}", report.violations());
        let fine = Script::new(10)
            .restock(5, 10, 20, ok_book(15, 100))
            .op(search(Consistency::Linearizable), 30, 40, listing(15))
            .op(search(Consistency::Cached), 30, 40, listing(10))
            .finally(15, vec![])
            .check();
        assert!(fine.passed(), "{:?}", fine.violations());
    }

    #[test]
    fn a_cluster_that_stays_unhealthy_after_a_heal_fails() {
        let record = |time: u64, phase, fault: &str| Record::Fault {
            time: time * MS,
            phase,
            fault: fault.into(),
            nodes: vec![],
        };
        let mut script = Script::new(10);
        script.records.push(record(100, FaultPhase::Start, "pause-node"));
        script.records.push(record(300, FaultPhase::Heal, "pause-node"));
        script.records.push(record(350, FaultPhase::Recovered, "pause-node"));
        script.records.push(record(400, FaultPhase::Start, "kill-node"));
        script.records.push(record(600, FaultPhase::Heal, "kill-node"));
        script.records.push(record(10_600, FaultPhase::Unhealthy, "kill-node: node 2 does not answer"));
        let report = script.finally(10, vec![]).check();
        assert_eq!(failed(&report), vec![checks::RECOVERS], "{}", report.table());
        assert_eq!(report.faults[0].recovered, Some(350 * MS));
        assert_eq!(report.faults[1].recovered, None);
        assert!(report.table().contains("NOT HEALTHY"), "{}", report.table());
    }

    #[test]
    fn a_history_without_its_final_state_fails() {
        let mut script = Script::new(10);
        let report = check_history(&script.records, &CheckConfig::default());
        assert_eq!(failed(&report), vec![checks::HISTORY]);
        script.fin.errors.push("could not list the orders".into());
        assert_eq!(failed(&script.check()), vec![checks::HISTORY]);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v = [5, 1, 3, 2, 4];
        assert_eq!(percentile(&v, 50), 3);
        assert_eq!(percentile(&v, 100), 5);
        assert_eq!(percentile(&[], 50), 0);
    }
}
