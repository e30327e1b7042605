//! [`EtcdReplay`]: a watch resume older than the view's history, served from etcd's history.

use std::sync::Arc;

use etcd_client::WatchStream;
use futures::future::BoxFuture;

use super::error::etcd_error;
use super::remote::Remote;
use crate::backend::Replay;
use crate::database::Event;
use crate::error::Error;
use crate::hub::WatchTarget;
use crate::revision::Revision;

/// A watch resume older than the local history, served from etcd's history: the events
/// matching `target` from the requested revision up to `until` (the revision at which the
/// watcher subscribed locally; everything after comes from the local subscription).
pub struct EtcdReplay {
    remote: Remote,
    stream: Option<WatchStream>,
    target: WatchTarget,
    requested: Revision,
    until: Revision,
    /// An event past `until` has been seen: nothing more to replay.
    finished: bool,
}

impl EtcdReplay {
    pub fn new(remote: Remote, target: WatchTarget, from: Revision, until: Revision) -> EtcdReplay {
        EtcdReplay {
            remote,
            stream: None,
            target,
            requested: from,
            until,
            finished: false,
        }
    }

    /// The next matching events at or before `until`; `None` once etcd has shown an event
    /// past `until` (so none at or before it can follow). etcd's watch covers the whole prefix,
    /// not just the target, so that any later write ends the replay.
    async fn next_events(&mut self) -> Result<Option<Vec<Arc<Event>>>, Error> {
        while !self.finished {
            if self.stream.is_none() {
                self.stream = Some(self.remote.watch(self.requested, true).await?);
            }
            let stream = self.stream.as_mut().expect("just opened");
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(Error::Unavailable(
                        "etcd closed the watch while replaying history; resume the watch".into(),
                    ))
                }
                Err(err) => return Err(etcd_error("watch (replaying history)", err)),
            };
            if response.compact_revision() > 0 {
                return Err(Error::NotInHistory {
                    requested: self.requested,
                    oldest: response.compact_revision(),
                });
            }
            if response.canceled() {
                return Err(Error::Unavailable(format!(
                    "etcd cancelled the watch while replaying history: {}",
                    response.cancel_reason()
                )));
            }
            let mut events = Vec::new();
            for event in response.events() {
                let Some(event) = self.remote.event(event) else {
                    continue;
                };
                if event.revision > self.until {
                    self.finished = true;
                    break;
                }
                if self.target.matches(&event.key) {
                    events.push(Arc::new(event));
                }
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
        // Dropping etcd's watch stream cancels it there.
        self.stream = None;
        Ok(None)
    }
}

impl Replay for EtcdReplay {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Vec<Arc<Event>>>, Error>> {
        Box::pin(self.next_events())
    }
}
