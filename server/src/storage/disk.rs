//! `DiskStorage`: the `--data-dir` backend. A write-ahead log split into segments, plus
//! snapshots; a background thread folds sealed segments into a new snapshot so that disk use
//! stays proportional to live data.
//!
//! The directory itself is locked (flock) while a server has it open; a second server is
//! refused. (Versions before this one locked a `LOCK` file in it, which is now left alone.)
//! Files in it:
//! - `STORE_ID`: the store's identity ([`StoreId`]), written once when the
//!   directory is first used, so that watchers can tell this store's revisions from another's.
//! - `log-<first revision>.jkv`: segments. Only the newest is appended to; it is sealed and a
//!   new one started once it passes `segment_bytes`.
//! - `snapshot-<revision>.jkv`: every live key as of that revision. Written to a `.tmp` file,
//!   fsynced, then renamed, so a snapshot is either whole or absent.
//!
//! The active segment is kept filled with zeros a little ahead of its last record
//! ([`PREALLOCATE_BYTES`]), so that an append writes into space the file already has, and its
//! fdatasync flushes only data. A sealed segment, and the active one at a clean shutdown, are
//! cut back to their last record.
//!
//! Recovery loads the newest snapshot and replays the segments after it. In the last segment,
//! zeros after the last record are the end of the log. A torn tail (the last segment cut
//! anywhere, or its last record garbled by an interrupted write, with nothing but zeros after
//! it) is truncated with a warning naming what was dropped: it was never acknowledged, because
//! an append is acknowledged only after the write (and fsync) of its records returned. Anything else that
//! fails its checks (a bad record with data after it, a revision gap, a damaged snapshot) stops
//! start-up with an error naming the file and offset, so later data is never silently lost.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::format::{self, Frame, Record, HEADER_LEN, LOG_MAGIC, SNAPSHOT_MAGIC};
use super::{Recovered, Storage};
use crate::config::{DiskConfig, SyncMode};
use crate::database::{Change, Entry, Event};
use crate::error::Error;
use crate::lease::{LeaseId, Ttl};
use crate::revision::Revision;
use crate::store_id::StoreId;

pub struct DiskStorage {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    /// Held for the lifetime of the storage: the flock lives as long as the open file.
    _lock: File,
    active: Option<Segment>,
    /// Reused encoding buffer, so appends do not allocate.
    buf: Vec<u8>,
    /// Set when a failure left the log in an unknown state (a failed fsync may have dropped
    /// dirty pages): every later append fails until a restart re-reads the disk.
    poisoned: Option<String>,
    compactor: Option<Compactor>,
}

/// How far the active segment is zero-filled ahead of its records, at most. Appending inside
/// the file's length spares each fdatasync a journal commit for the new file size, which was
/// measured to make the append both quicker and cheaper in kernel CPU. The zeros go out in
/// large steps, so only a rare fsync pays for an extension.
/// (A sparse `set_len` or `fallocate` would not do: ext4 then converts the extent on the first
/// write to it, which is a journal commit again.)
pub const PREALLOCATE_BYTES: u64 = 1024 * 1024;

struct Segment {
    file: File,
    path: PathBuf,
    /// End of the last record: where the next append goes.
    len: u64,
    /// The file's length. Everything from `len` to here is zeros.
    zeroed_to: u64,
}

impl Segment {
    /// Writes `bytes` after the last record, first zero-filling further ahead (but not past
    /// `limit`, the size at which the segment is sealed) if they would reach past the file's
    /// end.
    fn write_records(&mut self, bytes: &[u8], limit: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let end = self.len + bytes.len() as u64;
        if end > self.zeroed_to {
            let target = end.next_multiple_of(PREALLOCATE_BYTES).min(limit.max(end));
            while self.zeroed_to < target {
                let n = (target - self.zeroed_to).min(ZEROS.len() as u64) as usize;
                self.file.write_all_at(&ZEROS[..n], self.zeroed_to)?;
                self.zeroed_to += n as u64;
            }
        }
        self.file.write_all_at(bytes, self.len)
    }

    /// Cuts the file back to its last record (dropping the zeros ahead of it).
    fn trim(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.zeroed_to = self.len;
        Ok(())
    }
}

impl DiskStorage {
    /// Opens (creating if needed) and locks the directory. Call [`Storage::recover`] next.
    pub fn open(config: &DiskConfig) -> Result<DiskStorage, Error> {
        let (dir, sync, segment_bytes) = (config.dir.as_path(), config.sync, config.segment_bytes);
        fs::create_dir_all(dir)
            .map_err(|e| io_error(format!("cannot create {}", dir.display()), e))?;
        // The lock is on the directory itself, not on a file in it: a file can be deleted, and a
        // second server would then lock a new one beside the first, and both would write.
        let lock =
            File::open(dir).map_err(|e| io_error(format!("cannot open {}", dir.display()), e))?;
        match lock_patiently(&lock) {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Storage(format!(
                    "data directory {} is in use by another jsonkv-server",
                    dir.display(),
                )))
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_error(format!("cannot lock {}", dir.display()), e))
            }
        }
        Ok(DiskStorage {
            dir: dir.to_owned(),
            sync,
            segment_bytes: segment_bytes.max(HEADER_LEN as u64 + 1),
            _lock: lock,
            active: None,
            buf: Vec::with_capacity(64 * 1024),
            poisoned: None,
            compactor: None,
        })
    }

    /// Seals the active segment and starts the next. If either step fails, the active
    /// segment stays active (appends go on into it) and the error says why.
    fn seal_and_rotate(&mut self, next_revision: Revision) -> Result<(), Error> {
        let old = self.active.as_mut().expect("an active segment");
        // A sealed segment holds records only (readers expect zeros in the last segment
        // alone), and is fsynced even under `--sync none`: compaction deletes the older files
        // once a snapshot covers it, so it must not vanish with the page cache.
        old.trim()
            .and_then(|()| old.file.sync_data())
            .map_err(|e| io_error(format!("cannot seal {}", old.path.display()), e))?;
        self.active = Some(create_segment(&self.dir, next_revision)?);
        if let Some(compactor) = &self.compactor {
            compactor.sealed_below(next_revision);
        }
        Ok(())
    }
}

impl Storage for DiskStorage {
    fn recover(&mut self) -> Result<Recovered, Error> {
        let files = Files::list(&self.dir)?;
        let mut recovered = Recovered::empty(store_id(&self.dir)?);
        if let Some((_, path)) = files.snapshots.last() {
            let snapshot = read_snapshot(path)?;
            recovered.snapshot = snapshot.entries;
            recovered.leases = snapshot.leases;
            recovered.snapshot_revision = snapshot.revision;
        }
        let mut last = recovered.snapshot_revision;
        for (i, (_, path)) in files.segments.iter().enumerate() {
            let is_last = i + 1 == files.segments.len();
            replay_segment(
                path,
                is_last,
                recovered.snapshot_revision,
                &mut last,
                &mut recovered.changes,
            )?;
        }
        // Files a finished compaction made redundant, left behind by a crash before deleting.
        for (revision, path) in &files.snapshots[..files.snapshots.len().saturating_sub(1)] {
            tracing::info!(file = %path.display(), revision, "removing superseded snapshot");
            remove(path);
        }
        let segments = &files.segments;
        for (i, (_, path)) in segments
            .iter()
            .enumerate()
            .take(segments.len().saturating_sub(1))
        {
            if segments[i + 1].0 <= recovered.snapshot_revision + 1 {
                tracing::info!(file = %path.display(), "removing segment covered by the snapshot");
                remove(path);
            }
        }

        self.active = Some(match segments.last() {
            Some((_, path)) => open_segment(path)?,
            None => create_segment(&self.dir, last + 1)?,
        });
        self.compactor = Some(Compactor::start(self.dir.clone(), self.segment_bytes));
        tracing::info!(
            dir = %self.dir.display(),
            snapshot_keys = recovered.snapshot.len(),
            snapshot_leases = recovered.leases.len(),
            snapshot_revision = recovered.snapshot_revision,
            replayed = recovered.changes.len(),
            revision = last,
            "recovered"
        );
        Ok(recovered)
    }

    fn append(&mut self, changes: &[Change]) -> Result<(), Error> {
        if let Some(why) = &self.poisoned {
            return Err(Error::Storage(format!(
                "storage failed earlier and refuses writes until restarted: {why}"
            )));
        }
        let Some(last) = changes.last() else {
            return Ok(());
        };
        self.buf.clear();
        for change in changes {
            match change {
                Change::Key(event) => format::encode_event(&mut self.buf, event),
                Change::Txn { revision, events } => {
                    format::encode_txn(&mut self.buf, *revision, events)
                }
                Change::LeaseGranted {
                    lease,
                    ttl,
                    revision,
                } => format::encode_lease(&mut self.buf, *revision, *lease, *ttl),
                Change::LeaseEnded { end, revision, .. } => {
                    format::encode_lease_end(&mut self.buf, *revision, *end)
                }
            }
        }
        let segment = self.active.as_mut().expect("recover() opens a segment");
        if let Err(e) = segment.write_records(&self.buf, self.segment_bytes) {
            // Cut off what part of the batch reached the file, so the log stays a clean
            // sequence of frames and a later append (say, once disk space is freed) is sound.
            let why = format!("cannot write to {}: {e}", segment.path.display());
            if let Err(e2) = segment.trim() {
                self.poisoned = Some(format!("{why}; then cannot truncate it: {e2}"));
            }
            return Err(Error::Storage(why));
        }
        if self.sync == SyncMode::Always {
            if let Err(e) = segment.file.sync_data() {
                let why = format!("cannot fsync {}: {e}", segment.path.display());
                self.poisoned = Some(why.clone());
                return Err(Error::Storage(why));
            }
        }
        segment.len += self.buf.len() as u64;
        if segment.len >= self.segment_bytes {
            // The batch is already stored; a failed rotation only means the segment grows on.
            if let Err(err) = self.seal_and_rotate(last.revision() + 1) {
                tracing::error!(%err, "cannot start a new log segment");
            }
        }
        Ok(())
    }
}

impl Drop for DiskStorage {
    fn drop(&mut self) {
        // A clean close leaves the active segment ending at its last record, as a sealed one
        // does. (After a crash the zeros are still there, and recovery reads them as the end.)
        if let Some(segment) = &mut self.active {
            if let Err(err) = segment.trim() {
                tracing::warn!(file = %segment.path.display(), %err, "cannot trim the log segment");
            }
        }
    }
}

/// Takes the flock on `lock`, waiting up to half a second for it. A lock that is busy that long
/// is another server's. A shorter hold is the last one letting go: a server still exiting, or,
/// in a program that starts processes (the tests do), a child forked while this process had the
/// lock open, which shares the lock until it execs. Refusing at once failed a test that reopens
/// a directory it had just closed while another test started etcd.
/// Builds the data directory `dir` from `backup`, a file `jsonkv backup` wrote, and returns the
/// backup's revision and key count. The whole file is verified first (its header, every
/// record's checksum, the end record's count, nothing after it), so a damaged backup fails,
/// naming the offset, and writes nothing. `dir` must be empty or absent. The restored store
/// gets a new identity: its revisions after the backup's are not the old store's, and a watch
/// resuming from the old store must be told (STORE_MISMATCH) rather than skip them.
pub fn restore(dir: &Path, backup: &Path) -> Result<(Revision, usize), Error> {
    if let Ok(mut entries) = fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(Error::Config(format!(
                "cannot restore into {}: it is not empty (restore builds a new data directory)",
                dir.display()
            )));
        }
    }
    let snapshot = read_snapshot(backup)?;
    let (revision, keys) = (snapshot.revision, snapshot.entries.len());
    fs::create_dir_all(dir).map_err(|e| io_error(format!("cannot create {}", dir.display()), e))?;
    let mut writer = SnapshotWriter::create(dir, revision)?;
    for (key, entry) in snapshot.entries {
        writer.push(key, entry)?;
    }
    for (lease, ttl) in snapshot.leases {
        writer.push_lease(lease, ttl)?;
    }
    writer.finish()?;
    store_id(dir)?;
    Ok((revision, keys))
}

fn lock_patiently(lock: &File) -> Result<(), fs::TryLockError> {
    const PATIENCE: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match lock.try_lock() {
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The snapshot and segment files of a data directory, each sorted by revision.
struct Files {
    snapshots: Vec<(Revision, PathBuf)>,
    segments: Vec<(Revision, PathBuf)>,
}

impl Files {
    fn list(dir: &Path) -> Result<Files, Error> {
        let mut files = Files {
            snapshots: Vec::new(),
            segments: Vec::new(),
        };
        let read =
            fs::read_dir(dir).map_err(|e| io_error(format!("cannot list {}", dir.display()), e))?;
        for entry in read {
            let entry = entry.map_err(|e| io_error(format!("cannot list {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".tmp") {
                // An interrupted snapshot: its segments are all still there.
                remove(&path);
            } else if let Some(rev) = revision_in(&name, "snapshot-") {
                files.snapshots.push((rev, path));
            } else if let Some(rev) = revision_in(&name, "log-") {
                files.segments.push((rev, path));
            }
        }
        files.snapshots.sort();
        files.segments.sort();
        Ok(files)
    }
}

/// The store identity kept in `dir`. Created if the directory has none yet (it is new, or
/// was written before store identities existed), whole or not at all: written aside,
/// fsynced, renamed.
fn store_id(dir: &Path) -> Result<StoreId, Error> {
    let path = dir.join("STORE_ID");
    match fs::read_to_string(&path) {
        Ok(text) => StoreId::parse(text.trim()).map_err(|why| Error::Corrupt {
            file: path.display().to_string(),
            offset: 0,
            reason: format!("not a store identity: {why}"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = StoreId::random();
            let tmp = dir.join("STORE_ID.tmp");
            fs::write(&tmp, format!("{id}\n"))
                .and_then(|()| File::open(&tmp)?.sync_all())
                .map_err(|e| io_error(format!("cannot write {}", tmp.display()), e))?;
            fs::rename(&tmp, &path)
                .map_err(|e| io_error(format!("cannot rename {}", tmp.display()), e))?;
            sync_dir(dir)?;
            tracing::info!(store_id = %id, file = %path.display(), "new store identity");
            Ok(id)
        }
        Err(e) => Err(io_error(format!("cannot read {}", path.display()), e)),
    }
}

fn revision_in(name: &str, prefix: &str) -> Option<Revision> {
    name.strip_prefix(prefix)?
        .strip_suffix(".jkv")?
        .parse()
        .ok()
}

fn segment_path(dir: &Path, first_revision: Revision) -> PathBuf {
    dir.join(format!("log-{first_revision:020}.jkv"))
}

fn snapshot_path(dir: &Path, revision: Revision) -> PathBuf {
    dir.join(format!("snapshot-{revision:020}.jkv"))
}

fn create_segment(dir: &Path, first_revision: Revision) -> Result<Segment, Error> {
    let path = segment_path(dir, first_revision);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(format!("cannot create {}", path.display()), e))?;
    file.write_all(&format::header(LOG_MAGIC))
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(format!("cannot write {}", path.display()), e))?;
    sync_dir(dir)?;
    open_segment(&path)
}

/// Opens a segment whose file ends with its last record (as recovery leaves it).
fn open_segment(path: &Path) -> Result<Segment, Error> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error(format!("cannot open {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error(format!("cannot stat {}", path.display()), e))?
        .len();
    Ok(Segment {
        file,
        path: path.to_owned(),
        len,
        zeroed_to: len,
    })
}

/// Replays one segment's changes after `after` into `changes`, checking they continue `last`.
/// The last segment may have a torn tail, which is truncated; anything else wrong is an error.
fn replay_segment(
    path: &Path,
    is_last: bool,
    after: Revision,
    last: &mut Revision,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    let data = read_file(path)?;
    let corrupt = |offset: usize, reason: String| corrupt_at(path, offset, reason);
    if let Err(why) = format::check_header(&data, LOG_MAGIC) {
        if is_last && data.len() < HEADER_LEN && LOG_MAGIC.starts_with(&data[..data.len().min(8)]) {
            tracing::warn!(file = %path.display(), bytes = data.len(), "segment header torn; rewriting it");
            rewrite_header(path)?;
            return Ok(());
        }
        return Err(corrupt(0, why));
    }
    let mut at = HEADER_LEN;
    while at < data.len() {
        if is_last && data[at..].iter().all(|&b| b == 0) {
            // The zeros the active segment is kept filled with ahead of its records.
            truncate(path, at as u64)?;
            break;
        }
        match format::read_frame(&data, at) {
            Frame::Record(
                record @ (Record::Change(_)
                | Record::Txn { .. }
                | Record::Lease { .. }
                | Record::LeaseEnd { .. }),
                next,
            ) => {
                let change = match record {
                    Record::Change(event) => Change::Key(event),
                    Record::Txn { revision, events } => Change::Txn { revision, events },
                    Record::Lease {
                        revision,
                        lease,
                        ttl,
                    } => Change::LeaseGranted {
                        lease,
                        ttl,
                        revision,
                    },
                    Record::LeaseEnd { revision, end } => Change::LeaseEnded {
                        end,
                        revision,
                        events: Vec::new(),
                    },
                    Record::End { .. } => unreachable!("matched above"),
                };
                let revision = change.revision();
                if revision > after {
                    if revision != *last + 1 {
                        return Err(corrupt(
                            at,
                            format!("revision {revision} follows revision {last}"),
                        ));
                    }
                    *last = revision;
                    changes.push(change);
                }
                at = next;
            }
            Frame::Record(Record::End { .. }, _) => {
                return Err(corrupt(at, "snapshot record in a log segment".into()))
            }
            Frame::Torn if is_last => {
                let written = data[at..]
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |i| i + 1);
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    dropped_bytes = written,
                    "dropping a torn record at the end of the log (a write interrupted before it was acknowledged)"
                );
                truncate(path, at as u64)?;
                break;
            }
            Frame::Torn => {
                return Err(corrupt(
                    at,
                    "segment ends inside a record, but a newer segment follows".into(),
                ))
            }
            Frame::Corrupt(why) => return Err(corrupt(at, why)),
        }
    }
    Ok(())
}

/// What a whole snapshot holds.
struct Snapshot {
    entries: Vec<(String, Entry)>,
    leases: Vec<(LeaseId, Ttl)>,
    /// The revision it was taken at.
    revision: Revision,
}

/// One record of a snapshot.
enum Item {
    Key(String, Entry),
    Lease(LeaseId, Ttl),
}

/// Reads a whole snapshot.
fn read_snapshot(path: &Path) -> Result<Snapshot, Error> {
    let mut reader = SnapshotReader::open(path)?;
    let (mut entries, mut leases) = (Vec::new(), Vec::new());
    while let Some(item) = reader.next()? {
        match item {
            Item::Key(key, entry) => entries.push((key, entry)),
            Item::Lease(lease, ttl) => leases.push((lease, ttl)),
        }
    }
    Ok(Snapshot {
        entries,
        leases,
        revision: reader.revision().expect("read to its end record"),
    })
}

/// Reads a snapshot one record at a time, so that neither recovery nor compaction holds the
/// file's bytes and its decoded entries at once.
struct SnapshotReader {
    path: PathBuf,
    input: io::BufReader<File>,
    /// Where the next frame starts, for errors.
    offset: usize,
    /// Keys read so far, to check against the end record's count.
    count: u64,
    /// The frame being read (header and payload): one buffer, reused.
    frame: Vec<u8>,
    /// The end record's revision, once read.
    end: Option<Revision>,
}

impl SnapshotReader {
    fn open(path: &Path) -> Result<SnapshotReader, Error> {
        let file =
            File::open(path).map_err(|e| io_error(format!("cannot read {}", path.display()), e))?;
        let mut reader = SnapshotReader {
            path: path.to_owned(),
            input: io::BufReader::with_capacity(1 << 20, file),
            offset: 0,
            count: 0,
            frame: Vec::new(),
            end: None,
        };
        let mut header = Vec::with_capacity(HEADER_LEN);
        reader.read_up_to(HEADER_LEN, &mut header)?;
        format::check_header(&header, SNAPSHOT_MAGIC).map_err(|why| corrupt_at(path, 0, why))?;
        reader.offset = HEADER_LEN;
        Ok(reader)
    }

    /// The revision the snapshot was taken at, once [`SnapshotReader::next`] has returned `None`.
    fn revision(&self) -> Option<Revision> {
        self.end
    }

    /// The next live key (in key order), or lease in force; `None` after the end record, which
    /// must close the file.
    fn next(&mut self) -> Result<Option<Item>, Error> {
        if self.end.is_some() {
            return Ok(None);
        }
        let at = self.offset;
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        let got = self.read_up_to(format::FRAME_HEADER, &mut frame)?;
        if got == 0 {
            return Err(self.corrupt(at, "snapshot has no end record"));
        }
        let mut complete = false;
        if got == format::FRAME_HEADER {
            let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
            if len <= format::MAX_PAYLOAD {
                complete = self.read_up_to(len, &mut frame)? == len;
            }
        }
        let record = format::read_frame(&frame, 0);
        self.offset += frame.len();
        self.frame = frame;
        match record {
            Frame::Record(Record::Change(event), _) => {
                let event = Arc::unwrap_or_clone(event);
                let entry = event
                    .entry
                    .ok_or_else(|| self.corrupt(at, "delete record in a snapshot"))?;
                self.count += 1;
                Ok(Some(Item::Key(event.key, entry)))
            }
            Frame::Record(Record::Lease { lease, ttl, .. }, _) => Ok(Some(Item::Lease(lease, ttl))),
            Frame::Record(Record::LeaseEnd { .. }, _) => {
                Err(self.corrupt(at, "lease end record in a snapshot"))
            }
            Frame::Record(Record::Txn { .. }, _) => {
                Err(self.corrupt(at, "transaction record in a snapshot"))
            }
            Frame::Record(Record::End { revision, count }, _) => {
                if count != self.count {
                    let why = format!("end record says {count} keys, found {}", self.count);
                    return Err(self.corrupt(at, &why));
                }
                if self.read_up_to(1, &mut Vec::new())? != 0 {
                    return Err(self.corrupt(self.offset, "data after the end record"));
                }
                self.end = Some(revision);
                Ok(None)
            }
            // A snapshot is renamed into place only when complete: it is never torn. (Read
            // alone, a whole frame whose checksum fails also looks torn.)
            Frame::Torn if complete => Err(self.corrupt(at, "checksum mismatch")),
            Frame::Torn => Err(self.corrupt(at, "snapshot ends inside a record")),
            Frame::Corrupt(why) => Err(self.corrupt(at, &why)),
        }
    }

    /// Appends the next `n` bytes of the file to `buf`; how many it got (fewer only at its
    /// end).
    fn read_up_to(&mut self, n: usize, buf: &mut Vec<u8>) -> Result<usize, Error> {
        (&mut self.input)
            .take(n as u64)
            .read_to_end(buf)
            .map_err(|e| io_error(format!("cannot read {}", self.path.display()), e))
    }

    fn corrupt(&self, offset: usize, reason: &str) -> Error {
        corrupt_at(&self.path, offset, reason.to_owned())
    }
}

/// Writes a snapshot atomically: to a `.tmp` file, fsynced, then renamed into place (and the
/// directory fsynced) by [`SnapshotWriter::finish`]. Entries must come in key order.
struct SnapshotWriter {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    revision: Revision,
    out: io::BufWriter<File>,
    buf: Vec<u8>,
    count: u64,
}

impl SnapshotWriter {
    fn create(dir: &Path, revision: Revision) -> Result<SnapshotWriter, Error> {
        let path = snapshot_path(dir, revision);
        let tmp = path.with_extension("jkv.tmp");
        let file = File::create(&tmp)
            .map_err(|e| io_error(format!("cannot create {}", tmp.display()), e))?;
        let mut writer = SnapshotWriter {
            dir: dir.to_owned(),
            path,
            tmp,
            revision,
            out: io::BufWriter::with_capacity(1 << 20, file),
            buf: Vec::with_capacity(64 * 1024),
            count: 0,
        };
        writer.write(&format::header(SNAPSHOT_MAGIC))?;
        Ok(writer)
    }

    fn push(&mut self, key: String, entry: Entry) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        format::encode_event(
            &mut buf,
            &Event {
                revision: entry.mod_revision,
                key,
                entry: Some(entry),
                previous: None,
                lease_end: None,
            },
        );
        let written = self.write(&buf);
        self.buf = buf;
        self.count += 1;
        written
    }

    /// Adds a lease in force, after every key.
    fn push_lease(&mut self, lease: LeaseId, ttl: Ttl) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        format::encode_lease(&mut buf, self.revision, lease, ttl);
        let written = self.write(&buf);
        self.buf = buf;
        written
    }

    /// Ends the snapshot and puts it in place; returns its size in bytes.
    fn finish(mut self) -> Result<u64, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        format::encode_end(&mut buf, self.revision, self.count);
        self.write(&buf)?;
        let tmp = self.tmp;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_error(format!("cannot write {}", tmp.display()), e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_error(format!("cannot fsync {}", tmp.display()), e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        fs::rename(&tmp, &self.path)
            .map_err(|e| io_error(format!("cannot rename {}", tmp.display()), e))?;
        sync_dir(&self.dir)?;
        Ok(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out
            .write_all(bytes)
            .map_err(|e| io_error(format!("cannot write {}", self.tmp.display()), e))
    }
}

/// The background thread that folds sealed segments into a new snapshot.
struct Compactor {
    tx: Option<mpsc::Sender<Revision>>,
    handle: Option<JoinHandle<()>>,
}

impl Compactor {
    fn start(dir: PathBuf, min_bytes: u64) -> Compactor {
        let (tx, rx) = mpsc::channel::<Revision>();
        let handle = std::thread::Builder::new()
            .name("jsonkv-compact".into())
            .spawn(move || {
                // Ends when the storage (and so the sender) is dropped.
                while let Ok(mut active_first) = rx.recv() {
                    // Several rotations may have queued up: compact once, up to the newest.
                    while let Ok(newer) = rx.try_recv() {
                        active_first = newer;
                    }
                    if let Err(err) = compact(&dir, active_first, min_bytes) {
                        tracing::error!(%err, "compaction failed; the log keeps growing until it succeeds");
                    }
                }
            })
            .expect("can spawn the compaction thread");
        Compactor {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Every segment before the one starting at `active_first` is sealed.
    fn sealed_below(&self, active_first: Revision) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(active_first);
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Folds the newest snapshot and the sealed segments (those before `active_first`) into a new
/// snapshot, then deletes what it replaces. Runs only when the sealed segments outweigh the
/// snapshot, so total disk use stays within about twice the live data plus one segment.
/// Touches no file that writers use, so it never stalls them.
fn compact(dir: &Path, active_first: Revision, min_bytes: u64) -> Result<(), Error> {
    let files = Files::list(dir)?;
    let sealed: Vec<_> = files
        .segments
        .iter()
        .filter(|(first, _)| *first < active_first)
        .collect();
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let sealed_bytes: u64 = sealed.iter().map(|(_, p)| size(p)).sum();
    let snapshot_bytes = files.snapshots.last().map_or(0, |(_, p)| size(p));
    if sealed.is_empty() || sealed_bytes < snapshot_bytes.max(min_bytes) {
        return Ok(());
    }
    // The changes the sealed segments hold, newest per key (`None`: deleted), and what became
    // of each lease they name. Only these are held in memory; the old snapshot is merged in as
    // it is read, in key order.
    let snapshot_revision = files.snapshots.last().map_or(0, |(revision, _)| *revision);
    let mut changes: BTreeMap<String, Option<Entry>> = BTreeMap::new();
    let mut leases = LeaseFates::default();
    let mut last = snapshot_revision;
    let mut replayed = Vec::new();
    for (_, path) in &sealed {
        // Sealed segments are whole: a torn record there is an error, not a tail.
        replay_segment(path, false, snapshot_revision, &mut last, &mut replayed)?;
        for change in replayed.drain(..) {
            match change {
                Change::Key(event) => {
                    let event = Arc::unwrap_or_clone(event);
                    changes.insert(event.key, event.entry);
                }
                Change::Txn { events, .. } => {
                    for event in events {
                        let event = Arc::unwrap_or_clone(event);
                        changes.insert(event.key, event.entry);
                    }
                }
                Change::LeaseGranted { lease, ttl, .. } => leases.granted(lease, ttl),
                Change::LeaseEnded { end, revision, .. } => leases.ended(end.lease, revision),
            }
        }
    }
    let revision = active_first - 1;
    if last != revision {
        return Err(Error::Corrupt {
            file: dir.display().to_string(),
            offset: 0,
            reason: format!("sealed segments end at revision {last}, expected {revision}"),
        });
    }
    let mut old = files
        .snapshots
        .last()
        .map(|(_, path)| SnapshotReader::open(path))
        .transpose()?;
    // The old snapshot's leases come after its keys: set aside as they are met.
    let mut old_leases = Vec::new();
    let mut next_kept = || -> Result<Option<(String, Entry)>, Error> {
        while let Some(item) = old.as_mut().map_or(Ok(None), SnapshotReader::next)? {
            match item {
                Item::Key(key, entry) => return Ok(Some((key, entry))),
                Item::Lease(lease, ttl) => old_leases.push((lease, ttl)),
            }
        }
        Ok(None)
    };
    let mut writer = SnapshotWriter::create(dir, revision)?;
    let mut kept = next_kept()?;
    let mut changes = changes.into_iter().peekable();
    loop {
        let take_change = match (&kept, changes.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((key, _)), Some((changed, _))) => changed <= key,
        };
        if take_change {
            let (key, change) = changes.next().expect("peeked");
            if kept.as_ref().is_some_and(|(k, _)| *k == key) {
                kept = next_kept()?;
            }
            if let Some(entry) = change.filter(|entry| !leases.deleted(entry)) {
                writer.push(key, entry)?;
            }
        } else {
            let (key, entry) = kept.take().expect("matched as Some");
            if !leases.deleted(&entry) {
                writer.push(key, entry)?;
            }
            kept = next_kept()?;
        }
    }
    // Every key was read, so the old snapshot's leases, after them, were too.
    for (lease, ttl) in leases.in_force(old_leases) {
        writer.push_lease(lease, ttl)?;
    }
    if let Some(reader) = &old {
        // The name said which revision the segments continue from; the file must agree.
        let read = reader.revision().expect("read to its end record");
        if read != snapshot_revision {
            let (_, path) = files.snapshots.last().expect("a reader has a file");
            let why = format!("snapshot named for revision {snapshot_revision} ends at {read}");
            return Err(corrupt_at(path, 0, why));
        }
    }
    let keys = writer.count;
    let bytes = writer.finish()?;
    for (_, path) in files.snapshots.iter().chain(sealed.iter().copied()) {
        remove(path);
    }
    tracing::info!(
        revision,
        keys,
        snapshot_bytes = bytes,
        folded_bytes = sealed_bytes,
        "compacted the log into a snapshot"
    );
    Ok(())
}

/// What the sealed segments did to leases, for a compaction to fold in.
#[derive(Default)]
struct LeaseFates {
    /// Each lease the segments name: in force at their end (with its TTL), or not.
    last: BTreeMap<LeaseId, Option<Ttl>>,
    /// The revision at which each lease last ended.
    ended: BTreeMap<LeaseId, Revision>,
}

impl LeaseFates {
    fn granted(&mut self, lease: LeaseId, ttl: Ttl) {
        self.last.insert(lease, Some(ttl));
    }

    fn ended(&mut self, lease: LeaseId, revision: Revision) {
        self.last.insert(lease, None);
        self.ended.insert(lease, revision);
    }

    /// Whether a lease's end deleted the key whose newest state is `entry`: its lease ended
    /// after the entry was written. (A key cannot be put with a lease that has ended, so an
    /// end after the put is one the key was attached at.)
    fn deleted(&self, entry: &Entry) -> bool {
        entry
            .lease
            .and_then(|lease| self.ended.get(&lease))
            .is_some_and(|&ended| ended > entry.mod_revision)
    }

    /// The leases in force after the segments: the old snapshot's that they left alone, and
    /// those they left granted.
    fn in_force(&self, old: Vec<(LeaseId, Ttl)>) -> Vec<(LeaseId, Ttl)> {
        let mut all: BTreeMap<LeaseId, Ttl> = old
            .into_iter()
            .filter(|(lease, _)| !self.last.contains_key(lease))
            .collect();
        all.extend(self.last.iter().filter_map(|(l, ttl)| Some((*l, (*ttl)?))));
        all.into_iter().collect()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| io_error(format!("cannot read {}", path.display()), e))
}

/// The error that stops start-up: which file, where, and what is wrong.
fn corrupt_at(path: &Path, offset: usize, reason: String) -> Error {
    Error::Corrupt {
        file: path.display().to_string(),
        offset: offset as u64,
        reason,
    }
}

fn rewrite_header(path: &Path) -> Result<(), Error> {
    let mut file = File::create(path)
        .map_err(|e| io_error(format!("cannot rewrite {}", path.display()), e))?;
    file.write_all(&format::header(LOG_MAGIC))
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(format!("cannot rewrite {}", path.display()), e))
}

fn truncate(path: &Path, len: u64) -> Result<(), Error> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error(format!("cannot open {}", path.display()), e))?;
    file.set_len(len)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(format!("cannot truncate {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(format!("cannot fsync directory {}", dir.display()), e))
}

fn remove(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        tracing::warn!(file = %path.display(), %err, "cannot remove file");
    }
}

fn io_error(context: String, err: io::Error) -> Error {
    Error::Storage(format!("{context}: {err}"))
}
