//! `WatchHub`: the `broadcast` senders that carry events to watchers, one per watched key and
//! one per watched prefix, so a write reaches only the watchers it concerns.
//!
//! Cost for a writer: one hash lookup for the key, plus one per *distinct length* of watched
//! prefix. Ten thousand watchers on other keys add nothing to that. A sender is removed as soon
//! as its last receiver is released, so abandoned keys do not accumulate (mini-redis keeps them).

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::database::Event;

/// What a watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    Key(String),
    Prefix(String),
}

impl WatchTarget {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            WatchTarget::Key(k) => k == key,
            WatchTarget::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// What one channel is sent for one revision: its event, or for a change of several keys at
/// one revision, every one of them the channel's watchers cover, in the order applied. One
/// message per revision, so that a watcher never holds part of a revision: it delivers it, or
/// (lagging) catches it up whole from history.
pub type Batch = Arc<[Arc<Event>]>;
pub type EventSender = broadcast::Sender<Batch>;
pub type EventReceiver = broadcast::Receiver<Batch>;

#[derive(Debug)]
pub struct WatchHub {
    keys: HashMap<String, EventSender>,
    prefixes: HashMap<String, EventSender>,
    /// Byte length of each watched prefix -> how many watched prefixes have it.
    prefix_lengths: BTreeMap<usize, usize>,
    capacity: usize,
}

impl WatchHub {
    /// `capacity` is each sender's buffer: how far a watcher may fall behind before it must
    /// catch up from history.
    pub fn new(capacity: usize) -> Self {
        WatchHub {
            keys: HashMap::new(),
            prefixes: HashMap::new(),
            prefix_lengths: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn subscribe(&mut self, target: &WatchTarget) -> EventReceiver {
        let capacity = self.capacity;
        match target {
            WatchTarget::Key(key) => self
                .keys
                .entry(key.clone())
                .or_insert_with(|| broadcast::channel(capacity).0)
                .subscribe(),
            WatchTarget::Prefix(prefix) => {
                if let Some(tx) = self.prefixes.get(prefix) {
                    return tx.subscribe();
                }
                let (tx, rx) = broadcast::channel(capacity);
                self.prefixes.insert(prefix.clone(), tx);
                *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                rx
            }
        }
    }

    /// Drops the sender for `target` if no receiver is left. Call after dropping a receiver.
    pub fn release(&mut self, target: &WatchTarget) {
        match target {
            WatchTarget::Key(key) => {
                if self
                    .keys
                    .get(key)
                    .is_some_and(|tx| tx.receiver_count() == 0)
                {
                    self.keys.remove(key);
                }
            }
            WatchTarget::Prefix(prefix) => {
                if self
                    .prefixes
                    .get(prefix)
                    .is_some_and(|tx| tx.receiver_count() == 0)
                {
                    self.prefixes.remove(prefix);
                    if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                        *count -= 1;
                        if *count == 0 {
                            self.prefix_lengths.remove(&prefix.len());
                        }
                    }
                }
            }
        }
    }

    /// Whether any watcher covers `key` (its own key, or a prefix of it).
    pub fn watches(&self, key: &str) -> bool {
        self.keys.contains_key(key) || self.prefix_senders(key).next().is_some()
    }

    /// The senders of the watched prefixes of `key`.
    fn prefix_senders<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a EventSender> + 'a {
        self.prefix_lengths
            .keys()
            .take_while(move |&&len| len <= key.len())
            .filter(move |&&len| key.is_char_boundary(len))
            .filter_map(move |&len| self.prefixes.get(&key[..len]))
    }

    /// The senders of `key` itself and of every watched prefix of it.
    fn senders<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a EventSender> + 'a {
        self.keys
            .get(key)
            .into_iter()
            .chain(self.prefix_senders(key))
    }

    /// Sends the events of one revision to every watcher they concern, as one [`Batch`] per
    /// channel.
    pub fn publish(&self, revision: &[Arc<Event>]) {
        // An error from send only means every receiver is gone; release() drops the sender.
        if let [event] = revision {
            // The common case: one allocation, shared by every channel, and only if one exists.
            let mut batch: Option<Batch> = None;
            for tx in self.senders(&event.key) {
                let batch = batch.get_or_insert_with(|| Arc::from([Arc::clone(event)]));
                let _ = tx.send(Arc::clone(batch));
            }
            return;
        }
        // Each channel's share, in the order of the events, found by the sender's address.
        let mut index: HashMap<*const EventSender, usize> = HashMap::new();
        let mut shares: Vec<(&EventSender, Vec<Arc<Event>>)> = Vec::new();
        for event in revision {
            for tx in self.senders(&event.key) {
                match index.entry(std::ptr::from_ref(tx)) {
                    Slot::Occupied(at) => shares[*at.get()].1.push(Arc::clone(event)),
                    Slot::Vacant(at) => {
                        at.insert(shares.len());
                        shares.push((tx, vec![Arc::clone(event)]));
                    }
                }
            }
        }
        for (tx, share) in shares {
            let _ = tx.send(share.into());
        }
    }

    /// Number of live senders (keys and prefixes); for tests and metrics.
    /// Drops every sender: each receiver ends (`Closed`) once it has drained what it holds.
    pub fn close_all(&mut self) {
        self.keys.clear();
        self.prefixes.clear();
        self.prefix_lengths.clear();
    }

    pub fn sender_count(&self) -> usize {
        self.keys.len() + self.prefixes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: i64, key: &str) -> Arc<Event> {
        Arc::new(Event {
            revision,
            key: key.into(),
            entry: None,
            previous: None,
            lease_end: None,
        })
    }

    #[test]
    fn events_reach_key_and_prefix_watchers_only() {
        let mut hub = WatchHub::new(16);
        let mut key = hub.subscribe(&WatchTarget::Key("user/1".into()));
        let mut users = hub.subscribe(&WatchTarget::Prefix("user/".into()));
        let mut all = hub.subscribe(&WatchTarget::Prefix(String::new()));
        let mut other = hub.subscribe(&WatchTarget::Key("user/2".into()));
        let mut unicode = hub.subscribe(&WatchTarget::Prefix("é".into()));

        hub.publish(&[event(1, "user/1")]);
        hub.publish(&[event(2, "team/1")]);
        hub.publish(&[event(3, "éa")]);

        assert_eq!(key.try_recv().unwrap()[0].revision, 1);
        assert!(key.try_recv().is_err());
        assert_eq!(users.try_recv().unwrap()[0].revision, 1);
        assert!(users.try_recv().is_err());
        let got: Vec<_> = std::iter::from_fn(|| all.try_recv().ok())
            .map(|batch| batch[0].revision)
            .collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(other.try_recv().is_err());
        assert_eq!(unicode.try_recv().unwrap()[0].revision, 3);
    }

    /// The keys of a batch, in order.
    fn keys(batch: &Batch) -> Vec<&str> {
        batch.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn a_revision_of_several_keys_reaches_each_channel_as_one_batch_of_its_share() {
        let mut hub = WatchHub::new(16);
        let mut a = hub.subscribe(&WatchTarget::Key("p/a".into()));
        let mut users = hub.subscribe(&WatchTarget::Prefix("p/".into()));
        let mut all = hub.subscribe(&WatchTarget::Prefix(String::new()));
        let mut q = hub.subscribe(&WatchTarget::Prefix("q/".into()));

        hub.publish(&[event(5, "p/a"), event(5, "p/b"), event(5, "r")]);

        assert_eq!(keys(&a.try_recv().unwrap()), ["p/a"]);
        assert_eq!(keys(&users.try_recv().unwrap()), ["p/a", "p/b"]);
        assert_eq!(keys(&all.try_recv().unwrap()), ["p/a", "p/b", "r"]);
        for rx in [&mut a, &mut users, &mut all, &mut q] {
            assert!(
                rx.try_recv().is_err(),
                "one batch per channel, none for others"
            );
        }
    }

    #[test]
    fn watches_tells_whether_a_key_has_watchers() {
        let mut hub = WatchHub::new(4);
        assert!(!hub.watches("user/1"));
        let _key = hub.subscribe(&WatchTarget::Key("user/1".into()));
        let _prefix = hub.subscribe(&WatchTarget::Prefix("team/".into()));
        let _unicode = hub.subscribe(&WatchTarget::Prefix("é".into()));
        assert!(hub.watches("user/1"));
        assert!(!hub.watches("user/10"));
        assert!(hub.watches("team/1"));
        assert!(!hub.watches("team"));
        assert!(hub.watches("éa"));
        assert!(!hub.watches("e"));
        let _all = hub.subscribe(&WatchTarget::Prefix(String::new()));
        assert!(hub.watches("anything"));
    }

    #[test]
    fn senders_are_dropped_with_their_last_receiver() {
        let mut hub = WatchHub::new(4);
        let target = WatchTarget::Prefix("p".into());
        let a = hub.subscribe(&target);
        let b = hub.subscribe(&target);
        let k = hub.subscribe(&WatchTarget::Key("k".into()));
        assert_eq!(hub.sender_count(), 2);
        drop(a);
        hub.release(&target);
        assert_eq!(hub.sender_count(), 2, "one receiver still listens");
        drop(b);
        hub.release(&target);
        drop(k);
        hub.release(&WatchTarget::Key("k".into()));
        assert_eq!(hub.sender_count(), 0);
        assert!(hub.prefix_lengths.is_empty());
    }
}
