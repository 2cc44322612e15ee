//! The change-event hub of one group: what `GET /watch` streams.
//!
//! The state machine publishes an `applied` event for every command that
//! changed something, after the batch holding it was written (so a reader
//! notified of index N reads a state that includes N). The hub keeps the most
//! recent events in a ring so that a subscriber can resume from an index, and
//! fans new events out through a broadcast channel.
//!
//! Ordering: events are pushed into the ring and sent on the channel under one
//! lock, and a subscriber takes its backlog from the ring and subscribes to the
//! channel under the same lock. So a subscriber sees every event after its
//! `from` index exactly once, in index order, or is told to reset.
//!
//! The ring covers every applied index above `floor`. A subscriber asking for
//! events from below the floor (they were evicted, or applied before this
//! process started) gets a `reset` instead: it must drop what it cached.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bazar_api::WatchEvent;
use tokio::sync::broadcast;

/// Events kept for resuming subscribers.
const RING_CAPACITY: usize = 65_536;
/// Events buffered per subscriber before it is declared lagging (and reset).
const CHANNEL_CAPACITY: usize = 16_384;

struct Ring {
    events: VecDeque<(u64, Arc<WatchEvent>)>,
    /// Every applied index above this is covered by `events`.
    floor: u64,
    /// The highest applied index published.
    last: u64,
}

/// Publishes one group's change events.
pub struct EventHub {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

/// What a new subscriber gets: events to send first, then the live channel.
pub struct Subscription {
    /// Events to send before the live ones (a `reset` or a replay).
    pub backlog: Vec<Arc<WatchEvent>>,
    /// Live events; skip those with an index at or below `after`.
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    /// The index the subscriber is at once the backlog is sent.
    pub after: u64,
}

impl EventHub {
    /// A hub whose state machine has applied up to `applied` already.
    pub fn new(applied: u64) -> EventHub {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        EventHub { ring: Mutex::new(Ring { events: VecDeque::new(), floor: applied, last: applied }), tx }
    }

    /// Records that everything up to `applied` is applied, with `events` among it.
    pub fn publish(&self, applied: u64, events: impl IntoIterator<Item = WatchEvent>) {
        let mut ring = self.ring.lock().expect("event ring poisoned");
        for event in events {
            let index = match &event {
                WatchEvent::Applied { index, .. } => *index,
                _ => applied,
            };
            let event = Arc::new(event);
            ring.events.push_back((index, event.clone()));
            // No subscribers is fine: the event is still in the ring.
            let _ = self.tx.send(event);
        }
        while ring.events.len() > RING_CAPACITY {
            if let Some((index, _)) = ring.events.pop_front() {
                ring.floor = index;
            }
        }
        ring.last = ring.last.max(applied);
    }

    /// The state machine was replaced wholesale (a snapshot was installed):
    /// everyone must drop what they cached.
    pub fn reset(&self, applied: u64, reason: &str) {
        let mut ring = self.ring.lock().expect("event ring poisoned");
        ring.events.clear();
        ring.floor = applied;
        ring.last = applied;
        let _ = self.tx.send(Arc::new(WatchEvent::Reset { applied_index: applied, reason: reason.into() }));
    }

    /// Subscribes from `from` (events with a greater index follow), or from
    /// now when `from` is `None`.
    pub fn subscribe(&self, from: Option<u64>) -> Subscription {
        let ring = self.ring.lock().expect("event ring poisoned");
        let live = self.tx.subscribe();
        match from {
            None => Subscription { backlog: Vec::new(), live, after: ring.last },
            Some(from) if from >= ring.floor => Subscription {
                backlog: ring.events.iter().filter(|(i, _)| *i > from).map(|(_, e)| e.clone()).collect(),
                live,
                after: from.max(ring.events.back().map(|(i, _)| *i).unwrap_or(from)),
            },
            Some(from) => Subscription {
                backlog: vec![Arc::new(WatchEvent::Reset {
                    applied_index: ring.last,
                    reason: format!("cannot replay from index {from}: events before {} are gone", ring.floor + 1),
                })],
                live,
                after: ring.last,
            },
        }
    }

    /// The highest applied index published.
    pub fn last_applied(&self) -> u64 {
        self.ring.lock().expect("event ring poisoned").last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(index: u64) -> WatchEvent {
        WatchEvent::Applied { index, keys: vec![format!("book/{index}")] }
    }

    fn indexes(events: &[Arc<WatchEvent>]) -> Vec<u64> {
        events
            .iter()
            .map(|e| match e.as_ref() {
                WatchEvent::Applied { index, .. } => *index,
                WatchEvent::Reset { applied_index, .. } => *applied_index,
                WatchEvent::Heartbeat { .. } => 0,
            })
            .collect()
    }

    #[test]
    fn resuming_subscriber_gets_exactly_the_events_after_its_index() {
        let hub = EventHub::new(10);
        hub.publish(12, [applied(11), applied(12)]);
        hub.publish(14, [applied(14)]);
        let sub = hub.subscribe(Some(11));
        assert_eq!(indexes(&sub.backlog), vec![12, 14]);
        assert_eq!(sub.after, 14);
    }

    #[test]
    fn subscriber_from_before_the_floor_is_told_to_reset() {
        let hub = EventHub::new(10);
        hub.publish(11, [applied(11)]);
        let sub = hub.subscribe(Some(5));
        assert!(matches!(sub.backlog[0].as_ref(), WatchEvent::Reset { applied_index: 11, .. }));
        assert_eq!(sub.after, 11);
    }

    #[test]
    fn live_events_follow_the_backlog_without_gaps() {
        let hub = EventHub::new(0);
        hub.publish(1, [applied(1)]);
        let mut sub = hub.subscribe(Some(0));
        hub.publish(2, [applied(2)]);
        assert_eq!(indexes(&sub.backlog), vec![1]);
        let live = sub.live.try_recv().unwrap();
        assert_eq!(indexes(&[live]), vec![2]);
    }

    #[test]
    fn snapshot_install_resets_subscribers_and_ring() {
        let hub = EventHub::new(0);
        hub.publish(3, [applied(3)]);
        let mut sub = hub.subscribe(None);
        hub.reset(50, "snapshot");
        assert!(matches!(sub.live.try_recv().unwrap().as_ref(), WatchEvent::Reset { applied_index: 50, .. }));
        let late = hub.subscribe(Some(3));
        assert!(matches!(late.backlog[0].as_ref(), WatchEvent::Reset { .. }));
    }
}
