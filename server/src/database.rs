//! The `Database`: the key -> JSON map with per-key revision metadata and the global revision
//! counter. Pure, synchronous state; [`crate::store::Store`] puts it behind a lock and tells
//! watchers about the [`Event`]s it returns.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::error::Error;

/// A store revision: 0 for an empty store, then one more for every change.
pub type Revision = i64;

/// A stored value and its revision metadata. Cloning is cheap: the value is shared with the
/// events and history that mention it, so a 1 MiB document is never copied per watcher.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Arc<Json>,
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

/// The result of a change: the event it produced and the key's previous entry.
#[derive(Debug)]
pub struct Change {
    pub event: Arc<Event>,
    pub previous: Option<Entry>,
}

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

    /// Sets `key` to `value` if `expected` holds, as the next revision.
    pub fn put(
        &mut self,
        key: String,
        value: Arc<Json>,
        expected: ExpectedModRevision,
    ) -> Result<Change, Error> {
        let previous = self.entries.get(&key).cloned();
        check(&key, expected, previous.as_ref())?;
        let revision = self.revision + 1;
        let entry = Entry {
            value,
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
        };
        self.revision = revision;
        self.entries.insert(key.clone(), entry.clone());
        let event = Arc::new(Event {
            revision,
            key,
            entry: Some(entry),
        });
        Ok(Change { event, previous })
    }

    /// Deletes `key` if `expected` holds. `Ok(None)` when the key is absent and `expected`
    /// allows that (nothing changes, no revision is used).
    pub fn delete(
        &mut self,
        key: &str,
        expected: ExpectedModRevision,
    ) -> Result<Option<Change>, Error> {
        let current = self.entries.get(key);
        check(key, expected, current)?;
        let Some(previous) = self.entries.remove(key) else {
            return Ok(None);
        };
        self.revision += 1;
        let event = Arc::new(Event {
            revision: self.revision,
            key: key.to_owned(),
            entry: None,
        });
        Ok(Some(Change {
            event,
            previous: Some(previous),
        }))
    }
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

    fn v(j: Json) -> Arc<Json> {
        Arc::new(j)
    }

    #[test]
    fn revisions_and_versions_follow_changes() {
        let mut db = Database::default();
        assert_eq!(db.revision(), 0);
        db.put("a".into(), v(json!(1)), None).unwrap();
        db.put("b".into(), v(json!(2)), None).unwrap();
        let change = db.put("a".into(), v(json!(3)), None).unwrap();
        assert_eq!(change.event.revision, 3);
        assert_eq!(*change.previous.unwrap().value, json!(1));
        let a = db.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
        let deleted = db.delete("a", None).unwrap().unwrap();
        assert_eq!(deleted.event.revision, 4);
        assert!(deleted.event.entry.is_none());
        // Re-creating starts a new life: new create revision, version 1.
        db.put("a".into(), v(json!(5)), None).unwrap();
        let a = db.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    }

    #[test]
    fn failed_preconditions_change_nothing() {
        let mut db = Database::default();
        db.put("k".into(), v(json!("x")), Some(0)).unwrap();
        let err = db.put("k".into(), v(json!("y")), Some(0)).unwrap_err();
        assert!(matches!(
            err,
            Error::RevisionMismatch {
                current: 1,
                expected: 0,
                ..
            }
        ));
        let err = db.delete("k", Some(7)).unwrap_err();
        assert!(matches!(err, Error::RevisionMismatch { current: 1, .. }));
        assert_eq!(db.revision(), 1);
        assert_eq!(*db.get("k").unwrap().value, json!("x"));
        // A matching revision succeeds.
        db.put("k".into(), v(json!("z")), Some(1)).unwrap();
        assert!(db.delete("k", Some(2)).unwrap().is_some());
    }

    #[test]
    fn deleting_an_absent_key_uses_no_revision() {
        let mut db = Database::default();
        assert!(db.delete("nope", None).unwrap().is_none());
        assert!(db.delete("nope", Some(0)).unwrap().is_none());
        assert!(db.delete("nope", Some(3)).is_err());
        assert_eq!(db.revision(), 0);
    }

    #[test]
    fn range_is_prefix_bounded_and_resumable() {
        let mut db = Database::default();
        for k in ["a", "ab", "abc", "abd", "ac", "b"] {
            db.put(k.into(), v(json!(k)), None).unwrap();
        }
        let keys =
            |it: Vec<(&String, &Entry)>| it.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(db.range("ab", None).collect()), ["ab", "abc", "abd"]);
        assert_eq!(keys(db.range("ab", Some("abc")).collect()), ["abd"]);
        assert_eq!(keys(db.range("", None).collect()).len(), 6);
        assert!(db.range("z", None).next().is_none());
    }
}
