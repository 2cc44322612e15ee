//! Raft RPCs between nodes: the server side (see [`crate::raft::network`]).
//!
//! `POST /raft/{group}/{rpc}` with a postcard body, where `rpc` is `append`,
//! `vote`, `pre-vote`, `transfer-leader`, `write` (a write forwarded to the
//! leader) or `read-index` (a read index for a follower read); and
//! `POST /raft/{group}/snapshot`, a streamed snapshot; `GET /raft/identity`,
//! who this node is (id, incarnation), asked before a node is made a member.
//! All need the cluster token.
//!
//! The RPCs that make this node count as a member (append, vote, pre-vote,
//! transfer-leader, snapshot) are checked first (`guard`): when the sender
//! has another incarnation of this node on record, this node is not the
//! member it believes (its data directory was lost) and answers `409` with
//! its own incarnation in the `x-bazar-incarnation` header, without handing
//! the RPC to openraft. See [`crate::incarnation`].
//!
//! For a lease period after the node started, it grants no vote or
//! pre-vote (`503`), except for a leadership transfer, which the leader
//! itself asked for: see [`Node::vote_quarantine_left`].

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bazar_api::Group;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use super::auth::Peer;
use crate::incarnation::{self, Check, Identity};
use crate::node::Node;
use crate::raft::network::{POSTCARD, read_snapshot_header};
use crate::raft::{Forwarded, RaftGroup, ReadKind};
use crate::sm::{GroupSnapshot, SnapshotData, StateMachine};
use crate::store::log::{decode, encode};
use openraft::raft::VoteRequest;

fn postcard<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(bytes) => ([(axum::http::header::CONTENT_TYPE, POSTCARD)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn failure(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, e.to_string()).into_response()
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Box<Response>> {
    decode(bytes).map_err(|e| Box::new(failure(StatusCode::BAD_REQUEST, format!("undecodable RPC body: {e}"))))
}

fn respond<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Response {
    match result {
        Ok(v) => postcard(&v),
        Err(e) => failure(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `GET /raft/identity`: this node's id and incarnation.
pub async fn identity(_: Peer, State(node): State<Arc<Node>>) -> Json<Identity> {
    let initialized = node.catalog.raft().is_initialized().await.unwrap_or(false)
        && node.orders.raft().is_initialized().await.unwrap_or(false);
    Json(Identity { node_id: node.id, incarnation: incarnation::hex(node.incarnation), initialized })
}

/// Refuses an RPC whose sender knows this node as another incarnation.
fn guard(node: &Node, group: Group, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let expected = headers.get(incarnation::HEADER).map(|v| v.to_str().unwrap_or("unreadable"));
    let from =
        headers.get(incarnation::FROM_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    match incarnation::check(expected, node.incarnation) {
        Check::Unknown => Ok(()),
        Check::Match => {
            node.peers.alarms().accepted_from();
            Ok(())
        }
        Check::Mismatch { expected } => {
            node.peers.alarms().refused(node.id, group, from, expected, node.incarnation);
            let body = format!(
                "node {} lost its state: it is incarnation {}, node {from} has incarnation {} on record; \
                 it neither votes nor acknowledges as that member. Recovery: {}",
                node.id,
                incarnation::hex(node.incarnation),
                incarnation::hex(expected),
                incarnation::recovery(node.id),
            );
            Err(Box::new(
                (StatusCode::CONFLICT, [(incarnation::HEADER, incarnation::hex(node.incarnation))], body)
                    .into_response(),
            ))
        }
    }
}

/// `POST /raft/{group}/{rpc}`
pub async fn rpc(
    _: Peer,
    State(node): State<Arc<Node>>,
    Path((group, rpc)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let group = match group.parse::<Group>() {
        Ok(g) => g,
        Err(e) => return failure(StatusCode::NOT_FOUND, e),
    };
    if matches!(rpc.as_str(), "append" | "vote" | "pre-vote" | "transfer-leader")
        && let Err(refused) = guard(&node, group, &headers)
    {
        return *refused;
    }
    match group {
        Group::Catalog => dispatch(&node, &node.catalog, &rpc, &bytes).await,
        Group::Orders => dispatch(&node, &node.orders, &rpc, &bytes).await,
    }
}

async fn dispatch<S: StateMachine>(node: &Node, g: &RaftGroup<S>, rpc: &str, bytes: &[u8]) -> Response {
    let raft = g.raft();
    let result = async {
        Ok::<Response, Box<Response>>(match rpc {
            "append" => respond(raft.append_entries(body(bytes)?).await),
            "vote" | "pre-vote" => {
                let req: VoteRequest<S::C> = body(bytes)?;
                if !req.leadership_transfer
                    && let Some(wait) = node.vote_quarantine_left()
                {
                    return Ok(failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "node {} restarted moments ago and votes only in {} ms, once any leader lease it \
                             granted before has expired",
                            node.id,
                            wait.as_millis()
                        ),
                    ));
                }
                if rpc == "vote" { respond(raft.vote(req).await) } else { respond(raft.pre_vote(req).await) }
            }
            "transfer-leader" => respond(raft.handle_transfer_leader(body(bytes)?).await),
            "write" => postcard(&g.serve_forwarded_write(body(bytes)?, node.deadline()).await),
            "read-index" => {
                let kind: ReadKind = body(bytes)?;
                // Shared with the reads this leader serves itself and with
                // the other followers' requests waiting at the same time.
                let answer = if !g.is_leader() {
                    Err(g.not_leader())
                } else {
                    g.shared_read_log_id(kind, node.deadline()).await
                };
                let answer = match answer {
                    Ok(id) => Forwarded::Done(id),
                    Err(crate::error::Error::NotLeader { leader_id, .. }) => Forwarded::NotLeader { leader_id },
                    Err(e) => Forwarded::Unavailable(e.to_string()),
                };
                postcard(&answer)
            }
            other => failure(StatusCode::NOT_FOUND, format!("no Raft RPC {other:?}")),
        })
    };
    match result.await {
        Ok(r) => r,
        Err(r) => *r,
    }
}

/// `POST /raft/{group}/snapshot`: receives a snapshot streamed by the leader
/// into a temporary file, then hands it to openraft to install.
pub async fn snapshot(
    _: Peer,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let group = match group.parse::<Group>() {
        Ok(g) => g,
        Err(e) => return failure(StatusCode::NOT_FOUND, e),
    };
    if let Err(refused) = guard(&node, group, &headers) {
        return *refused;
    }
    match group {
        Group::Catalog => receive_snapshot(&node.catalog, body).await,
        Group::Orders => receive_snapshot(&node.orders, body).await,
    }
}

async fn receive_snapshot<S: StateMachine>(g: &RaftGroup<S>, body: Body) -> Response {
    let stream = body.into_data_stream();
    let ((vote, meta), head, mut rest) = match read_snapshot_header::<S, _, _>(stream).await {
        Ok(parts) => parts,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e),
    };
    let tmp = g.snapshots().temp_path("incoming");
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(&head).await?;
        while let Some(chunk) = rest.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?).await?;
        }
        file.sync_all().await?;
        SnapshotData::open(tmp.clone())
    };
    let data = match written.await {
        Ok(d) => d,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return failure(StatusCode::BAD_REQUEST, format!("receiving snapshot: {e}"));
        }
    };
    let result = g.raft().install_full_snapshot(vote, GroupSnapshot { meta, snapshot: data }).await;
    // Installing moved the file into place; if it was refused, it is still here.
    let _ = tokio::fs::remove_file(&tmp).await;
    respond(result)
}
