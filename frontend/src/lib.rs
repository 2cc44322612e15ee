//! Bazar's frontend: a stateless HTTP gateway in front of the raft nodes.
//!
//! - [`cache`] holds the read cache and the protocol that keeps it
//!   consistent (read-your-writes, no stale fill, bounded staleness);
//! - [`stream`] follows each group's change stream to invalidate it;
//! - [`replicas`] tracks health, leaders, read load and commit samples;
//! - [`proxy`] spreads reads over replicas and forwards writes to leaders;
//! - [`routes`] is the public HTTP API; [`conn`] makes the HTTP parser's
//!   own refusals problem documents too;
//! - [`metrics`] renders `/metrics`;
//! - [`web`] is the storefront and the cluster lab, for browsers.
//!
//! Several frontends can run at once: each keeps its own cache fresh from
//! the nodes' change streams, so each gives the same guarantees.

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod proxy;
pub mod replicas;
pub mod routes;
pub mod stream;
pub mod web;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bazar_api::Group;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{Args, FrontendConfig};

use crate::cache::{Cache, GroupCacheStatus};
use crate::metrics::Metrics;
use crate::replicas::Replicas;
use crate::stream::{SharedStatus, StreamStatus};

/// The frontend's shared state.
pub struct Frontend {
    /// Configuration.
    pub config: FrontendConfig,
    /// The nodes.
    pub replicas: Replicas,
    /// The read cache.
    pub cache: Cache,
    /// Request counters.
    pub metrics: Metrics,
    /// Connections for the reads and writes relayed to the nodes: one
    /// multiplexed connection per node.
    pub calls: bazar_net::Mux,
    /// Connections for everything else (probes, change streams).
    pub http: reqwest::Client,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// The lab page's live feed.
    pub lab: web::lab::Hub,
    /// TLS, served and towards the nodes, when configured.
    pub tls: Option<Arc<bazar_net::tls::Tls>>,
    streams: [SharedStatus; 2],
}

/// What `/cluster` answers on a frontend.
#[derive(Debug, Serialize)]
pub struct FrontendStatus {
    /// Always "frontend".
    pub role: &'static str,
    /// Listen address.
    pub listen: String,
    /// The nodes as this frontend sees them.
    pub replicas: Vec<ReplicaStatus>,
    /// Per group: leader, change stream, cache.
    pub groups: Vec<GroupView>,
    /// Cache size and counters.
    pub cache: CacheView,
}

/// A node as a frontend sees it.
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    /// Node id.
    pub node_id: u64,
    /// Address.
    pub addr: String,
    /// Whether it receives reads.
    pub healthy: bool,
    /// Requests in flight from this frontend.
    pub in_flight: u64,
    /// Milliseconds since it last answered a probe.
    pub last_probe_ms: Option<u64>,
}

/// A group as a frontend sees it.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// Which group.
    pub group: Group,
    /// Its leader, if known.
    pub leader_id: Option<u64>,
    /// The change stream.
    pub stream: StreamStatus,
    /// The cache's state for the group.
    pub cache: GroupCacheStatus,
}

/// Cache size and counters.
#[derive(Debug, Serialize)]
pub struct CacheView {
    /// Whether the cache is on.
    pub enabled: bool,
    /// Entries held.
    pub entries: u64,
    /// Weighted size in bytes.
    pub bytes: u64,
    /// Hits, misses, bypasses, evictions.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Bypasses.
    pub bypasses: u64,
    /// Evictions.
    pub evictions: u64,
}

impl Frontend {
    /// A frontend for `config`; call [`run`] to serve.
    pub fn new(config: FrontendConfig) -> anyhow::Result<Frontend> {
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(bazar_net::tls::Tls::load(files).map_err(anyhow::Error::msg)?)),
            None => None,
        };
        let mut http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512);
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls((*tls.client).clone());
        }
        let http = http.build()?;
        let mut authorization = bazar_net::HeaderValue::from_str(&format!("Bearer {}", config.frontend_token))
            .context("the frontend token is not a valid header value")?;
        authorization.set_sensitive(true);
        Ok(Frontend {
            replicas: Replicas::new(&config.nodes, config.balance, if tls.is_some() { "https" } else { "http" }),
            cache: Cache::new(config.cache_entries, config.cache_bytes, config.max_staleness, config.cache_enabled),
            metrics: Metrics::default(),
            calls: bazar_net::Mux::default().with_authorization(authorization).with_tls(tls.clone()),
            http,
            shutdown: CancellationToken::new(),
            streams: Default::default(),
            lab: web::lab::Hub::default(),
            tls,
            config,
        })
    }

    /// A typed client for one node, sharing the frontend's connection pool.
    pub fn node_client(&self, base: &str, timeout: Duration) -> bazar_client::Client {
        bazar_client::Client::builder(base)
            .http_client(self.http.clone())
            .timeout(timeout)
            .build()
            .expect("node addresses were checked at startup")
    }

    /// `/cluster`.
    pub fn status(&self) -> FrontendStatus {
        let (entries, bytes) = self.cache.size();
        let s = &self.cache.stats;
        use std::sync::atomic::Ordering::Relaxed;
        FrontendStatus {
            role: "frontend",
            listen: self.config.listen.to_string(),
            replicas: self
                .replicas
                .all()
                .iter()
                .map(|r| ReplicaStatus {
                    node_id: r.id,
                    addr: r.addr.clone(),
                    healthy: r.is_healthy(),
                    in_flight: r.in_flight(),
                    last_probe_ms: self.replicas.probe_age(r),
                })
                .collect(),
            groups: Group::ALL
                .iter()
                .map(|g| GroupView {
                    group: *g,
                    leader_id: self.replicas.leader(*g).map(|r| r.id),
                    stream: self.streams[replicas::slot(*g)].lock().expect("status poisoned").clone(),
                    cache: self.cache.status(*g),
                })
                .collect(),
            cache: CacheView {
                enabled: self.config.cache_enabled,
                entries,
                bytes,
                hits: s.hits.load(Relaxed),
                misses: s.misses.load(Relaxed),
                bypasses: s.bypasses.load(Relaxed),
                evictions: s.evictions.load(Relaxed),
            },
        }
    }
}

/// Probes every node's `/health` each interval.
async fn probe(front: Arc<Frontend>) {
    let interval = front.config.probe_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = front.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probes = front.replicas.all().iter().map(|replica| {
            let front = front.clone();
            let replica = replica.clone();
            async move {
                let client = front.node_client(&replica.base, interval.max(Duration::from_millis(200)));
                let sent_at = Instant::now();
                let health = client.node_health().await.ok();
                for group in front.replicas.record_probe(&replica, sent_at, health) {
                    front.cache.refresh(group, &front.replicas.samples(group));
                }
            }
        });
        futures::future::join_all(probes).await;
    }
}

/// Flushes groups whose cache went stale, promptly.
async fn watchdog(front: Arc<Frontend>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = front.shutdown.cancelled() => return,
            _ = tick.tick() => front.cache.watchdog(),
        }
    }
}

/// The `frontend` binary: parses the command line, sets up logging, and
/// serves on a multi-threaded runtime until SIGTERM or Ctrl-C. Here rather
/// than in the binary so that the binary compiles nothing of its own (see
/// [`run`]).
pub fn main() -> anyhow::Result<()> {
    use clap::Parser as _;

    let args = Args::parse();
    let log_format = args.log_format;
    let config = args.resolve()?;
    init_tracing(log_format);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        run(config, listener, bazar_net::shutdown_signal()).await
    })
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: FrontendConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(config, listener, Box::pin(shutdown)).await
}

/// [`run`] with its arguments made concrete, so that the frontend is
/// compiled once, here, and not again into every binary and test that
/// starts one (release builds do not share generic instantiations between
/// crates).
async fn serve(
    config: FrontendConfig,
    listener: TcpListener,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let front = Arc::new(Frontend::new(config)?);
    tracing::info!(listen = %front.config.listen, nodes = ?front.config.nodes, "frontend started");
    let mut tasks = vec![tokio::spawn(probe(front.clone())), tokio::spawn(watchdog(front.clone()))];
    if front.config.cache_enabled {
        for group in Group::ALL {
            let status = front.streams[replicas::slot(group)].clone();
            tasks.push(tokio::spawn(stream::follow(front.clone(), group, status)));
        }
    }
    let token = front.shutdown.clone();
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down");
        token.cancel();
    };
    let listener = conn::ProblemListener::new(listener, front.tls.clone());
    axum::serve(listener, routes::app(front.clone())).with_graceful_shutdown(stop).await?;
    front.shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sets up logging for the frontend binary.
pub fn init_tracing(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
        config::LogFormat::Text => builder.init(),
    }
}
