//! Raft RPCs between nodes: the client side.
//!
//! Every RPC is an HTTP `POST {peer}/raft/{group}/{rpc}` with a postcard body
//! and the cluster token as a bearer token; the answer is a postcard body
//! (200) or a plain-text error (any other status). Both groups share one
//! [`Peers`] table. RPCs go over a [`bazar_net::Mux`]: one connection per
//! peer, on which both groups' RPCs travel as frames of the node's own HTTP
//! routes (`GET /mux`, see `bazar_net::mux`), so the appends and heartbeats
//! in flight to a peer at the same time share writes and reads; streamed
//! snapshots and the bootstrap's calls use one `reqwest::Client` per peer
//! address, so a dead or slow peer cannot exhaust the connections used for
//! the others.
//!
//! Every Raft RPC of a [`Connection`] (appends, votes, pre-votes,
//! transfer-leader, snapshots) also carries the incarnation the membership
//! records for its target and this node's id (see [`crate::incarnation`]);
//! a target that is another incarnation answers `409` with its own, which
//! is [`RpcFailure::WrongIncarnation`]: a failed RPC for openraft (so no
//! vote and no acknowledgement from it count), and an alarm here.
//!
//! Failures are classified for openraft: a connection that could not be
//! opened is `Unreachable` (openraft backs off), a timeout is `Timeout`, and
//! anything else is a `Network` error. Appends are given at least
//! [`APPEND_TIMEOUT_FLOOR`] to answer, not openraft's 50 ms: a follower that
//! is only slow must not be treated as lost.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_net::{Call, HeaderName, HeaderValue, Mux, header};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::incarnation::{self, Alarms, Incarnation, Member};
use crate::sm::{GroupSnapshot, NodeId, SnapshotData, StateMachine};
use crate::store::log::{decode, encode};

/// Content type of postcard bodies.
pub const POSTCARD: &str = "application/x-postcard";

/// Why an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcFailure {
    /// The request was not delivered (connection refused, unknown host).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer in time; the request may or may not have been processed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Delivered, but failed (non-200, undecodable answer, broken connection).
    #[error("{0}")]
    Failed(String),
    /// The target is not the incarnation the membership records: it lost
    /// its state and refused to answer as the member it was.
    #[error("the peer lost its state: it is incarnation {}, the membership records {}", incarnation::hex(*found), incarnation::hex(*expected))]
    WrongIncarnation {
        /// On record.
        expected: Incarnation,
        /// What the peer has.
        found: Incarnation,
    },
}

/// The peers of this node: pooled connections for RPCs, and one HTTP
/// client per peer address for streams.
pub struct Peers {
    token: String,
    /// `Bearer {token}`, as sent with every RPC.
    authorization: HeaderValue,
    rpcs: Mux,
    source: Option<IpAddr>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    /// TLS to the peers (mutual), when the node has a certificate.
    tls: Option<Arc<bazar_net::tls::Tls>>,
    /// Incarnation refusals, made and received (see [`crate::incarnation`]).
    alarms: Alarms,
}

impl Peers {
    /// Peers authenticated with the cluster token `token`, called from the
    /// local IP `source` (`None`: the system's choice), over TLS with `tls`
    /// when given.
    pub fn new(token: String, source: Option<IpAddr>, tls: Option<Arc<bazar_net::tls::Tls>>) -> Arc<Peers> {
        // The configuration checks that the token is printable ASCII.
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).expect("the cluster token is printable ASCII");
        authorization.set_sensitive(true);
        // The same token opens the multiplexed connection (`GET /mux`).
        let rpcs = Mux::default().with_authorization(authorization.clone()).from_source(source).with_tls(tls.clone());
        Arc::new(Peers {
            token,
            authorization,
            rpcs,
            source,
            clients: Mutex::new(HashMap::new()),
            tls,
            alarms: Alarms::default(),
        })
    }

    /// The HTTP client for the peer at `addr` (host:port).
    pub fn client(&self, addr: &str) -> reqwest::Client {
        let mut clients = self.clients.lock().expect("peer table poisoned");
        clients
            .entry(addr.to_string())
            .or_insert_with(|| {
                let builder = reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(64)
                    .local_address(self.source);
                let builder = match &self.tls {
                    Some(tls) => builder.use_preconfigured_tls((*tls.client).clone()),
                    None => builder,
                };
                builder.build().expect("building an HTTP client")
            })
            .clone()
    }

    /// `https` when the peers speak TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The cluster token, for peers' requests.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The incarnation alarms of this node.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// Who answers at `addr` (`GET /raft/identity`), within `timeout`.
    pub async fn identity(&self, addr: &str, timeout: Duration) -> Result<incarnation::Identity, RpcFailure> {
        let request = self
            .client(addr)
            .get(format!("{}://{addr}/raft/identity", self.scheme()))
            .bearer_auth(&self.token)
            .timeout(timeout);
        let bytes = send(request, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| RpcFailure::Failed(format!("undecodable identity from {addr}: {e}")))
    }

    /// `POST http://{addr}{path}` with a postcard body; decodes a postcard answer.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcFailure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.call_checked(addr, path, req, timeout, None).await
    }

    /// [`Peers::call`] for a Raft RPC: with `(this node, the target's
    /// incarnation on record)` when the membership records one.
    async fn call_checked<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
        checked: Option<(NodeId, Incarnation)>,
    ) -> Result<Resp, RpcFailure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RpcFailure::Failed(e.to_string()))?;
        let mut call = Call::post(path, Bytes::from(body))
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static(POSTCARD));
        if let Some((from, expected)) = checked {
            call = call
                .header(HeaderName::from_static(incarnation::HEADER), incarnation_value(expected))
                .header(HeaderName::from_static(incarnation::FROM_HEADER), HeaderValue::from(from));
        }
        let answer = self.rpcs.call(addr, call, timeout).await.map_err(|e| match e {
            bazar_net::Error::Connect { .. } => RpcFailure::Unreachable(e.to_string()),
            bazar_net::Error::Timeout { .. } => RpcFailure::Timeout(timeout),
            e => RpcFailure::Failed(e.to_string()),
        })?;
        if !answer.status.is_success() {
            if let Some((_, expected)) = checked
                && let Some(found) = wrong_incarnation(answer.status.as_u16(), answer.headers.get(incarnation::HEADER))
            {
                return Err(RpcFailure::WrongIncarnation { expected, found });
            }
            return Err(refused(answer.status, &answer.body));
        }
        decode(&answer.body).map_err(|e| RpcFailure::Failed(format!("undecodable answer from {addr}: {e}")))
    }
}

fn incarnation_value(i: Incarnation) -> HeaderValue {
    // Sixteen hex digits are always a valid header value.
    HeaderValue::from_str(&incarnation::hex(i)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The target's incarnation when an answer is an incarnation refusal (a
/// `409` naming it).
fn wrong_incarnation(status: u16, header: Option<&HeaderValue>) -> Option<Incarnation> {
    if status != 409 {
        return None;
    }
    header.and_then(|v| v.to_str().ok()).and_then(incarnation::parse_hex)
}

async fn send(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Bytes, RpcFailure> {
    send_checked(request, timeout, None).await
}

async fn send_checked(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    expected: Option<Incarnation>,
) -> Result<Bytes, RpcFailure> {
    let response = request.send().await.map_err(|e| classify(e, timeout))?;
    let status = response.status();
    if let Some(expected) = expected
        && let Some(found) = wrong_incarnation(status.as_u16(), response.headers().get(incarnation::HEADER))
    {
        return Err(RpcFailure::WrongIncarnation { expected, found });
    }
    let bytes = response.bytes().await.map_err(|e| classify(e, timeout))?;
    if !status.is_success() {
        return Err(refused(status, &bytes));
    }
    Ok(bytes)
}

/// A peer's non-success answer: its status and plain-text error.
fn refused(status: impl std::fmt::Display, body: &[u8]) -> RpcFailure {
    RpcFailure::Failed(format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()))
}

fn classify(e: reqwest::Error, timeout: Duration) -> RpcFailure {
    if e.is_timeout() {
        RpcFailure::Timeout(timeout)
    } else if e.is_connect() {
        RpcFailure::Unreachable(e.to_string())
    } else {
        RpcFailure::Failed(e.to_string())
    }
}

/// Creates connections for one group's Raft.
pub struct NetworkFactory<S: StateMachine> {
    peers: Arc<Peers>,
    node_id: NodeId,
    _s: PhantomData<S>,
}

impl<S: StateMachine> NetworkFactory<S> {
    /// Connections from node `node_id` through `peers`.
    pub fn new(peers: Arc<Peers>, node_id: NodeId) -> Self {
        NetworkFactory { peers, node_id, _s: PhantomData }
    }
}

impl<S: StateMachine> RaftNetworkFactory<S::C> for NetworkFactory<S> {
    type Network = Connection<S>;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection<S> {
        Connection {
            peers: self.peers.clone(),
            addr: node.addr.clone(),
            node_id: self.node_id,
            target,
            incarnation: node.incarnation,
            _s: PhantomData,
        }
    }
}

/// One group's Raft connection to one peer. openraft makes a new one when
/// the membership changes the peer (removed, then added back), so the
/// incarnation it holds is the membership's.
pub struct Connection<S: StateMachine> {
    peers: Arc<Peers>,
    addr: String,
    node_id: NodeId,
    target: NodeId,
    /// The target's incarnation on record (`None`: unknown, not checked).
    incarnation: Option<Incarnation>,
    _s: PhantomData<S>,
}

impl<S: StateMachine> Connection<S> {
    fn path(rpc: &str) -> String {
        format!("/raft/{}/{rpc}", S::GROUP)
    }

    async fn rpc<Req, Resp>(
        &self,
        rpc: &str,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<S::C>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let timeout = rpc_timeout(action, option);
        let checked = self.incarnation.map(|i| (self.node_id, i));
        let answer = self.peers.call_checked(&self.addr, &Self::path(rpc), req, timeout, checked).await;
        self.observe(&answer);
        answer.map_err(|e| self.rpc_error(e, action))
    }

    /// Raises or clears the alarm about the target's incarnation.
    fn observe<T>(&self, answer: &Result<T, RpcFailure>) {
        match answer {
            Ok(_) => self.peers.alarms().accepted_by(self.target),
            Err(RpcFailure::WrongIncarnation { expected, found }) => {
                self.peers.alarms().refused_by(S::GROUP, self.target, *expected, *found)
            }
            Err(_) => {}
        }
    }

    fn rpc_error(&self, e: RpcFailure, action: RPCTypes) -> RPCError<S::C> {
        match e {
            // Delivered and refused: like any other failed answer, the
            // target counts neither as a vote nor as an acknowledgement.
            e @ RpcFailure::WrongIncarnation { .. } => RPCError::Network(NetworkError::from_string(e.to_string())),
            RpcFailure::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            RpcFailure::Timeout(timeout) => {
                RPCError::Timeout(Timeout { action, id: self.node_id, target: self.target, timeout })
            }
            RpcFailure::Failed(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }
}

/// The least time an append is given to answer.
///
/// openraft gives every append its heartbeat interval (50 ms by default) and,
/// when one times out, restarts replication to that follower after a backoff
/// (200 ms by default) if the session made no progress. A follower that is
/// only slow, say while it builds a snapshot on a busy machine, would then
/// stall its replication four times longer than its hiccup, and when both
/// followers hiccup together (they build snapshots at about the same index)
/// no write commits for that long. A slow answer is not a lost one: appends
/// wait this long before they count as failed. A dead or cut-off follower
/// still fails fast when its connection does, and costs only its own
/// replication stream; commits go on with the others.
pub const APPEND_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

/// How long an RPC of `action` may take: openraft's bound, and at least
/// [`APPEND_TIMEOUT_FLOOR`] for appends. Heartbeats reach this as appends
/// too, but openraft's heartbeat worker bounds each one by its own timer
/// (the heartbeat interval), so a heartbeat still gives up after that and
/// is only logged; the floor lengthens replication's appends alone.
pub(crate) fn rpc_timeout(action: RPCTypes, option: &RPCOption) -> Duration {
    match action {
        RPCTypes::AppendEntries => option.hard_ttl().max(APPEND_TIMEOUT_FLOOR),
        _ => option.hard_ttl(),
    }
}

/// Header of a streamed snapshot: the leader's vote and what the file holds.
type SnapshotHeader<S> = (openraft::alias::VoteOf<<S as StateMachine>::C>, crate::sm::GroupSnapshotMeta);

impl<S: StateMachine> RaftNetworkV2<S::C> for Connection<S> {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<S::C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<S::C>, RPCError<S::C>> {
        self.rpc("append", RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<S::C>, option: RPCOption) -> Result<VoteResponse<S::C>, RPCError<S::C>> {
        self.rpc("vote", RPCTypes::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<S::C>,
        option: RPCOption,
    ) -> Result<VoteResponse<S::C>, RPCError<S::C>> {
        self.rpc("pre-vote", RPCTypes::Vote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<S::C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<S::C>, RPCError<S::C>> {
        self.rpc("transfer-leader", RPCTypes::TransferLeader, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: openraft::alias::VoteOf<S::C>,
        snapshot: GroupSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<S::C>, StreamingError<S::C>> {
        let header: SnapshotHeader<S> = (vote, snapshot.meta);
        let header = encode(&header).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let size = snapshot.snapshot.size;
        let mut prefix = Vec::with_capacity(4 + header.len());
        prefix.extend_from_slice(&(header.len() as u32).to_le_bytes());
        prefix.extend_from_slice(&header);
        let file = tokio::fs::File::from_std(snapshot.snapshot.file);
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(prefix)) })
            .chain(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));

        // A snapshot can be large: allow for its transfer at a modest 20 MB/s.
        let timeout = option.hard_ttl().max(Duration::from_secs(10) + Duration::from_millis(size / 20_000));
        let mut request = self
            .peers
            .client(&self.addr)
            .post(format!("{}://{}{}", self.peers.scheme(), self.addr, Self::path("snapshot")))
            .bearer_auth(self.peers.token())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(timeout);
        if let Some(i) = self.incarnation {
            request =
                request.header(incarnation::HEADER, incarnation::hex(i)).header(incarnation::FROM_HEADER, self.node_id);
        }
        let request = request.body(reqwest::Body::wrap_stream(body));
        let bytes = tokio::select! {
            res = send_checked(request, timeout, self.incarnation) => {
                self.observe(&res);
                res.map_err(|e| StreamingError::from(self.rpc_error(e, RPCTypes::InstallSnapshot)))?
            }
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        decode(&bytes).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}

/// Reads a streamed snapshot's header from the front of `body`, returning the
/// header and the rest of the stream (the snapshot file's bytes).
pub async fn read_snapshot_header<S, B, E>(mut body: B) -> Result<(SnapshotHeader<S>, Vec<u8>, B), String>
where
    S: StateMachine,
    B: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf = Vec::new();
    loop {
        if buf.len() >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().expect("four bytes")) as usize;
            if len > 16 << 20 {
                return Err("snapshot header too large".into());
            }
            if buf.len() >= 4 + len {
                let header = decode(&buf[4..4 + len]).map_err(|e| format!("bad snapshot header: {e}"))?;
                let rest = buf[4 + len..].to_vec();
                return Ok((header, rest, body));
            }
        }
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(format!("reading snapshot: {e}")),
            None => return Err("snapshot stream ended inside its header".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_wait_at_least_the_floor_and_other_rpcs_keep_openrafts_bound() {
        // openraft's default: the heartbeat interval.
        let heartbeat = RPCOption::new(Duration::from_millis(50));
        assert_eq!(rpc_timeout(RPCTypes::AppendEntries, &heartbeat), APPEND_TIMEOUT_FLOOR);
        assert_eq!(rpc_timeout(RPCTypes::Vote, &heartbeat), Duration::from_millis(50));
        assert_eq!(rpc_timeout(RPCTypes::TransferLeader, &heartbeat), Duration::from_millis(50));
        // A longer bound from openraft is kept.
        let long = RPCOption::new(Duration::from_secs(5));
        assert_eq!(rpc_timeout(RPCTypes::AppendEntries, &long), Duration::from_secs(5));
        // Longer than a snapshot build's hiccup on a loaded machine (up to
        // about 300 ms measured), shorter than a client's patience.
        assert!(APPEND_TIMEOUT_FLOOR >= Duration::from_millis(500) && APPEND_TIMEOUT_FLOOR <= Duration::from_secs(2));
    }
}
