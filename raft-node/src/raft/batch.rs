//! Sharing work between concurrent requests of one group.
//!
//! - [`Rounds`]: concurrent reads share one read-index request. A read joins
//!   the *next* round; a round takes every read waiting when it starts, asks
//!   for one read index, and gives it to all of them. Each read joined before
//!   its round asked, so the index it gets was confirmed after the read
//!   arrived, which is all ReadIndex needs for linearizability. Without
//!   this, every follower read cost an RPC to the leader and every leader
//!   read a heartbeat broadcast. While reads keep arriving, rounds start at
//!   most every [`ROUND_SPACING`]: otherwise a busy group runs rounds back
//!   to back at the round-trip rate, each shared by one or two reads, and
//!   spends its CPU on heartbeats (measured: 64 clients through the
//!   frontend went from about 4,700 to 8,200 linearizable lookups a second,
//!   at the price of about a millisecond more at 8 clients; an idle group
//!   starts a round at once, so a lone read waits for nothing).
//! - [`Proposer`]: concurrent writes share one proposal. Writes queue up
//!   while the proposer hands the previous batch to openraft; it then
//!   proposes everything queued with one `client_write_many`, which openraft
//!   appends, replicates and applies as one batch of entries (one entry per
//!   write, in queue order). A single write costs one extra channel hop.
//!   openraft also merges the calls waiting in its own queue; the proposer
//!   usually finds one write queued, but the calls it makes in a row get
//!   merged far more than calls from every request's own task (measured
//!   at 64 clients: openraft's batches were a third the size without it).

use std::future::Future;
use std::mem;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use openraft::errors::Fatal;
use openraft::raft::WriteResult;
use openraft::storage::RaftStateMachine;
use openraft::{Raft, RaftTypeConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Requests waiting for the next round of one shared call.
pub struct Rounds<T> {
    pending: Mutex<Pending<T>>,
    /// Least time between the starts of back-to-back rounds.
    spacing: Duration,
}

/// Least time between the starts of back-to-back read rounds: at most a
/// thousand read indexes a second per group and node while reads keep
/// coming, each shared by every read that arrived meanwhile. An idle group
/// starts a round at once.
pub const ROUND_SPACING: Duration = Duration::from_millis(1);

struct Pending<T> {
    /// Whether a task is serving rounds; if not, the next joiner starts one.
    serving: bool,
    waiters: Vec<oneshot::Sender<T>>,
}

impl<T: Clone> Default for Rounds<T> {
    fn default() -> Self {
        Rounds::new(ROUND_SPACING)
    }
}

impl<T: Clone> Rounds<T> {
    /// Rounds started at least `spacing` apart while requests keep coming.
    pub fn new(spacing: Duration) -> Self {
        Rounds { pending: Mutex::new(Pending { serving: false, waiters: Vec::new() }), spacing }
    }

    /// Joins the next round. When the second value is `true`, nobody serves
    /// rounds and the caller must start [`Rounds::serve`].
    pub fn join(&self) -> (oneshot::Receiver<T>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending.lock().expect("rounds poisoned");
        p.waiters.push(tx);
        let start = !p.serving;
        p.serving = true;
        (rx, start)
    }

    fn has_waiters(&self) -> bool {
        !self.pending.lock().expect("rounds poisoned").waiters.is_empty()
    }

    /// Serves rounds until nobody waits: each round takes every waiter, calls
    /// `call` once, and hands its result to all of them. Returns the number
    /// of rounds served.
    pub async fn serve<F, Fut>(&self, mut call: F) -> u64
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = T>,
    {
        // If `call` panics, waiters must not wait for a server that is gone:
        // the guard drops them (they see a closed channel) and lets the next
        // joiner start a new server.
        let guard = StopServing(self);
        let mut rounds = 0;
        let mut last_start: Option<Instant> = None;
        loop {
            match last_start {
                // Reads arrived during the last round: the group is busy, so
                // rounds are paced and the waiting reads share the next one.
                // Unpaced, a round would start the moment the last one
                // ended, at a rate set by the round trip rather than by the
                // reads, and each would serve one or two reads.
                Some(started) if self.has_waiters() => tokio::time::sleep_until(started + self.spacing).await,
                // A fresh start: only let the requests that are ready to run
                // join first (nothing else runnable: no wait at all).
                None => tokio::task::yield_now().await,
                Some(_) => {}
            }
            let waiters = {
                let mut p = self.pending.lock().expect("rounds poisoned");
                if p.waiters.is_empty() {
                    p.serving = false;
                    break;
                }
                mem::take(&mut p.waiters)
            };
            last_start = Some(Instant::now());
            let result = call(waiters.len()).await;
            rounds += 1;
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
        mem::forget(guard);
        rounds
    }
}

struct StopServing<'a, T>(&'a Rounds<T>);

impl<T> Drop for StopServing<'_, T> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.0.pending.lock() {
            p.serving = false;
            p.waiters.clear();
        }
    }
}

/// What a proposed write gets back: openraft's answer, or the group stopped.
pub type Proposed<C> = Result<WriteResult<C>, Fatal<C>>;

type Queued<C> = (<C as RaftTypeConfig>::D, oneshot::Sender<Proposed<C>>);

/// Most writes proposed together.
const MAX_BATCH: usize = 256;

/// Batches the writes of one group into `client_write_many` calls.
pub struct Proposer<C: RaftTypeConfig> {
    queue: mpsc::UnboundedSender<Queued<C>>,
}

impl<C: RaftTypeConfig> Proposer<C> {
    /// Starts proposing through `raft` on a task of its own, which ends when
    /// the proposer is dropped.
    pub fn start<SM: RaftStateMachine<C>>(raft: Raft<C, SM>) -> Proposer<C> {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(propose(raft, rx));
        Proposer { queue }
    }

    /// Queues `data` for the next batch; the receiver answers once the entry
    /// is applied, or with why it was not.
    pub fn propose(&self, data: C::D) -> oneshot::Receiver<Proposed<C>> {
        let (tx, rx) = oneshot::channel();
        // A send fails only once the proposing task is gone, that is, when
        // the runtime shuts down; the dropped sender then closes `rx`.
        let _ = self.queue.send((data, tx));
        rx
    }
}

async fn propose<C: RaftTypeConfig, SM: RaftStateMachine<C>>(
    raft: Raft<C, SM>,
    mut rx: mpsc::UnboundedReceiver<Queued<C>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (data, waiters): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match raft.client_write_many(data).await {
            // Answers arrive in proposal order; waiting for them happens on
            // its own task so that the next batch can be proposed meanwhile.
            Ok(answers) => {
                tokio::spawn(async move {
                    let mut answers = answers;
                    for w in waiters {
                        let Some(answer) = answers.next().await else { return };
                        let _ = w.send(answer);
                    }
                });
            }
            Err(fatal) => {
                for w in waiters {
                    let _ = w.send(Err(fatal.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn reads_that_wait_together_share_one_round() {
        let rounds = Arc::new(Rounds::<usize>::default());
        let (first, start) = rounds.join();
        assert!(start, "the first joiner starts the server");
        let (second, start_again) = rounds.join();
        assert!(!start_again, "later joiners find it running");
        let calls = AtomicUsize::new(0);
        let served = rounds
            .serve(|n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { n }
            })
            .await;
        assert_eq!((served, calls.load(Ordering::SeqCst)), (1, 1));
        assert_eq!((first.await.unwrap(), second.await.unwrap()), (2, 2), "both got the one round's answer");
        let (_third, start) = rounds.join();
        assert!(start, "an idle server is restarted by the next joiner");
    }

    #[tokio::test]
    async fn a_read_that_joins_during_a_round_waits_for_the_next_one() {
        let rounds = Arc::new(Rounds::<u64>::default());
        let (early, _) = rounds.join();
        let (release, released) = oneshot::channel::<()>();
        let (asking, asked) = oneshot::channel::<()>();
        let server = {
            let rounds = rounds.clone();
            let mut released = Some(released);
            let mut asking = Some(asking);
            let mut round = 0;
            tokio::spawn(async move {
                rounds
                    .serve(move |_| {
                        round += 1;
                        if let Some(asking) = asking.take() {
                            let _ = asking.send(());
                        }
                        let gate = released.take();
                        async move {
                            if let Some(gate) = gate {
                                let _ = gate.await;
                            }
                            round
                        }
                    })
                    .await
            })
        };
        // The first round is under way (its call is blocked on the gate);
        // this read arrives after it started asking.
        asked.await.unwrap();
        let (late, start) = rounds.join();
        assert!(!start);
        release.send(()).unwrap();
        assert_eq!(early.await.unwrap(), 1);
        assert_eq!(late.await.unwrap(), 2, "a round that began before the read joined must not answer it");
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn rounds_are_paced_while_reads_keep_coming_and_not_when_idle() {
        let spacing = Duration::from_millis(50);
        let rounds = Arc::new(Rounds::<u64>::new(spacing));
        let started = Arc::new(Mutex::new(Vec::new()));
        let serve = |rounds: Arc<Rounds<u64>>, started: Arc<Mutex<Vec<Instant>>>| async move {
            let again = rounds.clone();
            rounds
                .serve(move |_| {
                    started.lock().unwrap().push(Instant::now());
                    // A read arrives while the first round is under way.
                    let late = (started.lock().unwrap().len() == 1).then(|| again.join().0);
                    async move {
                        drop(late);
                        0
                    }
                })
                .await
        };
        let (_first, _) = rounds.join();
        assert_eq!(serve(rounds.clone(), started.clone()).await, 2);
        let times = started.lock().unwrap().clone();
        assert!(times[1] - times[0] >= spacing, "the second round waited for the spacing");

        // Idle: a read is served without pacing, however long the spacing.
        let rounds = Rounds::<u64>::new(Duration::from_secs(3600));
        let (_again, start) = rounds.join();
        assert!(start);
        let served = tokio::time::timeout(Duration::from_secs(60), rounds.serve(|_| async { 0 })).await;
        assert_eq!(served.ok(), Some(1), "an idle group starts a round at once");
    }

    #[tokio::test]
    async fn a_panicking_round_releases_its_waiters_and_the_server() {
        let rounds = Arc::new(Rounds::<u64>::default());
        let (waiter, _) = rounds.join();
        let serving = rounds.clone();
        let died = tokio::spawn(async move { serving.serve(|_| async { panic!("boom") }).await }).await;
        assert!(died.is_err());
        assert!(waiter.await.is_err(), "the waiter sees a closed channel, not a hang");
        let (_next, start) = rounds.join();
        assert!(start, "the next joiner starts a new server");
    }
}
