//! How fresh a client's reads and watches are: the revision floor that gives read-your-writes
//! across the servers of a cluster (and the store it belongs to), linearizable reads, and telling
//! a server that has not reached the floor apart from one that is down, or one of another store.

use std::sync::{Arc, Mutex};

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One client's read settings. Clones share the floor, so a write acknowledged through any clone
/// of a [`crate::Client`] raises it for all of them.
#[derive(Debug, Clone)]
pub(crate) struct Consistency {
    floor: Arc<Mutex<Floor>>,
    /// Whether reads and watches send the floor as `min_revision`.
    read_your_writes: bool,
    /// Whether get and list ask for a linearizable read.
    linearizable: bool,
}

/// The highest revision of the writes this client saw acknowledged (or was told of), and the
/// store it belongs to once a write's answer has named it.
#[derive(Debug, Default)]
struct Floor {
    revision: i64,
    store_id: Option<String>,
}

impl Floor {
    /// The floor's store is now `store_id`. If it was another one, the floor starts again from
    /// nothing: the old store's revisions mean nothing to this one. (A floor no server had
    /// named a store for is taken to be this store's.)
    fn move_to(&mut self, store_id: &str) {
        match self.store_id.as_deref() {
            Some(old) if old == store_id => return,
            Some(old) => {
                tracing::warn!(
                    old_store = old,
                    new_store = store_id,
                    dropped_floor = self.revision,
                    "the client's writes and reads now meet another store; its revision floor starts again"
                );
                self.revision = 0;
            }
            None => {}
        }
        self.store_id = Some(store_id.to_owned());
    }
}

/// What a read sends so that its server waits for the client's writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MinRevision {
    pub(crate) revision: i64,
    /// Empty when unknown.
    pub(crate) store_id: String,
}

impl Consistency {
    pub(crate) fn new(read_your_writes: bool) -> Self {
        Consistency {
            floor: Arc::default(),
            read_your_writes,
            linearizable: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floor> {
        self.floor.lock().expect("never poisoned")
    }

    pub(crate) fn floor(&self) -> i64 {
        self.lock().revision
    }

    /// Raises the floor to `revision` (a revision given by hand, of the same store); a lower
    /// revision changes nothing.
    pub(crate) fn observe(&self, revision: i64) {
        let mut floor = self.lock();
        floor.revision = floor.revision.max(revision);
    }

    /// A write acknowledged at `revision` by a server of the store `store_id` (if it said). A
    /// store other than the floor's starts the floor again: the old store's revisions mean
    /// nothing to this one.
    pub(crate) fn observe_write(&self, revision: i64, store_id: Option<&str>) {
        let mut floor = self.lock();
        if let Some(store_id) = store_id {
            floor.move_to(store_id);
        }
        floor.revision = floor.revision.max(revision);
    }

    /// The server serves `store_id`, which is not the floor's store: the floor's writes are not
    /// there (an in-memory server restarted empty, data replaced), so no server can reach it.
    /// It starts again from nothing, on that store; unless it already has (another call saw the
    /// same refusal, and a write since may have raised the new floor).
    pub(crate) fn store_changed(&self, store_id: &str) {
        self.lock().move_to(store_id);
    }

    /// The `min_revision` to send with a read or a watch: the floor and its store, or 0 (no
    /// wait) when read-your-writes is off.
    pub(crate) fn min_revision(&self) -> MinRevision {
        if !self.read_your_writes {
            return MinRevision::default();
        }
        let floor = self.lock();
        MinRevision {
            revision: floor.revision,
            store_id: floor.store_id.clone().unwrap_or_default(),
        }
    }

    pub(crate) fn linearizable(&self) -> bool {
        self.linearizable
    }

    /// The same settings and the same shared floor, with linearizable reads on.
    pub(crate) fn with_linearizable_reads(&self) -> Self {
        Consistency {
            linearizable: true,
            ..self.clone()
        }
    }
}

/// The response header that names the store a response's revisions belong to (on writes and
/// watch streams).
pub(crate) const STORE_ID_HEADER: &str = "jsonkv-store-id";

/// The store a response's headers name, if its server said.
pub(crate) fn store_of(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get(STORE_ID_HEADER)
        .and_then(|id| id.to_str().ok())
        .map(str::to_owned)
}

/// The store a server serves, when it refused a request for carrying another store's revisions
/// (FAILED_PRECONDITION with a `google.rpc.ErrorInfo` of reason `STORE_MISMATCH`).
pub(crate) fn other_store(status: &Status) -> Option<String> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    let info = status.get_details_error_info()?;
    (info.reason == "STORE_MISMATCH")
        .then(|| info.metadata.get("store_id").cloned())
        .flatten()
}

/// Whether a server refused a read or watch because its view had not reached the `min_revision`
/// within its wait limit: UNAVAILABLE with a `google.rpc.ErrorInfo` of reason
/// `REVISION_NOT_REACHED`.
pub(crate) fn is_behind(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status
            .get_details_error_info()
            .is_some_and(|info| info.reason == "REVISION_NOT_REACHED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    #[test]
    fn the_floor_only_rises_and_is_shared_by_clones() {
        let consistency = Consistency::new(true);
        let clone = consistency.with_linearizable_reads();
        consistency.observe(7);
        clone.observe(3);
        assert_eq!((consistency.floor(), clone.floor()), (7, 7));
        assert!(clone.linearizable() && !consistency.linearizable());
        assert_eq!(Consistency::new(false).min_revision().revision, 0);
    }

    #[test]
    fn a_write_to_another_store_starts_the_floor_again() {
        let consistency = Consistency::new(true);
        consistency.observe_write(9, Some("a"));
        consistency.observe_write(4, Some("a"));
        consistency.observe(6);
        assert_eq!(consistency.min_revision().revision, 9);
        assert_eq!(consistency.min_revision().store_id, "a");
        consistency.observe_write(2, Some("b"));
        assert_eq!(
            (consistency.floor(), consistency.min_revision().store_id),
            (2, "b".into())
        );
        consistency.store_changed("c");
        assert_eq!(
            (consistency.floor(), consistency.min_revision().store_id),
            (0, "c".into())
        );
        // A server too old to name its store leaves the floor's store as it was.
        consistency.observe_write(3, None);
        assert_eq!(
            (consistency.floor(), consistency.min_revision().store_id),
            (3, "c".into())
        );
        // A second refusal naming the same store leaves a floor raised since on it.
        consistency.store_changed("c");
        assert_eq!(consistency.floor(), 3);
    }

    fn refusal(code: Code, reason: &str) -> Status {
        Status::with_error_details(
            code,
            "this server has not reached revision 12 within 5s",
            ErrorDetails::with_error_info(reason, "jsonkv.dev", HashMap::new()),
        )
    }

    #[test]
    fn only_the_floor_refusal_counts_as_behind() {
        assert!(is_behind(&refusal(
            Code::Unavailable,
            "REVISION_NOT_REACHED"
        )));
        assert!(!is_behind(&Status::unavailable(
            "this server has not reached revision 12 within 5s"
        )));
        assert!(!is_behind(&refusal(Code::Unavailable, "SOMETHING_ELSE")));
        assert!(!is_behind(&refusal(Code::Internal, "REVISION_NOT_REACHED")));
    }
}
