//! `MemoryStorage`: the `--in-memory` backend. Persists nothing; a restart starts empty.

use std::sync::Arc;

use super::{new_store_id, Recovered, Storage};
use crate::database::Event;
use crate::error::Error;

#[derive(Debug, Default)]
pub struct MemoryStorage;

impl Storage for MemoryStorage {
    fn recover(&mut self) -> Result<Recovered, Error> {
        // Nothing survives, so each start is a new store.
        Ok(Recovered {
            store_id: new_store_id(),
            ..Recovered::default()
        })
    }

    fn append(&mut self, _events: &[Arc<Event>]) -> Result<(), Error> {
        Ok(())
    }

    fn persists(&self) -> bool {
        false
    }
}
