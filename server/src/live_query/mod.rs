//! Live queries: a filtered prefix watch as a view of the documents that match a [`Filter`].
//!
//! Whether a change moves a document into, within or out of the view is decided from the
//! event alone, [`classify`]: its new entry against its previous one, which history keeps
//! beside every event. So the live path, a resume from `start_revision` and a lagging
//! watcher's catch-up all decide the same way, and a resumed view is exactly the one left.
//!
//! [`stage`] evaluates each filter once per event for all the watchers that share it; a
//! [`ViewSubscription`] is one watcher's place in that flow.

pub mod stage;
pub mod subscription;

use std::sync::Arc;

use crate::database::{Entry, Event};
use crate::filter::Filter;

pub use stage::LiveQueries;
pub use subscription::{ViewDelivery, ViewOpening, ViewSubscription};

/// How an event changes a filtered view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewChange {
    /// The document matches now and did not before: it was created, or changed to match.
    Entered,
    /// The document matched before and still does.
    Updated,
    /// The document matched before and no longer does: deleted, or changed not to match.
    Left,
}

/// An event of a filtered view, and how it changes the view.
#[derive(Debug, Clone)]
pub struct ViewEvent {
    pub event: Arc<Event>,
    pub change: ViewChange,
}

/// Whether `entry` (the document at `key`) is in the view of `filter`.
pub fn matches(filter: &Filter, key: &str, entry: &Entry) -> bool {
    filter.matches(key, &entry.value.json())
}

/// How `event` changes the view of `filter`; `None` when the document is in the view neither
/// before nor after it.
pub fn classify(filter: &Filter, event: &Event) -> Option<ViewChange> {
    classify_with(event, |key, entry, _| matches(filter, key, entry))
}

/// [`classify`], deciding whether an entry is in the view with `matches(key, entry, is_new)`,
/// where `is_new` says the entry is the event's new one rather than its previous one.
pub fn classify_with(
    event: &Event,
    mut matches: impl FnMut(&str, &Entry, bool) -> bool,
) -> Option<ViewChange> {
    let before = event
        .previous
        .as_ref()
        .is_some_and(|e| matches(&event.key, e, false));
    let after = event
        .entry
        .as_ref()
        .is_some_and(|e| matches(&event.key, e, true));
    match (before, after) {
        (false, true) => Some(ViewChange::Entered),
        (true, true) => Some(ViewChange::Updated),
        (true, false) => Some(ViewChange::Left),
        (false, false) => None,
    }
}

/// The events of `events` that change the view of `filter`, in order.
pub fn view_events<'a>(
    filter: &'a Filter,
    events: impl IntoIterator<Item = &'a Arc<Event>> + 'a,
) -> impl Iterator<Item = ViewEvent> + 'a {
    events.into_iter().filter_map(move |event| {
        classify(filter, event).map(|change| ViewEvent {
            event: Arc::clone(event),
            change,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Doc;

    fn entry(json: &str) -> Entry {
        Entry {
            value: Arc::new(Doc::from_json_text(json.into()).unwrap()),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    fn event(previous: Option<&str>, now: Option<&str>) -> Event {
        Event {
            revision: 2,
            key: "orders/1".into(),
            entry: now.map(entry),
            previous: previous.map(entry),
            lease_end: None,
        }
    }

    #[test]
    fn a_change_is_classified_by_the_match_before_and_after() {
        let open = Filter::parse(r#"value.status == "open""#).unwrap();
        let cases = [
            (
                None,
                Some(r#"{"status":"open"}"#),
                Some(ViewChange::Entered),
            ),
            (
                Some(r#"{"status":"closed"}"#),
                Some(r#"{"status":"open"}"#),
                Some(ViewChange::Entered),
            ),
            (
                Some(r#"{"status":"open"}"#),
                Some(r#"{"status":"open","n":1}"#),
                Some(ViewChange::Updated),
            ),
            (
                Some(r#"{"status":"open"}"#),
                Some(r#"{"status":"closed"}"#),
                Some(ViewChange::Left),
            ),
            (Some(r#"{"status":"open"}"#), None, Some(ViewChange::Left)),
            (Some(r#"{"status":"closed"}"#), None, None),
            (None, Some(r#"{"other":1}"#), None),
            (Some(r#"{"status":"x"}"#), Some(r#"{"status":"y"}"#), None),
        ];
        for (before, after, want) in cases {
            assert_eq!(
                classify(&open, &event(before, after)),
                want,
                "{before:?} -> {after:?}"
            );
        }
    }
}
