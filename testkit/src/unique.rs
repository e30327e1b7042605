//! Names no other test can have, in this process or any other: cluster tokens and key prefixes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `<pid>-<counter>-<nanos>`: the counter separates calls within this process, the pid separates
/// processes running at the same time, and the clock separates this process from an earlier one
/// that had the same pid.
pub(crate) fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{}-{count}-{nanos}", std::process::id())
}

/// A key prefix of its own for one test on a shared etcd (`/jsonkv-test/<pid>-<counter>-<nanos>/`):
/// keys under it, and watches of it, see no other test's.
pub fn unique_prefix() -> String {
    format!("/jsonkv-test/{}/", unique_id())
}
