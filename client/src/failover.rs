//! Several servers behind one client: every call goes to the server in use, and moves on to the
//! next one in the list when that server cannot answer, so that a client outlives any one server.
//! Which failures mean a server cannot answer ([`is_retryable`]) is decided here too.
//!
//! Why not tonic's `Channel::balance_list`: its balancer counts an endpoint whose connection
//! failed as ready (the failure is stored and handed to the next call on it), so it keeps sending
//! a share of the calls to a dead server, and each of those fails with "connection refused"
//! instead of going to a live one. Staying on one server also keeps a client's successive reads on
//! one view of the keyspace, which only moves forward; spreading them over the servers of a
//! cluster could show a newer state, then an older one.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonkv::retry::never_sent;
use tonic::{Code, Status};

use crate::consistency::is_behind;
use crate::rpc::Rpc;

/// The servers of one client, in the order given, and which one is in use. Clones share both.
#[derive(Debug, Clone)]
pub(crate) struct Servers {
    servers: Arc<[Server]>,
    current: Arc<AtomicUsize>,
    /// How long one call may take over all the servers it tries ([`ClientBuilder::timeout`]).
    ///
    /// [`ClientBuilder::timeout`]: crate::ClientBuilder::timeout
    timeout: Option<Duration>,
    /// TLS without a client certificate: a connection the server closes at once may be a
    /// server that requires one, and the error should say so.
    without_certificate: bool,
}

/// One server: its address, for logs, and the generated client on its own channel.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: String,
    pub(crate) rpc: Rpc,
}

/// What a call may do to the keyspace, which decides when it may be sent to another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Get, list, opening a watch: changes nothing, so after any failure that is the server's
    /// (down, shutting down, a broken connection, behind the floor) the next server is asked.
    Read,
    /// Insert, delete: a server may have applied it even if its answer was lost, so it goes to
    /// another server only when it provably never left: the connection could not be made.
    Write,
}

impl Servers {
    /// `servers` must not be empty; `current` is the one to use first.
    pub(crate) fn new(
        servers: Vec<Server>,
        current: usize,
        timeout: Option<Duration>,
        without_certificate: bool,
    ) -> Self {
        Servers {
            servers: servers.into(),
            current: Arc::new(AtomicUsize::new(current)),
            timeout,
            without_certificate,
        }
    }

    /// Runs `attempt` on the server in use; when that server fails in a way `kind` allows, on the
    /// next, and so on, trying each server at most once. Returns the first answer that is not
    /// such a failure, or the last failure; or DEADLINE_EXCEEDED when the client's timeout runs
    /// out first, after which the server the call was waiting on is no longer the one in use.
    pub(crate) async fn call<T, Attempt, Fut>(
        &self,
        kind: CallKind,
        attempt: Attempt,
    ) -> Result<T, Status>
    where
        Attempt: FnMut(Rpc) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        // The server the call is waiting on, for when the timeout runs out.
        let trying = AtomicUsize::new(self.current.load(Ordering::Relaxed));
        let Some(limit) = self.timeout else {
            return self
                .each_in_turn(kind, attempt, &trying)
                .await
                .map_err(|status| self.explained(status));
        };
        match tokio::time::timeout(limit, self.each_in_turn(kind, attempt, &trying)).await {
            Ok(result) => result.map_err(|status| self.explained(status)),
            Err(_elapsed) => {
                // A server that holds calls without answering is left like one that is down.
                // (Not `current`'s server: another call may have moved on from it meanwhile.)
                let index = trying.load(Ordering::Relaxed);
                tracing::debug!(
                    server = self.servers[index].addr,
                    ?limit,
                    "no answer within the client's timeout; moving on"
                );
                self.move_past(index);
                Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms (the client's timeout)",
                    limit.as_millis()
                )))
            }
        }
    }

    /// `status`, or when the server closed a TLS connection this client made without a
    /// certificate, a status that says what that most often means.
    fn explained(&self, status: Status) -> Status {
        if self.without_certificate && crate::error::closed_connection(&status) {
            crate::error::perhaps_certificate_required(&status)
        } else {
            status
        }
    }

    /// [`Servers::call`] without the timeout; keeps the index of the server it is asking in
    /// `trying`.
    async fn each_in_turn<T, Attempt, Fut>(
        &self,
        kind: CallKind,
        mut attempt: Attempt,
        trying: &AtomicUsize,
    ) -> Result<T, Status>
    where
        Attempt: FnMut(Rpc) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut left = self.servers.len();
        loop {
            // Relaxed: the index guards no other memory; a stale one only costs one more try.
            let index = self.current.load(Ordering::Relaxed);
            trying.store(index, Ordering::Relaxed);
            let server = &self.servers[index];
            let result = attempt(server.rpc.clone()).await;
            left -= 1;
            match result {
                Err(status) if left > 0 && may_try_another(kind, &status) => {
                    tracing::debug!(
                        server = server.addr,
                        code = ?status.code(),
                        message = status.message(),
                        "server failed; trying the next one"
                    );
                    self.move_past(index);
                }
                result => return result,
            }
        }
    }

    /// Makes the server after `index` the one in use, unless another call has already moved on
    /// from `index`: concurrent failures of one server must not skip the next.
    fn move_past(&self, index: usize) {
        let next = (index + 1) % self.servers.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn may_try_another(kind: CallKind, status: &Status) -> bool {
    never_sent(status) || (kind == CallKind::Read && (is_retryable(status) || is_behind(status)))
}

/// Whether a failed call is worth making again, on this server or the next: the server went away
/// or the connection broke. A read then moves on to the next server, and a broken watch is
/// re-issued (`reconnect.rs`).
///
/// UNAVAILABLE, UNKNOWN, ABORTED, CANCELLED and DEADLINE_EXCEEDED (no answer in time: the
/// server is stuck or overloaded) are; so is INTERNAL when tonic made it locally
/// from a broken HTTP/2 connection (it then carries a source error, or says "h2 protocol error"),
/// as opposed to an INTERNAL the server sent, which retrying would only repeat. An UNAVAILABLE
/// saying the server has not reached the revision floor is not: every server was already asked
/// ([`Servers::call`]) and each waited its limit, and retrying forever would hide a floor that
/// cannot be met (one from another cluster, or a server that stopped following etcd).
pub(crate) fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => !is_behind(status),
        // DEADLINE_EXCEEDED: the client's timeout on opening, or the server's on a call.
        Code::Unknown | Code::Aborted | Code::Cancelled | Code::DeadlineExceeded => true,
        Code::Internal => {
            std::error::Error::source(status).is_some()
                || status.message().starts_with("h2 protocol error")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_internal_errors_are_retryable_but_server_internal_ones_are_not() {
        assert!(!is_retryable(&Status::internal("bug")));
        assert!(is_retryable(&Status::internal(
            "h2 protocol error: broken pipe"
        )));
        assert!(!is_retryable(&Status::invalid_argument("x")));
        assert!(!is_retryable(&Status::out_of_range("x")));
        assert!(is_retryable(&Status::unavailable("x")));
        assert!(!is_retryable(
            &<Status as tonic_types::StatusExt>::with_error_details(
                tonic::Code::Unavailable,
                "has not reached revision 9 in 5s",
                tonic_types::ErrorDetails::with_error_info(
                    "REVISION_NOT_REACHED",
                    "jsonkv.dev",
                    std::collections::HashMap::new()
                ),
            )
        ));
    }
}
