//! The read cache, and the protocol that keeps it consistent.
//!
//! Entries are answers (JSON bodies) of lookups and listings, tagged with the
//! applied index they were read at. They are kept fresh by each group's
//! change stream (see [`crate::stream`]): an `applied` event for index N
//! removes the entries its keys name.
//!
//! # Guarantees (guarantees §4, `cached`)
//!
//! Per group, the cache tracks:
//! - `stream_index`: every change event up to it has been processed;
//! - `ryw_floor`: the highest commit index of a write this frontend
//!   forwarded and saw acknowledged;
//! - `fresh_until`: the time until which cached answers may be served.
//!
//! 1. **Read-your-writes.** A hit is served only if `stream_index ≥
//!    ryw_floor`: the invalidations of every write acknowledged through this
//!    frontend have been processed. Otherwise the read is a miss, and a miss
//!    reads from a replica with `min_index = max(stream_index, ryw_floor)`.
//! 2. **No value after its invalidation; no stale fill.** Invalidations and
//!    fills of a group are serialized by one lock. A fill of an answer read
//!    at index `I` is refused if an event with an index above `I` touching
//!    that entry has been processed (the recent events are kept in a ring;
//!    if they are no longer known, the fill is refused too). So an answer
//!    read before an invalidation is never inserted after it.
//! 3. **Bounded staleness.** Leaders' commit samples (see
//!    [`crate::replicas`]) say "every write acknowledged before time T has
//!    an index ≤ C". Once `stream_index ≥ C`, the cache reflects every write
//!    acknowledged before T. Cached answers are served only while
//!    `now < T + max_staleness` for the latest such T. When the stream is
//!    broken, behind, or no leader can vouch for it, that time passes: the
//!    group's entries are flushed and reads bypass the cache until the stream
//!    has caught up again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::Group;
use bytes::Bytes;
use tokio::time::Instant;

use crate::replicas::{CommitSample, slot};

/// What a cache entry answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// `GET /books/{id}`.
    Book(u64),
    /// `GET /books?topic=T` pages (normalized topic).
    Topic(String),
    /// `GET /books` pages without a topic.
    AllBooks,
    /// `GET /orders/{id}`.
    Order(u64),
    /// `GET /orders?book_id=B` pages.
    BookOrders(u64),
    /// `GET /orders?buyer=NAME` pages.
    BuyerOrders(String),
    /// `GET /orders` pages without a book or buyer.
    AllOrders,
}

impl CacheKey {
    /// The group whose changes invalidate this entry.
    pub fn group(&self) -> Group {
        match self {
            CacheKey::Book(_) | CacheKey::Topic(_) | CacheKey::AllBooks => Group::Catalog,
            CacheKey::Order(_) | CacheKey::BookOrders(_) | CacheKey::BuyerOrders(_) | CacheKey::AllOrders => {
                Group::Orders
            }
        }
    }
}

/// Which page of a listing: `(limit, after)`.
pub type Page = (usize, u64);

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The JSON body.
    pub body: Bytes,
    /// The applied index it was read at.
    pub index: u64,
}

#[derive(Debug)]
enum Entry {
    One(Cached),
    Pages(HashMap<Page, Cached>),
}

impl Entry {
    fn bytes(&self) -> usize {
        match self {
            Entry::One(c) => c.body.len(),
            Entry::Pages(p) => p.values().map(|c| c.body.len() + 16).sum(),
        }
    }
}

/// What the cache says about a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Serve this.
    Hit(Cached),
    /// Read from a replica at least at `min_index`, then offer the answer to [`Cache::fill`].
    Miss {
        /// The replica must have applied this index.
        min_index: u64,
    },
    /// The cache cannot vouch for freshness: read at `lease` consistency.
    Bypass,
}

/// A change event's keys, as cache keys. `None` means "anything in the group".
fn affected(key: &str) -> Option<Vec<CacheKey>> {
    let (kind, rest) = key.split_once('/')?;
    match kind {
        "book" => rest.parse().ok().map(|id| vec![CacheKey::Book(id), CacheKey::AllBooks]),
        "topic" => Some(vec![CacheKey::Topic(rest.to_string())]),
        "order" => rest.parse().ok().map(|id| vec![CacheKey::Order(id), CacheKey::AllOrders]),
        "book-orders" => rest.parse().ok().map(|id| vec![CacheKey::BookOrders(id)]),
        "buyer-orders" => Some(vec![CacheKey::BuyerOrders(rest.to_string())]),
        _ => None,
    }
}

/// An invalidation remembered to refuse late fills.
struct Invalidation {
    index: u64,
    /// `None`: everything in the group.
    keys: Option<Vec<CacheKey>>,
}

impl Invalidation {
    fn touches(&self, key: &CacheKey) -> bool {
        self.keys.as_ref().is_none_or(|keys| keys.contains(key))
    }
}

/// Invalidations remembered per group.
const RECENT_CAPACITY: usize = 65_536;

struct Recent {
    events: VecDeque<Invalidation>,
    /// Every invalidation with an index above this is in `events`.
    floor: u64,
    /// The latest moment the stream is known to reflect.
    caught_up_at: Option<Instant>,
}

struct GroupState {
    stream_index: AtomicU64,
    ryw_floor: AtomicU64,
    /// Nanoseconds after `Cache::base` until which hits may be served.
    fresh_until: AtomicU64,
    /// Whether the cache was usable at the last watchdog pass.
    usable: AtomicBool,
    recent: Mutex<Recent>,
}

/// Counters of the cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: AtomicU64,
    /// Reads that went to a replica and may fill the cache.
    pub misses: AtomicU64,
    /// Reads that skipped the cache (it could not vouch for freshness).
    pub bypasses: AtomicU64,
    /// Entries evicted for size.
    pub evictions: Arc<AtomicU64>,
    /// Fills refused because an invalidation overtook them.
    pub fills_refused: AtomicU64,
    /// Times a group's entries were flushed (stream stale or reset).
    pub flushes: AtomicU64,
}

/// A group's cache state, for `/cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupCacheStatus {
    /// Every change event up to this index has been processed.
    pub stream_index: u64,
    /// Highest commit index of a write acknowledged through this frontend.
    pub ryw_floor: u64,
    /// Whether cached answers may be served now.
    pub fresh: bool,
    /// How far behind the cluster the cache may be, in milliseconds.
    pub staleness_ms: Option<u64>,
}

/// The cache.
pub struct Cache {
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    groups: [GroupState; 2],
    enabled: bool,
    max_staleness: Duration,
    base: Instant,
    /// Counters.
    pub stats: CacheStats,
}

impl Cache {
    /// A cache of at most `max_entries` entries and `max_bytes` bytes of
    /// answers, serving answers at most `max_staleness` behind the cluster.
    /// A disabled cache bypasses every read.
    pub fn new(max_entries: u64, max_bytes: u64, max_staleness: Duration, enabled: bool) -> Cache {
        // Each entry weighs its bytes, but at least bytes/entries: so the
        // byte bound also bounds the number of entries.
        let unit = (max_bytes / max_entries.max(1)).max(1);
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_k: &CacheKey, v: &Arc<Entry>| -> u32 {
                (v.bytes() as u64).max(unit).min(u64::from(u32::MAX)) as u32
            })
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evicted.fetch_add(1, Relaxed);
                }
            })
            .support_invalidation_closures()
            .build();
        let group = || GroupState {
            stream_index: AtomicU64::new(0),
            ryw_floor: AtomicU64::new(0),
            fresh_until: AtomicU64::new(0),
            usable: AtomicBool::new(false),
            recent: Mutex::new(Recent { events: VecDeque::new(), floor: 0, caught_up_at: None }),
        };
        Cache {
            entries,
            groups: [group(), group()],
            enabled,
            max_staleness,
            base: Instant::now(),
            stats: CacheStats { evictions, ..Default::default() },
        }
    }

    fn group(&self, group: Group) -> &GroupState {
        &self.groups[slot(group)]
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Whether cached answers of `group` may be served now.
    pub fn is_fresh(&self, group: Group) -> bool {
        self.enabled && self.nanos(Instant::now()) < self.group(group).fresh_until.load(Relaxed)
    }

    /// Decides how to serve a read of `key` (and `page`, for listings).
    pub fn lookup(&self, key: &CacheKey, page: Option<Page>) -> Lookup {
        let g = self.group(key.group());
        if !self.is_fresh(key.group()) {
            self.stats.bypasses.fetch_add(1, Relaxed);
            return Lookup::Bypass;
        }
        let stream = g.stream_index.load(Relaxed);
        let floor = g.ryw_floor.load(Relaxed);
        if stream >= floor
            && let Some(entry) = self.entries.get(key)
        {
            let hit = match (&*entry, page) {
                (Entry::One(c), None) => Some(c.clone()),
                (Entry::Pages(pages), Some(p)) => pages.get(&p).cloned(),
                _ => None,
            };
            if let Some(c) = hit {
                self.stats.hits.fetch_add(1, Relaxed);
                return Lookup::Hit(c);
            }
        }
        self.stats.misses.fetch_add(1, Relaxed);
        Lookup::Miss { min_index: stream.max(floor) }
    }

    /// Offers an answer read from a replica at `cached.index` for `key`.
    /// Returns whether it was inserted.
    pub fn fill(&self, key: CacheKey, page: Option<Page>, cached: Cached) -> bool {
        let group = key.group();
        let g = self.group(group);
        let recent = g.recent.lock().expect("cache lock poisoned");
        if !self.is_fresh(group) {
            return false;
        }
        let stream = g.stream_index.load(Relaxed);
        if cached.index < stream {
            // Read before the stream's position: refuse if an invalidation
            // it did not see touches the entry, or if we cannot tell.
            let overtaken = cached.index < recent.floor
                || recent.events.iter().rev().take_while(|e| e.index > cached.index).any(|e| e.touches(&key));
            if overtaken {
                self.stats.fills_refused.fetch_add(1, Relaxed);
                return false;
            }
        }
        let current = self.entries.get(&key);
        // What the cache holds is as fresh: keep it (a read of a warm cache
        // would otherwise rewrite the same entry every time).
        let as_fresh = match (current.as_deref(), page) {
            (Some(Entry::One(c)), None) => c.index >= cached.index,
            (Some(Entry::Pages(pages)), Some(p)) => pages.get(&p).is_some_and(|c| c.index >= cached.index),
            _ => false,
        };
        if as_fresh {
            return true;
        }
        let entry = match page {
            None => Entry::One(cached),
            Some(p) => {
                let mut pages = match current.as_deref() {
                    Some(Entry::Pages(pages)) => pages.clone(),
                    _ => HashMap::new(),
                };
                pages.insert(p, cached);
                Entry::Pages(pages)
            }
        };
        self.entries.insert(key, Arc::new(entry));
        drop(recent);
        true
    }

    /// Processes an `applied` event of `group`.
    pub fn applied(&self, group: Group, index: u64, keys: &[String]) {
        let g = self.group(group);
        let mut recent = g.recent.lock().expect("cache lock poisoned");
        let mut affected_keys = Some(Vec::with_capacity(keys.len() * 2));
        for key in keys {
            match (affected(key), affected_keys.as_mut()) {
                (Some(cache_keys), Some(all)) => all.extend(cache_keys),
                (None, _) => affected_keys = None,
                (Some(_), None) => {}
            }
        }
        match &affected_keys {
            Some(cache_keys) => {
                for k in cache_keys {
                    self.entries.invalidate(k);
                }
            }
            None => self.flush_locked(group),
        }
        recent.events.push_back(Invalidation { index, keys: affected_keys });
        while recent.events.len() > RECENT_CAPACITY {
            if let Some(old) = recent.events.pop_front() {
                recent.floor = old.index;
            }
        }
        g.stream_index.fetch_max(index, Relaxed);
    }

    /// Processes a heartbeat of `group`'s stream: every event up to
    /// `applied_index` was delivered. `samples` are the group's commit samples.
    pub fn heartbeat(&self, group: Group, applied_index: u64, samples: &[CommitSample]) {
        self.group(group).stream_index.fetch_max(applied_index, Relaxed);
        self.refresh(group, samples);
    }

    /// Processes a `reset`: the stream could not replay what this cache may
    /// have missed, so everything cached for `group` goes.
    pub fn reset(&self, group: Group, applied_index: u64) {
        let g = self.group(group);
        let mut recent = g.recent.lock().expect("cache lock poisoned");
        self.flush_locked(group);
        recent.events.clear();
        let at = applied_index.max(g.stream_index.load(Relaxed));
        recent.floor = at;
        g.stream_index.store(at, Relaxed);
    }

    /// Records a write acknowledged through this frontend at `index`.
    pub fn wrote(&self, group: Group, index: u64) {
        self.group(group).ryw_floor.fetch_max(index, Relaxed);
    }

    /// Recomputes how long cached answers of `group` may be served, from the
    /// stream's position and the leaders' commit samples.
    pub fn refresh(&self, group: Group, samples: &[CommitSample]) {
        let g = self.group(group);
        let stream = g.stream_index.load(Relaxed);
        let Some(sample) = samples.iter().rev().find(|s| s.commit <= stream) else { return };
        let mut recent = g.recent.lock().expect("cache lock poisoned");
        let at = recent.caught_up_at.map_or(sample.at, |t| t.max(sample.at));
        recent.caught_up_at = Some(at);
        g.fresh_until.store(self.nanos(at + self.max_staleness), Relaxed);
    }

    /// Flushes the entries of groups that just became stale. Call often.
    pub fn watchdog(&self) {
        for group in Group::ALL {
            let fresh = self.is_fresh(group);
            let was = self.group(group).usable.swap(fresh, Relaxed);
            if was && !fresh {
                let _recent = self.group(group).recent.lock().expect("cache lock poisoned");
                tracing::warn!(%group, "cache stale (change stream broken or behind): flushed and bypassed");
                self.flush_locked(group);
            } else if fresh && !was {
                tracing::info!(%group, "cache fresh again");
            }
        }
    }

    fn flush_locked(&self, group: Group) {
        self.stats.flushes.fetch_add(1, Relaxed);
        if let Err(e) = self.entries.invalidate_entries_if(move |k, _| k.group() == group) {
            // Only possible if the builder lacked invalidation closures.
            tracing::error!(error = %e, "flushing the cache");
            self.entries.invalidate_all();
        }
    }

    /// Entries and weighted size, for metrics.
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// One group's state, for `/cluster`.
    pub fn status(&self, group: Group) -> GroupCacheStatus {
        let g = self.group(group);
        let caught_up_at = g.recent.lock().expect("cache lock poisoned").caught_up_at;
        GroupCacheStatus {
            stream_index: g.stream_index.load(Relaxed),
            ryw_floor: g.ryw_floor.load(Relaxed),
            fresh: self.is_fresh(group),
            staleness_ms: caught_up_at.map(|t| t.elapsed().as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(body: &str, index: u64) -> Cached {
        Cached { body: Bytes::from(body.to_string()), index }
    }

    /// A cache whose catalog stream is at `index` and vouched fresh now.
    fn fresh_cache(index: u64) -> Cache {
        let cache = Cache::new(1000, 1 << 20, Duration::from_secs(1), true);
        let sample = CommitSample { term: 1, commit: index, at: Instant::now() };
        cache.heartbeat(Group::Catalog, index, &[sample]);
        cache
    }

    #[test]
    fn a_fill_then_a_hit_serves_the_cached_answer() {
        let cache = fresh_cache(10);
        let key = CacheKey::Book(1);
        assert_eq!(cache.lookup(&key, None), Lookup::Miss { min_index: 10 });
        assert!(cache.fill(key.clone(), None, cached("v10", 10)));
        assert_eq!(cache.lookup(&key, None), Lookup::Hit(cached("v10", 10)));
    }

    #[test]
    fn a_fill_keeps_an_entry_that_is_as_fresh_and_replaces_an_older_one() {
        let cache = fresh_cache(10);
        let key = CacheKey::Book(1);
        assert!(cache.fill(key.clone(), None, cached("v12", 12)));
        assert!(cache.fill(key.clone(), None, cached("v11", 11)), "an older fill is accepted, not stored");
        assert_eq!(cache.lookup(&key, None), Lookup::Hit(cached("v12", 12)));
        assert!(cache.fill(key.clone(), None, cached("v13", 13)));
        assert_eq!(cache.lookup(&key, None), Lookup::Hit(cached("v13", 13)));
        let page = Some((10, 0));
        assert!(cache.fill(CacheKey::AllBooks, page, cached("p13", 13)));
        assert!(cache.fill(CacheKey::AllBooks, page, cached("p12", 12)));
        assert_eq!(cache.lookup(&CacheKey::AllBooks, page), Lookup::Hit(cached("p13", 13)));
    }

    #[test]
    fn an_invalidation_removes_the_entry_before_anyone_reads_it_again() {
        let cache = fresh_cache(10);
        let key = CacheKey::Book(1);
        cache.fill(key.clone(), None, cached("v10", 10));
        cache.applied(Group::Catalog, 11, &["book/1".into(), "topic/x".into()]);
        assert_eq!(cache.lookup(&key, None), Lookup::Miss { min_index: 11 });
    }

    #[test]
    fn a_fill_read_before_an_invalidation_is_refused_after_it() {
        // The race: a miss reads book 1 at index 10; before its answer is
        // offered, the invalidation of index 11 (touching book 1) arrives.
        let cache = fresh_cache(10);
        let key = CacheKey::Book(1);
        assert_eq!(cache.lookup(&key, None), Lookup::Miss { min_index: 10 });
        cache.applied(Group::Catalog, 11, &["book/1".into()]);
        assert!(!cache.fill(key.clone(), None, cached("v10", 10)), "stale fill refused");
        assert_eq!(cache.lookup(&key, None), Lookup::Miss { min_index: 11 });
        // An answer read at 11 or later is fine.
        assert!(cache.fill(key.clone(), None, cached("v11", 11)));
        assert_eq!(cache.lookup(&key, None), Lookup::Hit(cached("v11", 11)));
    }

    #[test]
    fn a_fill_overtaken_only_by_unrelated_invalidations_is_kept() {
        let cache = fresh_cache(10);
        cache.applied(Group::Catalog, 11, &["book/2".into()]);
        assert!(cache.fill(CacheKey::Book(1), None, cached("v10", 10)));
        // But a listing of all books is touched by any book.
        assert!(!cache.fill(CacheKey::AllBooks, Some((10, 0)), cached("all10", 10)));
    }

    #[test]
    fn a_fill_older_than_the_remembered_invalidations_is_refused() {
        let cache = fresh_cache(10);
        cache.reset(Group::Catalog, 50);
        assert!(!cache.fill(CacheKey::Book(1), None, cached("v40", 40)), "cannot tell what it missed");
        assert!(cache.fill(CacheKey::Book(1), None, cached("v50", 50)));
    }

    #[test]
    fn read_your_writes_holds_until_the_stream_passes_the_write() {
        let cache = fresh_cache(10);
        let key = CacheKey::Book(1);
        cache.fill(key.clone(), None, cached("v10", 10));
        // A write through this frontend committed at 12; its event has not arrived.
        cache.wrote(Group::Catalog, 12);
        assert_eq!(cache.lookup(&key, None), Lookup::Miss { min_index: 12 });
        cache.applied(Group::Catalog, 12, &["book/1".into()]);
        assert_eq!(cache.lookup(&key, None), Lookup::Miss { min_index: 12 });
        cache.fill(key.clone(), None, cached("v12", 12));
        assert_eq!(cache.lookup(&key, None), Lookup::Hit(cached("v12", 12)));
    }

    #[test]
    fn a_stale_stream_bypasses_and_flushes_the_cache() {
        let cache = Cache::new(1000, 1 << 20, Duration::from_millis(50), true);
        let t0 = Instant::now();
        cache.heartbeat(Group::Catalog, 5, &[CommitSample { term: 1, commit: 5, at: t0 }]);
        cache.watchdog();
        assert!(cache.fill(CacheKey::Book(1), None, cached("v", 5)));
        // The leader commits 9 and the stream stays at 5: no newer vouching.
        let later = [
            CommitSample { term: 1, commit: 5, at: t0 },
            CommitSample { term: 1, commit: 9, at: t0 + Duration::from_millis(30) },
        ];
        cache.heartbeat(Group::Catalog, 5, &later);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.lookup(&CacheKey::Book(1), None), Lookup::Bypass);
        cache.watchdog();
        assert_eq!(cache.stats.flushes.load(Relaxed), 1);
        // The stream catches up: fresh again, but the old entry is gone.
        cache.heartbeat(Group::Catalog, 9, &[CommitSample { term: 1, commit: 9, at: Instant::now() }]);
        assert_eq!(cache.lookup(&CacheKey::Book(1), None), Lookup::Miss { min_index: 9 });
    }

    #[test]
    fn without_a_vouching_leader_nothing_is_served() {
        let cache = Cache::new(1000, 1 << 20, Duration::from_secs(1), true);
        cache.heartbeat(Group::Catalog, 5, &[]);
        assert_eq!(cache.lookup(&CacheKey::Book(1), None), Lookup::Bypass);
        assert!(!cache.fill(CacheKey::Book(1), None, cached("v", 5)));
    }

    #[test]
    fn listings_cache_pages_separately_and_topics_invalidate_them() {
        let cache = fresh_cache(10);
        let key = CacheKey::Topic("ds".into());
        assert!(cache.fill(key.clone(), Some((2, 0)), cached("p1", 10)));
        assert!(cache.fill(key.clone(), Some((2, 2)), cached("p2", 10)));
        assert_eq!(cache.lookup(&key, Some((2, 2))), Lookup::Hit(cached("p2", 10)));
        assert_eq!(cache.lookup(&key, Some((5, 0))), Lookup::Miss { min_index: 10 });
        cache.applied(Group::Catalog, 11, &["book/9".into(), "topic/ds".into()]);
        assert_eq!(cache.lookup(&key, Some((2, 0))), Lookup::Miss { min_index: 11 });
    }

    #[test]
    fn a_buyers_order_history_is_invalidated_by_its_own_key_only() {
        let cache = fresh_cache(10);
        cache.heartbeat(Group::Orders, 3, &[CommitSample { term: 1, commit: 3, at: Instant::now() }]);
        let manar = CacheKey::BuyerOrders("manar".into());
        let ali = CacheKey::BuyerOrders("ali".into());
        assert!(cache.fill(manar.clone(), Some((10, 0)), cached("m", 3)));
        assert!(cache.fill(ali.clone(), Some((10, 0)), cached("a", 3)));
        cache.applied(Group::Orders, 4, &["order/9".into(), "book-orders/1".into(), "buyer-orders/manar".into()]);
        assert_eq!(cache.lookup(&manar, Some((10, 0))), Lookup::Miss { min_index: 4 });
        assert_eq!(cache.lookup(&ali, Some((10, 0))), Lookup::Hit(cached("a", 3)));
    }

    #[test]
    fn an_unknown_or_wildcard_key_flushes_the_whole_group_only() {
        let cache = fresh_cache(10);
        cache.heartbeat(Group::Orders, 3, &[CommitSample { term: 1, commit: 3, at: Instant::now() }]);
        cache.fill(CacheKey::Book(1), None, cached("b", 10));
        cache.fill(CacheKey::Order(1), None, cached("o", 3));
        cache.applied(Group::Catalog, 11, &["catalog/*".into()]);
        assert_eq!(cache.lookup(&CacheKey::Book(1), None), Lookup::Miss { min_index: 11 });
        assert_eq!(cache.lookup(&CacheKey::Order(1), None), Lookup::Hit(cached("o", 3)));
        assert!(!cache.fill(CacheKey::Book(2), None, cached("b2", 10)), "the wildcard overtook it");
    }

    #[test]
    fn the_cache_is_bounded_in_entries() {
        let cache = Cache::new(10, 1 << 20, Duration::from_secs(1), true);
        cache.heartbeat(Group::Catalog, 1, &[CommitSample { term: 1, commit: 1, at: Instant::now() }]);
        for id in 0..100 {
            cache.fill(CacheKey::Book(id), None, cached("x", 1));
        }
        let (entries, _) = cache.size();
        assert!(entries <= 10, "{entries} entries");
        assert!(cache.stats.evictions.load(Relaxed) > 0);
    }

    #[test]
    fn a_disabled_cache_bypasses_everything() {
        let cache = Cache::new(10, 1 << 20, Duration::from_secs(1), false);
        cache.heartbeat(Group::Catalog, 1, &[CommitSample { term: 1, commit: 1, at: Instant::now() }]);
        assert_eq!(cache.lookup(&CacheKey::Book(1), None), Lookup::Bypass);
    }
}
