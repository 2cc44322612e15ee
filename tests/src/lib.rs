//! Harness for real-process tests, and the tooling that proves the
//! invariants of guarantees §6 (`docs/guarantees.md`) under faults the way Jepsen does.
//!
//! [`Cluster`] starts `raft-node` processes (built beforehand, found next to
//! the test binary or in `BAZAR_BIN_DIR`) on free loopback ports with their
//! own data directories, and injects real faults: `kill -9`, `SIGSTOP`/
//! `SIGCONT`, graceful restarts, network partitions between nodes
//! ([`partition`]: each node talks to its peers from a loopback address of
//! its own, `127.x.y.<id>`, which iptables rules cut, while clients reach
//! every node on 127.0.0.1), and, on a cluster started with
//! [`Cluster::start_with_clocks`], clocks that run fast or slow or jump
//! ([`clock`]: libfaketime); with [`ClusterOptions::lazyfs`], power cuts
//! ([`Cluster::power_cut`]: each node's data directory is a [`lazyfs`]
//! mount, which drops every write not synced). Every wait is bounded.
//! Dropping the cluster kills every process it started, and only those,
//! removes its rules and unmounts its mounts.
//!
//! The chaos tooling, in the order data flows through it:
//!
//! - [`runner`]: concurrent clients buying, restocking, changing prices and
//!   reading at every consistency level, against any list of endpoints;
//! - [`nemesis`]: faults on a bounded schedule, carried out by a
//!   [`nemesis::FaultInjector`] (processes here; containers elsewhere);
//! - [`history`]: what both of them did, as JSON lines with monotonic
//!   timestamps;
//! - [`check`]: the end-state checks of guarantees §6 and the collection of
//!   the final state; [`checker`]: every check on a whole history, including
//!   [`linearizability`] of every book;
//! - [`chaos`]: one call that runs all of the above and returns the report;
//! - [`lab`]: the lab supervisor behind `bazar-lab` and the web lab's fault
//!   buttons, which runs a short workload and its check on demand.

#![warn(missing_docs)]

pub mod chaos;
pub mod check;
pub mod checker;
pub mod clock;
pub mod frontend;
pub mod history;
pub mod lab;
pub mod lazyfs;
pub mod linearizability;
pub mod nemesis;
pub mod partition;
pub mod runner;
#[cfg(test)]
mod structure;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bazar_api::{Group, NodeHealth};
use bazar_client::Client;
use tokio::time::Instant;

/// Admin token of test clusters.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Cluster token of test clusters.
pub const CLUSTER_TOKEN: &str = "test-cluster-token";
/// Frontend token of test clusters (what a frontend presents on `/mux`).
pub const FRONTEND_TOKEN: &str = "test-frontend-token";

/// Errors of the test tooling (the tests themselves panic with messages).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file.
    #[error("{0}")]
    Io(String),
    /// A history file that does not parse.
    #[error("bad history: {0}")]
    History(String),
    /// The cluster did not do what the tooling needed (setup, final reads).
    #[error("{0}")]
    Cluster(String),
    /// A fault this injector cannot carry out.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Result alias of the test tooling.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the release binaries are: `BAZAR_BIN_DIR`, or the directory of the
/// running binary when `raft-node` is there (`bazar-chaos`), else the one
/// above it (a test binary in `target/release/deps/`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BAZAR_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.join("raft-node").exists() {
        return dir.to_path_buf();
    }
    dir.parent().unwrap_or(dir).to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --release --bins) or set BAZAR_BIN_DIR",
        path.display()
    );
    path
}

/// Lowest port of this test process's picks.
const LOWEST_PORT: u16 = 10_000;

/// The kernel's ephemeral port range (`ip_local_port_range`): ports it
/// hands to outgoing connections and to binds of port 0.
pub fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().filter_map(|s| s.parse::<u16>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(lo), Some(hi)) if lo <= hi => lo..=hi,
        _ => 32_768..=60_999,
    }
}

/// A free loopback port (bound, then released), below the kernel's
/// ephemeral range and never handed out twice by this process.
///
/// Nodes and frontends are stopped and started again on the same port. A
/// port from the ephemeral range (what binding port 0 gives) can be taken
/// meanwhile by any outgoing connection on the machine, and the restart
/// then fails with "address in use"; ports below the range are only ever
/// taken by an explicit bind.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let below = (*ephemeral_ports().start()).max(LOWEST_PORT + 1_000);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(LOWEST_PORT..below);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid this harness spawned; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Sends `signal` to every process of the process group `pgid` (a child
/// started with `process_group(0)` leads its own group, whose id is its pid).
pub fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill(2) with the negated id of a group this harness created.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// One raft-node process slot: stays in the cluster across restarts.
pub struct NodeProc {
    /// Node id.
    pub id: u64,
    /// host:port its peers reach it at (its own loopback IP), as advertised.
    pub addr: String,
    /// host:port of its clients (127.0.0.1, same port).
    pub client_addr: String,
    child: Option<Child>,
    paused: bool,
}

impl NodeProc {
    /// Whether the process is running (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }
}

/// How a [`Cluster`] runs its nodes, beyond their flags.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Put each node's data directory on its own [`lazyfs`] mount (backed
    /// by `node-<id>.disk/` next to it), so that [`Cluster::power_cut`] can
    /// drop what a node wrote and did not sync. Needs root and `/dev/fuse`.
    pub lazyfs: bool,
    /// Run every node under this libfaketime library, its clock controlled
    /// by the cluster (see [`Cluster::start_with_clocks`]).
    pub clock_library: Option<PathBuf>,
    /// The nodes serve TLS (their flags name their certificates): clients
    /// use `https://` and trust this CA.
    pub tls_ca: Option<PathBuf>,
    /// The second and third bytes of the nodes' peer IPs (`127.x.y.<id>`),
    /// instead of random ones: for certificates that must name them.
    pub peer_net: Option<[u8; 2]>,
}

/// A cluster of raft-node processes.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<u64, NodeProc>,
    extra_args: Vec<String>,
    keep: bool,
    /// The second and third bytes of the nodes' peer IPs (`127.x.y.<id>`),
    /// random per cluster so that clusters on one host never share one.
    peer_net: [u8; 2],
    /// The links cut, once a partition was asked for.
    firewall: Option<partition::Firewall>,
    /// The libfaketime library the nodes run with, when their clocks are
    /// under control ([`Cluster::start_with_clocks`]).
    clock_library: Option<PathBuf>,
    /// Each node's faked clock.
    clocks: BTreeMap<u64, clock::NodeClock>,
    options: ClusterOptions,
    /// The lazyfs mount of each node's data directory (with `options.lazyfs`).
    disks: BTreeMap<u64, lazyfs::LazyFsProc>,
}

/// A node's `/health` through `client`, if it answers within a second.
pub async fn health_within_a_second(client: &Client) -> Option<NodeHealth> {
    tokio::time::timeout(Duration::from_secs(1), client.node_health()).await.ok()?.ok()
}

impl Cluster {
    /// Starts `n` nodes with ids 1..=n that found a cluster together, each
    /// with `extra_args`, and waits until both groups have a leader and the
    /// catalog is loaded.
    pub async fn start(n: u64, extra_args: &[&str]) -> Cluster {
        Cluster::start_with(n, extra_args, ClusterOptions::default()).await
    }

    /// Like [`Cluster::start`], with every node's clock under control
    /// ([`Cluster::set_clock_rate`], [`Cluster::jump_clock`]): the nodes run
    /// with libfaketime preloaded. Panics when libfaketime is missing (see
    /// [`clock::required`]).
    pub async fn start_with_clocks(n: u64, extra_args: &[&str]) -> Cluster {
        let library = clock::library().unwrap_or_else(|why| panic!("{why}"));
        Cluster::start_with(n, extra_args, ClusterOptions { clock_library: Some(library), ..Default::default() }).await
    }

    /// [`Cluster::start`] with `options`.
    pub async fn start_with(n: u64, extra_args: &[&str], options: ClusterOptions) -> Cluster {
        let clock_library = options.clock_library.clone();
        let mut cluster = Cluster {
            dir: Some(tempfile::Builder::new().prefix("bazar-test-").tempdir().expect("temp dir")),
            nodes: BTreeMap::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            keep: false,
            // 127.0.y.z stays for people's own use (127.0.0.1x in scripts/cluster.sh).
            peer_net: options.peer_net.unwrap_or([rand::random_range(1..=254), rand::random_range(1..=254)]),
            firewall: None,
            clock_library,
            clocks: BTreeMap::new(),
            options,
            disks: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.add_slot(id);
        }
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster.wait_ready(Duration::from_secs(60)).await;
        cluster
    }

    /// The data directory of the whole cluster.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster directory").path()
    }

    /// Keeps the data directory and logs when the cluster is dropped.
    pub fn keep_data(&mut self) {
        self.keep = true;
    }

    /// Ids of all nodes.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The address node `id` advertises, which its peers reach it at.
    /// Clients may use it too (they connect from 127.0.0.1, which no
    /// partition cuts).
    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// The client address of node `id` (127.0.0.1).
    pub fn client_addr(&self, id: u64) -> String {
        self.nodes[&id].client_addr.clone()
    }

    /// The loopback IP node `id` listens on for its peers and calls them from.
    pub fn peer_ip(&self, id: u64) -> IpAddr {
        let id = u8::try_from(id).expect("node ids below 255");
        IpAddr::V4(Ipv4Addr::new(127, self.peer_net[0], self.peer_net[1], id))
    }

    /// A slot for node `id` on a free port, not started.
    fn add_slot(&mut self, id: u64) -> String {
        let port = free_port();
        let addr = format!("{}:{port}", self.peer_ip(id));
        let client_addr = format!("127.0.0.1:{port}");
        self.nodes.insert(id, NodeProc { id, addr: addr.clone(), client_addr, child: None, paused: false });
        addr
    }

    /// Ids of nodes whose process runs and is not paused.
    pub fn live_ids(&mut self) -> Vec<u64> {
        self.nodes.values_mut().filter_map(|n| (n.is_running() && !n.paused).then_some(n.id)).collect()
    }

    fn initial_cluster(&self) -> String {
        self.nodes.values().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",")
    }

    /// Whether node data directories are lazyfs mounts (power cuts possible).
    pub fn on_lazyfs(&self) -> bool {
        self.options.lazyfs
    }

    /// Mounts node `id`'s data directory on lazyfs if it is not (first
    /// start, or after a power cut).
    fn power_on(&mut self, id: u64) {
        if !self.options.lazyfs {
            return;
        }
        if let Some(disk) = self.disks.get_mut(&id) {
            disk.power_on().expect("mounting lazyfs again after a power cut");
            return;
        }
        let disk = lazyfs::LazyFsProc::mount(
            &binary("bazar-lazyfs"),
            &self.dir().join(format!("node-{id}.disk")),
            &self.data_dir(id),
            &self.dir().join(format!("lazyfs-{id}.log")),
        )
        .expect("mounting lazyfs over a node's data directory");
        self.disks.insert(id, disk);
    }

    /// `kill -9` node `id`, then cut its power: every write and file name it
    /// did not sync is lost, as in a power loss. [`Cluster::ensure_running`]
    /// (or [`Cluster::restart`]) mounts its disk again and starts it. Only on
    /// a cluster started with [`ClusterOptions::lazyfs`].
    pub fn power_cut(&mut self, id: u64) -> Result<()> {
        self.kill(id);
        let disk = self
            .disks
            .get_mut(&id)
            .ok_or_else(|| Error::Unsupported(format!("node {id} is not on lazyfs: no power cut")))?;
        disk.power_cut().map_err(|e| Error::Cluster(format!("power cut of node {id}: {e}")))
    }

    fn spawn(&mut self, id: u64) {
        self.power_on(id);
        let initial = self.initial_cluster();
        let log_path = self.dir().join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
        let data_dir = self.dir().join(format!("node-{id}"));
        let mut clock_env = Vec::new();
        if let Some(library) = &self.clock_library {
            let file = self.dir().join(format!("node-{id}.faketime"));
            let clock = match self.clocks.entry(id) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(clock::NodeClock::new(&file).expect("a clock control file"))
                }
            };
            clock.before_start().expect("resetting a node's clock");
            clock_env = clock.env(library);
        }
        let node = self.nodes.get_mut(&id).expect("node id");
        let child = Command::new(binary("raft-node"))
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&node.client_addr)
            .arg("--listen")
            .arg(&node.addr)
            .arg("--advertise")
            .arg(&node.addr)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--initial-cluster")
            .arg(initial)
            .args(&self.extra_args)
            .env("BAZAR_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("BAZAR_CLUSTER_TOKEN", CLUSTER_TOKEN)
            .env("BAZAR_FRONTEND_TOKEN", FRONTEND_TOKEN)
            .env("RUST_LOG", std::env::var("BAZAR_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .envs(clock_env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawning raft-node");
        node.child = Some(child);
        node.paused = false;
        if let Some(clock) = self.clocks.get_mut(&id) {
            clock.started();
        }
    }

    /// Whether the nodes' clocks are under control ([`Cluster::start_with_clocks`]).
    pub fn controls_clocks(&self) -> bool {
        self.clock_library.is_some()
    }

    fn clock(&mut self, id: u64) -> Result<&mut clock::NodeClock> {
        if !self.controls_clocks() {
            return Err(Error::Unsupported("this cluster was not started with clock control".into()));
        }
        self.clocks.get_mut(&id).ok_or_else(|| Error::Cluster(format!("node {id} has no clock (never started)")))
    }

    /// Makes node `id`'s clock run `rate` times as fast as true time from
    /// now on (1: true), without a jump; the node keeps running.
    pub fn set_clock_rate(&mut self, id: u64, rate: f64) -> Result<()> {
        self.clock(id)?.set_rate(rate)
    }

    /// Steps node `id`'s clocks (monotonic and wall) by `seconds`, back
    /// when negative.
    pub fn jump_clock(&mut self, id: u64, seconds: f64) -> Result<()> {
        self.clock(id)?.jump(seconds)
    }

    /// How fast node `id`'s clock runs (1 without clock control).
    pub fn clock_rate(&self, id: u64) -> f64 {
        self.clocks.get(&id).map_or(1.0, clock::NodeClock::rate)
    }

    /// `https` when the nodes serve TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.options.tls_ca.is_some() { "https" } else { "http" }
    }

    /// The CA the nodes' certificates are signed by, when they serve TLS.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.options.tls_ca.as_deref()
    }

    /// A client for node `id`, with the admin token.
    pub fn client(&self, id: u64) -> Client {
        Client::builder(format!("{}://{}", self.scheme(), self.client_addr(id)))
            .ca_file(self.options.tls_ca.clone())
            .admin_token(ADMIN_TOKEN)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// Cluster administration (membership changes) through every node.
    pub fn admin(&self) -> bazar_client::cluster::ClusterAdmin {
        let seeds = self.ids().iter().map(|id| format!("{}://{}", self.scheme(), self.client_addr(*id))).collect();
        bazar_client::cluster::ClusterAdmin::new(self.client(self.ids()[0]), seeds)
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// Stops node `id` with SIGTERM (graceful), waiting up to 15 s, then SIGKILL.
    pub async fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node id");
        let Some(mut child) = node.child.take() else { return };
        signal(child.id(), libc::SIGCONT);
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.wait();
        node.paused = false;
    }

    /// Starts a new, empty node `id` on a free port. It does not found
    /// anything: it waits to be added to the groups (as a learner) by an
    /// admin. Returns the address it advertises.
    pub fn spawn_new(&mut self, id: u64) -> String {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let addr = self.add_slot(id);
        self.spawn(id);
        addr
    }

    /// Starts node `id` again (after a kill or stop) with the same data.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir().join(format!("node-{id}"))
    }

    /// `kill -9` node `id` and deletes its data directory: a lost disk.
    /// [`Cluster::restart`] then starts an empty node with the same id and
    /// address, which founds nothing and waits to be added (after the old
    /// member was removed: Raft refuses a voter whose log went backwards).
    pub fn wipe(&mut self, id: u64) {
        self.kill(id);
        if self.disks.contains_key(&id) {
            // On lazyfs the data directory is a mount point: cut the power,
            // then wipe the disk itself; starting the node mounts it again.
            self.power_cut(id).expect("power cut before wiping a disk");
            let backing = self.dir().join(format!("node-{id}.disk"));
            std::fs::remove_dir_all(&backing).expect("deleting a node's disk");
            return;
        }
        let dir = self.data_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("deleting a node's data directory");
        }
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[&id].child.as_ref().map(Child::id)
    }

    /// Starts node `id` with its data if its process is not running, and
    /// resumes it if it is paused; otherwise does nothing.
    pub fn ensure_running(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node id");
        if node.is_running() {
            if node.paused {
                self.resume(id);
            }
            return;
        }
        self.spawn(id);
    }

    /// Base URLs (`http://host:port`) of every node, at its client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| format!("{}://{}", self.scheme(), n.client_addr)).collect()
    }

    fn firewall(&mut self) -> Result<&mut partition::Firewall> {
        if self.firewall.is_none() {
            self.firewall = Some(partition::Firewall::new()?);
        }
        self.firewall.as_mut().ok_or_else(|| Error::Cluster("no firewall".into()))
    }

    /// Drops the peer traffic from node `from` to node `to` (one way).
    pub fn cut_one_way(&mut self, from: u64, to: u64) -> Result<()> {
        let (a, b) = (self.peer_ip(from), self.peer_ip(to));
        self.firewall()?.cut(a, b)
    }

    /// Lets the peer traffic from node `from` to node `to` through again.
    pub fn mend_one_way(&mut self, from: u64, to: u64) -> Result<()> {
        let (a, b) = (self.peer_ip(from), self.peer_ip(to));
        match &mut self.firewall {
            Some(firewall) => firewall.mend(a, b),
            None => Ok(()),
        }
    }

    /// Cuts the link between nodes `a` and `b`, both ways; the other links
    /// stay up (with a third node, it bridges the two).
    pub fn bridge(&mut self, a: u64, b: u64) -> Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Cuts node `id` off every other node, both ways. Clients still reach it.
    pub fn partition(&mut self, id: u64) -> Result<()> {
        for other in self.ids().into_iter().filter(|o| *o != id) {
            self.bridge(id, other)?;
        }
        Ok(())
    }

    /// Mends every cut to or from node `id`.
    pub fn rejoin(&mut self, id: u64) -> Result<()> {
        for other in self.ids().into_iter().filter(|o| *o != id) {
            self.mend_one_way(id, other)?;
            self.mend_one_way(other, id)?;
        }
        Ok(())
    }

    /// Mends every cut.
    pub fn heal(&mut self) -> Result<()> {
        match &mut self.firewall {
            Some(firewall) => firewall.heal(),
            None => Ok(()),
        }
    }

    /// The directions cut, as (from, to) node ids.
    pub fn cuts(&self) -> Vec<(u64, u64)> {
        let Some(firewall) = &self.firewall else { return Vec::new() };
        let id_of = |ip: &IpAddr| self.ids().into_iter().find(|id| self.peer_ip(*id) == *ip);
        firewall.cuts().iter().filter_map(|(a, b)| Some((id_of(a)?, id_of(b)?))).collect()
    }

    /// What node `id`'s process is doing: `running`, `paused` or `stopped`.
    pub fn process_state(&mut self, id: u64) -> &'static str {
        let Some(n) = self.nodes.get_mut(&id) else { return "stopped" };
        match (n.is_running(), n.paused) {
            (true, true) => "paused",
            (true, false) => "running",
            (false, _) => "stopped",
        }
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(child) = &node.child {
            signal(child.id(), libc::SIGSTOP);
            node.paused = true;
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(child) = &node.child {
            signal(child.id(), libc::SIGCONT);
            node.paused = false;
        }
    }

    /// `/health` of node `id`, if it answers within a second.
    pub async fn health(&self, id: u64) -> Option<NodeHealth> {
        health_within_a_second(&self.client(id)).await
    }

    /// The leader of `group` that every answering live member agrees on
    /// (nodes not yet added to the groups have no say).
    pub async fn leader(&mut self, group: Group) -> Option<u64> {
        let mut seen = None;
        for id in self.live_ids() {
            let h = self.health(id).await?;
            if !h.initialized {
                continue;
            }
            let leader = (*h.leaders.get(&group)?)?;
            if *seen.get_or_insert(leader) != leader {
                return None;
            }
        }
        seen
    }

    /// Waits until the live nodes agree on a leader of `group` other than `not`.
    pub async fn wait_leader(&mut self, group: Group, not: Option<u64>, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader(group).await
                && Some(l) != not
                && self.live_ids().contains(&l)
            {
                return l;
            }
            if Instant::now() > deadline {
                panic!("no {group} leader within {timeout:?}\n{}", self.logs_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until every live node answers, agrees on both leaders, and has
    /// the catalog loaded; panics with the nodes' logs otherwise.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        if let Err(e) = self.try_wait_ready(timeout).await {
            panic!("{e}");
        }
    }

    /// Like [`Cluster::wait_ready`], but returns the failure (with the logs' tails).
    pub async fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ready = true;
            for id in self.live_ids() {
                match self.health(id).await {
                    Some(h) if h.catalog_seeded && h.leaders.values().all(Option::is_some) => {}
                    _ => ready = false,
                }
            }
            if ready && self.leader(Group::Catalog).await.is_some() && self.leader(Group::Orders).await.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("cluster not ready within {timeout:?}\n{}", self.logs_tail(40)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for id in self.nodes.keys() {
            let path = self.dir().join(format!("node-{id}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- node {id} ({}) ---\n", path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Removes its rules and chain.
        self.firewall.take();
        for id in self.ids() {
            self.kill(id);
        }
        // Unmount (cleanly: the data stays for a post-mortem) once nothing
        // uses the mounts; a dead lazyfs is unmounted lazily.
        self.disks.clear();
        // A failed test keeps its data and logs for a post-mortem; so does
        // any test with BAZAR_TEST_KEEP set, and a cluster asked to.
        if self.keep || std::thread::panicking() || std::env::var_os("BAZAR_TEST_KEEP").is_some() {
            if std::thread::panicking() || std::env::var_os("BAZAR_TEST_KEEP").is_some() {
                eprintln!("test cluster logs:\n{}", self.logs_tail(60));
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("kept test cluster data in {}", dir.keep().display());
            }
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn picked_ports_are_below_the_ephemeral_range_and_distinct() {
        let ephemeral = ephemeral_ports();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        for p in &ports {
            assert!(*p >= LOWEST_PORT && !ephemeral.contains(p), "port {p} is in the ephemeral range {ephemeral:?}");
        }
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }
}
