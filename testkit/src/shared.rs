//! [`shared_etcd`]: the one single-member etcd of a test process, for the many tests that only need
//! an etcd and keep apart by key prefix ([`crate::unique_prefix`]).

use std::sync::OnceLock;

use crate::EtcdCluster;

/// This process's shared single-member etcd, started by the first call (which waits until it is
/// healthy; later calls wait for that one). It is never dropped: its watchdog kills it and removes
/// its files when the process exits. Do not compact it: other tests may be watching old
/// revisions.
///
/// It can be called from any test, async or not: the start runs on a thread and runtime of its
/// own, because no client or task may outlive the runtime of the test that happened to come first.
pub fn shared_etcd() -> &'static EtcdCluster {
    static SHARED: OnceLock<EtcdCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let start = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build a runtime to start the shared etcd")
                .block_on(EtcdCluster::start(1))
        });
        // A failed start already panicked with the log's path; pass that panic on.
        start
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
