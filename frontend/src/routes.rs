//! The frontend's routes: the public API of guarantees §3.
//!
//! Reads default to `cached`: served from the cache when it can vouch for
//! them (`X-Bazar-Cache: hit`, `X-Bazar-Served-By: cache`), otherwise from a
//! replica (`miss`, or `bypass` at `lease`/`linearizable` or while the cache
//! is stale). Writes are relayed to the leader of their group; their bodies
//! are validated by the node, the single authority on input.
//!
//! What the frontend checks itself, before relaying anything: the request
//! target (at most [`MAX_TARGET`] bytes, else `414`), each header value (at
//! most [`MAX_HEADER_VALUE`], else `431`), the body (64 KiB, else `413`), and
//! a read's `consistency` and `min_index` (else `400`). Every error answer
//! it makes is a problem document, the framework's own refusals included.
//! `GET /health` is `503` while no replica answers the probes.

use std::collections::HashMap;
use std::future::Future;
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
use crate::config::PlantedBug;
use crate::metrics::Route;
use crate::proxy::{Answer, Write};

/// Largest request body relayed to a node.
const BODY_LIMIT: usize = 64 * 1024;
/// Longest header value accepted (an idempotency key, a token): `431`
/// beyond, before anything is relayed.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Longest request target (path and query) accepted: `414` beyond.
pub const MAX_TARGET: usize = 8 * 1024;

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
        .merge(crate::web::routes())
        .fallback(|| async { Problem::new(ErrorCode::NotFound, "no such route").into_response() })
        .method_not_allowed_fallback(|| async {
            Problem::new(ErrorCode::InvalidInput, "method not allowed on this route").with_status(405).into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(front.clone(), front_door))
        .with_state(front)
}

/// The one middleware every request passes: [`as_problems`] inside
/// [`track`], in one layer (each layer costs every request a boxed call).
async fn front_door(State(front): State<Arc<Frontend>>, req: Request, next: Next) -> Response {
    track(&front, req, |req| as_problems(req, next)).await
}

/// Refuses oversized targets (`414`) and header values (`431`) before any
/// handler runs, and turns every other error answer that is not a problem
/// document yet (the framework's own refusals: `413` for a body over the
/// limit, `400` for an undecodable path, `415`...) into one, keeping its
/// status.
async fn as_problems(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET {
        let detail = format!("the request target is {target} bytes long, at most {MAX_TARGET} are accepted");
        return Problem::new(ErrorCode::InvalidInput, detail).with_status(414).into_response();
    }
    if let Some((name, value)) = req.headers().iter().find(|(_, v)| v.len() > MAX_HEADER_VALUE) {
        let detail = format!("header {name} is {} bytes long, at most {MAX_HEADER_VALUE} are accepted", value.len());
        return Problem::new(ErrorCode::InvalidInput, detail).with_status(431).into_response();
    }
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_CONTENT_TYPE.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_string(),
        t => t.to_string(),
    };
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidInput,
    };
    let mut answer = Problem::new(code, detail).with_status(status.as_u16()).into_response();
    for name in [header::RETRY_AFTER, header::ALLOW] {
        if let Some(v) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, v.clone());
        }
    }
    answer
}

fn invalid(detail: impl Into<String>) -> Response {
    Problem::new(ErrorCode::InvalidInput, detail).into_response()
}

/// Times the request and counts it in the metrics, and puts this tier's
/// `Server-Timing` entry first.
async fn track<F: Future<Output = Response>>(
    front: &Frontend,
    req: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response {
    let route = route_of(req.method(), req.uri().path());
    let started = StdInstant::now();
    let mut response = inner(req).await;
    let took = started.elapsed();
    // This tier's total comes first; a node's answer brings its own after it.
    let ours = HeaderValue::from_str(&format!("frontend;dur={:.3}", took.as_secs_f64() * 1000.0))
        .unwrap_or_else(|_| HeaderValue::from_static("frontend"));
    // Every value the inner tiers wrote, in order (`remove` would keep only
    // the first).
    let theirs: Vec<HeaderValue> = match response.headers_mut().entry(SERVER_TIMING) {
        header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
        header::Entry::Vacant(_) => Vec::new(),
    };
    let headers = response.headers_mut();
    headers.append(SERVER_TIMING, ours);
    for v in theirs {
        headers.append(SERVER_TIMING, v);
    }
    front.metrics.record(route, response.status().as_u16(), took.as_micros() as u64);
    response
}

fn route_of(method: &Method, path: &str) -> Route {
    // No route has more than three segments: a fourth is enough to tell
    // that a longer path matches none.
    let mut parts = [""; 4];
    let mut n = 0;
    for part in path.trim_matches('/').split('/').take(parts.len()) {
        parts[n] = part;
        n += 1;
    }
    match (method.as_str(), &parts[..n]) {
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

/// The client's `min_index` (as the node parses it): 0 when absent.
fn min_index(q: &HashMap<String, String>) -> Result<u64, String> {
    match q.get(MIN_INDEX_PARAM).map(String::as_str) {
        None | Some("") => Ok(0),
        Some(s) => s.parse().map_err(|_| format!("invalid min_index {s:?}")),
    }
}

/// Consistency and `min_index` of a read's query.
fn read_params(q: &HashMap<String, String>) -> Result<(Consistency, u64), String> {
    Ok((consistency(q)?, min_index(q)?))
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
    /// The client's `min_index`: the answer must reflect at least this
    /// index of the read's group.
    min_index: u64,
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
    for v in answer.headers.get_all(SERVER_TIMING) {
        response.headers_mut().append(SERVER_TIMING, v.clone());
    }
    response
}

/// `Server-Timing`: the frontend's total (added by [`track`]), the cache's
/// part, and each node answer's own entries, relayed.
const SERVER_TIMING: &str = bazar_api::timing::SERVER_TIMING_HEADER;

impl Frontend {
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// Serves a read at `consistency`, from the cache when it may. A
    /// client's `min_index` is honoured as a node honours it: a cached
    /// answer read at an older index is not served, and the replica read
    /// waits until it has applied that index (or answers 503 at the
    /// deadline).
    async fn read(&self, read: Read, consistency: Consistency) -> Response {
        let group = read.key.group();
        let wanted = read.min_index;
        let looked_up = StdInstant::now();
        let (level, min_index, cache_label) = match consistency {
            Consistency::Cached => match self.cache.lookup(&read.key, read.page) {
                Lookup::Hit(c) if c.index < wanted => {
                    ("cached", wanted.max(self.cache.status(group).ryw_floor), "miss")
                }
                Lookup::Hit(c) => {
                    let mut response = json_response(StatusCode::OK, c.body);
                    read_headers(&mut response, "hit", HeaderValue::from_static("cache"), Some(c.index));
                    let took = looked_up.elapsed().as_secs_f64() * 1000.0;
                    if let Ok(v) = HeaderValue::from_str(&format!("cache;desc=\"hit\";dur={took:.3}")) {
                        response.headers_mut().append(SERVER_TIMING, v);
                    }
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
        let min_index = min_index.max(wanted);
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
            Err(p) => p.into_response(),
        }
    }

    /// Relays a write to its group's leader and records its commit index
    /// for read-your-writes.
    async fn write(&self, write: Write<'_>) -> Response {
        let group = write.group;
        match self.forward_write(write, self.deadline()).await {
            Ok(answer) => {
                if self.config.planted_bug != Some(PlantedBug::IgnoreReadYourWrites) {
                    if let Some(index) = answer.header_u64(INDEX_HEADER) {
                        self.cache.wrote(group, index);
                    }
                    if let Some(index) = answer.header_u64(CATALOG_INDEX_HEADER) {
                        self.cache.wrote(Group::Catalog, index);
                    }
                }
                relay(&answer)
            }
            Err(p) => p.into_response(),
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
        let (level, min_index) = read_params(&q)?;
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
        Ok::<_, String>((Read { key, page: Some((limit, after)), path: "/books".into(), params, min_index }, level))
    })();
    match result {
        Ok((read, level)) => front.read(read, level).await,
        Err(detail) => invalid(detail),
    }
}

async fn lookup(State(front): State<Arc<Frontend>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let (id, (level, min_index)) = match parse_id(&id).and_then(|id| Ok((id, read_params(&parse_query(q)?)?))) {
        Ok(v) => v,
        Err(detail) => return invalid(detail),
    };
    let read =
        Read { key: CacheKey::Book(id), page: None, path: format!("/books/{id}"), params: Vec::new(), min_index };
    front.read(read, level).await
}

async fn order(State(front): State<Arc<Frontend>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let (id, (level, min_index)) = match parse_id(&id).and_then(|id| Ok((id, read_params(&parse_query(q)?)?))) {
        Ok(v) => v,
        Err(detail) => return invalid(detail),
    };
    let read =
        Read { key: CacheKey::Order(id), page: None, path: format!("/orders/{id}"), params: Vec::new(), min_index };
    front.read(read, level).await
}

async fn orders(State(front): State<Arc<Frontend>>, RawQuery(q): RawQuery) -> Response {
    let result = (|| {
        let q = parse_query(q)?;
        let (level, min_index) = read_params(&q)?;
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
        Ok::<_, String>((Read { key, page: Some((limit, after)), path: "/orders".into(), params, min_index }, level))
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

/// `GET /health`: `200` while at least one replica answers probes;
/// otherwise `503` with an `unavailable` problem (the frontend is up but can
/// serve nothing the cache does not hold).
async fn health(State(front): State<Arc<Frontend>>) -> Response {
    let healthy = front.replicas.all().iter().filter(|r| r.is_healthy()).count();
    if healthy == 0 {
        let total = front.replicas.all().len();
        return Problem::unavailable(
            format!("no healthy replica: none of the {total} nodes answers this frontend's probes"),
            1,
        )
        .into_response();
    }
    let body = serde_json::json!({
        "status": "ok",
        "role": "frontend",
        "replicas_healthy": healthy,
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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use clap::Parser;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Args;

    /// A frontend whose one node listens nowhere: it has no healthy replica.
    fn lonely() -> Router {
        let args = Args::parse_from([
            "frontend",
            "--nodes",
            "1=127.0.0.1:1",
            "--frontend-token",
            "t",
            "--request-timeout-ms",
            "300",
        ]);
        let front = Arc::new(Frontend::new(args.resolve().unwrap()).unwrap());
        // As after a failed probe.
        for replica in front.replicas.all().iter() {
            front.replicas.failed(replica);
        }
        app(front)
    }

    async fn call(app: Router, request: axum::http::Request<Body>) -> (StatusCode, String, Problem) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let problem =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{status}: not a problem ({e}): {body:?}"));
        (status, content_type, problem)
    }

    fn get(uri: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn health_without_a_healthy_replica_is_503() {
        let (status, content_type, problem) = call(lonely(), get("/health")).await;
        assert_eq!((status, content_type.as_str()), (StatusCode::SERVICE_UNAVAILABLE, PROBLEM_CONTENT_TYPE));
        assert_eq!(problem.code, ErrorCode::Unavailable);
        assert!(problem.detail.contains("no healthy replica"), "{problem:?}");
    }

    #[tokio::test]
    async fn oversized_input_is_refused_at_once_with_a_problem() {
        let started = std::time::Instant::now();
        let long_key = "k".repeat(MAX_HEADER_VALUE + 1);
        let buy = axum::http::Request::post("/books/1/buy")
            .header(IDEMPOTENCY_KEY_HEADER, &long_key)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"quantity\":1}"))
            .unwrap();
        let (status, content_type, problem) = call(lonely(), buy).await;
        assert_eq!((status.as_u16(), content_type.as_str()), (431, PROBLEM_CONTENT_TYPE));
        assert_eq!((problem.status, problem.code), (431, ErrorCode::InvalidInput));
        let token = axum::http::Request::post("/books")
            .header(header::AUTHORIZATION, format!("Bearer {}", "t".repeat(70_000)))
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(lonely(), token).await.0.as_u16(), 431);
        let long_target = format!("/books?topic={}", "a".repeat(MAX_TARGET));
        let (status, content_type, _) = call(lonely(), get(&long_target)).await;
        assert_eq!((status.as_u16(), content_type.as_str()), (414, PROBLEM_CONTENT_TYPE));
        let big = axum::http::Request::post("/books/1/buy")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(vec![b' '; BODY_LIMIT + 1]))
            .unwrap();
        let (status, content_type, problem) = call(lonely(), big).await;
        assert_eq!((status.as_u16(), content_type.as_str()), (413, PROBLEM_CONTENT_TYPE));
        assert_eq!(problem.status, 413);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused at once");
    }

    #[tokio::test]
    async fn a_garbage_min_index_is_400() {
        for uri in ["/books/1?min_index=abc", "/books?min_index=-1", "/orders?min_index=1.5", "/orders/1?min_index=x"] {
            let (status, _, problem) = call(lonely(), get(uri)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(problem.detail.contains("min_index"), "{uri}: {problem:?}");
        }
    }

    #[tokio::test]
    async fn the_frontends_timing_comes_first_and_every_inner_one_is_kept() {
        let args = Args::parse_from(["frontend", "--nodes", "1=127.0.0.1:1", "--frontend-token", "t"]);
        let front = Frontend::new(args.resolve().unwrap()).unwrap();
        let response = track(&front, get("/books/1"), |_| async {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().append(SERVER_TIMING, HeaderValue::from_static("node;dur=1.000"));
            response.headers_mut().append(SERVER_TIMING, HeaderValue::from_static("cache;desc=\"hit\";dur=0.001"));
            response
        })
        .await;
        let timings: Vec<&str> =
            response.headers().get_all(SERVER_TIMING).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(timings.len(), 3, "{timings:?}");
        assert!(timings[0].starts_with("frontend;dur="), "{timings:?}");
        assert_eq!(&timings[1..], ["node;dur=1.000", "cache;desc=\"hit\";dur=0.001"]);
    }

    #[test]
    fn made_up_methods_and_paths_are_counted_as_other() {
        let method = Method::from_bytes(b"M123").unwrap();
        assert_eq!(route_of(&method, "/books"), Route::Other);
        assert_eq!(route_of(&Method::GET, "/no/such/route/at/all"), Route::Other);
        assert_eq!(route_of(&Method::POST, "/books/1/buy/and/more"), Route::Other);
        assert_eq!(route_of(&Method::POST, "/books/1/buy"), Route::Buy);
        assert_eq!(route_of(&Method::GET, "/books/7/"), Route::Lookup);
    }
}
