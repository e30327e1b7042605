//! `MemoryStorage`: the `--in-memory` backend. Persists nothing; a restart starts empty.

use super::{Recovered, Storage};
use crate::database::Change;
use crate::error::Error;
use crate::store_id::StoreId;

#[derive(Debug, Default)]
pub struct MemoryStorage;

impl Storage for MemoryStorage {
    fn recover(&mut self) -> Result<Recovered, Error> {
        // Nothing survives, so each start is a new store.
        Ok(Recovered::empty(StoreId::random()))
    }

    fn append(&mut self, _changes: &[Change]) -> Result<(), Error> {
        Ok(())
    }

    fn persists(&self) -> bool {
        false
    }
}
