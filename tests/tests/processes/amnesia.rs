//! A node that lost its data directory and comes back with the same id
//! must not vote or acknowledge as the member it was (see
//! `bazar_node::incarnation`), and `bazar cluster rejoin` brings it back.
//!
//! The scenario that lost 847 of 852 acknowledged orders before: node 3 is
//! cut off (paused) while buys are acknowledged by nodes 1 and 2; node 2
//! dies and loses its disk, node 1 dies, node 3 comes back and node 2
//! restarts empty. Node 3 lacks the acknowledged buys; had node 2 voted for
//! it, it would lead without them. Here node 2 refuses, no leader is elected
//! from {2, 3}, node 2 says it lost its state, and once node 1 is back, one
//! `bazar cluster rejoin 2` makes it a voter again with the same state as the
//! others and every acknowledged order.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use bazar_api::{Consistency, Group};
use bazar_client::cluster::{AddNodeOptions, ClusterAdmin};
use bazar_tests::{ADMIN_TOKEN, Cluster, bin_dir};
use tokio::time::Instant;

/// Buys one copy after another through `client` for `duration`; returns
/// the ids of the acknowledged orders.
async fn buy_for(client: &bazar_client::Client, duration: Duration) -> Vec<u64> {
    let client = client.with_timeout(Duration::from_secs(2));
    let end = Instant::now() + duration;
    let mut acknowledged = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        if let Ok(order) = client.buy(1 + n % 7, 1, None).await {
            acknowledged.push(order.order_id);
        }
    }
    acknowledged
}

/// Whether `id` says it leads a group, from its `/health`.
async fn leads_a_group(cluster: &Cluster, id: u64) -> Option<Group> {
    let h = cluster.health(id).await?;
    h.groups.iter().find(|(_, g)| g.is_leader).map(|(group, _)| *group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_votes_as_its_old_self_and_rejoins_with_one_command() {
    let mut cluster = Cluster::start(3, &[]).await;
    let admin = ClusterAdmin::new(cluster.client(1), vec![format!("http://{}", cluster.addr(1))]);
    // Node 1 leads both groups, so that buys need only nodes 1 and 2 once 3 is cut off.
    for group in Group::ALL {
        let deadline = Instant::now() + Duration::from_secs(20);
        admin.transfer_leader(group, Some(1), deadline, &mut |_| {}).await.expect("moving leadership to node 1");
    }
    let client = cluster.client(1);
    let mut acknowledged = buy_for(&client, Duration::from_millis(500)).await;

    // Node 3 cut off for 3 s while buys are acknowledged by nodes 1 and 2.
    cluster.pause(3);
    let while_cut = buy_for(&client, Duration::from_secs(3)).await;
    assert!(while_cut.len() > 20, "buys went on without node 3: {}", while_cut.len());
    acknowledged.extend(while_cut);
    eprintln!("{} orders acknowledged", acknowledged.len());

    // Node 2 loses its disk, node 1 dies; node 3 comes back, node 2 restarts empty.
    cluster.wipe(2);
    cluster.kill(1);
    cluster.resume(3);
    cluster.restart(2);

    // Node 3 lacks the acknowledged buys: it must not be elected with node
    // 2's vote. Watch for several election timeouts.
    let watch_until = Instant::now() + Duration::from_secs(6);
    let mut refused = None;
    while Instant::now() < watch_until {
        for id in [2, 3] {
            if let Some(group) = leads_a_group(&cluster, id).await {
                panic!(
                    "node {id} leads the {group} group without node 1, which alone holds {} acknowledged orders\n{}",
                    acknowledged.len(),
                    cluster.logs_tail(30)
                );
            }
        }
        if refused.is_none()
            && let Some(h) = cluster.health(2).await
        {
            refused = h.state_lost;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("node 2 says in /health that it lost its state");
    eprintln!("node 2: {}", refused.message);
    assert!(refused.message.contains("state lost"), "{}", refused.message);
    assert_eq!(refused.recovery, "bazar cluster rejoin 2");
    assert_eq!(refused.noticed_by, 3);

    // Node 1 returns: the cluster serves again without node 2, and the
    // leader's view marks node 2.
    cluster.restart(1);
    for group in Group::ALL {
        let leader = cluster.wait_leader(group, None, Duration::from_secs(20)).await;
        assert_ne!(leader, 2);
    }
    let marked = async {
        loop {
            if let Ok(view) = admin.status().await
                && view.groups.iter().all(|g| g.member(2).is_some_and(|m| m.state_lost.is_some()))
            {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let view = tokio::time::timeout(Duration::from_secs(15), marked).await.expect("node 2 marked state-lost");
    eprintln!("{}", view.group(Group::Orders).and_then(|g| g.member(2)).and_then(|m| m.state_lost.clone()).unwrap());

    // The recovery: one command.
    let bazar = bin_dir().join("bazar");
    let out = Command::new(&bazar)
        .args(["--frontend", &format!("http://{}", cluster.addr(1)), "--token", ADMIN_TOKEN])
        .args(["cluster", "rejoin", "2", "--wait", "60"])
        .output()
        .expect("running bazar cluster rejoin");
    eprintln!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "bazar cluster rejoin 2 failed\n{}", cluster.logs_tail(30));
    // Again: nothing left to do.
    let again = admin
        .rejoin(2, None, AddNodeOptions { promote: true, deadline: Duration::from_secs(30) }, &mut |p| {
            eprintln!("again: {p}")
        })
        .await
        .expect("rejoin again");
    for group in Group::ALL {
        let g = again.group(group).expect("group");
        assert_eq!(g.voters(), BTreeSet::from([1, 2, 3]), "{group} voters");
        assert!(g.members.iter().all(|m| m.state_lost.is_none()), "{group}: {:?}", g.members);
    }

    // Same state everywhere, and every acknowledged order is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    for group in Group::ALL {
        loop {
            let mut digests = BTreeSet::new();
            for id in cluster.ids() {
                match cluster.client(id).digest(group).await {
                    Ok(d) => digests.insert((d.applied_index, d.digest)),
                    Err(_) => digests.insert((0, format!("node {id} did not answer"))),
                };
            }
            if digests.len() == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{group} digests differ: {digests:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for id in cluster.ids() {
        let c = cluster.client(id);
        for order in &acknowledged {
            let consistency = if id == 2 { Consistency::Cached } else { Consistency::Linearizable };
            c.order(*order, Some(consistency))
                .await
                .unwrap_or_else(|e| panic!("acknowledged order {order} missing on node {id}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_refuses_id_zero_a_bad_address_and_a_node_that_does_not_answer() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let client = cluster.client(leader);
    let unused = format!("127.0.0.1:{}", bazar_tests::free_port());
    for (id, addr, why) in [
        (0, unused.as_str(), "id 0"),
        (4, "not an address", "unparsable address"),
        (4, unused.as_str(), "nobody answers there"),
        (4, cluster.addr(2).as_str(), "node 2 answers there"),
    ] {
        match client.add_learner(Group::Catalog, id, addr, true).await {
            Err(bazar_client::ClientError::Problem(p)) => {
                assert!(p.status >= 400 && p.status < 500, "{why}: {p:?}");
                eprintln!("{why}: {} {}", p.status, p.detail);
            }
            other => panic!("{why}: expected a 4xx problem, got {other:?}"),
        }
    }
    let status = cluster.client(leader).cluster_status().await.expect("status");
    let catalog = status.groups.iter().find(|g| g.group == Group::Catalog).expect("catalog");
    assert_eq!(catalog.members.len(), 3, "nothing was added");
}
