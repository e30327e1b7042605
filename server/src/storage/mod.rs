//! `Storage`: where committed changes go so that they survive a restart. The store calls it
//! from one thread, in revision order; an implementation only has to persist and recover.
//!
//! Two implementations pass the same store-level test suite (`server/tests/it/storage.rs`):
//! - [`MemoryStorage`] (`--in-memory`): keeps nothing; a restart starts empty.
//! - [`DiskStorage`] (`--data-dir`): a checksummed, segmented log plus snapshots, compacted in
//!   the background.

pub mod backup;
pub mod disk;
mod format;
pub mod memory;

use crate::database::{Change, Entry};
use crate::error::Error;
use crate::lease::{LeaseId, Ttl};
use crate::revision::Revision;
use crate::store_id::StoreId;

pub use disk::DiskStorage;
pub use memory::MemoryStorage;

/// The state found on start.
#[derive(Debug)]
pub struct Recovered {
    /// Which store this is: revisions count changes to one store and mean nothing to another,
    /// so a watch resumed on a different one (an in-memory server restarted, a data directory
    /// replaced) must fail instead of skipping changes.
    pub store_id: StoreId,
    /// Live keys as of `snapshot_revision`.
    pub snapshot: Vec<(String, Entry)>,
    /// Leases in force as of `snapshot_revision`.
    pub leases: Vec<(LeaseId, Ttl)>,
    pub snapshot_revision: Revision,
    /// Every change after `snapshot_revision`, in order with no gaps. They also seed the
    /// watch history, so a watch can resume across a restart.
    pub changes: Vec<Change>,
}

impl Recovered {
    /// What a store with nothing stored recovers.
    pub fn empty(store_id: StoreId) -> Recovered {
        Recovered {
            store_id,
            snapshot: Vec::new(),
            leases: Vec::new(),
            snapshot_revision: 0,
            changes: Vec::new(),
        }
    }
}

pub trait Storage: Send + 'static {
    /// Loads what was stored. Called once, before any append.
    fn recover(&mut self) -> Result<Recovered, Error>;

    /// Persists `changes` (consecutive revisions, continuing the last append). When this
    /// returns `Ok`, they survive what the configured [`SyncMode`] promises. On `Err` none of
    /// them may be recovered later.
    fn append(&mut self, changes: &[Change]) -> Result<(), Error>;

    /// Whether `append` keeps anything. If not, the store may skip it: a change then has
    /// nothing to wait for before it is applied.
    fn persists(&self) -> bool {
        true
    }
}
