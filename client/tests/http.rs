//! The client against small in-process HTTP servers that play a frontend or
//! a node (`support`): redirects, read headers, problems, timeouts, streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bazar_client::{Client, ClientError, ErrorCode, Group, TransportKind, WatchEvent};
use futures::StreamExt;

mod support;
use support::{follower_app, leader_app, reads_app, serve};

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
