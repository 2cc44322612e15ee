//! The lab's live feed and its fault buttons.
//!
//! `GET /lab/events` is a server-sent event stream of `state` events, one
//! every [`TICK`], each a whole picture of the cluster as JSON: per group the
//! members with their role, term, last/committed/applied index and lag behind
//! the leader (from every node's `GET /cluster`), the leader and the recent
//! elections seen, the latest entries of the groups' change streams (this
//! frontend follows `GET /watch` on the nodes for the lab, apart from the
//! cache's own followers), buys/s, reads/s and the cache hit ratio over the
//! last minute (from this frontend's counters), and the lab supervisor's view
//! of its processes when there is one.
//!
//! One sampler makes the pictures for every open lab page, and runs only
//! while at least one is open: a frontend nobody watches pays nothing.
//!
//! The fault buttons (`POST /lab/control/...`) are relayed to the lab
//! supervisor named by `--lab-supervisor`, with its token; the caller must
//! present the same token (`Authorization: Bearer`). Without a supervisor
//! these routes answer `404` and the lab is read-only.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bazar_api::{ClusterStatus, ErrorCode, Group, Problem, WatchEvent};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Frontend;
use crate::config::LabSupervisor;
use crate::metrics::Route;

/// How often a picture is sent.
pub const TICK: Duration = Duration::from_millis(250);
/// How long a node may take to answer `GET /cluster` before it is shown as
/// unreachable (a paused node never answers).
const NODE_TIMEOUT: Duration = Duration::from_millis(400);
/// The rates' window.
const WINDOW: Duration = Duration::from_secs(60);
/// Change-stream entries kept for the page.
const CHANGES_KEPT: usize = 40;
/// Elections kept per group.
const ELECTIONS_KEPT: usize = 8;
/// How long the sampler outlives the last open page (a reload reconnects).
const LINGER: Duration = Duration::from_secs(5);
/// Deadline of a relayed control call (a restart waits for the process).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// The lab's sampler and its subscribers.
pub struct Hub {
    tx: broadcast::Sender<Arc<str>>,
    running: AtomicBool,
    last: Mutex<Option<Arc<str>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { tx: broadcast::channel(16).0, running: AtomicBool::new(false), last: Mutex::new(None) }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One node's row in a group.
#[derive(Debug, Clone, Serialize)]
struct MemberView {
    node_id: u64,
    /// Whether it answered `GET /cluster` in time.
    reachable: bool,
    /// Leader, Follower, Candidate, Learner; `null` when unreachable.
    state: Option<String>,
    term: Option<u64>,
    voter: bool,
    last_log_index: Option<u64>,
    committed_index: Option<u64>,
    applied_index: Option<u64>,
    /// Entries behind the leader's log, as the leader reports it.
    lag: Option<u64>,
}

/// A leader seen taking over.
#[derive(Debug, Clone, Serialize)]
struct Election {
    term: u64,
    leader: u64,
    previous: Option<u64>,
    /// When the sampler first saw it (Unix milliseconds).
    at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
struct GroupPicture {
    group: Group,
    leader: Option<u64>,
    term: u64,
    /// Since when the current leader (or the lack of one) has been seen.
    since_ms: u64,
    members: Vec<MemberView>,
    elections: Vec<Election>,
}

/// One change-stream entry.
#[derive(Debug, Clone, Serialize)]
struct Change {
    group: Group,
    index: u64,
    keys: Vec<String>,
    node: u64,
    at_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    at_ms: u64,
    buys_per_s: f64,
    reads_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Rates {
    window_s: f64,
    buys_per_s: f64,
    reads_per_s: f64,
    /// Hits over cached reads answered (hits, misses, bypasses); `null`
    /// when there were none.
    hit_ratio: Option<f64>,
    series: Vec<Point>,
}

#[derive(Debug, Serialize)]
struct Picture<'a> {
    at_ms: u64,
    tick_ms: u64,
    groups: Vec<GroupPicture>,
    rates: Rates,
    changes: Vec<Change>,
    frontend: crate::FrontendStatus,
    /// Whether fault buttons can act (a supervisor is configured).
    controls: bool,
    /// The supervisor's view of its processes.
    supervisor: Option<&'a serde_json::Value>,
}

#[derive(Clone, Copy)]
struct Counters {
    at: Instant,
    buys: u64,
    reads: u64,
    hits: u64,
    lookups: u64,
}

fn counters(front: &Frontend) -> Counters {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &front.metrics;
    let s = &front.cache.stats;
    let hits = s.hits.load(Relaxed);
    Counters {
        at: Instant::now(),
        buys: m.succeeded(Route::Buy),
        reads: [Route::Search, Route::Lookup, Route::Order, Route::Orders].iter().map(|r| m.succeeded(*r)).sum(),
        hits,
        lookups: hits + s.misses.load(Relaxed) + s.bypasses.load(Relaxed),
    }
}

/// What the sampler remembers between pictures.
#[derive(Default)]
struct Memory {
    samples: VecDeque<Counters>,
    series: VecDeque<Point>,
    leaders: BTreeMap<Group, (Option<u64>, u64, u64)>,
    /// The last leader each group had (across a spell without one).
    last_known: BTreeMap<Group, u64>,
    elections: BTreeMap<Group, VecDeque<Election>>,
}

impl Memory {
    fn rates(&mut self, now: Counters) -> Rates {
        while self.samples.front().is_some_and(|s| now.at.duration_since(s.at) > WINDOW) {
            self.samples.pop_front();
        }
        if self.series.back().is_none_or(|p| unix_ms().saturating_sub(p.at_ms) >= 1000) {
            // One point a second, from the last second's samples.
            let recent = self.samples.iter().rev().find(|s| now.at.duration_since(s.at) >= Duration::from_secs(1));
            if let Some(then) = recent {
                let dt = now.at.duration_since(then.at).as_secs_f64();
                self.series.push_back(Point {
                    at_ms: unix_ms(),
                    buys_per_s: (now.buys - then.buys) as f64 / dt,
                    reads_per_s: (now.reads - then.reads) as f64 / dt,
                });
                while self.series.len() > 60 {
                    self.series.pop_front();
                }
            }
        }
        let first = self.samples.front().copied().unwrap_or(now);
        self.samples.push_back(now);
        let dt = now.at.duration_since(first.at).as_secs_f64();
        let per_s = |a: u64, b: u64| if dt > 0.0 { (a - b) as f64 / dt } else { 0.0 };
        let lookups = now.lookups - first.lookups;
        Rates {
            window_s: dt,
            buys_per_s: per_s(now.buys, first.buys),
            reads_per_s: per_s(now.reads, first.reads),
            hit_ratio: (lookups > 0).then(|| (now.hits - first.hits) as f64 / lookups as f64),
            series: self.series.iter().copied().collect(),
        }
    }

    /// Notes the leader seen now; returns since when it has been seen.
    fn leader_seen(&mut self, group: Group, leader: Option<u64>, term: u64) -> u64 {
        let now = unix_ms();
        let previous = self.leaders.get(&group).copied();
        match previous {
            Some((l, t, since)) if l == leader && (leader.is_none() || t == term) => since,
            _ => {
                if let Some(leader) = leader {
                    let elections = self.elections.entry(group).or_default();
                    let before = self.last_known.insert(group, leader);
                    // The first sight of a leader when the lab opens is no election.
                    if previous.is_some() {
                        elections.push_front(Election { term, leader, previous: before, at_ms: now });
                        elections.truncate(ELECTIONS_KEPT);
                    }
                }
                self.leaders.insert(group, (leader, term, now));
                now
            }
        }
    }
}

/// The picture of `group` from every node's answer (`None`: did not answer).
fn group_picture(memory: &mut Memory, group: Group, answers: &[(u64, Option<ClusterStatus>)]) -> GroupPicture {
    let of = |status: &ClusterStatus| status.groups.iter().find(|g| g.group == group).cloned();
    let views: Vec<(u64, Option<bazar_api::GroupStatus>)> =
        answers.iter().map(|(id, s)| (*id, s.as_ref().and_then(of))).collect();
    // The leader is the node that says it leads at the highest term.
    let leading = views
        .iter()
        .filter_map(|(id, v)| v.as_ref().filter(|v| v.state == "Leader").map(|v| (v.term, *id, v.clone())))
        .max_by_key(|(term, _, _)| *term);
    let term = views.iter().filter_map(|(_, v)| v.as_ref().map(|v| v.term)).max().unwrap_or(0);
    let leader = leading.as_ref().filter(|(t, _, _)| *t == term).map(|(_, id, _)| *id);
    let leader_view = leading.as_ref().filter(|(t, _, _)| *t == term).map(|(_, _, v)| v);
    let lag =
        |id: u64| leader_view.and_then(|v| v.replication.as_ref()?.iter().find(|r| r.node_id == id).map(|r| r.lag));
    let known_members = views.iter().filter_map(|(_, v)| v.as_ref()).max_by_key(|v| v.term).map(|v| v.members.clone());
    let members = views
        .iter()
        .map(|(id, v)| MemberView {
            node_id: *id,
            reachable: v.is_some(),
            state: v.as_ref().map(|v| v.state.clone()),
            term: v.as_ref().map(|v| v.term),
            voter: known_members.as_ref().is_some_and(|m| m.iter().any(|m| m.node_id == *id && m.voter)),
            last_log_index: v.as_ref().and_then(|v| v.last_log_index),
            committed_index: v.as_ref().and_then(|v| v.committed_index),
            applied_index: v.as_ref().and_then(|v| v.applied_index),
            lag: if Some(*id) == leader { Some(0) } else { lag(*id) },
        })
        .collect();
    let since_ms = memory.leader_seen(group, leader, term);
    GroupPicture {
        group,
        leader,
        term,
        since_ms,
        members,
        elections: memory.elections.get(&group).map(|e| e.iter().cloned().collect()).unwrap_or_default(),
    }
}

/// Follows `group`'s change stream for the lab until `stop`.
async fn follow_changes(
    front: Arc<Frontend>,
    group: Group,
    changes: Arc<Mutex<VecDeque<Change>>>,
    stop: CancellationToken,
) {
    let mut turn = 0usize;
    let mut from: Option<u64> = None;
    while !stop.is_cancelled() {
        let all = front.replicas.all();
        let healthy: Vec<_> = all.iter().filter(|r| r.is_healthy()).cloned().collect();
        let pool = if healthy.is_empty() { all.to_vec() } else { healthy };
        let replica = pool[turn % pool.len()].clone();
        turn += 1;
        let client = front.node_client(&replica.base, Duration::from_secs(1));
        let start = match from {
            Some(index) => Some(index),
            // Only what happens from now on: start at the node's applied index.
            None => client.node_health().await.ok().and_then(|h| h.groups.get(&group).map(|g| g.applied_index)),
        };
        let Some(start) = start else {
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
            continue;
        };
        let mut events = match client.watch(group, start).await {
            Ok(events) => events,
            Err(_) => {
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
                continue;
            }
        };
        from = Some(start);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = events.next() => n,
            };
            let change = match next {
                Some(Ok(WatchEvent::Applied { index, keys })) => {
                    from = Some(index);
                    Change { group, index, keys, node: replica.id, at_ms: unix_ms() }
                }
                Some(Ok(WatchEvent::Reset { applied_index, reason })) => {
                    from = Some(applied_index);
                    let keys = vec![format!("(stream reset: {reason})")];
                    Change { group, index: applied_index, keys, node: replica.id, at_ms: unix_ms() }
                }
                Some(Ok(WatchEvent::Heartbeat { .. })) => continue,
                Some(Err(_)) | None => break,
            };
            let mut kept = changes.lock().expect("changes poisoned");
            kept.push_front(change);
            kept.truncate(CHANGES_KEPT);
        }
    }
}

/// `GET {supervisor}/state`, or what went wrong.
async fn supervisor_state(front: &Frontend, lab: &LabSupervisor) -> serde_json::Value {
    let call = front.http.get(format!("{}/state", lab.url)).bearer_auth(&lab.token).timeout(Duration::from_secs(1));
    match call.send().await {
        Ok(r) if r.status().is_success() => {
            r.json().await.unwrap_or_else(|e| serde_json::json!({ "error": format!("unreadable state: {e}") }))
        }
        Ok(r) => serde_json::json!({ "error": format!("the supervisor answered {}", r.status()) }),
        Err(e) => serde_json::json!({ "error": format!("the supervisor does not answer: {e}") }),
    }
}

/// Makes pictures while anyone listens.
async fn sample(front: Arc<Frontend>) {
    let hub = &front.lab;
    let stop = front.shutdown.child_token();
    let changes = Arc::new(Mutex::new(VecDeque::new()));
    for group in Group::ALL {
        tokio::spawn(follow_changes(front.clone(), group, changes.clone(), stop.clone()));
    }
    let mut memory = Memory::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = front.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if hub.tx.receiver_count() == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > LINGER {
                hub.running.store(false, Ordering::SeqCst);
                // A page that subscribed just now must not be left without a sampler.
                if hub.tx.receiver_count() == 0 || hub.running.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        } else {
            idle_since = None;
        }
        let asks =
            front.replicas.all().iter().map(|r| {
                let client = front.node_client(&r.base, NODE_TIMEOUT);
                let id = r.id;
                async move {
                    (id, tokio::time::timeout(NODE_TIMEOUT, client.cluster_status()).await.ok().and_then(Result::ok))
                }
            });
        let supervisor = async {
            match &front.config.lab {
                Some(lab) => Some(supervisor_state(&front, lab).await),
                None => None,
            }
        };
        let (answers, supervisor) = tokio::join!(futures::future::join_all(asks), supervisor);
        let groups = Group::ALL.iter().map(|g| group_picture(&mut memory, *g, &answers)).collect();
        let picture = Picture {
            at_ms: unix_ms(),
            tick_ms: TICK.as_millis() as u64,
            groups,
            rates: memory.rates(counters(&front)),
            changes: changes.lock().expect("changes poisoned").iter().cloned().collect(),
            frontend: front.status(),
            controls: front.config.lab.is_some(),
            supervisor: supervisor.as_ref(),
        };
        let text: Arc<str> = match serde_json::to_string(&picture) {
            Ok(t) => t.into(),
            Err(e) => {
                tracing::warn!(error = %e, "lab picture not serializable");
                continue;
            }
        };
        *hub.last.lock().expect("last poisoned") = Some(text.clone());
        let _ = hub.tx.send(text);
    }
    stop.cancel();
    hub.running.store(false, Ordering::SeqCst);
}

/// `GET /lab/events`: the live pictures, as server-sent `state` events.
pub async fn events(State(front): State<Arc<Frontend>>) -> Response {
    let hub = &front.lab;
    let rx = hub.tx.subscribe();
    if !hub.running.swap(true, Ordering::SeqCst) {
        tokio::spawn(sample(front.clone()));
    }
    let first = hub.last.lock().expect("last poisoned").clone();
    let state = |text: &str| Ok::<_, Infallible>(Event::default().event("state").data(text));
    let head = futures::stream::iter(first.map(|t| state(&t)));
    let live = futures::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(text) => return Some((state(&text), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // Ends at shutdown, so that the server's graceful stop is not held by
    // pages left open.
    let stream = head.chain(live).take_until(front.shutdown.clone().cancelled_owned());
    let mut response = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Compares tokens in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The supervisor, if the caller may use it; otherwise the refusal.
// The refusal is the answer itself, returned once per control call: its
// size does not matter, and boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn authorize<'a>(front: &'a Frontend, headers: &HeaderMap) -> Result<&'a LabSupervisor, Response> {
    let Some(lab) = &front.config.lab else {
        return Err(Problem::new(
            ErrorCode::NotFound,
            "this frontend has no lab supervisor: the lab is read-only (start a lab cluster with bazar-lab)",
        )
        .into_response());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if same_token(t.as_bytes(), lab.token.as_bytes()) => Ok(lab),
        Some(_) => Err(Problem::new(ErrorCode::Unauthorized, "wrong lab token").into_response()),
        None => Err(Problem::new(
            ErrorCode::Unauthorized,
            "fault buttons need Authorization: Bearer <lab token> (printed by bazar-lab)",
        )
        .into_response()),
    }
}

/// Relays a control call to the supervisor and its answer back.
async fn relay(front: &Frontend, lab: &LabSupervisor, path: &str, body: Bytes) -> Response {
    let call = front
        .http
        .post(format!("{}{path}", lab.url))
        .bearer_auth(&lab.token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(CONTROL_TIMEOUT);
    let answer = match call.send().await {
        Ok(a) => a,
        Err(e) => return Problem::unavailable(format!("the lab supervisor does not answer: {e}"), 1).into_response(),
    };
    let status = answer.status();
    let kind = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return Problem::unavailable(format!("the lab supervisor's answer broke off: {e}"), 1).into_response();
        }
    };
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, body).into_response();
    if let Some(kind) = kind {
        response.headers_mut().insert(header::CONTENT_TYPE, kind);
    }
    response
}

/// The node actions the supervisor carries out.
pub const NODE_ACTIONS: [&str; 6] = ["kill", "pause", "resume", "restart", "isolate", "rejoin"];

/// `POST /lab/control/nodes/{id}/{action}`.
pub async fn node_action(
    State(front): State<Arc<Frontend>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let lab = match authorize(&front, &headers) {
        Ok(lab) => lab,
        Err(refused) => return refused,
    };
    let Some(id) = id.parse::<u64>().ok().filter(|id| *id > 0) else {
        return Problem::new(ErrorCode::InvalidInput, format!("{id:?} is not a node id")).into_response();
    };
    if !NODE_ACTIONS.contains(&action.as_str()) {
        let detail = format!("unknown action {action:?}: one of {}", NODE_ACTIONS.join(", "));
        return Problem::new(ErrorCode::InvalidInput, detail).into_response();
    }
    relay(&front, lab, &format!("/nodes/{id}/{action}"), Bytes::new()).await
}

/// `POST /lab/control/groups/{group}/transfer-leader`.
pub async fn transfer_leader(
    State(front): State<Arc<Frontend>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Response {
    let lab = match authorize(&front, &headers) {
        Ok(lab) => lab,
        Err(refused) => return refused,
    };
    match group.parse::<Group>() {
        Ok(group) => relay(&front, lab, &format!("/groups/{group}/transfer-leader"), Bytes::new()).await,
        Err(detail) => Problem::new(ErrorCode::InvalidInput, detail).into_response(),
    }
}

/// `POST /lab/control/heal`.
pub async fn heal(State(front): State<Arc<Frontend>>, headers: HeaderMap) -> Response {
    match authorize(&front, &headers) {
        Ok(lab) => relay(&front, lab, "/heal", Bytes::new()).await,
        Err(refused) => refused,
    }
}

/// `POST /lab/control/try` with `{"seconds": n}`.
pub async fn try_it(State(front): State<Arc<Frontend>>, headers: HeaderMap, body: Bytes) -> Response {
    let lab = match authorize(&front, &headers) {
        Ok(lab) => lab,
        Err(refused) => return refused,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TryRequest {
        seconds: u64,
    }
    match serde_json::from_slice::<TryRequest>(&body) {
        Ok(r) if (2..=60).contains(&r.seconds) => {
            relay(&front, lab, "/try", Bytes::from(serde_json::json!({ "seconds": r.seconds }).to_string())).await
        }
        Ok(_) => Problem::new(ErrorCode::InvalidInput, "seconds must be between 2 and 60").into_response(),
        Err(e) => Problem::new(ErrorCode::InvalidInput, format!("expected {{\"seconds\": n}}: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"", b"a"));
    }

    #[test]
    fn a_new_leader_is_an_election_but_the_first_sight_is_not() {
        let mut memory = Memory::default();
        memory.leader_seen(Group::Catalog, Some(1), 1);
        assert!(memory.elections.get(&Group::Catalog).is_none_or(|e| e.is_empty()));
        memory.leader_seen(Group::Catalog, None, 1);
        memory.leader_seen(Group::Catalog, Some(2), 2);
        let elections = &memory.elections[&Group::Catalog];
        assert_eq!(elections.len(), 1);
        assert_eq!((elections[0].leader, elections[0].term, elections[0].previous), (2, 2, Some(1)));
        // Seen again: no new election.
        memory.leader_seen(Group::Catalog, Some(2), 2);
        assert_eq!(memory.elections[&Group::Catalog].len(), 1);
    }
}
