//! RFC 9457 problem documents.
//!
//! Every error a Bazar HTTP server returns is an `application/problem+json`
//! document with the standard members (`type`, `title`, `status`, `detail`)
//! and a machine-readable `code`. Some codes carry extra members: `not_leader`
//! names the leader to retry against, `unavailable` says when to retry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The book, order or route does not exist (404).
    NotFound,
    /// Not enough stock; nothing changed (409).
    OutOfStock,
    /// The request is malformed or out of bounds (400, 413, 415, 422).
    InvalidInput,
    /// A conflicting resource exists, e.g. a duplicate ISBN (409).
    Conflict,
    /// The idempotency key was used before for a different request (422).
    IdempotencyKeyReused,
    /// Missing or wrong token (401).
    Unauthorized,
    /// No leader or quorum could be reached in time (503).
    Unavailable,
    /// This node does not lead the group; retry at `leader_addr` (421).
    NotLeader,
    /// An unexpected failure; details are in the server's log (500).
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::OutOfStock => "out_of_stock",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code is usually sent with.
    pub fn default_status(self) -> u16 {
        match self {
            ErrorCode::NotFound => 404,
            ErrorCode::OutOfStock | ErrorCode::Conflict => 409,
            ErrorCode::InvalidInput => 400,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Unavailable => 503,
            ErrorCode::NotLeader => 421,
            ErrorCode::Internal => 500,
        }
    }

    /// A short human title for the code.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "Not found",
            ErrorCode::OutOfStock => "Out of stock",
            ErrorCode::InvalidInput => "Invalid input",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::IdempotencyKeyReused => "Idempotency key reused",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::NotLeader => "Not the leader",
            ErrorCode::Internal => "Internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed write did, as far as the server that answered knows
/// (`write_outcome` of a problem document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// Nothing was proposed: sending the request again cannot apply it
    /// twice.
    NotApplied,
    /// It was proposed and may have been applied, or may still be: only a
    /// retry under the same idempotency key learns what happened.
    Unknown,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type: `https://bazar.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// With `not_leader`: the id of the leader, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    /// With `not_leader`: the address of the leader, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_addr: Option<String>,
    /// With `unavailable`: seconds to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// With `out_of_stock` on a buy: the rejected order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<u64>,
    /// With `unavailable` and `not_leader`: whether the request may have
    /// changed anything (see [`WriteOutcome`]). Absent: unknown for a
    /// `5xx`, not applied for a `4xx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_outcome: Option<WriteOutcome>,
}

impl Problem {
    /// A problem with the code's default status and title.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("https://bazar.dev/problems/{}", code.as_str()),
            title: code.title().to_string(),
            status: code.default_status(),
            detail: detail.into(),
            code,
            leader_id: None,
            leader_addr: None,
            retry_after: None,
            order_id: None,
            write_outcome: None,
        }
    }

    /// Overrides the HTTP status (e.g. 413 or 415 for `invalid_input`).
    pub fn with_status(mut self, status: u16) -> Problem {
        self.status = status;
        self
    }

    /// A `not_leader` problem pointing at the leader.
    pub fn not_leader(group: &str, leader_id: Option<u64>, leader_addr: Option<String>) -> Problem {
        let detail = match (&leader_id, &leader_addr) {
            (Some(id), Some(addr)) => {
                format!("this node does not lead the {group} group; node {id} at {addr} does")
            }
            _ => format!("this node does not lead the {group} group and knows no leader yet"),
        };
        let mut p = Problem::new(ErrorCode::NotLeader, detail);
        p.leader_id = leader_id;
        p.leader_addr = leader_addr;
        p.write_outcome = Some(WriteOutcome::NotApplied);
        p
    }

    /// The problem, saying what the failed write did.
    pub fn with_write_outcome(mut self, outcome: WriteOutcome) -> Problem {
        self.write_outcome = Some(outcome);
        self
    }

    /// Whether the request this answers may have changed anything: what
    /// `write_outcome` says, else unknown for `unavailable`, `internal` and
    /// any `5xx`, and not for the rest (refused before changing anything).
    pub fn may_have_applied(&self) -> bool {
        match self.write_outcome {
            Some(outcome) => outcome == WriteOutcome::Unknown,
            None => matches!(self.code, ErrorCode::Unavailable | ErrorCode::Internal) || self.status >= 500,
        }
    }

    /// An `unavailable` problem with a retry hint in seconds.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Problem {
        let mut p = Problem::new(ErrorCode::Unavailable, detail);
        p.retry_after = Some(retry_after);
        p
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

/// The HTTP edge of every problem a server sends: the status it carries,
/// `Content-Type: application/problem+json`, `Retry-After` when it says
/// when to retry, and the document as the body.
#[cfg(feature = "server")]
impl axum::response::IntoResponse for &Problem {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderValue, StatusCode, header};
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::PROBLEM_CONTENT_TYPE));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(feature = "server")]
impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        (&self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_serializes_with_rfc9457_members() {
        let p = Problem::not_leader("catalog", Some(2), Some("127.0.0.1:7102".into()));
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://bazar.dev/problems/not_leader");
        assert_eq!(v["status"], 421);
        assert_eq!(v["code"], "not_leader");
        assert_eq!(v["leader_id"], 2);
        assert_eq!(v["leader_addr"], "127.0.0.1:7102");
        assert!(v.get("retry_after").is_none());
        assert_eq!(v["write_outcome"], "not_applied");
        let back: Problem = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[cfg(feature = "server")]
    #[test]
    fn a_problem_leaves_as_problem_json_with_its_status_and_retry_hint() {
        use axum::response::IntoResponse;
        let response = Problem::unavailable("no quorum", 2).into_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()["content-type"], crate::PROBLEM_CONTENT_TYPE);
        assert_eq!(response.headers()["retry-after"], "2");
        let refused = Problem::new(ErrorCode::InvalidInput, "bad").with_status(415).into_response();
        assert_eq!(refused.status().as_u16(), 415);
        assert!(refused.headers().get("retry-after").is_none());
    }

    #[test]
    fn the_write_outcome_decides_whether_a_failed_write_may_have_applied() {
        let unavailable = Problem::unavailable("no quorum", 1);
        assert!(unavailable.may_have_applied(), "a 5xx without write_outcome is unknown");
        assert!(!unavailable.clone().with_write_outcome(WriteOutcome::NotApplied).may_have_applied());
        assert!(unavailable.with_write_outcome(WriteOutcome::Unknown).may_have_applied());
        assert!(!Problem::not_leader("orders", None, None).may_have_applied());
        assert!(!Problem::new(ErrorCode::OutOfStock, "none left").may_have_applied());
    }
}
