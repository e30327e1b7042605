//! Many keys expiring together, against jsonkv and etcd: `--leases` leases (one by default) of
//! `--lease-ttl` seconds are granted, `--keys` keys are written on them (round-robin), and a
//! watch on the keys' prefix, opened after the last write, times each key's delete event
//! against its lease's deadline.
//!
//! The deadline is the client's view of it: when the last call that started the lease's TTL
//! was sent (its grant, or its last keep-alive), plus the TTL granted. The server starts the
//! TTL when that call reaches it, a little later, so the lateness measured is, if anything, too
//! high, never too low.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchFilterType, WatchOptions};
use jsonkv::pb::watch_response::Response as Msg;
use jsonkv::pb::{self, event::EventType as JsonkvEventType, ValueEncoding};
use tokio::sync::watch;
use tonic::Streaming;

use crate::lease;
use crate::load;
use crate::progress::{Progress, Unit};
use crate::report::{self, Expiry, Latency, Report};
use crate::target::{Caller, Target};
use crate::RunArgs;

/// How long the deletes may take after the last lease's deadline...
const GRACE: Duration = Duration::from_secs(30);
/// ...and more per lease: etcd ends expired leases at a bounded rate (a thousand a second by
/// default), so many leases take it a while.
const GRACE_PER_LEASE: Duration = Duration::from_millis(1);
/// The largest watch message the etcd client takes: a lease's deletes are one revision, which
/// etcd sends in fragments of about its request size limit, well under this.
const ETCD_MESSAGE_LIMIT: usize = 64 << 20;

pub async fn run(args: &RunArgs) -> Result<Report, String> {
    let progress = Progress::new(args.quiet);
    let target = Target::connect(
        args.target,
        &args.addr,
        args.connections,
        args.connect_timeout(),
    )
    .await?;
    // The watcher is another client, on a connection of its own.
    let watcher = Target::connect(args.target, &args.addr, 1, Duration::ZERO)
        .await?
        .caller(0);
    let prefix = format!("{}expiry/", args.key_prefix);
    let lease_count = args.leases().unwrap_or(1);
    let keys = args.keys;
    let clock = Instant::now();
    let since = move |at: Instant| at.saturating_duration_since(clock).as_nanos() as u64;

    let granted = lease::grant_all(&target, lease_count, args.lease_ttl(), args, &progress).await?;
    let ttl = granted.iter().map(|l| l.ttl).max().unwrap_or(0);
    let ids: Arc<Vec<i64>> = Arc::new(granted.iter().map(|l| l.id).collect());
    // When the call that last started each lease's TTL was sent, in nanoseconds on the clock.
    let started: Arc<Vec<AtomicU64>> = Arc::new(
        granted
            .iter()
            .map(|l| AtomicU64::new(since(l.sent)))
            .collect(),
    );

    // One lease is kept alive while its keys are written: on etcd, writing 100,000 keys can
    // take longer than a TTL. Many leases are not (keeping them all alive would be a load of
    // its own): their TTL must outlast the writes.
    let (stop, stopped) = watch::channel(false);
    let keeper = (lease_count == 1).then(|| {
        let (caller, started) = (target.caller(0), Arc::clone(&started));
        tokio::spawn(keep_alive_until(
            caller, ids[0], ttl, started, since, stopped,
        ))
    });

    let value = load::json_value(args.value_size, "");
    let key_prefix = prefix.clone();
    let leases = Arc::clone(&ids);
    let written = load::each(
        &target,
        keys,
        args.concurrency,
        &progress,
        "keys",
        move |mut caller, i| {
            let (key, value) = (key(&key_prefix, i), value.clone());
            let lease = leases[i % leases.len()];
            async move { caller.insert_leased(&key, &value, lease).await }
        },
    )
    .await
    .map_err(|err| format!("writing the keys failed: {err}"))?;
    let last_write = written.into_iter().max().unwrap_or(0);
    let mut deletes = Deletes::open(&watcher, &prefix, last_write + 1).await?;

    let mut keep_alives = 0;
    if let Some(keeper) = keeper {
        let _ = stop.send(true);
        keep_alives = keeper.await.expect("the keeper panicked")?;
        // The last keep-alive once everything is in place, so that the lease expires on a
        // server with nothing else to do.
        let sent = Instant::now();
        target
            .caller(0)
            .lease_keep_alive(ids[0])
            .await
            .map_err(|err| format!("keep-alive: {err}"))?;
        started[0].store(since(sent), Ordering::Release);
        keep_alives += 1;
    }
    let setup_seconds = clock.elapsed().as_secs_f64();
    let ttl_ns = Duration::from_secs(ttl.max(0) as u64).as_nanos() as u64;
    let deadlines: Vec<u64> = started
        .iter()
        .map(|s| s.load(Ordering::Acquire) + ttl_ns)
        .collect();
    let first_deadline = deadlines.iter().copied().min().unwrap_or(0);
    let last_deadline = deadlines.iter().copied().max().unwrap_or(0);
    if since(Instant::now()) >= first_deadline {
        return Err(format!(
            "a lease's TTL ({ttl} s) ran out before its keys were written ({setup_seconds:.1} s): \
             raise --lease-ttl"
        ));
    }

    let wait = GRACE + GRACE_PER_LEASE * lease_count as u32;
    let give_up = clock + Duration::from_nanos(last_deadline) + wait;
    progress.stage("expiring", keys as u64, Unit::Items);
    // Nanoseconds on the clock at which each key's delete arrived; 0: not yet.
    let mut arrivals = vec![0u64; keys];
    let mut received = 0;
    let mut fault = None;
    while received < keys && fault.is_none() {
        let batch = match tokio::time::timeout_at(give_up.into(), deletes.next()).await {
            Err(_) => break,
            Ok(Err(err)) => {
                fault = Some(err);
                break;
            }
            Ok(Ok(batch)) => batch,
        };
        let now = since(Instant::now());
        for deleted in batch {
            match index(&prefix, &deleted) {
                Some(i) if i < keys && arrivals[i] == 0 => {
                    arrivals[i] = now;
                    received += 1;
                }
                _ => fault = Some(format!("an unexpected or repeated delete of {deleted}")),
            }
        }
        progress.set(received as u64, String::new());
    }
    progress.finish();

    let mut histogram = report::histogram();
    let mut early = 0;
    for (i, &at) in arrivals.iter().enumerate().filter(|(_, &at)| at != 0) {
        let deadline = deadlines[i % lease_count];
        early += u64::from(at < deadline);
        histogram.saturating_record(at.saturating_sub(deadline));
    }
    let arrived = arrivals.iter().copied().filter(|&at| at != 0);
    let spread = match (arrived.clone().min(), arrived.max()) {
        (Some(first), Some(last)) => (last - first) as f64 / 1e9,
        _ => 0.0,
    };
    let missing = (keys - received) as u64;
    let first_error = fault.clone().or_else(|| {
        (missing > 0).then(|| {
            format!(
                "{missing} of {keys} keys were not seen deleted within {:.0} s of the last deadline",
                wait.as_secs_f64()
            )
        })
    });
    let lateness = Latency::of(&histogram);
    Ok(Report {
        seconds: spread,
        ops: received as u64,
        // Deletes per second over their spread; 0 when they all came in one message.
        throughput: if spread > 0.0 {
            received as f64 / spread
        } else {
            0.0
        },
        latency: lateness.clone(),
        errors: missing + u64::from(fault.is_some()),
        first_error,
        expiry: Some(Expiry {
            leases: lease_count,
            keys,
            ttl_seconds: ttl,
            setup_seconds,
            keep_alives,
            deletes: received as u64,
            lateness,
            early,
            spread_seconds: spread,
        }),
        ..Report::default()
    })
}

fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:08}")
}

/// The number of a key this run wrote.
fn index(prefix: &str, key: &str) -> Option<usize> {
    key.strip_prefix(prefix)?.parse().ok()
}

/// Keeps the lease alive every third of its TTL until stopped; the keep-alives it sent.
async fn keep_alive_until(
    mut caller: Caller,
    lease: i64,
    ttl: i64,
    started: Arc<Vec<AtomicU64>>,
    since: impl Fn(Instant) -> u64,
    mut stopped: watch::Receiver<bool>,
) -> Result<u64, String> {
    let period = Duration::from_secs_f64(ttl as f64 / 3.0);
    let mut sent = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stopped.wait_for(|stop| *stop) => return Ok(sent),
        }
        let at = Instant::now();
        caller
            .lease_keep_alive(lease)
            .await
            .map_err(|err| format!("keep-alive: {err}"))?;
        started[0].store(since(at), Ordering::Release);
        sent += 1;
    }
}

/// A watch on the keys' prefix, from the revision after the last write: it should see only
/// their deletes.
/// (Boxed: streams are hundreds of bytes.)
enum Deletes {
    Jsonkv(Box<Streaming<pb::WatchResponse>>),
    Etcd(Box<etcd_client::WatchStream>),
}

impl Deletes {
    async fn open(watcher: &Caller, prefix: &str, from: i64) -> Result<Deletes, String> {
        if let Some(mut client) = watcher.jsonkv() {
            let request = pb::WatchPrefixRequest {
                prefix: prefix.to_owned(),
                start_revision: from,
                value_encoding: ValueEncoding::Json as i32,
                ..Default::default()
            };
            let stream = client
                .watch_prefix(request)
                .await
                .map_err(|s| format!("watch: {s}"))?
                .into_inner();
            return Ok(Deletes::Jsonkv(Box::new(stream)));
        }
        let client = watcher.etcd().expect("a jsonkv or etcd target");
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_fragment()
            .with_filters([WatchFilterType::NoPut]);
        let mut stream = client
            .watch_client()
            .max_decoding_message_size(ETCD_MESSAGE_LIMIT)
            .watch(prefix, Some(options))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        match stream.message().await {
            Ok(Some(created)) if created.created() => Ok(Deletes::Etcd(Box::new(stream))),
            other => Err(format!("the etcd watch was not created: {other:?}")),
        }
    }

    /// The keys deleted in the next message (none for a progress notice).
    async fn next(&mut self) -> Result<Vec<String>, String> {
        match self {
            Deletes::Jsonkv(stream) => match stream.message().await {
                Ok(Some(pb::WatchResponse {
                    response: Some(Msg::Event(event)),
                })) if event.r#type == JsonkvEventType::Delete as i32 => {
                    Ok(vec![event.kv.map(|kv| kv.key).unwrap_or_default()])
                }
                Ok(Some(pb::WatchResponse {
                    response: Some(Msg::Progress(_)),
                })) => Ok(Vec::new()),
                Ok(Some(other)) => Err(format!("the watch sent {other:?}")),
                Ok(None) => Err("the watch ended".into()),
                Err(s) => Err(format!("watch: {s}")),
            },
            Deletes::Etcd(stream) => match stream.message().await {
                Ok(Some(response)) if response.canceled() => Err(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason()
                )),
                Ok(Some(response)) => response
                    .events()
                    .iter()
                    .map(|event| match (event.event_type(), event.kv()) {
                        (EventType::Delete, Some(kv)) => {
                            Ok(String::from_utf8_lossy(kv.key()).into_owned())
                        }
                        _ => Err(format!("the watch sent {event:?}")),
                    })
                    .collect(),
                Ok(None) => Err("the watch ended".into()),
                Err(e) => Err(format!("watch: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_read_back_as_its_number() {
        assert_eq!(index("b/expiry/", &key("b/expiry/", 1234)), Some(1234));
        assert_eq!(index("b/expiry/", "b/other/00000001"), None);
        assert_eq!(index("b/expiry/", "b/expiry/x"), None);
    }
}
