//! Backup and restore with real processes: `bazar backup FILE` from a
//! cluster under load, new clusters seeded from the file with
//! `raft-node --restore FILE`, and damaged files refused.
//!
//! The source cluster keeps idempotency keys for 2 s only, so purge rounds
//! run all along and store fences (log indexes) in both groups: a restored
//! cluster whose logs did not go on from the backup's indexes would refuse
//! its buys as stale.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::backup::Manifest;
use bazar_api::{Consistency, Group, Order, OrderFilter, OrderStatus};
use bazar_client::Client;
use bazar_tests::{ADMIN_TOKEN, CLUSTER_TOKEN, Cluster, bin_dir};
use tokio::time::Instant;

const LINEARIZABLE: Option<Consistency> = Some(Consistency::Linearizable);

/// Every book's stock, read linearizably.
async fn stocks(client: &Client) -> BTreeMap<u64, u64> {
    let mut stock = BTreeMap::new();
    for id in 1.. {
        match client.lookup(id, LINEARIZABLE).await {
            Ok(book) => stock.insert(id, book.value.stock),
            Err(e) if e.to_string().contains("no book") => break,
            Err(e) => panic!("reading book {id}: {e}"),
        };
    }
    assert!(!stock.is_empty(), "the catalog has books");
    stock
}

/// Every order, read linearizably.
async fn all_orders(client: &Client) -> BTreeMap<u64, Order> {
    let mut orders = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client.orders(&OrderFilter::All, Some(1000), cursor.as_deref(), LINEARIZABLE).await.expect("orders");
        orders.extend(page.value.orders.into_iter().map(|o| (o.order_id, o)));
        match page.value.next_cursor {
            Some(next) => cursor = Some(next),
            None => return orders,
        }
    }
}

/// Waits until no buy is left unsettled on any node.
async fn settled(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut unsettled = 0;
        for id in cluster.ids() {
            let health = cluster.client(id).node_health().await;
            unsettled += health.map(|h| h.unclaimed_buys).unwrap_or(1);
        }
        if unsettled == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "buys still unsettled after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the retention purge has removed every idempotency key and
/// reservation, so that the state stops changing.
async fn purged(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = |d: &bazar_api::Digest, kind: &str| d.rows.get(kind).map(|r| r.rows).unwrap_or(0);
    loop {
        let orders = cluster.client(1).digest(Group::Orders).await.expect("digest");
        let catalog = cluster.client(1).digest(Group::Catalog).await.expect("digest");
        if rows(&orders, "idempotency_keys") == 0 && rows(&catalog, "reservations") == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "keys not purged after 30 s: {:?} {:?}", orders.rows, catalog.rows);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the `bazar` CLI with `args`; returns its exit code, stdout and stderr.
async fn bazar(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin_dir().join("bazar"))
        .args(args)
        .env("BAZAR_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("running bazar");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `bazar backup FILE` through node 1; returns the manifest it printed.
async fn backup(cluster: &Cluster, file: &Path) -> Manifest {
    let frontend = format!("http://{}", cluster.client_addr(1));
    let (code, stdout, stderr) = bazar(&["--frontend", &frontend, "--json", "backup", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "bazar backup failed:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bazar backup printed {stdout:?}: {e}"))
}

/// Every node's digest of every group, once each node has applied exactly
/// what `manifest` holds and nothing that changes state since, equals the
/// manifest's. Nodes whose index moved on are asked again.
async fn digests_match(cluster: &Cluster, manifest: &Manifest, what: &str) {
    for id in cluster.ids() {
        for group in Group::ALL {
            let want = manifest.group(group).expect("both groups");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let digest = cluster.client(id).digest(group).await.expect("digest");
                if digest.digest == want.digest {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: node {id}'s {group} digest at index {} is {}, the backup's at {} is {}",
                    digest.applied_index,
                    digest.digest,
                    want.applied_index,
                    want.digest
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_seeds_a_new_cluster_with_every_acknowledged_order() {
    let files = tempfile::tempdir().expect("temp dir");
    let under_load = files.path().join("under-load.bzb");
    let quiet = files.path().join("quiet.bzb");

    let source = Cluster::start(3, &["--idempotency-retention", "2s"]).await;
    let initial = stocks(&source.client(1)).await;

    // Buyers, each order recorded with when it was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(Order, Instant)>>> = Arc::default();
    let books: Vec<u64> = initial.keys().copied().collect();
    let buyers: Vec<_> = (0..4u64)
        .map(|b| {
            let client = source.client(1 + b % 3);
            let (stop, acked, books) = (stop.clone(), acked.clone(), books.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let book = books[((n * 7 + b) % books.len() as u64) as usize];
                    let key = format!("backup-test-{b}-{n}");
                    if let Ok(order) = client.buy(book, 1, Some(&key)).await {
                        acked.lock().unwrap().push((order, Instant::now()));
                    }
                }
            })
        })
        .collect();

    // Purge rounds run (2 s window) while the buys go on; then the backup.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let backup_started = Instant::now();
    let before_backup: Vec<Order> =
        acked.lock().unwrap().iter().filter(|(_, at)| *at < backup_started).map(|(o, _)| o.clone()).collect();
    let taken = backup(&source, &under_load).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for b in buyers {
        b.await.expect("buyer");
    }
    assert!(before_backup.len() > 20, "the buyers made progress before the backup: {}", before_backup.len());
    eprintln!("backup under load: {taken:?}; {} buys acknowledged before it", before_backup.len());

    // A backup of the quiet cluster (every key purged) is every replica's
    // state, digest for digest.
    settled(&source).await;
    purged(&source).await;
    let quiet_manifest = backup(&source, &quiet).await;
    digests_match(&source, &quiet_manifest, "source").await;
    let source_orders = all_orders(&source.client(1)).await;
    drop(source);

    // Damaged copies are refused, by the CLI and by a node.
    let bytes = std::fs::read(&under_load).expect("backup file");
    let corrupted = files.path().join("corrupted.bzb");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    std::fs::write(&corrupted, &flipped).unwrap();
    let truncated = files.path().join("truncated.bzb");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    for (file, word) in [(&corrupted, "corrupted"), (&truncated, "truncated")] {
        let (code, _, stderr) = bazar(&["restore", file.to_str().unwrap()]).await;
        assert_eq!(code, 1, "bazar restore of a {word} backup: {stderr}");
        assert!(stderr.contains(&format!("the backup is {word}")), "{stderr}");
        let (code, stderr) = node_with_restore(file, &files.path().join(format!("node-{word}"))).await;
        assert_ne!(code, 0, "a node refuses to start from a {word} backup");
        assert!(stderr.contains(&format!("the backup is {word}")), "{stderr}");
    }
    let (code, stdout, stderr) = bazar(&["restore", under_load.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("checks out"), "{stdout}");

    // The quiet backup restores to exactly its state on every node.
    let restore_arg = |file: &PathBuf| vec!["--restore".to_string(), file.to_str().unwrap().to_string()];
    let args = restore_arg(&quiet);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let quiet_copy = Cluster::start(3, &args).await;
    digests_match(&quiet_copy, &quiet_manifest, "restored from the quiet backup").await;
    assert_eq!(all_orders(&quiet_copy.client(2)).await, source_orders, "the same orders");
    let last_order = *source_orders.keys().last().expect("orders");
    let order = restock_and_buy(&quiet_copy).await;
    assert!(order.order_id > last_order, "order ids go on from the backup: {} after {last_order}", order.order_id);
    drop(quiet_copy);

    // The backup under load: every buy acknowledged before it is there, and
    // once the buys in flight are settled, stock is conserved.
    let args = restore_arg(&under_load);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let restored = Cluster::start(3, &args).await;
    settled(&restored).await;
    let orders = all_orders(&restored.client(3)).await;
    for o in &before_backup {
        let r = orders
            .get(&o.order_id)
            .unwrap_or_else(|| panic!("order {} acknowledged before the backup is lost", o.order_id));
        assert_eq!((r.book_id, r.quantity, r.status), (o.book_id, o.quantity, o.status), "order {}", o.order_id);
    }
    assert!(orders.values().all(|o| o.status != OrderStatus::Pending), "every order settled");
    let stock = stocks(&restored.client(1)).await;
    for (id, initial) in &initial {
        let sold: u64 = orders
            .values()
            .filter(|o| o.book_id == *id && o.status == OrderStatus::Confirmed)
            .map(|o| o.quantity)
            .sum();
        assert_eq!(stock[id] + sold, *initial, "book {id}: {} in stock and {sold} sold of {initial}", stock[id]);
    }
    let last_order = *orders.keys().last().expect("orders");
    let order = restock_and_buy(&restored).await;
    assert!(order.order_id > last_order, "order ids go on from the backup: {} after {last_order}", order.order_id);
}

/// Restocks book 1 and buys a copy of it: both groups take writes.
async fn restock_and_buy(cluster: &Cluster) -> Order {
    cluster.client(1).restock(1, 5).await.expect("a restock after the restore");
    let order = cluster.client(2).buy(1, 1, Some("after-restore")).await.expect("a buy after the restore");
    assert_eq!(order.status, OrderStatus::Confirmed);
    order
}

/// Starts a single node with `--restore file` in `dir`; returns its exit
/// code and output once it exits (it must, within 30 s).
async fn node_with_restore(file: &Path, dir: &Path) -> (i32, String) {
    let port = bazar_tests::free_port();
    let child = tokio::process::Command::new(bin_dir().join("raft-node"))
        .args(["--id", "1", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .arg("--restore")
        .arg(file)
        .env("BAZAR_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("BAZAR_CLUSTER_TOKEN", CLUSTER_TOKEN)
        .env("BAZAR_FRONTEND_TOKEN", "frontend")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), child).await.expect("the node exits").expect("raft-node");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}
