//! A jsonkv transaction as etcd transactions: one to read every key it names (at one etcd
//! revision), then, decided here against that read ([`txn::plan`], the embedded store's own
//! rules), one that writes only if none of those keys changed since. A value comparison or a
//! patch needs the document, which etcd cannot compare or patch; this way every comparison and
//! operation is decided by the same code on both backends. If another client wrote one of the
//! keys in between, the transaction is read and decided again, a bounded number of times.

use std::collections::HashMap;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse};

use super::remote::{header_revision, put_options, Remote};
use crate::database::{Entry, Event};
use crate::error::Error;
use crate::revision::Revision;
use crate::txn::{self, Plan, Txn, TxnOutcome};

/// Attempts before a transaction whose keys keep changing gives up with ABORTED.
pub const MAX_ATTEMPTS: u32 = 16;

impl Remote {
    /// Carries out `txn` in etcd; its outcome, with the events of its writes at etcd's
    /// revision.
    pub async fn transact(&self, txn: &Txn) -> Result<TxnOutcome, Error> {
        let keys = txn.keys();
        // etcd names the lease a write attaches in its error; the first is as good as any.
        let lease = txn.leases().next();
        for _ in 0..MAX_ATTEMPTS {
            let (read, read_at) = self.read_all(&keys).await?;
            let current = |key: &str| read.get(key).cloned().flatten();
            // etcd checks the leases itself, in the write.
            let plan = txn::plan(txn, current, |_| true, read_at + 1)?;
            if plan.events.is_empty() {
                return Ok(plan.outcome(&[], read_at));
            }
            let guards = keys.iter().map(|key| {
                let mod_revision = read
                    .get(*key)
                    .and_then(|e| e.as_ref())
                    .map_or(0, |e| e.mod_revision);
                Compare::mod_revision(self.etcd_key(key), CompareOp::Equal, mod_revision)
            });
            let writes = plan.events.iter().map(|event| match &event.entry {
                Some(entry) => TxnOp::put(
                    self.etcd_key(&event.key),
                    entry.value.text().to_owned(),
                    Some(put_options(entry.lease)),
                ),
                None => TxnOp::delete(self.etcd_key(&event.key), Some(DeleteOptions::new())),
            });
            let request = EtcdTxn::new()
                .when(guards.collect::<Vec<_>>())
                .and_then(writes.collect::<Vec<_>>());
            let response = self.txn(request, lease).await?;
            if !response.succeeded() {
                continue;
            }
            let revision = header_revision(response.header())?;
            // Decided again at etcd's revision: the same read, so the same decision, with the
            // metadata the writes now have.
            let plan = txn::plan(txn, current, |_| true, revision)?;
            return Ok(stamped(plan));
        }
        Err(Error::Contended(MAX_ATTEMPTS))
    }

    /// Every key in `keys` as etcd holds it, read in one transaction, and the revision read at.
    async fn read_all(
        &self,
        keys: &[&str],
    ) -> Result<(HashMap<String, Option<Entry>>, Revision), Error> {
        let gets: Vec<TxnOp> = keys
            .iter()
            .map(|key| TxnOp::get(self.etcd_key(key), None))
            .collect();
        let response = self.txn(EtcdTxn::new().and_then(gets), None).await?;
        let revision = header_revision(response.header())?;
        let mut read = HashMap::with_capacity(keys.len());
        for (key, op) in keys.iter().zip(response.op_responses()) {
            let TxnOpResponse::Get(get) = op else {
                return Err(Error::Internal(
                    "etcd answered a read with another op".into(),
                ));
            };
            read.insert(
                (*key).to_owned(),
                get.kvs().first().and_then(|kv| self.entry(kv)),
            );
        }
        Ok((read, revision))
    }
}

/// The outcome of a plan whose events etcd has committed at their revision.
fn stamped(mut plan: Plan) -> TxnOutcome {
    let events: Vec<Arc<Event>> = std::mem::take(&mut plan.events)
        .into_iter()
        .map(Arc::new)
        .collect();
    let revision = events[0].revision;
    plan.outcome(&events, revision)
}
