//! etcd's errors as jsonkv's: unreachable or leaderless etcd is UNAVAILABLE (retry), anything
//! else is reported as it came, with the cause a status alone may not say.

use crate::error::Error;
use crate::lease::LeaseId;
use crate::tls;

/// An etcd failure as a jsonkv error: unreachable or leaderless etcd is UNAVAILABLE (retry),
/// anything else is reported as it came.
pub fn etcd_error(what: &str, err: etcd_client::Error) -> Error {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted => Error::Unavailable(format!(
                "etcd could not serve a {what}: {}",
                status_text(&status)
            )),
            // "etcdserver: request is too large": the value passes our limit but not etcd's
            // --max-request-bytes.
            Code::InvalidArgument => Error::invalid(
                "value",
                format!("etcd refused the {what}: {}", status.message()),
            ),
            // "mvcc: database space exceeded": etcd's quota, its full disk.
            Code::ResourceExhausted => {
                Error::Storage(format!(
                    "write not stored: etcd refused the {what}: {}",
                    status.message()
                ))
            }
            Code::PermissionDenied | Code::Unauthenticated => Error::Internal(format!(
                "etcd denied the {what}: {} (is etcd auth on? --etcd-user's role needs read and write on jsonkv's prefix)",
                status.message()
            )),
            _ => Error::Internal(format!("etcd {what} failed: {}", status.message())),
        },
        etcd_client::Error::TransportError(err) => Error::Unavailable(format!(
            "cannot reach etcd for a {what}: {}",
            tls::error_chain(&err)
        )),
        etcd_client::Error::IoError(err) => {
            Error::Unavailable(format!("cannot reach etcd for a {what}: {err}"))
        }
        other => Error::Unavailable(format!("etcd {what} failed: {other}")),
    }
}

/// An etcd failure of a request that names `lease`: etcd's "requested lease not found" is
/// NOT_FOUND about the lease and "lease already exists" ALREADY_EXISTS; anything else as
/// [`etcd_error`] says.
pub fn lease_error(what: &str, lease: LeaseId, err: etcd_client::Error) -> Error {
    use tonic::Code;
    // etcd-client's own error for a keep-alive that etcd answered with no TTL.
    if let etcd_client::Error::LeaseKeepAliveError(why) = &err {
        if why.contains("lease not found") {
            return Error::LeaseNotFound(lease.get());
        }
    }
    if let etcd_client::Error::GRpcStatus(status) = &err {
        match status.code() {
            Code::NotFound if status.message().contains("lease not found") => {
                return Error::LeaseNotFound(lease.get())
            }
            Code::FailedPrecondition if status.message().contains("lease already exists") => {
                return Error::LeaseExists(lease.get())
            }
            _ => {}
        }
    }
    etcd_error(what, err)
}

/// The tonic error inside an etcd client error, if any: etcd's error type does not give it as
/// its source, so [`jsonkv::retry::never_sent`] is handed this instead.
pub fn tonic_error(err: &etcd_client::Error) -> Option<&(dyn std::error::Error + 'static)> {
    match err {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(err) => Some(err),
        _ => None,
    }
}

/// A status's message and, for one made on this side (a connection that failed or was closed),
/// its root cause, which the message may not say ("operation was canceled").
pub fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut root = None;
    let mut source = status.source();
    while let Some(cause) = source {
        root = Some(cause.to_string());
        source = cause.source();
    }
    match root {
        Some(cause) if !status.message().contains(&cause) => {
            format!("{}: {cause}", status.message())
        }
        _ => status.message().to_owned(),
    }
}
