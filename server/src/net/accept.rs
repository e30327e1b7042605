//! [`Acceptor`]: takes TCP connections off the listener, no more than the connection cap open
//! at once, and backs off when accepting fails for want of resources instead of retrying at
//! once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first pause after a failed accept, doubled on each failure in a row up to
/// [`MAX_BACKOFF`]: the schedule Go's net/http uses.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Refusals at the cap are logged at most this often (with the count since), so that a flood
/// of connections cannot become a flood of log lines.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Connections open and refused, shared with the metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectionCounts {
    slots: Arc<Semaphore>,
    max: usize,
    refused: Arc<AtomicU64>,
    timed_out: Arc<AtomicU64>,
}

impl ConnectionCounts {
    pub fn new(max: usize) -> ConnectionCounts {
        ConnectionCounts {
            slots: Arc::new(Semaphore::new(max)),
            max,
            refused: Arc::default(),
            timed_out: Arc::default(),
        }
    }

    /// Connections open now (accepted and not yet closed).
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Connections closed at once because the cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because they did not finish their TLS handshake, or start speaking
    /// HTTP/2, within the handshake deadline.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    pub(crate) fn count_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection taken off the listener. It holds its place under the cap until dropped, so
/// dropping it with the connection's last use frees the place.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// The accept loop's state: the listener, the cap, and how long to pause after a failure.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    counts: ConnectionCounts,
    /// Failed accepts in a row, and the pause after the last one.
    failures: u64,
    backoff: Duration,
    /// Refusals since the last warning, and when that was.
    unreported: u64,
    warned: Option<Instant>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, counts: ConnectionCounts) -> Acceptor {
        Acceptor {
            listener,
            counts,
            failures: 0,
            backoff: Duration::ZERO,
            unreported: 0,
            warned: None,
        }
    }

    /// The next connection under the cap. A connection beyond the cap is closed as soon as it
    /// is accepted: its client fails at once (UNAVAILABLE) and may try another server, rather
    /// than waiting in the listen backlog until it times out.
    pub async fn next(&mut self) -> Accepted {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    self.failed(err).await;
                    continue;
                }
            };
            if self.failures > 0 {
                tracing::info!(
                    failures = self.failures,
                    "accepting connections again after failed accepts"
                );
                self.failures = 0;
                self.backoff = Duration::ZERO;
            }
            match Arc::clone(&self.counts.slots).try_acquire_owned() {
                Ok(slot) => return Accepted { stream, peer, slot },
                Err(_) => {
                    drop(stream);
                    self.counts.refused.fetch_add(1, Ordering::Relaxed);
                    self.refused(peer);
                }
            }
        }
    }

    /// A failed accept. One about the connection alone (its client gave up before it was
    /// accepted) is skipped; any other, most often EMFILE or ENFILE (out of file descriptors),
    /// would fail again at once, so the loop pauses, longer each time in a row, rather than
    /// burn a core while the sockets it needs stay taken.
    async fn failed(&mut self, err: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            err.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            tracing::debug!(%err, "a connection closed before it was accepted");
            return;
        }
        self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        if self.failures == 0 {
            tracing::warn!(
                %err,
                "cannot accept connections; retrying with a growing pause (is the open-files limit, ulimit -n, too low for --max-connections?)"
            );
        }
        self.failures += 1;
        tokio::time::sleep(self.backoff).await;
    }

    fn refused(&mut self, peer: SocketAddr) {
        self.unreported += 1;
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                %peer,
                refused = self.unreported,
                limit = self.counts.max,
                "connection refused: the server has --max-connections open"
            );
            self.unreported = 0;
            self.warned = Some(Instant::now());
        }
    }
}
