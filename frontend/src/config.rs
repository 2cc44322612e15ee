//! Command-line configuration of a frontend.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

/// Bazar's HTTP gateway: caches reads, forwards writes to leaders, balances
/// reads over the replicas.
#[derive(Debug, Clone, Parser)]
#[command(name = "frontend", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The raft nodes, as `id=host:port,...`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,

    /// Longest time a cached answer may lag the cluster: when the change
    /// stream is broken or behind for longer, the cache is flushed and bypassed.
    #[arg(long, default_value_t = 1000)]
    pub max_staleness_ms: u64,

    /// Most entries the cache holds.
    #[arg(long, default_value_t = 100_000)]
    pub cache_entries: u64,

    /// Most bytes of answers the cache holds.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: u64,

    /// Turn the cache off (every read goes to a replica).
    #[arg(long)]
    pub no_cache: bool,

    /// Deadline of a client request, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,

    /// How reads are spread over healthy replicas.
    #[arg(long, value_enum, default_value_t = Balance::LeastOutstanding)]
    pub balance: Balance,

    /// Interval of replica health probes, milliseconds.
    #[arg(long, default_value_t = 250)]
    pub probe_interval_ms: u64,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Token presented to the nodes to open the multiplexed connection that
    /// carries the frontend's calls (`GET /mux`); the nodes must be given the
    /// same `--frontend-token`. It grants nothing else: admin calls still
    /// need the client's admin token, which the frontend passes on.
    #[arg(long, env = "BAZAR_FRONTEND_TOKEN", hide_env_values = true)]
    pub frontend_token: String,

    /// A deliberate bug, for the fault suite to prove that its checker
    /// catches it. Never in production.
    #[arg(long, value_enum, hide = true)]
    pub planted_bug: Option<PlantedBug>,

    /// URL of a lab supervisor (`bazar-lab`) that runs this cluster's
    /// processes: the lab page then shows fault buttons, which act through
    /// it. Without it the lab page is read-only.
    #[arg(long, env = "BAZAR_LAB_SUPERVISOR")]
    pub lab_supervisor: Option<String>,

    /// Token of the lab supervisor: the frontend presents it to the
    /// supervisor, and the lab page must present it to the frontend before a
    /// fault button acts.
    #[arg(long, env = "BAZAR_LAB_TOKEN", hide_env_values = true)]
    pub lab_token: Option<String>,

    /// The frontend's TLS certificate chain (PEM). With --tls-key and
    /// --tls-ca, the frontend serves HTTPS only and calls the nodes over TLS
    /// that trusts that CA alone, presenting this certificate (the nodes
    /// need one signed by their CA on their multiplexed connections).
    #[arg(long, env = "BAZAR_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BAZAR_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<std::path::PathBuf>,

    /// The CA that signs the nodes' certificates (PEM).
    #[arg(long, env = "BAZAR_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Deliberate bugs the fault suite plants to prove its checker (hidden
/// `--planted-bug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantedBug {
    /// Forget the commit indexes of writes acknowledged through this
    /// frontend: a cached read right after a write may miss it.
    IgnoreReadYourWrites,
}

/// Read load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// Each healthy replica in turn.
    RoundRobin,
    /// The healthy replica with the fewest requests in flight from this frontend.
    LeastOutstanding,
}

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Listen address (for `/cluster`).
    pub listen: SocketAddr,
    /// Raft nodes: id and host:port.
    pub nodes: Vec<(u64, String)>,
    /// Staleness bound of cached answers.
    pub max_staleness: Duration,
    /// Cache bounds: entries and bytes.
    pub cache_entries: u64,
    /// Cache bound in bytes.
    pub cache_bytes: u64,
    /// Whether the cache is on.
    pub cache_enabled: bool,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Read balancing policy.
    pub balance: Balance,
    /// Probe interval.
    pub probe_interval: Duration,
    /// Token for the nodes' `/mux`.
    pub frontend_token: String,
    /// A deliberate bug (tests only).
    pub planted_bug: Option<PlantedBug>,
    /// The lab supervisor, when this cluster runs under one.
    pub lab: Option<LabSupervisor>,
    /// TLS certificate, key and CA, when TLS is on.
    pub tls: Option<bazar_net::tls::TlsFiles>,
}

/// Where the lab supervisor listens and the token it wants.
#[derive(Debug, Clone)]
pub struct LabSupervisor {
    /// Base URL, `http://host:port`, without a trailing slash.
    pub url: String,
    /// Bearer token of its control calls.
    pub token: String,
}

impl Args {
    /// Checks the flags.
    pub fn resolve(self) -> anyhow::Result<FrontendConfig> {
        let mut nodes = Vec::new();
        for n in &self.nodes {
            let (id, addr) = n.split_once('=').with_context(|| format!("--nodes entry {n:?} is not id=host:port"))?;
            let id: u64 = id.trim().parse().with_context(|| format!("bad node id in {n:?}"))?;
            let addr = addr
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            if id == 0 || addr.is_empty() {
                bail!("--nodes entry {n:?} needs an id of at least 1 and an address");
            }
            if nodes.iter().any(|(i, _)| *i == id) {
                bail!("node {id} appears twice in --nodes");
            }
            nodes.push((id, addr));
        }
        if nodes.is_empty() {
            bail!("--nodes must list at least one raft node");
        }
        if self.max_staleness_ms == 0 || self.request_timeout_ms == 0 || self.probe_interval_ms == 0 {
            bail!("--max-staleness-ms, --request-timeout-ms and --probe-interval-ms must be positive");
        }
        if self.frontend_token.trim().is_empty() || !self.frontend_token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("--frontend-token/BAZAR_FRONTEND_TOKEN must be printable ASCII without spaces, and not empty");
        }
        if self.cache_entries == 0 || self.cache_bytes == 0 {
            bail!("--cache-entries and --cache-bytes must be positive (use --no-cache to turn the cache off)");
        }
        let lab = match (self.lab_supervisor, self.lab_token) {
            (None, None) => None,
            (Some(url), Some(token)) => {
                if token.trim().is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!("--lab-token/BAZAR_LAB_TOKEN must be printable ASCII without spaces, and not empty");
                }
                let url = url.trim().trim_end_matches('/').to_string();
                let url = if url.contains("://") { url } else { format!("http://{url}") };
                if !url.starts_with("http://") {
                    bail!("--lab-supervisor must be an http:// URL or host:port, not {url:?}");
                }
                Some(LabSupervisor { url, token })
            }
            _ => bail!("--lab-supervisor and --lab-token (BAZAR_LAB_TOKEN) go together"),
        };
        Ok(FrontendConfig {
            listen: self.listen,
            nodes,
            max_staleness: Duration::from_millis(self.max_staleness_ms),
            cache_entries: self.cache_entries,
            cache_bytes: self.cache_bytes,
            cache_enabled: !self.no_cache,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            balance: self.balance,
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            frontend_token: self.frontend_token,
            planted_bug: self.planted_bug,
            lab,
            tls: bazar_net::tls::TlsFiles::from_flags(self.tls_cert, self.tls_key, self.tls_ca)
                .map_err(anyhow::Error::msg)?,
        })
    }
}
