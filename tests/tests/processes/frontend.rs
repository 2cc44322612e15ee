//! The frontend in front of real nodes: invalidation across frontends,
//! read-your-writes, reads through a follower's death, writes through leader
//! changes, and a frontend that loses its change stream.

use std::collections::BTreeMap;
use std::time::Duration;

use bazar_api::{Book, Consistency, ErrorCode, Group, Problem};
use bazar_client::{Client, ClientError};
use bazar_tests::check::{Ledger, check_all};
use bazar_tests::frontend::FrontendProc;
use bazar_tests::{ADMIN_TOKEN, Cluster};
use tokio::time::Instant;

fn classic_stock() -> BTreeMap<u64, u64> {
    (1..=7).map(|id| (id, 1000)).collect()
}

async fn stock(client: &Client, id: u64) -> (u64, Option<String>) {
    let read = client.lookup(id, None).await.unwrap();
    (read.value.stock, read.meta.cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_invalidates_the_cached_lookup_on_two_frontends() {
    let cluster = Cluster::start(3, &[]).await;
    let a = FrontendProc::start(&cluster, "frontend-a", &[]).await;
    let b = FrontendProc::start(&cluster, "frontend-b", &[]).await;
    a.wait_fresh(Duration::from_secs(10)).await;
    b.wait_fresh(Duration::from_secs(10)).await;
    let (ca, cb) = (a.client(), b.client());

    // Warm both caches.
    for c in [&ca, &cb] {
        stock(c, 1).await;
        let (s, cache) = stock(c, 1).await;
        assert_eq!((s, cache.as_deref()), (1000, Some("hit")));
    }

    // Buy through A: A reads its own write at once (read-your-writes).
    let order = ca.buy(1, 3, None).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed");
    let (s, cache) = stock(&ca, 1).await;
    assert_eq!(s, 997, "read-your-writes through frontend A (cache {cache:?})");

    // B learns it from its change stream, within the staleness bound, and
    // never goes back to the old value once it has seen the new one.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (s, _) = stock(&cb, 1).await;
        if s == 997 {
            break;
        }
        assert_eq!(s, 1000);
        assert!(Instant::now() < deadline, "frontend B still serves the old stock after 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..50 {
        assert_eq!(stock(&cb, 1).await.0, 997, "frontend B went back to a stale value");
    }
    let (s, cache) = stock(&cb, 1).await;
    assert_eq!((s, cache.as_deref()), (997, Some("hit")), "B caches the new value");

    // Searches are invalidated too.
    let page = ca.search("distributed systems", None, None, None).await.unwrap();
    assert_eq!(page.value.books.iter().find(|b| b.id == 1).unwrap().stock, 997);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_level_answers_with_its_headers() {
    let cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &[]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let c = fe.client();
    for level in [Consistency::Lease, Consistency::Linearizable] {
        let read = c.lookup(2, Some(level)).await.unwrap();
        assert_eq!(read.meta.cache.as_deref(), Some("bypass"), "{level}");
        let node: u64 = read.meta.served_by.unwrap().parse().expect("a node id");
        assert!(cluster.ids().contains(&node));
        assert!(read.meta.index.unwrap() > 0);
    }
    let first = c.lookup(2, Some(Consistency::Cached)).await.unwrap();
    let second = c.lookup(2, Some(Consistency::Cached)).await.unwrap();
    assert!(matches!(first.meta.cache.as_deref(), Some("hit" | "miss")));
    assert_eq!((second.meta.cache.as_deref(), second.meta.served_by.as_deref()), (Some("hit"), Some("cache")));
    assert_eq!(first.value, second.value);
    let orders = c.orders(&bazar_api::OrderFilter::All, None, None, None).await.unwrap();
    assert!(orders.meta.cache.is_some());
}

/// The `Server-Timing` of an answer, every value joined.
fn server_timing(response: &reqwest::Response) -> String {
    let values: Vec<&str> =
        response.headers().get_all("server-timing").iter().filter_map(|v| v.to_str().ok()).collect();
    values.join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_says_where_its_time_went() {
    let cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &[]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let http = reqwest::Client::new();
    let get = |url: String| http.get(url).send();

    let at_frontend = format!("http://{}", fe.addr);
    let read = get(format!("{at_frontend}/books/2?consistency=linearizable")).await.unwrap();
    let timing = server_timing(&read);
    assert!(timing.starts_with("frontend;dur="), "{timing}");
    assert!(timing.contains("node;dur="), "{timing}");
    assert!(timing.contains("raft;desc=\"catalog read index\";dur="), "{timing}");

    get(format!("{at_frontend}/books/3")).await.unwrap();
    let hit = get(format!("{at_frontend}/books/3")).await.unwrap();
    assert_eq!(hit.headers()["x-bazar-cache"], "hit");
    let timing = server_timing(&hit);
    assert!(timing.contains("cache;desc=\"hit\";dur="), "{timing}");
    assert!(!timing.contains("node;"), "a cache hit asks no node: {timing}");

    let buy = http
        .post(format!("{at_frontend}/books/4/buy"))
        .header("idempotency-key", "timing-1")
        .json(&serde_json::json!({ "quantity": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(buy.status(), 201);
    let timing = server_timing(&buy);
    for step in ["frontend;dur=", "node;dur=", "raft;desc=\"orders commit\"", "raft;desc=\"catalog commit"] {
        assert!(timing.contains(step), "{step} in {timing}");
    }

    let at_node = format!("http://{}", cluster.client_addr(1));
    let timing = server_timing(&get(format!("{at_node}/books/2?consistency=lease")).await.unwrap());
    assert!(timing.starts_with("node;dur="), "{timing}");
    let missing = get(format!("{at_frontend}/no/such/route")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(server_timing(&missing).starts_with("frontend;dur="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_flowing_when_a_follower_is_killed() {
    let mut cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &["--balance", "round-robin"]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let c = fe.client();

    let reader = tokio::spawn(async move {
        let mut served = BTreeMap::<String, u64>::new();
        let mut failures = Vec::new();
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            for level in [Consistency::Lease, Consistency::Linearizable, Consistency::Cached] {
                match c.lookup(4, Some(level)).await {
                    Ok(r) => *served.entry(r.meta.served_by.unwrap_or_default()).or_default() += 1,
                    Err(e) => failures.push(format!("{level}: {e}")),
                }
            }
        }
        (served, failures)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(victim);
    let killed_at = Instant::now();
    let (served, failures) = reader.await.unwrap();
    assert!(failures.is_empty(), "reads failed while a follower died: {failures:?}");
    eprintln!("reads served: {served:?}");

    // Within a probe interval the dead follower gets no more reads.
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(killed_at.elapsed())).await;
    let status = fe.status().await;
    let dead = status["replicas"].as_array().unwrap().iter().find(|r| r["node_id"] == victim).unwrap().clone();
    assert_eq!(dead["healthy"], false, "{status}");

    // And it gets them back when it returns.
    cluster.restart(victim);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = fe.status().await;
        let back =
            status["replicas"].as_array().unwrap().iter().any(|r| r["node_id"] == victim && r["healthy"] == true);
        if back {
            break;
        }
        assert!(Instant::now() < deadline, "restarted follower not healthy again: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = fe.client();
    let mut saw_victim = false;
    for _ in 0..30 {
        let r = c.lookup(4, Some(Consistency::Lease)).await.unwrap();
        saw_victim |= r.meta.served_by.as_deref() == Some(victim.to_string().as_str());
    }
    assert!(saw_victim, "the recovered follower serves reads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_succeed_through_leader_changes() {
    let mut cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &[]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let c = fe.client();
    let buyer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut failures = Vec::new();
        let end = Instant::now() + Duration::from_secs(6);
        let mut n = 0;
        while Instant::now() < end {
            n += 1;
            // The frontend gives each buy an idempotency key and retries it
            // through leader changes: every buy must succeed.
            match c.buy(n % 7 + 1, 1, None).await {
                Ok(order) => acked.push(order),
                Err(e) => failures.push(e.to_string()),
            }
        }
        (acked, failures)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let orders_leader = cluster.wait_leader(Group::Orders, None, Duration::from_secs(5)).await;
    cluster.kill(orders_leader);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let catalog_leader = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(5)).await;
    cluster.restart(orders_leader);
    cluster.wait_ready(Duration::from_secs(20)).await;
    cluster.kill(catalog_leader);
    let (acked, failures) = buyer.await.unwrap();
    assert!(failures.is_empty(), "buys failed through leader changes: {failures:?}");
    assert!(acked.len() > 50, "{} buys", acked.len());
    cluster.restart(catalog_leader);
    cluster.wait_ready(Duration::from_secs(20)).await;
    let ledger = Ledger { acked, ..Default::default() };
    let summary = check_all(&mut cluster, &classic_stock(), &ledger, Duration::from_secs(5)).await;
    eprintln!("buys through the frontend across two leader kills: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_that_loses_its_change_stream_stops_serving_from_cache() {
    let mut cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &["--max-staleness-ms", "500"]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let c = fe.client();
    stock(&c, 5).await;
    assert_eq!(stock(&c, 5).await.1.as_deref(), Some("hit"));

    // Freeze every node: the streams fall silent and no leader can vouch
    // for the cache any more.
    for id in cluster.ids() {
        cluster.pause(id);
    }
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let quick = Client::builder(format!("http://{}", fe.addr)).timeout(Duration::from_millis(1500)).build().unwrap();
    match quick.lookup(5, None).await {
        Ok(read) => panic!("served {:?} from a cache without a change stream", read.meta.cache),
        Err(e) => assert!(
            e.is_code(ErrorCode::Unavailable) || e.is_timeout(),
            "a stale cache must not answer: {e} after {:?}",
            paused.elapsed()
        ),
    }
    let status = fe.status().await;
    assert!(status["groups"].as_array().unwrap().iter().all(|g| g["cache"]["fresh"] == false), "{status}");

    for id in cluster.ids() {
        cluster.resume(id);
    }
    fe.wait_fresh(Duration::from_secs(15)).await;
    // The cache was flushed: the next read is a miss, then hits resume.
    let (_, cache) = stock(&c, 5).await;
    assert_ne!(cache.as_deref(), Some("hit"), "the cache was flushed");
    assert_eq!(stock(&c, 5).await.1.as_deref(), Some("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_same_problem_as_from_a_node() {
    let cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &[]).await;
    let http = reqwest::Client::new();
    let cases: Vec<(&str, reqwest::Method, &str, Option<&str>, bool)> = vec![
        ("non-numeric id", reqwest::Method::GET, "/books/abc", None, false),
        ("unknown book", reqwest::Method::GET, "/books/999", None, false),
        ("bad consistency", reqwest::Method::GET, "/books/1?consistency=strong", None, false),
        ("bad limit", reqwest::Method::GET, "/books?limit=0", None, false),
        ("unknown order", reqwest::Method::GET, "/orders/424242", None, false),
        ("zero quantity", reqwest::Method::POST, "/books/1/buy", Some(r#"{"quantity":0}"#), false),
        ("malformed json", reqwest::Method::POST, "/books/1/buy", Some(r#"{"quantity":"#), false),
        ("unknown book buy", reqwest::Method::POST, "/books/999/buy", None, false),
        ("restock without token", reqwest::Method::POST, "/books/1/restock", Some(r#"{"quantity":1}"#), false),
        ("restock zero", reqwest::Method::POST, "/books/1/restock", Some(r#"{"quantity":0}"#), true),
        ("unknown route", reqwest::Method::GET, "/nope", None, false),
    ];
    for (what, method, path, body, admin) in cases {
        let mut answers = Vec::new();
        for base in [format!("http://{}", fe.addr), format!("http://{}", cluster.addr(1))] {
            let mut req = http.request(method.clone(), format!("{base}{path}"));
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b.to_string());
            }
            if admin {
                req = req.bearer_auth(ADMIN_TOKEN);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let p: Problem = r.json().await.unwrap_or_else(|e| panic!("{what}: not a problem document: {e}"));
            answers.push((status, p.code));
        }
        assert_eq!(answers[0], answers[1], "{what}: frontend vs node");
        assert!((400..500).contains(&answers[0].0), "{what}: {answers:?}");
    }
    // A raw write on the frontend reaches the catalog leader and reports its index.
    let book: Book = fe.client().restock(1, 1).await.unwrap();
    assert_eq!(book.stock, 1001);
    let err: ClientError = fe.client().restock(99, 1).await.unwrap_err();
    assert!(err.is_code(ErrorCode::NotFound), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_honours_min_index_as_a_node_does() {
    let cluster = Cluster::start(1, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &["--request-timeout-ms", "1000"]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let http = reqwest::Client::new();
    let read = |query: String| {
        let http = http.clone();
        let url = format!("http://{}/books/1{query}", fe.addr);
        async move {
            let r = http.get(url).send().await.unwrap();
            let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            let (cache, index) = (header("x-bazar-cache"), header("x-bazar-index").parse::<u64>().unwrap_or(0));
            let status = r.status().as_u16();
            let book = r.json::<serde_json::Value>().await.unwrap();
            (status, cache, index, book)
        }
    };
    let _ = read(String::new()).await;
    let (status, cache, cached_at, _) = read(String::new()).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    // Garbage is refused, as a node refuses it.
    for bad in ["abc", "-1", "1.5"] {
        assert_eq!(read(format!("?min_index={bad}")).await.0, 400, "{bad}");
    }
    // An index beyond the group's log is never answered from the cache: the
    // replica refuses it (no answer can have carried it), as a node does.
    let (status, cache, _, problem) = read(format!("?min_index={}", cached_at + 1_000_000)).await;
    assert_eq!((status, cache.as_str()), (400, ""), "{problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("beyond the catalog group's log"), "{problem}");
    // One it has reached may be.
    assert_eq!(read(format!("?min_index={cached_at}")).await.0, 200);
    // A write straight to the node, which this frontend did not see: a read
    // at its index reflects it, whatever the cache holds.
    let before = read(String::new()).await.3["stock"].as_u64().unwrap();
    let r = http
        .post(format!("http://{}/books/1/restock", cluster.addr(1)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"quantity": 5}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let written_at: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();
    let (status, _, index, book) = read(format!("?min_index={written_at}")).await;
    assert_eq!(status, 200);
    assert!(index >= written_at, "answered at {index}, asked for {written_at}");
    assert_eq!(book["stock"].as_u64().unwrap(), before + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_without_a_healthy_replica_reports_it_and_bazar_health_fails() {
    let mut cluster = Cluster::start(1, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &["--probe-interval-ms", "100"]).await;
    let bazar = || {
        std::process::Command::new(bazar_tests::bin_dir().join("bazar"))
            .args(["--frontend", &fe.addr, "--timeout", "2", "health"])
            .output()
            .expect("running bazar")
    };
    assert!(bazar().status.success());
    cluster.kill(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let http = reqwest::Client::new();
    loop {
        let r = http.get(format!("http://{}/health", fe.addr)).send().await.unwrap();
        if r.status() == 503 {
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let p: Problem = r.json().await.unwrap();
            assert_eq!(p.code, ErrorCode::Unavailable);
            break;
        }
        assert!(Instant::now() < deadline, "still {} with no node running", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = bazar();
    assert!(!out.status.success(), "bazar health exited 0: {}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_buy_moves_to_the_new_leader_when_the_old_one_stops_answering() {
    let mut cluster = Cluster::start(3, &[]).await;
    let fe = FrontendProc::start(&cluster, "frontend", &[]).await;
    fe.wait_fresh(Duration::from_secs(10)).await;
    let client = fe.client();
    client.buy(1, 1, Some("before-the-pause")).await.unwrap();
    let old = cluster.wait_leader(Group::Orders, None, Duration::from_secs(10)).await;
    cluster.pause(old);
    let started = Instant::now();
    let order = client.buy(1, 1, Some("through-the-pause")).await;
    let took = started.elapsed();
    cluster.resume(old);
    let order = order.unwrap_or_else(|e| panic!("the buy failed after {took:?}: {e}"));
    assert!(took < Duration::from_secs(4), "the buy waited {took:?} for the paused leader");
    // The same key again: the same order, not a second one.
    let again = client.buy(1, 1, Some("through-the-pause")).await.unwrap();
    assert_eq!(again.order_id, order.order_id);
}
