//! Leases: a lease is granted with a time to live (TTL), kept alive by its holder, and ends
//! when it expires or is revoked; keys attached to it are deleted when it ends, all at one
//! revision. This module has the domain types and [`Leases`], the part of the keyspace that
//! says which leases exist and which keys each holds. When a lease expires is the backend's
//! business: the embedded store keeps one deadline structure for all of them
//! (`backend/embedded/lessor.rs`); on etcd, etcd does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::error::Error;

/// A lease's identity: a positive number, chosen by the caller or the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(i64);

impl LeaseId {
    /// `id` if it can name a lease (it is positive).
    pub fn new(id: i64) -> Option<LeaseId> {
        (id > 0).then_some(LeaseId(id))
    }

    /// A random id, for a grant that names none.
    pub fn random() -> LeaseId {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        // 62 random bits, plus one: positive, and never 0.
        LeaseId((i64::from_le_bytes(bytes) & (i64::MAX >> 1)) + 1)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The longest TTL a lease may have: a year. Long enough for any lease that is meant to be
/// kept alive, short enough that a forgotten one still goes.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 60 * 60;

/// A time to live, in whole seconds, from 1 to [`MAX_TTL_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(i64);

impl Ttl {
    /// `seconds` as a TTL, or INVALID_ARGUMENT naming the bounds.
    pub fn seconds(seconds: i64) -> Result<Ttl, Error> {
        if !(1..=MAX_TTL_SECONDS).contains(&seconds) {
            return Err(Error::invalid(
                "ttl_seconds",
                format!("{seconds} is not between 1 and {MAX_TTL_SECONDS} seconds"),
            ));
        }
        Ok(Ttl(seconds))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0 as u64)
    }
}

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Nobody kept it alive past its TTL.
    Expired,
    /// A client revoked it.
    Revoked,
}

/// What a delete caused by a lease's end carries: which lease, and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseEnd {
    pub lease: LeaseId,
    pub reason: EndReason,
}

/// A lease as `LeaseTimeToLive` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: LeaseId,
    pub granted: Ttl,
    /// Whole seconds left before it expires (rounded up, so a live lease never shows 0).
    pub remaining_seconds: i64,
    /// The attached keys, when asked for.
    pub keys: Vec<String>,
}

/// Which leases exist (with the TTL each was granted) and which keys each holds. Kept by the
/// [`Database`](crate::database::Database) beside its keys, changed only as they are: an
/// entry's lease attaches its key, and a lease's end detaches them all.
#[derive(Debug, Default)]
pub struct Leases {
    granted: BTreeMap<LeaseId, Ttl>,
    /// Keys whose entry names the lease. On etcd, where leases live in etcd and
    /// `granted` stays empty, this still says which keys a lease holds.
    keys: HashMap<LeaseId, BTreeSet<String>>,
}

impl Leases {
    pub fn grant(&mut self, id: LeaseId, ttl: Ttl) {
        self.granted.insert(id, ttl);
    }

    /// Forgets the lease. Its keys stay attached until their deletes are applied.
    pub fn end(&mut self, id: LeaseId) {
        self.granted.remove(&id);
    }

    /// Every lease in force, in id order, with its TTL.
    pub fn granted(&self) -> impl Iterator<Item = (LeaseId, Ttl)> + '_ {
        self.granted.iter().map(|(id, ttl)| (*id, *ttl))
    }

    pub fn len(&self) -> usize {
        self.granted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
    }

    /// The keys attached to `id`, in key order.
    pub fn keys(&self, id: LeaseId) -> impl Iterator<Item = &String> + '_ {
        self.keys.get(&id).into_iter().flatten()
    }

    pub fn attach(&mut self, id: LeaseId, key: &str) {
        self.keys.entry(id).or_default().insert(key.to_owned());
    }

    pub fn detach(&mut self, id: LeaseId, key: &str) {
        if let Some(keys) = self.keys.get_mut(&id) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_outside_their_bounds_are_refused_naming_them() {
        assert_eq!(Ttl::seconds(1).unwrap().get(), 1);
        assert_eq!(
            Ttl::seconds(MAX_TTL_SECONDS).unwrap().get(),
            MAX_TTL_SECONDS
        );
        for bad in [0, -1, MAX_TTL_SECONDS + 1] {
            let err = Ttl::seconds(bad).unwrap_err().to_string();
            assert!(
                err.contains("ttl_seconds") && err.contains("between 1 and"),
                "{err}"
            );
        }
        assert_eq!(LeaseId::new(0), None);
        assert_eq!(LeaseId::new(-5), None);
    }

    #[test]
    fn keys_attach_and_detach_per_lease() {
        let (a, b) = (LeaseId(1), LeaseId(2));
        let mut leases = Leases::default();
        leases.grant(a, Ttl(5));
        leases.attach(a, "x");
        leases.attach(a, "y");
        leases.attach(b, "z");
        leases.detach(a, "x");
        assert_eq!(leases.keys(a).collect::<Vec<_>>(), ["y"]);
        leases.detach(b, "z");
        assert_eq!(leases.keys(b).count(), 0);
        assert!(!leases.keys.contains_key(&b), "an empty set is dropped");
        leases.end(a);
        assert_eq!(leases.len(), 0);
    }
}
