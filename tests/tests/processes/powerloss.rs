//! Power loss: a crash that also loses every write not yet synced to disk.
//!
//! `kill -9` keeps the page cache, so a node that forgot to `fsync` passes
//! every crash test. Here each node's data directory is a lazyfs mount
//! (`bazar_tests::lazyfs`) that drops what was not synced when the power is
//! cut. First lazyfs itself, through a real mount; then the mixed workload
//! under power losses of one node and of every node at once, which must
//! lose no acknowledged order; then the same on nodes that never sync
//! (`--planted-bug no-fsync`), where the checker must report acknowledged
//! orders lost.
//!
//! Needs root and `/dev/fuse`: the tests fail and say so otherwise, unless
//! `BAZAR_SKIP_POWERLOSS=1`.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::time::Duration;

use bazar_api::Group;
use bazar_tests::chaos::{self, ChaosConfig, Outcome};
use bazar_tests::checker::checks;
use bazar_tests::lazyfs::{self, LazyFsProc};
use bazar_tests::nemesis::Fault;
use bazar_tests::{ADMIN_TOKEN, Cluster, ClusterOptions, bin_dir};

#[test]
fn lazyfs_keeps_what_was_synced_and_drops_the_rest_through_a_real_mount() {
    if !lazyfs::required() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (backing, mnt) = (dir.path().join("disk"), dir.path().join("mnt"));
    fs::create_dir_all(&backing).expect("backing");
    fs::write(backing.join("CURRENT"), "MANIFEST-1\n").expect("CURRENT");
    let mut disk = LazyFsProc::mount(&bin_dir().join("bazar-lazyfs"), &backing, &mnt, &dir.path().join("log"))
        .expect("mounting lazyfs");
    let mnt = disk.mountpoint().to_path_buf();
    assert_eq!(fs::read_to_string(mnt.join("CURRENT")).expect("read through the mount"), "MANIFEST-1\n");

    // Written, never synced.
    fs::write(mnt.join("unsynced"), "lost").expect("write");
    // Written and fsynced, then more written after the sync.
    let mut wal = File::create(mnt.join("wal")).expect("create");
    wal.write_all(b"record 1;").expect("write");
    wal.sync_data().expect("fdatasync");
    wal.write_all(b"record 2;").expect("write");
    drop(wal);
    // A new CURRENT written aside, synced, renamed over the old one: without
    // a sync of the directory the rename is not durable.
    let mut tmp = File::create(mnt.join("CURRENT.tmp")).expect("create");
    tmp.write_all(b"MANIFEST-2\n").expect("write");
    tmp.sync_all().expect("fsync");
    drop(tmp);
    fs::rename(mnt.join("CURRENT.tmp"), mnt.join("CURRENT")).expect("rename");
    // A directory whose new file is synced, and the directory synced too.
    fs::create_dir(mnt.join("snapshots")).expect("mkdir");
    fs::write(mnt.join("snapshots/a.snap"), "snap").expect("write");
    File::open(mnt.join("snapshots")).expect("open dir").sync_all().expect("fsync dir");
    // Overwritten in place, unsynced, through a file open for writing.
    let mut f = OpenOptions::new().write(true).open(mnt.join("wal")).expect("open");
    f.write_all(b"RECORD").expect("overwrite");
    drop(f);
    assert_eq!(fs::read_to_string(mnt.join("wal")).expect("read"), "RECORD 1;record 2;");

    disk.power_cut().expect("power cut");
    assert!(!lazyfs::is_mounted(&mnt), "unmounted by the cut");
    assert!(!backing.join("unsynced").exists(), "a file never synced is gone");
    assert_eq!(fs::read_to_string(backing.join("wal")).expect("wal"), "record 1;", "only the synced prefix stays");
    assert_eq!(fs::read_to_string(backing.join("CURRENT")).expect("CURRENT"), "MANIFEST-1\n", "rename not durable");
    assert_eq!(fs::read_to_string(backing.join("CURRENT.tmp")).expect("tmp"), "MANIFEST-2\n");
    assert_eq!(fs::read_to_string(backing.join("snapshots/a.snap")).expect("snap"), "", "named, data never synced");

    // Powered on again: the mount shows what the disk kept, and a rename
    // made durable by a directory sync survives the next cut.
    disk.power_on().expect("power on");
    assert_eq!(fs::read_to_string(mnt.join("wal")).expect("wal"), "record 1;");
    fs::rename(mnt.join("CURRENT.tmp"), mnt.join("CURRENT")).expect("rename");
    File::open(&mnt).expect("open root").sync_all().expect("fsync root");
    disk.power_cut().expect("power cut");
    assert_eq!(fs::read_to_string(backing.join("CURRENT")).expect("CURRENT"), "MANIFEST-2\n");
    assert!(!backing.join("CURRENT.tmp").exists());
    disk.power_on().expect("power on");
    disk.unmount().expect("unmount");
    assert!(!lazyfs::is_mounted(&mnt));
}

/// Runs the workload for `seconds` on a fresh 3-node cluster on lazyfs
/// (nodes started with `node_args`) while the nemesis cycles `faults`.
async fn power_chaos(node_args: &[&str], faults: Vec<Fault>, seconds: u64) -> (Cluster, Outcome) {
    let mut cluster = Cluster::start_with(3, node_args, ClusterOptions { lazyfs: true, ..Default::default() }).await;
    let config = ChaosConfig::new(cluster.endpoints(), ADMIN_TOKEN, faults, Duration::from_secs(seconds));
    let outcome = chaos::run_on_cluster(&mut cluster, &config).await.expect("the chaos run");
    eprintln!("{}", outcome.report.table());
    (cluster, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_losses_of_one_node_and_of_every_node_lose_no_acknowledged_order() {
    if !lazyfs::required() {
        return;
    }
    let (_cluster, outcome) = power_chaos(&[], vec![Fault::PowerLossAll, Fault::PowerLossNode], 24).await;
    let report = &outcome.report;
    assert!(report.passed(), "violations:\n{}", report.violations().join("\n"));
    assert!(report.conclusive(), "a linearizability search gave up: {:?}", report.books);
    let injected: Vec<_> = outcome.faults.iter().filter(|f| f.skipped.is_none()).map(|f| f.fault).collect();
    assert!(injected.contains(&Fault::PowerLossAll), "every node lost power at least once: {:?}", outcome.faults);
    assert!(report.buys.acknowledged > 50, "the workload made progress: {:?}", report.buys);
}

/// After every node loses power at once, each group elects its next leader
/// in a new term. The old leader must not resume leading in its old term
/// (openraft's "leader restore" on startup): it sends entries to its
/// followers before its own `fsync` completes, so a power cut can take from
/// it entries that its followers kept, and leading on in the same term it
/// would write other entries under those same log ids. The followers, which
/// match entries by log id, would keep theirs: the replicas diverge and
/// acknowledged orders are lost (found by the chaos test above, one run in
/// a few dozen; this test shows the mechanism every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_power_does_not_lead_again_in_its_old_term() {
    if !lazyfs::required() {
        return;
    }
    let mut cluster = Cluster::start_with(3, &[], ClusterOptions { lazyfs: true, ..Default::default() }).await;
    cluster.wait_ready(Duration::from_secs(30)).await;
    for round in 1..=2 {
        let mut before = Vec::new();
        for group in Group::ALL {
            let leader = cluster.wait_leader(group, None, Duration::from_secs(10)).await;
            before.push((group, leader, term(&cluster, leader, group).await));
        }
        for id in cluster.ids() {
            cluster.kill(id);
        }
        for id in cluster.ids() {
            cluster.power_cut(id).expect("power cut");
        }
        for id in cluster.ids() {
            cluster.ensure_running(id);
        }
        for (group, old_leader, old_term) in before {
            let leader = cluster.wait_leader(group, None, Duration::from_secs(20)).await;
            let now = term(&cluster, leader, group).await;
            assert!(
                now > old_term,
                "round {round}: the {group} group is led by node {leader} in term {now} after the power loss; node \
                 {old_leader} led it in term {old_term} before: a leader came back in its old term"
            );
        }
    }
}

/// The term of `group` as node `id` reports it.
async fn term(cluster: &Cluster, id: u64, group: Group) -> u64 {
    let health = cluster.health(id).await.unwrap_or_else(|| panic!("node {id} answers /health"));
    health.groups.get(&group).unwrap_or_else(|| panic!("node {id} reports the {group} group")).term
}

/// The planted bug: nodes that report log appends durable without syncing
/// them. A `kill -9` of every node would lose nothing (the page cache
/// survives); a power loss of every node loses acknowledged orders, and
/// the checker must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_nodes_that_never_sync_losing_acknowledged_orders_in_a_power_loss() {
    if !lazyfs::required() {
        return;
    }
    let (_cluster, outcome) = power_chaos(&["--planted-bug", "no-fsync"], vec![Fault::PowerLossAll], 14).await;
    let report = &outcome.report;
    let lost: Vec<String> =
        report.violations().into_iter().filter(|v| v.starts_with(&format!("[{}]", checks::DURABLE))).collect();
    assert!(
        !lost.is_empty(),
        "the planted lost writes went unnoticed; violations: {:?}; faults: {:?}",
        report.violations(),
        outcome.faults
    );
    eprintln!("caught, as expected: {} (of {} violations)", lost[0], report.violations().len());
}
