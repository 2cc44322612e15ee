//! Bazar in containers under real network faults.
//!
//! The cluster runs as the images and the compose file of `docker/`, driven
//! through `scripts/docker.sh` exactly as a user would drive it. While the
//! chaos workload ([`bazar_tests::runner`]) runs against the three nodes, the
//! nemesis ([`bazar_tests::nemesis`]) partitions the catalog leader away from
//! the majority (`docker network disconnect`), then the orders leader,
//! isolates a minority node, and kills (`docker kill`, SIGKILL) and restarts
//! a leader's container; each fault is healed before the next. The history
//! and the final state must then pass every check of guarantees §6
//! ([`bazar_tests::checker`]), and a recreation of every container must find
//! the same data on the named volumes.
//!
//! Without a Docker engine (or without compose) the test fails and says
//! why, unless skipping was asked for with `BAZAR_SKIP_CONTAINERS=1` (then
//! it prints why it skipped). With one, it is bounded ([`BUDGET`]), uses its own
//! compose project, subnet, host ports and tokens so that it never touches a
//! user's cluster, and removes everything it created (`down -v`), whether it
//! passes or fails.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bazar_api::{Consistency, Group, NodeHealth};
use bazar_client::Client;
use bazar_tests::chaos::{self, ChaosConfig};
use bazar_tests::history::{Clock, History};
use bazar_tests::nemesis::{Action, Fault, FaultInjector};
use bazar_tests::{ADMIN_TOKEN, CLUSTER_TOKEN, Error, Result, bin_dir};
use rand::Rng;
use tokio::process::Command;
use tokio::time::Instant;

/// Raft nodes in the compose file.
const NODES: u64 = 3;
/// The whole test, from `docker info` to the last check (teardown comes after).
const BUDGET: Duration = Duration::from_secs(360);
/// Port every node listens on inside its container.
const NODE_PORT: u16 = 7101;

/// Why containers cannot be tested here, if they cannot.
fn docker_missing() -> Option<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if !on_path("docker") {
        return Some("no Docker engine (the docker command is not installed)".into());
    }
    let info = std::process::Command::new("timeout")
        .args(["20", "docker", "info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output();
    match info {
        Err(e) => return Some(format!("no Docker engine (cannot run docker: {e})")),
        Ok(out) if !out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            return Some(format!("no Docker engine answers ({})", err.trim()));
        }
        Ok(_) => {}
    }
    let v2 = std::process::Command::new("docker").args(["compose", "version"]).output();
    let v1 = std::process::Command::new("docker-compose").arg("version").output();
    if !v2.is_ok_and(|o| o.status.success()) && !v1.is_ok_and(|o| o.status.success()) {
        return Some("a Docker engine answers, but neither `docker compose` nor docker-compose is installed".into());
    }
    None
}

/// IPv4 networks as (address, prefix length).
type Net = (u32, u32);

fn parse_cidr(s: &str) -> Option<Net> {
    let (ip, len) = s.split_once('/')?;
    Some((u32::from(ip.parse::<Ipv4Addr>().ok()?), len.parse().ok().filter(|l| *l <= 32)?))
}

fn overlap(a: Net, b: Net) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.0 & mask == b.0 & mask
}

/// Networks in use: Docker's networks and the host's routes (but the default route).
fn used_networks() -> Vec<Net> {
    let mut used = Vec::new();
    let ids = std::process::Command::new("docker").args(["network", "ls", "--quiet"]).output();
    if let Ok(ids) = ids {
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let out = std::process::Command::new("docker")
                .args(["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"])
                .args(&ids)
                .output();
            if let Ok(out) = out {
                used.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(parse_cidr));
            }
        }
    }
    // /proc/net/route: destination and mask as the raw network-order words, in native hex.
    for line in std::fs::read_to_string("/proc/net/route").unwrap_or_default().lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(dest), Some(mask)) = (f.get(1), f.get(7))
            && let (Ok(dest), Ok(mask)) = (u32::from_str_radix(dest, 16), u32::from_str_radix(mask, 16))
            && mask != 0
        {
            used.push((u32::from_be_bytes(dest.to_ne_bytes()), mask.count_ones()));
        }
    }
    used
}

/// A free /24 in 172.29.0.0/16, as its first three octets.
fn free_subnet() -> String {
    let used = used_networks();
    let start: u32 = rand::rng().random_range(0..256);
    (0..256)
        .map(|i| (start + i) % 256)
        .map(|x| format!("172.29.{x}"))
        .find(|prefix| {
            let net = parse_cidr(&format!("{prefix}.0/24")).expect("a /24");
            !used.iter().any(|u| overlap(*u, net))
        })
        .expect("no free /24 in 172.29.0.0/16")
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A base such that base+1..=base+3 are free loopback ports, and one more free port.
fn free_ports() -> (u16, u16) {
    let mut rng = rand::rng();
    loop {
        // Below the kernel's ephemeral range: the project is recreated on
        // the same ports, which an outgoing connection could take meanwhile.
        let below = bazar_tests::ephemeral_ports().start().saturating_sub(20).max(20_001);
        let base: u16 = rng.random_range(20_000..below);
        let frontend = base + 10;
        if (1..=3).all(|i| port_free(base + i)) && port_free(frontend) {
            return (base, frontend);
        }
    }
}

/// A compose project of this test, driven by `scripts/docker.sh`.
struct Containers {
    root: PathBuf,
    /// `BAZAR_DATA` of the script: env file, tokens (unused: the tokens are
    /// passed in the environment), and the history of the run.
    data: Option<tempfile::TempDir>,
    project: String,
    /// First three octets of the project's /24.
    net: String,
    port_base: u16,
    frontend_port: u16,
}

impl Containers {
    fn new() -> Containers {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let (port_base, frontend_port) = free_ports();
        Containers {
            root,
            data: Some(tempfile::Builder::new().prefix("bazar-containers-").tempdir().expect("temp dir")),
            project: format!("bazar-test-{}", std::process::id()),
            net: free_subnet(),
            port_base,
            frontend_port,
        }
    }

    fn data(&self) -> PathBuf {
        self.data.as_ref().expect("data dir").path().to_path_buf()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BAZAR_DATA", self.data().display().to_string()),
            ("BAZAR_DOCKER_PROJECT", self.project.clone()),
            ("BAZAR_DOCKER_SUBNET", format!("{}.0/24", self.net)),
            ("BAZAR_DOCKER_PORT_BASE", self.port_base.to_string()),
            ("BAZAR_DOCKER_FRONTEND_PORT", self.frontend_port.to_string()),
            ("BAZAR_BIN_DIR", bin_dir().display().to_string()),
            ("BAZAR_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("BAZAR_CLUSTER_TOKEN", CLUSTER_TOKEN.into()),
            ("BAZAR_UP_TIMEOUT", "90".into()),
        ]
    }

    /// Runs `scripts/docker.sh ARGS`, killed after `timeout`; its stdout, or
    /// what went wrong with both outputs.
    async fn script(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut cmd = Command::new(self.root.join("scripts/docker.sh"));
        cmd.args(args).envs(self.env()).stdin(Stdio::null()).kill_on_drop(true);
        let what = format!("scripts/docker.sh {}", args.join(" "));
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| Error::Cluster(format!("{what} did not finish within {timeout:?}")))?
            .map_err(|e| Error::Cluster(format!("{what}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(Error::Cluster(format!("{what} failed ({}):\n{stdout}{stderr}", out.status)))
        }
    }

    fn container(&self, id: u64) -> String {
        format!("{}-node-{id}", self.project)
    }

    fn addr(&self, id: u64) -> String {
        format!("{}.1{id}:{NODE_PORT}", self.net)
    }

    fn endpoints(&self) -> Vec<String> {
        (1..=NODES).map(|id| format!("http://{}", self.addr(id))).collect()
    }

    fn client(&self, id: u64, timeout: Duration) -> Client {
        Client::builder(format!("http://{}", self.addr(id)))
            .admin_token(ADMIN_TOKEN)
            .timeout(timeout)
            .build()
            .expect("client")
    }

    /// `/health` of node `id` from the host, if it answers within a second.
    async fn health(&self, id: u64) -> Option<NodeHealth> {
        let client = self.client(id, Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(1), client.node_health()).await.ok()?.ok()
    }

    /// The container's state (running, paused, exited, ...) and whether it
    /// is attached to the project's network.
    async fn state(&self, id: u64) -> Result<(String, bool)> {
        let format = "{{.State.Status}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}";
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            Command::new("docker")
                .args(["inspect", "--format", format, &self.container(id)])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| Error::Cluster("docker inspect timed out".into()))?
        .map_err(|e| Error::Cluster(format!("docker inspect: {e}")))?;
        if !out.status.success() {
            return Err(Error::Cluster(format!(
                "docker inspect {}: {}",
                self.container(id),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        let status = words.next().unwrap_or("unknown").to_string();
        let network = format!("{}-net", self.project);
        Ok((status, words.any(|w| w == network)))
    }

    /// Whether the project runs a frontend (its image exists once the
    /// frontend binary does).
    async fn frontend_running(&self) -> bool {
        let name = format!("{}-frontend", self.project);
        let out = Command::new("docker").args(["inspect", "--format", "{{.State.Status}}", &name]).output().await;
        out.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "running")
    }

    /// Everything the database holds, read linearizably: every order and every book.
    async fn contents(&self) -> (Vec<bazar_api::Order>, Vec<bazar_api::Book>) {
        let client = self.client(1, Duration::from_secs(10));
        let orders = client
            .list_all_orders(&bazar_api::OrderFilter::All, Some(Consistency::Linearizable))
            .await
            .expect("listing orders");
        let books = client.list_all_books(None, Some(Consistency::Linearizable)).await.expect("listing books");
        (orders, books)
    }

    /// The last lines of every container's log, for a post-mortem.
    fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for id in 1..=NODES {
            let logs = std::process::Command::new("timeout")
                .args(["20", "docker", "logs", "--tail", &lines.to_string(), &self.container(id)])
                .output();
            out.push_str(&format!("--- {} ---\n", self.container(id)));
            if let Ok(logs) = logs {
                out.push_str(&String::from_utf8_lossy(&logs.stdout));
                out.push_str(&String::from_utf8_lossy(&logs.stderr));
            }
        }
        out
    }

    /// Removes the project (containers, network, volumes), and then anything
    /// of it that is left, by name: only what this test created.
    fn teardown(&self) {
        let down = std::process::Command::new("timeout")
            .arg("180")
            .arg(self.root.join("scripts/docker.sh"))
            .args(["down", "-v"])
            .envs(self.env())
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = &down
            && !out.status.success()
        {
            eprintln!("scripts/docker.sh down -v failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new("timeout").arg("60").arg("docker").args(args).output();
        };
        for id in 1..=NODES {
            quiet(&["rm", "--force", "--volumes", &self.container(id)]);
        }
        quiet(&["rm", "--force", &format!("{}-frontend", self.project)]);
        quiet(&["network", "rm", &format!("{}-net", self.project)]);
        for id in 1..=NODES {
            quiet(&["volume", "rm", &format!("{}-node-{id}-data", self.project)]);
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!("container logs:\n{}", self.logs_tail(40));
        }
        self.teardown();
        if (failed || std::env::var_os("BAZAR_TEST_KEEP").is_some())
            && let Some(dir) = self.data.take()
        {
            eprintln!("kept the run's history and env file in {}", dir.keep().display());
        }
    }
}

/// Faults carried out with `scripts/docker.sh`. Every action first looks at
/// the container, so that repeating it changes nothing.
impl FaultInjector for Containers {
    fn node_ids(&self) -> Vec<u64> {
        (1..=NODES).collect()
    }

    fn supports(&self, action: Action) -> bool {
        // Whole containers only: no single direction of a link, no clock,
        // no power cut (that needs lazyfs); membership changes are tested on
        // local processes.
        !matches!(action, Action::Cut(..) | Action::Mend(..) | Action::Remove(_) | Action::Add(_) | Action::PowerCut(_))
            && !action.is_clock()
    }

    async fn act(&mut self, action: Action) -> Result<()> {
        let n = action.node().to_string();
        let (status, attached) = self.state(action.node()).await?;
        let verb = match action {
            Action::Kill(_) if status == "running" || status == "paused" => "kill",
            Action::Start(_) if status == "paused" => "resume",
            Action::Start(_) if status != "running" => "restart",
            Action::Pause(_) if status == "running" => "pause",
            Action::Pause(_) if status != "paused" => {
                return Err(Error::Cluster(format!("cannot pause node {n}: it is {status}")));
            }
            Action::Resume(_) if status == "paused" => "resume",
            Action::Isolate(_) if attached => "partition",
            Action::Rejoin(_) if !attached => "heal",
            _ => return Ok(()),
        };
        self.script(&[verb, &n], Duration::from_secs(120)).await.map(|_| ())
    }

    async fn find_leader(&mut self, group: Group) -> Option<u64> {
        // Only attached, running nodes answer the host; a majority of all
        // nodes must name the same leader.
        let mut votes = std::collections::BTreeMap::<u64, u64>::new();
        for id in 1..=NODES {
            if let Some(h) = self.health(id).await
                && let Some(Some(leader)) = h.leaders.get(&group)
            {
                *votes.entry(*leader).or_default() += 1;
            }
        }
        votes.into_iter().find(|(_, v)| *v > NODES / 2).map(|(leader, _)| leader)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = Vec::new();
            for id in 1..=NODES {
                all.push(self.health(id).await);
            }
            let ready = all.iter().all(|h| h.as_ref().is_some_and(|h| h.catalog_seeded));
            let agree = Group::ALL.iter().all(|g| {
                let leaders: Vec<Option<u64>> =
                    all.iter().map(|h| h.as_ref().and_then(|h| h.leaders.get(g).copied().flatten())).collect();
                leaders[0].is_some() && leaders.windows(2).all(|w| w[0] == w[1])
            });
            if ready && agree {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Cluster(format!("the containers were not healthy within {timeout:?}: {all:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A skipped container test never passes unnoticed: it fails unless
/// skipping was asked for with `BAZAR_SKIP_CONTAINERS=1`.
fn skip_or_fail(why: &str) {
    if std::env::var("BAZAR_SKIP_CONTAINERS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED (asked for with BAZAR_SKIP_CONTAINERS=1): {why}");
    } else {
        panic!("cannot run the container test: {why}; set BAZAR_SKIP_CONTAINERS=1 to skip it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_cluster_keeps_every_promise_through_partitions_kills_and_restarts() {
    if let Some(why) = docker_missing() {
        skip_or_fail(&why);
        return;
    }
    let mut containers = Containers::new();
    let started = Instant::now();
    match tokio::time::timeout(BUDGET, scenario(&mut containers)).await {
        Ok(()) => eprintln!("container chaos test passed in {:.0?}", started.elapsed()),
        Err(_) => panic!("the container test did not finish within {BUDGET:?}"),
    }
}

async fn scenario(c: &mut Containers) {
    let t = Instant::now();
    let built = c.script(&["build"], Duration::from_secs(300)).await.unwrap_or_else(|e| panic!("{e}"));
    eprint!("{built}");
    eprintln!("images built in {:.1?}", t.elapsed());

    let t = Instant::now();
    c.script(&["up"], Duration::from_secs(150)).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("project {} up on {}.0/24 in {:.1?}", c.project, c.net, t.elapsed());
    if c.health(1).await.is_none() {
        // The nodes answer inside their containers (`up` checked), but this
        // host cannot route to the bridge (a remote engine, a VM between).
        skip_or_fail(&format!(
            "this host cannot reach the containers' addresses ({}): is the engine remote?",
            c.addr(1)
        ));
        return;
    }

    // The faults of the issue, each healed before the next, cycling until
    // the schedule's window closes.
    let faults = vec![
        Fault::PartitionLeader(Group::Catalog),
        Fault::PartitionLeader(Group::Orders),
        Fault::IsolateMinority,
        Fault::KillLeader(Group::Catalog),
    ];
    // The workload talks to the nodes and, once it is built, the frontend.
    let mut endpoints = c.endpoints();
    if c.frontend_running().await {
        endpoints.push(format!("http://{}.10:8080", c.net));
    }
    eprintln!("workload endpoints: {endpoints:?}");
    let mut config = ChaosConfig::new(endpoints, ADMIN_TOKEN, faults.clone(), Duration::from_secs(50));
    config.schedule.hold = Duration::from_secs(3);
    config.runner.clients = 6;
    let history = History::to_file(Clock::start(), &c.data().join("history.jsonl")).expect("history file");
    let nodes: Vec<(u64, Client)> = (1..=NODES).map(|id| (id, c.client(id, Duration::from_secs(5)))).collect();

    let t = Instant::now();
    let outcome =
        chaos::run(c, &nodes, &config, &history).await.unwrap_or_else(|e| panic!("the chaos run failed: {e}"));
    eprintln!("chaos run: {} operations in {:.1?}\n{}", outcome.invoked, t.elapsed(), outcome.report.table());
    for fault in &faults {
        let injected = outcome.faults.iter().any(|f| f.fault == *fault && f.skipped.is_none());
        assert!(injected, "{fault} was never injected: {:#?}", outcome.faults);
    }
    assert!(outcome.report.passed(), "violations:\n{}", outcome.report.violations().join("\n"));
    assert!(outcome.report.buys.acknowledged > 20, "the workload made progress: {:?}", outcome.report.buys);

    // Recreate every container: the data is on the named volumes.
    let t = Instant::now();
    let before = c.contents().await;
    c.script(&["down"], Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}"));
    c.script(&["up"], Duration::from_secs(150)).await.unwrap_or_else(|e| panic!("{e}"));
    c.wait_healthy(Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}"));
    let after = c.contents().await;
    assert_eq!(before.0, after.0, "the orders survive recreating the containers");
    assert_eq!(before.1, after.1, "the books survive recreating the containers");
    eprintln!(
        "recreated every container in {:.1?}: {} orders and {} books kept",
        t.elapsed(),
        after.0.len(),
        after.1.len()
    );
}

#[test]
fn cidr_overlap_is_computed_on_the_shorter_prefix() {
    let net = |s: &str| parse_cidr(s).unwrap();
    assert!(overlap(net("172.29.5.0/24"), net("172.16.0.0/12")));
    assert!(overlap(net("172.29.5.0/24"), net("172.29.5.128/25")));
    assert!(!overlap(net("172.29.5.0/24"), net("172.29.6.0/24")));
    assert!(!overlap(net("172.29.5.0/24"), net("10.0.0.0/8")));
    assert_eq!(parse_cidr("172.29.5.0/33"), None);
}
