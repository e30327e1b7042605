//! Leases: the lease calls on [`Client`], and [`Lease`], a granted lease that keeps itself
//! alive in the background until it is dropped or revoked.
//!
//! A key written with a lease ([`Client::insert_leased`]) is deleted when the lease ends: when
//! it is revoked, or when nobody keeps it alive for its TTL (a holder that dies, or loses the
//! server for that long).

use std::sync::Arc;
use std::time::Duration;

use jsonkv::pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::consistency::store_of;
use crate::failover::CallKind;
use crate::{Client, Error};

/// A lease the server granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: i64,
    /// The TTL granted, in seconds (on a cluster, at least etcd's minimum).
    pub ttl_seconds: i64,
}

/// A lease's TTL and the time it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: i64,
    /// Seconds left before it expires, rounded up.
    pub ttl_seconds: i64,
    /// The TTL each keep-alive restarts.
    pub granted_ttl_seconds: i64,
    /// The attached keys, when asked for.
    pub keys: Vec<String>,
}

impl Client {
    /// Grants a lease of `ttl_seconds` (1 second to a year), named `id` if given (an id that is
    /// live already is refused), otherwise by the server.
    pub async fn lease_grant(
        &self,
        ttl_seconds: i64,
        id: Option<i64>,
    ) -> Result<LeaseGrant, Error> {
        let request = pb::LeaseGrantRequest {
            ttl_seconds,
            id: id.unwrap_or(0),
        };
        let response = self
            .servers
            .call(CallKind::Write, |mut rpc| async move {
                rpc.lease_grant(request).await
            })
            .await?
            .into_inner();
        Ok(LeaseGrant {
            id: response.id,
            ttl_seconds: response.ttl_seconds,
        })
    }

    /// Restarts the lease's TTL, which it returns; [`Error::NotFound`] if the lease is not live
    /// (it expired, or was revoked).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, Error> {
        // Sent again elsewhere after any failure: a second keep-alive does no harm.
        let request = pb::LeaseKeepAliveRequest { id };
        let response = self
            .servers
            .call(CallKind::Read, |mut rpc| async move {
                rpc.lease_keep_alive(request).await
            })
            .await?
            .into_inner();
        Ok(response.ttl_seconds)
    }

    /// Ends the lease now, deleting every key attached to it at one revision, which it returns.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64, Error> {
        let request = pb::LeaseRevokeRequest { id };
        let response = self
            .servers
            .call(CallKind::Write, |mut rpc| async move {
                rpc.lease_revoke(request).await
            })
            .await?;
        let store_id = store_of(response.metadata());
        let revision = response.into_inner().revision;
        self.consistency
            .observe_write(revision, store_id.as_deref());
        Ok(revision)
    }

    /// The lease's TTL, the time it has left and, with `keys`, the keys attached to it.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseStatus, Error> {
        let request = pb::LeaseTimeToLiveRequest { id, keys };
        let response = self
            .servers
            .call(CallKind::Read, |mut rpc| async move {
                rpc.lease_time_to_live(request).await
            })
            .await?
            .into_inner();
        Ok(LeaseStatus {
            id: response.id,
            ttl_seconds: response.ttl_seconds,
            granted_ttl_seconds: response.granted_ttl_seconds,
            keys: response.keys,
        })
    }

    /// Every live lease, in id order.
    pub async fn lease_list(&self) -> Result<Vec<i64>, Error> {
        let response = self
            .servers
            .call(CallKind::Read, |mut rpc| async move {
                rpc.lease_list(pb::LeaseListRequest {}).await
            })
            .await?
            .into_inner();
        Ok(response.ids)
    }

    /// Grants a lease of `ttl_seconds` and keeps it alive in the background (a keep-alive every
    /// third of its TTL) until the [`Lease`] is dropped or revoked.
    pub async fn lease(&self, ttl_seconds: i64) -> Result<Lease, Error> {
        let grant = self.lease_grant(ttl_seconds, None).await?;
        Ok(Lease::keep(self.clone(), grant))
    }
}

/// A granted lease, kept alive in the background. Dropping it stops the keep-alives and revokes
/// the lease (on the runtime it was made on, without waiting), so its keys go at once; a process
/// that dies without dropping it loses them when the TTL runs out.
#[derive(Debug)]
pub struct Lease {
    client: Client,
    grant: LeaseGrant,
    /// Set (with why) once the keep-alives learn the lease is gone.
    lost: watch::Receiver<Option<Arc<Error>>>,
    keeper: JoinHandle<()>,
    revoked: bool,
}

impl Lease {
    fn keep(client: Client, grant: LeaseGrant) -> Lease {
        let (lost_tx, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(client.clone(), grant, lost_tx));
        Lease {
            client,
            grant,
            lost,
            keeper,
            revoked: false,
        }
    }

    pub fn id(&self) -> i64 {
        self.grant.id
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.grant.ttl_seconds
    }

    /// Why the lease is gone, once a keep-alive found it so (it expired: the server was out of
    /// reach for its TTL; or someone revoked it). Its keys are gone too.
    pub fn lost(&self) -> Option<Arc<Error>> {
        self.lost.borrow().clone()
    }

    /// Resolves when the lease is found gone, with why.
    pub async fn wait_lost(&self) -> Arc<Error> {
        let mut lost = self.lost.clone();
        loop {
            if let Some(why) = lost.borrow_and_update().clone() {
                return why;
            }
            if lost.changed().await.is_err() {
                // The keeper stopped without a loss (only on revoke); wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Revokes the lease now, deleting its keys; the revision of their deletes.
    pub async fn revoke(mut self) -> Result<i64, Error> {
        self.keeper.abort();
        self.revoked = true;
        self.client.lease_revoke(self.grant.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.revoked || self.lost().is_some() {
            return;
        }
        // Best effort: without a runtime (or if the call fails) the lease expires on its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, id) = (self.client.clone(), self.grant.id);
            runtime.spawn(async move {
                let _ = client.lease_revoke(id).await;
            });
        }
    }
}

/// Keeps `grant` alive every third of its TTL until it is found gone (then says so on `lost`).
/// A failed keep-alive is tried again a second later, while the TTL lasts.
async fn keep_alive(client: Client, grant: LeaseGrant, lost: watch::Sender<Option<Arc<Error>>>) {
    let every = Duration::from_secs(grant.ttl_seconds.max(1) as u64) / 3;
    let mut next = every;
    loop {
        tokio::time::sleep(next).await;
        match client.lease_keep_alive(grant.id).await {
            Ok(_) => next = every,
            Err(err @ Error::NotFound(_)) => {
                lost.send_replace(Some(Arc::new(err)));
                return;
            }
            Err(_) => next = Duration::from_secs(1).min(every),
        }
    }
}
