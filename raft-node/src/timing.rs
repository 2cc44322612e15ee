//! `Server-Timing` on the node's answers: where a request's time went.
//!
//! The HTTP middleware ([`crate::http::metrics::track`]) runs each request
//! inside [`scope`]; the Raft layer [`record`]s the steps it waited for
//! (a commit, a read-index round, a wait for an index), and the answer
//! carries them after the node's own total, e.g.
//!
//! ```text
//! Server-Timing: node;dur=4.210, raft;desc="orders commit";dur=3.902, raft;desc="catalog commit";dur=3.655
//! ```
//!
//! Durations are milliseconds. Steps that overlap (a buy proposes to both
//! groups at once) are listed apart, so they may add up to more than the
//! total. Work a request hands to another task (the settlement of a buy) is
//! not in its answer's timing.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use axum::http::HeaderValue;

/// The response header (read back by [`bazar_api::timing::parse`]).
pub const SERVER_TIMING: &str = bazar_api::timing::SERVER_TIMING_HEADER;

/// One step a request waited for.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The tier (`raft`).
    pub name: &'static str,
    /// What it was (`orders commit`).
    pub desc: &'static str,
    /// How long.
    pub dur: Duration,
}

tokio::task_local! {
    static STEPS: RefCell<Vec<Step>>;
}

/// Runs `f`, collecting the steps recorded while it runs on this task.
pub async fn scope<F: Future>(f: F) -> (F::Output, Vec<Step>) {
    STEPS
        .scope(RefCell::new(Vec::new()), async move {
            let out = f.await;
            (out, STEPS.with(|s| s.take()))
        })
        .await
}

/// Records a step of the request running on this task, if any.
pub fn record(name: &'static str, desc: &'static str, dur: Duration) {
    let _ = STEPS.try_with(|s| s.borrow_mut().push(Step { name, desc, dur }));
}

/// The `Server-Timing` value for a request that took `total` on this
/// node (tier `tier`) with `steps`.
pub fn header(tier: &str, total: Duration, steps: &[Step]) -> HeaderValue {
    let mut value = format!("{tier};dur={:.3}", millis(total));
    for step in steps {
        let _ = write!(value, ", {};desc=\"{}\";dur={:.3}", step.name, step.desc, millis(step.dur));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("node"))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_recorded_in_the_scope_and_only_there_reach_the_header() {
        record("raft", "outside", Duration::from_millis(1));
        let ((), steps) = scope(async {
            record("raft", "orders commit", Duration::from_micros(2_500));
            tokio::task::yield_now().await;
            futures::future::join(
                async { record("raft", "catalog commit", Duration::from_millis(2)) },
                tokio::task::yield_now(),
            )
            .await;
        })
        .await;
        assert_eq!(steps.len(), 2, "{steps:?}");
        let value = header("node", Duration::from_micros(3_250), &steps);
        assert_eq!(
            value.to_str().unwrap(),
            "node;dur=3.250, raft;desc=\"orders commit\";dur=2.500, raft;desc=\"catalog commit\";dur=2.000"
        );
    }
}
