//! Small in-process HTTP servers that play a frontend or a node, shared by
//! the client's tests (`client/tests/http.rs`) and the command line's
//! (`cli/tests/cli.rs`, which includes this file by path).
//!
//! Every server binds `127.0.0.1:0`, so tests run in parallel without port
//! clashes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazar_api::{Book, BookPage, ErrorCode, Order, OrderStatus, Problem};

/// Serves `app` on an ephemeral loopback port; returns `host:port`.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

pub fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap();
    (status, [(header::CONTENT_TYPE, bazar_api::PROBLEM_CONTENT_TYPE)], Json(p)).into_response()
}

pub fn book(id: u64, title: &str) -> Book {
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
pub fn leader_app() -> Router {
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
pub fn follower_app(leader: String, hits: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(move || {
        let leader = leader.clone();
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            problem(Problem::not_leader("catalog", Some(1), Some(leader)))
        }
    })
}

/// A frontend serving lookups and searches with read headers.
pub fn reads_app() -> Router {
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
