//! Calls from the frontend to the nodes: reads spread over replicas, writes
//! forwarded to leaders.
//!
//! These calls relay answers as they are (status, problem documents, the
//! `X-Bazar-*` headers), so they are plain HTTP calls rather than the typed
//! client library, which decodes answers into values. They go over
//! [`bazar_net::Mux`]: one connection per node, on which the calls made at
//! the same time leave in one write and their answers come back in one
//! read, instead of an HTTP/1.1 exchange (two system calls and HTTP parsing
//! on each side) per call.
//!
//! Retries: a read may be retried on any replica (it changes nothing). A
//! write is retried only when it cannot have been applied twice: always for a
//! buy (it carries an idempotency key), and for other writes only when the
//! node proposed nothing (connection refused, `not_leader`, or `unavailable`
//! with `write_outcome: not_applied`; see `may_resend`). A buy
//! whose leader stops answering is not left waiting for the deadline: once
//! the probes find that node silent and another leading, the buy is sent to
//! the new leader under the same key.

use bazar_api::{ErrorCode, Group, Problem, WriteOutcome};
use bazar_net::{Call, HeaderMap, Method, StatusCode};
use bytes::Bytes;
use tokio::time::Instant;

use crate::Frontend;
use crate::replicas::Replica;

/// A node's answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The node that answered.
    pub node: u64,
}

impl Answer {
    /// A numeric header, if present.
    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.to_str().ok()?.parse().ok()
    }
}

/// A write to forward.
pub struct Write<'a> {
    /// The group whose leader takes it.
    pub group: Group,
    /// Method.
    pub method: Method,
    /// Path (and query).
    pub path: &'a str,
    /// Headers to pass on (authorization, content type, idempotency key).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Whether re-sending it can never apply it twice.
    pub idempotent: bool,
}

const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// How often a write in flight checks whether its leader was superseded.
const SUPERSEDED_CHECK: std::time::Duration = std::time::Duration::from_millis(25);

fn unavailable(detail: impl Into<String>) -> Problem {
    Problem::unavailable(detail, 1)
}

/// Whether a write a node answered `503` may be sent again, given whether
/// that answer says it `may_have_applied`: an idempotent one always (a
/// retry learns the first outcome), any other only when the node proposed
/// nothing. Never a non-idempotent write that may have been applied: it
/// could be applied twice.
fn may_resend(idempotent: bool, may_have_applied: bool) -> bool {
    idempotent || !may_have_applied
}

/// Whether a node's `503` problem document `body` says the write may have
/// been applied (see [`Problem::may_have_applied`]); a body that is no
/// problem document may have been anything.
fn may_have_applied(body: &[u8]) -> bool {
    serde_json::from_slice::<Problem>(body).map_or(true, |p| p.may_have_applied())
}

impl Frontend {
    /// Resolves once `replica` fails its probes and another node is known to
    /// lead `group`; never otherwise.
    async fn superseded(&self, group: Group, replica: &Replica) {
        loop {
            tokio::time::sleep(SUPERSEDED_CHECK).await;
            let other_leads = self.replicas.leader(group).is_some_and(|l| l.id != replica.id);
            if !replica.is_healthy() && other_leads {
                return;
            }
        }
    }

    /// `GET path?query` on a replica, trying others when one fails or is
    /// unavailable, until `deadline`.
    pub async fn read_replica(
        &self,
        path: &str,
        query: &[(&str, String)],
        deadline: Instant,
    ) -> Result<Answer, Problem> {
        let target = match serde_urlencoded::to_string(query) {
            Ok(q) if q.is_empty() => path.to_string(),
            Ok(q) => format!("{path}?{q}"),
            Err(e) => return Err(Problem::new(ErrorCode::InvalidInput, format!("unencodable query: {e}"))),
        };
        let mut tried = Vec::new();
        let mut last = String::from("no replica answered");
        loop {
            let Some(replica) = self.replicas.pick(&tried) else {
                // Every replica failed this round: start over after a pause.
                tried.clear();
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(unavailable(format!("no replica could serve the read in time: {last}")));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            tried.push(replica.id);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(unavailable(format!("no replica could serve the read in time: {last}")));
            }
            let _in_flight = replica.start();
            match self.calls.call(&replica.addr, Call::get(&target), remaining).await {
                Ok(answer) if answer.status.is_server_error() => {
                    last = format!("node {} answered {}", replica.id, answer.status);
                }
                Ok(a) => return Ok(Answer { status: a.status, headers: a.headers, body: a.body, node: replica.id }),
                // No node could take it: refused at once, not retried.
                Err(e @ bazar_net::Error::Unencodable(_)) => {
                    return Err(Problem::new(ErrorCode::InvalidInput, e.to_string()));
                }
                Err(e) => {
                    self.replicas.failed(&replica);
                    last = format!("node {}: {e}", replica.id);
                }
            }
        }
    }

    /// Sends a write to the leader of its group, following `not_leader`
    /// hints and retrying (when safe) until `deadline`.
    pub async fn forward_write(&self, write: Write<'_>, deadline: Instant) -> Result<Answer, Problem> {
        let mut tried = Vec::new();
        let mut last = String::from("no leader known");
        // Whether some attempt may have been proposed (sent, and not refused).
        let mut delivered = false;
        loop {
            if Instant::now() >= deadline {
                let outcome = if delivered { WriteOutcome::Unknown } else { WriteOutcome::NotApplied };
                let detail = format!("the {} group has no reachable leader: {last}", write.group);
                return Err(unavailable(detail).with_write_outcome(outcome));
            }
            let target = self
                .replicas
                .leader(write.group)
                .filter(|l| !tried.contains(&l.id))
                .or_else(|| self.replicas.pick(&tried));
            let Some(replica) = target else {
                tried.clear();
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            tried.push(replica.id);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let _in_flight = replica.start();
            let call = Call {
                method: write.method.clone(),
                path: write.path,
                headers: write.headers.clone(),
                body: write.body.clone(),
            };
            let sent = self.calls.call(&replica.addr, call, remaining);
            let answered = if write.idempotent {
                // A leader that stops answering (paused, cut off) would hold
                // the write until the deadline although another leads within
                // an election: once probes find it silent and another node
                // leading, the write is sent there, under the same key.
                tokio::select! {
                    answered = sent => answered,
                    () = self.superseded(write.group, &replica) => {
                        delivered = true;
                        last = format!("node {} stopped answering and another node leads", replica.id);
                        continue;
                    }
                }
            } else {
                sent.await
            };
            let response = match answered {
                Ok(r) => r,
                // No node could take it (never sent): refused at once.
                Err(e @ bazar_net::Error::Unencodable(_)) => {
                    return Err(Problem::new(ErrorCode::InvalidInput, e.to_string()));
                }
                Err(e) if e.is_connect() => {
                    // Never delivered: safe to send elsewhere.
                    self.replicas.failed(&replica);
                    last = format!("node {}: {e}", replica.id);
                    continue;
                }
                Err(e) if write.idempotent => {
                    delivered = true;
                    last = format!("node {}: {e}", replica.id);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "node {} did not answer ({e}); the write may or may not have been applied",
                        replica.id
                    ))
                    .with_write_outcome(WriteOutcome::Unknown));
                }
            };
            let bazar_net::Response { status, headers, body } = response;
            if status == StatusCode::MISDIRECTED_REQUEST {
                // Refused before proposing: follow the hint.
                let hint = serde_json::from_slice::<Problem>(&body).ok().filter(|p| p.code == ErrorCode::NotLeader);
                let leader = hint.and_then(|p| p.leader_id);
                self.replicas.set_leader(write.group, leader);
                last = format!("node {} does not lead", replica.id);
                if leader.is_none_or(|l| tried.contains(&l)) {
                    tried.clear();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                continue;
            }
            if status == StatusCode::SERVICE_UNAVAILABLE {
                let applied = may_have_applied(&body);
                if may_resend(write.idempotent, applied) {
                    delivered |= applied;
                    last = format!("node {} is unavailable", replica.id);
                    tried.clear();
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
            return Ok(Answer { status, headers, body, node: replica.id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(outcome: Option<WriteOutcome>) -> Vec<u8> {
        let mut p = Problem::unavailable("the orders group did not commit the write in time", 1);
        p.write_outcome = outcome;
        serde_json::to_vec(&p).unwrap()
    }

    /// A restock or a new book has no idempotency key: sent again after it
    /// may have been applied, it could be applied twice.
    #[test]
    fn a_write_that_may_have_been_applied_is_resent_only_when_idempotent() {
        let unknown = may_have_applied(&answer(Some(WriteOutcome::Unknown)));
        assert!(!may_resend(false, unknown));
        assert!(may_resend(true, unknown));
        let untyped = may_have_applied(&answer(None));
        assert!(!may_resend(false, untyped), "a 503 that does not say is taken as unknown");
        assert!(!may_resend(false, may_have_applied(b"<html>bad gateway</html>")));
    }

    #[test]
    fn a_write_that_was_not_proposed_is_resent() {
        let not_applied = may_have_applied(&answer(Some(WriteOutcome::NotApplied)));
        assert!(may_resend(false, not_applied));
        assert!(may_resend(true, not_applied));
        assert!(!not_applied);
    }
}
