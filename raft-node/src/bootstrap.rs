//! First start of a cluster: initializing both groups once, and loading the
//! initial catalog once.
//!
//! Initialization is done by exactly one node, the lowest id of
//! `--initial-cluster`, and only when its own groups are uninitialized *and*
//! every founding member answers that it is uninitialized too. A node whose
//! data was wiped therefore never founds a second cluster next to the running
//! one: it finds an initialized peer, stays uninitialized, and receives its
//! data from the leader (as a snapshot) like any new member (once it was
//! removed and added back: see [`crate::incarnation`]).
//!
//! The founder asks each founding member over the cluster-token route
//! `GET /raft/identity`, which also tells it their incarnations: the initial
//! membership records every founding member's incarnation, so that from its
//! first entry on, a founding member that later loses its data directory is
//! refused as the member it was.
//!
//! Seeding is done by the same node, through the catalog leader, in chunks of
//! insert-if-absent commands followed by a `SeedComplete` marker. If the node
//! crashes half way, it simply starts over on restart: chunks already applied
//! insert nothing, and books changed since (bought, restocked) are untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bazar_api::Consistency;
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogCommand};
use crate::incarnation::{self, Incarnation, Member};
use crate::node::Node;

/// Books per seed command: small enough for a quick Raft round, large enough
/// that a million books take a few hundred entries.
const SEED_CHUNK: usize = 2_000;

/// Initializes the cluster if this node founds it, then seeds the catalog.
pub async fn run(node: Arc<Node>) {
    let founder = node.config.initial_cluster.keys().next().copied() == Some(node.id);
    if !founder {
        return;
    }
    tokio::select! {
        _ = node.shutdown.cancelled() => {}
        _ = async {
            initialize(&node).await;
            seed(&node).await;
        } => {}
    }
}

async fn initialize(node: &Node) {
    let catalog_ready = node.catalog.raft().is_initialized().await.unwrap_or(true);
    let orders_ready = node.orders.raft().is_initialized().await.unwrap_or(true);
    if catalog_ready && orders_ready {
        return;
    }
    let members = &node.config.initial_cluster;
    let mut last_log = Instant::now() - Duration::from_secs(60);
    let incarnations = loop {
        match peers_uninitialized(node, members).await {
            Ok(Some(incarnations)) => break incarnations,
            Ok(None) => {
                tracing::warn!(
                    "a founding member is already initialized: joining the existing cluster instead of founding one"
                );
                return;
            }
            Err(waiting_for) => {
                if last_log.elapsed() > Duration::from_secs(5) {
                    tracing::info!(waiting_for = ?waiting_for, "waiting for every founding member before initializing");
                    last_log = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let nodes: BTreeMap<u64, Member> =
        members.iter().map(|(id, addr)| (*id, Member::new(addr.clone(), incarnations.get(id).copied()))).collect();
    if !catalog_ready {
        match node.catalog.raft().initialize(nodes.clone()).await {
            Ok(()) => tracing::info!(members = ?members, "initialized the catalog group"),
            Err(e) => tracing::warn!(error = %e, "initializing the catalog group"),
        }
    }
    if !orders_ready {
        match node.orders.raft().initialize(nodes).await {
            Ok(()) => tracing::info!(members = ?members, "initialized the orders group"),
            Err(e) => tracing::warn!(error = %e, "initializing the orders group"),
        }
    }
}

/// `Ok(Some(incarnations))` (every founding member's, this node's
/// included) when every other founding member answers uninitialized,
/// `Ok(None)` when one is initialized, `Err(ids)` naming those not
/// answering (or answering as another node id).
async fn peers_uninitialized(
    node: &Node,
    members: &BTreeMap<u64, String>,
) -> Result<Option<BTreeMap<u64, Incarnation>>, Vec<u64>> {
    let mut silent = Vec::new();
    let mut incarnations = BTreeMap::from([(node.id, node.incarnation)]);
    for (&id, addr) in members {
        if id == node.id {
            continue;
        }
        match node.peers.identity(addr, Duration::from_secs(1)).await {
            Ok(who) if who.node_id != id => {
                tracing::warn!(addr = %addr, expected = id, found = who.node_id, "a founding member's address answers as another node");
                silent.push(id);
            }
            Ok(who) if who.initialized => return Ok(None),
            Ok(who) => match incarnation::parse_hex(&who.incarnation) {
                Some(i) => {
                    incarnations.insert(id, i);
                }
                None => silent.push(id),
            },
            Err(_) => silent.push(id),
        }
    }
    if silent.is_empty() { Ok(Some(incarnations)) } else { Err(silent) }
}

async fn seed(node: &Node) {
    let source = &node.config.seed;
    let mut pause = Duration::from_millis(100);
    loop {
        // Ask the cluster, not the local replica, which may be behind.
        let deadline = Instant::now() + node.request_timeout();
        match node.catalog.linearize(Consistency::Linearizable, deadline).await {
            Ok(()) => match Catalog::is_seeded(&node.catalog.view()) {
                Ok(true) => return,
                Ok(false) => break,
                Err(e) => tracing::error!(error = %e, "reading the seed marker"),
            },
            Err(e) => tracing::debug!(error = %e, "waiting for the catalog group before seeding"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }

    let started = Instant::now();
    let total = source.len();
    let mut done = 0u64;
    let mut inserted = 0u64;
    let mut last_log = Instant::now();
    for chunk in source.chunks(SEED_CHUNK) {
        let n = chunk.len() as u64;
        let cmd = CatalogCommand::Seed { books: chunk };
        inserted += propose_until_done(node, cmd).await;
        done += n;
        if last_log.elapsed() > Duration::from_secs(2) || done == total {
            tracing::info!(done, total, "seeding the catalog");
            last_log = Instant::now();
        }
    }
    propose_until_done(node, CatalogCommand::SeedComplete).await;
    tracing::info!(total, inserted, millis = started.elapsed().as_millis() as u64, "catalog seeded");
}

/// Proposes an idempotent seed command until it is applied; returns the books inserted.
async fn propose_until_done(node: &Node, cmd: CatalogCommand) -> u64 {
    loop {
        let deadline = Instant::now() + Duration::from_secs(30);
        match node.catalog.write_anywhere(cmd.clone(), deadline).await {
            Ok(committed) => match committed.response {
                crate::catalog::CatalogResponse::Seeded { inserted } => return inserted,
                _ => return 0,
            },
            Err(e) => {
                tracing::warn!(error = %e, "seeding: retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
