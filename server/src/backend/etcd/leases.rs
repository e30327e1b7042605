//! Lease requests: jsonkv's leases on etcd are etcd's own, granted, kept alive and revoked
//! through it, so they outlive any one jsonkv server and any server can refresh them. etcd
//! deletes a lease's keys itself; the follower sees those deletes like any other (etcd's watch
//! does not say a lease caused them).

use etcd_client::{LeaseGrantOptions, LeaseTimeToLiveOptions};

use super::remote::{header_revision, Remote};
use crate::error::Error;
use crate::lease::{LeaseId, LeaseStatus, Ttl};
use crate::revision::Revision;

impl Remote {
    /// Grants a lease of `ttl` (etcd may raise it to its minimum), named `id` if given.
    pub async fn lease_grant(
        &self,
        id: Option<LeaseId>,
        ttl: Ttl,
    ) -> Result<(LeaseId, Ttl), Error> {
        let response = self
            .call_about("lease grant", id, || {
                let mut client = self.client.clone();
                let options = id.map(|id| LeaseGrantOptions::new().with_id(id.get()));
                async move { client.lease_grant(ttl.get(), options).await }
            })
            .await?;
        let lease = LeaseId::new(response.id())
            .ok_or_else(|| Error::Internal(format!("etcd granted lease {}", response.id())))?;
        // etcd's minimum TTL may be above the one asked for; a TTL beyond jsonkv's maximum was
        // refused before asking.
        let ttl = Ttl::seconds(response.ttl()).unwrap_or(ttl);
        Ok((lease, ttl))
    }

    /// Restarts the lease's TTL: one round of etcd's keep-alive stream.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<Ttl, Error> {
        let ttl = self
            .call_about("lease keep-alive", Some(id), || {
                let mut client = self.client.clone();
                async move {
                    // Opening the stream sends the first keep-alive and fails if etcd says
                    // the lease is gone; its answer is not handed out, so a second one is
                    // sent for the TTL.
                    let (mut keeper, mut stream) = client.lease_keep_alive(id.get()).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map_or(0, |answer| answer.ttl()))
                }
            })
            .await?;
        // A TTL of 0 or less: etcd no longer has the lease.
        Ttl::seconds(ttl).map_err(|_| Error::LeaseNotFound(id.get()))
    }

    /// Revokes the lease (etcd deletes its keys at one revision): the revision etcd was at.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Revision, Error> {
        let response = self
            .call_about("lease revoke", Some(id), || {
                let mut client = self.client.clone();
                async move { client.lease_revoke(id.get()).await }
            })
            .await?;
        header_revision(response.header())
    }

    /// The lease's granted TTL, the seconds it has left, and (with `keys`) its keys under
    /// jsonkv's prefix.
    pub async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseStatus, Error> {
        let response = self
            .call_about("lease time-to-live", Some(id), || {
                let mut client = self.client.clone();
                let options = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
                async move { client.lease_time_to_live(id.get(), options).await }
            })
            .await?;
        // etcd answers an unknown lease with a TTL of -1.
        if response.ttl() < 0 {
            return Err(Error::LeaseNotFound(id.get()));
        }
        let granted = Ttl::seconds(response.granted_ttl()).map_err(|_| {
            Error::Internal(format!(
                "etcd granted lease {id} a TTL of {}",
                response.granted_ttl()
            ))
        })?;
        // etcd lists them in no particular order; the contract says key order.
        let mut keys: Vec<String> = response
            .keys()
            .iter()
            .filter_map(|key| self.jsonkv_key(key).map(str::to_owned))
            .collect();
        keys.sort_unstable();
        Ok(LeaseStatus {
            id,
            granted,
            remaining_seconds: response.ttl(),
            keys,
        })
    }

    /// Every lease etcd has: leases are cluster-wide, so this counts those of other prefixes
    /// and other etcd clients too.
    pub async fn lease_list(&self) -> Result<Vec<LeaseId>, Error> {
        let response = self
            .call("lease list", || {
                let mut client = self.client.clone();
                async move { client.leases().await }
            })
            .await?;
        let mut ids: Vec<LeaseId> = response
            .leases()
            .iter()
            .filter_map(|lease| LeaseId::new(lease.id()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }
}
