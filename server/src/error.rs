//! The server's one error type, and the one place it becomes a gRPC `Status`.
//!
//! Machine-readable facts travel as standard `google.rpc` details (BadRequest, ErrorInfo), so a
//! client in any language can read, say, the current revision of a failed compare-and-swap.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::revision::Revision;
use crate::store_id::StoreId;

/// The `ErrorInfo.domain` of every jsonkv error detail.
pub const ERROR_DOMAIN: &str = "jsonkv.dev";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A request field is invalid; nothing was changed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    /// A value, or what a transaction writes, is over its size limit; nothing was changed.
    /// INVALID_ARGUMENT as any bad field, with ErrorInfo VALUE_TOO_LARGE, so that the HTTP
    /// API can answer 413.
    #[error("invalid {field}: {reason}")]
    TooLarge { field: &'static str, reason: String },

    #[error("key not found: {}", quoted(.0))]
    NotFound(String),

    /// A lease that is not live (never granted, expired or revoked) was named.
    #[error("lease {0} not found (never granted, or it expired or was revoked)")]
    LeaseNotFound(i64),

    /// A grant named a lease that is live already.
    #[error("lease {0} already exists")]
    LeaseExists(i64),

    /// A compare-and-swap precondition failed; nothing was changed.
    #[error("key {} has mod revision {current}, expected {expected}", quoted(key))]
    RevisionMismatch {
        key: String,
        expected: Revision,
        current: Revision,
    },

    /// A patch does not apply to the key's document as it is: a `test` operation failed
    /// (`reason` PATCH_TEST_FAILED), or a path names nothing there (PATCH_PATH_NOT_FOUND).
    /// Nothing was changed.
    #[error("patch of key {} does not apply: operation {operation} at path {path:?} {}", quoted(key), if *.reason == "PATCH_TEST_FAILED" { "found a different value" } else { "names nothing in the document" })]
    PatchDoesNotApply {
        key: String,
        reason: &'static str,
        operation: usize,
        path: String,
    },

    /// On a cluster: a transaction that reads before it writes met concurrent writes to its
    /// keys on every attempt. Nothing was changed.
    #[error("gave up after {0} attempts: other clients kept changing the keys this transaction reads; nothing was changed, retry")]
    Contended(u32),

    /// A watch needs history that was already discarded.
    #[error("revision {requested} is no longer in history; the oldest available is {oldest}")]
    NotInHistory {
        requested: Revision,
        oldest: Revision,
    },

    /// A watcher fell further behind the writers than history reaches back.
    #[error("watch fell behind: events after revision {delivered} are no longer in history (the oldest available is {oldest}); start a new watch")]
    WatcherLagged {
        delivered: Revision,
        oldest: Revision,
    },

    /// A watch's opening snapshot was read so slowly that the changes made since its
    /// revision left history, so the rest of it can no longer be read as of that revision.
    #[error("the snapshot at revision {revision} was read too slowly: changes after it are no longer in history (the oldest available is {oldest}); start a new watch, read faster, or raise --history-size/--history-bytes")]
    SnapshotExpired {
        revision: Revision,
        oldest: Revision,
    },

    /// This server's view was reloaded from etcd because etcd had compacted revisions the
    /// server had not applied yet: the watcher's events after `delivered` cannot be replayed.
    #[error("this server lost track of etcd's history after revision {delivered} (etcd compacted it while the server was catching up); the oldest revision available is {oldest}: start a new watch")]
    ViewReset {
        delivered: Revision,
        oldest: Revision,
    },

    /// A request carried revisions of another store (`expected`): a watch's resume point or
    /// a `min_revision`. This server serves `actual`, whose revisions count other changes.
    #[error("this server serves store {actual}, but the request's revisions are store {expected}'s (the server restarted in memory, or its data was replaced), and mean nothing here: start again from this store (a watch from a snapshot, a read without that min_revision)")]
    StoreMismatch { expected: StoreId, actual: StoreId },

    /// A watch resumed past this store's revision on the embedded store, where every revision
    /// a watcher saw had been applied here: the store lost changes since (a data directory
    /// restored from a backup, say).
    #[error("store {store} is at revision {current}, but the watch had seen revision {seen}: the store lost changes since (its data was restored from an older copy?); resuming would skip changes; watch again from a snapshot")]
    StoreBehind {
        store: StoreId,
        seen: Revision,
        current: Revision,
    },

    #[error("server is shutting down")]
    ShuttingDown,

    /// A read or watch asked for a `min_revision` this server's view did not reach in time.
    #[error("this server has not reached revision {requested} within {waited:?} (it is at {current}); retry, or ask another server")]
    RevisionNotReached {
        requested: Revision,
        current: Revision,
        waited: Duration,
    },

    /// A dependency cannot serve the call right now (etcd unreachable, a view behind a
    /// requested revision); retrying later or elsewhere may succeed.
    #[error("{0}")]
    Unavailable(String),

    /// Storage failed: a write could not be persisted (full disk, I/O error; nothing was
    /// changed, and the message says "write not stored"), or a data directory could not be
    /// opened at start-up. The message says which.
    #[error("{0}")]
    Storage(String),

    /// Stored data failed its checks on start-up.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },

    /// A broken invariant, reported rather than panicking inside a request.
    #[error("internal error: {0}")]
    Internal(String),

    /// The call carried no token, or one the server does not know. (The message never
    /// repeats the token.)
    #[error("{0}")]
    Unauthenticated(&'static str),

    /// The call's token does not allow this method (`who`: which kind of token it is).
    #[error("{who} may not call {method}")]
    PermissionDenied { who: &'static str, method: String },

    /// The call's token is scoped to key prefixes, and the call reaches outside them (or is a
    /// call a scoped token may not make). The message names neither key nor scope.
    #[error("{0}")]
    OutOfScope(&'static str),

    /// Granting one more lease would pass the server's limit; nothing was granted.
    #[error("too many live leases: the limit is {0}; revoke one first")]
    TooManyLeases(usize),

    /// Opening one more watch would pass a limit; nothing was opened.
    #[error("too many open watches {scope}: the limit is {limit}; close one first")]
    TooManyWatchers { scope: &'static str, limit: usize },

    /// The call ran past the server's request timeout. A write may still have been applied.
    #[error("request took longer than the server's limit of {0:?}")]
    DeadlineExceeded(Duration),

    /// A start-up setting is unusable (a malformed tokens file, an unreadable certificate).
    #[error("{0}")]
    Config(String),
}

/// How much of a client's own input a message quotes back: enough to recognise it, never so
/// much that an error outgrows the header that carries it.
pub const QUOTE_CHARS: usize = 128;

/// `text` in quotes for a message, cut to [`QUOTE_CHARS`] characters (saying how long it was).
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// Longest key an ErrorInfo detail carries: a longer one (past a raised --max-key-bytes) is
/// left out, since the caller sent it and the detail travels in a header.
const DETAIL_KEY_BYTES: usize = 1024;

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

/// The canonical name of a gRPC code (`NOT_FOUND`), as metrics label it and the HTTP API
/// names it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = err.to_string();
        match err {
            Error::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            Error::TooLarge { field, reason } => {
                let mut details = ErrorDetails::with_bad_request_violation(field, reason);
                details.set_error_info("VALUE_TOO_LARGE", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) | Error::LeaseNotFound(_) => Status::not_found(message),
            Error::LeaseExists(_) => Status::already_exists(message),
            Error::RevisionMismatch {
                key,
                expected,
                current,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    "REVISION_MISMATCH",
                    ERROR_DOMAIN,
                    HashMap::from_iter(
                        [
                            ("expected_mod_revision".to_owned(), expected.to_string()),
                            ("current_mod_revision".to_owned(), current.to_string()),
                        ]
                        .into_iter()
                        .chain((key.len() <= DETAIL_KEY_BYTES).then(|| ("key".to_owned(), key))),
                    ),
                ),
            ),
            Error::PatchDoesNotApply {
                key,
                reason,
                operation,
                path,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    HashMap::from_iter(
                        [
                            ("operation".to_owned(), operation.to_string()),
                            ("path".to_owned(), path),
                        ]
                        .into_iter()
                        .chain((key.len() <= DETAIL_KEY_BYTES).then(|| ("key".to_owned(), key))),
                    ),
                ),
            ),
            Error::Contended(_) => Status::aborted(message),
            Error::StoreMismatch { actual, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    "STORE_MISMATCH",
                    ERROR_DOMAIN,
                    HashMap::from([("store_id".to_owned(), actual.to_string())]),
                ),
            ),
            Error::StoreBehind { store, current, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    "STORE_BEHIND",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("store_id".to_owned(), store.to_string()),
                        ("current_revision".to_owned(), current.to_string()),
                    ]),
                ),
            ),
            Error::NotInHistory { requested, oldest } => not_in_history(message, requested, oldest),
            Error::WatcherLagged { delivered, oldest }
            | Error::ViewReset { delivered, oldest }
            | Error::SnapshotExpired {
                revision: delivered,
                oldest,
            } => not_in_history(message, delivered + 1, oldest),
            Error::ShuttingDown | Error::Storage(_) | Error::Unavailable(_) => {
                Status::unavailable(message)
            }
            Error::RevisionNotReached {
                requested, current, ..
            } => Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_error_info(
                    "REVISION_NOT_REACHED",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("min_revision".to_owned(), requested.to_string()),
                        ("current_revision".to_owned(), current.to_string()),
                    ]),
                ),
            ),
            Error::Corrupt { .. } => Status::data_loss(message),
            Error::Internal(_) | Error::Config(_) => Status::internal(message),
            Error::Unauthenticated(_) => Status::unauthenticated(message),
            Error::PermissionDenied { .. } | Error::OutOfScope(_) => {
                Status::permission_denied(message)
            }
            Error::TooManyWatchers { .. } | Error::TooManyLeases(_) => {
                Status::resource_exhausted(message)
            }
            Error::DeadlineExceeded(_) => Status::deadline_exceeded(message),
        }
    }
}

/// OUT_OF_RANGE, naming the oldest revision a new watch could start from.
fn not_in_history(message: String, requested: Revision, oldest: Revision) -> Status {
    Status::with_error_details(
        Code::OutOfRange,
        message,
        ErrorDetails::with_error_info(
            "REVISION_COMPACTED",
            ERROR_DOMAIN,
            HashMap::from([
                ("requested_revision".to_owned(), requested.to_string()),
                ("oldest_revision".to_owned(), oldest.to_string()),
            ]),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_client_input_only_up_to_a_bound() {
        assert_eq!(quoted("user/ada"), "\"user/ada\"");
        let long = "é".repeat(10_000);
        let quote = quoted(&long);
        assert!(quote.chars().count() < QUOTE_CHARS + 40, "{quote}");
        assert!(quote.ends_with("... (20000 bytes)"), "{quote}");
        let status = Status::from(Error::NotFound("k".repeat(1 << 20)));
        assert!(status.message().len() < 300, "{}", status.message().len());
        let status = Status::from(Error::RevisionMismatch {
            key: "k".repeat(1 << 20),
            expected: 1,
            current: 2,
        });
        assert!(status.message().len() < 300);
        assert!(status.details().len() < 500, "{}", status.details().len());
    }
}
