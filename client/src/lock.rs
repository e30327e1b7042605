//! [`Client::lock`] and [`Client::election`]: the recipes of etcd's `concurrency` package, on
//! leases, create-only writes and watches.
//!
//! Each contender writes a key of its own under `NAME/`, attached to a lease it keeps alive,
//! and only if absent. Its create revision places it in line: the key with the lowest one holds
//! the lock (or leads). A contender further back watches only the key just before its own (its
//! predecessor) until that key is deleted, then looks again: no polling, and a release wakes
//! one waiter, not all of them. A holder that dies stops keeping its lease alive, so its key is
//! deleted when the TTL runs out and the next in line takes over.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use futures::StreamExt;

use crate::lease::Lease;
use crate::watch::WatchEvent;
use crate::{Client, Entry, Error, Precondition};

/// A held lock. Dropping it (or [`LockGuard::release`]) revokes its lease, which deletes its
/// key and lets the next in line take the lock.
#[derive(Debug)]
pub struct LockGuard {
    lease: Lease,
    key: String,
    revision: i64,
}

impl LockGuard {
    /// The holder's key, `NAME/<lease id in hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key's create revision: it grows with each holder, so it can fence off the writes of
    /// a holder that lost the lock without knowing.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The lease the lock lives on. [`Lease::wait_lost`] resolves if the lock is lost (the
    /// lease expired while its holder was cut off from the server).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Releases the lock now.
    pub async fn release(self) -> Result<(), Error> {
        self.lease.revoke().await.map(|_| ())
    }
}

impl Client {
    /// Takes the lock `name`, waiting for as long as it is held by others; the lock lives on a
    /// lease of `ttl_seconds`, kept alive in the background while the guard is held.
    pub async fn lock(&self, name: &str, ttl_seconds: i64) -> Result<LockGuard, Error> {
        let lease = self.lease(ttl_seconds).await?;
        let (key, revision) = self.line_up(name, &lease, &Value::Null).await?;
        Ok(LockGuard {
            lease,
            key,
            revision,
        })
    }

    /// The election `name`: campaign to lead it, or ask who leads.
    pub fn election(&self, name: &str) -> Election {
        Election {
            client: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Writes this contender's key under `name/` with `value` and waits until it is first in
    /// line: its key and create revision.
    async fn line_up(
        &self,
        name: &str,
        lease: &Lease,
        value: &impl Serialize,
    ) -> Result<(String, i64), Error> {
        let key = format!("{name}/{:016x}", lease.id());
        let mine = self
            .insert_leased(&key, value, Some(Precondition::Absent), lease.id())
            .await?
            .revision;
        loop {
            let Some(predecessor) = self.predecessor(name, mine).await? else {
                return Ok((key, mine));
            };
            tokio::select! {
                gone = self.deleted(&predecessor) => gone?,
                why = lease.wait_lost() => {
                    return Err(Error::NotFound(format!(
                        "lost the lease while waiting in line for {name}: {why}"
                    )))
                }
            }
        }
    }

    /// The key just before `mine` in `name`'s line, if any.
    async fn predecessor(&self, name: &str, mine: i64) -> Result<Option<String>, Error> {
        let prefix = format!("{name}/");
        let mut best: Option<(i64, String)> = None;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_page::<Value>(&prefix, 0, token.as_deref())
                .await?;
            for entry in page.entries {
                if entry.create_revision < mine
                    && best
                        .as_ref()
                        .is_none_or(|(r, _)| entry.create_revision > *r)
                {
                    best = Some((entry.create_revision, entry.key));
                }
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(best.map(|(_, key)| key)),
            }
        }
    }

    /// Resolves once `key` is absent.
    async fn deleted(&self, key: &str) -> Result<(), Error> {
        let mut watch = self.watch_key::<Value>(key);
        while let Some(event) = watch.next().await {
            match event? {
                WatchEvent::Snapshot { entries, .. } if entries.is_empty() => return Ok(()),
                WatchEvent::Delete { .. } => return Ok(()),
                _ => {}
            }
        }
        Err(Error::Protocol(format!("the watch of {key} ended")))
    }
}

/// An election: contenders campaign with a proposal; the first in line leads, and the others
/// wait their turn.
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
}

/// Leading an election. Dropping it (or [`Leadership::resign`]) hands the lead to the next in
/// line.
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    client: Client,
}

impl Election {
    /// Waits until this contender leads, with `proposal` as the leader's value; on a lease of
    /// `ttl_seconds`, kept alive while leading.
    pub async fn campaign(
        &self,
        ttl_seconds: i64,
        proposal: &impl Serialize,
    ) -> Result<Leadership, Error> {
        let lease = self.client.lease(ttl_seconds).await?;
        let (key, revision) = self.client.line_up(&self.name, &lease, proposal).await?;
        Ok(Leadership {
            guard: LockGuard {
                lease,
                key,
                revision,
            },
            client: self.client.clone(),
        })
    }

    /// The leader's entry (its value is its proposal), or `None` if nobody campaigns.
    pub async fn leader<T: DeserializeOwned>(&self) -> Result<Option<Entry<T>>, Error> {
        let prefix = format!("{}/", self.name);
        let mut first: Option<Entry<T>> = None;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_page::<T>(&prefix, 0, token.as_deref())
                .await?;
            for entry in page.entries {
                if first
                    .as_ref()
                    .is_none_or(|f| entry.create_revision < f.create_revision)
                {
                    first = Some(entry);
                }
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(first),
            }
        }
    }
}

impl Leadership {
    /// The leader's key.
    pub fn key(&self) -> &str {
        self.guard.key()
    }

    /// The lease the lead lives on.
    pub fn lease(&self) -> &Lease {
        self.guard.lease()
    }

    /// Sets the leader's value to `value`, keeping its place: only while this key is still
    /// the leader's (it is gone if the lease was lost).
    pub async fn proclaim(&self, value: &impl Serialize) -> Result<i64, Error> {
        let current =
            self.client.get::<Value>(self.key()).await?.ok_or_else(|| {
                Error::NotFound(format!("no longer leading: {} is gone", self.key()))
            })?;
        let put = self
            .client
            .insert_leased(
                self.key(),
                value,
                Some(Precondition::ModRevision(current.mod_revision)),
                self.lease().id(),
            )
            .await?;
        Ok(put.revision)
    }

    /// Steps down now.
    pub async fn resign(self) -> Result<(), Error> {
        self.guard.release().await
    }
}
