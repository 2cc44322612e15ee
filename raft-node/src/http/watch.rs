//! `GET /watch?group=G&from=INDEX`: the change-event stream.
//!
//! Newline-delimited JSON by default; server-sent events when the client
//! sends `Accept: text/event-stream`. The stream opens with the backlog
//! (events after `from`, or a `reset`) and a heartbeat; live `applied` events
//! follow in index order, interleaved with `heartbeat`s every
//! `--watch-heartbeat-ms`.
//!
//! A heartbeat reporting `applied_index = N` is sent only after every event
//! with an index up to N: before a heartbeat is written, the events already
//! published are drained into the stream. A subscriber can therefore treat a
//! heartbeat as "you have seen everything up to N".

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bazar_api::{Group, WatchEvent};
use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::client::Params;
use super::error::AppError;
use crate::node::Node;
use crate::raft::RaftGroup;
use crate::sm::StateMachine;
use crate::watch::Subscription;

/// `GET /watch`
pub async fn watch(State(node): State<Arc<Node>>, headers: HeaderMap, params: Params) -> Result<Response, AppError> {
    let group: Group = match params.0.get("group") {
        Some(g) => g.parse().map_err(AppError::invalid)?,
        None => return Err(AppError::invalid("missing ?group=catalog|orders")),
    };
    let from = match params.0.get("from").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| AppError::invalid(format!("invalid from index {s:?}")))?),
    };
    let sse = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    let body = match group {
        Group::Catalog => stream(node.clone(), node.catalog.clone(), from, sse),
        Group::Orders => stream(node.clone(), node.orders.clone(), from, sse),
    };
    let mut response = body.into_response();
    let content_type = if sse { "text/event-stream" } else { "application/x-ndjson" };
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

struct Watcher<S: StateMachine> {
    node: Arc<Node>,
    group: Arc<RaftGroup<S>>,
    sub: Subscription,
    queue: VecDeque<Arc<WatchEvent>>,
    tick: tokio::time::Interval,
    sse: bool,
}

impl<S: StateMachine> Watcher<S> {
    fn encode(&self, event: &WatchEvent) -> Bytes {
        let json = serde_json::to_string(event).unwrap_or_default();
        if self.sse { Bytes::from(format!("data: {json}\n\n")) } else { Bytes::from(format!("{json}\n")) }
    }

    /// Queues a live event unless the backlog already covered it.
    fn accept(&mut self, event: Arc<WatchEvent>) {
        match event.as_ref() {
            WatchEvent::Applied { index, .. } if *index <= self.sub.after => {}
            WatchEvent::Applied { index, .. } => {
                self.sub.after = *index;
                self.queue.push_back(event);
            }
            WatchEvent::Reset { applied_index, .. } => {
                self.sub.after = *applied_index;
                self.queue.push_back(event);
            }
            WatchEvent::Heartbeat { .. } => self.queue.push_back(event),
        }
    }

    fn lagged(&mut self) {
        let applied_index = self.group.events().last_applied();
        self.sub.after = applied_index;
        self.queue.push_back(Arc::new(WatchEvent::Reset {
            applied_index,
            reason: "this subscriber fell too far behind the event stream".into(),
        }));
    }

    /// Queues the heartbeat, after every event it covers.
    fn heartbeat(&mut self) {
        let metrics = self.group.metrics();
        loop {
            match self.sub.live.try_recv() {
                Ok(e) => self.accept(e),
                Err(TryRecvError::Lagged(_)) => self.lagged(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        self.queue.push_back(Arc::new(WatchEvent::Heartbeat {
            node_id: self.node.id,
            applied_index: metrics.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            commit_index: metrics.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0),
            leader_id: metrics.current_leader,
        }));
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(self.encode(&event));
            }
            tokio::select! {
                _ = self.node.shutdown.cancelled() => return None,
                received = self.sub.live.recv() => match received {
                    Ok(e) => self.accept(e),
                    Err(RecvError::Lagged(_)) => self.lagged(),
                    Err(RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => self.heartbeat(),
            }
        }
    }
}

fn stream<S: StateMachine>(node: Arc<Node>, group: Arc<RaftGroup<S>>, from: Option<u64>, sse: bool) -> Body {
    let sub = group.events().subscribe(from);
    let queue = sub.backlog.iter().cloned().collect();
    let mut tick = tokio::time::interval(node.config.watch_heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watcher = Watcher { node, group, sub, queue, tick, sse };
    // Start with a heartbeat, so a subscriber learns at once where the group is.
    watcher.heartbeat();
    watcher.tick.reset();
    let events = futures::stream::unfold(watcher, |mut w| async move {
        let bytes = w.next().await?;
        Some((Ok::<_, std::convert::Infallible>(bytes), w))
    });
    Body::from_stream(events)
}
