//! [`follow`]: the task that keeps the view in step with etcd, applying etcd's watch events.

use std::sync::Weak;
use std::time::Duration;

use jsonkv::retry::Backoff;
use tokio::task::JoinHandle;

use super::error::etcd_error;
use super::remote::Remote;
use crate::database::Event;
use crate::error::Error;
use crate::revision::Revision;
use crate::view::View;

/// The backoff between attempts to re-watch etcd: its first step and its cap. Jittered, so the
/// servers of a cluster do not all come back to a restarted etcd in the same instant.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Follows etcd on a task until the view is dropped (or the task aborted): watches the prefix
/// from the view's revision + 1 and applies what arrives, re-watching after any failure. The
/// view is reachable while the watch is up.
pub fn follow(view: Weak<View>, remote: Remote) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let Some(from) = view.upgrade().map(|v| v.revision() + 1) else {
                return;
            };
            let result = follow_once(&view, &remote, from, &mut backoff).await;
            match view.upgrade() {
                Some(v) => v.set_reachable(false),
                None => return,
            }
            match result {
                Ok(Stop::ViewGone) => return,
                Ok(Stop::Compacted(compacted)) => {
                    tracing::error!(
                        from,
                        compacted,
                        "etcd compacted revisions this server had not applied yet; reloading the view and ending the watches that cannot continue without a gap"
                    );
                    match remote.load().await {
                        Ok((entries, revision)) => match view.upgrade() {
                            Some(v) => v.reset(entries, revision),
                            None => return,
                        },
                        Err(err) => tracing::warn!(%err, "cannot reload the view from etcd"),
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, from, "lost the etcd watch; watches stay open and resume from here once etcd answers");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    })
}

enum Stop {
    ViewGone,
    /// etcd no longer holds the revisions from where the view stopped; it holds from this one.
    Compacted(Revision),
}

/// One etcd watch, applying events until it fails.
async fn follow_once(
    view: &Weak<View>,
    remote: &Remote,
    from: Revision,
    backoff: &mut Backoff,
) -> Result<Stop, Error> {
    let mut stream = remote.watch(from, false).await?;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(Error::Unavailable("etcd closed the watch".into())),
            Err(err) => return Err(etcd_error("watch", err)),
        };
        if response.compact_revision() > 0 {
            return Ok(Stop::Compacted(response.compact_revision()));
        }
        if response.canceled() {
            return Err(Error::Unavailable(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            )));
        }
        backoff.reset();
        if response.created() {
            match view.upgrade() {
                Some(v) => v.set_reachable(true),
                None => return Ok(Stop::ViewGone),
            }
        }
        let events: Vec<Event> = response
            .events()
            .iter()
            .filter_map(|e| remote.event(e))
            .collect();
        if events.is_empty() {
            continue;
        }
        let Some(view) = view.upgrade() else {
            return Ok(Stop::ViewGone);
        };
        view.apply_filling_previous(events);
    }
}
