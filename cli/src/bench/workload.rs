//! What one benchmark client sends: Bazar operations through [`Client`], or
//! the comparison targets (etcd's HTTP/JSON gateway, a plain `GET`) through
//! the same `reqwest` pool.
//!
//! Every request, whatever the target, is a full exchange: the body is read
//! to the end and decoded, because a Bazar lookup decodes its `Book` too and
//! a load tool that skips that work for one side would flatter it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bazar_api::{Book, Consistency};
use bytes::Bytes;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Deserialize;

use super::report::Recorder;
use super::{Mix, Op, sample_book};
use bazar_api::timing::TimingEntry;
use bazar_client::client::{Client, ReadMeta};
use bazar_client::error::{ClientError, TransportKind};

/// The system under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// Bazar's client API (a frontend or raft nodes), with the `--mix`.
    Bazar,
    /// etcd `POST /v3/kv/put` of a book-sized value (compare with buys).
    EtcdPut,
    /// etcd `POST /v3/kv/range`, linearizable (compare with linearizable lookups).
    EtcdRangeLinearizable,
    /// etcd `POST /v3/kv/range` with `serializable: true` (compare with cached lookups).
    EtcdRangeSerializable,
    /// `GET` of `--url`, where `{id}` becomes a book id (the HTTP ceiling).
    HttpGet,
}

impl TargetKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Bazar => "bazar",
            TargetKind::EtcdPut => "etcd-put",
            TargetKind::EtcdRangeLinearizable => "etcd-range-linearizable",
            TargetKind::EtcdRangeSerializable => "etcd-range-serializable",
            TargetKind::HttpGet => "http-get",
        }
    }

    /// Whether this is one of etcd's operations.
    pub fn is_etcd(self) -> bool {
        matches!(self, TargetKind::EtcdPut | TargetKind::EtcdRangeLinearizable | TargetKind::EtcdRangeSerializable)
    }
}

/// Everything the clients share during a run.
#[derive(Debug)]
pub struct Workload {
    /// What to drive.
    pub target: TargetKind,
    /// One Bazar client per endpoint (sharing one connection pool).
    pub clients: Vec<Client>,
    /// The shared pool, for the non-Bazar targets.
    pub http: reqwest::Client,
    /// Base URLs (or, for `http-get`, URL templates), one per endpoint.
    pub urls: Vec<String>,
    /// Operation mix (Bazar).
    pub mix: Mix,
    /// First and last book id used.
    pub books: (u64, u64),
    /// Topics searched.
    pub topics: Vec<String>,
    /// Read consistency asked of Bazar.
    pub consistency: Option<Consistency>,
    /// Key prefix in etcd.
    pub etcd_prefix: String,
    /// Random per run, so that idempotency keys never repeat across runs.
    pub nonce: u64,
    /// Per-request deadline of the non-Bazar targets.
    pub timeout: Duration,
}

/// One client's state: its endpoint, its random source and what makes its
/// idempotency keys unique.
pub struct ClientState {
    /// Index of this client (0-based) within its level.
    pub index: usize,
    /// Requests sent so far.
    pub seq: u64,
    /// Picks operations and book ids.
    pub rng: SmallRng,
    /// Start of this client's idempotency keys, unique per run, level,
    /// repetition and client: `bench-<run nonce>-<level run>-<client>`.
    pub key_prefix: String,
    /// Open loop: when the next request was due. Its latency counts from
    /// then, not from when it could be sent.
    pub due: Option<Instant>,
}

impl ClientState {
    /// A client of the `level_run`-th level run of `work`.
    pub fn new(work: &Workload, level_run: u64, index: usize) -> ClientState {
        ClientState {
            index,
            seq: 0,
            rng: SmallRng::from_os_rng(),
            key_prefix: format!("bench-{:016x}-{level_run}-{index}", work.nonce),
            due: None,
        }
    }

    /// When the request about to be sent started, for its latency: when it
    /// was due in an open loop, else now.
    fn start(&mut self) -> Instant {
        self.due.take().unwrap_or_else(Instant::now)
    }
}

impl Workload {
    fn book_id(&self, rng: &mut SmallRng) -> u64 {
        rng.random_range(self.books.0..=self.books.1)
    }

    fn etcd_key(&self, id: u64) -> String {
        BASE64.encode(format!("{}{id}", self.etcd_prefix))
    }

    /// Sends the client's next request (two for `lookup_after_buy`) and
    /// records the outcome, when `record` says the request belongs to the
    /// measured window.
    pub async fn step(&self, state: &mut ClientState, recorder: &mut Recorder, record: bool) {
        state.seq += 1;
        let endpoint = state.index % self.urls.len();
        let id = self.book_id(&mut state.rng);
        match self.target {
            TargetKind::Bazar => self.bazar_step(state, endpoint, id, recorder, record).await,
            TargetKind::EtcdPut => {
                let body = serde_json::json!({
                    "key": self.etcd_key(id),
                    "value": BASE64.encode(serde_json::to_vec(&sample_book(id)).unwrap_or_default()),
                });
                let started = state.start();
                let result = self.etcd_call(endpoint, "/v3/kv/put", &body).await.map(|_| Answer::default());
                finish(recorder, record, "put", started, result);
            }
            TargetKind::EtcdRangeLinearizable | TargetKind::EtcdRangeSerializable => {
                let serializable = self.target == TargetKind::EtcdRangeSerializable;
                let body = serde_json::json!({ "key": self.etcd_key(id), "serializable": serializable });
                let started = state.start();
                let result = match self.etcd_call(endpoint, "/v3/kv/range", &body).await {
                    Ok(bytes) => decode_range(&bytes).map(|_| Answer::default()),
                    Err(e) => Err(e),
                };
                finish(recorder, record, "range", started, result);
            }
            TargetKind::HttpGet => {
                let url = self.urls[endpoint].replace("{id}", &id.to_string());
                let started = state.start();
                let result = self.get(&url).await.map(|()| Answer::default());
                finish(recorder, record, "get", started, result);
            }
        }
    }

    async fn bazar_step(&self, state: &mut ClientState, endpoint: usize, id: u64, rec: &mut Recorder, record: bool) {
        let client = &self.clients[endpoint];
        let op = self.mix.pick(&mut state.rng);
        let started = state.start();
        match op {
            Op::Lookup => {
                let result = client.lookup(id, self.consistency).await.map(|r| Answer::read(r.meta));
                finish(rec, record, op.name(), started, result.map_err(|e| error_kind(&e)));
            }
            Op::Search => {
                let topic = &self.topics[state.rng.random_range(0..self.topics.len())];
                let result = client.search(topic, None, None, self.consistency).await.map(|r| Answer::read(r.meta));
                finish(rec, record, op.name(), started, result.map_err(|e| error_kind(&e)));
            }
            Op::Buy => {
                let key = self.buy_key(state);
                let result = client.buy_written(id, 1, None, Some(&key)).await.map(|w| Answer::written(w.timing));
                finish(rec, record, op.name(), started, result.map_err(|e| error_kind(&e)));
            }
            Op::Restock => {
                let result = client.restock_written(id, 1).await.map(|w| Answer::written(w.timing));
                finish(rec, record, op.name(), started, result.map_err(|e| error_kind(&e)));
            }
            Op::LookupAfterBuy => {
                // The buy invalidates the book in every cache; the lookup
                // right after it is the first read of the new version.
                let key = self.buy_key(state);
                let bought = client.buy_written(id, 1, None, Some(&key)).await.map(|w| Answer::written(w.timing));
                let ok = bought.is_ok();
                finish(rec, record, Op::Buy.name(), started, bought.map_err(|e| error_kind(&e)));
                if ok {
                    let started = Instant::now();
                    let result = client.lookup(id, self.consistency).await.map(|r| Answer::read(r.meta));
                    finish(rec, record, op.name(), started, result.map_err(|e| error_kind(&e)));
                }
            }
        }
    }

    fn buy_key(&self, state: &ClientState) -> String {
        format!("{}-{}", state.key_prefix, state.seq)
    }

    async fn etcd_call(&self, endpoint: usize, path: &str, body: &serde_json::Value) -> Result<Bytes, String> {
        let url = format!("{}{path}", self.urls[endpoint]);
        let response = self
            .http
            .post(url)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| error_kind(&ClientError::from(e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| error_kind(&ClientError::from(e)))?;
        if !status.is_success() {
            return Err(format!("http {}", status.as_u16()));
        }
        // Decoding the JSON envelope is part of every client's work.
        let envelope: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| "decode".to_string())?;
        if envelope.get("error").is_some() {
            return Err("etcd error".into());
        }
        Ok(bytes)
    }

    async fn get(&self, url: &str) -> Result<(), String> {
        let response =
            self.http.get(url).timeout(self.timeout).send().await.map_err(|e| error_kind(&ClientError::from(e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| error_kind(&ClientError::from(e)))?;
        if !status.is_success() {
            return Err(format!("http {}", status.as_u16()));
        }
        serde_json::from_slice::<Book>(&bytes).map_err(|_| "decode".to_string())?;
        Ok(())
    }
}

/// What a successful answer said besides its body.
#[derive(Debug, Default)]
struct Answer {
    /// `X-Bazar-Cache` of a read.
    cache: Option<String>,
    /// `Server-Timing` (Bazar's answers).
    timing: Vec<TimingEntry>,
}

impl Answer {
    fn read(meta: ReadMeta) -> Answer {
        Answer { cache: meta.cache, timing: meta.timing }
    }

    fn written(timing: Vec<TimingEntry>) -> Answer {
        Answer { cache: None, timing }
    }
}

/// Records one finished request.
fn finish(rec: &mut Recorder, record: bool, op: &'static str, started: Instant, result: Result<Answer, String>) {
    if !record {
        return;
    }
    match result {
        Ok(answer) => {
            rec.success(op, started.elapsed(), answer.cache.as_deref());
            rec.server_timing(op, &answer.timing);
        }
        Err(kind) => rec.failure(op, &kind),
    }
}

/// A short, stable name for a failure, used to count failures by kind.
pub fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::Problem(p) => format!("{} {}", p.status, p.code),
        ClientError::Status { status, .. } => format!("http {status}"),
        ClientError::Transport { kind: TransportKind::Connect, .. } => "connect".into(),
        ClientError::Transport { kind: TransportKind::Timeout, .. } => "timeout".into(),
        ClientError::Transport { kind: TransportKind::Broken, .. } => "broken connection".into(),
        ClientError::Decode(_) => "decode".into(),
        ClientError::Invalid(_) => "invalid".into(),
    }
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    value: Option<String>,
}

/// Decodes a range answer down to the stored book, as a client of etcd would.
fn decode_range(bytes: &[u8]) -> Result<Book, String> {
    let range: RangeResponse = serde_json::from_slice(bytes).map_err(|_| "decode".to_string())?;
    let value = range.kvs.into_iter().next().and_then(|kv| kv.value).ok_or_else(|| "missing key".to_string())?;
    let raw = BASE64.decode(value).map_err(|_| "decode".to_string())?;
    serde_json::from_slice(&raw).map_err(|_| "decode".to_string())
}

/// Before a run: puts every book of the range into etcd, so that ranges find
/// a value of the same size as a Bazar book.
pub async fn prepare_etcd(work: &Workload) -> Result<(), String> {
    let (first, last) = work.books;
    if last - first >= 100_000 {
        return Err("--books spans too many ids to preload into etcd (at most 100000)".into());
    }
    for id in first..=last {
        let body = serde_json::json!({
            "key": work.etcd_key(id),
            "value": BASE64.encode(serde_json::to_vec(&sample_book(id)).unwrap_or_default()),
        });
        work.etcd_call(0, "/v3/kv/put", &body).await.map_err(|e| format!("preloading etcd key {id}: {e}"))?;
    }
    Ok(())
}

/// Below this stock, a book is restocked before a run that buys.
const LOW_STOCK: u64 = 500_000;
/// Copies added per restock call (the largest quantity the API takes).
const RESTOCK_BY: u64 = bazar_api::model::MAX_QUANTITY;

/// Before a run that buys: restocks every book of the range whose stock is
/// low, so that buys measure sales rather than `out_of_stock` refusals.
/// Returns how many books were restocked.
pub async fn prepare_stock(work: &Workload) -> Result<usize, ClientError> {
    let (first, last) = work.books;
    if last - first >= 10_000 {
        // A large generated catalog starts with 1000 copies of each book;
        // a run spreads its buys too thinly to exhaust one.
        return Ok(0);
    }
    let client = &work.clients[0];
    let mut restocked = 0;
    for id in first..=last {
        let book = client.lookup(id, Some(Consistency::Linearizable)).await?.value;
        if book.stock < LOW_STOCK {
            client.restock(id, RESTOCK_BY).await?;
            restocked += 1;
        }
    }
    Ok(restocked)
}

/// A shared handle, as the client tasks hold it.
pub type SharedWorkload = Arc<Workload>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_answers_decode_to_the_stored_book() {
        let book = sample_book(3);
        let value = BASE64.encode(serde_json::to_vec(&book).unwrap());
        let body = format!(r#"{{"header":{{"revision":"9"}},"kvs":[{{"key":"eA==","value":"{value}"}}],"count":"1"}}"#);
        assert_eq!(decode_range(body.as_bytes()).unwrap(), book);
        assert_eq!(decode_range(br#"{"header":{}}"#).unwrap_err(), "missing key");
        assert_eq!(decode_range(b"nonsense").unwrap_err(), "decode");
    }

    #[test]
    fn error_kinds_name_the_code_or_the_transport_failure() {
        let p = bazar_api::Problem::new(bazar_api::ErrorCode::OutOfStock, "none left");
        assert_eq!(error_kind(&ClientError::Problem(Box::new(p))), "409 out_of_stock");
        assert_eq!(error_kind(&ClientError::timeout("slow")), "timeout");
        assert_eq!(error_kind(&ClientError::Status { status: 502, body: String::new() }), "http 502");
    }
}
