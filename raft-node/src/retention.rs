//! Retention of idempotency keys: what a buy leaves behind besides its
//! order is kept for a window (`--idempotency-retention`, default 24 h),
//! then purged from both groups.
//!
//! A buy leaves, under its key, a reservation in the catalog (`r` key) and
//! an index entry in the orders (`k` key, with `x` and `e`). Within the
//! window a retry with the key finds them and returns the one order.
//! After it, both are removed and the key is unknown: a retry is a new buy.
//! The orders themselves, and their book and buyer history, stay.
//!
//! # The two steps
//! The orders leader runs [`purge_expired`]. Every round it lists, from its
//! replica of the orders at applied index `a`, the settled buys whose
//! `created_at` is older than `now - window` (its own clock; the time goes
//! into the commands, never read in apply), then:
//!
//! 1. **Purge** ([`CatalogCommand::Purge`]) the reservations of those buys
//!    in the catalog, each named by key *and* reservation index, with the
//!    fence `a`. It commits at catalog index `P`.
//! 2. **Forget** ([`OrdersCommand::Forget`]) their keys in the orders,
//!    carrying `P`.
//!
//! A crash between the two leaves keys the orders still know and the
//! catalog no longer does; the next round lists them again, and purging a
//! reservation already gone is a no-op.
//!
//! # Why a retry never takes stock twice, nor gets a free order
//! Two things could go wrong while the groups disagree:
//!
//! - **Stock taken twice**: the catalog forgot the key, and a request that
//!   believes the buy is not settled reserves again. A request reserves
//!   only after looking at the orders and not finding the key settled; it
//!   sends the index of that view (`seen`) with the reservation. Every buy
//!   purged in step 1 was settled at index `a`, so a request that looked at
//!   `a` or later found it settled and never reserves; one that looked
//!   before `a` may have seen it pending, and its new reservation is
//!   refused once the purge is applied (`seen < fence`:
//!   [`CatalogResponse::Stale`]). A refused request looks again.
//! - **A free order**: the orders forgot the key, a retry places a new
//!   order under it, and the old reservation, still in the catalog, settles
//!   it as confirmed without taking stock. Step 1 commits before step 2 is
//!   proposed, so by then the old reservation is gone for every later
//!   reserve. What remains are settlements of the old reservation already
//!   read but not yet written: each carries the catalog index at which its
//!   reservation was seen (`catalog_seen`), and once step 2 is applied a
//!   settlement seen before `P` may not create or settle an order
//!   ([`OrdersResponse::Stale`]); the resumer reads it again.
//!
//! And a new order under a forgotten key is only placed by a request that
//! looked at the orders after step 2 (`Place` decided on an older view is
//! refused the same way), so it is created after the purge: two orders
//! under one key are at least one window apart.
//!
//! Pending buys are never purged: only settled orders enter the list (the
//! `e` rows), and the state machines check it again.
//!
//! # What a retry gets
//! Within the window, the one order of the key. After it, the key is
//! unknown and the retry is a new buy (`201` with a new order, or `409`),
//! as payment APIs treat an expired idempotency key. In between, while a
//! round is under way, the key is still known to the orders and the retry
//! gets the old order. The window is measured by the orders leader's clock
//! from the buy's `created_at`, which is also the order's; a skew between
//! the nodes' clocks shortens or lengthens it by that skew.
//!
//! # Compatibility
//! The fences are 0 until the first purge, and until then proposers send
//! `seen = 0`, which keeps every command in the layout older versions read
//! (see [`crate::compat`]). The first purge happens one window after the
//! first buy settled by this version, so a rolling upgrade finished within
//! the window never shows an older node a command it cannot read.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::{CatalogCommand, CatalogResponse};
use crate::config::PlantedBug;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::orders::{ExpiredKey, Orders, OrdersCommand, OrdersResponse};

/// Keys purged per round, at most: one catalog and one orders entry of a
/// few hundred kilobytes.
pub const ROUND: usize = 4096;

/// How often the orders leader looks for expired keys: an eighth of the
/// window, between 100 ms and 10 s. Keys live at most the window plus this.
pub fn interval(window: Duration) -> Duration {
    (window / 8).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// The `created_at` before which buys are past the window at `now`, in the
/// format orders store (RFC 3339, milliseconds, `Z`), which sorts in time
/// order.
pub fn cutoff(now: chrono::DateTime<chrono::Utc>, window: Duration) -> String {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let at = now.checked_sub_signed(window).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// While this node leads the orders group, purges the keys of settled buys
/// past the window, in both groups. Runs until the node shuts down.
pub async fn purge_expired(node: Arc<Node>) {
    let window = node.config.idempotency_retention;
    let mut tick = tokio::time::interval(interval(window));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Rounds follow each other at once while full: a backlog (after a
        // long outage of the leader) drains at the speed of the commits.
        loop {
            if !node.orders.is_leader() || node.shutdown.is_cancelled() {
                break;
            }
            match purge_round(&node, &cutoff(chrono::Utc::now(), window)).await {
                Ok(n) if n == ROUND => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired idempotency keys failed; the next round retries");
                    break;
                }
            }
        }
    }
}

/// One round: purges in the catalog, then forgets in the orders, the keys
/// of settled buys created before `cutoff`. Returns how many keys it
/// listed.
pub async fn purge_round(node: &Node, cutoff: &str) -> Result<usize> {
    let _round = node.retention.round.lock().await;
    let (fence, expired) = {
        let view = node.orders.view();
        (view.applied_index()?, Orders::expired(&view, cutoff, ROUND)?)
    };
    if expired.is_empty() {
        return Ok(0);
    }
    let listed = expired.len();
    let deadline = Instant::now() + node.request_timeout();
    let catalog_index = if node.config.planted_bug == Some(PlantedBug::ForgetKeepsReservations) {
        // The planted bug: the reservations stay.
        node.catalog.view().applied_index()?
    } else {
        let keys = expired.iter().map(|e| (e.key.clone(), e.reservation_index)).collect();
        let purged = node.catalog.write_anywhere(CatalogCommand::Purge { fence, keys }, deadline).await?;
        if let CatalogResponse::Purged { reservations } = purged.response {
            node.retention.reservations_purged.fetch_add(reservations, Relaxed);
        }
        purged.index
    };
    let keys = expired.into_iter().map(|ExpiredKey { key, order_id, .. }| (key, order_id)).collect();
    let forgot = node.orders.write(OrdersCommand::Forget { catalog_index, keys }, deadline).await?;
    match forgot.response {
        OrdersResponse::Forgot { keys } => {
            node.retention.keys_forgotten.fetch_add(keys, Relaxed);
            node.retention.rounds.fetch_add(1, Relaxed);
            tracing::debug!(keys, cutoff, "forgot expired idempotency keys");
            Ok(listed)
        }
        other => Err(Error::Internal(format!("unexpected answer to forget: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_sorts_with_stored_times_and_the_interval_is_bounded() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:00.000Z").unwrap().to_utc();
        assert_eq!(cutoff(now, Duration::from_secs(86_400)), "2026-12-04T10:00:00.000Z");
        assert_eq!(cutoff(now, Duration::from_millis(2_500)), "2026-12-05T09:59:57.500Z");
        assert!(cutoff(now, Duration::from_secs(1)).as_str() > "2026-12-05T09:59:58.999Z");
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_millis(250));
        assert_eq!(interval(Duration::from_millis(200)), Duration::from_millis(100));
        assert_eq!(interval(Duration::from_secs(86_400)), Duration::from_secs(10));
    }
}

/// The two state machines driven by hand through every interleaving of a
/// purge round with retries that matters.
#[cfg(test)]
mod protocol {
    use bazar_api::{Book, OrderStatus};

    use crate::catalog::{Catalog, CatalogCommand, CatalogResponse, Reservation};
    use crate::orders::{Orders, OrdersCommand, OrdersResponse, Settlement};
    use crate::sm::testing::TestDb;

    const OLD: &str = "2026-12-01T10:00:00.000Z";
    const CUTOFF: &str = "2026-12-02T10:00:00.000Z";
    const NEW: &str = "2026-12-03T10:00:00.000Z";

    /// Both groups in one database, one book of 100 copies at 10 cents.
    struct World {
        db: TestDb,
    }

    impl World {
        fn new() -> World {
            let mut db = TestDb::new();
            let book = Book {
                id: 1,
                isbn: bazar_api::isbn::from_number(1),
                title: "B".into(),
                topic: "t".into(),
                price_cents: 10,
                stock: 100,
            };
            db.apply::<Catalog>(CatalogCommand::Seed { books: vec![book] });
            World { db }
        }

        /// The orders view index a coordinator decides on now.
        fn orders_seen(&self) -> u64 {
            self.db.index()
        }

        fn place(&mut self, key: &str, created_at: &str, seen: u64) -> OrdersResponse {
            let place = OrdersCommand::Place {
                key: key.into(),
                book_id: 1,
                quantity: 1,
                created_at: created_at.into(),
                buyer: None,
                seen,
            };
            self.db.apply::<Orders>(place).response
        }

        /// Reserves and returns the response and the catalog index it was applied at.
        fn reserve(&mut self, key: &str, created_at: &str, seen: u64) -> (CatalogResponse, u64) {
            let reserve = CatalogCommand::Reserve {
                key: key.into(),
                book_id: 1,
                quantity: 1,
                created_at: created_at.into(),
                buyer: None,
                seen,
            };
            let response = self.db.apply::<Catalog>(reserve).response;
            (response, self.db.index())
        }

        fn settle(&mut self, key: &str, r: &Reservation, catalog_seen: u64) -> OrdersResponse {
            self.db.apply::<Orders>(Settlement::of(key, r).into_record(catalog_seen)).response
        }

        /// A whole buy, as `crate::buy` runs it when nothing interferes.
        fn buy(&mut self, key: &str, created_at: &str) -> (u64, Reservation) {
            let seen = self.orders_seen();
            let placed = self.place(key, created_at, seen);
            let (reserved, at) = self.reserve(key, created_at, seen);
            let CatalogResponse::Reservation(r) = reserved else { panic!("reserve: {reserved:?}") };
            let OrdersResponse::Order { order, .. } = self.settle(key, &r, at) else { panic!("settle") };
            assert_eq!(order.status, OrderStatus::Confirmed);
            self.db.apply::<Catalog>(CatalogCommand::Claim { keys: vec![key.into()] });
            let _ = placed;
            (order.order_id, r)
        }

        /// Step 1 of a round with the keys expired before `CUTOFF`;
        /// returns the catalog index it committed at and the listed keys.
        fn purge(&mut self) -> (u64, Vec<super::ExpiredKey>) {
            let fence = self.orders_seen();
            let expired = Orders::expired(&self.db.view::<Orders>(), CUTOFF, 100).unwrap();
            let keys = expired.iter().map(|e| (e.key.clone(), e.reservation_index)).collect();
            self.db.apply::<Catalog>(CatalogCommand::Purge { fence, keys });
            (self.db.index(), expired)
        }

        /// Step 2.
        fn forget(&mut self, catalog_index: u64, expired: &[super::ExpiredKey]) -> OrdersResponse {
            let keys = expired.iter().map(|e| (e.key.clone(), e.order_id)).collect();
            self.db.apply::<Orders>(OrdersCommand::Forget { catalog_index, keys }).response
        }

        fn round(&mut self) {
            let (p, expired) = self.purge();
            self.forget(p, &expired);
        }

        fn stock(&self) -> u64 {
            Catalog::book(&self.db.view::<Catalog>(), 1).unwrap().unwrap().stock
        }

        fn order_of(&self, key: &str) -> Option<u64> {
            Orders::by_key(&self.db.view::<Orders>(), key).unwrap().map(|o| o.order_id)
        }

        fn has_reservation(&self, key: &str) -> bool {
            Catalog::reservation(&self.db.view::<Catalog>(), key).unwrap().is_some()
        }
    }

    #[test]
    fn a_round_forgets_only_settled_buys_past_the_window_in_both_groups() {
        let mut w = World::new();
        w.buy("old", OLD);
        w.buy("young", NEW);
        // A buy past the window but still pending: placed and reserved, not settled.
        let seen = w.orders_seen();
        w.place("pending", OLD, seen);
        w.reserve("pending", OLD, seen);
        let (p, expired) = w.purge();
        assert_eq!(expired.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["old"]);
        assert_eq!(w.forget(p, &expired), OrdersResponse::Forgot { keys: 1 });
        let table = [("old", false, false), ("young", true, true), ("pending", true, true)];
        for (key, order_kept, reservation_kept) in table {
            assert_eq!(w.order_of(key).is_some(), order_kept, "{key}: key in the orders");
            assert_eq!(w.has_reservation(key), reservation_kept, "{key}: reservation in the catalog");
        }
        // The order itself stays, with its history.
        let orders = Orders::list(&w.db.view::<Orders>(), &bazar_api::OrderFilter::Book(1), 0, 10).unwrap().0;
        assert_eq!(orders.len(), 3);
        assert_eq!(Orders::key_counts(&w.db.view::<Orders>()).unwrap(), (1, 1), "young retained, old forgotten");
        assert_eq!(Catalog::reservation_counts(&w.db.view::<Catalog>()).unwrap(), (2, 1));
        // Forgetting a pending order's key is refused even if asked.
        let pending = Orders::by_key(&w.db.view::<Orders>(), "pending").unwrap().unwrap();
        w.db.apply::<Orders>(OrdersCommand::Forget {
            catalog_index: p,
            keys: vec![("pending".into(), pending.order_id)],
        });
        assert!(w.order_of("pending").is_some(), "a pending buy is never forgotten");
    }

    /// Confirmed orders of the book, and whether stock was taken once for each.
    fn conserved(w: &World) -> (u64, bool) {
        let orders = Orders::list(&w.db.view::<Orders>(), &bazar_api::OrderFilter::Book(1), 0, 100).unwrap().0;
        let confirmed = orders.iter().filter(|o| o.status == OrderStatus::Confirmed).count() as u64;
        (confirmed, 100 - w.stock() == confirmed)
    }

    /// A retry that looked while the buy was pending, and whose proposals
    /// land after each step of a round: it never takes stock a second time
    /// nor makes a second order from what it saw; looking again after the
    /// round, it is a new buy.
    #[test]
    fn a_retry_decided_before_a_round_is_refused_once_the_round_passes_it() {
        // (after which steps the retry's proposals land, what its place and reserve get)
        let table: [(&str, bool, bool, &str, &str); 3] = [
            ("after the catalog purge", true, false, "old order", "stale"),
            ("after both steps", true, true, "stale", "stale"),
            ("before the round", false, false, "old order", "old reservation"),
        ];
        for (when, purged, forgotten, place_gets, reserve_gets) in table {
            let mut w = World::new();
            let seen = w.orders_seen();
            w.place("k", OLD, seen);
            let (CatalogResponse::Reservation(r), at) = w.reserve("k", OLD, seen) else { panic!() };
            // The retry looks now: the order is pending.
            let retry_seen = w.orders_seen();
            assert!(w.order_of("k").is_some());
            let OrdersResponse::Order { order: first, .. } = w.settle("k", &r, at) else { panic!() };
            w.db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["k".into()] });
            let (p, expired) = if purged { w.purge() } else { (0, Vec::new()) };
            if forgotten {
                w.forget(p, &expired);
            }
            let placed = match w.place("k", NEW, retry_seen) {
                OrdersResponse::Order { order, existing: true } if order.order_id == first.order_id => "old order",
                OrdersResponse::Stale => "stale",
                other => panic!("{when}: place got {other:?}"),
            };
            let reserved = match w.reserve("k", NEW, retry_seen).0 {
                CatalogResponse::Reservation(again) if again == r => "old reservation",
                CatalogResponse::Stale => "stale",
                other => panic!("{when}: reserve got {other:?}"),
            };
            assert_eq!((placed, reserved), (place_gets, reserve_gets), "{when}");
            assert_eq!(conserved(&w), (1, true), "{when}: one order, stock taken once");
            if forgotten {
                // Looking again, the key is unknown: a new buy.
                let (second, _) = w.buy("k", NEW);
                assert_ne!(second, first.order_id, "{when}");
                assert_eq!(conserved(&w), (2, true), "{when}: the new buy takes its own stock");
            }
        }
    }

    #[test]
    fn a_retry_between_the_two_steps_gets_the_old_order_and_after_them_a_new_buy() {
        let mut w = World::new();
        let (first, _) = w.buy("k", OLD);
        let (p, expired) = w.purge();
        assert!(!w.has_reservation("k"));
        assert_eq!(w.order_of("k"), Some(first), "the orders still know the key: a retry gets its order");
        w.forget(p, &expired);
        assert_eq!(w.order_of("k"), None);
        let (second, _) = w.buy("k", NEW);
        assert_ne!(second, first);
        assert_eq!(conserved(&w), (2, true));
    }

    #[test]
    fn a_settlement_of_a_purged_reservation_cannot_decide_a_new_order_under_the_key() {
        let mut w = World::new();
        let seen = w.orders_seen();
        w.place("k", OLD, seen);
        let (CatalogResponse::Reservation(old), at) = w.reserve("k", OLD, seen) else { panic!() };
        // Settled by one path; another settlement of it is still on its way.
        w.settle("k", &old, at);
        w.db.apply::<Catalog>(CatalogCommand::Claim { keys: vec!["k".into()] });
        w.round();
        // A new buy under the key places its order; then the late settlement lands.
        let fresh = w.orders_seen();
        let OrdersResponse::Order { order: placed, existing: false } = w.place("k", NEW, fresh) else { panic!() };
        assert_eq!(w.settle("k", &old, at), OrdersResponse::Stale);
        let pending = Orders::order(&w.db.view::<Orders>(), placed.order_id).unwrap().unwrap();
        assert_eq!(pending.status, OrderStatus::Pending, "not confirmed by the old reservation");
        // Its own reservation settles it.
        let (CatalogResponse::Reservation(new), at) = w.reserve("k", NEW, fresh) else { panic!() };
        assert_ne!(new.index, old.index);
        let OrdersResponse::Order { order, .. } = w.settle("k", &new, at) else { panic!() };
        assert_eq!(order.order_id, placed.order_id);
        assert_eq!(conserved(&w), (2, true));
    }

    #[test]
    fn commands_in_the_old_layout_are_accepted_until_the_first_purge_and_stale_after() {
        let mut w = World::new();
        w.buy("old", OLD);
        // seen = 0: what earlier versions write, and what proposers send before any purge.
        assert!(matches!(w.reserve("a", NEW, 0).0, CatalogResponse::Reservation(_)));
        assert!(matches!(w.place("a", NEW, 0), OrdersResponse::Order { existing: false, .. }));
        w.round();
        assert_eq!(w.reserve("b", NEW, 0).0, CatalogResponse::Stale);
        assert_eq!(w.place("b", NEW, 0), OrdersResponse::Stale);
        assert!(matches!(w.reserve("a", NEW, 0).0, CatalogResponse::Reservation(_)), "a known key still answers");
        assert!(Catalog::fenced(&w.db.view::<Catalog>()).unwrap() && Orders::fenced(&w.db.view::<Orders>()).unwrap());
    }

    #[test]
    fn a_purge_replayed_after_the_key_was_bought_again_keeps_the_new_reservation() {
        let mut w = World::new();
        w.buy("k", OLD);
        let fence = w.orders_seen();
        let (p, expired) = w.purge();
        w.forget(p, &expired);
        w.buy("k", NEW);
        // The same purge again (a round retried after a lost answer).
        let keys = expired.iter().map(|e| (e.key.clone(), e.reservation_index)).collect();
        let again = w.db.apply::<Catalog>(CatalogCommand::Purge { fence, keys }).response;
        assert_eq!(again, CatalogResponse::Purged { reservations: 0 });
        assert!(w.has_reservation("k"), "the new buy's reservation stays");
    }

    /// What the planted bug `ForgetKeepsReservations` does: the orders
    /// forget the key but the catalog keeps the reservation. A retry then
    /// gets a new order confirmed by the old reservation, with no stock
    /// taken: the conservation check here sees it.
    #[test]
    fn forgetting_a_key_whose_reservation_stays_confirms_an_order_for_free() {
        let mut w = World::new();
        w.buy("k", OLD);
        let expired = Orders::expired(&w.db.view::<Orders>(), CUTOFF, 100).unwrap();
        let at = w.db.index();
        w.forget(at, &expired);
        w.buy("k", NEW);
        assert_eq!(conserved(&w), (2, false), "two confirmed orders, one copy taken");
    }

    /// A follower that still holds a purged buy's rows (it was behind)
    /// installs the leader's snapshot taken after the round: the rows are
    /// gone there too, and the two replicas are identical.
    #[tokio::test]
    async fn rows_purged_before_a_snapshot_do_not_come_back_when_it_is_installed() {
        use crate::sm::snapshot::{Builder, SnapshotStore, install};
        let mut leader = World::new();
        let mut follower = World::new();
        for w in [&mut leader, &mut follower] {
            w.buy("old", OLD);
            w.buy("young", NEW);
        }
        leader.round();
        assert!(follower.has_reservation("old") && follower.order_of("old").is_some());
        for (group, digest_of) in [
            (
                bazar_api::Group::Catalog,
                (|db: &TestDb| db.view::<Catalog>().digest().unwrap()) as fn(&TestDb) -> String,
            ),
            (bazar_api::Group::Orders, |db: &TestDb| db.view::<Orders>().digest().unwrap()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let snapshots = SnapshotStore::open(dir.path().join("leader"), group).unwrap();
            let theirs = SnapshotStore::open(dir.path().join("follower"), group).unwrap();
            let snapshot = match group {
                bazar_api::Group::Catalog => Builder::<Catalog>::new(leader.db.store.clone(), snapshots).build().await,
                bazar_api::Group::Orders => Builder::<Orders>::new(leader.db.store.clone(), snapshots).build().await,
            }
            .unwrap();
            let data = crate::sm::SnapshotData::open(snapshot.snapshot.path.clone()).unwrap();
            match group {
                bazar_api::Group::Catalog => install::<Catalog>(&follower.db.store, &theirs, &snapshot.meta, data),
                bazar_api::Group::Orders => install::<Orders>(&follower.db.store, &theirs, &snapshot.meta, data),
            }
            .unwrap();
            assert_eq!(digest_of(&follower.db), digest_of(&leader.db), "{group}");
        }
        assert!(!follower.has_reservation("old") && follower.order_of("old").is_none(), "purged rows stay purged");
        assert!(follower.has_reservation("young") && follower.order_of("young").is_some());
        assert_eq!(Orders::key_counts(&follower.db.view::<Orders>()).unwrap(), (1, 1));
    }
}
