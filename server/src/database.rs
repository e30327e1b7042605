//! The `Database`: the key -> JSON map with per-key revision metadata and the revision of the
//! last committed change. Pure, synchronous state. A change is first *planned*
//! ([`plan_put`], [`plan_delete`]: precondition check and new metadata, nothing changed), then,
//! once durable, *applied* ([`Database::apply`]). [`crate::store::Store`] does the sequencing.

use std::collections::BTreeMap;
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
    /// compact form, rewritten into it otherwise (see [`crate::compact`]).
    pub fn from_json_text(text: String) -> Result<Doc, jsonkv::value::ValueError> {
        Ok(Doc {
            text: crate::compact::compact_json_text(text)?,
            json: OnceLock::new(),
        })
    }

    /// A document from text that [`Doc::text`] produced (read back from the log, or from
    /// etcd): checked to be JSON, without building the parsed form. Text written by anything
    /// else (another etcd client under jsonkv's prefix) is kept as it was written.
    pub fn from_stored_text(text: String) -> Result<Doc, String> {
        crate::compact::check_json_text(&text).map_err(|e| format!("value is not JSON: {e}"))?;
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

    /// Keys starting with `prefix`, in order, strictly after `after` when given.
    pub fn range<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included(prefix),
        };
        self.entries
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
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
                }
            },
            None => {
                self.entries.remove(&event.key);
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
                self.entries.insert(event.key, entry);
            }
            None => {
                self.entries.remove(&event.key);
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
