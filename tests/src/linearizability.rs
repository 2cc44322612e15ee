//! A linearizability checker: the Wing–Gong search with Lowe's memoization,
//! as in Porcupine and Knossos.
//!
//! A history of one object is a set of [`Operation`]s, each with the time it
//! was invoked, the time it returned (if known) and what it did or observed.
//! It is *linearizable* when the operations can be put in one sequence that
//! (a) respects real time: an operation that returned before another was
//! invoked comes first; and (b) is legal for the sequential [`Model`]: every
//! step is allowed from the state the previous ones left.
//!
//! # Operations of unknown outcome
//! An operation whose outcome the client never learned (`ret == None`) may
//! have taken effect at any point after its invocation — even after every
//! other operation returned — or never. The search treats such an operation
//! as returning at +∞ and lets the history end without it: it may be placed
//! anywhere after its call, or left out. An operation whose effect is known
//! but whose return time is not (a buy decided after the client gave up)
//! must be given a finite `ret` by the caller, e.g. the time at which the
//! effect was later observed.
//!
//! # The search
//! Calls and returns are kept in one list sorted by time (a call before a
//! return at the same instant: equal timestamps count as concurrent, which
//! can only hide a violation, never invent one). The search walks the list:
//! at a call it tries to linearize that operation now (the model accepts the
//! step and the resulting configuration was not seen before), removes it
//! from the list and starts again from the head; at a return it has met an
//! operation that returned without being linearized, so it backtracks the
//! last choice. It succeeds when no finite return is left.
//!
//! Configurations already explored are remembered as (linearized set, model
//! state). The linearized set is fingerprinted by XOR-ing a random 128-bit
//! key per operation, so extending or shrinking it costs O(1) instead of
//! copying a bitset. Two different sets colliding has probability about
//! n²/2¹²⁸; a collision could only hide a linearization, so the worst it can
//! do is report a violation that is not there, with evidence a human can
//! check.
//!
//! The search is exponential in the worst case. It is bounded by a number of
//! steps; past it the verdict is [`Verdict::Unknown`], never a hang.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use crate::history::Nanos;

/// A sequential specification of one object.
pub trait Model {
    /// The object's state. Small and cheap to clone: it is remembered per
    /// explored configuration.
    type State: Clone + Eq + Hash + Debug;
    /// An operation with what it returned or observed.
    type Op: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` from `state`, or `None` when `op` (with the
    /// result it returned) is impossible from `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<O> {
    /// When it was invoked.
    pub call: Nanos,
    /// When it returned; `None` when its outcome is unknown: it may take
    /// effect at any time after `call`, or never.
    pub ret: Option<Nanos>,
    /// What it did and observed.
    pub op: O,
}

/// Why a history is not linearizable: the deepest point the search reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence<S> {
    /// The longest legal sequence found (indexes into the operations), in order.
    pub linearized: Vec<usize>,
    /// The model state after it.
    pub state: S,
    /// An operation that had to come next (it returned before every
    /// remaining operation could be placed) and could not be placed: the
    /// model refused it from every state the search could reach.
    pub stuck: usize,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<S> {
    /// A legal sequence exists.
    Linearizable,
    /// No legal sequence exists.
    NotLinearizable(Evidence<S>),
    /// The search gave up after this many steps.
    Unknown {
        /// Steps taken.
        steps: u64,
    },
}

impl<S> Verdict<S> {
    /// Whether the history was shown linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Sentinel "time" of the return of an operation of unknown outcome.
const NEVER: Nanos = Nanos::MAX;

/// One call or return in the search list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    time: Nanos,
}

/// The doubly linked list of entries; index `n` is the head sentinel.
struct List {
    entries: Vec<Entry>,
    next: Vec<Option<usize>>,
    prev: Vec<usize>,
    /// For each operation: the index of its call entry and of its return entry.
    call_of: Vec<usize>,
    ret_of: Vec<usize>,
}

impl List {
    fn new<O>(ops: &[Operation<O>]) -> List {
        let mut entries: Vec<Entry> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            entries.push(Entry { op: i, is_call: true, time: o.call });
            entries.push(Entry { op: i, is_call: false, time: o.ret.unwrap_or(NEVER) });
        }
        // Calls before returns at equal times: ties count as concurrent.
        entries.sort_by_key(|e| (e.time, !e.is_call, e.op));
        let n = entries.len();
        let head = n;
        let mut next = vec![None; n + 1];
        let mut prev = vec![head; n + 1];
        let mut call_of = vec![0; ops.len()];
        let mut ret_of = vec![0; ops.len()];
        let mut last = head;
        for (i, e) in entries.iter().enumerate() {
            next[last] = Some(i);
            prev[i] = last;
            last = i;
            if e.is_call {
                call_of[e.op] = i;
            } else {
                ret_of[e.op] = i;
            }
        }
        List { entries, next, prev, call_of, ret_of }
    }

    fn head(&self) -> usize {
        self.entries.len()
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if let Some(n) = n {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = Some(i);
        if let Some(n) = n {
            self.prev[n] = i;
        }
    }

    /// Removes an operation's call and return.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        self.unlink(self.ret_of[op]);
    }

    /// Puts back an operation lifted last (list surgery is undone in reverse).
    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_of[op]);
        self.relink(self.call_of[op]);
    }
}

/// SplitMix64: fingerprint keys that are fixed per run, so verdicts are reproducible.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks `ops` against `model`, giving up after `max_steps` steps.
pub fn check<M: Model>(model: &M, ops: &[Operation<M::Op>], max_steps: u64) -> Verdict<M::State> {
    let mut list = List::new(ops);
    let mut seed = 0x5EED_u64;
    let keys: Vec<u128> =
        (0..ops.len()).map(|_| (u128::from(splitmix(&mut seed)) << 64) | u128::from(splitmix(&mut seed))).collect();

    let mut state = model.init();
    let mut fingerprint: u128 = 0;
    let mut seen: HashSet<(u128, M::State)> = HashSet::new();
    // The choices made so far: which operation, and the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Option<Evidence<M::State>> = None;
    let mut steps = 0u64;

    let mut cursor = list.next[list.head()];
    loop {
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown { steps: max_steps };
        }
        let Some(i) = cursor else { return Verdict::Linearizable };
        let entry = list.entries[i];
        if entry.is_call {
            let op = entry.op;
            if let Some(next) = model.step(&state, &ops[op].op) {
                let print = fingerprint ^ keys[op];
                if seen.insert((print, next.clone())) {
                    stack.push((op, std::mem::replace(&mut state, next)));
                    fingerprint = print;
                    list.lift(op);
                    cursor = list.next[list.head()];
                    continue;
                }
            }
            cursor = list.next[i];
        } else if entry.time == NEVER {
            // Every finite return is gone, so every operation of known
            // outcome is linearized; the rest may never have happened.
            return Verdict::Linearizable;
        } else {
            // `entry.op` returned without being linearized: undo the last choice.
            if best.as_ref().is_none_or(|b| stack.len() >= b.linearized.len()) {
                best = Some(Evidence {
                    linearized: stack.iter().map(|(op, _)| *op).collect(),
                    state: state.clone(),
                    stuck: entry.op,
                });
            }
            let Some((op, before)) = stack.pop() else {
                return Verdict::NotLinearizable(best.expect("evidence was just recorded"));
            };
            state = before;
            fingerprint ^= keys[op];
            list.unlift(op);
            cursor = list.next[list.call_of[op]];
        }
    }
}

/// A book's stock and price, the object whose history the checker verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BookState {
    /// Copies in stock.
    pub stock: u64,
    /// Price in cents.
    pub price_cents: u64,
}

/// An operation on one book, with what it returned (when that is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookOp {
    /// Adds copies; `after` is the book the restock returned, when it did.
    Restock {
        /// Copies added.
        quantity: u64,
        /// The answer: stock and price right after the restock.
        after: Option<BookState>,
    },
    /// Sets the price; `after` is the book the change returned, when it did.
    SetPrice {
        /// The new price.
        price_cents: u64,
        /// The answer: stock and price right after the change.
        after: Option<BookState>,
    },
    /// A buy that took `quantity` copies at `unit_price_cents` (unknown when
    /// the order was never seen confirmed by anyone, e.g. still pending).
    Take {
        /// Copies taken.
        quantity: u64,
        /// The price the catalog charged: its price at that moment.
        unit_price_cents: Option<u64>,
    },
    /// A buy refused for lack of stock: fewer than `quantity` copies at that moment.
    Refuse {
        /// Copies asked for.
        quantity: u64,
    },
    /// A read that saw this state.
    Read(BookState),
}

/// The sequential specification of a book: what the catalog's state machine
/// does to one book, per guarantees §2 and section 5 (only a reservation
/// takes stock, never below zero, at the current price).
#[derive(Debug, Clone, Copy)]
pub struct BookModel {
    /// The book before the run.
    pub initial: BookState,
}

impl Model for BookModel {
    type State = BookState;
    type Op = BookOp;

    fn init(&self) -> BookState {
        self.initial
    }

    fn step(&self, s: &BookState, op: &BookOp) -> Option<BookState> {
        let next = match *op {
            BookOp::Restock { quantity, .. } => BookState { stock: s.stock.checked_add(quantity)?, ..*s },
            BookOp::SetPrice { price_cents, .. } => BookState { price_cents, ..*s },
            BookOp::Take { quantity, unit_price_cents } => {
                if unit_price_cents.is_some_and(|p| p != s.price_cents) {
                    return None;
                }
                BookState { stock: s.stock.checked_sub(quantity)?, ..*s }
            }
            BookOp::Refuse { quantity } => return (s.stock < quantity).then_some(*s),
            BookOp::Read(seen) => return (seen == *s).then_some(*s),
        };
        match *op {
            BookOp::Restock { after: Some(after), .. } | BookOp::SetPrice { after: Some(after), .. }
                if after != next =>
            {
                None
            }
            _ => Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: writes set it, reads observe it.
    struct Register;

    #[derive(Debug, Clone, Copy)]
    enum RegOp {
        Write(u64),
        Read(u64),
    }

    impl Model for Register {
        type State = u64;
        type Op = RegOp;
        fn init(&self) -> u64 {
            0
        }
        fn step(&self, state: &u64, op: &RegOp) -> Option<u64> {
            match *op {
                RegOp::Write(v) => Some(v),
                RegOp::Read(v) => (v == *state).then_some(v),
            }
        }
    }

    fn op(call: Nanos, ret: Option<Nanos>, op: RegOp) -> Operation<RegOp> {
        Operation { call, ret, op }
    }

    #[test]
    fn sequential_legal_history_is_linearizable() {
        let ops = [op(0, Some(1), RegOp::Write(1)), op(2, Some(3), RegOp::Read(1))];
        assert!(check(&Register, &ops, 1000).is_linearizable());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not_linearizable() {
        let ops = [op(0, Some(1), RegOp::Write(1)), op(2, Some(3), RegOp::Read(0))];
        match check(&Register, &ops, 1000) {
            Verdict::NotLinearizable(e) => {
                assert_eq!(e.stuck, 1);
                assert_eq!(e.linearized, vec![0]);
                assert_eq!(e.state, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps the write: it may see the old or the new value.
        for seen in [0, 1] {
            let ops = [op(0, Some(10), RegOp::Write(1)), op(5, Some(15), RegOp::Read(seen))];
            assert!(check(&Register, &ops, 1000).is_linearizable(), "read {seen}");
        }
        // Two overlapping writes, then reads that pin their order.
        let ops = [
            op(0, Some(10), RegOp::Write(1)),
            op(1, Some(11), RegOp::Write(2)),
            op(20, Some(21), RegOp::Read(1)),
            op(22, Some(23), RegOp::Read(1)),
        ];
        assert!(check(&Register, &ops, 1000).is_linearizable());
        // ...but a value cannot come back once overwritten.
        let ops = [
            op(0, Some(10), RegOp::Write(1)),
            op(1, Some(11), RegOp::Write(2)),
            op(20, Some(21), RegOp::Read(1)),
            op(22, Some(23), RegOp::Read(2)),
        ];
        assert!(!check(&Register, &ops, 1000).is_linearizable());
    }

    #[test]
    fn an_operation_of_unknown_outcome_may_apply_late_or_never() {
        // Never applied.
        let ops = [op(0, None, RegOp::Write(7)), op(10, Some(11), RegOp::Read(0))];
        assert!(check(&Register, &ops, 1000).is_linearizable());
        // Applied long after the client gave up.
        let ops = [op(0, None, RegOp::Write(7)), op(10, Some(11), RegOp::Read(0)), op(20, Some(21), RegOp::Read(7))];
        assert!(check(&Register, &ops, 1000).is_linearizable());
        // But not before it was invoked.
        let ops = [op(0, Some(1), RegOp::Read(7)), op(5, None, RegOp::Write(7))];
        assert!(!check(&Register, &ops, 1000).is_linearizable());
        // And not twice.
        let ops = [
            op(0, None, RegOp::Write(7)),
            op(1, Some(2), RegOp::Write(1)),
            op(3, Some(4), RegOp::Read(7)),
            op(5, Some(6), RegOp::Write(1)),
            op(7, Some(8), RegOp::Read(7)),
        ];
        assert!(!check(&Register, &ops, 1000).is_linearizable());
    }

    #[test]
    fn the_search_gives_up_instead_of_hanging() {
        // Many concurrent writes and a read that no order explains.
        let mut ops: Vec<_> = (1..=14).map(|v| op(0, Some(100), RegOp::Write(v))).collect();
        ops.push(op(200, Some(201), RegOp::Read(99)));
        assert!(matches!(check(&Register, &ops, 50), Verdict::Unknown { steps: 50 }));
        // With enough steps, memoization settles it.
        assert!(matches!(check(&Register, &ops, 10_000_000), Verdict::NotLinearizable(_)));
    }

    fn book(stock: u64, price_cents: u64) -> BookState {
        BookState { stock, price_cents }
    }

    #[test]
    fn the_book_model_takes_stock_only_when_there_is_enough_at_the_current_price() {
        let m = BookModel { initial: book(2, 100) };
        let s = m.init();
        assert_eq!(m.step(&s, &BookOp::Take { quantity: 2, unit_price_cents: Some(100) }), Some(book(0, 100)));
        assert_eq!(m.step(&s, &BookOp::Take { quantity: 3, unit_price_cents: Some(100) }), None);
        assert_eq!(m.step(&s, &BookOp::Take { quantity: 1, unit_price_cents: Some(90) }), None);
        assert_eq!(m.step(&s, &BookOp::Take { quantity: 1, unit_price_cents: None }), Some(book(1, 100)));
        assert_eq!(m.step(&s, &BookOp::Refuse { quantity: 3 }), Some(s));
        assert_eq!(m.step(&s, &BookOp::Refuse { quantity: 2 }), None);
        let restock = BookOp::Restock { quantity: 3, after: Some(book(5, 100)) };
        assert_eq!(m.step(&s, &restock), Some(book(5, 100)));
        assert_eq!(m.step(&book(1, 100), &restock), None);
        let price = BookOp::SetPrice { price_cents: 70, after: Some(book(2, 70)) };
        assert_eq!(m.step(&s, &price), Some(book(2, 70)));
        assert_eq!(m.step(&s, &BookOp::Read(book(2, 100))), Some(s));
        assert_eq!(m.step(&s, &BookOp::Read(book(1, 100))), None);
    }

    #[test]
    fn an_oversell_is_not_linearizable() {
        // Two confirmed buys of 2 from a stock of 3, one after the other.
        let m = BookModel { initial: book(3, 100) };
        let take = BookOp::Take { quantity: 2, unit_price_cents: Some(100) };
        let ops = [op_b(0, Some(1), take.clone()), op_b(2, Some(3), take)];
        assert!(!check(&m, &ops, 1000).is_linearizable());
    }

    fn op_b(call: Nanos, ret: Option<Nanos>, op: BookOp) -> Operation<BookOp> {
        Operation { call, ret, op }
    }
}
