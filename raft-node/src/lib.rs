//! A Bazar replica.
//!
//! One `raft-node` process hosts a member of each of Bazar's two Raft groups
//! (openraft): the **catalog** (books and stock) and the **orders**. Both
//! groups keep their logs and state machines in one RocksDB instance, and one
//! HTTP server carries the client API, the admin API, the change-event stream
//! and both groups' Raft RPCs.
//!
//! Where to find what:
//! - [`store`]: RocksDB, column families, the durable Raft log with group commit;
//! - [`types`]: the Raft vocabulary both groups share: node ids, members, log ids;
//! - [`sm`]: the state-machine contract, write batching, snapshots;
//! - [`catalog`], [`orders`]: the two state machines; [`compat`]: reading what earlier versions
//!   stored (its version table; each group keeps its old layouts in its own `compat`);
//! - [`raft`]: a group on this node, its network, leader forwarding and follower reads;
//! - [`buy`]: the buy protocol across the two groups and recovery of interrupted buys;
//! - [`retention`]: forgetting idempotency keys after their window, in both groups;
//! - [`placement`]: keeping the catalog's leadership with the orders leader;
//! - [`http`]: the HTTP edge (routes, errors as problem+json, auth, `/watch`, metrics);
//! - [`membership`]: adding and removing members, moving leadership;
//! - [`incarnation`]: telling a member from a node with its id that lost its state;
//! - [`stats`]: the counters and histograms behind `/metrics`;
//! - [`bootstrap`], [`seed`]: founding a cluster and loading its first books;
//! - [`listen`]: serving on more than one address (clients', peers').
//!
//! [`run`] is the node's life: open, serve (neither voting nor campaigning
//! for a lease period after the start, see [`Node::vote_quarantine_left`]),
//! and on shutdown hand leadership
//! off before it stops serving, so that its peers need not wait out an
//! election timeout. [`init_tracing`] sets up its logs: every line names the
//! node, in text or JSON.

#![warn(missing_docs)]

pub mod backup;
pub mod bootstrap;
pub mod buy;
pub mod catalog;
pub mod compaction;
pub mod compat;
pub mod config;
pub mod error;
pub mod group;
pub mod http;
pub mod incarnation;
pub mod listen;
pub mod membership;
pub mod node;
pub mod orders;
pub mod placement;
pub mod raft;
pub mod retention;
pub mod seed;
pub mod sm;
pub mod stats;
pub mod store;
pub mod timing;
pub mod types;
pub mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bazar_api::Group;
use tokio_util::sync::CancellationToken;

pub use config::{Args, NodeConfig};
pub use error::{Error, Result};
pub use listen::Listeners;

use crate::catalog::Catalog;
use crate::node::Node;
use crate::orders::Orders;
use crate::raft::RaftGroup;
use crate::raft::network::Peers;
use crate::store::Store;

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The `raft-node` binary: parses the command line, sets up logging, and
/// runs the node on a multi-threaded runtime until SIGTERM or Ctrl-C. Here
/// rather than in the binary so that the binary compiles nothing of its own
/// (see [`run`]).
pub fn main() -> anyhow::Result<()> {
    use clap::Parser as _;

    let args = Args::parse();
    let log_format = args.log_format;
    let config = args.resolve()?;
    init_tracing(log_format, config.id);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let listener = Listeners::bind(&config.listen).await?;
        run(config, listener, bazar_net::shutdown_signal()).await
    })
}

/// Runs a node on `listener` (one or more, see [`Listeners`]) until `shutdown` resolves; then hands off the
/// leadership of the groups it leads (see [`Node::hand_off_leadership`]),
/// stops serving, lets requests in flight finish (for up to five seconds),
/// and shuts both Raft groups down.
pub async fn run(
    config: NodeConfig,
    listener: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(config, listener.into(), Box::pin(shutdown)).await
}

/// [`run`] with its arguments made concrete. Release builds do not share
/// generic instantiations between crates, so a generic `run` was the whole
/// node compiled again into every binary and test that starts one (about
/// 90 s of CPU each on two cores); this one is compiled once, here.
async fn serve(
    config: NodeConfig,
    listener: Listeners,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let store = if config.planted_bug == Some(crate::config::PlantedBug::NoFsync) {
        tracing::warn!("planted bug no-fsync: nothing is synced to disk; a power loss loses acknowledged writes");
        Store::open_unsynced(&config.data_dir)?
    } else {
        Store::open(&config.data_dir)?
    };
    if let Some(path) = &config.restore {
        if incarnation::stored(&store)?.is_none() && backup::restorable(&store)? {
            let (manifest, restored) = backup::restore(&store, path, config.id, &config.initial_cluster)?;
            backup::finish(&store, restored)?;
            let groups: Vec<String> = manifest
                .groups
                .iter()
                .map(|g| format!("{} at index {} ({} rows)", g.group, g.applied_index, g.rows))
                .collect();
            tracing::info!(
                backup = %path.display(),
                taken = %manifest.created_at,
                groups = %groups.join(", "),
                "seeded this new data directory from the backup"
            );
        } else {
            tracing::info!(backup = %path.display(), "--restore ignored: this data directory already holds a node's state");
        }
    }
    let (incarnation, created) = incarnation::load_or_create(&store)?;
    if created {
        tracing::info!(
            incarnation = %incarnation::hex(incarnation),
            "new data directory: this node's state starts here; if the cluster knew this node id before, \
             its peers will refuse it until `{}`",
            incarnation::recovery(config.id)
        );
    }
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(bazar_net::tls::Tls::load(files).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let peers = Peers::new(config.cluster_token.clone(), config.peer_source_ip, tls.clone());
    let catalog = RaftGroup::<Catalog>::open(
        config.id,
        Arc::new(config.raft_config(Group::Catalog)?),
        config.read_lease,
        store.clone(),
        &config.data_dir,
        peers.clone(),
    )
    .await?;
    let orders = RaftGroup::<Orders>::open(
        config.id,
        Arc::new(config.raft_config(Group::Orders)?),
        config.read_lease,
        store.clone(),
        &config.data_dir,
        peers.clone(),
    )
    .await?;
    let stopped = CancellationToken::new();
    let buy = Arc::new(buy::Coordinator::new(
        catalog.clone(),
        orders.clone(),
        config.request_timeout,
        stopped.clone(),
        config.planted_bug,
    ));
    let node = Arc::new(Node {
        id: config.id,
        addr: config.advertise.clone(),
        incarnation,
        catalog,
        orders,
        store,
        peers,
        config,
        buy,
        retention: Default::default(),
        unclaimed: Default::default(),
        shutdown: stopped,
        started: std::time::Instant::now(),
    });
    // No campaign during the vote quarantine either (see
    // `Node::vote_quarantine_left`): a candidate votes for itself.
    node.catalog.raft().runtime_config().elect(false);
    node.orders.raft().runtime_config().elect(false);
    let quarantined = node.clone();
    let quarantine = tokio::spawn(async move {
        tokio::time::sleep(quarantined.vote_quarantine()).await;
        quarantined.catalog.raft().runtime_config().elect(true);
        quarantined.orders.raft().runtime_config().elect(true);
    });
    tracing::info!(
        node_id = node.id,
        addr = %node.addr,
        incarnation = %incarnation::hex(node.incarnation),
        data_dir = %node.config.data_dir.display(),
        "raft node started"
    );

    let mut background = node.buy.start();
    background.extend([
        tokio::spawn(bootstrap::run(node.clone())),
        tokio::spawn(retention::purge_expired(node.clone())),
        tokio::spawn(placement::colocate_leaders(node.clone())),
        tokio::spawn(compaction::pace_snapshots(node.clone())),
    ]);

    let watchdog = tokio::spawn(watch_groups(node.clone()));
    let stopping = node.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down");
                // While the server still carries Raft RPCs: a leader that simply
                // vanished would cost its group an election timeout without writes.
                stopping.hand_off_leadership().await;
                stopping.shutdown.cancel();
            }
            // A group stopped on its own (see `watch_groups`).
            () = stopping.shutdown.cancelled() => {}
        }
    };
    let server = axum::serve(
        listener.with_tls(tls),
        http::app(node.clone()).into_make_service_with_connect_info::<listen::PeerCert>(),
    )
    .with_graceful_shutdown(stop);
    let served = tokio::spawn(async move { server.await });
    node.shutdown.cancelled().await;
    match tokio::time::timeout(DRAIN_TIMEOUT, served).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them"),
    }
    quarantine.abort();
    for task in background {
        task.abort();
    }
    if let Err(e) = node.catalog.raft().shutdown().await {
        tracing::warn!(error = %e, "stopping the catalog group");
    }
    if let Err(e) = node.orders.raft().shutdown().await {
        tracing::warn!(error = %e, "stopping the orders group");
    }
    if let Ok(Some(group)) = watchdog.await {
        anyhow::bail!(
            "the {group} Raft group stopped on an error (logged above); this node stopped with it so that it \
             can be restarted"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits until a group's Raft core stops on its own: openraft stops it for
/// good on a storage error or an internal one, and a node whose core is
/// gone still answers HTTP but never votes, acknowledges or applies in that
/// group again (under faults this cost a group its quorum). The node then
/// stops loudly, to be restarted, instead of lingering; returns that group,
/// or `None` when the node is shut down first.
async fn watch_groups(node: Arc<Node>) -> Option<Group> {
    let group = tokio::select! {
        biased;
        () = node.shutdown.cancelled() => return None,
        () = node.catalog.stopped() => Group::Catalog,
        () = node.orders.stopped() => Group::Orders,
    };
    tracing::error!(%group, "the {group} Raft group stopped; stopping this node so that it can be restarted");
    node.shutdown.cancel();
    Some(group)
}

/// Sets up logging for a node binary: `RUST_LOG` filters (default
/// `info,openraft=warn`), lines go to stderr, and every line names the node,
/// so that the logs of a whole cluster can be merged and still be read.
///
/// - text: `2025-01-01T12:00:00.000000Z  INFO node=1 bazar_node::sm::snapshot: built snapshot group=catalog ...`
/// - JSON: one object per line, `{"node":1,"timestamp":...,"level":"INFO","message":"built snapshot","group":"catalog",...}`
///
/// Bazar's events about one group carry a `group` field. openraft's lines
/// (and those of the state machines, which openraft drives) are emitted
/// inside its `RaftCore` span, whose fields name the node and the group's
/// cluster: `RaftCore{id=1 cluster=bazar-catalog}:main:` in text,
/// `"spans":[{"name":"RaftCore","id":"1","cluster":"bazar-catalog"},{"name":"main"}]`
/// in JSON. Those few spans ([`RAFT_SPANS`]) are debug-level ones, so they are
/// let through whatever the filter says; openraft's other spans and its
/// events still obey `RUST_LOG`.
pub fn init_tracing(format: config::LogFormat, node_id: u64) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let raft_spans = filter_fn(|m| m.is_span() && m.target().starts_with("openraft") && RAFT_SPANS.contains(&m.name()));
    let filter = env.or(raft_spans);
    let layer = match format {
        config::LogFormat::Json => {
            let inner = fmt::format().json().flatten_event(true).with_current_span(false).with_span_list(true);
            fmt::layer()
                .with_writer(std::io::stderr)
                .fmt_fields(fmt::format::JsonFields::new())
                .event_format(logging::WithNode::json(node_id, inner))
                .boxed()
        }
        config::LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            let inner = fmt::format().without_time().with_level(false).with_ansi(ansi);
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .event_format(logging::WithNode::text(node_id, inner))
                .boxed()
        }
    };
    tracing_subscriber::registry().with(layer.with_filter(filter)).init();
    tracing::debug!("logging initialized");
}

/// openraft's spans that name the group a line is about: the Raft core (with
/// the node id and the cluster name), its main loop, the state-machine
/// worker, and replication to one follower (with its id).
pub const RAFT_SPANS: [&str; 4] = ["RaftCore", "main", "sm_worker", "replication"];

/// Log formats that name the node on every line.
mod logging {
    use std::fmt;

    use tracing::{Event, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// Wraps one of tracing-subscriber's formats and adds the node id: in
    /// front of the target in text (`node=ID`), as the first member of the
    /// object in JSON (`"node":ID`; not `node_id`, which events use for the
    /// node they are about). Wrapping (rather than entering a `node` span everywhere) reaches
    /// every line, including those of threads and tasks that no span covers.
    pub struct WithNode<F> {
        node_id: u64,
        json: bool,
        inner: F,
    }

    impl<F> WithNode<F> {
        /// Text lines: time, level and `node=ID` first, then what `inner` writes.
        pub fn text(node_id: u64, inner: F) -> Self {
            WithNode { node_id, json: false, inner }
        }

        /// JSON objects: `"node":ID` added to what `inner` writes.
        pub fn json(node_id: u64, inner: F) -> Self {
            WithNode { node_id, json: true, inner }
        }
    }

    impl<S, N, F> FormatEvent<S, N> for WithNode<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
            if self.json {
                let mut line = String::with_capacity(256);
                self.inner.format_event(ctx, Writer::new(&mut line), event)?;
                match line.strip_prefix('{') {
                    Some(rest) => write!(writer, "{{\"node\":{},{rest}", self.node_id),
                    None => writer.write_str(&line),
                }
            } else {
                SystemTime.format_time(&mut writer)?;
                write!(writer, " {:>5} node={} ", event.metadata().level(), self.node_id)?;
                self.inner.format_event(ctx, writer, event)
            }
        }
    }
}
