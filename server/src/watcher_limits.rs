//! [`WatcherLimits`]: open watches counted, per client connection and in total, and refused
//! beyond either limit. (The other limits a client runs into are request validation in
//! `wire.rs`, the request timeout layer, and HTTP/2 and codec settings applied in `server.rs`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::Config;
use crate::error::Error;

/// Counts open watches, in total and per client connection, and refuses one beyond either
/// limit. Cheap to clone; every clone shares the counts.
///
/// A connection is known by its remote address (IP and port), which is unique among the
/// connections open at one time. When a connection closes, its watch streams are dropped and
/// release their counts; a new connection that reuses the port a moment later may briefly find
/// a few still counted.
#[derive(Debug, Clone)]
pub struct WatcherLimits {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_total: usize,
    max_per_connection: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_connection: HashMap<SocketAddr, usize>,
}

/// One open watch's place in the counts, given back on drop. The watch stream holds it, so it
/// is released however the stream ends: by an error, by shutdown, or because the client went
/// away and the stream was dropped.
#[derive(Debug)]
pub struct WatcherPermit {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
}

impl WatcherLimits {
    pub fn new(config: &Config) -> Self {
        WatcherLimits {
            shared: Arc::new(Shared {
                max_total: config.max_watchers,
                max_per_connection: config.max_watchers_per_connection,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// A permit for one more watch from `peer` (`None` when the transport has no address,
    /// which counts only towards the total), or TooManyWatchers.
    pub fn acquire(&self, peer: Option<SocketAddr>) -> Result<WatcherPermit, Error> {
        let shared = &self.shared;
        let mut counts = shared.counts.lock();
        if counts.total >= shared.max_total {
            return Err(Error::TooManyWatchers {
                scope: "on this server",
                limit: shared.max_total,
            });
        }
        if let Some(peer) = peer {
            let mine = counts.per_connection.get(&peer).copied().unwrap_or(0);
            if mine >= shared.max_per_connection {
                return Err(Error::TooManyWatchers {
                    scope: "on this connection",
                    limit: shared.max_per_connection,
                });
            }
            *counts.per_connection.entry(peer).or_insert(0) += 1;
        }
        counts.total += 1;
        Ok(WatcherPermit {
            shared: Arc::clone(shared),
            peer,
        })
    }

    /// Watches open now.
    pub fn active(&self) -> usize {
        self.shared.counts.lock().total
    }
}

impl Drop for WatcherPermit {
    fn drop(&mut self) {
        let mut counts = self.shared.counts.lock();
        counts.total -= 1;
        if let Some(peer) = self.peer {
            if let Some(mine) = counts.per_connection.get_mut(&peer) {
                *mine -= 1;
                // Forget the connection with its last watch, so the map only holds live ones.
                if *mine == 0 {
                    counts.per_connection.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_connection: usize) -> WatcherLimits {
        WatcherLimits::new(&Config {
            max_watchers: total,
            max_watchers_per_connection: per_connection,
            ..Config::default()
        })
    }

    fn peer(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn per_connection_and_total_limits_refuse_and_permits_give_back() {
        let limits = limits(3, 2);
        let a1 = limits.acquire(peer(1)).unwrap();
        let _a2 = limits.acquire(peer(1)).unwrap();
        assert_eq!(
            limits.acquire(peer(1)).unwrap_err(),
            Error::TooManyWatchers {
                scope: "on this connection",
                limit: 2
            }
        );
        let _b1 = limits.acquire(peer(2)).unwrap();
        assert_eq!(
            limits.acquire(peer(3)).unwrap_err(),
            Error::TooManyWatchers {
                scope: "on this server",
                limit: 3
            }
        );
        assert_eq!(limits.active(), 3);
        drop(a1);
        assert_eq!(limits.active(), 2);
        let _a3 = limits.acquire(peer(1)).unwrap();
        assert_eq!(limits.active(), 3);
    }

    #[test]
    fn a_connection_is_forgotten_with_its_last_watch() {
        let limits = limits(10, 10);
        let permits: Vec<_> = (0..5).map(|p| limits.acquire(peer(p)).unwrap()).collect();
        assert_eq!(limits.shared.counts.lock().per_connection.len(), 5);
        drop(permits);
        assert_eq!(limits.shared.counts.lock().per_connection.len(), 0);
        assert_eq!(limits.active(), 0);
    }
}
