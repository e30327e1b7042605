//! The on-disk format shared by log segments and snapshots: a versioned file header, then
//! checksummed frames, each holding one record.
//!
//! ```text
//! file   := header frame*
//! header := magic[8] version:u32le reserved:u32le                 (16 bytes)
//! frame  := len:u32le crc32(payload):u32le payload[len]
//! payload:= PUT        revision:i64le klen:u32le key create:i64le version:i64le json_text
//!         | PUT_LEASED revision:i64le klen:u32le key create:i64le version:i64le lease:i64le json_text
//!         | DELETE     revision:i64le klen:u32le key
//!         | LEASE      revision:i64le lease:i64le ttl_seconds:i64le
//!         | LEASE_END  revision:i64le lease:i64le reason:u8        (1 expired, 2 revoked)
//!         | END        revision:i64le count:u64le                  (last frame of a snapshot)
//!         | TXN        revision:i64le count:u32le (len:u32le change)*
//! change := the payload of a PUT, PUT_LEASED or DELETE at the TXN's revision
//! ```
//! A TXN is a transaction's writes in one frame, so one checksum covers all of them: a crash
//! keeps the whole transaction or none of it.
//! A snapshot stores each live key as a PUT (PUT_LEASED if it has a lease) whose revision is the
//! key's mod revision, then each lease in force as a LEASE. In a log every record takes the
//! next revision: LEASE is a grant, and LEASE_END a lease's end, whose revision its deletes
//! take. The deletes themselves are not logged: the state recovery rebuilds says which keys
//! the lease held. Leases came after format version 1 and kept it: their records are new kinds, which an
//! older server refuses by name ("unknown record kind").

use std::sync::Arc;

use crate::database::{Entry, Event};
use crate::doc::Doc;
use crate::lease::{EndReason, LeaseEnd, LeaseId, Ttl};
use crate::revision::Revision;

pub const HEADER_LEN: usize = 16;
pub const FORMAT_VERSION: u32 = 1;
pub const LOG_MAGIC: &[u8; 8] = b"JKV-LOG\0";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"JKV-SNP\0";
pub const FRAME_HEADER: usize = 8;
/// No record is this large (keys and values are limited far below); a bigger length field is
/// corruption, not a record.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

const PUT: u8 = 1;
const DELETE: u8 = 2;
const END: u8 = 3;
const PUT_LEASED: u8 = 4;
const LEASE: u8 = 5;
const LEASE_END: u8 = 6;
const TXN: u8 = 7;

const EXPIRED: u8 = 1;
const REVOKED: u8 = 2;

pub fn header(magic: &[u8; 8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Checks a file header; `Err` says what is wrong with it.
pub fn check_header(data: &[u8], magic: &[u8; 8]) -> Result<(), String> {
    if data.len() < HEADER_LEN {
        return Err("file is shorter than its header".into());
    }
    if &data[..8] != magic {
        return Err("not a jsonkv file of this kind (bad magic)".into());
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this server reads version {FORMAT_VERSION}"
        ));
    }
    // Reserved, and written as zeros: anything else is damage (a backup carried elsewhere).
    if data[12..HEADER_LEN].iter().any(|&b| b != 0) {
        return Err("reserved header bytes are not zero".into());
    }
    Ok(())
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Change(Arc<Event>),
    /// A lease granted (in a log), or in force (in a snapshot).
    Lease {
        revision: Revision,
        lease: LeaseId,
        ttl: Ttl,
    },
    /// A lease's end; see the module doc for its revision.
    LeaseEnd {
        revision: Revision,
        end: LeaseEnd,
    },
    /// A transaction's key changes, all at one revision.
    Txn {
        revision: Revision,
        events: Vec<Arc<Event>>,
    },
    /// End of a snapshot taken at `revision`, holding `count` keys.
    End {
        revision: Revision,
        count: u64,
    },
}

/// Appends the frame of a change to `buf`.
pub fn encode_event(buf: &mut Vec<u8>, event: &Event) {
    let start = begin_frame(buf);
    encode_change(buf, event);
    end_frame(buf, start);
}

/// Appends the frame of a transaction's changes (all at `revision`) to `buf`.
pub fn encode_txn(buf: &mut Vec<u8>, revision: Revision, events: &[Arc<Event>]) {
    let start = begin_frame(buf);
    buf.push(TXN);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        let at = buf.len();
        buf.extend_from_slice(&[0u8; 4]);
        encode_change(buf, event);
        let len = (buf.len() - at - 4) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    end_frame(buf, start);
}

/// The payload of a PUT, PUT_LEASED or DELETE.
fn encode_change(buf: &mut Vec<u8>, event: &Event) {
    match &event.entry {
        Some(entry) => {
            buf.push(if entry.lease.is_some() {
                PUT_LEASED
            } else {
                PUT
            });
            buf.extend_from_slice(&event.revision.to_le_bytes());
            put_key(buf, &event.key);
            buf.extend_from_slice(&entry.create_revision.to_le_bytes());
            buf.extend_from_slice(&entry.version.to_le_bytes());
            if let Some(lease) = entry.lease {
                buf.extend_from_slice(&lease.get().to_le_bytes());
            }
            buf.extend_from_slice(entry.value.text().as_bytes());
        }
        None => {
            buf.push(DELETE);
            buf.extend_from_slice(&event.revision.to_le_bytes());
            put_key(buf, &event.key);
        }
    }
}

/// Appends the frame of a lease granted, or in force in a snapshot taken at `revision`.
pub fn encode_lease(buf: &mut Vec<u8>, revision: Revision, lease: LeaseId, ttl: Ttl) {
    let start = begin_frame(buf);
    buf.push(LEASE);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&lease.get().to_le_bytes());
    buf.extend_from_slice(&ttl.get().to_le_bytes());
    end_frame(buf, start);
}

/// Appends the frame of a lease's end.
pub fn encode_lease_end(buf: &mut Vec<u8>, revision: Revision, end: LeaseEnd) {
    let start = begin_frame(buf);
    buf.push(LEASE_END);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&end.lease.get().to_le_bytes());
    buf.push(match end.reason {
        EndReason::Expired => EXPIRED,
        EndReason::Revoked => REVOKED,
    });
    end_frame(buf, start);
}

/// Appends the frame that closes a snapshot.
pub fn encode_end(buf: &mut Vec<u8>, revision: Revision, count: u64) {
    let start = begin_frame(buf);
    buf.push(END);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    end_frame(buf, start);
}

fn put_key(buf: &mut Vec<u8>, key: &str) {
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
}

fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    start
}

fn end_frame(buf: &mut [u8], start: usize) {
    let payload = &buf[start + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the frame at an offset holds.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A valid record, and the offset just past it.
    Record(Record, usize),
    /// The data ends inside this frame, or its checksum does not match and nothing but zeros
    /// (space a log segment had filled ahead) follows it: the remains of a write that a crash
    /// interrupted.
    Torn,
    /// A frame that cannot be a torn tail: bad length, or bad checksum with data after it.
    Corrupt(String),
}

/// Reads the frame starting at `offset` (which must be < `data.len()`).
pub fn read_frame(data: &[u8], offset: usize) -> Frame {
    let rest = &data[offset..];
    if rest.len() < FRAME_HEADER {
        return Frame::Torn;
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Frame::Corrupt(format!("record length {len} is impossible"));
    }
    let end = FRAME_HEADER + len;
    if rest.len() < end {
        return Frame::Torn;
    }
    let payload = &rest[FRAME_HEADER..end];
    if crc32fast::hash(payload) != crc {
        return if rest[end..].iter().all(|&b| b == 0) {
            Frame::Torn
        } else {
            Frame::Corrupt("checksum mismatch".into())
        };
    }
    match decode_payload(payload) {
        Ok(record) => Frame::Record(record, offset + end),
        Err(why) => Frame::Corrupt(why),
    }
}

fn decode_payload(p: &[u8]) -> Result<Record, String> {
    let mut r = Reader { p, at: 0 };
    let kind = r.u8()?;
    let revision = r.i64()?;
    let record = match kind {
        PUT | PUT_LEASED | DELETE => {
            let key_len = r.u32()? as usize;
            let key = std::str::from_utf8(r.bytes(key_len)?)
                .map_err(|_| "key is not UTF-8".to_string())?
                .to_owned();
            let entry = if kind != DELETE {
                let create_revision = r.i64()?;
                let version = r.i64()?;
                let lease = match kind {
                    PUT_LEASED => Some(r.lease()?),
                    _ => None,
                };
                let text =
                    std::str::from_utf8(r.rest()).map_err(|_| "value is not UTF-8".to_string())?;
                Some(Entry {
                    value: Arc::new(Doc::from_stored_text(text.to_owned())?),
                    create_revision,
                    mod_revision: revision,
                    version,
                    lease,
                })
            } else {
                None
            };
            // The log keeps no previous values; recovery fills them in as it rebuilds.
            Record::Change(Arc::new(Event {
                revision,
                key,
                entry,
                previous: None,
                lease_end: None,
            }))
        }
        END => Record::End {
            revision,
            count: r.i64()? as u64,
        },
        LEASE => Record::Lease {
            revision,
            lease: r.lease()?,
            ttl: Ttl::seconds(r.i64()?).map_err(|e| e.to_string())?,
        },
        LEASE_END => Record::LeaseEnd {
            revision,
            end: LeaseEnd {
                lease: r.lease()?,
                reason: match r.u8()? {
                    EXPIRED => EndReason::Expired,
                    REVOKED => EndReason::Revoked,
                    other => return Err(format!("unknown lease end reason {other}")),
                },
            },
        },
        TXN => {
            let count = r.u32()? as usize;
            let mut events = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let len = r.u32()? as usize;
                match decode_payload(r.bytes(len)?)? {
                    Record::Change(event) if event.revision == revision => events.push(event),
                    Record::Change(_) => {
                        return Err("a transaction's change has another revision".into())
                    }
                    _ => return Err("a transaction holds a record that is not a key change".into()),
                }
            }
            if events.len() < 2 {
                return Err(format!("a transaction of {} changes", events.len()));
            }
            Record::Txn { revision, events }
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    if r.at != p.len() && !matches!(&record, Record::Change(e) if e.entry.is_some()) {
        return Err("trailing bytes in record".into());
    }
    Ok(record)
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.p.len());
        let end = end.ok_or_else(|| "record is shorter than its fields".to_string())?;
        let out = &self.p[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn rest(&mut self) -> &'a [u8] {
        let out = &self.p[self.at..];
        self.at = self.p.len();
        out
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn lease(&mut self) -> Result<LeaseId, String> {
        let id = self.i64()?;
        LeaseId::new(id).ok_or_else(|| format!("lease id {id} is not positive"))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(revision: Revision, key: &str, value: serde_json::Value) -> Arc<Event> {
        Arc::new(Event {
            revision,
            key: key.into(),
            entry: Some(Entry {
                value: Arc::new(Doc::new(value)),
                create_revision: 1,
                mod_revision: revision,
                version: revision,
                lease: None,
            }),
            previous: None,
            lease_end: None,
        })
    }

    #[test]
    fn a_stored_value_that_is_not_json_is_corrupt_even_with_a_good_checksum() {
        let mut buf = Vec::new();
        encode_event(&mut buf, &put(1, "k", json!([1, 2])));
        // Rewrite the value's last byte (`]`) and the checksum, as a bug or a tool might.
        *buf.last_mut().unwrap() = b',';
        end_frame(&mut buf, 0);
        match read_frame(&buf, 0) {
            Frame::Corrupt(why) => assert!(why.contains("not JSON"), "{why}"),
            other => panic!("expected corrupt, got {other:?}"),
        }
        // The same bytes with the value intact load without being parsed, and read back.
        let mut good = Vec::new();
        encode_event(&mut good, &put(1, "k", json!({"b": [1, 2], "a": "x"})));
        let Frame::Record(Record::Change(event), _) = read_frame(&good, 0) else {
            panic!("expected a record");
        };
        let value = &event.entry.as_ref().unwrap().value;
        assert_eq!(value.text(), r#"{"b":[1,2],"a":"x"}"#);
        assert_eq!(*value.json(), json!({"b": [1, 2], "a": "x"}));
    }

    #[test]
    fn records_round_trip() {
        let events = [
            put(
                1,
                "a",
                json!({"z": 1, "a": 12345678901234567890123u128.to_string()}),
            ),
            Arc::new(Event {
                revision: 2,
                key: "ключ".into(),
                entry: None,
                previous: None,
                lease_end: None,
            }),
            put(3, "", json!(null)),
        ];
        let mut buf = Vec::new();
        for e in &events {
            encode_event(&mut buf, e);
        }
        encode_end(&mut buf, 3, 2);
        let mut at = 0;
        for e in &events {
            match read_frame(&buf, at) {
                Frame::Record(Record::Change(got), next) => {
                    assert_eq!(&got, e);
                    at = next;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            read_frame(&buf, at),
            Frame::Record(
                Record::End {
                    revision: 3,
                    count: 2
                },
                buf.len()
            )
        );
    }

    #[test]
    fn lease_records_and_leased_puts_round_trip() {
        let lease = LeaseId::new(7).unwrap();
        let mut leased = Arc::unwrap_or_clone(put(4, "k", json!({"n": 1})));
        leased.entry.as_mut().unwrap().lease = Some(lease);
        let end = LeaseEnd {
            lease,
            reason: EndReason::Expired,
        };
        let mut buf = Vec::new();
        encode_lease(&mut buf, 3, lease, Ttl::seconds(30).unwrap());
        encode_event(&mut buf, &leased);
        encode_lease_end(&mut buf, 5, end);
        let Frame::Record(first, at) = read_frame(&buf, 0) else {
            panic!("a record")
        };
        let ttl = Ttl::seconds(30).unwrap();
        assert_eq!(
            first,
            Record::Lease {
                revision: 3,
                lease,
                ttl
            }
        );
        let Frame::Record(Record::Change(got), at) = read_frame(&buf, at) else {
            panic!("a change")
        };
        assert_eq!(*got, leased, "the lease survives");
        assert_eq!(
            read_frame(&buf, at),
            Frame::Record(Record::LeaseEnd { revision: 5, end }, buf.len())
        );
        // A lease id that could not have been granted is damage, named.
        let mut bad = Vec::new();
        let start = begin_frame(&mut bad);
        bad.push(LEASE);
        for n in [1i64, -3, 30] {
            bad.extend_from_slice(&n.to_le_bytes());
        }
        end_frame(&mut bad, start);
        match read_frame(&bad, 0) {
            Frame::Corrupt(why) => assert!(why.contains("lease id -3"), "{why}"),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_transaction_is_one_frame_of_changes_at_one_revision() {
        let mut leased = Arc::unwrap_or_clone(put(6, "b", json!([1.5, "x"])));
        leased.entry.as_mut().unwrap().lease = LeaseId::new(9);
        let deleted = Arc::new(Event {
            revision: 6,
            key: "c".into(),
            entry: None,
            previous: None,
            lease_end: None,
        });
        let events = vec![put(6, "a", json!({"n": 1})), Arc::new(leased), deleted];
        let mut buf = Vec::new();
        encode_txn(&mut buf, 6, &events);
        assert_eq!(
            read_frame(&buf, 0),
            Frame::Record(
                Record::Txn {
                    revision: 6,
                    events: events.clone()
                },
                buf.len()
            )
        );
        // A change at another revision inside it is damage, named.
        let mut bad = Vec::new();
        encode_txn(&mut bad, 6, &[put(6, "a", json!(1)), put(7, "b", json!(2))]);
        match read_frame(&bad, 0) {
            Frame::Corrupt(why) => assert!(why.contains("another revision"), "{why}"),
            other => panic!("expected corrupt, got {other:?}"),
        }
        // Cut anywhere, it is torn as a whole: no prefix of its changes reads back.
        for cut in 1..buf.len() {
            assert_eq!(read_frame(&buf[..cut], 0), Frame::Torn, "cut at {cut}");
        }
    }

    #[test]
    fn torn_and_corrupt_frames_are_told_apart() {
        let mut buf = Vec::new();
        encode_event(&mut buf, &put(1, "a", json!(1)));
        let first = buf.len();
        encode_event(&mut buf, &put(2, "b", json!(2)));
        // Cut anywhere inside the last frame: torn.
        for cut in first + 1..buf.len() {
            assert_eq!(read_frame(&buf[..cut], first), Frame::Torn, "cut at {cut}");
        }
        // A flipped byte in the last frame: torn (an interrupted write looks the same).
        let mut last = buf.clone();
        *last.last_mut().unwrap() ^= 0xff;
        assert_eq!(read_frame(&last, first), Frame::Torn);
        // ... also with the zeros of a preallocated segment after it, but not with data after
        // the zeros.
        last.extend_from_slice(&[0; 100]);
        assert_eq!(read_frame(&last, first), Frame::Torn);
        last.push(1);
        assert!(matches!(read_frame(&last, first), Frame::Corrupt(_)));
        // A flipped byte in the first frame, with data after it: corrupt.
        let mut middle = buf.clone();
        middle[first - 1] ^= 0xff;
        assert!(matches!(read_frame(&middle, 0), Frame::Corrupt(_)));
        // An impossible length is corrupt, never torn.
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_frame(&huge, 0), Frame::Corrupt(_)));
    }

    #[test]
    fn headers_are_checked() {
        let h = header(LOG_MAGIC);
        assert!(check_header(&h, LOG_MAGIC).is_ok());
        assert!(check_header(&h, SNAPSHOT_MAGIC)
            .unwrap_err()
            .contains("bad magic"));
        assert!(check_header(&h[..10], LOG_MAGIC).is_err());
        let mut v2 = h;
        v2[8] = 2;
        assert!(check_header(&v2, LOG_MAGIC)
            .unwrap_err()
            .contains("format version 2"));
    }
}
