//! Health, cluster status, digests, and the admin calls an operator (or
//! `bazar cluster ...`) makes: membership changes, leadership transfers and
//! snapshots. The work itself is in [`crate::membership`]; this module only
//! parses, dispatches on the group, and answers with the node's view of the
//! cluster afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bazar_api::{
    AddLearnerRequest, ChangeMembershipRequest, ClusterStatus, Digest, Group, InitRequest, NodeHealth,
    RemoveNodeRequest, TransferLeaderRequest,
};

use super::auth::Admin;
use super::client::Params;
use super::error::{AppError, JsonBody, OptionalJsonBody};
use crate::error::Error;
use crate::incarnation::Member;
use crate::membership;
use crate::node::Node;

/// `GET /health`: liveness, and whether the cluster is formed and seeded;
/// `503` when the node cannot read its storage. `unclaimed_buys` is at most
/// a quarter second old; `?fresh=true` (admin token) counts it now.
pub async fn health(
    State(node): State<Arc<Node>>,
    admin: Result<Admin, AppError>,
    params: Params,
) -> Result<Json<NodeHealth>, AppError> {
    let fresh = match params.0.get("fresh").map(String::as_str) {
        None | Some("false") => false,
        Some("true") if admin.is_ok() => true,
        Some("true") => {
            return Err(AppError::from_problem(bazar_api::Problem::new(
                bazar_api::ErrorCode::Unauthorized,
                "?fresh=true needs Authorization: Bearer <admin token>",
            )));
        }
        Some(other) => return Err(AppError::invalid(format!("fresh must be true or false, not {other:?}"))),
    };
    Ok(Json(node.health(fresh).await?))
}

/// `GET /cluster`: both groups as this node sees them.
pub async fn cluster(State(node): State<Arc<Node>>) -> Json<ClusterStatus> {
    Json(node.cluster_status())
}

fn group_param(params: &Params) -> Result<Group, AppError> {
    match params.0.get("group") {
        None => Err(AppError::invalid("missing ?group=catalog|orders")),
        Some(g) => g.parse().map_err(AppError::invalid),
    }
}

fn group_path(group: &str) -> Result<Group, AppError> {
    group.parse().map_err(AppError::invalid)
}

/// `GET /admin/digest?group=G` (admin): a hash of the local replica's state machine.
pub async fn digest(_: Admin, State(node): State<Arc<Node>>, params: Params) -> Result<Json<Digest>, AppError> {
    let group = group_param(&params)?;
    let node2 = node.clone();
    let (applied_index, (digest, rows)) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let g = node2.group(group);
        let view = g.view();
        Ok((view.applied_index()?, view.digest_and_rows(|prefix| g.row_kind(prefix))?))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Json(Digest { group, node_id: node.id, applied_index, digest, rows }))
}

/// `POST /admin/init` (admin): initialize both groups with the given voters.
/// Only for a cluster whose nodes were started without `--initial-cluster`.
/// Every member must be running: its incarnation is recorded.
pub async fn init(
    _: Admin,
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<InitRequest>,
) -> Result<Json<ClusterStatus>, AppError> {
    if req.members.is_empty() || !req.members.contains_key(&node.id) {
        return Err(AppError::invalid("members must include this node"));
    }
    // Every member's incarnation goes into the first membership (see
    // `crate::incarnation`): each must be up and answer.
    let mut nodes: BTreeMap<u64, Member> = BTreeMap::new();
    for (id, addr) in &req.members {
        membership::check_addr(addr)?;
        let incarnation =
            if *id == node.id { node.incarnation } else { membership::identify(&node.peers, *id, addr).await? };
        nodes.insert(*id, Member::new(addr.clone(), Some(incarnation)));
    }
    for group in Group::ALL {
        node.group(group).initialize(nodes.clone()).await?;
    }
    Ok(Json(node.cluster_status()))
}

/// `POST /admin/{group}/add-learner` (admin), on the group's leader: starts
/// replicating the group to a new node, which does not vote yet. The node
/// must be running (it is asked its id and incarnation first). With
/// `"blocking": false` it answers at once; the learner's progress is then in
/// the leader's `GET /cluster` (`replication`); otherwise it answers once
/// the learner holds the entry that added it (`503` after the request
/// timeout, the learner still catching up).
pub async fn add_learner(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    JsonBody(req): JsonBody<AddLearnerRequest>,
) -> Result<Json<ClusterStatus>, AppError> {
    node.group(group_path(&group)?).add_learner(&req, node.request_timeout()).await?;
    Ok(Json(node.cluster_status()))
}

/// `POST /admin/{group}/change-membership` (admin), on the group's leader:
/// sets the group's voters (new ones must be learners already), through a
/// joint configuration.
pub async fn change_membership(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    JsonBody(req): JsonBody<ChangeMembershipRequest>,
) -> Result<Json<ClusterStatus>, AppError> {
    node.group(group_path(&group)?).change_membership(&req).await?;
    Ok(Json(node.cluster_status()))
}

/// `POST /admin/{group}/remove-node` (admin), on the group's leader: drops a
/// voter (through a joint configuration) or a learner. The leader refuses to
/// remove itself (`409`): transfer leadership first.
pub async fn remove_node(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    JsonBody(req): JsonBody<RemoveNodeRequest>,
) -> Result<Json<ClusterStatus>, AppError> {
    node.group(group_path(&group)?).remove_node(req.node_id).await?;
    Ok(Json(node.cluster_status()))
}

/// `POST /admin/{group}/transfer-leader` (admin), on the group's leader:
/// hands leadership to `to` (by default the most up-to-date live voter) and
/// answers once another node leads, or `503` if that takes longer than the
/// request timeout.
pub async fn transfer_leader(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<TransferLeaderRequest>,
) -> Result<Json<ClusterStatus>, AppError> {
    let group = group_path(&group)?;
    node.transfer_leadership(group, req.to, node.request_timeout()).await?;
    Ok(Json(node.cluster_status()))
}

/// `POST /admin/{group}/snapshot` (admin), on any member: builds a snapshot of
/// this node's replica now (openraft then purges the log behind it, keeping
/// `--snapshot-keep-logs` entries) and answers once it is built, or `503`
/// after the request timeout (the build goes on).
pub async fn snapshot(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
) -> Result<Json<ClusterStatus>, AppError> {
    node.group(group_path(&group)?).snapshot_now(node.request_timeout()).await?;
    Ok(Json(node.cluster_status()))
}

/// `GET /admin/backup`: a backup of both groups, streamed (see
/// [`crate::backup`]); only the orders leader serves it.
pub async fn backup(_: Admin, State(node): State<Arc<Node>>) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let chunks = crate::backup::stream(node).await?;
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}
