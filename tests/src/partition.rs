//! Network partitions between local processes, without containers.
//!
//! Every node of a [`crate::Cluster`] has a loopback address of its own for
//! peer traffic (`127.x.y.<id>`, see [`crate::Cluster::peer_ip`]): it listens
//! there, advertises it, and opens its connections to peers from it. A rule
//! that drops the packets from one such address to another cuts exactly
//! that direction of that link, while clients, which connect from
//! 127.0.0.1, still reach every node: a deposed leader on the minority side
//! keeps being asked for reads and writes, as behind a real partition that
//! leaves the clients' network alone.
//!
//! A [`Firewall`] owns one iptables chain of its own (`BAZAR-<pid>-<n>`),
//! jumped to from `OUTPUT`; every rule it adds lives there, only between
//! loopback addresses. [`Firewall::heal`] removes every rule; dropping the
//! firewall (also while a failed test unwinds) removes the jump, the rules
//! and the chain; a chain whose process was killed by a signal, and so never
//! unwound, is removed by the next [`Firewall::new`] ([`sweep_orphans`]).
//! It needs root and `iptables`; [`available`] says why
//! not. A packet dropped in `OUTPUT` is lost like one on a wire: a `connect`
//! waits out its timeout and TCP retransmits.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result};

/// The variable that allows the partition tests to be skipped on a host
/// that cannot cut links (set it to `1`); without it they fail there.
pub const ALLOW_SKIP: &str = "BAZAR_SKIP_PARTITIONS";

/// For a test that needs partitions: `true` when this host can cut links;
/// otherwise `false` after saying why, if skipping was asked for with
/// [`ALLOW_SKIP`], and a panic (a failed test) if it was not, so that a
/// skipped fault never counts as a pass unnoticed.
pub fn required() -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") => {
            eprintln!("SKIPPED (asked for with {ALLOW_SKIP}=1): {why}");
            false
        }
        Err(why) => {
            panic!("cannot run a partition test: {why}; run as root with iptables, or set {ALLOW_SKIP}=1 to skip")
        }
    }
}

/// Whether this process can cut links: root, and a working `iptables`.
/// Checked once; the error says what is missing.
pub fn available() -> std::result::Result<(), String> {
    static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            // SAFETY: geteuid(2) reads the effective user id and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err("network partitions need root (iptables)".into());
            }
            match Command::new("iptables").args(["-w", "-S", "OUTPUT"]).output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!("iptables -S OUTPUT failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
                Err(e) => Err(format!("network partitions need iptables: {e}")),
            }
        })
        .clone()
}

fn iptables(args: &[&str]) -> Result<()> {
    iptables_output(args).map(drop)
}

/// Runs iptables with `args`; its standard output.
fn iptables_output(args: &[&str]) -> Result<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| Error::Cluster(format!("running iptables: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Cluster(format!("iptables {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// The process that made `chain`, when it is one of ours (`BAZAR-<pid>-<n>`).
fn chain_owner(chain: &str) -> Option<u32> {
    let (pid, n) = chain.strip_prefix("BAZAR-")?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes the chains (and their jumps from `OUTPUT`) that processes which
/// no longer run left behind: a test killed by a signal never unwinds, so
/// its [`Firewall`] is never dropped, and its cuts would stay in force for
/// every later test and program on the machine. Returns the chains removed.
/// [`Firewall::new`] calls it first. A chain that cannot be removed (another
/// sweep got to it first) is left to that sweep: this one says so and goes on.
pub fn sweep_orphans() -> Result<Vec<String>> {
    let rules = iptables_output(&["-S"])?;
    let mut removed = Vec::new();
    for chain in rules.lines().filter_map(|line| line.strip_prefix("-N ")) {
        let Some(pid) = chain_owner(chain) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        while iptables(&["-D", "OUTPUT", "-j", chain]).is_ok() {}
        match iptables(&["-F", chain]).and_then(|()| iptables(&["-X", chain])) {
            Ok(()) => {
                eprintln!("removed iptables chain {chain}, left behind by process {pid}, which no longer runs");
                removed.push(chain.to_string());
            }
            Err(e) => eprintln!("could not remove iptables chain {chain} (process {pid} no longer runs): {e}"),
        }
    }
    Ok(removed)
}

/// The links cut between loopback addresses, as rules in a chain of its own.
pub struct Firewall {
    chain: String,
    /// Directions cut: packets from the first address to the second are dropped.
    cuts: BTreeSet<(IpAddr, IpAddr)>,
}

impl Firewall {
    /// Creates an empty chain of its own and jumps to it from `OUTPUT`.
    pub fn new() -> Result<Firewall> {
        available().map_err(Error::Unsupported)?;
        sweep_orphans()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let chain = format!("BAZAR-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        iptables(&["-N", &chain])?;
        // From here on, Drop cleans up whatever was made.
        let firewall = Firewall { chain, cuts: BTreeSet::new() };
        iptables(&["-I", "OUTPUT", "-j", &firewall.chain])?;
        Ok(firewall)
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The directions cut, as (from, to).
    pub fn cuts(&self) -> &BTreeSet<(IpAddr, IpAddr)> {
        &self.cuts
    }

    fn rule(from: IpAddr, to: IpAddr) -> Result<[String; 6]> {
        if !(from.is_loopback() && to.is_loopback()) || from == to {
            return Err(Error::Cluster(format!("refusing to cut {from} -> {to}: only distinct loopback addresses")));
        }
        Ok(["-s".into(), from.to_string(), "-d".into(), to.to_string(), "-j".into(), "DROP".into()])
    }

    /// Drops every packet from `from` to `to` (one direction); a no-op when
    /// already cut.
    pub fn cut(&mut self, from: IpAddr, to: IpAddr) -> Result<()> {
        let rule = Self::rule(from, to)?;
        if self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        let mut args = vec!["-A", self.chain.as_str()];
        args.extend(rule.iter().map(String::as_str));
        iptables(&args)?;
        self.cuts.insert((from, to));
        Ok(())
    }

    /// Lets packets from `from` to `to` through again; a no-op when not cut.
    pub fn mend(&mut self, from: IpAddr, to: IpAddr) -> Result<()> {
        if !self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        let rule = Self::rule(from, to)?;
        let mut args = vec!["-D", self.chain.as_str()];
        args.extend(rule.iter().map(String::as_str));
        iptables(&args)?;
        self.cuts.remove(&(from, to));
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<()> {
        iptables(&["-F", &self.chain])?;
        self.cuts.clear();
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        // Every step is tried whatever the others did; the jump first, so
        // that the chain can be deleted.
        while iptables(&["-D", "OUTPUT", "-j", &self.chain]).is_ok() {}
        let flushed = iptables(&["-F", &self.chain]);
        let deleted = iptables(&["-X", &self.chain]);
        if let Err(e) = flushed.and(deleted) {
            eprintln!("could not remove iptables chain {}: {e}", self.chain);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    fn chain_exists(chain: &str) -> bool {
        let out = Command::new("iptables").args(["-w", "-S"]).output().expect("iptables -S");
        String::from_utf8_lossy(&out.stdout).contains(chain)
    }

    /// Connects to `to` from the address `from`, within half a second.
    fn connects(from: &str, to: std::net::SocketAddr) -> bool {
        let socket = bound_stream(from, to);
        socket.is_ok()
    }

    fn bound_stream(from: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
        // std cannot bind before connecting: go through tokio's socket.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(format!("{from}:0").parse().expect("an address"))?;
            let stream = tokio::time::timeout(Duration::from_millis(500), socket.connect(to))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
            stream.into_std()
        })
    }

    #[test]
    fn chains_of_processes_that_no_longer_run_are_swept_away() {
        if !required() {
            return;
        }
        // A process that has exited: its id names no running process.
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let orphan = format!("BAZAR-{dead}-0");
        iptables(&["-N", &orphan]).unwrap();
        iptables(&["-I", "OUTPUT", "-j", &orphan]).unwrap();
        iptables(&["-A", &orphan, "-s", "127.0.0.94", "-d", "127.0.0.95", "-j", "DROP"]).unwrap();
        assert_eq!(chain_owner(&orphan), Some(dead));
        assert_eq!(chain_owner("BAZAR-12-x"), None);
        assert_eq!(chain_owner("DOCKER-USER"), None);

        let firewall = Firewall::new().unwrap();

        assert!(!chain_exists(&orphan), "the chain of a process that no longer runs is removed");
        assert!(chain_exists(firewall.chain()), "a live process's chain is kept");
        let rules = iptables_output(&["-S", "OUTPUT"]).unwrap();
        assert!(!rules.contains(&orphan), "its jump from OUTPUT too: {rules}");
    }

    #[test]
    fn a_cut_drops_one_direction_between_two_addresses_and_heals() {
        if !required() {
            return;
        }
        let server = TcpListener::bind("127.0.0.91:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut firewall = Firewall::new().unwrap();
        let chain = firewall.chain().to_string();
        assert!(chain_exists(&chain));
        let (a, b) = ("127.0.0.92".parse().unwrap(), "127.0.0.91".parse().unwrap());
        firewall.cut(a, b).unwrap();
        firewall.cut(a, b).unwrap();
        assert_eq!(firewall.cuts().len(), 1);
        assert!(!connects("127.0.0.92", to), "the cut direction is dropped");
        assert!(connects("127.0.0.93", to), "other addresses still get through");
        assert!(connects("127.0.0.1", to), "so do clients");
        assert!(firewall.cut("10.0.0.1".parse().unwrap(), b).is_err(), "only loopback addresses");
        firewall.heal().unwrap();
        assert!(connects("127.0.0.92", to));
        firewall.cut(a, b).unwrap();
        firewall.mend(a, b).unwrap();
        firewall.mend(a, b).unwrap();
        assert!(connects("127.0.0.92", to));
        firewall.cut(a, b).unwrap();
        drop(firewall);
        assert!(!chain_exists(&chain), "dropping the firewall removes its chain");
        assert!(connects("127.0.0.92", to));
    }
}
