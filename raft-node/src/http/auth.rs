//! Bearer-token guards.
//!
//! `Admin` guards the calls that change the catalog or the cluster; `Peer`
//! guards the Raft RPCs and forwarded calls between nodes. Both are
//! extractors: a handler that names one in its arguments cannot run without
//! the right token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bazar_api::{ErrorCode, Problem};

use super::error::AppError;
use crate::node::Node;

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(detail: &str) -> AppError {
    AppError::from_problem(Problem::new(ErrorCode::Unauthorized, detail))
}

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<Arc<Node>> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Self::Rejection> {
        match bearer(parts) {
            Some(t) if node.is_admin_token(t) => Ok(Admin),
            Some(_) => Err(unauthorized("wrong admin token")),
            None => Err(unauthorized("this call needs Authorization: Bearer <admin token>")),
        }
    }
}

/// Proof that the request carries the cluster token (it comes from a peer).
pub struct Peer;

impl FromRequestParts<Arc<Node>> for Peer {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Self::Rejection> {
        match bearer(parts) {
            Some(t) if node.is_cluster_token(t) => Ok(Peer),
            Some(_) => Err(unauthorized("wrong cluster token")),
            None => Err(unauthorized("Raft RPCs need Authorization: Bearer <cluster token>")),
        }
    }
}
