//! The `Database`: the key -> JSON map with per-key revision metadata and the revision of the
//! last committed change. Pure, synchronous state. A change is first *planned*
//! ([`plan_put`], [`plan_delete`]: precondition check and new metadata, nothing changed), then,
//! once durable, *applied* ([`Database::apply`]). [`crate::store::Store`] does the sequencing.
//!
//! The map also remembers recent deletes ([`Deletes`]), so that it can tell whether a key or
//! prefix changed since a revision after history has let that revision's events go
//! ([`Database::key_unchanged_since`]): a quiet watch can then resume from however long ago.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, Deref};
use std::sync::{Arc, OnceLock};

use serde_json::Value as Json;

use crate::error::Error;

/// A store revision: 0 for an empty store, then one more for every change.
pub type Revision = i64;

/// A stored JSON document, kept as its compact JSON text: what JSON-encoded reads, every
/// watcher of a fan-out and the log encoder all send or write as is. The parsed form is made
/// only when something needs it (a `google.protobuf.Value` read) and then kept. Derefs to it.
///
/// Text rather than a parsed tree because a tree is many small allocations per document (an
/// object's map, each key, each string), which the commit thread then frees when history lets
/// an event go, across threads from where they were made; one string is one allocation, is
/// smaller, and recovery can load it without parsing.
#[derive(Debug)]
pub struct Doc {
    text: String,
    json: OnceLock<Json>,
}

impl Doc {
    /// The document `json`, as the compact text `serde_json` writes (every digit, keys in
    /// their order).
    pub fn new(json: Json) -> Doc {
        Doc {
            text: jsonkv::value::to_json_text(&json),
            json: OnceLock::new(),
        }
    }

    /// A document from JSON text as a client sent it: kept as it is when it is already in
    /// compact form, rewritten into it otherwise (see [`crate::json_text`]).
    pub fn from_json_text(text: String) -> Result<Doc, jsonkv::value::ValueError> {
        Ok(Doc {
            text: crate::json_text::compact(text)?,
            json: OnceLock::new(),
        })
    }

    /// A document from text that [`Doc::text`] produced (read back from the log, or from
    /// etcd): checked to be JSON, without building the parsed form. Text written by anything
    /// else (another etcd client under jsonkv's prefix) is kept as it was written.
    pub fn from_stored_text(text: String) -> Result<Doc, String> {
        crate::json_text::check(&text).map_err(|e| format!("value is not JSON: {e}"))?;
        Ok(Doc {
            text,
            json: OnceLock::new(),
        })
    }

    /// Compact JSON text, exactly as `serde_json` writes it.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl From<Json> for Doc {
    fn from(json: Json) -> Doc {
        Doc::new(json)
    }
}

impl Deref for Doc {
    type Target = Json;
    fn deref(&self) -> &Json {
        self.json.get_or_init(|| {
            jsonkv::value::parse_json_text(&self.text)
                .expect("a Doc's text is JSON: it was written from a value or checked")
        })
    }
}

/// Two documents are equal when their texts are: the same values with keys in the same order.
impl PartialEq for Doc {
    fn eq(&self, other: &Doc) -> bool {
        self.text == other.text
    }
}

impl PartialEq<Json> for Doc {
    fn eq(&self, other: &Json) -> bool {
        **self == *other
    }
}

/// A stored value and its revision metadata. Cloning is cheap: the value is shared with the
/// events and history that mention it, so a 1 MiB document is never copied per watcher.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Arc<Doc>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
}

/// One change, as told to watchers and kept in history.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    /// `Some` for a put (the new entry), `None` for a delete.
    pub entry: Option<Entry>,
}

/// A condition on a key's current mod revision; 0 means "the key is absent".
pub type ExpectedModRevision = Option<Revision>;

/// The keyspace at one revision.
#[derive(Debug, Default)]
pub struct Database {
    entries: BTreeMap<String, Entry>,
    revision: Revision,
    deletes: Deletes,
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
    /// The revision of the last change (0 if none).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
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
        from > self.deletes.floor
            && self.range(prefix, None).all(|(_, e)| e.mod_revision < from)
            && under(&self.deletes.by_key, prefix, None).all(|(_, &deleted)| deleted < from)
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
            Some(entry) => match self.entries.get_mut(&event.key) {
                Some(slot) => *slot = entry.clone(),
                None => {
                    self.entries.insert(event.key.clone(), entry.clone());
                    self.deletes.forget(&event.key);
                }
            },
            None => {
                self.entries.remove(&event.key);
                self.deletes.record(&event.key, event.revision);
            }
        }
        self.revision = event.revision;
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
                self.entries.insert(event.key, entry);
            }
            None => {
                self.entries.remove(&event.key);
                self.deletes.record(&event.key, event.revision);
            }
        }
    }

    /// Installs a snapshot entry, without moving the revision (see [`Database::set_revision`]).
    pub fn load(&mut self, key: String, entry: Entry) {
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
/// checks `expected` and computes the new metadata. Changes nothing.
pub fn plan_put(
    current: Option<&Entry>,
    key: String,
    value: Arc<Doc>,
    expected: ExpectedModRevision,
    revision: Revision,
) -> Result<Event, Error> {
    check(&key, expected, current)?;
    let entry = Entry {
        value,
        create_revision: current.map_or(revision, |c| c.create_revision),
        mod_revision: revision,
        version: current.map_or(1, |c| c.version + 1),
    };
    Ok(Event {
        revision,
        key,
        entry: Some(entry),
    })
}

/// Plans deleting `key` as change `revision`. `Ok(None)` when the key is absent and `expected`
/// allows that: nothing to do, and no revision is used.
pub fn plan_delete(
    current: Option<&Entry>,
    key: &str,
    expected: ExpectedModRevision,
    revision: Revision,
) -> Result<Option<Event>, Error> {
    check(key, expected, current)?;
    Ok(current.map(|_| Event {
        revision,
        key: key.to_owned(),
        entry: None,
    }))
}

fn check(key: &str, expected: ExpectedModRevision, current: Option<&Entry>) -> Result<(), Error> {
    let current_mod_revision = current.map_or(0, |e| e.mod_revision);
    match expected {
        Some(want) if want != current_mod_revision => Err(Error::RevisionMismatch {
            key: key.to_owned(),
            expected: want,
            current: current_mod_revision,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Plans and applies a put against `db`, as the store does.
    fn put(
        db: &mut Database,
        key: &str,
        value: Json,
        expected: ExpectedModRevision,
    ) -> Result<Event, Error> {
        let event = plan_put(
            db.get(key),
            key.into(),
            Arc::new(Doc::new(value)),
            expected,
            db.revision() + 1,
        )?;
        db.apply(&event);
        Ok(event)
    }

    fn delete(
        db: &mut Database,
        key: &str,
        expected: ExpectedModRevision,
    ) -> Result<Option<Event>, Error> {
        let event = plan_delete(db.get(key), key, expected, db.revision() + 1)?;
        if let Some(event) = &event {
            db.apply(event);
        }
        Ok(event)
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
        put(&mut db, "k", json!("x"), Some(0)).unwrap();
        let err = put(&mut db, "k", json!("y"), Some(0)).unwrap_err();
        assert!(matches!(
            err,
            Error::RevisionMismatch {
                current: 1,
                expected: 0,
                ..
            }
        ));
        let err = delete(&mut db, "k", Some(7)).unwrap_err();
        assert!(matches!(err, Error::RevisionMismatch { current: 1, .. }));
        assert_eq!(db.revision(), 1);
        assert_eq!(*db.get("k").unwrap().value, json!("x"));
        // A matching revision succeeds.
        put(&mut db, "k", json!("z"), Some(1)).unwrap();
        assert!(delete(&mut db, "k", Some(2)).unwrap().is_some());
    }

    #[test]
    fn deleting_an_absent_key_uses_no_revision() {
        let mut db = Database::default();
        assert!(delete(&mut db, "nope", None).unwrap().is_none());
        assert!(delete(&mut db, "nope", Some(0)).unwrap().is_none());
        assert!(delete(&mut db, "nope", Some(3)).is_err());
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
