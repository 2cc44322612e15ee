//! The client's one error type.
//!
//! What a caller most needs to know about a failed call is whether the server
//! *decided* or whether nobody knows what happened:
//!
//! - [`ClientError::Problem`] and [`ClientError::Status`]: the server answered
//!   and refused (or failed) the request. For `4xx` answers nothing changed.
//! - [`ClientError::Transport`]: no complete answer arrived. A write may or may
//!   not have been applied; only a retry carrying the same `Idempotency-Key`
//!   learns the one true outcome. [`ClientError::outcome_unknown`] encodes
//!   this rule so that the CLI, the benchmarks and the tests agree on it.
//! - [`ClientError::Decode`]: an answer arrived but was not the JSON we expect.
//! - [`ClientError::Invalid`]: refused on this side, before anything was sent.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use bazar_api::{ErrorCode, Problem};

/// Result alias used throughout the crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an RFC 9457 problem document. Its `status` is
    /// the HTTP status of the answer. Boxed because a problem is large and
    /// every `Result` of this crate would otherwise pay for it.
    #[error("{}", .0.detail)]
    Problem(Box<Problem>),
    /// The server answered with an error status but without a problem
    /// document (a proxy in between, or a route this server does not have).
    #[error("{}", status_message(*.status, .body))]
    Status {
        /// HTTP status code.
        status: u16,
        /// The start of the body, for the operator to read.
        body: String,
    },
    /// No complete answer arrived: connection refused or reset, timeout,
    /// broken stream.
    #[error("{detail}")]
    Transport {
        /// What kind of failure, which decides whether a write may have
        /// happened.
        kind: TransportKind,
        /// The failure with its causes, for humans.
        detail: String,
    },
    /// The answer could not be decoded.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The request was refused before sending: a bad argument or address.
    #[error("{0}")]
    Invalid(String),
}

/// How a request failed to get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made, so the request was never sent.
    Connect,
    /// The deadline passed; the server may still be working on it.
    Timeout,
    /// The connection broke or the body could not be read.
    Broken,
}

impl ClientError {
    /// The problem document, when the server sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Problem(p) => Some(p),
            _ => None,
        }
    }

    /// The machine-readable code, when the server sent a problem document.
    pub fn code(&self) -> Option<ErrorCode> {
        self.problem().map(|p| p.code)
    }

    /// Whether the server answered with a problem carrying `code`.
    pub fn is_code(&self, code: ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// The HTTP status, when the server answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem(p) => Some(p.status),
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether no complete answer arrived.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// Whether the deadline passed before an answer arrived.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Transport { kind: TransportKind::Timeout, .. })
    }

    /// How long the server asked us to wait before retrying (`unavailable`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.problem().and_then(|p| p.retry_after).map(Duration::from_secs)
    }

    /// Whether a write that failed this way may nevertheless have been
    /// applied, so that it must be retried with the same idempotency key
    /// rather than reported as failed.
    ///
    /// A problem document's `write_outcome` decides when the server sent
    /// one (`unknown`: true; `not_applied`: false). Otherwise true for
    /// broken connections and timeouts (the request may have been committed
    /// before the answer was lost), for `unavailable` (the proposal may
    /// still commit after the deadline) and for server failures; false when
    /// the connection was never made and for every `4xx` answer: the server
    /// refused before changing anything.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Transport { kind, .. } => *kind != TransportKind::Connect,
            // The server says (`write_outcome`), else its code and status do.
            ClientError::Problem(p) => p.may_have_applied(),
            ClientError::Status { status, .. } => *status >= 500,
            ClientError::Decode(_) | ClientError::Invalid(_) => false,
        }
    }

    /// A timeout that did not come from reqwest (stream idle, header wait).
    pub fn timeout(what: impl fmt::Display) -> ClientError {
        ClientError::Transport { kind: TransportKind::Timeout, detail: what.to_string() }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(err: reqwest::Error) -> ClientError {
        // A connect timeout is both `is_connect` and `is_timeout`; it counts
        // as Connect because the request was certainly not sent.
        let kind = if err.is_connect() {
            TransportKind::Connect
        } else if err.is_timeout() {
            TransportKind::Timeout
        } else if err.is_decode() {
            return ClientError::Decode(error_chain(&err));
        } else {
            TransportKind::Broken
        };
        ClientError::Transport { kind, detail: error_chain(&err) }
    }
}

/// Joins an error and its causes: reqwest's own message only names the URL,
/// the useful part ("Connection refused") is three sources down.
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn status_message(status: u16, body: &str) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("error");
    if body.is_empty() { format!("HTTP {status} {reason}") } else { format!("HTTP {status} {reason}: {body}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazar_api::WriteOutcome;

    #[test]
    fn only_refusals_and_unsent_requests_have_a_known_outcome() {
        let refused = ClientError::Problem(Box::new(Problem::new(ErrorCode::OutOfStock, "no")));
        assert!(!refused.outcome_unknown());
        let unavailable = ClientError::Problem(Box::new(Problem::unavailable("no quorum", 1)));
        assert!(unavailable.outcome_unknown());
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(1)));
        let connect = ClientError::Transport { kind: TransportKind::Connect, detail: "x".into() };
        assert!(!connect.outcome_unknown());
        assert!(ClientError::timeout("slow").outcome_unknown());
        assert!(ClientError::Status { status: 502, body: String::new() }.outcome_unknown());
        let typed = |o| ClientError::Problem(Box::new(Problem::unavailable("x", 1).with_write_outcome(o)));
        assert!(!typed(WriteOutcome::NotApplied).outcome_unknown(), "nothing was proposed");
        assert!(typed(WriteOutcome::Unknown).outcome_unknown());
    }

    #[test]
    fn status_without_problem_reads_like_http() {
        let e = ClientError::Status { status: 404, body: String::new() };
        assert_eq!(e.to_string(), "HTTP 404 Not Found");
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), None);
    }
}
