//! [`Lessor`]: when each lease of the embedded store expires. One ordered set of deadlines
//! for every lease, so an idle lease costs an entry in it and no timer of its own; one thread
//! ([`spawn_expiry_thread`]) sleeps until the earliest deadline and ends what is due.
//!
//! The lessor holds the leases as planned: a grant enters it when planned and an end leaves it
//! when planned, so a put checks its lease here, and a keep-alive needs no other lock. After a
//! restart every lease starts a full TTL again (nothing here is logged): holders get time to
//! come back, and a lease nobody renews still expires.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::lease::{LeaseId, Ttl};

/// How many due leases the expiry thread takes at a time before ending them: each end takes
/// the view's write lock on its own, so writers interleave with a mass expiry.
const DUE_AT_ONCE: usize = 1024;

#[derive(Debug, Default)]
pub struct Lessor {
    /// Each live lease's TTL and deadline.
    leases: HashMap<LeaseId, (Ttl, Instant)>,
    /// The same deadlines, in order: the earliest is first.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    /// Set when the backend goes: the expiry thread exits.
    closed: bool,
}

impl Lessor {
    pub fn contains(&self, lease: LeaseId) -> bool {
        self.leases.contains_key(&lease)
    }

    /// Adds a lease whose TTL runs from `now`.
    pub fn grant(&mut self, lease: LeaseId, ttl: Ttl, now: Instant) {
        self.remove(lease);
        let deadline = now + ttl.duration();
        self.leases.insert(lease, (ttl, deadline));
        self.deadlines.insert((deadline, lease));
    }

    /// Restarts the lease's TTL from `now`; its TTL, or `None` if it is not live.
    pub fn renew(&mut self, lease: LeaseId, now: Instant) -> Option<Ttl> {
        let (ttl, deadline) = self.leases.get_mut(&lease)?;
        self.deadlines.remove(&(*deadline, lease));
        *deadline = now + ttl.duration();
        self.deadlines.insert((*deadline, lease));
        Some(*ttl)
    }

    /// Takes the lease out; whether it was live.
    pub fn remove(&mut self, lease: LeaseId) -> bool {
        match self.leases.remove(&lease) {
            Some((_, deadline)) => {
                self.deadlines.remove(&(deadline, lease));
                true
            }
            None => false,
        }
    }

    /// Whether the lease is live and its deadline has passed at `now`.
    pub fn is_due(&self, lease: LeaseId, now: Instant) -> bool {
        self.leases
            .get(&lease)
            .is_some_and(|(_, deadline)| *deadline <= now)
    }

    /// The lease's TTL and the time left at `now`.
    pub fn remaining(&self, lease: LeaseId, now: Instant) -> Option<(Ttl, Duration)> {
        let (ttl, deadline) = self.leases.get(&lease)?;
        Some((*ttl, deadline.saturating_duration_since(now)))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Every live lease, in id order.
    pub fn ids(&self) -> Vec<LeaseId> {
        let mut ids: Vec<_> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Makes the live leases exactly `applied` (after a failed write threw away what was
    /// planned): one it lacks starts a full TTL from `now`, one it has keeps its deadline.
    pub fn reset_to(&mut self, applied: impl Iterator<Item = (LeaseId, Ttl)>, now: Instant) {
        let applied: HashMap<LeaseId, Ttl> = applied.collect();
        for lease in self.ids() {
            if !applied.contains_key(&lease) {
                self.remove(lease);
            }
        }
        for (lease, ttl) in applied {
            if !self.contains(lease) {
                self.grant(lease, ttl, now);
            }
        }
    }

    /// Up to `max` leases due at `now`, earliest first.
    fn due(&self, now: Instant, max: usize) -> Vec<LeaseId> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(max)
            .map(|(_, lease)| *lease)
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }
}

/// The lessor and what wakes the expiry thread when an earlier deadline comes in.
#[derive(Debug, Default)]
pub struct Expiry {
    pub lessor: Mutex<Lessor>,
    wake: Condvar,
}

impl Expiry {
    /// Tells the expiry thread the deadlines changed (a grant may be due before what it
    /// sleeps for).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Lets the expiry thread exit.
    pub fn close(&self) {
        self.lessor.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Runs expiry on its own thread until [`Expiry::close`]: sleeps until the earliest deadline,
/// then hands `expire` the leases due, a batch at a time. `expire` checks again, under the
/// locks it plans the end with, that each is still due (a keep-alive may have come meanwhile).
pub fn spawn_expiry_thread(
    expiry: Arc<Expiry>,
    expire: impl Fn(LeaseId) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("jsonkv-expiry".into())
        .spawn(move || loop {
            let due = {
                let mut lessor = expiry.lessor.lock();
                loop {
                    if lessor.closed {
                        return;
                    }
                    let now = Instant::now();
                    match lessor.next_deadline() {
                        None => expiry.wake.wait(&mut lessor),
                        Some(deadline) if deadline > now => {
                            expiry.wake.wait_for(&mut lessor, deadline - now);
                        }
                        Some(_) => break lessor.due(now, DUE_AT_ONCE),
                    }
                }
            };
            for lease in due {
                expire(lease);
            }
        })
        .expect("can spawn the expiry thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    #[test]
    fn leases_come_due_in_deadline_order_and_renewal_moves_them() {
        let t0 = Instant::now();
        let secs = |n| Ttl::seconds(n).unwrap();
        let mut lessor = Lessor::default();
        lessor.grant(id(1), secs(10), t0);
        lessor.grant(id(2), secs(5), t0);
        lessor.grant(id(3), secs(20), t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(lessor.due(at(4), 10), []);
        assert_eq!(lessor.due(at(10), 10), [id(2), id(1)]);
        assert_eq!(lessor.due(at(10), 1), [id(2)]);
        assert_eq!(lessor.renew(id(2), at(8)), Some(secs(5)));
        assert_eq!(lessor.due(at(10), 10), [id(1)], "renewed until 13");
        assert!(lessor.is_due(id(2), at(13)) && !lessor.is_due(id(2), at(12)));
        assert_eq!(
            lessor.remaining(id(3), at(15)),
            Some((secs(20), Duration::from_secs(5)))
        );
        assert!(lessor.remove(id(1)) && !lessor.remove(id(1)));
        assert_eq!(lessor.renew(id(1), at(1)), None);
        assert_eq!(
            lessor.deadlines.len(),
            lessor.leases.len(),
            "one deadline per lease"
        );
        lessor.reset_to([(id(3), secs(20)), (id(4), secs(1))].into_iter(), at(30));
        assert_eq!(lessor.ids(), [id(3), id(4)]);
        assert_eq!(
            lessor.due(at(31), 10),
            [id(3), id(4)],
            "3 kept its deadline"
        );
    }
}
