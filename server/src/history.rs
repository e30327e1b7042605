//! `HistoryRing`: the most recent events, bounded by count and by the bytes of their keys and
//! values, from which watches replay (`start_revision`) and lagging watchers catch up.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::config::Config;
use crate::database::{Entry, Event};
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::revision::Revision;

/// How much history is kept: at most `events` events, and fewer once their keys and values
/// come to more than `bytes` (counted whether or not the map still shares a value, so the
/// bound errs towards less history).
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    pub events: usize,
    pub bytes: usize,
}

impl From<&Config> for HistoryBounds {
    fn from(config: &Config) -> Self {
        HistoryBounds {
            events: config.history_size,
            bytes: config.history_bytes,
        }
    }
}

/// What an event adds to the history's byte count: its key, its value and the value before it,
/// and roughly what the event, its entries and their reference counts take besides. A value
/// the map (or another event) still shares is counted anyway, so the count errs high and
/// history towards less.
fn event_bytes(event: &Event) -> usize {
    const OVERHEAD: usize = 160;
    let text = |entry: &Option<Entry>| entry.as_ref().map_or(0, |e| e.value.text().len());
    OVERHEAD + event.key.len() + text(&event.entry) + text(&event.previous)
}

#[derive(Debug)]
pub struct HistoryRing {
    events: VecDeque<Arc<Event>>,
    bounds: HistoryBounds,
    /// [`event_bytes`] of every event held.
    bytes: usize,
    /// Every event with a revision at or after this one is held. Revisions need not be
    /// consecutive (on etcd they skip the numbers of writes outside jsonkv's prefix), so this
    /// is tracked, not derived from the first event.
    covered_from: Revision,
}

impl HistoryRing {
    /// An empty ring for a store whose next event has a revision of at least `covered_from`.
    pub fn new(bounds: HistoryBounds, covered_from: Revision) -> Self {
        HistoryRing {
            events: VecDeque::with_capacity(bounds.events.min(1 << 16)),
            bounds,
            bytes: 0,
            covered_from,
        }
    }

    /// Records the next event. Revisions never go down (on etcd, one transaction by another
    /// client can change several keys at one revision).
    pub fn push(&mut self, event: Arc<Event>) {
        debug_assert!(self
            .events
            .back()
            .is_none_or(|last| last.revision <= event.revision));
        self.bytes += event_bytes(&event);
        self.events.push_back(event);
        // The newest event goes too if it alone is over the byte bound: a watcher that needs
        // it from here gets OUT_OF_RANGE, never a gap.
        while self.events.len() > self.bounds.events || self.bytes > self.bounds.bytes {
            let Some(evicted) = self.events.pop_front() else {
                break;
            };
            self.bytes -= event_bytes(&evicted);
            self.covered_from = evicted.revision + 1;
        }
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The oldest revision a replay can still start from.
    pub fn oldest(&self) -> Revision {
        self.covered_from
    }

    /// Every event matching `target` with revision >= `from`. `NotInHistory` if events at or
    /// after `from` may have been dropped.
    pub fn since(&self, from: Revision, target: &WatchTarget) -> Result<Vec<Arc<Event>>, Error> {
        if from < self.covered_from {
            return Err(Error::NotInHistory {
                requested: from,
                oldest: self.covered_from,
            });
        }
        let skip = self.events.partition_point(|e| e.revision < from);
        Ok(self
            .events
            .range(skip..)
            .filter(|e| target.matches(&e.key))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Doc;

    fn event(revision: Revision, key: &str) -> Arc<Event> {
        Arc::new(Event {
            revision,
            key: key.into(),
            entry: None,
            previous: None,
            lease_end: None,
        })
    }

    /// Bounds by count alone.
    fn count(events: usize) -> HistoryBounds {
        HistoryBounds {
            events,
            bytes: usize::MAX,
        }
    }

    fn put(revision: Revision, key: &str, text: &str) -> Arc<Event> {
        Arc::new(Event {
            revision,
            key: key.into(),
            entry: Some(Entry {
                value: Arc::new(Doc::from_stored_text(text.to_owned()).unwrap()),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: None,
            }),
            previous: None,
            lease_end: None,
        })
    }

    #[test]
    fn large_values_are_dropped_before_the_count_is_reached() {
        let value = format!("\"{}\"", "v".repeat(1000));
        let one = event_bytes(&put(1, "k", &value));
        let mut ring = HistoryRing::new(
            HistoryBounds {
                events: 100,
                bytes: 3 * one,
            },
            1,
        );
        for r in 1..=5 {
            ring.push(put(r, "k", &value));
        }
        let all = WatchTarget::Prefix(String::new());
        assert_eq!(ring.oldest(), 3);
        assert_eq!(revisions(ring.since(3, &all).unwrap()), [3, 4, 5]);
        assert!(ring.since(2, &all).is_err());
        // Small events fit many to the same budget: dropping one large event made room for
        // seven deletes, which hold no value.
        for r in 6..=12 {
            ring.push(event(r, "k"));
        }
        assert_eq!(ring.oldest(), 4);
        assert_eq!(
            revisions(ring.since(4, &all).unwrap()),
            [4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        // One event over the whole budget leaves nothing, and says so.
        let huge = format!("\"{}\"", "v".repeat(4 * one));
        ring.push(put(13, "k", &huge));
        assert_eq!(ring.oldest(), 14);
        assert!(ring.since(13, &all).is_err());
        assert!(ring.since(14, &all).unwrap().is_empty());
    }

    fn revisions(events: Vec<Arc<Event>>) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn keeps_the_newest_events_and_reports_the_oldest() {
        let mut ring = HistoryRing::new(count(3), 1);
        assert_eq!(ring.oldest(), 1);
        for r in 1..=5 {
            ring.push(event(r, if r % 2 == 0 { "even" } else { "odd" }));
        }
        assert_eq!(ring.oldest(), 3);
        let all = WatchTarget::Prefix(String::new());
        assert_eq!(revisions(ring.since(3, &all).unwrap()), [3, 4, 5]);
        assert_eq!(revisions(ring.since(4, &all).unwrap()), [4, 5]);
        let odd = WatchTarget::Key("odd".into());
        assert_eq!(revisions(ring.since(3, &odd).unwrap()), [3, 5]);
        // The future is not an error: there is simply nothing yet.
        assert!(ring.since(9, &all).unwrap().is_empty());
        match ring.since(2, &all) {
            Err(Error::NotInHistory {
                requested: 2,
                oldest: 3,
            }) => {}
            other => panic!("expected NotInHistory, got {other:?}"),
        }
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut ring = HistoryRing::new(count(0), 1);
        ring.push(event(1, "k"));
        assert_eq!(ring.oldest(), 2);
        let all = WatchTarget::Prefix(String::new());
        assert!(ring.since(1, &all).is_err());
        assert!(ring.since(2, &all).unwrap().is_empty());
    }

    #[test]
    fn revisions_may_skip_numbers() {
        // As on etcd, where writes outside jsonkv's prefix take revisions too.
        let mut ring = HistoryRing::new(count(3), 11);
        for r in [12, 15, 16, 20] {
            ring.push(event(r, "k"));
        }
        // 12 was dropped, so 13 and 14 (which had no event) are still covered: nothing lost.
        assert_eq!(ring.oldest(), 13);
        let all = WatchTarget::Prefix(String::new());
        assert_eq!(revisions(ring.since(13, &all).unwrap()), [15, 16, 20]);
        assert_eq!(revisions(ring.since(17, &all).unwrap()), [20]);
        assert!(ring.since(12, &all).is_err());
    }
}
