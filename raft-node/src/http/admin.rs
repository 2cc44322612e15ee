//! Health, cluster status, digests and membership administration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bazar_api::{ClusterStatus, Digest, Group, InitRequest, NodeHealth};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::client::Params;
use super::error::{AppError, JsonBody};
use crate::error::Error;
use crate::node::Node;
use crate::raft::RaftGroup;
use crate::sm::StateMachine;

/// `GET /health`: liveness, and whether the cluster is formed and seeded.
pub async fn health(State(node): State<Arc<Node>>) -> Json<NodeHealth> {
    Json(node.health().await)
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
    let (applied_index, digest) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let view = match group {
            Group::Catalog => node2.catalog.view(),
            Group::Orders => node2.orders.view(),
        };
        Ok((view.applied_index()?, view.digest()?))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Json(Digest { group, node_id: node.id, applied_index, digest }))
}

/// `POST /admin/init` (admin): initialize both groups with the given voters.
/// Only for a cluster whose nodes were started without `--initial-cluster`.
pub async fn init(
    _: Admin,
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<InitRequest>,
) -> Result<Json<ClusterStatus>, AppError> {
    if req.members.is_empty() || !req.members.contains_key(&node.id) {
        return Err(AppError::invalid("members must include this node"));
    }
    let nodes: BTreeMap<u64, BasicNode> = req.members.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
    for group in Group::ALL {
        let result = match group {
            Group::Catalog => node.catalog.raft().initialize(nodes.clone()).await.map_err(|e| e.to_string()),
            Group::Orders => node.orders.raft().initialize(nodes.clone()).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            return Err(Error::Conflict(format!("cannot initialize the {group} group: {e}")).into());
        }
    }
    Ok(Json(node.cluster_status()))
}

/// Body of `POST /admin/{group}/add-learner`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearner {
    /// The new node's id.
    pub node_id: u64,
    /// Its address.
    pub addr: String,
    /// Wait until it has caught up with the leader.
    #[serde(default = "yes")]
    pub blocking: bool,
}

fn yes() -> bool {
    true
}

/// Body of `POST /admin/{group}/change-membership`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMembership {
    /// The voters after the change.
    pub voters: BTreeSet<u64>,
    /// Keep removed voters as learners.
    #[serde(default)]
    pub retain: bool,
}

async fn add_learner_to<S: StateMachine>(g: &RaftGroup<S>, req: &AddLearner) -> Result<(), AppError> {
    if !g.is_leader() {
        return Err(g.not_leader().into());
    }
    g.raft()
        .add_learner(req.node_id, BasicNode::new(&req.addr), req.blocking)
        .await
        .map(|_| ())
        .map_err(|e| Error::Conflict(format!("adding learner {}: {e}", req.node_id)).into())
}

async fn change_membership_of<S: StateMachine>(g: &RaftGroup<S>, req: &ChangeMembership) -> Result<(), AppError> {
    if !g.is_leader() {
        return Err(g.not_leader().into());
    }
    g.raft()
        .change_membership(req.voters.clone(), req.retain)
        .await
        .map(|_| ())
        .map_err(|e| Error::Conflict(format!("changing membership: {e}")).into())
}

/// `POST /admin/{group}/add-learner` (admin), on the group's leader.
pub async fn add_learner(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    JsonBody(req): JsonBody<AddLearner>,
) -> Result<Json<ClusterStatus>, AppError> {
    match group_path(&group)? {
        Group::Catalog => add_learner_to(&node.catalog, &req).await?,
        Group::Orders => add_learner_to(&node.orders, &req).await?,
    }
    Ok(Json(node.cluster_status()))
}

/// `POST /admin/{group}/change-membership` (admin), on the group's leader.
pub async fn change_membership(
    _: Admin,
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    JsonBody(req): JsonBody<ChangeMembership>,
) -> Result<Json<ClusterStatus>, AppError> {
    if req.voters.is_empty() {
        return Err(AppError::invalid("voters must not be empty"));
    }
    match group_path(&group)? {
        Group::Catalog => change_membership_of(&node.catalog, &req).await?,
        Group::Orders => change_membership_of(&node.orders, &req).await?,
    }
    Ok(Json(node.cluster_status()))
}
