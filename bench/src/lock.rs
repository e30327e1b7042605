//! Lock hand-over, against jsonkv and etcd: two clients, a connection each, take turns at one
//! lock built as etcd's `concurrency` package builds it (and `jsonkv lock`). Each contender
//! grants a lease and creates `NAME/<lease id>` with it, only if absent; the key with the
//! lowest create revision holds the lock. A waiter watches the key just before its own (its
//! predecessor) until it is deleted, then looks again, and holds the lock once no key is
//! before its own. The holder releases by revoking its lease.
//!
//! Each round: the waiter lines up and is watching its predecessor; the holder keeps the lock
//! for [`HOLD`], then revokes; the time is measured from the start of that LeaseRevoke call to
//! the moment the waiter has seen the delete and found itself first in line. Then they swap
//! roles.

use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::watch_response::Response as Msg;
use jsonkv::pb::{self, event::EventType as JsonkvEventType, insert_request::NewValue};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::progress::{Progress, Unit};
use crate::report::{self, Handover, Latency, Report};
use crate::target::{CallError, Caller, Target};
use crate::RunArgs;

/// How long one step of a round (lining up, or taking over) may take before the run fails.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// How long the holder keeps the lock once the waiter watches its key, as a holder does some
/// work. It also measures a waiter that has waited a while, as waiters usually have: etcd
/// serves a watch that starts at a past revision (as its recipe's does, from the revision it
/// read the line at) from a group it catches up every 100 ms, and only then moves it to its
/// live watchers. Released at once, every hand-over on etcd would wait for that pass.
const HOLD: Duration = Duration::from_millis(150);

pub async fn handover(args: &RunArgs) -> Result<Report, String> {
    let progress = Progress::new(args.quiet);
    let target = Target::connect(args.target, &args.addr, 2, args.connect_timeout()).await?;
    let contenders = [
        Contender::new(target.caller(0)),
        Contender::new(target.caller(1)),
    ];
    let name = format!("{}lock", args.key_prefix);
    let ttl = args.lease_ttl();
    let rounds = args.count.unwrap_or(100);

    // The first holder takes the lock with nobody in line.
    let mut holder = 0;
    let mut held = contenders[0].join(&name, ttl).await?;
    if let Some((key, _)) = contenders[0].predecessor(&name, held.revision).await? {
        return Err(format!(
            "the lock was not free at the start: {key} holds it"
        ));
    }

    progress.stage("hand-overs", rounds, Unit::Items);
    let mut latency = report::histogram();
    let mut revoke = report::histogram();
    let mut first_error = None;
    let started = Instant::now();
    let mut done = 0;
    while done < rounds {
        let waiter = 1 - holder;
        match round(&contenders, holder, &held, &name, ttl).await {
            Ok((next, took, revoked)) => {
                latency.saturating_record(took.as_nanos() as u64);
                revoke.saturating_record(revoked.as_nanos() as u64);
                held = next;
                holder = waiter;
                done += 1;
                progress.set(done, String::new());
            }
            Err(err) => {
                // The lock's state is unknown now: stop here, with the figures so far.
                first_error = Some(err);
                break;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if first_error.is_none() {
        let _ = contenders[holder].clone().revoke(held.lease).await;
    }
    progress.finish();

    let figures = Handover {
        hold_ms: HOLD.as_millis() as u64,
        handovers: done,
        latency: Latency::of(&latency),
        revoke: Latency::of(&revoke),
    };
    Ok(Report {
        seconds,
        ops: done,
        throughput: done as f64 / seconds.max(f64::MIN_POSITIVE),
        latency: figures.latency.clone(),
        errors: u64::from(first_error.is_some()),
        first_error,
        handover: Some(figures),
        ..Report::default()
    })
}

/// One hand-over from `holder` to the other contender: the waiter's place in line, the time
/// from the release to the waiter holding the lock, and the revoke call's own latency.
async fn round(
    contenders: &[Contender; 2],
    holder: usize,
    held: &Place,
    name: &str,
    ttl: i64,
) -> Result<(Place, Duration, Duration), String> {
    let waiter = contenders[1 - holder].clone();
    let place = waiter.join(name, ttl).await?;
    let (ready, watching) = oneshot::channel();
    let line = tokio::spawn(waiter.line_up(name.to_owned(), place.revision, ready));
    // Release only once the waiter watches the holder's key: the hand-over, not the line-up,
    // is measured.
    match tokio::time::timeout(STEP_LIMIT, watching).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            let outcome = line.await.expect("a contender panicked");
            return Err(match outcome {
                Ok(_) => format!("{} took the lock while {} held it", place.key, held.key),
                Err(err) => err,
            });
        }
        Err(_) => {
            line.abort();
            return Err(format!("the waiter did not line up within {STEP_LIMIT:?}"));
        }
    }
    tokio::time::sleep(HOLD).await;
    let release = Instant::now();
    contenders[holder].clone().revoke(held.lease).await?;
    let revoked = release.elapsed();
    let taken = match tokio::time::timeout(STEP_LIMIT, line).await {
        Ok(outcome) => outcome.expect("a contender panicked")?,
        Err(_) => {
            return Err(format!(
                "the waiter did not take the lock within {STEP_LIMIT:?} of the release"
            ))
        }
    };
    Ok((place, taken.saturating_duration_since(release), revoked))
}

/// A contender's key in line, and the lease it lives on.
struct Place {
    lease: i64,
    key: String,
    /// The key's create revision: its place in line.
    revision: i64,
}

/// One contender's client.
#[derive(Clone)]
enum Contender {
    Jsonkv(JsonKvClient<Channel>),
    /// Boxed: etcd's client is several times the size of tonic's.
    Etcd(Box<etcd_client::Client>),
}

/// A watch on a predecessor's key, open (the delete is yet to come) or not needed. (Boxed:
/// streams are hundreds of bytes.)
enum Watching {
    Gone,
    Jsonkv(Box<Streaming<pb::WatchResponse>>),
    Etcd(Box<etcd_client::WatchStream>),
}

impl Contender {
    fn new(caller: Caller) -> Contender {
        match (caller.jsonkv(), caller.etcd()) {
            (Some(client), _) => Contender::Jsonkv(client),
            (_, Some(client)) => Contender::Etcd(Box::new(client)),
            _ => unreachable!("RunArgs::check allows jsonkv and etcd only"),
        }
    }

    /// Grants a lease and creates this contender's key with it, only if absent.
    async fn join(&self, name: &str, ttl: i64) -> Result<Place, String> {
        let (lease, _) = Caller::from(self.clone())
            .lease_grant(ttl)
            .await
            .map_err(|err| format!("lease grant: {err}"))?;
        let key = format!("{name}/{lease:016x}");
        let revision = match self.clone() {
            Contender::Jsonkv(mut client) => {
                let request = pb::InsertRequest {
                    key: key.clone(),
                    new_value: Some(NewValue::ValueJson("{}".into())),
                    expected_mod_revision: Some(0),
                    lease,
                    ..Default::default()
                };
                let created = client.insert(request).await.map_err(status)?;
                created.into_inner().revision
            }
            Contender::Etcd(mut client) => {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        "",
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                let created = client.txn(txn).await.map_err(|e| e.to_string())?;
                if !created.succeeded() {
                    return Err(format!("{key} already existed"));
                }
                created.header().map_or(0, |h| h.revision())
            }
        };
        Ok(Place {
            lease,
            key,
            revision,
        })
    }

    /// The key just before `mine` in `name`'s line, and the revision it was read at; `None`
    /// when `mine` is first.
    async fn predecessor(&self, name: &str, mine: i64) -> Result<Option<(String, i64)>, String> {
        let prefix = format!("{name}/");
        match self.clone() {
            Contender::Jsonkv(mut client) => {
                // Two contenders: the line fits one page.
                let request = pb::ListRequest {
                    prefix,
                    keys_only: true,
                    ..Default::default()
                };
                let page = client.list(request).await.map_err(status)?.into_inner();
                let before = page
                    .kvs
                    .into_iter()
                    .filter(|kv| kv.create_revision < mine)
                    .max_by_key(|kv| kv.create_revision);
                Ok(before.map(|kv| (kv.key, page.revision)))
            }
            Contender::Etcd(mut client) => {
                // As etcd's waitDeletes asks: the last key created before mine.
                let options = GetOptions::new()
                    .with_prefix()
                    .with_max_create_revision(mine - 1)
                    .with_sort(SortTarget::Create, SortOrder::Descend)
                    .with_limit(1)
                    .with_keys_only();
                let found = client
                    .get(prefix, Some(options))
                    .await
                    .map_err(|e| e.to_string())?;
                let revision = found.header().map_or(0, |h| h.revision());
                Ok(found
                    .kvs()
                    .first()
                    .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), revision)))
            }
        }
    }

    /// Opens a watch on `key`, which existed at `revision`; returns once the watch is in place.
    async fn watch(&self, key: &str, revision: i64) -> Result<Watching, String> {
        match self.clone() {
            Contender::Jsonkv(mut client) => {
                // From a snapshot, as `jsonkv lock` does: it tells whether the key is gone
                // already, and its arrival says the watch is in place.
                let request = pb::WatchKeyRequest {
                    key: key.to_owned(),
                    ..Default::default()
                };
                let mut stream = client
                    .watch_key(request)
                    .await
                    .map_err(status)?
                    .into_inner();
                loop {
                    match stream.message().await.map_err(status)? {
                        Some(pb::WatchResponse {
                            response: Some(Msg::Snapshot(snapshot)),
                        }) if snapshot.last => {
                            return Ok(if snapshot.kvs.is_empty() {
                                Watching::Gone
                            } else {
                                Watching::Jsonkv(Box::new(stream))
                            });
                        }
                        Some(_) => continue,
                        None => return Err("the watch ended before its snapshot".into()),
                    }
                }
            }
            Contender::Etcd(client) => {
                // From the revision the predecessor was read at, as etcd's waitDelete does.
                let options = WatchOptions::new().with_start_revision(revision);
                let mut stream = client
                    .watch_client()
                    .watch(key, Some(options))
                    .await
                    .map_err(|e| e.to_string())?;
                match stream.message().await {
                    Ok(Some(created)) if created.created() => Ok(Watching::Etcd(Box::new(stream))),
                    other => Err(format!("the etcd watch was not created: {other:?}")),
                }
            }
        }
    }

    /// Waits in line from `mine` until first; says on `ready` when it first watches a
    /// predecessor. Returns when it held the lock.
    async fn line_up(
        self,
        name: String,
        mine: i64,
        ready: oneshot::Sender<()>,
    ) -> Result<Instant, String> {
        let mut ready = Some(ready);
        loop {
            let Some((key, revision)) = self.predecessor(&name, mine).await? else {
                return Ok(Instant::now());
            };
            let watching = self.watch(&key, revision).await?;
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            watching.deleted().await?;
        }
    }

    async fn revoke(self, lease: i64) -> Result<(), String> {
        Caller::from(self)
            .lease_revoke(lease)
            .await
            .map_err(|err| format!("lease revoke: {err}"))
    }
}

impl From<Contender> for Caller {
    fn from(contender: Contender) -> Caller {
        match contender {
            Contender::Jsonkv(client) => Caller::Jsonkv(client),
            Contender::Etcd(client) => Caller::Etcd(client),
        }
    }
}

impl Watching {
    /// Resolves when the watched key is deleted.
    async fn deleted(self) -> Result<(), String> {
        match self {
            Watching::Gone => Ok(()),
            Watching::Jsonkv(mut stream) => loop {
                match stream.message().await.map_err(status)? {
                    Some(pb::WatchResponse {
                        response: Some(Msg::Event(event)),
                    }) if event.r#type == JsonkvEventType::Delete as i32 => return Ok(()),
                    Some(_) => continue,
                    None => return Err("the watch ended".into()),
                }
            },
            Watching::Etcd(mut stream) => loop {
                match stream.message().await.map_err(|e| e.to_string())? {
                    Some(response) if response.canceled() => {
                        return Err(format!(
                            "etcd canceled the watch: {}",
                            response.cancel_reason()
                        ))
                    }
                    Some(response) => {
                        if response
                            .events()
                            .iter()
                            .any(|event| event.event_type() == EventType::Delete)
                        {
                            return Ok(());
                        }
                    }
                    None => return Err("the watch ended".into()),
                }
            },
        }
    }
}

fn status(status: tonic::Status) -> CallError {
    format!("{:?}: {}", status.code(), status.message())
}
