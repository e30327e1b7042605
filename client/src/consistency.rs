//! How fresh a client's reads and watches are: the revision floor that gives read-your-writes
//! across the servers of a cluster, linearizable reads, and telling a server that has not reached
//! the floor apart from one that is down.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One client's read settings. Clones share the floor, so a write acknowledged through any clone
/// of a [`crate::Client`] raises it for all of them.
#[derive(Debug, Clone)]
pub(crate) struct Consistency {
    /// The highest revision of the writes this client saw acknowledged (or was told of).
    floor: Arc<AtomicI64>,
    /// Whether reads and watches send the floor as `min_revision`.
    read_your_writes: bool,
    /// Whether get and list ask for a linearizable read.
    linearizable: bool,
}

impl Consistency {
    pub(crate) fn new(read_your_writes: bool) -> Self {
        Consistency {
            floor: Arc::default(),
            read_your_writes,
            linearizable: false,
        }
    }

    // Relaxed is enough: the floor guards no other memory, and coherence alone makes a load that
    // happens after a write's acknowledgement see its revision (or a higher one).

    pub(crate) fn floor(&self) -> i64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Raises the floor to `revision`; a lower revision changes nothing.
    pub(crate) fn observe(&self, revision: i64) {
        self.floor.fetch_max(revision, Ordering::Relaxed);
    }

    /// The `min_revision` to send with a read or a watch: the floor, or 0 (no wait) when
    /// read-your-writes is off.
    pub(crate) fn min_revision(&self) -> i64 {
        if self.read_your_writes {
            self.floor()
        } else {
            0
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
        assert_eq!(Consistency::new(false).min_revision(), 0);
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
