//! The frontend's routes: the public API of SPEC section 3.
//!
//! Reads default to `cached`: served from the cache when it can vouch for
//! them (`X-Bazar-Cache: hit`, `X-Bazar-Served-By: cache`), otherwise from a
//! replica (`miss`, or `bypass` at `lease`/`linearizable` or while the cache
//! is stale). Writes are relayed to the leader of their group; their bodies
//! are validated by the node, the single authority on input.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazar_api::model::{parse_paging, topic_key};
use bazar_api::{
    CACHE_HEADER, CATALOG_INDEX_HEADER, Consistency, ErrorCode, Group, IDEMPOTENCY_KEY_HEADER, INDEX_HEADER,
    MIN_INDEX_PARAM, OrderFilter, PROBLEM_CONTENT_TYPE, Problem, SERVED_BY_HEADER,
};
use tokio::time::Instant;

use crate::Frontend;
use crate::cache::{CacheKey, Cached, Lookup, Page};
use crate::metrics::Route;
use crate::proxy::{Answer, Write};

/// Largest request body relayed to a node.
const BODY_LIMIT: usize = 64 * 1024;

/// The frontend's routes.
pub fn app(front: Arc<Frontend>) -> Router {
    Router::new()
        .route("/books", get(search).post(add_book))
        .route("/books/{id}", get(lookup).patch(update_book))
        .route("/books/{id}/buy", post(buy))
        .route("/books/{id}/restock", post(restock))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/health", get(health))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(&Problem::new(ErrorCode::NotFound, "no such route")) })
        .method_not_allowed_fallback(|| async {
            problem(&Problem::new(ErrorCode::InvalidInput, "method not allowed on this route").with_status(405))
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(front.clone(), track))
        .with_state(front)
}

/// Renders a problem document.
pub fn problem(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, serde_json::to_vec(p).unwrap_or_default()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    if let Some(secs) = p.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn invalid(detail: impl Into<String>) -> Response {
    problem(&Problem::new(ErrorCode::InvalidInput, detail))
}

async fn track(State(front): State<Arc<Frontend>>, req: Request, next: Next) -> Response {
    let route = route_of(req.method(), req.uri().path());
    let started = StdInstant::now();
    let response = next.run(req).await;
    front.metrics.record(route, response.status().as_u16(), started.elapsed().as_micros() as u64);
    response
}

fn route_of(method: &Method, path: &str) -> Route {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["books"]) => Route::Search,
        ("POST", ["books"]) => Route::AddBook,
        ("GET", ["books", _]) => Route::Lookup,
        ("PATCH", ["books", _]) => Route::UpdateBook,
        ("POST", ["books", _, "buy"]) => Route::Buy,
        ("POST", ["books", _, "restock"]) => Route::Restock,
        ("GET", ["orders"]) => Route::Orders,
        ("GET", ["orders", _]) => Route::Order,
        _ => Route::Other,
    }
}

// Input checks return the problem's detail; handlers turn it into a 400.

fn parse_id(raw: &str) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("{raw:?} is not a valid id: ids are positive integers")),
    }
}

fn parse_query(raw: Option<String>) -> Result<HashMap<String, String>, String> {
    match raw {
        None => Ok(HashMap::new()),
        Some(q) => serde_urlencoded::from_str(&q).map_err(|e| format!("invalid query: {e}")),
    }
}

fn consistency(q: &HashMap<String, String>) -> Result<Consistency, String> {
    match q.get("consistency").map(String::as_str) {
        None | Some("") => Ok(Consistency::Cached),
        Some(s) => s.parse(),
    }
}

fn paging(q: &HashMap<String, String>) -> Result<Page, String> {
    parse_paging(q.get("limit").map(String::as_str), q.get("cursor").map(String::as_str))
}

/// A read, described once for the cache and for the replicas.
struct Read {
    key: CacheKey,
    page: Option<Page>,
    path: String,
    params: Vec<(&'static str, String)>,
}

fn read_headers(response: &mut Response, cache: &'static str, served_by: HeaderValue, index: Option<u64>) {
    let headers = response.headers_mut();
    headers.insert(CACHE_HEADER, HeaderValue::from_static(cache));
    headers.insert(SERVED_BY_HEADER, served_by);
    if let Some(index) = index {
        headers.insert(INDEX_HEADER, HeaderValue::from(index));
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Relays a node's answer: status, body, content type, retry hint and
/// `X-Bazar-*` headers.
fn relay(answer: &Answer) -> Response {
    let mut response = (answer.status, answer.body.clone()).into_response();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER, header::CACHE_CONTROL] {
        if let Some(v) = answer.headers.get(&name) {
            response.headers_mut().insert(name, v.clone());
        }
    }
    for name in [INDEX_HEADER, CATALOG_INDEX_HEADER] {
        if let Some(v) = answer.headers.get(name) {
            response.headers_mut().insert(HeaderName::from_static(name), v.clone());
        }
    }
    response
}

impl Frontend {
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// Serves a read at `consistency`, from the cache when it may.
    async fn read(&self, read: Read, consistency: Consistency) -> Response {
        let group = read.key.group();
        let (level, min_index, cache_label) = match consistency {
            Consistency::Cached => match self.cache.lookup(&read.key, read.page) {
                Lookup::Hit(c) => {
                    let mut response = json_response(StatusCode::OK, c.body);
                    read_headers(&mut response, "hit", HeaderValue::from_static("cache"), Some(c.index));
                    return response;
                }
                Lookup::Miss { min_index } => ("cached", min_index, "miss"),
                // The cache cannot vouch for freshness: ask for a lease read,
                // which can, and still honour this frontend's writes.
                Lookup::Bypass => ("lease", self.cache.status(group).ryw_floor, "bypass"),
            },
            Consistency::Lease => ("lease", 0, "bypass"),
            Consistency::Linearizable => ("linearizable", 0, "bypass"),
        };
        let mut params = read.params.clone();
        params.push(("consistency", level.to_string()));
        if min_index > 0 {
            params.push((MIN_INDEX_PARAM, min_index.to_string()));
        }
        match self.read_replica(&read.path, &params, self.deadline()).await {
            Ok(answer) => {
                let index = answer.header_u64(INDEX_HEADER);
                let no_store = answer.headers.get(header::CACHE_CONTROL).is_some_and(|v| v == "no-store");
                if answer.status == StatusCode::OK
                    && let Some(index) = index
                    && !no_store
                {
                    // Any fresh-enough answer may warm the cache, whatever
                    // consistency it was read at; the fill rules decide. A
                    // node marks `no-store` an answer that shows a buy in
                    // flight (a pending order).
                    self.cache.fill(read.key, read.page, Cached { body: answer.body.clone(), index });
                }
                let mut response = relay(&answer);
                if answer.status.is_success() {
                    read_headers(&mut response, cache_label, HeaderValue::from(answer.node), index);
                }
                response
            }
            Err(p) => problem(&p),
        }
    }

    /// Relays a write to its group's leader and records its commit index
    /// for read-your-writes.
    async fn write(&self, write: Write<'_>) -> Response {
        let group = write.group;
        match self.forward_write(write, self.deadline()).await {
            Ok(answer) => {
                if let Some(index) = answer.header_u64(INDEX_HEADER) {
                    self.cache.wrote(group, index);
                }
                if let Some(index) = answer.header_u64(CATALOG_INDEX_HEADER) {
                    self.cache.wrote(Group::Catalog, index);
                }
                relay(&answer)
            }
            Err(p) => problem(&p),
        }
    }
}

/// Headers passed on to the node with a write.
fn write_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    if let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) {
        out.insert(HeaderName::from_static(IDEMPOTENCY_KEY_HEADER), v.clone());
    }
    out
}

async fn search(State(front): State<Arc<Frontend>>, RawQuery(q): RawQuery) -> Response {
    let result = (|| {
        let q = parse_query(q)?;
        let level = consistency(&q)?;
        let (limit, after) = paging(&q)?;
        let topic = q.get("topic").map(|t| t.trim()).filter(|t| !t.is_empty());
        let mut params = vec![("limit", limit.to_string())];
        if after > 0 {
            params.push(("cursor", after.to_string()));
        }
        let key = match topic {
            Some(t) => {
                params.push(("topic", t.to_string()));
                CacheKey::Topic(topic_key(t))
            }
            None => CacheKey::AllBooks,
        };
        Ok::<_, String>((Read { key, page: Some((limit, after)), path: "/books".into(), params }, level))
    })();
    match result {
        Ok((read, level)) => front.read(read, level).await,
        Err(detail) => invalid(detail),
    }
}

async fn lookup(State(front): State<Arc<Frontend>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let (id, level) = match parse_id(&id).and_then(|id| Ok((id, consistency(&parse_query(q)?)?))) {
        Ok(v) => v,
        Err(detail) => return invalid(detail),
    };
    let read = Read { key: CacheKey::Book(id), page: None, path: format!("/books/{id}"), params: Vec::new() };
    front.read(read, level).await
}

async fn order(State(front): State<Arc<Frontend>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let (id, level) = match parse_id(&id).and_then(|id| Ok((id, consistency(&parse_query(q)?)?))) {
        Ok(v) => v,
        Err(detail) => return invalid(detail),
    };
    let read = Read { key: CacheKey::Order(id), page: None, path: format!("/orders/{id}"), params: Vec::new() };
    front.read(read, level).await
}

async fn orders(State(front): State<Arc<Frontend>>, RawQuery(q): RawQuery) -> Response {
    let result = (|| {
        let q = parse_query(q)?;
        let level = consistency(&q)?;
        let (limit, after) = paging(&q)?;
        let mut params = vec![("limit", limit.to_string())];
        if after > 0 {
            params.push(("cursor", after.to_string()));
        }
        let key = match OrderFilter::parse(q.get("book_id").map(String::as_str), q.get("buyer").map(String::as_str))? {
            OrderFilter::Book(book) => {
                params.push(("book_id", book.to_string()));
                CacheKey::BookOrders(book)
            }
            OrderFilter::Buyer(buyer) => {
                params.push(("buyer", buyer.clone()));
                CacheKey::BuyerOrders(buyer)
            }
            OrderFilter::All => CacheKey::AllOrders,
        };
        Ok::<_, String>((Read { key, page: Some((limit, after)), path: "/orders".into(), params }, level))
    })();
    match result {
        Ok((read, level)) => front.read(read, level).await,
        Err(detail) => invalid(detail),
    }
}

async fn buy(State(front): State<Arc<Frontend>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(detail) => return invalid(detail),
    };
    let mut forwarded = write_headers(&headers);
    // Every buy carries an idempotency key, so that the frontend can retry
    // it through leader changes without ever buying twice. The key is
    // returned, so that the client can retry after a 503 too.
    let key = match forwarded.get(IDEMPOTENCY_KEY_HEADER) {
        Some(k) => k.clone(),
        None => {
            let key = format!("fe-{:032x}", rand::random::<u128>());
            let value = HeaderValue::from_str(&key).expect("hex is a valid header value");
            forwarded.insert(HeaderName::from_static(IDEMPOTENCY_KEY_HEADER), value.clone());
            value
        }
    };
    let path = format!("/books/{id}/buy");
    let write =
        Write { group: Group::Orders, method: Method::POST, path: &path, headers: forwarded, body, idempotent: true };
    let mut response = front.write(write).await;
    response.headers_mut().insert(HeaderName::from_static(IDEMPOTENCY_KEY_HEADER), key);
    response
}

async fn catalog_write(front: &Frontend, method: Method, path: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let write = Write { group: Group::Catalog, method, path, headers: write_headers(headers), body, idempotent: false };
    front.write(write).await
}

async fn add_book(State(front): State<Arc<Frontend>>, headers: HeaderMap, body: Bytes) -> Response {
    catalog_write(&front, Method::POST, "/books", &headers, body).await
}

/// Relays a write to one book (`/books/{id}` + `suffix`) after checking its id.
async fn book_write(
    front: &Frontend,
    method: Method,
    id: &str,
    suffix: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match parse_id(id) {
        Ok(id) => catalog_write(front, method, &format!("/books/{id}{suffix}"), headers, body).await,
        Err(detail) => invalid(detail),
    }
}

async fn restock(
    State(front): State<Arc<Frontend>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    book_write(&front, Method::POST, &id, "/restock", &headers, body).await
}

async fn update_book(
    State(front): State<Arc<Frontend>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    book_write(&front, Method::PATCH, &id, "", &headers, body).await
}

async fn health(State(front): State<Arc<Frontend>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "role": "frontend",
        "replicas_healthy": front.replicas.all().iter().filter(|r| r.is_healthy()).count(),
        "cache_fresh": Group::ALL.iter().map(|g| (g.as_str(), front.cache.is_fresh(*g))).collect::<HashMap<_, _>>(),
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

async fn cluster(State(front): State<Arc<Frontend>>) -> Response {
    json_response(StatusCode::OK, Bytes::from(serde_json::to_vec(&front.status()).unwrap_or_default()))
}

async fn metrics(State(front): State<Arc<Frontend>>) -> Response {
    let mut response = Body::from(crate::metrics::render(&front)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
