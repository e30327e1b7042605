//! The response stream of one Backup call: the store's snapshot at one revision, read in parts
//! as the client takes them (as a watch's opening is, so writers are never held up and an unread
//! backup holds one part), encoded as a backup file ([`BackupEncoder`]) in chunks of bounded
//! size. The leases in force at the snapshot's revision come last; a key whose lease is not
//! among them (on etcd, where leases are etcd's, none is) is backed up without it.

use std::pin::Pin;

use futures::Stream;
use jsonkv::pb;
use tonic::Status;

use crate::lease::{LeaseId, Ttl};
use crate::storage::backup::BackupEncoder;
use crate::subscription::{Opening, Subscription};
use crate::watcher_limits::WatcherPermit;
use crate::wire;

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

pub fn backup_stream(
    mut sub: Subscription,
    leases: Vec<(LeaseId, Ttl)>,
    permit: WatcherPermit,
) -> BackupStream {
    Box::pin(async_stream::stream! {
        let _permit = permit;
        let Some(Opening::Snapshot { revision }) = sub.take_opening() else {
            yield Err(Status::internal("a backup opens with a snapshot"));
            return;
        };
        let chunk = |data, last, keys| pb::BackupChunk { data, revision, last, keys };
        let mut encoder = BackupEncoder::new(revision, leases);
        while let Some(part) = sub.next_snapshot_part(wire::RESPONSE_BUDGET_BYTES) {
            let part = match part {
                Ok(part) => part,
                Err(err) => {
                    tracing::warn!(%err, "backup ended");
                    yield Err(err.into());
                    return;
                }
            };
            for (key, entry) in &part.entries {
                encoder.push(key, entry);
                if encoder.pending() >= wire::RESPONSE_BUDGET_BYTES {
                    yield Ok(chunk(encoder.take(), false, 0));
                }
            }
            if part.last {
                break;
            }
        }
        let (data, keys) = encoder.finish();
        tracing::info!(revision, keys, "backup taken");
        yield Ok(chunk(data, true, keys as i64));
    })
}
