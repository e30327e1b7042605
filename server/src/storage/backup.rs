//! [`BackupEncoder`]: a backup file's bytes, made as a store is read. A backup is a snapshot
//! file of the disk store (its header, a checksummed record per key, an end record with the
//! revision and the count), so that a restore verifies it with the same reader recovery uses
//! and installs it as the data directory's snapshot ([`super::disk::restore`]). The leases in
//! force come after the keys; a restored store gives each its full TTL again. A key is backed
//! up with its lease only if that lease is among them, so a restored key never names a lease
//! the store does not have.

use super::format::{self, SNAPSHOT_MAGIC};
use std::collections::BTreeMap;

use crate::database::{Entry, Event};
use crate::lease::{LeaseId, Ttl};
use crate::revision::Revision;

/// Encodes one backup, taken at `revision`, as its entries come.
#[derive(Debug)]
pub struct BackupEncoder {
    revision: Revision,
    leases: BTreeMap<LeaseId, Ttl>,
    buf: Vec<u8>,
    keys: u64,
}

impl BackupEncoder {
    /// Starts a backup of the store at `revision`, where `leases` were in force; its header is
    /// the first bytes taken.
    pub fn new(revision: Revision, leases: Vec<(LeaseId, Ttl)>) -> BackupEncoder {
        BackupEncoder {
            revision,
            leases: leases.into_iter().collect(),
            buf: format::header(SNAPSHOT_MAGIC).to_vec(),
            keys: 0,
        }
    }

    /// Adds one key, in key order.
    pub fn push(&mut self, key: &str, entry: &Entry) {
        let mut entry = entry.clone();
        entry.lease = entry.lease.filter(|lease| self.leases.contains_key(lease));
        format::encode_event(
            &mut self.buf,
            &Event {
                revision: entry.mod_revision,
                key: key.to_owned(),
                entry: Some(entry),
                previous: None,
                lease_end: None,
            },
        );
        self.keys += 1;
    }

    /// Bytes encoded and not yet taken.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The bytes encoded so far, to send.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Ends the backup: the last bytes (the end record), and the number of keys.
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        for (lease, ttl) in &self.leases {
            format::encode_lease(&mut self.buf, self.revision, *lease, *ttl);
        }
        format::encode_end(&mut self.buf, self.revision, self.keys);
        (self.buf, self.keys)
    }
}
