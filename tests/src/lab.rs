//! The lab supervisor: a local cluster of real `raft-node` processes and a
//! `frontend`, and a small HTTP service on 127.0.0.1 through which the web
//! lab's fault buttons act on them.
//!
//! What it promises:
//! - Every control call needs `Authorization: Bearer <lab token>`; without
//!   it, `401`. The frontend is started with the supervisor's address and
//!   token (`--lab-supervisor`, `BAZAR_LAB_TOKEN`) and relays the buttons;
//!   a page must present the same token to the frontend.
//! - Faults are real: `kill` is SIGKILL, `pause`/`resume` SIGSTOP/SIGCONT,
//!   `restart` a graceful stop (SIGTERM) and a start on the same data,
//!   `isolate`/`rejoin` iptables rules on the nodes' peer addresses (root
//!   only: otherwise they answer `409` saying why, and the page hides them),
//!   `transfer-leader` the nodes' own `POST /admin/{group}/transfer-leader`.
//! - `POST /try` runs a short workload through the frontend on two books it
//!   adds for the run (so shoppers' buys never disturb the check), then
//!   collects the final state and checks the history with [`crate::checker`];
//!   `GET /state` shows its progress and verdict.
//! - Dropping the [`Lab`] kills every process it started, and only those,
//!   and removes every firewall rule it made (see [`Cluster`]).
//!
//! | route | answers |
//! |---|---|
//! | `GET /state` | `200` processes, partitions, the last try-it run |
//! | `POST /nodes/{id}/{kill,pause,resume,restart,isolate,rejoin}` | `200`; `404` unknown node; `400` unknown action; `409` no partitions here |
//! | `POST /groups/{group}/transfer-leader` | `200`; `503` no leader to transfer from, or the transfer failed |
//! | `POST /heal` | `200` |
//! | `POST /try` `{"seconds": n}` | `202`; `409` a run is under way; `400` |

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazar_api::{ErrorCode, Group, NewBook, Problem};
use bazar_client::Client;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::check::collect_final;
use crate::checker::{CheckConfig, check_history};
use crate::frontend::FrontendProc;
use crate::history::{Clock, History, Record};
use crate::runner::{self, RunnerConfig};
use crate::{ADMIN_TOKEN, Cluster, Error, Result, health_within_a_second};

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Raft nodes (ids 1..=n).
    pub nodes: u64,
    /// Where the frontend listens.
    pub frontend: SocketAddr,
    /// Where the supervisor listens (127.0.0.1; port 0 picks one).
    pub listen: SocketAddr,
    /// The lab token.
    pub token: String,
}

/// A running lab: the cluster, its frontend, and the supervisor's state.
pub struct Lab {
    cluster: tokio::sync::Mutex<Cluster>,
    frontend: Mutex<Option<FrontendProc>>,
    frontend_addr: String,
    token: String,
    supervisor: String,
    tries: Mutex<TryState>,
}

/// The try-it panel's state.
#[derive(Debug, Clone, Default, Serialize)]
struct TryState {
    /// Runs started so far (the current or last one's number).
    run: u64,
    /// `idle`, `setting up`, `running`, `checking`, `done`, `failed`.
    state: &'static str,
    seconds: u64,
    books: Vec<u64>,
    verdict: Option<Verdict>,
    error: Option<String>,
}

/// What the checker said.
#[derive(Debug, Clone, Serialize)]
struct Verdict {
    passed: bool,
    violations: Vec<String>,
    /// The checker's summary table.
    summary: String,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Lab {
    /// Starts `config.nodes` raft nodes and a frontend that knows the
    /// supervisor served on `listener`; returns once both groups have a
    /// leader and the frontend answers.
    pub async fn start(config: &LabConfig, listener: &TcpListener) -> Result<Lab> {
        let supervisor =
            format!("http://{}", listener.local_addr().map_err(|e| Error::Io(format!("supervisor address: {e}")))?);
        let cluster = Cluster::start(config.nodes, &[]).await;
        let frontend = FrontendProc::start_on(
            &cluster,
            "frontend",
            &config.frontend.to_string(),
            &["--lab-supervisor", &supervisor],
            &[("BAZAR_LAB_TOKEN", config.token.as_str())],
        )
        .await;
        Ok(Lab {
            cluster: tokio::sync::Mutex::new(cluster),
            frontend_addr: frontend.addr.clone(),
            frontend: Mutex::new(Some(frontend)),
            token: config.token.clone(),
            supervisor,
            tries: Mutex::new(TryState { state: "idle", ..TryState::default() }),
        })
    }

    /// The frontend's base URL.
    pub fn frontend_url(&self) -> String {
        format!("http://{}", self.frontend_addr)
    }

    /// Stops the frontend and every node, and mends every cut, even while
    /// a try-it run still holds the lab.
    pub async fn stop(&self) {
        self.frontend.lock().expect("frontend poisoned").take();
        let mut cluster = self.cluster.lock().await;
        let _ = cluster.heal();
        for id in cluster.ids() {
            cluster.kill(id);
        }
    }

    /// The supervisor's base URL.
    pub fn supervisor_url(&self) -> &str {
        &self.supervisor
    }

    /// The lab page's address with the token in its fragment (which the
    /// browser never sends to a server).
    pub fn lab_link(&self) -> String {
        format!("{}/lab#token={}", self.frontend_url(), self.token)
    }

    /// The cluster, for tests that inspect it.
    pub fn cluster(&self) -> &tokio::sync::Mutex<Cluster> {
        &self.cluster
    }
}

/// Serves the supervisor's routes on `listener` until `shutdown` resolves.
pub async fn serve(
    lab: Arc<Lab>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, app(lab))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Io(format!("supervisor: {e}")))
}

/// The supervisor's routes.
pub fn app(lab: Arc<Lab>) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/nodes/{id}/{action}", post(node_action))
        .route("/groups/{group}/transfer-leader", post(transfer_leader))
        .route("/heal", post(heal))
        .route("/try", post(try_it))
        .fallback(|| async { problem(Problem::new(ErrorCode::NotFound, "no such route")) })
        .layer(axum::middleware::from_fn_with_state(lab.clone(), authenticate))
        .with_state(lab)
}

fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, serde_json::to_vec(&p).unwrap_or_default()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(bazar_api::PROBLEM_CONTENT_TYPE));
    response
}

fn done(status: StatusCode, value: serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn authenticate(State(lab): State<Arc<Lab>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|t| {
        t.len() == lab.token.len() && t.bytes().zip(lab.token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !ok {
        return problem(Problem::new(
            ErrorCode::Unauthorized,
            "the lab supervisor needs Authorization: Bearer <lab token>",
        ));
    }
    next.run(req).await
}

/// One node's process, for `GET /state`.
#[derive(Debug, Serialize)]
struct NodeState {
    id: u64,
    addr: String,
    /// `running`, `paused` or `stopped`.
    process: &'static str,
    pid: Option<u32>,
    /// Cut off every peer.
    isolated: bool,
}

async fn state(State(lab): State<Arc<Lab>>) -> Response {
    let mut cluster = lab.cluster.lock().await;
    let cuts = cluster.cuts();
    let ids = cluster.ids();
    let nodes: Vec<NodeState> = ids
        .iter()
        .map(|id| NodeState {
            id: *id,
            addr: cluster.client_addr(*id),
            process: cluster.process_state(*id),
            pid: cluster.pid(*id),
            isolated: ids.iter().filter(|o| *o != id).all(|o| cuts.contains(&(*id, *o)) && cuts.contains(&(*o, *id)))
                && ids.len() > 1,
        })
        .collect();
    drop(cluster);
    let partitions = match crate::partition::available() {
        Ok(()) => serde_json::json!({ "available": true }),
        Err(why) => serde_json::json!({ "available": false, "why": why }),
    };
    let tries = lab.tries.lock().expect("tries poisoned").clone();
    let tries = if tries.run == 0 { serde_json::Value::Null } else { serde_json::to_value(&tries).unwrap_or_default() };
    done(StatusCode::OK, serde_json::json!({ "nodes": nodes, "partitions": partitions, "try": tries }))
}

async fn node_action(State(lab): State<Arc<Lab>>, Path((id, action)): Path<(String, String)>) -> Response {
    let mut cluster = lab.cluster.lock().await;
    let Some(id) = id.parse::<u64>().ok().filter(|id| cluster.ids().contains(id)) else {
        return problem(Problem::new(ErrorCode::NotFound, format!("no node {id} in this lab")));
    };
    let network = matches!(action.as_str(), "isolate" | "rejoin");
    if network && let Err(why) = crate::partition::available() {
        return problem(Problem::new(ErrorCode::Conflict, format!("partitions are not available here: {why}")));
    }
    let detail = match action.as_str() {
        "kill" => {
            cluster.kill(id);
            format!("node {id} killed (SIGKILL)")
        }
        "pause" => {
            cluster.pause(id);
            format!("node {id} paused (SIGSTOP)")
        }
        "resume" => {
            cluster.resume(id);
            format!("node {id} resumed (SIGCONT)")
        }
        "restart" => {
            cluster.stop(id).await;
            cluster.ensure_running(id);
            format!("node {id} restarted on its data")
        }
        "isolate" => match cluster.partition(id) {
            Ok(()) => format!("node {id} cut off its peers (clients still reach it)"),
            Err(e) => return problem(Problem::new(ErrorCode::Conflict, format!("could not isolate node {id}: {e}"))),
        },
        "rejoin" => match cluster.rejoin(id) {
            Ok(()) => format!("node {id} reconnected to its peers"),
            Err(e) => return problem(Problem::new(ErrorCode::Conflict, format!("could not rejoin node {id}: {e}"))),
        },
        other => {
            return problem(Problem::new(
                ErrorCode::InvalidInput,
                format!("unknown action {other:?}: kill, pause, resume, restart, isolate or rejoin"),
            ));
        }
    };
    eprintln!("bazar-lab: {detail}");
    done(StatusCode::OK, serde_json::json!({ "detail": detail, "node": id, "action": action, "at_ms": unix_ms() }))
}

async fn transfer_leader(State(lab): State<Arc<Lab>>, Path(group): Path<String>) -> Response {
    let group: Group = match group.parse() {
        Ok(g) => g,
        Err(detail) => return problem(Problem::new(ErrorCode::InvalidInput, detail)),
    };
    // Ask the nodes without holding the cluster: a paused node takes a
    // second to time out, and other buttons must not wait for it.
    let clients: Vec<(u64, Client)> = {
        let mut cluster = lab.cluster.lock().await;
        cluster.live_ids().into_iter().map(|id| (id, cluster.client(id))).collect()
    };
    let mut leader = None;
    for (_, client) in &clients {
        if let Some(h) = health_within_a_second(client).await
            && let Some(Some(l)) = h.leaders.get(&group)
        {
            leader = Some(*l);
            break;
        }
    }
    let Some(leader) = leader else {
        return problem(Problem::unavailable(format!("the {group} group has no leader to transfer from"), 1));
    };
    let Some((_, client)) = clients.iter().find(|(id, _)| *id == leader) else {
        return problem(Problem::unavailable(format!("the {group} leader, node {leader}, is not running"), 1));
    };
    match client.with_timeout(Duration::from_secs(10)).transfer_leader(group, None).await {
        Ok(status) => {
            let now = status.groups.iter().find(|g| g.group == group).and_then(|g| g.leader_id);
            let detail = match now {
                Some(n) => format!("{group} leadership moved from node {leader} to node {n}"),
                None => format!("{group} leadership left node {leader}"),
            };
            done(StatusCode::OK, serde_json::json!({ "detail": detail, "from": leader, "to": now, "at_ms": unix_ms() }))
        }
        Err(e) => problem(Problem::unavailable(format!("the transfer from node {leader} failed: {e}"), 1)),
    }
}

async fn heal(State(lab): State<Arc<Lab>>) -> Response {
    let mut cluster = lab.cluster.lock().await;
    match cluster.heal() {
        Ok(()) => done(StatusCode::OK, serde_json::json!({ "detail": "every cut mended", "at_ms": unix_ms() })),
        Err(e) => problem(Problem::new(ErrorCode::Conflict, format!("could not heal: {e}"))),
    }
}

async fn try_it(State(lab): State<Arc<Lab>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TryRequest {
        seconds: u64,
    }
    let seconds = match serde_json::from_slice::<TryRequest>(&body) {
        Ok(r) if (2..=60).contains(&r.seconds) => r.seconds,
        Ok(_) => return problem(Problem::new(ErrorCode::InvalidInput, "seconds must be between 2 and 60")),
        Err(e) => return problem(Problem::new(ErrorCode::InvalidInput, format!("expected {{\"seconds\": n}}: {e}"))),
    };
    let run = {
        let mut tries = lab.tries.lock().expect("tries poisoned");
        if matches!(tries.state, "setting up" | "running" | "checking") {
            return problem(Problem::new(ErrorCode::Conflict, format!("run {} is under way", tries.run)));
        }
        let run = tries.run + 1;
        *tries = TryState { run, state: "setting up", seconds, ..TryState::default() };
        run
    };
    let task = lab.clone();
    tokio::spawn(async move {
        let outcome = try_run(&task, seconds).await;
        let mut tries = task.tries.lock().expect("tries poisoned");
        match outcome {
            Ok(verdict) => {
                tries.state = "done";
                tries.verdict = Some(verdict);
            }
            Err(e) => {
                tries.state = "failed";
                tries.error = Some(e.to_string());
            }
        }
    });
    done(StatusCode::ACCEPTED, serde_json::json!({ "detail": format!("run {run} started"), "run": run }))
}

fn set_try(lab: &Lab, update: impl FnOnce(&mut TryState)) {
    update(&mut lab.tries.lock().expect("tries poisoned"));
}

/// One try-it run: two books of its own, the workload, the final state, the check.
async fn try_run(lab: &Lab, seconds: u64) -> Result<Verdict> {
    let frontend = Client::builder(lab.frontend_url())
        .admin_token(ADMIN_TOKEN)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Cluster(e.to_string()))?;
    let mut books = Vec::new();
    for i in 0..2 {
        let n: u64 = rand::random_range(100_000_000..999_999_999);
        let book = NewBook {
            isbn: bazar_api::isbn::from_number(n),
            title: format!("Lab run book {} ({n})", i + 1),
            topic: "lab runs".into(),
            price_cents: 1500,
            stock: 40,
        };
        let added =
            frontend.add_book(book).await.map_err(|e| Error::Cluster(format!("adding a book for the run: {e}")))?;
        books.push(added.id);
    }
    set_try(lab, |t| t.books = books.clone());
    let mut config = RunnerConfig::new(vec![lab.frontend_url()], ADMIN_TOKEN);
    config.duration = Duration::from_secs(seconds);
    config.clients = 4;
    config.books = books.clone();
    // The second book runs low, so that buys also meet an empty shelf.
    config.low_stock = vec![(books[1], 6)];
    let history = History::in_memory(Clock::start());
    runner::setup(&config, &history, Duration::from_secs(30)).await?;
    set_try(lab, |t| t.state = "running");
    runner::run(config, history.clone()).await?;
    set_try(lab, |t| t.state = "checking");
    let nodes: Vec<(u64, Client)> = {
        let cluster = lab.cluster.lock().await;
        cluster.ids().into_iter().map(|id| (id, cluster.client(id))).collect()
    };
    let state = collect_final(&nodes, &history, Duration::from_secs(5), Duration::from_secs(15)).await;
    history.record(Record::Final(state));
    let records = history.records();
    // Faults pressed during the run are not in the history: judge safety,
    // and report (not judge) how long writes stopped.
    let check = CheckConfig { resume_bound: None, ..CheckConfig::default() };
    let report = tokio::task::spawn_blocking(move || check_history(&records, &check))
        .await
        .map_err(|e| Error::Cluster(format!("the checker panicked: {e}")))?;
    Ok(Verdict { passed: report.passed(), violations: report.violations(), summary: report.table() })
}
