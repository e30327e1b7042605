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
}

impl HistoryRing {
    pub fn new(capacity: usize) -> Self {
        HistoryRing {
            events: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Records the next event. Events arrive with consecutive revisions.
    pub fn push(&mut self, event: Arc<Event>) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        debug_assert!(self
            .events
            .back()
            .is_none_or(|last| last.revision + 1 == event.revision));
        self.events.push_back(event);
    }

    /// The oldest revision that can still be replayed, given the store is at `current`.
    pub fn oldest(&self, current: Revision) -> Revision {
        self.events.front().map_or(current + 1, |e| e.revision)
    }

    /// Every event matching `target` with revision >= `from`, given the store is at `current`.
    /// `OutOfRange` if some revision in `from..=current` is no longer held.
    pub fn since(
        &self,
        from: Revision,
        current: Revision,
        target: &WatchTarget,
    ) -> Result<Vec<Arc<Event>>, Error> {
        let oldest = self.oldest(current);
        if from > current {
            return Ok(Vec::new());
        }
        if from < oldest {
            return Err(Error::Compacted {
                requested: from,
                oldest,
            });
        }
        // Revisions are consecutive, so the position of `from` is a subtraction, not a search.
        let skip = usize::try_from(from - oldest).expect("from >= oldest");
        Ok(self
            .events
            .iter()
            .skip(skip)
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
        let mut ring = HistoryRing::new(3);
        assert_eq!(ring.oldest(0), 1);
        for r in 1..=5 {
            ring.push(event(r, if r % 2 == 0 { "even" } else { "odd" }));
        }
        assert_eq!(ring.oldest(5), 3);
        let all = WatchTarget::Prefix(String::new());
        assert_eq!(revisions(ring.since(3, 5, &all).unwrap()), [3, 4, 5]);
        assert_eq!(revisions(ring.since(4, 5, &all).unwrap()), [4, 5]);
        let odd = WatchTarget::Key("odd".into());
        assert_eq!(revisions(ring.since(3, 5, &odd).unwrap()), [3, 5]);
        // The future is not an error: there is simply nothing yet.
        assert!(ring.since(9, 5, &all).unwrap().is_empty());
        match ring.since(2, 5, &all) {
            Err(Error::Compacted {
                requested: 2,
                oldest: 3,
            }) => {}
            other => panic!("expected Compacted, got {other:?}"),
        }
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut ring = HistoryRing::new(0);
        ring.push(event(1, "k"));
        assert_eq!(ring.oldest(1), 2);
        let all = WatchTarget::Prefix(String::new());
        assert!(ring.since(1, 1, &all).is_err());
        assert!(ring.since(2, 1, &all).unwrap().is_empty());
    }
}
