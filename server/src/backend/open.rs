//! Starting the backend the config asks for: the one place that chooses among them.

use std::sync::Arc;

use super::embedded::{CommitStats, Embedded};
use super::etcd::Etcd;
use super::Backend;
use crate::config::{BackendConfig, Config};
use crate::error::Error;
use crate::storage::{DiskStorage, MemoryStorage, Storage};
use crate::store_id::StoreId;
use crate::view::View;

/// A backend, started: the store it serves and the view it applies changes to.
pub struct Started {
    pub id: StoreId,
    pub view: Arc<View>,
    pub backend: Arc<dyn Backend>,
    /// The commit thread's measurements (embedded store only).
    pub commit_stats: Option<Arc<CommitStats>>,
}

/// Starts the backend `config.backend` asks for.
pub async fn start(config: &Config) -> Result<Started, Error> {
    match &config.backend {
        BackendConfig::InMemory => embedded(config, Box::new(MemoryStorage)),
        BackendConfig::Disk(disk) => embedded(config, Box::new(DiskStorage::open(disk)?)),
        BackendConfig::Etcd(etcd) => {
            let (id, view, backend) = Etcd::connect(config, etcd).await?;
            Ok(Started {
                id,
                view,
                backend: Arc::new(backend),
                commit_stats: None,
            })
        }
    }
}

/// Starts the embedded backend on `storage`, recovering what it holds.
pub fn embedded(config: &Config, storage: Box<dyn Storage>) -> Result<Started, Error> {
    let stats = Arc::new(CommitStats::default());
    let (id, view, backend) = Embedded::open(config, storage, Arc::clone(&stats))?;
    Ok(Started {
        id,
        view,
        backend: Arc::new(backend),
        commit_stats: Some(stats),
    })
}
