//! Bearer-token guards.
//!
//! `Admin` guards the calls that change the catalog or the cluster; `Peer`
//! guards the Raft RPCs and forwarded calls between nodes. Both are
//! extractors: a handler that names one in its arguments cannot run without
//! the right token. [`mux_caller`] decides who may open a multiplexed
//! connection (`GET /mux`): a peer (cluster token) or a frontend (frontend
//! token), each with its own limits.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bazar_api::{ErrorCode, Problem};

use super::error::AppError;
use crate::listen::PeerCert;
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

/// Who may open a multiplexed connection, and within which limits: the
/// other nodes (cluster token) with frames as large as Raft appends, a
/// frontend (frontend token) with frames sized for client requests.
/// Calls on the connection are still authorized one by one, as over HTTP.
pub fn mux_caller(parts: &Parts, node: &Node) -> Result<bazar_net::mux::ServeLimits, AppError> {
    peer_certificate(parts, node, "/mux connections")?;
    match bearer(parts) {
        Some(t) if node.is_cluster_token(t) => Ok(bazar_net::mux::ServeLimits::PEER),
        Some(t) if node.is_frontend_token(t) => Ok(bazar_net::mux::ServeLimits::CLIENT),
        Some(_) => Err(unauthorized("wrong token for /mux: it needs the cluster token or the frontend token")),
        None => Err(unauthorized("/mux needs Authorization: Bearer <cluster token or frontend token>")),
    }
}

/// Under TLS, a connection that carries peer traffic must come with a
/// client certificate the cluster's CA signed (mutual TLS). A call served
/// on a multiplexed connection has no connection info of its own: its
/// connection passed this check when it was opened.
fn peer_certificate(parts: &Parts, node: &Node, what: &str) -> Result<(), AppError> {
    if node.config.tls.is_none() {
        return Ok(());
    }
    match parts.extensions.get::<ConnectInfo<PeerCert>>() {
        Some(ConnectInfo(PeerCert(false))) => {
            Err(unauthorized(&format!("{what} need a TLS client certificate signed by the cluster's CA (mutual TLS)")))
        }
        _ => Ok(()),
    }
}

/// Proof that the request carries the cluster token (it comes from a peer).
pub struct Peer;

impl FromRequestParts<Arc<Node>> for Peer {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Self::Rejection> {
        peer_certificate(parts, node, "Raft RPCs")?;
        match bearer(parts) {
            Some(t) if node.is_cluster_token(t) => Ok(Peer),
            Some(_) => Err(unauthorized("wrong cluster token")),
            None => Err(unauthorized("Raft RPCs need Authorization: Bearer <cluster token>")),
        }
    }
}
