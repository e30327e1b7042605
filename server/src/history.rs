//! `HistoryRing`: the most recent events, bounded by count, from which watches replay
//! (`start_revision`) and lagging watchers catch up.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::database::{Event, Revision};
use crate::error::Error;
use crate::hub::WatchTarget;

#[derive(Debug)]
pub struct HistoryRing {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every event with a revision at or after this one is held. Revisions need not be
    /// consecutive (on etcd they skip the numbers of writes outside jsonkv's prefix), so this
    /// is tracked, not derived from the first event.
    covered_from: Revision,
}

impl HistoryRing {
    /// An empty ring for a store whose next event has a revision of at least `covered_from`.
    pub fn new(capacity: usize, covered_from: Revision) -> Self {
        HistoryRing {
            events: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
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
        if self.capacity == 0 {
            self.covered_from = event.revision + 1;
            return;
        }
        if self.events.len() == self.capacity {
            if let Some(evicted) = self.events.pop_front() {
                self.covered_from = evicted.revision + 1;
            }
        }
        self.events.push_back(event);
    }

    /// The oldest revision a replay can still start from.
    pub fn oldest(&self) -> Revision {
        self.covered_from
    }

    /// Every event matching `target` with revision >= `from`. `Compacted` if events at or
    /// after `from` may have been dropped.
    pub fn since(&self, from: Revision, target: &WatchTarget) -> Result<Vec<Arc<Event>>, Error> {
        if from < self.covered_from {
            return Err(Error::Compacted {
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

    fn event(revision: Revision, key: &str) -> Arc<Event> {
        Arc::new(Event {
            revision,
            key: key.into(),
            entry: None,
        })
    }

    fn revisions(events: Vec<Arc<Event>>) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn keeps_the_newest_events_and_reports_the_oldest() {
        let mut ring = HistoryRing::new(3, 1);
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
            Err(Error::Compacted {
                requested: 2,
                oldest: 3,
            }) => {}
            other => panic!("expected Compacted, got {other:?}"),
        }
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut ring = HistoryRing::new(0, 1);
        ring.push(event(1, "k"));
        assert_eq!(ring.oldest(), 2);
        let all = WatchTarget::Prefix(String::new());
        assert!(ring.since(1, &all).is_err());
        assert!(ring.since(2, &all).unwrap().is_empty());
    }

    #[test]
    fn revisions_may_skip_numbers() {
        // As on etcd, where writes outside jsonkv's prefix take revisions too.
        let mut ring = HistoryRing::new(3, 11);
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
