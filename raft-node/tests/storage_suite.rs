//! openraft's storage test suite, run against the RocksDB log store and state
//! machine of each group.

use std::sync::Arc;

use bazar_node::catalog::{Catalog, CatalogTypes};
use bazar_node::orders::{Orders, OrdersTypes};
use bazar_node::sm::{RaftSm, SnapshotStore, StateMachine};
use bazar_node::store::Store;
use bazar_node::store::log::LogStore;
use bazar_node::watch::EventHub;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

/// Builds a fresh store in a temporary directory per test; the directory
/// lives as long as the store (the suite holds the guard).
struct Builder<S>(std::marker::PhantomData<S>);

impl<S: StateMachine> StoreBuilder<S::C, LogStore<S::C>, RaftSm<S>, tempfile::TempDir> for Builder<S> {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<S::C>, RaftSm<S>), StorageError<S::C>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        let snapshots = SnapshotStore::open(dir.path().join("snapshots"), S::GROUP).expect("snapshot dir");
        let log = LogStore::<S::C>::new(store.clone(), S::GROUP);
        let sm = RaftSm::<S>::new(store, snapshots, Arc::new(EventHub::new(0)));
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_store_passes_openraft_storage_suite() -> Result<(), StorageError<CatalogTypes>> {
    Suite::test_all(Builder::<Catalog>(Default::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_store_passes_openraft_storage_suite() -> Result<(), StorageError<OrdersTypes>> {
    Suite::test_all(Builder::<Orders>(Default::default())).await
}
