//! The lease calls of the `jsonkv.v1.JsonKv` service: each request is checked through
//! [`crate::wire`] and against the caller's token [`Scope`], then answered from the [`Store`].
//!
//! A token scoped to prefixes may grant, keep alive and look up leases, and revoke one whose
//! keys all lie in its scope (a revoke deletes them); it sees only its own keys of a lease, and
//! cannot list leases, which would show other tenants'.

use std::pin::Pin;

use futures::Stream;
use jsonkv::pb;
use tonic::{Status, Streaming};

use crate::auth::Scope;
use crate::error::Error;
use crate::lease::{LeaseId, Ttl};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::watcher_limits::WatcherPermit;
use crate::wire;

pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

pub async fn grant(
    store: &Store,
    req: pb::LeaseGrantRequest,
) -> Result<pb::LeaseGrantResponse, Error> {
    let ttl = Ttl::seconds(req.ttl_seconds)?;
    let id = match req.id {
        0 => None,
        id => Some(wire::lease_id(id)?),
    };
    let (id, ttl) = store.lease_grant(id, ttl).await?;
    Ok(pb::LeaseGrantResponse {
        id: id.get(),
        ttl_seconds: ttl.get(),
    })
}

pub async fn keep_alive(
    store: &Store,
    req: pb::LeaseKeepAliveRequest,
) -> Result<pb::LeaseKeepAliveResponse, Error> {
    let id = wire::lease_id(req.id)?;
    let ttl = store.lease_keep_alive(id).await?;
    Ok(pb::LeaseKeepAliveResponse {
        id: id.get(),
        ttl_seconds: ttl.get(),
    })
}

/// Answers each keep-alive on `requests` in order, until the client ends the stream, an error
/// other than a lease that is not live (answered with TTL 0) comes, or the server shuts down.
/// The stream holds `permit`: it counts as a watch.
pub fn keep_alive_stream(
    store: Store,
    mut requests: Streaming<pb::LeaseKeepAliveRequest>,
    permit: WatcherPermit,
    mut shutdown: Shutdown,
) -> KeepAliveStream {
    Box::pin(async_stream::stream! {
        let _permit = permit;
        loop {
            let request = tokio::select! {
                request = requests.message() => request,
                _ = shutdown.wait() => {
                    yield Err(Error::ShuttingDown.into());
                    return;
                }
            };
            let request = match request {
                Ok(Some(request)) => request,
                // The client is done (or gone).
                Ok(None) | Err(_) => return,
            };
            match keep_alive(&store, request).await {
                Ok(response) => yield Ok(response),
                Err(Error::LeaseNotFound(_) | Error::InvalidArgument { .. }) => {
                    yield Ok(pb::LeaseKeepAliveResponse { id: request.id, ttl_seconds: 0 });
                }
                Err(err) => {
                    yield Err(err.into());
                    return;
                }
            }
        }
    })
}

pub async fn revoke(
    store: &Store,
    scope: &Scope,
    req: pb::LeaseRevokeRequest,
) -> Result<pb::LeaseRevokeResponse, Error> {
    let id = wire::lease_id(req.id)?;
    if let Scope::Prefixes(_) = scope {
        let status = store.lease_time_to_live(id, true).await?;
        if status.keys.iter().any(|key| scope.key(key).is_err()) {
            return Err(Error::OutOfScope(
                "the lease holds keys outside this token's scope",
            ));
        }
    }
    let revision = store.lease_revoke(id).await?;
    Ok(pb::LeaseRevokeResponse { revision })
}

pub async fn time_to_live(
    store: &Store,
    scope: &Scope,
    req: pb::LeaseTimeToLiveRequest,
) -> Result<pb::LeaseTimeToLiveResponse, Error> {
    let id = wire::lease_id(req.id)?;
    let status = store.lease_time_to_live(id, req.keys).await?;
    Ok(pb::LeaseTimeToLiveResponse {
        id: status.id.get(),
        ttl_seconds: status.remaining_seconds,
        granted_ttl_seconds: status.granted.get(),
        keys: status
            .keys
            .into_iter()
            .filter(|key| scope.key(key).is_ok())
            .collect(),
    })
}

pub async fn list(
    store: &Store,
    scope: &Scope,
    pb::LeaseListRequest {}: pb::LeaseListRequest,
) -> Result<pb::LeaseListResponse, Error> {
    if let Scope::Prefixes(_) = scope {
        return Err(Error::OutOfScope("listing leases needs an unscoped token"));
    }
    let ids = store.lease_list().await?;
    Ok(pb::LeaseListResponse {
        ids: ids.into_iter().map(LeaseId::get).collect(),
    })
}
