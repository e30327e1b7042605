//! [`BackupEncoder`]: a backup file's bytes, made as a store is read. A backup is a snapshot
//! file of the disk store (its header, a checksummed record per key, an end record with the
//! revision and the count), so that a restore verifies it with the same reader recovery uses
//! and installs it as the data directory's snapshot ([`super::disk::restore`]).

use super::format::{self, SNAPSHOT_MAGIC};
use crate::database::{Entry, Event};
use crate::revision::Revision;

/// Encodes one backup, taken at `revision`, as its entries come.
#[derive(Debug)]
pub struct BackupEncoder {
    revision: Revision,
    buf: Vec<u8>,
    keys: u64,
}

impl BackupEncoder {
    /// Starts a backup of the store at `revision`; its header is the first bytes taken.
    pub fn new(revision: Revision) -> BackupEncoder {
        BackupEncoder {
            revision,
            buf: format::header(SNAPSHOT_MAGIC).to_vec(),
            keys: 0,
        }
    }

    /// Adds one key, in key order.
    pub fn push(&mut self, key: &str, entry: &Entry) {
        format::encode_event(
            &mut self.buf,
            &Event {
                revision: entry.mod_revision,
                key: key.to_owned(),
                entry: Some(entry.clone()),
                previous: None,
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
        format::encode_end(&mut self.buf, self.revision, self.keys);
        (self.buf, self.keys)
    }
}
