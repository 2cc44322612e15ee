//! The client against small in-process HTTP servers that play a frontend or
//! a node: redirects, read headers, problems, timeouts, streams, and the
//! `bazar` binary's output and exit codes.
//!
//! Every server binds `127.0.0.1:0`, so tests run in parallel without port
//! clashes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazar_client::{
    Book, BookPage, Client, ClientError, ErrorCode, Group, Order, OrderStatus, Problem, TransportKind, WatchEvent,
};
use futures::StreamExt;

/// Serves `app` on an ephemeral loopback port; returns `host:port`.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap();
    (status, [(header::CONTENT_TYPE, bazar_api::PROBLEM_CONTENT_TYPE)], Json(p)).into_response()
}

fn book(id: u64, title: &str) -> Book {
    Book {
        id,
        isbn: "9780306406157".into(),
        title: title.into(),
        topic: "distributed systems".into(),
        price_cents: 1999,
        stock: 1000,
    }
}

/// A node that leads: answers buys, echoing what it received.
fn leader_app() -> Router {
    async fn buy(Path(id): Path<u64>, headers: HeaderMap, Json(body): Json<bazar_api::BuyRequest>) -> Response {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if auth != Some("Bearer s3cret") {
            return problem(Problem::new(ErrorCode::Unauthorized, "no token"));
        }
        let key = headers.get(bazar_api::IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let quantity = body.quantity.unwrap_or(1);
        let order = Order {
            order_id: 7,
            book_id: id,
            quantity,
            unit_price_cents: 1999,
            total_cents: 1999 * quantity,
            status: OrderStatus::Confirmed,
            reason: None,
            created_at: "2024-01-01T00:00:00Z".into(),
            idempotency_key: key,
            buyer: body.buyer,
        };
        (StatusCode::CREATED, Json(order)).into_response()
    }
    Router::new().route("/books/{id}/buy", post(buy))
}

/// A node that does not lead and points at `leader`.
fn follower_app(leader: String, hits: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(move || {
        let leader = leader.clone();
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            problem(Problem::not_leader("catalog", Some(1), Some(leader)))
        }
    })
}

#[tokio::test]
async fn not_leader_answers_are_followed_to_the_leader() {
    let leader = serve(leader_app()).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let follower = serve(follower_app(leader, hits.clone())).await;
    let client = Client::builder(&follower).admin_token("s3cret").build().unwrap();

    let order = client.buy(3, 2, Some("key-1")).await.unwrap();

    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(order.book_id, 3);
    assert_eq!(order.quantity, 2);
    assert_eq!(order.total_cents, 3998);
    assert_eq!(order.idempotency_key.as_deref(), Some("key-1"), "key re-sent to the leader");

    let order = client.buy_as(3, 1, Some("manar"), Some("key-2")).await.unwrap();
    assert_eq!(order.buyer.as_deref(), Some("manar"), "the buyer is sent in the body");
}

#[tokio::test]
async fn redirects_stop_after_three_hops() {
    // A node that names itself as the leader: a loop the client must break.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = follower_app(addr.clone(), hits.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let err = Client::new(&addr).unwrap().buy(1, 1, None).await.unwrap_err();

    assert!(err.is_code(ErrorCode::NotLeader), "{err:?}");
    assert_eq!(err.status(), Some(421));
    assert_eq!(hits.load(Ordering::SeqCst), 1 + bazar_client::MAX_LEADER_HOPS);
}

/// A frontend serving lookups and searches with read headers.
fn reads_app() -> Router {
    async fn lookup(Path(id): Path<u64>, Query(q): Query<HashMap<String, String>>) -> Response {
        if id != 1 {
            return problem(Problem::new(ErrorCode::NotFound, format!("no book {id}")));
        }
        // The title echoes the consistency asked for, so the test sees it.
        let title = q.get("consistency").cloned().unwrap_or_else(|| "default".into());
        let headers =
            [(bazar_api::CACHE_HEADER, "miss"), (bazar_api::SERVED_BY_HEADER, "2"), (bazar_api::INDEX_HEADER, "41")];
        (headers, Json(book(1, &title))).into_response()
    }
    async fn search(Query(q): Query<HashMap<String, String>>) -> Json<BookPage> {
        // Five books under "t", served `limit` at a time after `cursor`.
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(2);
        let after: u64 = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
        let all: Vec<u64> = if q.get("topic").map(String::as_str) == Some("t") { (1..=5).collect() } else { vec![] };
        let books: Vec<Book> = all.iter().filter(|&&id| id > after).take(limit).map(|&id| book(id, "b")).collect();
        let next_cursor = match books.last() {
            Some(last) if last.id < 5 => Some(last.id.to_string()),
            _ => None,
        };
        Json(BookPage { books, next_cursor })
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    }
    Router::new().route("/books/{id}", get(lookup)).route("/books", get(search)).route("/metrics", get(slow))
}

#[tokio::test]
async fn reads_expose_served_by_cache_and_index() {
    let client = Client::new(&serve(reads_app()).await).unwrap();

    let read = client.lookup(1, Some(bazar_client::Consistency::Linearizable)).await.unwrap();

    assert_eq!(read.value.title, "linearizable", "consistency is sent as a query parameter");
    assert_eq!(read.meta.cache.as_deref(), Some("miss"));
    assert_eq!(read.meta.served_by.as_deref(), Some("2"));
    assert_eq!(read.meta.index, Some(41));
    let read = client.lookup(1, None).await.unwrap();
    assert_eq!(read.value.title, "default", "no consistency means the server's default");
}

#[tokio::test]
async fn problem_answers_become_problem_errors() {
    let client = Client::new(&serve(reads_app()).await).unwrap();

    let err = client.lookup(9, None).await.unwrap_err();

    assert!(err.is_code(ErrorCode::NotFound), "{err:?}");
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.to_string(), "no book 9");
    assert!(!err.outcome_unknown());
}

#[tokio::test]
async fn list_all_books_follows_cursors_to_the_end() {
    let client = Client::new(&serve(reads_app()).await).unwrap();

    let page = client.search("t", Some(2), None, None).await.unwrap().value;
    assert_eq!(page.books.len(), 2);
    assert_eq!(page.next_cursor.as_deref(), Some("2"));

    let all = client.list_all_books(Some("t"), None).await.unwrap();
    assert_eq!(all.iter().map(|b| b.id).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(client.search("none", None, None, None).await.unwrap().value.books.is_empty());
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error_with_known_outcome() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);

    let err = Client::new(&addr).unwrap().buy(1, 1, Some("k")).await.unwrap_err();

    assert!(matches!(err, ClientError::Transport { kind: TransportKind::Connect, .. }), "{err:?}");
    assert!(!err.outcome_unknown(), "an unsent request changed nothing");
}

#[tokio::test]
async fn slow_answers_time_out_with_unknown_outcome() {
    let addr = serve(reads_app()).await;
    let client = Client::builder(&addr).timeout(Duration::from_millis(200)).build().unwrap();

    let err = client.metrics().await.unwrap_err();

    assert!(err.is_timeout(), "{err:?}");
    assert!(err.outcome_unknown());
}

#[tokio::test]
async fn invalid_arguments_never_reach_the_server() {
    let client = Client::new("127.0.0.1:9").unwrap();
    for err in [
        client.buy(1, 0, None).await.unwrap_err(),
        client.buy(1, 1, Some("has space")).await.unwrap_err(),
        client.buy_as(1, 1, Some("no spaces"), None).await.unwrap_err(),
        client.orders(&bazar_api::OrderFilter::Buyer("a/b".into()), None, None, None).await.unwrap_err(),
        client.restock(1, bazar_api::model::MAX_QUANTITY + 1).await.unwrap_err(),
        client.update_book(1, bazar_api::BookPatch::default()).await.unwrap_err(),
    ] {
        assert!(matches!(err, ClientError::Invalid(_)), "{err:?}");
    }
}

#[tokio::test]
async fn watch_parses_ndjson_split_across_chunks() {
    async fn watch(Query(q): Query<HashMap<String, String>>) -> Response {
        assert_eq!(q.get("group").map(String::as_str), Some("catalog"));
        assert_eq!(q.get("from").map(String::as_str), Some("10"));
        let chunks = [
            "{\"type\":\"applied\",\"ind",
            "ex\":11,\"keys\":[\"book/1\",\"topic/t\"]}\n{\"type\":\"heartbeat\",",
            "\"node_id\":2,\"applied_index\":11,\"commit_index\":12,\"leader_id\":1}\n",
        ];
        let body = futures::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, std::io::Error>(c)
        });
        ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
    }
    let addr = serve(Router::new().route("/watch", get(watch))).await;
    let client = Client::new(&addr).unwrap();

    let events: Vec<WatchEvent> = client.watch(Group::Catalog, 10).await.unwrap().map(Result::unwrap).collect().await;

    assert_eq!(
        events,
        vec![
            WatchEvent::Applied { index: 11, keys: vec!["book/1".into(), "topic/t".into()] },
            WatchEvent::Heartbeat { node_id: 2, applied_index: 11, commit_index: 12, leader_id: Some(1) },
        ]
    );
}

// ---- the `bazar` binary -------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bazar` with a clean environment: no token file, no variables.
async fn bazar(args: &[&str]) -> Run {
    let data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazar"))
        .args(args)
        .env("BAZAR_DATA", data.path())
        .env_remove("BAZAR_FRONTEND")
        .env_remove("BAZAR_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test]
async fn cli_prints_tables_with_dollars_and_read_metadata() {
    let addr = serve(reads_app()).await;

    let run = bazar(&["--frontend", &addr, "lookup", "1"]).await;

    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("ID  ISBN"), "{}", run.stdout);
    assert!(run.stdout.contains("$19.99"), "{}", run.stdout);
    assert!(run.stdout.contains("served by 2, cache miss, index 41"), "{}", run.stdout);
}

#[tokio::test]
async fn cli_json_mode_prints_the_raw_document() {
    let addr = serve(reads_app()).await;

    let run = bazar(&["--json", "--frontend", &format!("http://{addr}/"), "lookup", "1"]).await;

    assert_eq!(run.code, 0, "{}", run.stderr);
    let book: Book = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(book.price_cents, 1999);
}

#[tokio::test]
async fn cli_reports_problems_on_stderr_with_exit_code_1() {
    let addr = serve(reads_app()).await;

    let run = bazar(&["--frontend", &addr, "lookup", "9"]).await;

    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().next(), Some("error: no book 9 (not_found, HTTP 404)"));
    assert!(run.stdout.is_empty());
}

#[tokio::test]
async fn cli_exits_3_when_the_server_is_unreachable_and_2_on_bad_input() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);

    let run = bazar(&["--frontend", &addr, "search", "x"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("hint: is Bazar running"), "{}", run.stderr);

    let run = bazar(&["--frontend", &addr, "buy", "1", "--quantity", "0"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("quantity must be at least 1"), "{}", run.stderr);
}

#[tokio::test]
async fn cli_buy_through_a_follower_uses_the_token_file() {
    let leader = serve(leader_app()).await;
    let follower = serve(follower_app(leader, Arc::new(AtomicUsize::new(0)))).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("tokens.env"), "BAZAR_ADMIN_TOKEN=s3cret\n").unwrap();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazar"))
        .args(["--frontend", &follower, "buy", "4", "-q", "3", "-k", "abc"])
        .env("BAZAR_DATA", data.path())
        .env_remove("BAZAR_ADMIN_TOKEN")
        .env_remove("BAZAR_FRONTEND")
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.starts_with("order 7 confirmed: 3 copies of book 4 at $19.99 = $59.97"), "{stdout}");
    assert!(stdout.contains("idempotency key abc"), "{stdout}");
}
