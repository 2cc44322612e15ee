//! Command-line configuration of a raft node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bazar_api::Group;
use clap::Parser;

use crate::seed::SeedSource;

/// A Bazar replica: one member of the catalog group and one of the orders group.
#[derive(Debug, Clone, Parser)]
#[command(name = "raft-node", version, about, long_about = None)]
pub struct Args {
    /// This node's id (1, 2, 3, ...). Stable for the life of its data.
    #[arg(long)]
    pub id: u64,

    /// Address to listen on [default: 127.0.0.1:710N]. Repeat it to
    /// listen on more than one, e.g. one address for clients and one that
    /// peers reach this node at (see --advertise and --peer-source-ip).
    #[arg(long)]
    pub listen: Vec<SocketAddr>,

    /// Address peers reach this node at, and the one the groups record for
    /// it (leader hints name it) [default: the first --listen address].
    #[arg(long)]
    pub advertise: Option<String>,

    /// Local IP that this node's connections to its peers leave from (Raft
    /// RPCs, forwarded requests, snapshots, the bootstrap's calls)
    /// [default: the IP of --advertise when this node listens on it, else
    /// the system's choice]. With every node on its own loopback address
    /// (127.0.0.11, .12, ...), a firewall rule on a pair of addresses cuts
    /// the link between two nodes and nothing else.
    #[arg(long, value_name = "IP")]
    pub peer_source_ip: Option<IpAddr>,

    /// Data directory [default: ./data/node-N].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// The founding members, as `id=host:port,...`. On first start, the
    /// lowest id initializes both groups with them once every member answers;
    /// a node with existing data ignores it. Default: this node alone.
    #[arg(long, value_delimiter = ',')]
    pub initial_cluster: Vec<String>,

    /// Token required on admin calls.
    #[arg(long, env = "BAZAR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// Token nodes present to each other on Raft RPCs.
    #[arg(long, env = "BAZAR_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: String,

    /// Token frontends present to open a multiplexed connection (`GET /mux`);
    /// it grants nothing else. Without it, only other nodes may open one.
    #[arg(long, env = "BAZAR_FRONTEND_TOKEN", hide_env_values = true)]
    pub frontend_token: Option<String>,

    /// Load the initial catalog from a JSON or CSV file instead of the seven classic books.
    #[arg(long, conflicts_with = "generate_books")]
    pub catalog_file: Option<PathBuf>,

    /// Load N generated books (valid ISBN-13s, 20 topics) instead of the classics.
    #[arg(long)]
    pub generate_books: Option<u64>,

    /// Minimum election timeout, milliseconds.
    #[arg(long, default_value_t = 150)]
    pub election_timeout_min_ms: u64,

    /// Maximum election timeout, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub election_timeout_max_ms: u64,

    /// Leader heartbeat interval, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,

    /// How many times faster than another node's clock any node's clock may
    /// run: the clock drift that `lease` reads allow for. A leader serves
    /// them from its lease for the minimum election timeout divided by this
    /// after a quorum acknowledged it (see `docs/architecture.md`, "Reads").
    /// 2 means each clock keeps within a third of true time.
    #[arg(long, default_value_t = 2.0, value_name = "RATIO")]
    pub max_clock_rate_ratio: f64,

    /// Build a snapshot (and purge the log behind it) every this many applied
    /// entries, in each group unless overridden below; the default is etcd's
    /// `--snapshot-count`. A snapshot copies the whole state machine, so a
    /// large one is built less often: builds take at most a twentieth of the
    /// time (see `compaction` in the node's docs).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_logs: u64,

    /// Snapshot policy of the catalog group [default: --snapshot-logs]. The
    /// catalog's entries are small and its state large (every book), so it
    /// usually wants rarer snapshots than the orders group.
    #[arg(long, value_name = "N")]
    pub catalog_snapshot_logs: Option<u64>,

    /// Snapshot policy of the orders group [default: --snapshot-logs].
    #[arg(long, value_name = "N")]
    pub orders_snapshot_logs: Option<u64>,

    /// Entries kept in the log behind a snapshot, so that a follower that is
    /// only a little behind catches up from the log, not a whole snapshot.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub snapshot_keep_logs: u64,

    /// On SIGTERM, how long a node that leads a group waits for an
    /// up-to-date voter to take leadership over before it stops anyway,
    /// milliseconds (0: do not hand off; the others elect after a timeout).
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    pub shutdown_handoff_ms: u64,

    /// Deadline of a client request, milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub request_timeout_ms: u64,

    /// Interval of heartbeats on `/watch` streams, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub watch_heartbeat_ms: u64,

    /// How long the idempotency key of a settled buy is kept, e.g. `24h`,
    /// `90m`, `2s`, `7d` (units ms, s, m, h, d; a bare number is seconds).
    /// Within it, a retry with the key returns the buy's one order; after
    /// it, both groups forget the key and a retry is a new buy. Measured
    /// from the buy's `created_at`, by the clock of the orders leader.
    #[arg(long, value_parser = parse_duration, default_value = "24h", value_name = "TIME")]
    pub idempotency_retention: Duration,

    /// Seed a new cluster from this backup (`bazar backup FILE`): on first
    /// start, with an empty data directory, the node checks the file and
    /// starts from its state, at its log indexes, as a member of
    /// `--initial-cluster`. Give every founding member the same file and the
    /// same `--initial-cluster`. Ignored once the data directory holds a
    /// node's state.
    #[arg(long, env = "BAZAR_RESTORE", value_name = "FILE")]
    pub restore: Option<PathBuf>,

    /// This node's TLS certificate chain (PEM). With --tls-key and
    /// --tls-ca, every listener serves HTTPS only, and calls to the peers
    /// are TLS that trusts that CA alone, presenting this certificate:
    /// mutual TLS between nodes. Raft RPCs and multiplexed connections
    /// (`/raft/*`, `/mux`) then need a client certificate the CA signed;
    /// the public API needs none.
    #[arg(long, env = "BAZAR_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BAZAR_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// The CA that signs every node's and frontend's certificate (PEM).
    #[arg(long, env = "BAZAR_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A deliberate bug, for the fault suite to prove that its checker
    /// catches it. Never in production.
    #[arg(long, value_enum, hide = true)]
    pub planted_bug: Option<PlantedBug>,
}

/// Deliberate bugs the fault suite plants to prove its checker (hidden
/// `--planted-bug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantedBug {
    /// A node that believes it leads a group serves `lease` and
    /// `linearizable` reads from its own state without confirming with a
    /// quorum that it still leads: a deposed leader cut off its peers
    /// answers stale reads.
    UnconfirmedLeaderReads,
    /// The leader's read lease is as long as the followers' promise not to
    /// vote (the maximum election timeout), with no margin for clock drift:
    /// a leader whose clock runs slow keeps serving `lease` reads after the
    /// others elected a new leader.
    LeaseWithoutDriftMargin,
    /// The retention purge forgets keys in the orders group but leaves
    /// their reservations in the catalog: a retry after the window places
    /// a new order that the old reservation settles, confirmed without
    /// taking stock.
    ForgetKeepsReservations,
    /// Nothing the Raft logs and votes write is ever synced to disk: log
    /// appends are reported durable once written to the operating system
    /// (the WAL is never `fsync`ed) and votes are written without sync. A
    /// crash of the process loses nothing (the page cache survives it); a
    /// power loss loses acknowledged entries.
    NoFsync,
    /// The orders leader's resumer settles a pending order whose
    /// reservation was never made as confirmed, without reserving its
    /// stock: a buy interrupted between placing its order and reserving
    /// its stock ends confirmed with the stock untouched.
    SettleWithoutReservation,
}

/// Parses `24h`, `90m`, `2s`, `500ms`, `7d`, `1.5h` or a bare number of
/// seconds (the grammar of `bazar bench --duration`, with hours and days).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 24h or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms, s, m, h or d")),
    };
    // At most ten years: far beyond any use, and far inside Duration.
    if !(0.001..=315_360_000.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (1ms to 3650d)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub id: u64,
    /// Listen addresses (at least one).
    pub listen: Vec<SocketAddr>,
    /// Advertised address.
    pub advertise: String,
    /// Local IP of outgoing peer connections (`None`: the system's choice).
    pub peer_source_ip: Option<IpAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Founding members (id to address), including this node.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Admin token.
    pub admin_token: String,
    /// Cluster token.
    pub cluster_token: String,
    /// Frontend token (admits a frontend's multiplexed connection), if any.
    pub frontend_token: Option<String>,
    /// Where the initial catalog comes from.
    pub seed: SeedSource,
    /// Election timeout range and heartbeat, milliseconds.
    pub election_timeout_ms: (u64, u64),
    /// Heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// The assumed bound on clock drift: no node's clock runs more than this
    /// many times faster than another's.
    pub max_clock_rate_ratio: f64,
    /// How long after a quorum acknowledged it, on its own clock, a leader
    /// serves `lease` reads without asking the quorum again (see
    /// [`NodeConfig::read_lease`]).
    pub read_lease: Duration,
    /// Snapshot every this many entries, per group.
    pub snapshot_logs: BTreeMap<Group, u64>,
    /// Entries kept in the log behind a snapshot.
    pub snapshot_keep_logs: u64,
    /// Longest wait for leadership to move away on a graceful shutdown.
    pub shutdown_handoff: Duration,
    /// Client request deadline.
    pub request_timeout: Duration,
    /// `/watch` heartbeat interval.
    pub watch_heartbeat: Duration,
    /// How long idempotency keys of settled buys are kept.
    pub idempotency_retention: Duration,
    /// A backup to seed a new data directory from.
    pub restore: Option<PathBuf>,
    /// TLS certificate, key and CA, when TLS is on.
    pub tls: Option<bazar_net::tls::TlsFiles>,
    /// A deliberate bug (tests only).
    pub planted_bug: Option<PlantedBug>,
}

impl Args {
    /// Checks the flags and fills in defaults.
    pub fn resolve(self) -> anyhow::Result<NodeConfig> {
        if self.id == 0 {
            bail!("--id must be at least 1");
        }
        if self.admin_token.trim().is_empty() || self.cluster_token.trim().is_empty() {
            bail!(
                "the admin and cluster tokens must not be empty (--admin-token/BAZAR_ADMIN_TOKEN, --cluster-token/BAZAR_CLUSTER_TOKEN)"
            );
        }
        if !self.cluster_token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the cluster token must be printable ASCII without spaces: it is sent as an HTTP bearer token");
        }
        let frontend_token = self.frontend_token.filter(|t| !t.trim().is_empty());
        if let Some(t) = &frontend_token {
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("the frontend token must be printable ASCII without spaces: it is sent as an HTTP bearer token");
            }
            if *t == self.cluster_token || *t == self.admin_token {
                bail!("the frontend token must differ from the cluster and admin tokens");
            }
        }
        if self.election_timeout_min_ms == 0 || self.election_timeout_min_ms >= self.election_timeout_max_ms {
            bail!("--election-timeout-min-ms must be positive and below --election-timeout-max-ms");
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.election_timeout_min_ms {
            bail!("--heartbeat-ms must be positive and below the election timeout");
        }
        if !self.max_clock_rate_ratio.is_finite() || self.max_clock_rate_ratio < 1.0 {
            bail!("--max-clock-rate-ratio must be a number of at least 1");
        }
        let read_lease = match self.planted_bug {
            Some(PlantedBug::LeaseWithoutDriftMargin) => Duration::from_millis(self.election_timeout_max_ms),
            _ => NodeConfig::read_lease(self.election_timeout_min_ms, self.max_clock_rate_ratio),
        };
        if read_lease < Duration::from_millis(1) {
            bail!("the read lease (--election-timeout-min-ms / --max-clock-rate-ratio) must be at least 1 ms");
        }
        let mut listen = self.listen;
        if listen.is_empty() {
            let port = 7100u16.checked_add(u16::try_from(self.id).unwrap_or(u16::MAX)).filter(|_| self.id < 100);
            let port = port.context("ids of 100 or more need an explicit --listen")?;
            listen.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        for (i, a) in listen.iter().enumerate() {
            if listen[..i].contains(a) {
                bail!("--listen {a} is given twice");
            }
        }
        let advertise = self.advertise.unwrap_or_else(|| listen[0].to_string());
        // The advertised IP is a local one when this node listens on it.
        let advertised_ip = advertise.parse::<SocketAddr>().ok().map(|a| a.ip());
        let peer_source_ip = self.peer_source_ip.or(advertised_ip.filter(|ip| listen.iter().any(|l| l.ip() == *ip)));
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(format!("data/node-{}", self.id)));

        let mut initial_cluster = BTreeMap::new();
        for member in &self.initial_cluster {
            let (id, addr) = member
                .split_once('=')
                .with_context(|| format!("--initial-cluster entry {member:?} is not id=host:port"))?;
            let id: u64 = id.trim().parse().with_context(|| format!("bad node id in {member:?}"))?;
            if id == 0 || addr.trim().is_empty() {
                bail!("--initial-cluster entry {member:?} needs an id of at least 1 and an address");
            }
            if initial_cluster.insert(id, addr.trim().to_string()).is_some() {
                bail!("node {id} appears twice in --initial-cluster");
            }
        }
        match initial_cluster.get(&self.id) {
            None if initial_cluster.is_empty() => {
                initial_cluster.insert(self.id, advertise.clone());
            }
            None => bail!("--initial-cluster does not list this node (id {})", self.id),
            Some(addr) if *addr != advertise => {
                bail!("--initial-cluster lists node {} at {addr}, but it advertises {advertise}", self.id)
            }
            Some(_) => {}
        }

        let seed = match (self.catalog_file, self.generate_books) {
            (Some(path), _) => SeedSource::from_file(&path)?,
            (None, Some(n)) => SeedSource::generated(n)?,
            (None, None) => SeedSource::Classic,
        };

        Ok(NodeConfig {
            id: self.id,
            listen,
            advertise,
            peer_source_ip,
            data_dir,
            initial_cluster,
            admin_token: self.admin_token,
            cluster_token: self.cluster_token,
            frontend_token,
            seed,
            election_timeout_ms: (self.election_timeout_min_ms, self.election_timeout_max_ms),
            heartbeat_ms: self.heartbeat_ms,
            max_clock_rate_ratio: self.max_clock_rate_ratio,
            read_lease,
            snapshot_logs: BTreeMap::from([
                (Group::Catalog, self.catalog_snapshot_logs.unwrap_or(self.snapshot_logs).max(1)),
                (Group::Orders, self.orders_snapshot_logs.unwrap_or(self.snapshot_logs).max(1)),
            ]),
            snapshot_keep_logs: self.snapshot_keep_logs,
            shutdown_handoff: Duration::from_millis(self.shutdown_handoff_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            watch_heartbeat: Duration::from_millis(self.watch_heartbeat_ms.max(10)),
            idempotency_retention: self.idempotency_retention,
            restore: self.restore.clone(),
            tls: bazar_net::tls::TlsFiles::from_flags(self.tls_cert.clone(), self.tls_key.clone(), self.tls_ca.clone())
                .map_err(anyhow::Error::msg)?,
            planted_bug: self.planted_bug,
        })
    }
}

impl NodeConfig {
    /// The read lease: the minimum election timeout divided by the clock
    /// rate bound `ratio`.
    ///
    /// A follower that acknowledged the leader's heartbeat sent at `t`
    /// refuses to vote for anyone else for openraft's `leader_lease` (the
    /// maximum election timeout) after receiving it, on its clock; the
    /// leader serves `lease` reads until `t + read_lease` on its own. With a
    /// follower's clock running up to `ratio` times faster than the
    /// leader's, that promise lasts at least `max / ratio` on the leader's
    /// clock, which the lease must not outlast. Taking the *minimum*
    /// election timeout keeps the lease short of the window by a further
    /// `max / min` (2 with the defaults), so that the lease is safe with
    /// any election timeout openraft draws, and stays safe if a version of
    /// openraft bases the followers' promise on the minimum.
    /// With `ratio = (1 + ρ) / (1 − ρ)` (every clock within ρ of true
    /// time) this is `min × (1 − ρ) / (1 + ρ)`.
    pub fn read_lease(election_timeout_min_ms: u64, ratio: f64) -> Duration {
        Duration::from_secs_f64(election_timeout_min_ms as f64 / 1000.0 / ratio)
    }

    /// How many entries `group` applies between two snapshots.
    pub fn snapshot_logs(&self, group: Group) -> u64 {
        self.snapshot_logs.get(&group).copied().unwrap_or(20_000)
    }

    /// openraft's configuration for `group`.
    pub fn raft_config(&self, group: Group) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: format!("bazar-{group}"),
            election_timeout_min: self.election_timeout_ms.0,
            election_timeout_max: self.election_timeout_ms.1,
            heartbeat_interval: self.heartbeat_ms,
            install_snapshot_timeout: 30_000,
            // Builds are started by `crate::compaction`, which also keeps
            // their share of the time bounded as the data grows.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.snapshot_keep_logs,
            // A partitioned node that comes back must not depose a healthy
            // leader by having bumped its term while alone.
            enable_pre_vote: Some(true),
            // Replicate entries as soon as they are written, before the local
            // fsync completes: the leader's and the followers' fsyncs then
            // overlap instead of running one after the other, which is most
            // of a commit's latency.
            broadcast_submitted_on_append: Some(true),
            // A leader that restarts must win a new election, in a new term,
            // before it leads again. openraft would otherwise let it resume
            // in its old term at once. Because the leader sends entries
            // before its own fsync completes (above), a power loss can take
            // from it entries that its followers kept. Leading on in the
            // same term, it would then write other entries under those same
            // log ids, and the followers, which match entries by log id,
            // would keep theirs: replicas diverge and acknowledged writes
            // are lost. Found by power-loss chaos runs. A new term gives the
            // new entries new log ids, and the election only picks a node
            // holding every committed entry.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> NodeConfig {
        let mut argv = vec!["raft-node", "--id", "1", "--admin-token", "a", "--cluster-token", "c"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("flags parse").resolve().expect("flags resolve")
    }

    #[test]
    fn snapshot_policy_is_per_group_and_defaults_to_snapshot_logs() {
        let config = parse(&["--snapshot-logs", "500"]);
        assert_eq!(config.snapshot_logs(Group::Catalog), 500);
        assert_eq!(config.snapshot_logs(Group::Orders), 500);
        let config = parse(&["--snapshot-logs", "500", "--catalog-snapshot-logs", "100000"]);
        assert_eq!(config.snapshot_logs(Group::Catalog), 100_000);
        assert_eq!(config.snapshot_logs(Group::Orders), 500);
        let raft = config.raft_config(Group::Catalog).unwrap();
        assert_eq!(raft.snapshot_policy, openraft::SnapshotPolicy::Never, "crate::compaction starts the builds");
        assert_eq!(raft.max_in_snapshot_log_to_keep, 1_000);
    }

    #[test]
    fn peer_connections_leave_from_the_advertised_address_when_it_is_local() {
        let config = parse(&[]);
        assert_eq!(config.listen, vec!["127.0.0.1:7101".parse::<SocketAddr>().unwrap()]);
        assert_eq!((config.advertise.as_str(), config.peer_source_ip), ("127.0.0.1:7101", Some([127, 0, 0, 1].into())));
        let config =
            parse(&["--listen", "127.0.0.1:7101", "--listen", "127.0.0.11:7101", "--advertise", "127.0.0.11:7101"]);
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.peer_source_ip, Some([127, 0, 0, 11].into()));
        // A name, or an address this node does not listen on: the system chooses.
        assert_eq!(parse(&["--advertise", "node1:7101"]).peer_source_ip, None);
        assert_eq!(parse(&["--listen", "0.0.0.0:7101", "--advertise", "10.0.0.5:7101"]).peer_source_ip, None);
        let explicit = parse(&["--advertise", "node1:7101", "--peer-source-ip", "127.0.0.12"]);
        assert_eq!(explicit.peer_source_ip, Some([127, 0, 0, 12].into()));
        let twice = Args::try_parse_from([
            "raft-node",
            "--id",
            "1",
            "--admin-token",
            "a",
            "--cluster-token",
            "c",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:1",
        ]);
        assert!(twice.unwrap().resolve().is_err());
    }

    #[test]
    fn the_read_lease_is_shorter_than_the_vote_refusal_window_by_the_drift_margin() {
        let config = parse(&[]);
        // 150 ms / 2: a follower's 300 ms promise lasts at least 150 ms on
        // a clock that runs half as fast; the lease is half of that again.
        assert_eq!(config.read_lease, Duration::from_millis(75));
        let window = Duration::from_millis(config.election_timeout_ms.1);
        assert!(config.read_lease.mul_f64(config.max_clock_rate_ratio) < window);
        let config = parse(&["--max-clock-rate-ratio", "1.25", "--election-timeout-min-ms", "200"]);
        assert_eq!(config.read_lease, Duration::from_millis(160));
        assert!(
            Args::try_parse_from([
                "raft-node",
                "--id",
                "1",
                "--admin-token",
                "a",
                "--cluster-token",
                "c",
                "--max-clock-rate-ratio",
                "0.5"
            ])
            .unwrap()
            .resolve()
            .is_err()
        );
        // The planted bug drops the margin: the lease is the whole window.
        let bug = parse(&["--planted-bug", "lease-without-drift-margin"]);
        assert_eq!(bug.read_lease, window);
    }

    #[test]
    fn idempotency_retention_defaults_to_a_day_and_reads_units() {
        assert_eq!(parse(&[]).idempotency_retention, Duration::from_secs(86_400));
        for (text, want) in [
            ("2s", Duration::from_secs(2)),
            ("500ms", Duration::from_millis(500)),
            ("90m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("30", Duration::from_secs(30)),
        ] {
            assert_eq!(parse(&["--idempotency-retention", text]).idempotency_retention, want, "{text}");
        }
        for bad in ["", "h", "2 weeks", "0s", "-1s", "5000d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shutdown_handoff_can_be_turned_off() {
        assert_eq!(parse(&[]).shutdown_handoff, Duration::from_secs(2));
        assert_eq!(parse(&["--shutdown-handoff-ms", "0"]).shutdown_handoff, Duration::ZERO);
    }
}
