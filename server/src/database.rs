//! The `Database`: the key -> JSON map with per-key revision metadata and the revision of the
//! last committed change. Pure, synchronous state. A change is first *planned*
//! ([`plan_put`], [`plan_delete`]: precondition check and new metadata, nothing changed), then,
//! once durable, *applied* ([`Database::apply`]). The backends do the sequencing.
//!
//! The map also remembers recent deletes ([`Deletes`]), so that it can tell whether a key or
//! prefix changed since a revision after history has let that revision's events go
//! ([`Database::key_unchanged_since`]): a quiet watch can then resume from however long ago.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use crate::doc::Doc;
use crate::error::Error;
use crate::lease::{LeaseEnd, LeaseId, Leases, Ttl};
use crate::revision::Revision;

/// A stored value and its revision metadata. Cloning is cheap: the value is shared with the
/// events and history that mention it, so a 1 MiB document is never copied per watcher.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Arc<Doc>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    /// The lease the key is attached to: it is deleted when the lease ends.
    pub lease: Option<LeaseId>,
}

impl Entry {
    /// The entry a put of `value` at `revision` leaves, given the key's `previous` one: a key
    /// that did not exist starts a new life (created now, version 1); one that did keeps its
    /// create revision and counts one more version. etcd counts the same way. The lease is
    /// the put's own: a put without one detaches the key from the lease it had, as in etcd.
    pub fn after(
        previous: Option<&Entry>,
        value: Arc<Doc>,
        revision: Revision,
        lease: Option<LeaseId>,
    ) -> Entry {
        Entry {
            value,
            create_revision: previous.map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.map_or(1, |p| p.version + 1),
            lease,
        }
    }
}

/// One change, as told to watchers and kept in history.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    /// `Some` for a put (the new entry), `None` for a delete.
    pub entry: Option<Entry>,
    /// The key's entry before this change (`None`: it was absent). What a snapshot read after
    /// the change needs to see the state before it, and what a writer asking for the previous
    /// value gets.
    pub previous: Option<Entry>,
    /// For a delete a lease's end caused: which lease, and why it ended.
    pub lease_end: Option<LeaseEnd>,
}

/// One committed change to the store, as it is logged and applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A key put or deleted.
    Key(Arc<Event>),
    /// A transaction's writes: several keys changed at one revision, logged as one record, so
    /// that a crash keeps all of them or none. (A transaction that writes one key is a `Key`.)
    Txn {
        revision: Revision,
        events: Vec<Arc<Event>>,
    },
    /// A lease granted. Like every logged change it takes a revision, so that the log stays
    /// one record per revision; no key changes, so no watcher hears of it.
    LeaseGranted {
        lease: LeaseId,
        ttl: Ttl,
        revision: Revision,
    },
    /// A lease ended at `revision`, deleting every key attached to it: `events`, all at that
    /// revision. Logged as one record: recovery finds the keys again in the state it rebuilds,
    /// and fills in `events` (read from a log, they come empty).
    LeaseEnded {
        end: LeaseEnd,
        revision: Revision,
        events: Vec<Arc<Event>>,
    },
}

impl Change {
    pub fn revision(&self) -> Revision {
        match self {
            Change::Key(event) => event.revision,
            Change::Txn { revision, .. }
            | Change::LeaseGranted { revision, .. }
            | Change::LeaseEnded { revision, .. } => *revision,
        }
    }

    /// The key events of the change, all at its revision.
    pub fn events(&self) -> &[Arc<Event>] {
        match self {
            Change::Key(event) => std::slice::from_ref(event),
            Change::Txn { events, .. } | Change::LeaseEnded { events, .. } => events,
            Change::LeaseGranted { .. } => &[],
        }
    }
}

/// What a write requires of its key's current state, or nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist.
    Absent,
    /// The key's mod revision is exactly this.
    ModRevision(Revision),
}

impl Precondition {
    /// The mod revision this asks for, where an absent key counts as 0 (as etcd counts it).
    pub fn mod_revision(self) -> Revision {
        match self {
            Precondition::Absent => 0,
            Precondition::ModRevision(revision) => revision,
        }
    }

    /// Whether `current` (the key's entry, if any) meets it; if not, the mismatch to report.
    pub fn check(self, key: &str, current: Option<&Entry>) -> Result<(), Error> {
        let current = current.map_or(0, |e| e.mod_revision);
        let want = self.mod_revision();
        if want == current {
            return Ok(());
        }
        Err(Error::RevisionMismatch {
            key: key.to_owned(),
            expected: want,
            current,
        })
    }
}

/// The keyspace at one revision.
#[derive(Debug, Default)]
pub struct Database {
    entries: BTreeMap<String, Entry>,
    revision: Revision,
    deletes: Deletes,
    /// Bytes of keys and JSON text held, kept as entries come and go (for `Status`).
    bytes: usize,
    leases: Leases,
}

/// What an entry adds to [`Database::bytes`].
fn entry_bytes(key: &str, entry: &Entry) -> usize {
    key.len() + entry.value.text().len()
}

/// How many deletes a [`Database`] remembers by default: as many as history keeps events by
/// default (`--history-size`), so a delete is remembered at least as long as its event would
/// be. Each costs about its key twice plus ~100 bytes.
pub const REMEMBERED_DELETES: usize = 100_000;

/// The revision at which each recently deleted key went, while it stays absent. Every delete
/// with a revision above `floor` is here, or its key exists again (with a later mod revision);
/// the oldest records go once there are more than `capacity`, and `floor` rises past them.
#[derive(Debug)]
struct Deletes {
    by_key: BTreeMap<String, Revision>,
    /// Records in revision order, to find the oldest. A record whose key was created or deleted
    /// again since is stale: `by_key` no longer holds its revision, and it is skipped.
    order: VecDeque<(Revision, String)>,
    floor: Revision,
    capacity: usize,
}

impl Default for Deletes {
    fn default() -> Deletes {
        Deletes {
            by_key: BTreeMap::new(),
            order: VecDeque::new(),
            floor: 0,
            capacity: REMEMBERED_DELETES,
        }
    }
}

impl Deletes {
    fn record(&mut self, key: &str, revision: Revision) {
        self.by_key.insert(key.to_owned(), revision);
        self.order.push_back((revision, key.to_owned()));
        while self.order.len() > self.capacity {
            let (oldest, key) = self.order.pop_front().expect("longer than the capacity");
            if self.by_key.get(&key) == Some(&oldest) {
                self.by_key.remove(&key);
                self.floor = self.floor.max(oldest);
            }
        }
    }

    /// The key exists again: its entry's mod revision now says when it last changed.
    fn forget(&mut self, key: &str) {
        // Most creations find nothing to forget: skip the lookup while nothing is remembered.
        if !self.by_key.is_empty() {
            self.by_key.remove(key);
        }
    }

    /// Whether an absent `key` was not deleted at or after `from`.
    fn key_unchanged_since(&self, key: &str, from: Revision) -> bool {
        match self.by_key.get(key) {
            Some(&deleted) => deleted < from,
            None => from > self.floor,
        }
    }
}

impl Database {
    /// A database holding `entries` as of `revision` (a snapshot's, or an etcd load's). It
    /// knows of no delete before `revision`.
    pub fn at(entries: Vec<(String, Entry)>, revision: Revision) -> Database {
        let mut db = Database::default();
        for (key, entry) in entries {
            db.load(key, entry);
        }
        db.set_revision(revision);
        db.deletes_unknown_up_to(revision);
        db
    }

    /// The revision of the last change (0 if none).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of keys and JSON text held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The leases in force and the keys attached to each.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Records a lease granted.
    pub fn grant_lease(&mut self, lease: LeaseId, ttl: Ttl) {
        self.leases.grant(lease, ttl);
    }

    /// Records a lease's end. Its keys go with the deletes that come with it.
    pub fn end_lease(&mut self, lease: LeaseId) {
        self.leases.end(lease);
    }

    /// An empty database that remembers up to `capacity` deletes (not the default
    /// [`REMEMBERED_DELETES`]), to see what happens when records go.
    #[cfg(test)]
    fn remembering_deletes(capacity: usize) -> Database {
        Database {
            deletes: Deletes {
                capacity: capacity.max(1),
                ..Deletes::default()
            },
            ..Database::default()
        }
    }

    /// Whether no change to `key` has a revision at or after `from`, up to this database's
    /// revision: present and last changed before `from`, or absent and not deleted since, as
    /// far as the remembered deletes reach. `false` when it cannot tell.
    pub fn key_unchanged_since(&self, key: &str, from: Revision) -> bool {
        match self.entries.get(key) {
            Some(entry) => entry.mod_revision < from,
            None => self.deletes.key_unchanged_since(key, from),
        }
    }

    /// [`Database::key_unchanged_since`] for every key under `prefix`: those present, and
    /// those deleted. Scans the prefix, as a snapshot of it would.
    pub fn prefix_unchanged_since(&self, prefix: &str, from: Revision) -> bool {
        self.range_unchanged_since(prefix, None, None, from)
    }

    /// [`Database::prefix_unchanged_since`] for the keys under `prefix` after `after` and up
    /// to `through` (to the end of the prefix when `None`). Scans only that range.
    pub fn range_unchanged_since(
        &self,
        prefix: &str,
        after: Option<&str>,
        through: Option<&str>,
        from: Revision,
    ) -> bool {
        let within = |key: &String| through.is_none_or(|last| key.as_str() <= last);
        from > self.deletes.floor
            && self
                .range(prefix, after)
                .take_while(|(k, _)| within(k))
                .all(|(_, e)| e.mod_revision < from)
            && under(&self.deletes.by_key, prefix, after)
                .take_while(|(k, _)| within(k))
                .all(|(_, &deleted)| deleted < from)
    }

    /// Declares every delete at or before `revision` unknown: what a database built from a
    /// snapshot (or an etcd load) at that revision knows.
    pub fn deletes_unknown_up_to(&mut self, revision: Revision) {
        self.deletes.floor = self.deletes.floor.max(revision);
    }

    /// Keys starting with `prefix`, in order, strictly after `after` when given.
    pub fn range<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        under(&self.entries, prefix, after)
    }

    /// Installs a change planned by [`plan_put`] or [`plan_delete`]: the one way the map and
    /// the revision move, whether live, from a log on recovery, or from a snapshot.
    pub fn apply(&mut self, event: &Event) {
        // `>=`: on etcd, one transaction by another client can change several keys at once.
        debug_assert!(
            event.revision >= self.revision,
            "changes apply in revision order"
        );
        match &event.entry {
            // An update keeps the map's key: cloning the event's key for it would be an
            // allocation (and a free) per write.
            Some(entry) => {
                self.bytes += entry_bytes(&event.key, entry);
                if let Some(lease) = entry.lease {
                    self.leases.attach(lease, &event.key);
                }
                match self.entries.get_mut(&event.key) {
                    Some(slot) => {
                        self.bytes -= entry_bytes(&event.key, slot);
                        if let Some(old) = slot.lease.filter(|old| Some(*old) != entry.lease) {
                            self.leases.detach(old, &event.key);
                        }
                        *slot = entry.clone();
                    }
                    None => {
                        self.entries.insert(event.key.clone(), entry.clone());
                        self.deletes.forget(&event.key);
                    }
                }
            }
            None => self.remove(&event.key, event.revision),
        }
        self.revision = event.revision;
    }

    /// Deletes `key` at `revision`.
    fn remove(&mut self, key: &str, revision: Revision) {
        if let Some(gone) = self.entries.remove(key) {
            self.bytes -= entry_bytes(key, &gone);
            if let Some(lease) = gone.lease {
                self.leases.detach(lease, key);
            }
        }
        self.deletes.record(key, revision);
    }

    /// [`Database::apply`] for an event nobody else holds: moves instead of cloning.
    pub fn apply_owned(&mut self, event: Event) {
        debug_assert!(
            event.revision > self.revision,
            "changes apply in revision order"
        );
        self.revision = event.revision;
        match event.entry {
            Some(entry) => {
                self.deletes.forget(&event.key);
                self.load(event.key, entry);
            }
            None => self.remove(&event.key, event.revision),
        }
    }

    /// Installs a snapshot entry, without moving the revision (see [`Database::set_revision`]).
    pub fn load(&mut self, key: String, entry: Entry) {
        self.bytes += entry_bytes(&key, &entry);
        if let Some(lease) = entry.lease {
            self.leases.attach(lease, &key);
        }
        if let Some(replaced) = self.entries.get(&key) {
            self.bytes -= entry_bytes(&key, replaced);
            if let Some(old) = replaced.lease.filter(|old| Some(*old) != entry.lease) {
                self.leases.detach(old, &key);
            }
        }
        self.entries.insert(key, entry);
    }

    /// Sets the revision after loading a snapshot taken at `revision`.
    pub fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }
}

/// The entries of `map` whose keys start with `prefix`, in order, strictly after `after` when
/// given.
fn under<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
    after: Option<&'a str>,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    let start = match after {
        Some(key) => Bound::Excluded(key),
        None => Bound::Included(prefix),
    };
    map.range::<str, _>((start, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// Plans setting `key` to `value` as change `revision`, given the key's `current` entry:
/// checks `precondition` and computes the new metadata. Changes nothing.
pub fn plan_put(
    current: Option<&Entry>,
    key: String,
    value: Arc<Doc>,
    precondition: Option<Precondition>,
    lease: Option<LeaseId>,
    revision: Revision,
) -> Result<Event, Error> {
    if let Some(precondition) = precondition {
        precondition.check(&key, current)?;
    }
    Ok(Event {
        revision,
        entry: Some(Entry::after(current, value, revision, lease)),
        key,
        previous: current.cloned(),
        lease_end: None,
    })
}

/// Plans deleting `key` as change `revision`. `Ok(None)` when the key is absent and
/// `precondition` allows that: nothing to do, and no revision is used.
pub fn plan_delete(
    current: Option<&Entry>,
    key: &str,
    precondition: Option<Precondition>,
    revision: Revision,
) -> Result<Option<Event>, Error> {
    if let Some(precondition) = precondition {
        precondition.check(key, current)?;
    }
    Ok(current.map(|current| Event {
        revision,
        key: key.to_owned(),
        entry: None,
        previous: Some(current.clone()),
        lease_end: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value as Json};

    /// Plans and applies a put against `db`, as the store does.
    fn put(
        db: &mut Database,
        key: &str,
        value: Json,
        expected: Option<Precondition>,
    ) -> Result<Event, Error> {
        let event = plan_put(
            db.get(key),
            key.into(),
            Arc::new(Doc::new(value)),
            expected,
            None,
            db.revision() + 1,
        )?;
        db.apply(&event);
        Ok(event)
    }

    fn delete(
        db: &mut Database,
        key: &str,
        expected: Option<Precondition>,
    ) -> Result<Option<Event>, Error> {
        let event = plan_delete(db.get(key), key, expected, db.revision() + 1)?;
        if let Some(event) = &event {
            db.apply(event);
        }
        Ok(event)
    }

    #[test]
    fn bytes_follow_every_put_replace_delete_and_load() {
        let mut db = Database::default();
        put(&mut db, "ab", json!("xyz"), None).unwrap(); // 2 + 5
        put(&mut db, "c", json!([1, 2]), None).unwrap(); // 1 + 5
        assert_eq!(db.bytes(), 13);
        put(&mut db, "ab", json!(1), None).unwrap(); // 2 + 1
        assert_eq!(db.bytes(), 9);
        delete(&mut db, "c", None).unwrap();
        assert_eq!(db.bytes(), 3);
        let loaded = Database::at(
            vec![
                (
                    "k".into(),
                    put(&mut db, "k", json!(true), None).unwrap().entry.unwrap(),
                ),
                ("ab".into(), db.get("ab").unwrap().clone()),
            ],
            9,
        );
        assert_eq!(loaded.bytes(), 1 + 4 + 2 + 1);
        let mut owned = Database::default();
        owned.apply_owned(put(&mut Database::default(), "q", json!("v"), None).unwrap());
        assert_eq!(owned.bytes(), 1 + 3);
    }

    #[test]
    fn revisions_and_versions_follow_changes() {
        let mut db = Database::default();
        assert_eq!(db.revision(), 0);
        put(&mut db, "a", json!(1), None).unwrap();
        put(&mut db, "b", json!(2), None).unwrap();
        let event = put(&mut db, "a", json!(3), None).unwrap();
        assert_eq!(event.revision, 3);
        let a = db.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
        let deleted = delete(&mut db, "a", None).unwrap().unwrap();
        assert_eq!(deleted.revision, 4);
        assert!(deleted.entry.is_none());
        // Re-creating starts a new life: new create revision, version 1.
        put(&mut db, "a", json!(5), None).unwrap();
        let a = db.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    }

    #[test]
    fn a_key_is_unchanged_since_a_revision_after_its_last_change() {
        let mut db = Database::default();
        put(&mut db, "kept", json!(1), None).unwrap(); // 1
        put(&mut db, "gone", json!(1), None).unwrap(); // 2
        delete(&mut db, "gone", None).unwrap(); // 3
        put(&mut db, "back", json!(1), None).unwrap(); // 4
        delete(&mut db, "back", None).unwrap(); // 5
        put(&mut db, "back", json!(2), None).unwrap(); // 6
        put(&mut db, "other", json!(1), None).unwrap(); // 7
        for from in 1..=8 {
            assert_eq!(
                db.key_unchanged_since("kept", from),
                from > 1,
                "kept, {from}"
            );
            assert_eq!(
                db.key_unchanged_since("gone", from),
                from > 3,
                "gone, {from}"
            );
            assert_eq!(
                db.key_unchanged_since("back", from),
                from > 6,
                "back, {from}"
            );
            assert!(db.key_unchanged_since("never", from), "never, {from}");
        }
        assert!(db.prefix_unchanged_since("kept", 2));
        assert!(!db.prefix_unchanged_since("", 7), "other changed at 7");
        assert!(db.prefix_unchanged_since("", 8));
        assert!(!db.prefix_unchanged_since("go", 3), "gone was deleted at 3");
        assert!(db.prefix_unchanged_since("go", 4));
    }

    #[test]
    fn a_range_is_unchanged_when_nothing_between_its_ends_changed() {
        let mut db = Database::default();
        for key in ["p/a", "p/b", "p/c", "p/d", "q"] {
            put(&mut db, key, json!(1), None).unwrap(); // 1..=5
        }
        put(&mut db, "p/b", json!(2), None).unwrap(); // 6
        delete(&mut db, "p/d", None).unwrap(); // 7
        let unchanged = |after, through| db.range_unchanged_since("p/", after, through, 6);
        assert!(unchanged(None, Some("p/a")));
        assert!(!unchanged(None, Some("p/b")), "p/b changed at 6");
        assert!(unchanged(Some("p/b"), Some("p/c")));
        assert!(!unchanged(Some("p/c"), None), "p/d was deleted at 7");
        assert!(db.range_unchanged_since("p/", Some("p/b"), None, 8));
        assert!(
            db.range_unchanged_since("q", None, None, 6),
            "q is not under p/"
        );
    }

    #[test]
    fn forgotten_deletes_make_absent_keys_unknown_before_them() {
        let mut db = Database::remembering_deletes(2);
        for key in ["a", "b", "c"] {
            put(&mut db, key, json!(1), None).unwrap(); // 1, 2, 3
        }
        delete(&mut db, "a", None).unwrap(); // 4
        delete(&mut db, "b", None).unwrap(); // 5
        assert!(db.key_unchanged_since("a", 5) && db.key_unchanged_since("x", 1));
        delete(&mut db, "c", None).unwrap(); // 6: a's record goes
        assert!(!db.key_unchanged_since("a", 4), "a's delete is forgotten");
        assert!(!db.key_unchanged_since("x", 4), "so is whether x went at 4");
        assert!(db.key_unchanged_since("a", 5) && db.key_unchanged_since("x", 5));
        assert!(db.key_unchanged_since("b", 6) && !db.key_unchanged_since("b", 5));
        assert!(!db.prefix_unchanged_since("", 4) && db.prefix_unchanged_since("", 7));
        // A record made stale by the key coming back goes without raising the floor.
        put(&mut db, "b", json!(2), None).unwrap(); // 7
        delete(&mut db, "c", None).ok(); // absent: nothing
        put(&mut db, "d", json!(1), None).unwrap(); // 8
        delete(&mut db, "d", None).unwrap(); // 9: b's stale record goes
        assert!(db.key_unchanged_since("x", 5), "the floor stayed at 4");
        // A database loaded at a revision knows no delete before it.
        let mut loaded = Database::default();
        loaded.set_revision(10);
        loaded.deletes_unknown_up_to(10);
        assert!(!loaded.key_unchanged_since("x", 10) && loaded.key_unchanged_since("x", 11));
    }

    #[test]
    fn failed_preconditions_change_nothing() {
        let mut db = Database::default();
        put(&mut db, "k", json!("x"), Some(Precondition::Absent)).unwrap();
        let err = put(&mut db, "k", json!("y"), Some(Precondition::Absent)).unwrap_err();
        assert!(matches!(
            err,
            Error::RevisionMismatch {
                current: 1,
                expected: 0,
                ..
            }
        ));
        let err = delete(&mut db, "k", Some(Precondition::ModRevision(7))).unwrap_err();
        assert!(matches!(err, Error::RevisionMismatch { current: 1, .. }));
        assert_eq!(db.revision(), 1);
        assert_eq!(*db.get("k").unwrap().value, json!("x"));
        // A matching revision succeeds.
        put(&mut db, "k", json!("z"), Some(Precondition::ModRevision(1))).unwrap();
        assert!(delete(&mut db, "k", Some(Precondition::ModRevision(2)))
            .unwrap()
            .is_some());
    }

    #[test]
    fn deleting_an_absent_key_uses_no_revision() {
        let mut db = Database::default();
        assert!(delete(&mut db, "nope", None).unwrap().is_none());
        assert!(delete(&mut db, "nope", Some(Precondition::Absent))
            .unwrap()
            .is_none());
        assert!(delete(&mut db, "nope", Some(Precondition::ModRevision(3))).is_err());
        assert_eq!(db.revision(), 0);
    }

    #[test]
    fn range_is_prefix_bounded_and_resumable() {
        let mut db = Database::default();
        for k in ["a", "ab", "abc", "abd", "ac", "b"] {
            put(&mut db, k, json!(k), None).unwrap();
        }
        let keys =
            |it: Vec<(&String, &Entry)>| it.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(db.range("ab", None).collect()), ["ab", "abc", "abd"]);
        assert_eq!(keys(db.range("ab", Some("abc")).collect()), ["abd"]);
        assert_eq!(keys(db.range("", None).collect()).len(), 6);
        assert!(db.range("z", None).next().is_none());
    }
}
