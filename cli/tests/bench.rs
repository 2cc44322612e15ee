//! `bazar bench` against small in-process servers: requests are counted
//! exactly, failures are kept apart by kind, buys carry unique idempotency
//! keys, and the etcd and plain-GET targets decode what they receive.
//!
//! Runs are bounded by request counts, never by time, and nothing here
//! asserts on how fast anything was.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bazar_cli::bench::{self, BenchArgs, Connection, sample_book};
use bazar_cli::cli::{Cli, Command};
use bazar_client::{ErrorCode, Order, OrderStatus, Problem};
use clap::Parser;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

fn bench_args(argv: &[&str]) -> Box<BenchArgs> {
    let mut full = vec!["bazar", "bench"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full).unwrap().command {
        Command::Bench(args) => args,
        other => panic!("not a bench command: {other:?}"),
    }
}

fn connection(addr: &str) -> Connection {
    Connection { frontend: addr.to_string(), admin_token: None, timeout: Duration::from_secs(5) }
}

#[derive(Default)]
struct Store {
    keys: Mutex<HashSet<String>>,
    buys: AtomicU64,
    reused_keys: AtomicU64,
}

/// A node that serves lookups from its "cache" and refuses every third buy.
fn store_app(store: Arc<Store>) -> Router {
    async fn lookup(Path(id): Path<u64>) -> Response {
        ([(bazar_api::CACHE_HEADER, "hit")], Json(sample_book(id))).into_response()
    }
    async fn buy(State(store): State<Arc<Store>>, Path(id): Path<u64>, headers: HeaderMap) -> Response {
        let key = headers.get(bazar_api::IDEMPOTENCY_KEY_HEADER).unwrap().to_str().unwrap().to_string();
        if !store.keys.lock().unwrap().insert(key) {
            store.reused_keys.fetch_add(1, Ordering::SeqCst);
        }
        let n = store.buys.fetch_add(1, Ordering::SeqCst);
        if n % 3 == 2 {
            let p = Problem::new(ErrorCode::OutOfStock, "none left");
            return (StatusCode::CONFLICT, [(header::CONTENT_TYPE, bazar_api::PROBLEM_CONTENT_TYPE)], Json(p))
                .into_response();
        }
        let order = Order {
            order_id: n + 1,
            book_id: id,
            quantity: 1,
            unit_price_cents: 100,
            total_cents: 100,
            status: OrderStatus::Confirmed,
            reason: None,
            created_at: "2024-01-01T00:00:00Z".into(),
            idempotency_key: None,
            buyer: None,
        };
        // Two values of the header, as a frontend relaying a node sends them.
        let timing = axum::response::AppendHeaders([
            (bazar_api::timing::SERVER_TIMING_HEADER, "node;dur=2.000"),
            (bazar_api::timing::SERVER_TIMING_HEADER, r#"raft;desc="orders commit";dur=1.500"#),
        ]);
        (StatusCode::CREATED, timing, Json(order)).into_response()
    }
    Router::new().route("/books/{id}", get(lookup)).route("/books/{id}/buy", post(buy)).with_state(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_requests_are_counted_exactly_and_failures_apart() {
    let store = Arc::new(Store::default());
    let addr = serve(store_app(store.clone())).await;
    let args = bench_args(&[
        "--clients",
        "1,4",
        "--requests",
        "60",
        "--warmup",
        "0s",
        "--mix",
        "lookup=1,buy=1",
        "--no-prepare",
    ]);
    let report = bench::run(&args.run, &connection(&addr), false).await.unwrap();

    assert_eq!(report.levels.iter().map(|l| l.clients).collect::<Vec<_>>(), vec![1, 4]);
    for level in &report.levels {
        assert_eq!(level.total.ok + level.total.errors, 60, "level {}", level.clients);
        let lookups = &level.ops["lookup"];
        let buys = &level.ops["buy"];
        assert_eq!(lookups.ok + buys.ok + buys.errors, 60);
        assert_eq!(lookups.errors, 0);
        assert_eq!(level.total.cache.get("hit").copied(), Some(lookups.ok), "every lookup reported a cache hit");
        assert_eq!(buys.errors, buys.error_kinds.get("409 out_of_stock").copied().unwrap_or(0));
        assert!(level.total.latency.p50_us > 0 && level.total.latency.p50_us <= level.total.latency.max_us);
        // Every confirmed buy's Server-Timing, summed per tier and step.
        assert_eq!(buys.timing["node"].answers, buys.ok);
        assert_eq!(buys.timing["node"].mean_ms(), 2.0);
        assert_eq!(buys.timing["raft orders commit"].mean_ms(), 1.5);
        assert!(lookups.timing.is_empty(), "lookups said nothing of their time");
    }
    assert!(report.table().contains("buy time, mean ms: client "), "{}", report.table());
    // Every buy of both levels reached the server with its own key.
    let buys = store.buys.load(Ordering::SeqCst);
    assert!(buys > 0);
    assert_eq!(store.reused_keys.load(Ordering::SeqCst), 0);
    assert_eq!(store.keys.lock().unwrap().len() as u64, buys);
    assert_eq!(report.mix.get("buy"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repetitions_are_kept_and_merged_into_medians() {
    let addr = serve(store_app(Arc::new(Store::default()))).await;
    let args =
        bench_args(&["--clients", "2", "--requests", "20", "--warmup", "0s", "--repeat", "3", "--mix", "lookup=1"]);
    let report = bench::run(&args.run, &connection(&addr), false).await.unwrap();
    assert_eq!(report.repeat, 3);
    assert_eq!(report.levels.len(), 1);
    assert_eq!(report.levels[0].repetitions.len(), 3);
    assert_eq!(report.levels[0].total.ok, 20);
}

/// etcd's HTTP/JSON gateway, as far as the benchmark uses it.
fn etcd_app() -> Router {
    async fn range(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        let key = base64::engine::general_purpose::STANDARD.decode(body["key"].as_str().unwrap()).unwrap();
        let key = String::from_utf8(key).unwrap();
        let id: u64 = key.strip_prefix("bazar/books/").unwrap().parse().unwrap();
        let value = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&sample_book(id)).unwrap());
        Json(serde_json::json!({ "header": {}, "kvs": [{ "key": body["key"], "value": value }], "count": "1" }))
    }
    Router::new()
        .route("/v3/kv/range", post(range))
        .route("/v3/kv/put", post(|| async { Json(serde_json::json!({ "header": {} })) }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_and_plain_get_targets_decode_their_answers() {
    let etcd = serve(etcd_app()).await;
    for target in ["etcd-put", "etcd-range-linearizable", "etcd-range-serializable"] {
        let args = bench_args(&[
            "--target",
            target,
            "--endpoints",
            &etcd,
            "--clients",
            "3",
            "--requests",
            "30",
            "--warmup",
            "0s",
        ]);
        let report = bench::run(&args.run, &connection("unused:1"), false).await.unwrap();
        assert_eq!(report.target, target);
        assert_eq!(
            (report.levels[0].total.ok, report.levels[0].total.errors),
            (30, 0),
            "{target}: {:?}",
            report.levels[0]
        );
    }

    let books = serve(store_app(Arc::new(Store::default()))).await;
    let url = format!("http://{books}/books/{{id}}");
    let args =
        bench_args(&["--target", "http-get", "--url", &url, "--clients", "2", "--requests", "10", "--warmup", "0s"]);
    let report = bench::run(&args.run, &connection("unused:1"), false).await.unwrap();
    assert_eq!((report.levels[0].total.ok, report.levels[0].total.errors), (10, 0));

    // A URL that answers something else than a book counts as an error.
    let bad = format!("http://{etcd}/nothing/{{id}}");
    let args =
        bench_args(&["--target", "http-get", "--url", &bad, "--clients", "1", "--requests", "5", "--warmup", "0s"]);
    let report = bench::run(&args.run, &connection("unused:1"), false).await.unwrap();
    assert_eq!(report.levels[0].total.errors, 5);
    assert_eq!(report.levels[0].total.error_kinds.get("http 404").copied(), Some(5));
}

/// A plain-GET server that answers at once, except its `stall_at`-th
/// request, which it holds for `stall`.
fn stalling_app(stall_at: u64, stall: Duration) -> Router {
    let seen = Arc::new(AtomicU64::new(0));
    let lookup = move |Path(id): Path<u64>| {
        let seen = seen.clone();
        async move {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == stall_at {
                tokio::time::sleep(stall).await;
            }
            Json(sample_book(id))
        }
    };
    Router::new().route("/books/{id}", get(lookup))
}

/// `--rate` runs an open loop: requests go out on a fixed schedule and each
/// one's latency counts from when it was due, so the requests queued behind
/// one slow answer all show the wait, where a closed loop (which sends only
/// once answered) shows it once: the coordinated omission wrk2 corrects.
/// Only lower bounds on time are asserted: a slower machine can only make
/// the schedule longer and the waits larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_counts_the_queueing_behind_a_slow_answer() {
    let held = Duration::from_millis(300);
    let run = |extra: &'static [&'static str]| async move {
        let addr = serve(stalling_app(5, held)).await;
        let url = format!("http://{addr}/books/{{id}}");
        let mut argv =
            vec!["--target", "http-get", "--url", &url, "--clients", "1", "--requests", "40", "--warmup", "0s"];
        argv.extend_from_slice(extra);
        let args = bench_args(&argv);
        let started = std::time::Instant::now();
        let report = bench::run(&args.run, &connection("unused:1"), false).await.unwrap();
        (report, started.elapsed())
    };

    // One client at 50 requests a second: one due every 20 ms, the 5th
    // (due at 80 ms) answered 300 ms later.
    let (open, took) = run(&["--rate", "50"]).await;
    assert_eq!(open.rate_per_s, Some(50.0));
    assert!(open.table().contains("open loop at 50/s"), "{}", open.table());
    let open = &open.levels[0].total;
    assert_eq!((open.ok, open.errors), (40, 0));
    assert!(took >= Duration::from_millis(780), "40 requests 20 ms apart take 39 intervals at least: {took:?}");
    // Requests 6 to 15 were due at 100..280 ms, before the held answer came
    // back at 380 ms or later: with the 5th, 11 of the 40 waited 100 ms or
    // more, so the 90th percentile did.
    assert!(open.latency.max_us >= held.as_micros() as u64, "{:?}", open.latency);
    assert!(open.latency.p90_us >= 100_000, "the queued requests count their wait: {:?}", open.latency);

    // The same server in a closed loop: the held answer is one slow request.
    let (closed, _) = run(&[]).await;
    assert!(closed.table().contains("closed loop"), "{}", closed.table());
    let closed = &closed.levels[0].total;
    assert_eq!((closed.ok, closed.errors), (40, 0));
    assert!(closed.latency.max_us >= held.as_micros() as u64, "{:?}", closed.latency);
    assert!(closed.latency.p90_us < open.latency.p90_us, "closed {:?}, open {:?}", closed.latency, open.latency);
}

#[test]
fn usage_errors_are_caught_by_the_parser() {
    let parse = |argv: &[&str]| {
        let mut full = vec!["bazar", "bench"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|_| ())
    };
    assert!(parse(&["--mix", "lookup=0"]).is_err());
    assert!(parse(&["--duration", "5s", "--requests", "10"]).is_err());
    assert!(parse(&["--target", "http-get"]).is_err(), "http-get needs --url");
    assert!(parse(&["--books", "9..1"]).is_err());
    assert!(parse(&["--rate", "0"]).is_err(), "a rate is positive");
    assert!(parse(&["--rate", "fast"]).is_err());
    assert!(parse(&["--rate", "500/s"]).is_ok());
    assert!(parse(&["--rate", "2.5"]).is_ok());
    assert!(parse(&["merge", "--out", "x.json", "a.json"]).is_ok());
    assert!(parse(&["plot", "--out", "x.svg", "a=b.json"]).is_ok());
}
