//! The client's one error type, [`Error`], and the single place where a gRPC status from the
//! server becomes one of its variants.

use std::error::Error as StdError;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Everything that can go wrong talking to a jsonkv server. Each `Display` is one line that names
/// the problem, fit to print after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A connection option is unusable (an unreadable CA file, a token no HTTP header can
    /// carry, a CA for a plaintext address).
    #[error("{0}")]
    Config(String),

    /// No server could be reached (`addr` lists every address tried), or an address is not a
    /// valid URI.
    #[error("cannot connect to {addr}: {}", root_cause(.source))]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },

    /// NOT_FOUND where the API has no `Option` to say so.
    #[error("not found: {}", one_line(.0))]
    NotFound(String),

    /// A compare-and-swap did not match: the key's mod revision is `current_mod_revision` (0 when
    /// the key is absent). Nothing was changed.
    #[error(
        "precondition failed on key {key}: expected mod revision {expected_mod_revision}, \
         current mod revision is {current_mod_revision}"
    )]
    PreconditionFailed {
        key: String,
        expected_mod_revision: i64,
        current_mod_revision: i64,
    },

    /// A JSON Patch does not apply to the key's document as it is: a `test` operation failed,
    /// or a path names a member or index that does not exist. `operation` is the failing
    /// operation's index in the patch, `path` its JSON Pointer. Nothing was changed.
    #[error("patch does not apply to key {key}: operation {operation} at path {path:?}: {kind}")]
    PatchFailed {
        key: String,
        kind: PatchFailure,
        operation: usize,
        path: String,
    },

    /// The server rejected the request's input (empty or oversized key, oversized value, ...).
    #[error("invalid argument: {}", one_line(.0))]
    InvalidArgument(String),

    /// A watch could not resume: the server serves another store than the one whose revisions
    /// the watch had (an in-memory server restarted empty, data replaced), or its store lost
    /// changes the watch had seen (data restored from an older copy). Resuming would skip
    /// changes; start a new watch from a snapshot.
    #[error("store changed: {}", one_line(.0))]
    StoreChanged(String),

    /// A watch asked for (or fell behind to) a revision the server no longer keeps.
    #[error("revision compacted: the oldest revision still in history is {oldest_revision}")]
    OutOfRange { oldest_revision: i64 },

    /// A value could not be turned into JSON, or the JSON of a stored value does not fit the
    /// type it was asked as.
    #[error("JSON error for key {key}: {}", one_line(&.source.to_string()))]
    Json {
        key: String,
        source: serde_json::Error,
    },

    /// The server sent something the contract rules out (a response without its value, an event
    /// before the snapshot, ...).
    #[error("protocol error: {}", one_line(.0))]
    Protocol(String),

    /// A local file could not be written (a backup's); the message names it.
    #[error("{0}")]
    File(String),

    /// Any other status: transport failures, UNAVAILABLE, INTERNAL, PERMISSION_DENIED, ...
    #[error("{}", status_line(.0))]
    Status(Status),
}

/// Why a JSON Patch does not apply ([`Error::PatchFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatchFailure {
    /// A `test` operation found another value (reason `PATCH_TEST_FAILED`).
    #[error("test failed")]
    TestFailed,
    /// A path names a member or index that does not exist (reason `PATCH_PATH_NOT_FOUND`).
    #[error("path not found")]
    PathNotFound,
}

impl From<Status> for Error {
    /// Maps a status by its code, reading the structured google.rpc.ErrorInfo detail the contract
    /// promises for FAILED_PRECONDITION and OUT_OF_RANGE. A status whose detail is missing or
    /// malformed stays an [`Error::Status`] rather than inventing revisions.
    fn from(status: Status) -> Self {
        match status.code() {
            Code::NotFound => Error::NotFound(status.message().to_owned()),
            Code::InvalidArgument => Error::InvalidArgument(status.message().to_owned()),
            Code::FailedPrecondition => {
                precondition_failed(&status).unwrap_or_else(|| Error::Status(status))
            }
            Code::OutOfRange => {
                revision_compacted(&status).unwrap_or_else(|| Error::Status(status))
            }
            _ => Error::Status(status),
        }
    }
}

fn precondition_failed(status: &Status) -> Option<Error> {
    let info = status.get_details_error_info()?;
    if info.reason == "STORE_MISMATCH" || info.reason == "STORE_BEHIND" {
        return Some(Error::StoreChanged(status.message().to_owned()));
    }
    let number = |name: &str| info.metadata.get(name)?.parse::<i64>().ok();
    let patch_failure = match info.reason.as_str() {
        "REVISION_MISMATCH" => None,
        "PATCH_TEST_FAILED" => Some(PatchFailure::TestFailed),
        "PATCH_PATH_NOT_FOUND" => Some(PatchFailure::PathNotFound),
        _ => return None,
    };
    if let Some(kind) = patch_failure {
        return Some(Error::PatchFailed {
            key: info.metadata.get("key")?.clone(),
            kind,
            operation: info.metadata.get("operation")?.parse().ok()?,
            path: info.metadata.get("path")?.clone(),
        });
    }
    Some(Error::PreconditionFailed {
        key: info.metadata.get("key")?.clone(),
        expected_mod_revision: number("expected_mod_revision")?,
        current_mod_revision: number("current_mod_revision")?,
    })
}

fn revision_compacted(status: &Status) -> Option<Error> {
    let info = status.get_details_error_info()?;
    if info.reason != "REVISION_COMPACTED" {
        return None;
    }
    let oldest_revision = info.metadata.get("oldest_revision")?.parse().ok()?;
    Some(Error::OutOfRange { oldest_revision })
}

/// `unavailable: <message> (<cause>)`: the status' code in words, its message, and for a status
/// made locally from a transport failure, the underlying cause (e.g. "connection refused").
fn status_line(status: &Status) -> String {
    let mut line = code_name(status.code()).to_owned();
    if !status.message().is_empty() {
        line.push_str(": ");
        line.push_str(&one_line(status.message()));
    }
    if let Some(source) = status.source() {
        let cause = root_cause(source);
        if !line.contains(&cause) {
            line.push_str(&format!(" ({cause})"));
        }
    }
    line
}

/// The most useful words in an error chain: the kind of the innermost OS-level I/O error when it
/// has a specific one ("connection refused"), else the innermost message. Transport errors wrap that
/// cause in layers ("transport error" > "tcp connect error" > ...) that say nothing to a user.
pub(crate) fn root_cause(err: &(dyn StdError + 'static)) -> String {
    if let Some(explained) = tls_failure(err) {
        return explained;
    }
    let mut innermost = err;
    let mut io_kind = None;
    let mut current = Some(err);
    while let Some(e) = current {
        innermost = e;
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // An I/O error that wraps another (rustls' "invalid peer certificate: ...") says
            // more in its message than in its kind ("invalid data").
            if io.get_ref().is_none() && !matches!(io.kind(), std::io::ErrorKind::Other) {
                io_kind = Some(io.kind());
            }
        }
        current = e.source();
    }
    match io_kind {
        // ErrorKind's Display is a short lowercase phrase; the io::Error's own message would add
        // an OS error number that helps nobody.
        Some(kind) if kind.to_string() != "uncategorized error" => kind.to_string(),
        _ => one_line(&innermost.to_string()),
    }
}

/// A TLS failure in the chain, said in words that tell a person what to do: rustls' own
/// ("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))") names the rule broken,
/// not the fix.
fn tls_failure(err: &(dyn StdError + 'static)) -> Option<String> {
    use tokio_rustls::rustls::Error as Tls;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<Tls>() {
            return Some(explain_tls(tls));
        }
        // An alert the server sent reaches us as text: tokio-rustls keeps only the message of
        // an error met while reading. (And io::Error's source() skips what it wraps.)
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(inner) = wrapped {
            if let Some(tls) = inner.downcast_ref::<Tls>() {
                return Some(explain_tls(tls));
            }
            if let Some(alert) = inner.to_string().strip_prefix("received fatal alert: ") {
                return explain_alert(alert).map(str::to_owned);
            }
        }
        current = e.source();
    }
    None
}

fn explain_tls(tls: &tokio_rustls::rustls::Error) -> String {
    use tokio_rustls::rustls::{CertificateError as Cert, Error as Tls};
    match tls {
        Tls::InvalidCertificate(Cert::UnknownIssuer) => "the server's certificate is not signed \
            by a CA this client trusts: give that CA's certificate with --ca FILE (ca_file in \
            the Rust client)"
            .into(),
        Tls::InvalidCertificate(Cert::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            "the server presents a CA certificate as its own (what a plain `openssl req -x509` \
             makes): sign a certificate for the server with that CA, or make it with \
             `-addext basicConstraints=critical,CA:FALSE`"
                .into()
        }
        Tls::InvalidCertificate(name @ Cert::NotValidForNameContext { .. }) => {
            format!("the server's {name}: connect by a name it holds, or reissue it for this one")
        }
        Tls::InvalidCertificate(Cert::NotValidForName) => "the server's certificate is not \
            valid for the name connected to: connect by a name it holds, or reissue it for this \
            one"
        .into(),
        Tls::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the server's certificate has expired: renew it".into()
        }
        Tls::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet: is a clock wrong?".into()
        }
        Tls::AlertReceived(alert) => explain_alert(&format!("{alert:?}"))
            .map_or_else(|| format!("TLS: {tls}"), str::to_owned),
        other => format!("TLS: {other}"),
    }
}

/// What the server meant by a TLS alert (named as rustls names them) it ended the handshake
/// with, for the alerts a misconfigured client gets.
fn explain_alert(alert: &str) -> Option<&'static str> {
    Some(match alert {
        "CertificateRequired" => {
            "the server requires a client certificate (mutual TLS): give one with --cert FILE \
             --key FILE (identity_files in the Rust client)"
        }
        "UnknownCA" | "BadCertificate" => {
            "the server refused this client's certificate: it is not signed by a CA the server \
             trusts (its --tls-client-ca)"
        }
        "CertificateExpired" => "the server refused this client's certificate: it has expired",
        _ => return None,
    })
}

/// Whether `status` is the transport's report of a connection the server closed (or reset)
/// under a call, rather than an answer.
pub(crate) fn closed_connection(status: &Status) -> bool {
    let Some(source) = status.source() else {
        return false;
    };
    let cause = root_cause(source);
    ["connection closed", "broken pipe", "connection reset"]
        .iter()
        .any(|words| cause.contains(words) || status.message().contains(words))
}

/// `status` (a closed connection), saying what a server that closes a TLS connection at once
/// most often means. With TLS 1.3 the server's "certificate required" alert can arrive after
/// the call was sent, and then the transport reports only the closed connection.
pub(crate) fn perhaps_certificate_required(status: &Status) -> Status {
    Status::new(
        status.code(),
        format!(
            "the server closed the connection ({}); if it requires a client certificate \
             (mutual TLS), give one with --cert FILE --key FILE (identity_files in the Rust \
             client)",
            status
                .source()
                .map_or_else(|| one_line(status.message()), root_cause)
        ),
    )
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The gRPC code in lowercase words; `Code`'s own Display is a sentence meant for logs.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "server unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

impl Error {
    /// The gRPC code behind this error, when it came from a status.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::NotFound(_) => Some(Code::NotFound),
            Error::PreconditionFailed { .. }
            | Error::PatchFailed { .. }
            | Error::StoreChanged(_) => Some(Code::FailedPrecondition),
            Error::InvalidArgument(_) => Some(Code::InvalidArgument),
            Error::OutOfRange { .. } => Some(Code::OutOfRange),
            Error::Status(status) => Some(status.code()),
            Error::Config(_)
            | Error::Connect { .. }
            | Error::Json { .. }
            | Error::Protocol(_)
            | Error::File(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::{ErrorDetails, StatusExt};

    fn with_info(code: Code, reason: &str, metadata: &[(&str, &str)]) -> Status {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Status::with_error_details(
            code,
            "message",
            ErrorDetails::with_error_info(reason, "jsonkv.dev", metadata),
        )
    }

    #[test]
    fn revision_mismatch_detail_becomes_precondition_failed() {
        let status = with_info(
            Code::FailedPrecondition,
            "REVISION_MISMATCH",
            &[
                ("key", "k"),
                ("expected_mod_revision", "0"),
                ("current_mod_revision", "17"),
            ],
        );
        match Error::from(status) {
            Error::PreconditionFailed {
                key,
                expected_mod_revision: 0,
                current_mod_revision: 17,
            } if key == "k" => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn patch_details_become_patch_failed() {
        for (reason, kind) in [
            ("PATCH_TEST_FAILED", PatchFailure::TestFailed),
            ("PATCH_PATH_NOT_FOUND", PatchFailure::PathNotFound),
        ] {
            let status = with_info(
                Code::FailedPrecondition,
                reason,
                &[("key", "k"), ("operation", "2"), ("path", "/a/0")],
            );
            let err = Error::from(status);
            match &err {
                Error::PatchFailed {
                    key,
                    kind: got,
                    operation: 2,
                    path,
                } if key == "k" && *got == kind && path == "/a/0" => {}
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(err.code(), Some(Code::FailedPrecondition));
        }
        let err = Error::from(with_info(
            Code::FailedPrecondition,
            "PATCH_TEST_FAILED",
            &[("key", "k"), ("operation", "0"), ("path", "/n")],
        ));
        assert_eq!(
            err.to_string(),
            "patch does not apply to key k: operation 0 at path \"/n\": test failed"
        );
    }

    #[test]
    fn a_store_detail_becomes_store_changed() {
        for reason in ["STORE_MISMATCH", "STORE_BEHIND"] {
            let status = with_info(Code::FailedPrecondition, reason, &[("store_id", "s1")]);
            let err = Error::from(status);
            assert!(matches!(err, Error::StoreChanged(_)), "{reason}: {err:?}");
            assert_eq!(err.code(), Some(Code::FailedPrecondition));
        }
    }

    #[test]
    fn compacted_detail_becomes_out_of_range() {
        let status = with_info(
            Code::OutOfRange,
            "REVISION_COMPACTED",
            &[("oldest_revision", "42")],
        );
        assert!(matches!(
            Error::from(status),
            Error::OutOfRange {
                oldest_revision: 42
            }
        ));
    }

    #[test]
    fn status_without_detail_stays_a_status() {
        let err = Error::from(Status::failed_precondition("no detail"));
        assert!(matches!(err, Error::Status(_)));
        assert_eq!(err.to_string(), "failed precondition: no detail");
    }

    #[test]
    fn messages_are_one_line() {
        let err = Error::from(Status::invalid_argument("key must\nnot be empty"));
        assert_eq!(err.to_string(), "invalid argument: key must not be empty");
        let err = Error::from(Status::unavailable("shutting down"));
        assert_eq!(err.to_string(), "server unavailable: shutting down");
    }
}
