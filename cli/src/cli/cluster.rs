//! `bazar cluster ...`: the cluster's state, and changing its members
//! (`add-node`, `rejoin` for a node that lost its state, `remove-node`).
//!
//! These commands talk to the nodes, not to a frontend: `--frontend` may name
//! either (a frontend's `/cluster` lists its nodes, which are then asked),
//! and `--node` names nodes to start from instead. The work is done by
//! [`bazar_client::cluster::ClusterAdmin`]; this module parses, prints progress on
//! stderr (so that `--json` output on stdout stays one document), and prints
//! the cluster as it ends up.

use std::time::Duration;

use bazar_api::{ClusterStatus, Group};
use clap::{Args, Subcommand};
use tokio::time::Instant;

use super::{Failure, GroupArg, Output, pretty, render};
use bazar_client::client::Client;
use bazar_client::cluster::{AddNodeOptions, ClusterAdmin, Progress};

/// `bazar cluster` and its options.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A node to start from, as host:port (repeatable) [default: --frontend,
    /// or the nodes a frontend there lists].
    #[arg(long, global = true, value_name = "ADDR")]
    pub node: Vec<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show each group's leader, term, last log index, commit and applied
    /// index, and every member's role, progress and replication lag.
    ///
    /// Asks every node it can find (a short deadline each) and marks those
    /// that do not answer as unreachable.
    Status {
        /// Show only the addressed node's own view (its /cluster), not the
        /// whole cluster's.
        #[arg(long)]
        local: bool,
    },
    /// Add a node to both groups: as a learner, then, once it has caught up
    /// (from a snapshot if the log it needs was purged), as a voter.
    ///
    /// Start the node first, empty, with its own --id and --advertise (its
    /// --initial-cluster is ignored unless its id is the lowest there: give
    /// it the current members). Running add-node again after an
    /// interruption finishes the job.
    AddNode {
        /// The new node's id (never the id of a current member).
        id: u64,
        /// The address its peers reach it at (its --advertise), host:port.
        addr: String,
        /// Leave it a learner: it receives the log and serves reads, but does
        /// not vote.
        #[arg(long)]
        learner: bool,
        /// Longest time to wait for it to catch up, seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        wait: u64,
    },
    /// Bring back a node that lost its state (restarted with an empty or
    /// replaced data directory, same id): its peers refuse it until it is
    /// removed and added back, which this does in one go.
    ///
    /// Start the node first (same --id, --advertise and tokens). Removes the
    /// member the groups still record (a voter frozen at its old position),
    /// adds the node back as a learner with its new incarnation, waits until
    /// it has caught up, and makes it a voter. Running it again after an
    /// interruption finishes the job; on a healthy member it changes nothing.
    /// The other voters must form a quorum without it.
    Rejoin {
        /// The node's id.
        id: u64,
        /// Its address [default: the address the membership records].
        #[arg(long, value_name = "ADDR")]
        addr: Option<String>,
        /// Leave it a learner.
        #[arg(long)]
        learner: bool,
        /// Longest time for the whole operation, catching up included, seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        wait: u64,
    },
    /// Remove a node from both groups, moving leadership away from it first
    /// where it leads. Stop the node afterwards.
    RemoveNode {
        /// The node's id.
        id: u64,
        /// Longest time for the whole removal, seconds.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        wait: u64,
    },
    /// Hand a group's leadership to another voter, at once (no election
    /// timeout): before maintenance of the leader's host, or to balance
    /// the two groups' leaders over different nodes.
    TransferLeader {
        /// Which group.
        #[arg(value_enum)]
        group: GroupArg,
        /// The voter to lead [default: the most up-to-date live voter].
        #[arg(long, value_name = "ID")]
        to: Option<u64>,
    },
    /// Build a snapshot on every member now, which also lets each one purge
    /// its log behind it (keeping --snapshot-keep-logs entries).
    Snapshot {
        /// Which group [default: both].
        #[arg(value_enum)]
        group: Option<GroupArg>,
    },
}

/// Runs a cluster command.
pub(super) async fn execute(args: &ClusterArgs, client: &Client, out: &Output) -> Result<(), Failure> {
    let seeds = if args.node.is_empty() { vec![client.base_url().to_string()] } else { args.node.clone() };
    let admin = ClusterAdmin::new(client.clone(), seeds);
    let started = std::time::Instant::now();
    let mut progress = |p: &Progress| eprintln!("[{:6.1}s] {p}", started.elapsed().as_secs_f64());
    match &args.command {
        ClusterCommand::Status { local: true } => {
            let value = client.cluster().await?;
            // A node answers a ClusterStatus; a frontend its own document,
            // which we show as it is.
            match serde_json::from_value::<ClusterStatus>(value.clone()) {
                Ok(status) if !out.json => out.text(&render::cluster_status(&status)),
                _ => out.value_or(&value, || pretty(&value)),
            }
        }
        ClusterCommand::Status { local: false } => {
            let view = admin.status().await?;
            out.value_or(&view, || render::cluster_view(&view));
        }
        ClusterCommand::AddNode { id, addr, learner, wait } => {
            let options = AddNodeOptions { promote: !learner, deadline: Duration::from_secs(*wait) };
            let view = admin.add_node(*id, addr, options, &mut progress).await?;
            let role = if *learner { "learner" } else { "voter" };
            progress_done(&format!("node {id} is a {role} of both groups"), started);
            out.value_or(&view, || render::cluster_view(&view));
        }
        ClusterCommand::Rejoin { id, addr, learner, wait } => {
            let options = AddNodeOptions { promote: !learner, deadline: Duration::from_secs(*wait) };
            let view = admin.rejoin(*id, addr.as_deref(), options, &mut progress).await?;
            let role = if *learner { "learner" } else { "voter" };
            progress_done(&format!("node {id} rejoined both groups as a {role} with its current state"), started);
            out.value_or(&view, || render::cluster_view(&view));
        }
        ClusterCommand::RemoveNode { id, wait } => {
            let view = admin.remove_node(*id, Duration::from_secs(*wait), &mut progress).await?;
            progress_done(&format!("node {id} is no longer a member; it can be stopped"), started);
            out.value_or(&view, || render::cluster_view(&view));
        }
        ClusterCommand::TransferLeader { group, to } => {
            let group: Group = (*group).into();
            let deadline = Instant::now() + client.timeout();
            let leader = admin.transfer_leader(group, *to, deadline, &mut progress).await?;
            progress_done(&format!("{group}: node {leader} leads"), started);
            let view = admin.status().await?;
            out.value_or(&view, || render::cluster_view(&view));
        }
        ClusterCommand::Snapshot { group } => {
            let groups = match group {
                Some(g) => vec![(*g).into()],
                None => Group::ALL.to_vec(),
            };
            let mut rows = Vec::new();
            for group in groups {
                for (node, answer) in admin.snapshot(group).await? {
                    let (snapshot_index, error) = match answer {
                        Ok(g) => (g.snapshot_index, None),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    rows.push(render::SnapshotRow { group, node, snapshot_index, error });
                }
            }
            let failed = rows.iter().any(|r| r.error.is_some());
            out.value_or(&rows, || render::snapshots_table(&rows));
            if failed {
                let problem = bazar_api::Problem::new(
                    bazar_api::ErrorCode::Unavailable,
                    "some members did not build a snapshot (see the table)",
                );
                return Err(Failure::from(bazar_client::error::ClientError::Problem(Box::new(problem))));
            }
        }
    }
    Ok(())
}

fn progress_done(what: &str, started: std::time::Instant) {
    eprintln!("[{:6.1}s] done: {what}", started.elapsed().as_secs_f64());
}
