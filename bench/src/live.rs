//! The live-query workloads: filtered watches and filtered lists (`WatchPrefixRequest.filter`,
//! `ListRequest.filter`), against jsonkv, and what a client does without them.
//! - `fanout` (live-fanout): W watchers on one prefix, each a filtered WatchPrefix (by default
//!   all with the same filter text, so that the server evaluates it once per insert, in the
//!   stage they share), and one writer inserting new documents under the prefix at a fixed rate
//!   on its own connection, one in --match-every a hit. Measures the latency from each matching
//!   insert's acknowledgement (and send) to its delivery at every watcher, and checks that every
//!   watcher got exactly the matching inserts, each once, in order, as entering its view. With
//!   --client-filter the watches are unfiltered and the harness picks the hits out of every
//!   event itself, as a client of etcd (which cannot filter values) has to; that mode also runs
//!   against etcd's own watch.
//! - `insert_cost` (live-insert-cost): closed-loop insert throughput on a prefix with no
//!   watcher, with one unfiltered watcher on it, with W filtered watchers on it whose filter
//!   matches nothing written, and with none again once they closed.
//! - `list` (live-list): N documents loaded under a prefix (transactions of [`BATCH`] inserts),
//!   then listed page after page, again and again, with a filter matching 1 in --match-every
//!   (the server scans and sends the matches), and without (the client gets every document and
//!   filters them itself).
//!
//! Every document is `{"seq":N,"kind":"hit"|"miss","pad":"x..."}`; the default filter is
//! `value.kind == "hit"`. The harness reads `seq` and `kind` from the front of the text
//! ([`read_document`]) without parsing the whole document, as the other fan-outs read `seq`:
//! that is also its client-side filter, cheaper than the JSON parse a real client would make.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::WatchOptions;
use hdrhistogram::Histogram;
use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::watch_response::Response as Msg;
use jsonkv::pb::{self, insert_request::NewValue, op, ValueEncoding, ViewChange};
use prost::Message as _;
use tokio::sync::watch as signal;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::load::{self, Plan};
use crate::progress::{Progress, Unit};
use crate::report::{self, Latency, ListScan, LiveFanout, LiveInsertCost, LiveList, Report};
use crate::target::{status, Caller, Target};
use crate::watch::{self, Clock, Opened};
use crate::{RunArgs, TargetKind};

/// Documents one transaction writes while live-list loads (the most operations a Txn takes).
pub const BATCH: usize = 128;
const HIT: &str = "hit";
const MISS: &str = "miss";

/// A document of the live runs, `{"seq":N,"kind":"hit","pad":"x..."}`, of `size` bytes (or the
/// smallest possible).
pub fn document(size: usize, seq: usize, hit: bool) -> String {
    let kind = if hit { HIT } else { MISS };
    load::json_value(size, &format!("\"seq\":{seq},\"kind\":\"{kind}\","))
}

/// The `seq` of a live document and whether it is a hit, read from the front of its text:
/// the harness's client-side filter. `None` for any other text.
pub fn read_document(json: &str) -> Option<(usize, bool)> {
    let digits = json.strip_prefix("{\"seq\":")?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    let seq = digits[..end].parse().ok()?;
    let kind = digits[end..].strip_prefix(",\"kind\":\"")?;
    let hit = kind.starts_with("hit\"");
    (hit || kind.starts_with("miss\"")).then_some((seq, hit))
}

/// The filter of watcher `i`: --filter, or with --filters N one of N texts that match the same
/// documents (each its own stage on the server).
fn filter_of(args: &RunArgs, i: usize) -> String {
    match i % args.filters {
        0 => args.filter.clone(),
        n => format!("({}) && key != \"#{n}\"", args.filter),
    }
}

pub async fn fanout(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(1000);
    let every = args.match_every() as usize;
    let server_filtered = !args.client_filter;
    let progress = Progress::new(args.quiet);
    let target = Target::connect(
        args.target,
        &args.addr,
        watch::watcher_connections(args, watchers),
        args.connect_timeout(),
    )
    .await?;
    let writer = watch::writer(args, args.target).await?;
    let prefix = format!("{}live/", args.key_prefix);

    let warm = (args.rate as f64 * args.warmup).round() as usize;
    let measured = args
        .count
        .unwrap_or((args.rate as f64 * args.duration).round() as u64)
        .max(1) as usize;
    let total = warm + measured;
    let expected = Expected {
        every,
        matches: total.div_ceil(every),
        events: if server_filtered {
            total.div_ceil(every)
        } else {
            total
        },
        server_filtered,
    };
    let clock = Arc::new(Clock::new(total));
    let (stop, stopped) = signal::channel(false);
    let opened = Arc::new(Opened::new());
    let tasks: Vec<_> = (0..watchers)
        .map(|i| {
            let caller = target.caller(i);
            let filter = server_filtered.then(|| filter_of(args, i));
            let (prefix, clock) = (prefix.clone(), Arc::clone(&clock));
            let (opened, stopped) = (Arc::clone(&opened), stopped.clone());
            tokio::spawn(async move {
                let mut stream = opened
                    .open(LiveWatch::open(&caller, prefix, filter))
                    .await?;
                Ok::<_, String>(receive(&mut stream, expected, &clock, stopped).await)
            })
        })
        .collect();
    opened.wait_for(watchers, &progress).await?;

    // Each insert to a key of its own: a document enters the view (a hit) or never concerns
    // it (a miss).
    let (mut errors, mut first_error) =
        watch::insert_paced(&writer, args.rate, total, &clock, &progress, |seq| {
            let value = document(args.value_size, seq, seq % every == 0);
            (format!("{prefix}{seq:08}"), value)
        })
        .await;

    progress.stage("delivering", watchers as u64, Unit::Items);
    let deadline = Instant::now() + watch::DRAIN_GRACE;
    while Instant::now() < deadline && !tasks.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = tasks.iter().filter(|w| w.is_finished()).count();
        progress.set(done as u64, String::new());
    }
    let _ = stop.send(true);
    progress.finish();

    let mut from_ack = report::histogram();
    let mut from_send = report::histogram();
    let mut fig = LiveFanout {
        watchers,
        filter: args.filter.clone(),
        filters: if server_filtered { args.filters } else { 0 },
        filtered_at: if server_filtered { "server" } else { "client" }.into(),
        match_every: every as u64,
        rate: args.rate,
        ..LiveFanout::default()
    };
    for task in tasks {
        let got = task.await.expect("a watcher panicked")?;
        fig.received += got.events as u64;
        if !got.complete() {
            fig.incomplete_watchers += 1;
            first_error.get_or_insert(got.describe(&expected));
        }
        for (m, &at) in got.arrivals.iter().enumerate() {
            let seq = m * every;
            if seq < warm || at == 0 {
                continue;
            }
            let (sent, acked) = clock.span(seq);
            from_send.saturating_record(at.saturating_sub(sent));
            from_ack.saturating_record(at.saturating_sub(acked));
            fig.before_ack += u64::from(at < acked);
            fig.deliveries += 1;
        }
    }
    errors += fig.incomplete_watchers;

    let mut insert = report::histogram();
    for seq in warm..total {
        let (sent, acked) = clock.span(seq);
        insert.saturating_record(acked.saturating_sub(sent));
    }
    let first_sent = clock.span(warm).0;
    let last_acked = (warm..total)
        .map(|seq| clock.span(seq).1)
        .max()
        .unwrap_or(0);
    let seconds = last_acked.saturating_sub(first_sent) as f64 / 1e9;
    fig.events = measured as u64;
    fig.matching = (warm..total).filter(|seq| seq % every == 0).count() as u64;
    fig.achieved_rate = measured as f64 / seconds.max(f64::MIN_POSITIVE);
    fig.from_ack = Latency::of(&from_ack);
    fig.from_send = Latency::of(&from_send);
    fig.insert = Latency::of(&insert);
    Ok(Report {
        seconds,
        ops: measured as u64,
        throughput: fig.achieved_rate,
        latency: fig.from_ack.clone(),
        errors,
        first_error,
        live_fanout: Some(fig),
        ..Report::default()
    })
}

/// What every fan-out watcher must receive.
#[derive(Clone, Copy)]
struct Expected {
    /// One insert in this many is a hit (those with `seq % every == 0`).
    every: usize,
    /// The hits, warm-up included.
    matches: usize,
    /// The events: the hits when the server filters, every insert when the client does.
    events: usize,
    server_filtered: bool,
}

/// A live watch on the prefix: jsonkv's WatchPrefix (filtered or not) or etcd's prefix watch.
/// (Boxed: streams are hundreds of bytes.)
enum LiveWatch {
    Jsonkv(Box<Streaming<pb::WatchResponse>>),
    Etcd(Box<etcd_client::WatchStream>),
}

/// One event as the fan-out checks it.
struct Item {
    /// The document's `seq` and whether it is a hit; `None` if it was not a live document.
    doc: Option<(usize, bool)>,
    revision: i64,
    /// jsonkv's `view_change` (0 on etcd).
    view_change: i32,
}

impl LiveWatch {
    /// Opens the watch and reads its snapshot (empty: nothing is written under the prefix
    /// before the watchers open), or, on etcd, its creation.
    async fn open(
        caller: &Caller,
        prefix: String,
        filter: Option<String>,
    ) -> Result<LiveWatch, String> {
        if let Some(client) = caller.jsonkv() {
            let stream = open_jsonkv(client, prefix, filter, 0).await?;
            return Ok(LiveWatch::Jsonkv(Box::new(stream)));
        }
        let client = caller.etcd().expect("a jsonkv or etcd target");
        let options = WatchOptions::new().with_prefix();
        let mut stream = client
            .watch_client()
            .watch(prefix, Some(options))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        match stream.message().await {
            Ok(Some(created)) if created.created() => Ok(LiveWatch::Etcd(Box::new(stream))),
            other => Err(format!("the etcd watch was not created: {other:?}")),
        }
    }

    /// The events of the next message into `items` (none for a progress notice).
    async fn next(&mut self, items: &mut Vec<Item>) -> Result<(), String> {
        items.clear();
        match self {
            LiveWatch::Jsonkv(stream) => match stream.message().await {
                Ok(Some(pb::WatchResponse {
                    response: Some(Msg::Event(event)),
                })) => {
                    items.push(Item {
                        doc: event
                            .kv
                            .as_ref()
                            .and_then(|kv| read_document(&kv.value_json)),
                        revision: event.revision,
                        view_change: event.view_change,
                    });
                    Ok(())
                }
                Ok(Some(pb::WatchResponse {
                    response: Some(Msg::Progress(_)),
                })) => Ok(()),
                Ok(Some(other)) => Err(format!("the watch sent {other:?}")),
                Ok(None) => Err("the stream ended".into()),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            },
            LiveWatch::Etcd(stream) => match stream.message().await {
                Ok(Some(response)) if response.canceled() => Err(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason()
                )),
                Ok(Some(response)) => {
                    items.extend(response.events().iter().map(|event| {
                        let kv = event.kv();
                        Item {
                            doc: kv
                                .and_then(|kv| std::str::from_utf8(kv.value()).ok())
                                .and_then(read_document),
                            revision: kv.map_or(0, |kv| kv.mod_revision()),
                            view_change: 0,
                        }
                    }));
                    Ok(())
                }
                Ok(None) => Err("the stream ended".into()),
                Err(e) => Err(format!("watch: {e}")),
            },
        }
    }
}

/// Opens a jsonkv prefix watch, filtered or not. From `start_revision` (> 0) it has no
/// snapshot and is open once the call is answered; at 0 its snapshot is read (and dropped).
async fn open_jsonkv(
    mut client: JsonKvClient<Channel>,
    prefix: String,
    filter: Option<String>,
    start_revision: i64,
) -> Result<Streaming<pb::WatchResponse>, String> {
    let request = pb::WatchPrefixRequest {
        prefix,
        start_revision,
        value_encoding: ValueEncoding::Json as i32,
        filter: filter.unwrap_or_default(),
        ..Default::default()
    };
    let mut stream = client
        .watch_prefix(request)
        .await
        .map_err(|s| format!("watch: {}", status(s)))?
        .into_inner();
    if start_revision > 0 {
        return Ok(stream);
    }
    loop {
        match stream.message().await {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Snapshot(snapshot)),
            })) if snapshot.last => return Ok(stream),
            Ok(Some(_)) => continue,
            Ok(None) => return Err("watch ended before its snapshot".into()),
            Err(s) => return Err(format!("watch: {}", status(s))),
        }
    }
}

/// What one fan-out watcher received.
struct Received {
    /// When each hit arrived, by its index among the hits (`seq / every`); 0: not yet.
    arrivals: Vec<u64>,
    matched: usize,
    /// Events received, hits or not.
    events: usize,
    last_revision: i64,
    fault: Option<String>,
}

impl Received {
    fn wants_more(&self, expected: &Expected) -> bool {
        self.matched < expected.matches || self.events < expected.events
    }

    fn complete(&self) -> bool {
        self.fault.is_none() && self.matched == self.arrivals.len()
    }

    /// Notes `item`, arrived `now`; false, with the fault noted, unless it is an insert not
    /// seen before, after every one seen before, that this watch should get: only hits, as
    /// entering the view, when the server filters; anything, outside any view, when not.
    fn note(&mut self, item: &Item, expected: &Expected, now: u64) -> bool {
        let view = ViewChange::try_from(item.view_change).unwrap_or(ViewChange::Unspecified);
        let fault = match item.doc {
            None => Some("an event without a live document".to_owned()),
            Some(_) if item.revision <= self.last_revision => Some(format!(
                "an event at revision {} after revision {}",
                item.revision, self.last_revision
            )),
            Some((seq, false)) if expected.server_filtered => {
                Some(format!("insert {seq}, which does not match, was sent"))
            }
            Some((seq, _)) if expected.server_filtered && view != ViewChange::Entered => {
                Some(format!("insert {seq} came as {view:?}, not Entered"))
            }
            Some((seq, _)) if !expected.server_filtered && view != ViewChange::Unspecified => Some(
                format!("insert {seq} came as {view:?} on an unfiltered watch"),
            ),
            Some((seq, true))
                if seq % expected.every != 0
                    || self.arrivals.get(seq / expected.every) != Some(&0) =>
            {
                Some(format!("hit {seq} was unexpected or repeated"))
            }
            Some(_) => None,
        };
        if let Some(fault) = fault {
            self.fault.get_or_insert(fault);
            return false;
        }
        if let Some((seq, true)) = item.doc {
            self.arrivals[seq / expected.every] = now;
            self.matched += 1;
        }
        self.events += 1;
        self.last_revision = item.revision;
        true
    }

    fn describe(&self, expected: &Expected) -> String {
        let fault = self
            .fault
            .as_deref()
            .unwrap_or("no more events before the deadline");
        format!(
            "a watcher got {} of {} matching events ({} of {} events): {fault}",
            self.matched, expected.matches, self.events, expected.events
        )
    }
}

/// Reads a fan-out watch until it has every event it should, or is stopped.
async fn receive(
    stream: &mut LiveWatch,
    expected: Expected,
    clock: &Clock,
    mut stopped: signal::Receiver<bool>,
) -> Received {
    let mut got = Received {
        arrivals: vec![0; expected.matches],
        matched: 0,
        events: 0,
        last_revision: 0,
        fault: None,
    };
    let mut items = Vec::new();
    // One wait for the stop, polled after each read rather than made anew for it.
    let stop = stopped.wait_for(|stop| *stop);
    tokio::pin!(stop);
    'reading: while got.wants_more(&expected) {
        let next = tokio::select! {
            biased;
            next = stream.next(&mut items) => next,
            _ = &mut stop => break,
        };
        if let Err(err) = next {
            got.fault.get_or_insert(err);
            break;
        }
        let now = clock.now();
        for item in &items {
            if !got.note(item, &expected, now) {
                break 'reading;
            }
        }
    }
    got
}

pub async fn insert_cost(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(10_000);
    let progress = Progress::new(args.quiet);
    let target = Target::connect(
        TargetKind::Jsonkv,
        &args.addr,
        args.connections,
        args.connect_timeout(),
    )
    .await?;
    let watching = Target::connect(
        TargetKind::Jsonkv,
        &args.addr,
        watch::watcher_connections(args, watchers),
        Duration::ZERO,
    )
    .await?;
    let prefix = format!("{}live/", args.key_prefix);
    // Every insert a miss: the filter matches nothing written.
    let mut plan = Plan::new(args, &prefix);
    plan.value = load::json_value(args.value_size, &format!("\"kind\":\"{MISS}\","));
    let plan = Arc::new(plan);
    let rss = || args.server_pid.and_then(watch::vm_rss_kib);
    let mut errors = 0;
    let mut first_error = None;

    let none = load::closed_loop(&target, &plan, &progress).await;

    // One unfiltered watcher on the prefix, reading every event. Watches open from the next
    // revision (no snapshot of the prefix's keys to send).
    let (stop, stopped) = signal::channel(false);
    let unfiltered_events = Arc::new(AtomicU64::new(0));
    let from = next_revision(&target, &plan).await?;
    let opened = Arc::new(Opened::new());
    let reader = {
        let (client, prefix) = (watch::jsonkv(&watching, 0), prefix.clone());
        let (opened, events) = (Arc::clone(&opened), Arc::clone(&unfiltered_events));
        tokio::spawn(async move {
            let stream = opened.open(open_jsonkv(client, prefix, None, from)).await?;
            count_events(stream, &events, stopped).await
        })
    };
    opened.wait_for(1, &progress).await?;
    let unfiltered = load::closed_loop(&target, &plan, &progress).await;
    let _ = stop.send(true);
    if let Err(err) = reader.await.expect("the unfiltered watcher panicked") {
        errors += 1;
        first_error.get_or_insert(format!("the unfiltered watcher: {err}"));
    }

    // The filtered watchers, alone.
    let rss_before = rss();
    let from = next_revision(&target, &plan).await?;
    let opening = Instant::now();
    let (stop, stopped) = signal::channel(false);
    let opened = Arc::new(Opened::new());
    let notices = Arc::new(AtomicU64::new(0));
    let filtered: Vec<_> = (0..watchers)
        .map(|i| {
            let (client, prefix) = (watch::jsonkv(&watching, i), prefix.clone());
            let filter = filter_of(args, i);
            let (opened, notices) = (Arc::clone(&opened), Arc::clone(&notices));
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let stream = opened
                    .open(open_jsonkv(client, prefix, Some(filter), from))
                    .await?;
                watch::stay_idle(stream, &notices, stopped).await
            })
        })
        .collect();
    opened.wait_for(watchers, &progress).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    // Let the allocator and the server's tasks settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with = rss();
    notices.store(0, Ordering::Relaxed);
    let with = load::closed_loop(&target, &plan, &progress).await;
    let progress_notices = notices.load(Ordering::Relaxed);
    let _ = stop.send(true);
    for watcher in filtered {
        if let Err(err) = watcher.await.expect("a watcher panicked") {
            errors += 1;
            first_error.get_or_insert(format!("a filtered watcher: {err}"));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let after = load::closed_loop(&target, &plan, &progress).await;
    progress.finish();

    for phase in [&none, &unfiltered, &with, &after] {
        errors += phase.errors;
        if let Some(err) = &phase.first_error {
            first_error.get_or_insert(err.clone());
        }
    }
    let figures = LiveInsertCost {
        watchers,
        filter: args.filter.clone(),
        filters: args.filters,
        none_throughput: none.throughput(),
        none_latency: Latency::of(&none.histogram),
        unfiltered_throughput: unfiltered.throughput(),
        unfiltered_latency: Latency::of(&unfiltered.histogram),
        after_throughput: after.throughput(),
        unfiltered_events: unfiltered_events.load(Ordering::Relaxed),
        open_seconds,
        rss_before_kib: rss_before,
        rss_with_kib: rss_with,
        bytes_per_watcher: rss_before
            .zip(rss_with)
            .map(|(before, with)| (with as f64 - before as f64) * 1024.0 / watchers.max(1) as f64),
        progress_notices,
    };
    let mut report = with.into_report();
    report.errors = errors;
    report.first_error = first_error;
    report.live_insert_cost = Some(figures);
    Ok(report)
}

/// The revision the next write will make: one insert's, plus 1 (nothing else writes).
async fn next_revision(target: &Target, plan: &Plan) -> Result<i64, String> {
    let revision = target
        .caller(0)
        .insert(&plan.keys[0], &plan.value)
        .await
        .map_err(|err| format!("insert: {err}"))?;
    Ok(revision + 1)
}

/// Reads a watch until stopped, counting its events.
async fn count_events(
    mut stream: Streaming<pb::WatchResponse>,
    events: &AtomicU64,
    mut stopped: signal::Receiver<bool>,
) -> Result<(), String> {
    let stop = stopped.wait_for(|stop| *stop);
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            biased;
            message = stream.message() => message,
            _ = &mut stop => return Ok(()),
        };
        match message {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Event(_)),
            })) => {
                events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the watch ended".into()),
            Err(s) => return Err(format!("the watch failed: {}", status(s))),
        }
    }
}

pub async fn list(args: &RunArgs) -> Result<Report, String> {
    let documents = args.keys;
    let every = args.match_every() as usize;
    let progress = Progress::new(args.quiet);
    let target = Target::connect(
        TargetKind::Jsonkv,
        &args.addr,
        args.connections,
        args.connect_timeout(),
    )
    .await?;
    let prefix = format!("{}list/", args.key_prefix);

    let loading = Instant::now();
    let (load_prefix, size) = (prefix.clone(), args.value_size);
    load::each(
        &target,
        documents.div_ceil(BATCH),
        args.concurrency,
        &progress,
        "loading",
        move |caller, batch| {
            let prefix = load_prefix.clone();
            async move {
                let mut client = caller.jsonkv().expect("a jsonkv target");
                let first = batch * BATCH;
                let success = (first..(first + BATCH).min(documents))
                    .map(|seq| pb::Op {
                        request: Some(op::Request::Insert(pb::InsertRequest {
                            key: format!("{prefix}{seq:08}"),
                            new_value: Some(NewValue::ValueJson(document(
                                size,
                                seq,
                                seq % every == 0,
                            ))),
                            value_encoding: ValueEncoding::Json as i32,
                            ..Default::default()
                        })),
                    })
                    .collect();
                let request = pb::TxnRequest {
                    compare: Vec::new(),
                    success,
                    failure: Vec::new(),
                };
                client.txn(request).await.map_err(status)?;
                Ok(())
            }
        },
    )
    .await
    .map_err(|err| format!("loading failed: {err}"))?;
    let load_seconds = loading.elapsed().as_secs_f64();

    let mut client = target.caller(0).jsonkv().expect("a jsonkv target");
    let lister = Lister {
        prefix,
        page_size: args.page_size,
        documents,
        matches: documents.div_ceil(every) as u64,
    };
    let mut errors = Errors::default();
    let filtered = lister
        .scan(
            &mut client,
            Some(&args.filter),
            args,
            &progress,
            &mut errors,
        )
        .await;
    let unfiltered = lister
        .scan(&mut client, None, args, &progress, &mut errors)
        .await;
    progress.finish();

    Ok(Report {
        seconds: filtered.seconds,
        ops: documents as u64 * filtered.passes,
        throughput: filtered.scanned_per_second,
        latency: filtered.page.clone(),
        errors: errors.count,
        first_error: errors.first,
        live_list: Some(LiveList {
            documents,
            filter: args.filter.clone(),
            match_every: every as u64,
            page_size: args.page_size,
            batch: BATCH,
            load_seconds,
            filtered,
            unfiltered,
        }),
        ..Report::default()
    })
}

#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn note(&mut self, err: String) {
        self.count += 1;
        self.first.get_or_insert(err);
    }
}

/// Lists every document under the prefix, page after page.
struct Lister {
    prefix: String,
    page_size: i32,
    /// The documents under the prefix, and the hits among them.
    documents: usize,
    matches: u64,
}

/// One pass through the prefix.
#[derive(Default)]
struct Pass {
    pages: u64,
    empty_pages: u64,
    received: u64,
    bytes: u64,
    matches: u64,
}

impl Lister {
    /// Passes through the prefix (with `filter`, or without it, the client picking the hits
    /// out) for the warm-up, unmeasured, then for the run's duration (at least one) or --count
    /// passes.
    async fn scan(
        &self,
        client: &mut JsonKvClient<Channel>,
        filter: Option<&str>,
        args: &RunArgs,
        progress: &Progress,
        errors: &mut Errors,
    ) -> ListScan {
        let name = if filter.is_some() {
            "filtered"
        } else {
            "unfiltered"
        };
        let mut pages = report::histogram();
        let mut passes = report::histogram();
        progress.stage(
            &format!("{name} warm-up"),
            args.warmup().as_millis() as u64,
            Unit::Millis,
        );
        let warming = Instant::now();
        while warming.elapsed() < args.warmup() {
            if let Err(err) = self.pass(client, filter, &mut report::histogram()).await {
                errors.note(err);
                break;
            }
            progress.set(warming.elapsed().as_millis() as u64, String::new());
        }
        progress.stage(
            &format!("{name} passes"),
            args.duration().as_millis() as u64,
            Unit::Millis,
        );
        let mut scan = ListScan::default();
        let measuring = Instant::now();
        loop {
            let started = Instant::now();
            let pass = match self.pass(client, filter, &mut pages).await {
                Ok(pass) => pass,
                Err(err) => {
                    errors.note(err);
                    break;
                }
            };
            let took = started.elapsed();
            passes.saturating_record(took.as_nanos() as u64);
            scan.seconds += took.as_secs_f64();
            scan.passes += 1;
            if pass.matches != self.matches {
                errors.note(format!(
                    "a {name} pass found {} of the {} matching documents",
                    pass.matches, self.matches
                ));
            }
            if filter.is_none() && pass.received != self.documents as u64 {
                errors.note(format!(
                    "an unfiltered pass listed {} of {} documents",
                    pass.received, self.documents
                ));
            }
            scan.pages = pass.pages;
            scan.empty_pages = pass.empty_pages;
            scan.received = pass.received;
            scan.bytes = pass.bytes;
            scan.matches = pass.matches;
            progress.set(measuring.elapsed().as_millis() as u64, String::new());
            let done = match args.count {
                Some(count) => scan.passes >= count,
                None => measuring.elapsed() >= args.duration(),
            };
            if done {
                break;
            }
        }
        scan.scanned_per_second =
            (self.documents as u64 * scan.passes) as f64 / scan.seconds.max(f64::MIN_POSITIVE);
        scan.pass = Latency::of(&passes);
        scan.page = Latency::of(&pages);
        scan
    }

    /// Lists the prefix once, following each page's token until an empty one (a filtered page
    /// may be short, or empty, and still have a next one); every page call's time goes into
    /// `pages`.
    async fn pass(
        &self,
        client: &mut JsonKvClient<Channel>,
        filter: Option<&str>,
        pages: &mut Histogram<u64>,
    ) -> Result<Pass, String> {
        let mut pass = Pass::default();
        let mut token = String::new();
        loop {
            let request = pb::ListRequest {
                prefix: self.prefix.clone(),
                page_size: self.page_size,
                page_token: std::mem::take(&mut token),
                value_encoding: ValueEncoding::Json as i32,
                filter: filter.unwrap_or_default().to_owned(),
                ..Default::default()
            };
            let sent = Instant::now();
            let page = client
                .list(request)
                .await
                .map_err(|s| format!("list: {}", status(s)))?
                .into_inner();
            pages.saturating_record(sent.elapsed().as_nanos() as u64);
            pass.pages += 1;
            pass.bytes += page.encoded_len() as u64;
            pass.empty_pages += u64::from(page.kvs.is_empty());
            for kv in &page.kvs {
                pass.received += 1;
                match read_document(&kv.value_json) {
                    Some((_, true)) => pass.matches += 1,
                    Some((_, false)) if filter.is_none() => {}
                    _ => {
                        return Err(format!(
                            "the list sent {} = {}, which does not match",
                            kv.key, kv.value_json
                        ))
                    }
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(pass);
            }
            // Every page moves on by at least one key: more pages than documents is a loop.
            if pass.pages > self.documents as u64 + 1 {
                return Err(format!(
                    "the list did not end after {} pages of {} documents",
                    pass.pages, self.documents
                ));
            }
            token = page.next_page_token;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_read_back_as_their_seq_and_kind() {
        for (seq, hit) in [(0, true), (7, false), (123_456, true)] {
            let doc = document(100, seq, hit);
            assert_eq!(doc.len(), 100);
            assert_eq!(read_document(&doc), Some((seq, hit)), "{doc}");
            let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
            assert_eq!(parsed["kind"], if hit { "hit" } else { "miss" });
        }
        assert_eq!(read_document("{\"seq\":1,\"kind\":\"hits\"}"), None);
        assert_eq!(read_document("{\"seq\":1,\"pad\":\"\"}"), None);
        assert_eq!(read_document("{\"kind\":\"hit\",\"seq\":1}"), None);
    }

    #[test]
    fn distinct_filters_keep_the_first_text() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["jsonkv-bench", "--workload", "live-fanout"];
            argv.extend_from_slice(extra);
            <crate::Cli as clap::Parser>::try_parse_from(argv)
                .expect("valid flags")
                .run
        };
        let one = args(&[]);
        assert_eq!(filter_of(&one, 0), r#"value.kind == "hit""#);
        assert_eq!(filter_of(&one, 5), r#"value.kind == "hit""#);
        let three = args(&["--filters", "3"]);
        assert_eq!(filter_of(&three, 3), r#"value.kind == "hit""#);
        assert_eq!(
            filter_of(&three, 4),
            r##"(value.kind == "hit") && key != "#1""##
        );
    }

    #[test]
    fn a_filtered_watcher_takes_only_new_hits_entering_in_order() {
        let expected = Expected {
            every: 10,
            matches: 3,
            events: 3,
            server_filtered: true,
        };
        let item = |seq, hit, revision, view: ViewChange| Item {
            doc: Some((seq, hit)),
            revision,
            view_change: view as i32,
        };
        let mut got = Received {
            arrivals: vec![0; 3],
            matched: 0,
            events: 0,
            last_revision: 0,
            fault: None,
        };
        assert!(got.note(&item(0, true, 2, ViewChange::Entered), &expected, 5));
        assert!(got.note(&item(10, true, 12, ViewChange::Entered), &expected, 6));
        assert!(got.wants_more(&expected));
        assert!(!got.note(&item(11, false, 13, ViewChange::Entered), &expected, 7));
        assert!(got.fault.as_deref().unwrap().contains("does not match"));
        let mut again = Received { fault: None, ..got };
        assert!(!again.note(&item(20, true, 12, ViewChange::Entered), &expected, 8));
        let mut wrong_view = Received {
            fault: None,
            ..again
        };
        assert!(!wrong_view.note(&item(20, true, 30, ViewChange::Updated), &expected, 9));
        let mut last = Received {
            fault: None,
            ..wrong_view
        };
        assert!(last.note(&item(20, true, 30, ViewChange::Entered), &expected, 9));
        assert!(!last.wants_more(&expected));
        assert!(last.complete());
        assert_eq!(last.arrivals, [5, 6, 9]);
    }
}
