//! A healthy three-node cluster: formation, routing of writes, follower
//! reads, and catching a lagging follower up from a snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use bazar_api::{Book, Consistency, ErrorCode, Group, Problem};
use bazar_tests::check::Ledger;
use bazar_tests::check::{check_all, converged};
use bazar_tests::{ADMIN_TOKEN, Cluster};

fn classic_stock() -> BTreeMap<u64, u64> {
    (1..=7).map(|id| (id, 1000)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_and_serve_the_classic_catalog() {
    let mut cluster = Cluster::start(3, &[]).await;
    for id in cluster.ids() {
        let client = cluster.client(id);
        let page = client.search("distributed systems", None, None, Some(Consistency::Linearizable)).await.unwrap();
        assert_eq!(page.value.books.iter().map(|b| b.id).collect::<Vec<_>>(), vec![1, 2, 5], "node {id}");
        assert_eq!(page.meta.served_by.as_deref(), Some(id.to_string().as_str()));
        let page = client.search("undergraduate school", None, None, None).await.unwrap();
        assert_eq!(page.value.books.len(), 4);
        let book = client.lookup(3, None).await.unwrap().value;
        assert_eq!(book.title, "Xen and the Art of Surviving Undergraduate School");
    }
    let status = cluster.client(1).cluster_status().await.unwrap();
    for g in &status.groups {
        assert_eq!(g.members.len(), 3);
        assert!(g.members.iter().all(|m| m.voter));
    }
    let mut ledger = Ledger::default();
    let order = cluster.client(2).buy(1, 2, Some("first-buy")).await.unwrap();
    ledger.acked.push(order);
    let book = cluster.client(3).restock(1, 5).await.unwrap();
    ledger.restocked.insert(1, 5);
    assert_eq!(book.stock, 1003);
    check_all(&mut cluster, &classic_stock(), &ledger, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_follower_are_refused_with_the_leaders_address() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{}/books/1/restock", cluster.addr(follower)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
    let p: Problem = r.json().await.unwrap();
    assert_eq!(p.code, ErrorCode::NotLeader);
    assert_eq!(p.leader_id, Some(leader));
    assert_eq!(p.leader_addr, Some(cluster.addr(leader)));
    // Nothing was proposed on the follower's behalf.
    let book = cluster.client(leader).lookup(1, Some(Consistency::Linearizable)).await.unwrap().value;
    assert_eq!(book.stock, 1000);
    // The client library follows the hint.
    assert_eq!(cluster.client(follower).restock(1, 1).await.unwrap().stock, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_reads_that_see_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    for round in 1..=20u64 {
        let written = cluster.client(leader).restock(2, 1).await.unwrap();
        for &f in &followers {
            for consistency in [Consistency::Linearizable, Consistency::Lease] {
                let read = cluster.client(f).lookup(2, Some(consistency)).await.unwrap();
                assert_eq!(read.meta.served_by.as_deref(), Some(f.to_string().as_str()), "served by the follower");
                assert!(
                    read.value.stock >= written.stock,
                    "round {round}: follower {f} at {consistency} read stock {} after a write made it {}",
                    read.value.stock,
                    written.stock
                );
                assert!(read.meta.index.unwrap() > 0);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_after_the_log_was_purged_is_caught_up_with_a_snapshot() {
    // Snapshot every 20 entries, so the leader soon purges the start of its log.
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "20"]).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let mut ledger = Ledger::default();
    let client = cluster.client(leader);
    for i in 0..1500u64 {
        let book = i % 7 + 1;
        client.restock(book, 1).await.unwrap();
        *ledger.restocked.entry(book).or_default() += 1;
    }
    let status = client.cluster_status().await.unwrap();
    let catalog = status.groups.iter().find(|g| g.group == Group::Catalog).unwrap();
    assert!(catalog.purged_index.unwrap_or(0) > 100, "the leader purged its log: {catalog:?}");

    // A new, empty node joins both groups as a learner. The entries it needs
    // are gone from the leaders' logs, so it can only catch up from snapshots.
    let addr = cluster.spawn_new(4);
    let http = reqwest::Client::new();
    for group in Group::ALL {
        let leader = cluster.wait_leader(group, None, Duration::from_secs(10)).await;
        let r = http
            .post(format!("http://{}/admin/{group}/add-learner", cluster.addr(leader)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"node_id": 4, "addr": addr, "blocking": true}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    }
    let digest = converged(&mut cluster, Group::Catalog, Duration::from_secs(30)).await.unwrap();
    let status = cluster.client(4).cluster_status().await.unwrap();
    let catalog = status.groups.iter().find(|g| g.group == Group::Catalog).unwrap();
    assert!(catalog.snapshot_index.unwrap_or(0) > 100, "the new node installed a snapshot: {catalog:?}");
    assert_eq!(catalog.state, "Learner");
    assert_eq!(catalog.applied_index, Some(digest.applied_index));
    let book: Book = cluster.client(4).lookup(1, Some(Consistency::Cached)).await.unwrap().value;
    assert_eq!(book.stock, 1000 + ledger.restocked[&1]);
    // A learner serves linearizable reads too.
    let restocked = cluster.client(leader).restock(1, 1).await.unwrap();
    *ledger.restocked.entry(1).or_default() += 1;
    let read = cluster.client(4).lookup(1, Some(Consistency::Linearizable)).await.unwrap();
    assert_eq!(read.value.stock, restocked.stock);
    check_all(&mut cluster, &classic_stock(), &ledger, Duration::from_secs(5)).await;
}

/// openraft stops a group's core for good on a storage error. The node must
/// then stop, loudly, instead of lingering as a process that answers HTTP
/// but never votes, acknowledges or applies in that group again (under
/// faults such a node cost the catalog group its quorum for minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_group_stops_on_a_storage_error_stops_instead_of_lingering() {
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "30"]).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    // Its catalog snapshot directory becomes a file: its next snapshot build fails.
    let dir = cluster.data_dir(victim).join("snapshots").join("catalog");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let client = cluster.client(leader);
    for i in 0..100u64 {
        client.restock(i % 7 + 1, 1).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cluster.live_ids().contains(&victim) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {victim} still runs with its catalog group stopped:\n{}",
            cluster.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The others go on; the node, repaired and restarted, catches up.
    client.restock(1, 1).await.unwrap();
    std::fs::remove_file(&dir).unwrap();
    cluster.restart(victim);
    cluster.wait_ready(Duration::from_secs(30)).await;
    converged(&mut cluster, Group::Catalog, Duration::from_secs(30)).await.unwrap();
}
