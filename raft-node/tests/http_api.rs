//! The node's HTTP API, against a single-node cluster run in-process on a
//! free port: the classic catalog, buys and idempotency, admin writes, the
//! change stream, and refusal of every kind of bad input.

use std::time::Duration;

use bazar_api::{Book, BookPage, Digest, NodeHealth, Order, Problem};
use clap::Parser;
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;

const ADMIN: &str = "admin-secret";
const CLUSTER: &str = "cluster-secret";
const FRONTEND: &str = "frontend-secret";

struct TestNode {
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start() -> TestNode {
        let node = TestNode::spawn(1, |_| Vec::new()).await;
        node.wait_ready().await;
        node
    }

    /// Starts node `id` with the flags `extra` makes from its address, and
    /// does not wait for it to be ready.
    async fn spawn(id: u64, extra: impl FnOnce(&str) -> Vec<String>) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Through the real flags, so the test keeps up with the configuration.
        let mut args = vec![
            "raft-node".to_string(),
            format!("--id={id}"),
            format!("--listen={addr}"),
            format!("--data-dir={}", dir.path().display()),
            format!("--admin-token={ADMIN}"),
            format!("--cluster-token={CLUSTER}"),
            format!("--frontend-token={FRONTEND}"),
            "--request-timeout-ms=2000".to_string(),
        ];
        args.extend(extra(&addr.to_string()));
        let config = bazar_node::Args::parse_from(args).resolve().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(bazar_node::run(config, listener, async {
            let _ = rx.await;
        }));
        TestNode {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/health")).send().await
                && let Ok(h) = r.json::<NodeHealth>().await
                && h.catalog_seeded
                && h.leaders.values().all(|l| *l == Some(1))
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "node not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn digest(&self, group: &str) -> Digest {
        self.http
            .get(self.url(&format!("/admin/digest?group={group}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn book(&self, id: u64) -> Book {
        self.http.get(self.url(&format!("/books/{id}"))).send().await.unwrap().json().await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_node_serves_the_classic_books_with_read_headers() {
    let node = TestNode::start().await;
    let r = node.http.get(node.url("/books?topic=distributed%20systems")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-bazar-cache"], "bypass");
    assert_eq!(r.headers()["x-bazar-served-by"], "1");
    let index: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();
    assert!(index > 0);
    let page: BookPage = r.json().await.unwrap();
    assert_eq!(page.books.iter().map(|b| b.id).collect::<Vec<_>>(), vec![1, 2, 5]);
    assert!(page.next_cursor.is_none());

    let book = node.book(2).await;
    assert_eq!((book.title.as_str(), book.stock), ("RPCs for Noobs", 1000));

    for consistency in ["cached", "lease", "linearizable"] {
        let r = node.http.get(node.url(&format!("/books/3?consistency={consistency}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{consistency}");
    }
    let r = node.http.get(node.url("/books?topic=nothing")).send().await.unwrap();
    let page: BookPage = r.json().await.unwrap();
    assert!(page.books.is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_confirms_once_per_idempotency_key() {
    let node = TestNode::start().await;
    let buy = |key: &'static str, quantity: u64| {
        node.http
            .post(node.url("/books/4/buy"))
            .header("Idempotency-Key", key)
            .json(&json!({ "quantity": quantity }))
            .send()
    };
    let r = buy("order-a", 3).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Order = r.json().await.unwrap();
    assert_eq!(first.status.as_str(), "confirmed");
    assert_eq!((first.quantity, first.unit_price_cents, first.total_cents), (3, 1500, 4500));

    let r = buy("order-a", 3).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Order = r.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(node.book(4).await.stock, 997, "stock taken once");

    let r = buy("order-a", 5).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let p: Problem = r.json().await.unwrap();
    assert_eq!(p.code.as_str(), "idempotency_key_reused");

    // No body at all means one copy.
    let r = node.http.post(node.url("/books/4/buy")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(node.book(4).await.stock, 996);

    let r = node.http.get(node.url(&format!("/orders/{}", first.order_id))).send().await.unwrap();
    assert_eq!(r.json::<Order>().await.unwrap(), first);
    let r = node.http.get(node.url("/orders?book_id=4")).send().await.unwrap();
    let page: bazar_api::OrderPage = r.json().await.unwrap();
    assert_eq!(page.orders.len(), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_records_its_buyer_and_each_buyer_pages_through_their_orders() {
    let node = TestNode::start().await;
    let buy = |key: &'static str, book: u64, buyer: Option<&'static str>| {
        let body = match buyer {
            Some(b) => json!({ "quantity": 1, "buyer": b }),
            None => json!({ "quantity": 1 }),
        };
        node.http.post(node.url(&format!("/books/{book}/buy"))).header("Idempotency-Key", key).json(&body).send()
    };
    let mut manar = Vec::new();
    for (key, book, buyer) in [
        ("b1", 1, Some("manar")),
        ("b2", 2, Some("ali")),
        ("b3", 3, Some("manar")),
        ("b4", 3, None),
        ("b5", 4, Some("manar")),
    ] {
        let r = buy(key, book, buyer).await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{key}");
        let order: Order = r.json().await.unwrap();
        assert_eq!(order.buyer.as_deref(), buyer, "{key}");
        if buyer == Some("manar") {
            manar.push(order);
        }
    }
    // A retry with the same key and buyer is the same order; another buyer is refused.
    let r = buy("b1", 1, Some("manar")).await.unwrap();
    assert_eq!(r.json::<Order>().await.unwrap(), manar[0]);
    for other in [Some("ali"), None] {
        let r = buy("b1", 1, other).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{other:?}");
        assert_eq!(r.json::<Problem>().await.unwrap().code.as_str(), "idempotency_key_reused");
    }

    // Manar's orders, two per page, from the buyer index; nobody else's.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = node.url(&format!("/orders?buyer=manar&limit=2&consistency=linearizable{cursor}"));
        let page: bazar_api::OrderPage = node.http.get(url).send().await.unwrap().json().await.unwrap();
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders);
        match page.next_cursor {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, manar);
    let r = node.http.get(node.url(&format!("/orders/{}", manar[1].order_id))).send().await.unwrap();
    assert_eq!(r.json::<Order>().await.unwrap().buyer.as_deref(), Some("manar"));
    let nobody: bazar_api::OrderPage =
        node.http.get(node.url("/orders?buyer=nobody")).send().await.unwrap().json().await.unwrap();
    assert!(nobody.orders.is_empty() && nobody.next_cursor.is_none());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_buy_is_a_409_that_takes_nothing() {
    let node = TestNode::start().await;
    let r = node.http.post(node.url("/books/7/buy")).json(&json!({"quantity": 1001})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Problem = r.json().await.unwrap();
    assert_eq!(p.code.as_str(), "out_of_stock");
    let order_id = p.order_id.expect("rejected order id");
    assert_eq!(node.book(7).await.stock, 1000);
    let order: Order =
        node.http.get(node.url(&format!("/orders/{order_id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((order.status.as_str(), order.reason.as_deref()), ("rejected", Some("out_of_stock")));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_add_restock_and_reprice_books() {
    let node = TestNode::start().await;
    let new = json!({"isbn": "978-0-306-40615-7", "title": "Raft in Practice", "topic": "Distributed Systems", "price_cents": 4999, "stock": 3});
    let r = node.http.post(node.url("/books")).bearer_auth(ADMIN).json(&new).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let book: Book = r.json().await.unwrap();
    assert_eq!((book.id, book.isbn.as_str()), (8, "9780306406157"));

    let r = node.http.post(node.url("/books")).bearer_auth(ADMIN).json(&new).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let r = node
        .http
        .post(node.url("/books/8/restock"))
        .bearer_auth(ADMIN)
        .json(&json!({"quantity": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Book>().await.unwrap().stock, 10);
    let r = node
        .http
        .patch(node.url("/books/8"))
        .bearer_auth(ADMIN)
        .json(&json!({"price_cents": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Book>().await.unwrap().price_cents, 10);

    let page: BookPage =
        node.http.get(node.url("/books?topic=distributed%20systems")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page.books.iter().map(|b| b.id).collect::<Vec<_>>(), vec![1, 2, 5, 8]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stream_reports_changes_after_they_are_applied() {
    use futures::StreamExt;
    let node = TestNode::start().await;
    let r = node.http.get(node.url("/watch?group=catalog")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut stream = r.bytes_stream();
    let restock = node.http.post(node.url("/books/6/restock")).bearer_auth(ADMIN).json(&json!({"quantity": 1})).send();
    assert_eq!(restock.await.unwrap().status(), StatusCode::OK);

    let mut buf = String::new();
    let mut saw_heartbeat = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.expect("event in time").unwrap().unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(pos) = buf.find('\n') {
            let line: String = buf.drain(..=pos).collect();
            let event: bazar_api::WatchEvent = serde_json::from_str(line.trim()).unwrap();
            match event {
                bazar_api::WatchEvent::Heartbeat { node_id, .. } => {
                    assert_eq!(node_id, 1);
                    saw_heartbeat = true;
                }
                bazar_api::WatchEvent::Applied { index, keys } => {
                    assert!(keys.contains(&"book/6".to_string()), "{keys:?}");
                    // The change is readable at that index.
                    let r = node.http.get(node.url("/books/6?consistency=cached")).send().await.unwrap();
                    let served: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();
                    assert!(served >= index);
                    assert_eq!(r.json::<Book>().await.unwrap().stock, 1001);
                    assert!(saw_heartbeat, "a heartbeat is sent first, at once");
                    drop(stream);
                    node.stop().await;
                    return;
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_problem_and_changes_nothing() {
    let node = TestNode::start().await;
    let before = (node.digest("catalog").await, node.digest("orders").await);
    let big = "x".repeat(100 * 1024);
    let h = &node.http;
    let u = |p: &str| node.url(p);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("non-numeric id", h.get(u("/books/abc")), 400, "invalid_input"),
        ("zero id", h.get(u("/books/0")), 400, "invalid_input"),
        ("unknown book", h.get(u("/books/999")), 404, "not_found"),
        ("unknown order", h.get(u("/orders/12345")), 404, "not_found"),
        ("bad consistency", h.get(u("/books/1?consistency=strong")), 400, "invalid_input"),
        ("zero limit", h.get(u("/books?limit=0")), 400, "invalid_input"),
        ("bad cursor", h.get(u("/books?cursor=x")), 400, "invalid_input"),
        ("bad book_id filter", h.get(u("/orders?book_id=-1")), 400, "invalid_input"),
        ("zero quantity", h.post(u("/books/1/buy")).json(&json!({"quantity": 0})), 400, "invalid_input"),
        ("negative quantity", h.post(u("/books/1/buy")).json(&json!({"quantity": -1})), 400, "invalid_input"),
        (
            "huge quantity",
            h.post(u("/books/1/buy")).json(&json!({"quantity": 99_999_999_999u64})),
            400,
            "invalid_input",
        ),
        ("string quantity", h.post(u("/books/1/buy")).json(&json!({"quantity": "two"})), 400, "invalid_input"),
        ("unknown field", h.post(u("/books/1/buy")).json(&json!({"qty": 2})), 400, "invalid_input"),
        (
            "malformed JSON",
            h.post(u("/books/1/buy")).header("content-type", "application/json").body("{\"quantity\":"),
            400,
            "invalid_input",
        ),
        (
            "wrong content type",
            h.post(u("/books/1/buy")).header("content-type", "text/plain").body("quantity=1"),
            415,
            "invalid_input",
        ),
        (
            "oversized body",
            h.post(u("/books/1/buy")).header("content-type", "application/json").body(big.clone()),
            413,
            "invalid_input",
        ),
        ("buy unknown book", h.post(u("/books/999/buy")), 404, "not_found"),
        ("bad idempotency key", h.post(u("/books/1/buy")).header("Idempotency-Key", "has space"), 400, "invalid_input"),
        ("array body", h.post(u("/books/1/buy")).json(&json!([5])), 400, "invalid_input"),
        ("empty array body", h.post(u("/books/1/buy")).json(&json!([])), 400, "invalid_input"),
        ("null quantity", h.post(u("/books/1/buy")).json(&json!({"quantity": null})), 400, "invalid_input"),
        ("bad buyer", h.post(u("/books/1/buy")).json(&json!({"buyer": "no spaces"})), 400, "invalid_input"),
        ("null buyer", h.post(u("/books/1/buy")).json(&json!({"buyer": null})), 400, "invalid_input"),
        ("bad buyer filter", h.get(u("/orders?buyer=a%2Fb")), 400, "invalid_input"),
        ("book and buyer filters", h.get(u("/orders?buyer=a&book_id=1")), 400, "invalid_input"),
        ("add without token", h.post(u("/books")).json(&json!({})), 401, "unauthorized"),
        ("add with wrong token", h.post(u("/books")).bearer_auth("nope").json(&json!({})), 401, "unauthorized"),
        (
            "add with bad isbn",
            h.post(u("/books")).bearer_auth(ADMIN).json(&json!({"isbn":"123","title":"T","topic":"t","price_cents":1})),
            400,
            "invalid_input",
        ),
        (
            "add with missing field",
            h.post(u("/books")).bearer_auth(ADMIN).json(&json!({"isbn":"9780306406157","title":"T"})),
            400,
            "invalid_input",
        ),
        ("restock without token", h.post(u("/books/1/restock")).json(&json!({"quantity": 1})), 401, "unauthorized"),
        (
            "restock zero",
            h.post(u("/books/1/restock")).bearer_auth(ADMIN).json(&json!({"quantity": 0})),
            400,
            "invalid_input",
        ),
        (
            "restock unknown book",
            h.post(u("/books/99/restock")).bearer_auth(ADMIN).json(&json!({"quantity": 1})),
            404,
            "not_found",
        ),
        ("empty patch", h.patch(u("/books/1")).bearer_auth(ADMIN).json(&json!({})), 400, "invalid_input"),
        (
            "negative price",
            h.patch(u("/books/1")).bearer_auth(ADMIN).json(&json!({"price_cents": -5})),
            400,
            "invalid_input",
        ),
        ("digest without token", h.get(u("/admin/digest?group=catalog")), 401, "unauthorized"),
        ("digest of unknown group", h.get(u("/admin/digest?group=x")).bearer_auth(ADMIN), 400, "invalid_input"),
        ("watch without group", h.get(u("/watch")), 400, "invalid_input"),
        ("raft rpc without token", h.post(u("/raft/catalog/append")).body(vec![1u8, 2, 3]), 401, "unauthorized"),
        ("unsupported method", h.delete(u("/books/1")), 405, "invalid_input"),
        ("unknown route", h.get(u("/nope")), 404, "not_found"),
    ];
    for (what, request, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{what}");
        let p: Problem = r.json().await.unwrap_or_else(|e| panic!("{what}: not a problem document: {e}"));
        assert_eq!(p.code.as_str(), code, "{what}: {}", p.detail);
        assert_eq!(p.status, status, "{what}");
        assert!(!p.detail.is_empty(), "{what}");
    }
    let r = h.post(u("/raft/catalog/append")).bearer_auth(CLUSTER).body(vec![0xffu8; 3]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "garbage RPC body");

    let after = (node.digest("catalog").await, node.digest("orders").await);
    assert_eq!(before.0.digest, after.0.digest, "catalog unchanged");
    assert_eq!(before.1.digest, after.1.digest, "orders unchanged");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_report_their_index_and_reads_wait_for_min_index() {
    let node = TestNode::start().await;
    let r = node
        .http
        .post(node.url("/books/3/restock"))
        .bearer_auth(ADMIN)
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let restock_index: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();

    let r = node.http.post(node.url("/books/3/buy")).header("Idempotency-Key", "idx-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let orders_index: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();
    let catalog_index: u64 = r.headers()["x-bazar-catalog-index"].to_str().unwrap().parse().unwrap();
    assert!(catalog_index > restock_index, "the reservation comes after the restock");
    assert!(orders_index > 0);

    // A retry finds the settled order and reports the same reservation index.
    let r = node.http.post(node.url("/books/3/buy")).header("Idempotency-Key", "idx-1").send().await.unwrap();
    assert_eq!(r.headers()["x-bazar-catalog-index"].to_str().unwrap(), catalog_index.to_string());

    // Reading at min_index answers at or after it.
    let r = node
        .http
        .get(node.url(&format!("/books/3?consistency=cached&min_index={catalog_index}")))
        .send()
        .await
        .unwrap();
    let served: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();
    assert!(served >= catalog_index);
    assert_eq!(r.json::<Book>().await.unwrap().stock, 1001);

    // An index beyond the group's log is no index an answer gave: refused
    // at once, at every consistency, rather than waited for until the deadline.
    for consistency in ["cached", "lease", "linearizable"] {
        for index in ["1000000", "9223372036854775808"] {
            let started = std::time::Instant::now();
            let url = node.url(&format!("/books/3?consistency={consistency}&min_index={index}"));
            let r = node.http.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{consistency} {index}");
            assert!(r.json::<Problem>().await.unwrap().detail.contains("beyond the catalog group's log"));
            assert!(started.elapsed() < Duration::from_secs(2), "answered without waiting for the deadline");
        }
    }
    let r = node.http.get(node.url("/books/3?min_index=x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A rejected buy reports the orders index of the rejection.
    let r = node.http.post(node.url("/books/3/buy")).json(&json!({"quantity": 5000})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let rejected_at: u64 = r.headers()["x-bazar-index"].to_str().unwrap().parse().unwrap();
    assert!(rejected_at > orders_index);

    // /health reports each group's progress.
    let h: NodeHealth = node.http.get(node.url("/health")).send().await.unwrap().json().await.unwrap();
    let catalog = &h.groups[&bazar_api::Group::Catalog];
    assert!(catalog.is_leader && catalog.applied_index >= catalog_index && catalog.committed_index >= catalog_index);
    assert!(catalog.quorum_ack_age_ms.is_some());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_joined_refuses_reads_instead_of_answering_not_found() {
    // Node 2 of a cluster whose founder (node 1) never answers: it waits to
    // be added, with nothing applied, as a wiped node replacing another does.
    let node = TestNode::spawn(2, |addr| vec![format!("--initial-cluster=1=127.0.0.1:9,2={addr}")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.http.get(node.url("/health")).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "node 2 never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in
        ["/books/1?consistency=cached", "/books?topic=databases&consistency=cached", "/orders/1?consistency=cached"]
    {
        let r = node.http.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path} on a node that has not joined");
        let p: Problem = r.json().await.unwrap();
        assert_eq!(p.code.as_str(), "unavailable", "{path}: {}", p.detail);
    }
    node.stop().await;
}

/// A buy whose coordinator placed its order and was lost before its
/// reservation was made (here the order is placed by hand, as a forwarded
/// write) is finished by the orders leader: the stock is reserved once and
/// the order settled, and a retry under the key finds that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_buy_with_only_its_order_placed_is_reserved_and_settled() {
    let node = TestNode::start().await;
    let stock = node.book(5).await.stock;
    let place = bazar_node::orders::OrdersCommand::Place {
        key: "lost-1".into(),
        book_id: 5,
        quantity: 2,
        created_at: "2026-11-22T10:00:00.000Z".into(),
        buyer: Some("manar".into()),
        seen: 0,
    };
    let body = bazar_node::store::log::encode(&place).unwrap();
    let r = node.http.post(node.url("/raft/orders/write")).bearer_auth(CLUSTER).body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Read at once: pending and not to be cached, or already settled.
    let r = node.http.get(node.url("/orders?book_id=5")).send().await.unwrap();
    let no_store = r.headers().get("cache-control").is_some_and(|v| v == "no-store");
    let page: bazar_api::OrderPage = r.json().await.unwrap();
    assert_eq!(page.orders.len(), 1);
    assert_eq!(no_store, page.orders[0].status.as_str() == "pending", "{page:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let order = loop {
        let health: NodeHealth = node.http.get(node.url("/health")).send().await.unwrap().json().await.unwrap();
        let r = node.http.get(node.url(&format!("/orders/{}", page.orders[0].order_id))).send().await.unwrap();
        let order: Order = r.json().await.unwrap();
        if order.status.as_str() != "pending" && health.unclaimed_buys == 0 {
            break order;
        }
        assert!(tokio::time::Instant::now() < deadline, "not settled in 10 s: {order:?}, {health:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((order.status.as_str(), order.quantity, order.total_cents), ("confirmed", 2, 2 * 3500));
    assert_eq!(order.buyer.as_deref(), Some("manar"), "the resumer's reservation keeps the buyer");
    assert_eq!(node.book(5).await.stock, stock - 2, "stock reserved once");

    let r = node.http.post(node.url("/books/5/buy")).header("Idempotency-Key", "lost-1");
    let r = r.json(&json!({"quantity": 2, "buyer": "manar"}));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Order>().await.unwrap(), order);
    assert_eq!(node.book(5).await.stock, stock - 2, "the retry took nothing");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_needs_the_cluster_or_the_frontend_token() {
    let node = TestNode::start().await;
    let upgrade = |token: Option<&str>| {
        let mut request =
            node.http.get(node.url("/mux")).header("connection", "upgrade").header("upgrade", bazar_net::mux::PROTOCOL);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send()
    };
    for token in [None, Some("wrong"), Some(ADMIN)] {
        let r = upgrade(token).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Problem = r.json().await.unwrap();
        assert_eq!(p.code, bazar_api::ErrorCode::Unauthorized);
    }
    let addr = node.base.trim_start_matches("http://").to_string();
    let t = Duration::from_secs(5);
    let e = bazar_net::Mux::default().call(&addr, bazar_net::Call::get("/books/1"), t).await.unwrap_err();
    assert!(e.is_connect() && e.to_string().contains("401"), "{e}");
    for token in [FRONTEND, CLUSTER] {
        let mux = bazar_net::Mux::default()
            .with_authorization(bazar_net::HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        let answer = mux.call(&addr, bazar_net::Call::get("/books/1"), t).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    // The frontend token opens the connection, not the Raft routes on it.
    let mux = bazar_net::Mux::default()
        .with_authorization(bazar_net::HeaderValue::from_str(&format!("Bearer {FRONTEND}")).unwrap());
    let vote = mux.call(&addr, bazar_net::Call::post("/raft/catalog/vote", bytes::Bytes::new()), t).await.unwrap();
    assert_eq!(vote.status, StatusCode::UNAUTHORIZED);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_naming_another_incarnation_are_refused_and_reported() {
    let node = TestNode::start().await;
    let identity: serde_json::Value =
        node.http.get(node.url("/raft/identity")).bearer_auth(CLUSTER).send().await.unwrap().json().await.unwrap();
    assert_eq!(identity["node_id"], 1);
    let mine = identity["incarnation"].as_str().unwrap().to_string();
    let health: NodeHealth = node.http.get(node.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health.incarnation.as_deref(), Some(mine.as_str()));
    assert!(health.state_lost.is_none());

    // The incarnation is checked before the body is even decoded: a body
    // that is not a vote shows which RPCs got past the check (400).
    let rpc = |rpc: &str, incarnation: Option<&str>| {
        let mut r = node.http.post(node.url(&format!("/raft/orders/{rpc}"))).bearer_auth(CLUSTER).body("not postcard");
        if let Some(i) = incarnation {
            r = r.header("x-bazar-incarnation", i).header("x-bazar-from", "7");
        }
        r.send()
    };
    for name in ["vote", "pre-vote", "append", "transfer-leader", "snapshot"] {
        assert_eq!(rpc(name, None).await.unwrap().status(), StatusCode::BAD_REQUEST, "{name}: unknown is not checked");
        assert_eq!(rpc(name, Some(&mine)).await.unwrap().status(), StatusCode::BAD_REQUEST, "{name}: a match passes");
        let refused = rpc(name, Some("00000000000000aa")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::CONFLICT, "{name}: a mismatch is refused");
        assert_eq!(refused.headers()["x-bazar-incarnation"].to_str().unwrap(), mine);
        let text = refused.text().await.unwrap();
        assert!(text.contains("lost its state") && text.contains("bazar cluster rejoin 1"), "{text}");
    }

    let health: NodeHealth = node.http.get(node.url("/health")).send().await.unwrap().json().await.unwrap();
    let lost = health.state_lost.expect("state_lost in /health");
    assert_eq!((lost.noticed_by, lost.recovery.as_str()), (7, "bazar cluster rejoin 1"));
    assert_eq!((lost.incarnation.as_str(), lost.on_record.as_str()), (mine.as_str(), "00000000000000aa"));
    let cluster: bazar_api::ClusterStatus =
        node.http.get(node.url("/cluster")).send().await.unwrap().json().await.unwrap();
    assert!(cluster.state_lost.is_some());
    let metrics = node.http.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bazar_incarnation_refused_rpcs_total 5"), "{metrics}");
    assert!(metrics.contains("bazar_incarnation_state_lost 1"));

    // A peer that knows this incarnation clears the alarm.
    rpc("append", Some(&mine)).await.unwrap();
    let health: NodeHealth = node.http.get(node.url("/health")).send().await.unwrap().json().await.unwrap();
    assert!(health.state_lost.is_none());

    // The identity route is the cluster's, not the public's.
    let r = node.http.get(node.url("/raft/identity")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics_and_health_is_cheap() {
    let node = TestNode::start().await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let _ = node.http.request(method, node.url("/books")).send().await.unwrap();
    }
    let metrics = node.http.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("MADEUP"), "a made-up method became a label");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    // A fresh count of unsettled buys needs the admin token.
    let r = node.http.get(node.url("/health?fresh=true")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = node.http.get(node.url("/health?fresh=true")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<NodeHealth>().await.unwrap().unclaimed_buys, 0);
    let r = node.http.get(node.url("/health?fresh=maybe")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_grants_no_vote_for_a_lease_period_after_it_starts() {
    // A long election timeout makes the lease (and so the quarantine) 3 s.
    let node = TestNode::spawn(1, |addr| {
        vec![
            format!("--initial-cluster=1={addr}"),
            "--election-timeout-min-ms=2000".into(),
            "--election-timeout-max-ms=3000".into(),
        ]
    })
    .await;
    let vote = |leadership_transfer: bool| {
        // Node 9 in term 100: harmless, since it is refused before openraft sees it.
        let req = openraft::raft::VoteRequest::<bazar_node::orders::OrdersTypes> {
            vote: openraft::Vote::new(100, 9),
            last_log_id: None,
            leadership_transfer,
        };
        node.http
            .post(node.url("/raft/orders/vote"))
            .bearer_auth(CLUSTER)
            .body(postcard::to_allocvec(&req).unwrap())
            .send()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let r = loop {
        match vote(false).await {
            Ok(r) => break r,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("node not answering: {e}"),
        }
    };
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("restarted moments ago"));
    // It does not campaign either, then leads once the quarantine is over.
    let started = tokio::time::Instant::now();
    node.wait_ready().await;
    eprintln!("led {:?} after the refused vote", started.elapsed());
    node.stop().await;
}

/// Buys one copy of book 3 under a key, retries it within the window, waits
/// for the key to be forgotten, and retries it again. Returns the order of
/// the first buy, the order the late retry got, the confirmed orders of
/// the book under the key, and the copies taken in all.
async fn retry_after_the_window(extra: &[&str]) -> (Order, Order, usize, u64) {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let node = TestNode::spawn(1, |_| extra).await;
    node.wait_ready().await;
    let stock = node.book(3).await.stock;
    let buy = || node.http.post(node.url("/books/3/buy")).header("Idempotency-Key", "late").json(&json!({})).send();
    let r = buy().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Order = r.json().await.unwrap();
    let again: Order = buy().await.unwrap().json().await.unwrap();
    assert_eq!(again, first, "within the window: the same order");

    // The orders forget the key one window (1 s) after the buy, give or
    // take a purge interval.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = node.http.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l == "bazar_idempotency_keys_purged_total{group=\"orders\"} 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the key was not forgotten in 20 s:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orders = node.digest("orders").await;
    assert_eq!(orders.rows.get("idempotency_keys").map(|c| c.rows), None, "{orders:?}");
    let r = buy().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "after the window: a new buy");
    let late: Order = r.json().await.unwrap();

    // Once settled: the book's confirmed orders under the key, and the stock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health: NodeHealth = node.http.get(node.url("/health")).send().await.unwrap().json().await.unwrap();
        if health.unclaimed_buys == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the late buy was not settled: {health:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = node.http.get(node.url("/orders?book_id=3&consistency=linearizable")).send().await.unwrap();
    let page: bazar_api::OrderPage = r.json().await.unwrap();
    let confirmed = page
        .orders
        .iter()
        .filter(|o| o.idempotency_key.as_deref() == Some("late") && o.status.as_str() == "confirmed")
        .count();
    let taken = stock - node.book(3).await.stock;
    node.stop().await;
    (first, late, confirmed, taken)
}

/// Within the retention window a retry gets the one order; after it, both
/// groups forget the key and a retry is a new buy, which takes its own
/// stock: two confirmed orders under the key, two copies taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_retention_window_is_a_new_buy_that_takes_its_own_stock() {
    let (first, late, confirmed, taken) = retry_after_the_window(&["--idempotency-retention=1s"]).await;
    assert_ne!(late.order_id, first.order_id);
    assert_eq!((confirmed, taken), (2, 2), "one copy per confirmed order");
}

/// The planted bug `forget-keeps-reservations` (the orders forget the key,
/// the catalog keeps its reservation) is caught by the same comparison:
/// the late retry's order is confirmed by the old reservation and takes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planted_bug_of_a_purge_that_keeps_reservations_confirms_an_order_for_free() {
    let (_, _, confirmed, taken) =
        retry_after_the_window(&["--idempotency-retention=1s", "--planted-bug=forget-keeps-reservations"]).await;
    assert_eq!((confirmed, taken), (2, 1), "the bug must show: two confirmed orders, one copy taken");
}
