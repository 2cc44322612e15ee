//! The node's HTTP server: client routes, admin routes, the change stream,
//! and both groups' Raft RPCs, on one listener, which also serves the same
//! routes multiplexed on upgraded connections (`GET /mux`: the frontend's
//! calls and the other nodes' Raft RPCs). Upgrading needs a token (see
//! [`auth::mux_caller`]): anyone else gets `401`, before any frame is read.
//!
//! [`app`] builds the router without binding anything, so tests can drive it
//! with `tower::ServiceExt::oneshot`.

pub mod admin;
pub mod auth;
pub mod client;
pub mod error;
pub mod metrics;
pub mod raft;
pub mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::node::Node;

/// Largest body of a client request.
const CLIENT_BODY_LIMIT: usize = 64 * 1024;
/// Largest body of a Raft RPC (a batch of appended entries; snapshots stream).
const RAFT_BODY_LIMIT: usize = 512 * 1024 * 1024;

/// The node's routes.
pub fn app(node: Arc<Node>) -> Router {
    let client = Router::new()
        .route("/books", get(client::search).post(client::add_book))
        .route("/books/{id}", get(client::lookup).patch(client::update_book))
        .route("/books/{id}/buy", post(client::buy))
        .route("/books/{id}/restock", post(client::restock))
        .route("/orders", get(client::orders))
        .route("/orders/{id}", get(client::order))
        .route("/health", get(admin::health))
        .route("/cluster", get(admin::cluster))
        .route("/metrics", get(metrics::render))
        .route("/watch", get(watch::watch))
        .route("/admin/digest", get(admin::digest))
        .route("/admin/backup", get(admin::backup))
        .route("/admin/init", post(admin::init))
        .route("/admin/{group}/add-learner", post(admin::add_learner))
        .route("/admin/{group}/change-membership", post(admin::change_membership))
        .route("/admin/{group}/remove-node", post(admin::remove_node))
        .route("/admin/{group}/transfer-leader", post(admin::transfer_leader))
        .route("/admin/{group}/snapshot", post(admin::snapshot))
        .layer(DefaultBodyLimit::max(CLIENT_BODY_LIMIT));
    let raft = Router::new()
        .route("/raft/identity", get(raft::identity))
        .route("/raft/{group}/snapshot", post(raft::snapshot))
        .route("/raft/{group}/{rpc}", post(raft::rpc))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT));
    // Request counters and latencies, kept by the router: `/metrics` shows them.
    let http_metrics = Arc::new(metrics::HttpMetrics::default());
    let shutdown = node.shutdown.clone();
    let mux_node = node.clone();
    let routes = Router::new()
        .merge(client)
        .merge(raft)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::Extension(http_metrics.clone()))
        .layer(axum::middleware::from_fn_with_state(http_metrics, metrics::track))
        .with_state(node);
    // The frontend's calls and the peers' Raft RPCs arrive multiplexed on
    // one upgraded connection per caller (see `bazar_net::mux`) and are
    // served by the same routes.
    let served = routes.clone();
    routes.route(
        bazar_net::mux::PATH,
        get(move |request: axum::extract::Request| {
            let stopping = shutdown.clone().cancelled_owned();
            let served = served.clone();
            async move {
                let (parts, body) = request.into_parts();
                let limits = match auth::mux_caller(&parts, &mux_node) {
                    Ok(limits) => limits,
                    Err(refused) => return refused.into_response(),
                };
                let request = axum::extract::Request::from_parts(parts, body);
                bazar_net::mux::accept(request, served, limits, stopping).into_response()
            }
        }),
    )
}
