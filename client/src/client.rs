//! The typed HTTP client: one method per route of the Bazar API.
//!
//! A [`Client`] is cheap to clone and safe to share between tasks: clones use
//! the same connection pool, which is what keeps benchmarks from opening a
//! connection per request. Every method promises:
//!
//! - **Deadline.** Each attempt gets the client's timeout (default 10 s) for
//!   the whole exchange, body included; a timeout is a
//!   [`ClientError::Transport`] whose outcome is unknown for writes.
//! - **Leader redirects.** A node that does not lead the group answers `421`
//!   `not_leader` with `leader_addr`; the same request (method, body,
//!   idempotency key, token) is sent again to `http://{leader_addr}`, at most
//!   [`MAX_LEADER_HOPS`] times. This is always safe, even for a buy without a
//!   key: a `421` means the node refused before proposing anything. The
//!   frontend does its own routing, so this matters when talking to nodes.
//! - **Read metadata.** Reads return [`Read`], which carries the
//!   `X-Bazar-Cache`, `X-Bazar-Served-By` and `X-Bazar-Index` headers.
//! - **Validation.** Arguments are checked with the `bazar_api` validators
//!   before sending, so mistakes are reported without a round trip
//!   ([`ClientError::Invalid`]). The server checks again and stays the
//!   authority.
//!
//! The admin token, when configured, is sent with every request as
//! `Authorization: Bearer`, including to the leader a node redirects to: the
//! token is cluster-wide, and reads simply ignore it.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bazar_api::model::{MAX_PAGE_LIMIT, validate_buyer, validate_idempotency_key, validate_quantity};
use bazar_api::timing::{self, TimingEntry};
use bazar_api::{
    AddLearnerRequest, Book, BookPage, BookPatch, BuyRequest, CACHE_HEADER, CATALOG_INDEX_HEADER,
    ChangeMembershipRequest, ClusterStatus, Consistency, Digest, ErrorCode, Group, IDEMPOTENCY_KEY_HEADER,
    INDEX_HEADER, NewBook, NodeHealth, Order, OrderFilter, OrderPage, Problem, RemoveNodeRequest, RestockRequest,
    SERVED_BY_HEADER, TransferLeaderRequest,
};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::endpoint::normalize_base_url;
use crate::error::{ClientError, Result};
use crate::watch::{self, WatchStream};

/// Default deadline of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many `not_leader` redirects one call follows. Leadership can move
/// while we chase it, but more than a few hops means the cluster is electing
/// and the caller is better served by the error (and its own retry policy).
pub const MAX_LEADER_HOPS: usize = 3;

/// Most bytes of a non-problem error body kept in [`ClientError::Status`].
const MAX_ERROR_BODY_CHARS: usize = 300;

/// A value read from the store, with where and how fresh it was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub meta: ReadMeta,
}

impl<T> Read<T> {
    /// The value without its metadata.
    pub fn into_value(self) -> T {
        self.value
    }

    /// Transforms the value, keeping the metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        Read { value: f(self.value), meta: self.meta }
    }
}

/// The read headers of an answer; each is `None` when the server did not send
/// it (or sent something unreadable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadMeta {
    /// `X-Bazar-Cache`: `hit`, `miss` or `bypass`.
    pub cache: Option<String>,
    /// `X-Bazar-Served-By`: a node id, or `cache`.
    pub served_by: Option<String>,
    /// `X-Bazar-Index`: the applied log index the answer reflects.
    pub index: Option<u64>,
    /// `Server-Timing`: where the answer's time went (see [`bazar_api::timing`]).
    pub timing: Vec<TimingEntry>,
}

impl ReadMeta {
    /// Extracts the read headers.
    pub fn from_headers(headers: &HeaderMap) -> ReadMeta {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
        ReadMeta {
            cache: text(CACHE_HEADER),
            served_by: text(SERVED_BY_HEADER),
            index: text(INDEX_HEADER).and_then(|s| s.parse().ok()),
            timing: server_timing(headers),
        }
    }
}

/// Every `Server-Timing` metric of an answer, in order.
fn server_timing(headers: &HeaderMap) -> Vec<TimingEntry> {
    headers
        .get_all(timing::SERVER_TIMING_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(timing::parse)
        .collect()
}

impl fmt::Display for ReadMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let index = self.index.map_or_else(|| "-".into(), |i| i.to_string());
        write!(f, "served by {}, cache {}, index {}", or_dash(&self.served_by), or_dash(&self.cache), index)
    }
}

/// A write's answer, with the log indexes it committed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// The answer.
    pub value: T,
    /// `X-Bazar-Index`: the commit index of the write in its group (for a
    /// buy, the orders group).
    pub index: Option<u64>,
    /// `X-Bazar-Catalog-Index` of a buy: the catalog index of its
    /// reservation. For a catalog write, the same as `index`.
    pub catalog_index: Option<u64>,
    /// `Server-Timing`: where the answer's time went (see [`bazar_api::timing`]).
    pub timing: Vec<TimingEntry>,
}

/// Configures a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    admin_token: Option<String>,
    timeout: Duration,
    http: Option<reqwest::Client>,
    ca: Option<std::path::PathBuf>,
}

impl ClientBuilder {
    /// Trusts the CA certificates in the PEM file `path` (and only them) for
    /// `https://` servers: the CA of a cluster run with `--tls-ca`.
    pub fn ca_file(mut self, path: Option<std::path::PathBuf>) -> ClientBuilder {
        self.ca = path;
        self
    }

    /// Sets the admin token sent as `Authorization: Bearer`. An empty token
    /// counts as none.
    pub fn admin_token(mut self, token: impl Into<String>) -> ClientBuilder {
        let token = token.into();
        self.admin_token = (!token.is_empty()).then_some(token);
        self
    }

    /// Sets the deadline of each request attempt (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Uses an existing reqwest client, sharing its connection pool. Its own
    /// timeout, if any, applies on top of this builder's.
    pub fn http_client(mut self, http: reqwest::Client) -> ClientBuilder {
        self.http = Some(http);
        self
    }

    /// Checks the address and builds the client.
    pub fn build(self) -> Result<Client> {
        let base = normalize_base_url(&self.base_url)?;
        let http = match self.http {
            Some(http) => http,
            None => {
                let mut builder = reqwest::Client::builder()
                    // Fail fast on a dead node instead of burning the whole
                    // deadline in connect: an unsent request is a cheap retry.
                    .connect_timeout(self.timeout.min(Duration::from_secs(2)))
                    .pool_idle_timeout(Duration::from_secs(60));
                if let Some(path) = &self.ca {
                    let pem = std::fs::read(path)
                        .map_err(|e| ClientError::Invalid(format!("--ca {}: {e}", path.display())))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| ClientError::Invalid(format!("--ca {}: {e}", path.display())))?;
                    if certs.is_empty() {
                        return Err(ClientError::Invalid(format!("--ca {}: no certificate in it", path.display())));
                    }
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                builder.build().map_err(|e| ClientError::Invalid(format!("cannot build HTTP client: {e}")))?
            }
        };
        Ok(Client { http, base: base.into(), token: self.admin_token.map(Into::into), timeout: self.timeout })
    }
}

/// A Bazar client bound to one frontend or node.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    token: Option<Arc<str>>,
    timeout: Duration,
}

impl Client {
    /// A client for `base_url` (`host:port` or `http://host:port`) with
    /// default settings.
    pub fn new(base_url: &str) -> Result<Client> {
        Client::builder(base_url).build()
    }

    /// Starts configuring a client for `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder { base_url: base_url.into(), admin_token: None, timeout: DEFAULT_TIMEOUT, http: None, ca: None }
    }

    /// The same client (pool, token, timeout) pointed at another server, e.g.
    /// each node of a cluster.
    pub fn with_base_url(&self, base_url: &str) -> Result<Client> {
        Ok(Client { base: self.resolve(base_url)?.into(), ..self.clone() })
    }

    /// `addr` as a base URL; a bare `host:port` (how nodes name each other
    /// and their leader) gets this client's scheme.
    fn resolve(&self, addr: &str) -> Result<String> {
        if !addr.contains("://") && self.base.starts_with("https://") {
            normalize_base_url(&format!("https://{}", addr.trim()))
        } else {
            normalize_base_url(addr)
        }
    }

    /// The same client with another per-request deadline, e.g. a short one
    /// to probe nodes that may be down.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { timeout, ..self.clone() }
    }

    /// The normalized base URL, e.g. `http://127.0.0.1:8080`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The per-request deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether an admin token is configured.
    pub fn has_admin_token(&self) -> bool {
        self.token.is_some()
    }

    // ---- catalog -------------------------------------------------------

    /// `GET /books?topic=`: one page of the books filed under `topic`
    /// (matched case-insensitively by the server). An unknown topic is an
    /// empty page, not an error.
    pub async fn search(
        &self,
        topic: &str,
        limit: Option<usize>,
        cursor: Option<&str>,
        consistency: Option<Consistency>,
    ) -> Result<Read<BookPage>> {
        self.books_page(Some(topic), limit, cursor, consistency).await
    }

    /// Every book under `topic` (or, with `None`, every book the server lists
    /// for `GET /books` without a topic), following `next_cursor` to the end.
    ///
    /// Pages are separate reads, so under concurrent writes the result is not
    /// one snapshot.
    pub async fn list_all_books(&self, topic: Option<&str>, consistency: Option<Consistency>) -> Result<Vec<Book>> {
        let mut books = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.books_page(topic, Some(MAX_PAGE_LIMIT), cursor.as_deref(), consistency).await?.value;
            books.extend(page.books);
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                // A repeated cursor would loop forever; treat it as the end.
                _ => return Ok(books),
            }
        }
    }

    async fn books_page(
        &self,
        topic: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
        consistency: Option<Consistency>,
    ) -> Result<Read<BookPage>> {
        let mut call = Call::get("/books").paging(limit, cursor)?.consistency(consistency);
        if let Some(topic) = topic {
            call = call.query("topic", topic);
        }
        self.read(call).await
    }

    /// `GET /books/{id}`.
    pub async fn lookup(&self, id: u64, consistency: Option<Consistency>) -> Result<Read<Book>> {
        self.read(Call::get(format!("/books/{id}")).consistency(consistency)).await
    }

    /// `POST /books/{id}/buy`: buys `quantity` copies and returns the
    /// confirmed order.
    ///
    /// Not enough stock is a `409` problem with code `out_of_stock` (and the
    /// rejected order's id in `order_id`). When the error says
    /// [`ClientError::outcome_unknown`], call again with the same
    /// `idempotency_key` to learn what happened; without a key a retry may
    /// buy twice.
    pub async fn buy(&self, id: u64, quantity: u64, idempotency_key: Option<&str>) -> Result<Order> {
        self.buy_as(id, quantity, None, idempotency_key).await
    }

    /// [`Client::buy`] for a named buyer (anonymous when `None`): the order
    /// records the buyer, and lists under `GET /orders?buyer=`.
    pub async fn buy_as(
        &self,
        id: u64,
        quantity: u64,
        buyer: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Order> {
        Ok(self.buy_written(id, quantity, buyer, idempotency_key).await?.value)
    }

    /// [`Client::buy_as`], with the indexes the buy committed at.
    pub async fn buy_written(
        &self,
        id: u64,
        quantity: u64,
        buyer: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Written<Order>> {
        validate_quantity(quantity).map_err(ClientError::Invalid)?;
        if let Some(buyer) = buyer {
            validate_buyer(buyer).map_err(ClientError::Invalid)?;
        }
        let body = BuyRequest { quantity: Some(quantity), buyer: buyer.map(str::to_string) };
        let mut call = Call::post(format!("/books/{id}/buy")).json(&body)?;
        if let Some(key) = idempotency_key {
            validate_idempotency_key(key).map_err(ClientError::Invalid)?;
            call.idempotency_key = Some(key.to_string());
        }
        self.write(call, Group::Orders).await
    }

    /// `POST /books` (admin): adds a book; the catalog assigns its id.
    pub async fn add_book(&self, book: NewBook) -> Result<Book> {
        let book = book.validate().map_err(ClientError::Invalid)?;
        self.fetch(Call::post("/books").json(&book)?).await
    }

    /// `POST /books/{id}/restock` (admin): adds `quantity` copies.
    pub async fn restock(&self, id: u64, quantity: u64) -> Result<Book> {
        Ok(self.restock_written(id, quantity).await?.value)
    }

    /// [`Client::restock`], with the index it committed at.
    pub async fn restock_written(&self, id: u64, quantity: u64) -> Result<Written<Book>> {
        validate_quantity(quantity).map_err(ClientError::Invalid)?;
        let body = RestockRequest { quantity };
        self.write(Call::post(format!("/books/{id}/restock")).json(&body)?, Group::Catalog).await
    }

    /// `PATCH /books/{id}` (admin): changes price, title and/or topic.
    pub async fn update_book(&self, id: u64, patch: BookPatch) -> Result<Book> {
        Ok(self.update_book_written(id, patch).await?.value)
    }

    /// [`Client::update_book`], with the index it committed at.
    pub async fn update_book_written(&self, id: u64, patch: BookPatch) -> Result<Written<Book>> {
        let patch = patch.validate().map_err(ClientError::Invalid)?;
        self.write(Call::new(Method::PATCH, format!("/books/{id}")).json(&patch)?, Group::Catalog).await
    }

    /// Sets a book's price (admin); shorthand for [`Client::update_book`].
    pub async fn set_price(&self, id: u64, price_cents: u64) -> Result<Book> {
        Ok(self.set_price_written(id, price_cents).await?.value)
    }

    /// [`Client::set_price`], with the index it committed at.
    pub async fn set_price_written(&self, id: u64, price_cents: u64) -> Result<Written<Book>> {
        let patch = BookPatch { price_cents: Some(price_cents), ..BookPatch::default() };
        self.update_book_written(id, patch).await
    }

    // ---- orders --------------------------------------------------------

    /// `GET /orders/{order_id}`.
    pub async fn order(&self, order_id: u64, consistency: Option<Consistency>) -> Result<Read<Order>> {
        self.read(Call::get(format!("/orders/{order_id}")).consistency(consistency)).await
    }

    /// `GET /orders`: one page of orders, all or those of one book or buyer.
    pub async fn orders(
        &self,
        which: &OrderFilter,
        limit: Option<usize>,
        cursor: Option<&str>,
        consistency: Option<Consistency>,
    ) -> Result<Read<OrderPage>> {
        let mut call = Call::get("/orders").paging(limit, cursor)?.consistency(consistency);
        match which {
            OrderFilter::All => {}
            OrderFilter::Book(book_id) => call = call.query("book_id", book_id),
            OrderFilter::Buyer(buyer) => {
                validate_buyer(buyer).map_err(ClientError::Invalid)?;
                call = call.query("buyer", buyer);
            }
        }
        self.read(call).await
    }

    /// Every order (all, or of one book or buyer), following `next_cursor`
    /// to the end.
    pub async fn list_all_orders(&self, which: &OrderFilter, consistency: Option<Consistency>) -> Result<Vec<Order>> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.orders(which, Some(MAX_PAGE_LIMIT), cursor.as_deref(), consistency).await?.value;
            orders.extend(page.orders);
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(orders),
            }
        }
    }

    // ---- operations ----------------------------------------------------

    /// `GET /health` as JSON. A frontend and a node answer different
    /// documents; a plain-text answer comes back as a JSON string.
    pub async fn health(&self) -> Result<serde_json::Value> {
        let body = self.text(Call::get("/health")).await?;
        Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    }

    /// `GET /health` of a node, typed.
    pub async fn node_health(&self) -> Result<NodeHealth> {
        self.fetch(Call::get("/health")).await
    }

    /// `GET /cluster` as JSON: a node answers a [`ClusterStatus`], a frontend
    /// its own view of the cluster.
    pub async fn cluster(&self) -> Result<serde_json::Value> {
        self.fetch(Call::get("/cluster")).await
    }

    /// `GET /cluster` of a node, typed.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        self.fetch(Call::get("/cluster")).await
    }

    /// `GET /admin/digest?group=` of a node (admin): a hash of the group's
    /// state machine at its applied index, to compare replicas.
    pub async fn digest(&self, group: Group) -> Result<Digest> {
        self.fetch(Call::get("/admin/digest").query("group", group)).await
    }

    // ---- membership and leadership (admin, on a node) -------------------
    //
    // Each of these must reach the group's leader; a node that does not
    // lead answers `421 not_leader` and the call follows it to the leader.
    // They answer the leader's view of the cluster after the change.
    // `bazar_client::cluster` builds `add-node` and `remove-node` on them.

    /// `POST /admin/{group}/add-learner`: starts replicating `group` to node
    /// `node_id` at `addr`, without a vote. With `blocking`, the answer waits
    /// until the learner has caught up (mind the client's timeout);
    /// otherwise it comes at once and the progress is in the leader's
    /// [`ClusterStatus`] (`replication`).
    pub async fn add_learner(&self, group: Group, node_id: u64, addr: &str, blocking: bool) -> Result<ClusterStatus> {
        let body = AddLearnerRequest { node_id, addr: addr.to_string(), blocking };
        self.fetch(Call::post(format!("/admin/{group}/add-learner")).json(&body)?).await
    }

    /// `POST /admin/{group}/change-membership`: makes `voters` the group's
    /// voters (new ones must be learners already); with `retain`, removed
    /// voters stay as learners.
    pub async fn change_membership(&self, group: Group, voters: BTreeSet<u64>, retain: bool) -> Result<ClusterStatus> {
        let body = ChangeMembershipRequest { voters, retain };
        self.fetch(Call::post(format!("/admin/{group}/change-membership")).json(&body)?).await
    }

    /// `POST /admin/{group}/remove-node`: drops a voter or learner. The
    /// leader refuses to remove itself (`409 conflict`): call
    /// [`Client::transfer_leader`] on it first.
    pub async fn remove_node(&self, group: Group, node_id: u64) -> Result<ClusterStatus> {
        let body = RemoveNodeRequest { node_id };
        self.fetch(Call::post(format!("/admin/{group}/remove-node")).json(&body)?).await
    }

    /// `POST /admin/{group}/transfer-leader`: hands leadership to `to` (by
    /// default the most up-to-date live voter); answers once another node
    /// leads.
    pub async fn transfer_leader(&self, group: Group, to: Option<u64>) -> Result<ClusterStatus> {
        let body = TransferLeaderRequest { to };
        self.fetch(Call::post(format!("/admin/{group}/transfer-leader")).json(&body)?).await
    }

    /// `POST /admin/{group}/snapshot` of this node (snapshots are per node,
    /// so this is never redirected): builds a snapshot now, which also lets
    /// the node purge its log behind it; answers once it is built.
    pub async fn snapshot(&self, group: Group) -> Result<ClusterStatus> {
        self.fetch(Call::post(format!("/admin/{group}/snapshot"))).await
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let mut call = Call::get("/metrics");
        call.accept = "text/plain";
        self.text(call).await
    }

    /// `GET /watch?group=&from=` of a node: the change events after index
    /// `from`, as a stream (see [`crate::watch`] for what it promises).
    ///
    /// The client's timeout bounds the wait for the answer's headers and,
    /// once streaming, any silence between two chunks; the stream itself
    /// has no deadline.
    pub async fn watch(&self, group: Group, from: u64) -> Result<WatchStream> {
        let mut call = Call::get("/watch").query("group", group).query("from", from);
        call.accept = "application/x-ndjson";
        call.streaming = true;
        let response = tokio::time::timeout(self.timeout, self.send(&call)).await.map_err(|_| {
            ClientError::timeout(format!("no answer from {}/watch within {:?}", self.base, self.timeout))
        })??;
        Ok(watch::event_stream(response.bytes_stream(), self.timeout))
    }

    /// `GET /admin/backup` (admin): streams a backup of both groups into
    /// `out`, calling `progress` with the bytes received so far after each
    /// chunk; returns how many were written. Only the orders leader serves
    /// it; a `not_leader` answer is followed. The client's timeout bounds
    /// the wait for the answer and any silence in the stream.
    pub async fn backup(
        &self,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        use futures::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;
        let mut call = Call::get("/admin/backup");
        call.accept = "application/octet-stream";
        call.streaming = true;
        let silence = |what: &str| {
            ClientError::timeout(format!("{what} from {}/admin/backup within {:?}", self.base, self.timeout))
        };
        let response =
            tokio::time::timeout(self.timeout, self.send(&call)).await.map_err(|_| silence("no answer"))??;
        let mut body = response.bytes_stream();
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.timeout, body.next()).await.map_err(|_| silence("no bytes"))?;
            match chunk {
                None => break,
                Some(chunk) => {
                    let chunk = chunk?;
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ClientError::Invalid(format!("writing the backup: {e}")))?;
                    written += chunk.len() as u64;
                    progress(written);
                }
            }
        }
        out.flush().await.map_err(|e| ClientError::Invalid(format!("writing the backup: {e}")))?;
        Ok(written)
    }

    // ---- plumbing ------------------------------------------------------

    /// Sends `call` and decodes a JSON answer.
    async fn fetch<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let response = self.send(&call).await?;
        decode(&call, response).await
    }

    /// Sends a write and decodes the answer with the indexes it committed at.
    /// `group` is the group the write commits in (a buy: orders).
    async fn write<T: DeserializeOwned>(&self, call: Call, group: Group) -> Result<Written<T>> {
        let response = self.send(&call).await?;
        let header =
            |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse().ok());
        let index = header(INDEX_HEADER);
        let catalog_index = match group {
            Group::Catalog => index,
            Group::Orders => header(CATALOG_INDEX_HEADER),
        };
        let timing = server_timing(response.headers());
        Ok(Written { value: decode(&call, response).await?, index, catalog_index, timing })
    }

    /// Sends a read and decodes the answer with its read headers.
    async fn read<T: DeserializeOwned>(&self, call: Call) -> Result<Read<T>> {
        let response = self.send(&call).await?;
        let meta = ReadMeta::from_headers(response.headers());
        Ok(Read { value: decode(&call, response).await?, meta })
    }

    /// Sends `call` and returns the body as text.
    async fn text(&self, call: Call) -> Result<String> {
        Ok(self.send(&call).await?.text().await?)
    }

    /// Sends `call`, following `not_leader` redirects, and returns a success
    /// response or the error the server answered with.
    async fn send(&self, call: &Call) -> Result<Response> {
        let mut base: Cow<'_, str> = Cow::Borrowed(&self.base);
        let mut hops = 0;
        loop {
            let mut request =
                self.http.request(call.method.clone(), format!("{base}{}", call.path)).header(ACCEPT, call.accept);
            if !call.query.is_empty() {
                request = request.query(&call.query);
            }
            if !call.streaming {
                request = request.timeout(self.timeout);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = &call.idempotency_key {
                request = request.header(IDEMPOTENCY_KEY_HEADER, key);
            }
            if let Some(body) = &call.body {
                request = request.header(CONTENT_TYPE, "application/json").body(body.clone());
            }
            let response = request.send().await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let err = error_from_response(response).await;
            if let ClientError::Problem(problem) = &err
                && problem.code == ErrorCode::NotLeader
                && hops < MAX_LEADER_HOPS
                && let Some(leader) = problem.leader_addr.as_deref()
                && let Ok(leader) = self.resolve(leader)
            {
                hops += 1;
                base = Cow::Owned(leader);
                continue;
            }
            return Err(err);
        }
    }
}

/// One request, kept whole so that it can be re-sent to a leader.
#[derive(Debug)]
struct Call {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    /// Serialized once; `Bytes` makes re-sending a reference-count bump.
    body: Option<Bytes>,
    idempotency_key: Option<String>,
    accept: &'static str,
    /// Long-lived body: no whole-request deadline.
    streaming: bool,
}

impl Call {
    fn new(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            idempotency_key: None,
            accept: "application/json",
            streaming: false,
        }
    }

    fn get(path: impl Into<String>) -> Call {
        Call::new(Method::GET, path)
    }

    fn post(path: impl Into<String>) -> Call {
        Call::new(Method::POST, path)
    }

    fn query(mut self, name: &'static str, value: impl ToString) -> Call {
        self.query.push((name, value.to_string()));
        self
    }

    fn consistency(self, consistency: Option<Consistency>) -> Call {
        match consistency {
            Some(c) => self.query("consistency", c.as_str()),
            None => self,
        }
    }

    fn paging(mut self, limit: Option<usize>, cursor: Option<&str>) -> Result<Call> {
        if let Some(limit) = limit {
            if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
                return Err(ClientError::Invalid(format!("limit must be from 1 to {MAX_PAGE_LIMIT}")));
            }
            self = self.query("limit", limit);
        }
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            self = self.query("cursor", cursor);
        }
        Ok(self)
    }

    fn json(mut self, body: &impl Serialize) -> Result<Call> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| ClientError::Invalid(format!("cannot encode request: {e}")))?;
        self.body = Some(bytes.into());
        Ok(self)
    }
}

async fn decode<T: DeserializeOwned>(call: &Call, response: Response) -> Result<T> {
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{} {}: {e}", call.method, call.path)))
}

async fn error_from_response(response: Response) -> ClientError {
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    match response.bytes().await {
        Ok(body) => error_from_body(status, retry_after, &body),
        Err(e) => e.into(),
    }
}

/// Decodes an error answer: a problem document when it is one, else the
/// status with the start of the body.
pub(crate) fn error_from_body(status: u16, retry_after: Option<u64>, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(mut problem) => {
            // RFC 9457 §3.1.4: the `status` member is advisory; the status
            // line is what actually happened.
            problem.status = status;
            if problem.retry_after.is_none() {
                problem.retry_after = retry_after;
            }
            ClientError::Problem(Box::new(problem))
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut shown: String = text.chars().take(MAX_ERROR_BODY_CHARS).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            ClientError::Status { status, body: shown }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_decodes_with_the_answer_status() {
        let body = br#"{"type":"https://bazar.dev/problems/out_of_stock","title":"Out of stock",
            "status":409,"detail":"only 2 left","code":"out_of_stock","order_id":12}"#;
        let err = error_from_body(409, None, body);
        assert!(err.is_code(ErrorCode::OutOfStock));
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.problem().unwrap().order_id, Some(12));
        assert_eq!(err.to_string(), "only 2 left");
    }

    #[test]
    fn retry_after_header_fills_a_missing_retry_after_member() {
        let problem = Problem::new(ErrorCode::Unavailable, "no quorum");
        let body = serde_json::to_vec(&problem).unwrap();
        let err = error_from_body(503, Some(2), &body);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn non_problem_error_body_is_kept_as_status() {
        let err = error_from_body(502, None, b"<html>bad gateway</html>");
        assert!(matches!(&err, ClientError::Status { status: 502, body } if body.contains("bad")));
        assert_eq!(err.code(), None);
        let long = "x".repeat(1000);
        let ClientError::Status { body, .. } = error_from_body(500, None, long.as_bytes()) else {
            panic!("not a status error");
        };
        assert_eq!(body.chars().count(), MAX_ERROR_BODY_CHARS + 1);
    }

    #[test]
    fn read_meta_comes_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_HEADER, "hit".parse().unwrap());
        headers.insert(SERVED_BY_HEADER, "cache".parse().unwrap());
        headers.insert(INDEX_HEADER, "42".parse().unwrap());
        let meta = ReadMeta::from_headers(&headers);
        assert_eq!(meta.cache.as_deref(), Some("hit"));
        assert_eq!(meta.served_by.as_deref(), Some("cache"));
        assert_eq!(meta.index, Some(42));
        assert_eq!(meta.to_string(), "served by cache, cache hit, index 42");
        assert_eq!(ReadMeta::default().to_string(), "served by -, cache -, index -");
    }

    #[test]
    fn invalid_arguments_are_refused_before_sending() {
        let call = Call::get("/books").paging(Some(0), None);
        assert!(matches!(call, Err(ClientError::Invalid(_))));
        let call = Call::get("/books").paging(Some(10), Some("")).unwrap();
        assert_eq!(call.query, vec![("limit", "10".to_string())]);
    }
}
