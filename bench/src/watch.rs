//! The watch workloads, against jsonkv:
//! - `fanout`: W watchers on one key, one writer inserting at a fixed rate on its own
//!   connection (to the watchers' server, or with --write-addr to another server on the same
//!   etcd). Measures the latency from each insert to its delivery at every watcher, and checks
//!   that every watcher got every event exactly once, in order. Optional slow watchers stop
//!   reading until the last insert, to show that they hold nobody else up and still catch up
//!   without a gap. The writer, the checks and the figures ([`FanoutPlan`], [`Seen`]) serve
//!   the fan-out over HTTP streams too (`http_watch`).
//! - `idle_keys`: W idle watchers, each on its own key. Measures insert throughput on other
//!   keys before and while they are open, and the server's memory per watcher (VmRSS).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::watch_response::Response as Msg;
use jsonkv::pb::{self, ValueEncoding};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::load::{self, Plan};
use crate::progress::{Progress, Unit};
use crate::report::{self, Fanout, IdleWatchers, Latency, Report};
use crate::target::{self, Caller, Target};
use crate::{RunArgs, TargetKind};

/// Watch calls opened at once: enough to open thousands quickly, few enough not to queue
/// thousands of snapshots on the server at the same moment.
const OPENING_AT_ONCE: usize = 256;
/// How long watchers get to receive the last events after the writer is done.
pub const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// Inserts `total` documents with `writer`, one per tick at `rate` a second, each in its own
/// task so that a slow acknowledgement does not delay the next send (an open loop at the asked
/// rate), noting on `clock` when each was sent and acknowledged. `document(seq)` is insert
/// `seq`'s key and value. Returns how many inserts failed, and the first failure.
pub async fn insert_paced(
    writer: &Caller,
    rate: u64,
    total: usize,
    clock: &Arc<Clock>,
    progress: &Progress,
    document: impl Fn(usize) -> (String, String),
) -> (u64, Option<String>) {
    progress.stage("inserting", total as u64, Unit::Items);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inserts = Vec::with_capacity(total);
    for seq in 0..total {
        ticker.tick().await;
        let (mut writer, clock) = (writer.clone(), Arc::clone(clock));
        let (key, value) = document(seq);
        inserts.push(tokio::spawn(async move {
            clock.mark_sent(seq);
            let outcome = writer.insert(&key, &value).await;
            clock.mark_acked(seq);
            outcome.map(drop).map_err(|err| format!("insert: {err}"))
        }));
        if seq % 64 == 0 {
            progress.set(seq as u64, String::new());
        }
    }
    let mut errors = 0;
    let mut first_error = None;
    for insert in inserts {
        if let Err(err) = insert.await.expect("an insert task panicked") {
            errors += 1;
            first_error.get_or_insert(err);
        }
    }
    (errors, first_error)
}

pub async fn fanout(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(1000);
    let progress = Progress::new(args.quiet);
    let target = connect(args, watcher_connections(args, watchers)).await?;
    let writer = writer(args, TargetKind::Jsonkv).await?;
    // A client that reads slowly: with a 64 KiB stream window, the server's sends to it stall
    // after a few hundred events instead of after megabytes. The connection window stays at
    // its default: h2 allows a connection only so many unread small DATA frames (half its
    // window's worth of framing), then the client closes it with ENHANCE_YOUR_CALM.
    let slow_endpoint = target::endpoint(&args.addr)?.initial_stream_window_size(64 * 1024 - 1);
    let slow_channel = target::open(&slow_endpoint, Duration::ZERO).await?;

    let plan = FanoutPlan::new(args, &format!("{}fanout", args.key_prefix));
    let opened = Arc::new(Opened::new());
    let spawn_watcher = |client: JsonKvClient<Channel>, slow: bool| {
        let (key, total, clock) = (plan.key.clone(), plan.total, Arc::clone(&plan.clock));
        let (stopped, may_read) = (plan.stopped(), slow.then(|| plan.may_read()));
        let opened = Arc::clone(&opened);
        tokio::spawn(async move {
            let (stream, _) = opened.open(open_watch(client, key)).await?;
            if let Some(mut go) = may_read {
                let _ = go.wait_for(|go| *go).await;
            }
            Ok::<_, String>(receive(stream, total, &clock, stopped).await)
        })
    };
    let fast: Vec<_> = (0..watchers)
        .map(|i| spawn_watcher(jsonkv(&target, i), false))
        .collect();
    let slow: Vec<_> = (0..args.slow_watchers)
        .map(|_| spawn_watcher(JsonKvClient::new(slow_channel.clone()), true))
        .collect();
    opened
        .wait_for(watchers + args.slow_watchers, &progress)
        .await?;
    plan.run(args, writer, fast, slow, &progress).await
}

/// The writer of a fan-out run: a connection of its own to --write-addr, or else to --addr
/// (writers and watchers are different clients).
pub async fn writer(args: &RunArgs, kind: TargetKind) -> Result<Caller, String> {
    // The watchers' server is known to be up by now; another one may still be starting.
    let (addr, patience) = match &args.write_addr {
        Some(addr) => (addr, args.connect_timeout()),
        None => (&args.addr, Duration::ZERO),
    };
    Ok(Target::connect(kind, addr, 1, patience).await?.caller(0))
}

/// A watcher of a fan-out run: it ends with what it received (or an error if it never opened).
pub type Watcher = JoinHandle<Result<Seen, String>>;

/// One fan-out run, whatever carries its watches: the key, the inserts (warm-up ones first),
/// when each was sent and acknowledged, and the signals its watchers wait for.
pub struct FanoutPlan {
    pub key: String,
    /// Inserts made before measuring.
    pub warm: usize,
    /// Every insert, warm-up included: what each watcher must receive.
    pub total: usize,
    pub clock: Arc<Clock>,
    stop: watch::Sender<bool>,
    go: watch::Sender<bool>,
}

impl FanoutPlan {
    pub fn new(args: &RunArgs, key: &str) -> FanoutPlan {
        let warm = (args.rate as f64 * args.warmup).round() as usize;
        let measured = args
            .count
            .unwrap_or((args.rate as f64 * args.duration).round() as u64)
            .max(1) as usize;
        let total = warm + measured;
        FanoutPlan {
            key: key.to_owned(),
            warm,
            total,
            clock: Arc::new(Clock::new(total)),
            stop: watch::channel(false).0,
            go: watch::channel(false).0,
        }
    }

    /// Turns true when the watchers must stop reading (the grace for the last events is over).
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Turns true when slow watchers may read again (the last insert is acknowledged).
    pub fn may_read(&self) -> watch::Receiver<bool> {
        self.go.subscribe()
    }

    /// Makes the inserts with `writer` while the watchers (open by now) receive them, waits
    /// for the watchers to finish, and reports the latency of every measured delivery to the
    /// `fast` ones, and whether the `slow` ones caught up.
    pub async fn run(
        self,
        args: &RunArgs,
        writer: Caller,
        fast: Vec<Watcher>,
        slow: Vec<Watcher>,
        progress: &Progress,
    ) -> Result<Report, String> {
        let (warm, total, clock) = (self.warm, self.total, &self.clock);
        let (mut errors, mut first_error) =
            insert_paced(&writer, args.rate, total, clock, progress, |seq| {
                let value = load::json_value(args.value_size, &format!("\"seq\":{seq},"));
                (self.key.clone(), value)
            })
            .await;

        progress.stage("delivering", fast.len() as u64, Unit::Items);
        let _ = self.go.send(true);
        let deadline = Instant::now() + DRAIN_GRACE;
        while Instant::now() < deadline && !fast.iter().chain(&slow).all(|w| w.is_finished()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let done = fast.iter().filter(|w| w.is_finished()).count();
            progress.set(done as u64, String::new());
        }
        let _ = self.stop.send(true);
        progress.finish();

        // Latency over the measured events, at every fast watcher. From the acknowledgement it
        // is clamped at 0: a watcher may read the event before the writer reads its
        // acknowledgement, often so when the write went to another server, which applies it to
        // its own view in parallel with the watchers' server. Those deliveries are counted,
        // and the latency from the send, which is never negative, is kept beside it.
        let mut from_ack = report::histogram();
        let mut from_send = report::histogram();
        let mut fig = Fanout {
            watchers: fast.len(),
            slow_watchers: slow.len(),
            rate: args.rate,
            ..Fanout::default()
        };
        for watcher in fast {
            let seen = watcher.await.expect("a watcher panicked")?;
            if !seen.complete {
                fig.incomplete_watchers += 1;
                first_error.get_or_insert(seen.describe(total));
            }
            for seq in warm..total {
                let Some(at) = seen.arrival(seq) else {
                    continue;
                };
                let (sent, acked) = clock.span(seq);
                from_send.saturating_record(at.saturating_sub(sent));
                from_ack.saturating_record(at.saturating_sub(acked));
                fig.before_ack += u64::from(at < acked);
                fig.deliveries += 1;
            }
        }
        for watcher in slow {
            let seen = watcher.await.expect("a watcher panicked")?;
            if seen.complete {
                fig.slow_complete += 1;
            } else {
                fig.slow_failure.get_or_insert(seen.describe(total));
            }
        }
        errors += fig.incomplete_watchers + (fig.slow_watchers - fig.slow_complete) as u64;
        if let Some(failure) = &fig.slow_failure {
            first_error.get_or_insert(format!("slow watcher: {failure}"));
        }

        let mut insert = report::histogram();
        for seq in warm..total {
            let (sent, acked) = clock.span(seq);
            insert.saturating_record(acked.saturating_sub(sent));
        }
        let first_sent = clock.sent[warm].load(Ordering::Acquire);
        let last_acked = (warm..total)
            .map(|seq| clock.span(seq).1)
            .max()
            .unwrap_or(0);
        let seconds = last_acked.saturating_sub(first_sent) as f64 / 1e9;
        let measured = total - warm;
        fig.events = measured as u64;
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
            fanout: Some(fig),
            ..Report::default()
        })
    }
}

pub async fn idle_keys(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(10_000);
    let progress = Progress::new(args.quiet);
    let target = connect(args, args.connections).await?;
    let watching = connect(args, watcher_connections(args, watchers)).await?;
    let plan = Arc::new(Plan::new(args, &format!("{}data/", args.key_prefix)));
    let rss = || args.server_pid.and_then(vm_rss_kib);

    let baseline = load::closed_loop(&target, &plan, &progress).await;
    let rss_before = rss();

    let opening = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let opened = Arc::new(Opened::new());
    let notices = Arc::new(AtomicU64::new(0));
    let idle: Vec<_> = (0..watchers)
        .map(|i| {
            let key = format!("{}idle/{i:08}", args.key_prefix);
            let client = jsonkv(&watching, i);
            let (opened, notices) = (Arc::clone(&opened), Arc::clone(&notices));
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let (stream, _) = opened.open(open_watch(client, key)).await?;
                stay_idle(stream, &notices, stopped).await
            })
        })
        .collect();
    opened.wait_for(watchers, &progress).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    // Let the allocator and the server's tasks settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with = rss();

    notices.store(0, Ordering::Relaxed);
    let loaded = load::closed_loop(&target, &plan, &progress).await;
    let progress_notices = notices.load(Ordering::Relaxed);

    let _ = stop.send(true);
    let mut errors = baseline.errors + loaded.errors;
    let mut first_error = baseline.first_error.clone().or(loaded.first_error.clone());
    for watcher in idle {
        if let Err(err) = watcher.await.expect("a watcher panicked") {
            errors += 1;
            first_error.get_or_insert(err);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_close = rss();
    progress.finish();

    let figures = IdleWatchers {
        watchers,
        baseline_throughput: baseline.throughput(),
        baseline_latency: Latency::of(&baseline.histogram),
        open_seconds,
        rss_before_kib: rss_before,
        rss_with_kib: rss_with,
        rss_after_close_kib: rss_after_close,
        bytes_per_watcher: rss_before
            .zip(rss_with)
            .map(|(before, with)| (with as f64 - before as f64) * 1024.0 / watchers.max(1) as f64),
        progress_notices,
    };
    let mut report = loaded.into_report();
    report.errors = errors;
    report.first_error = first_error;
    report.idle_watchers = Some(figures);
    Ok(report)
}

async fn connect(args: &RunArgs, connections: usize) -> Result<Target, String> {
    Target::connect(
        TargetKind::Jsonkv,
        &args.addr,
        connections,
        args.connect_timeout(),
    )
    .await
}

/// Watchers a connection carries when --watcher-connections is not given: servers cap watches
/// per connection (jsonkv-server's --max-watchers-per-connection is 512 by default).
const WATCHERS_PER_CONNECTION: usize = 256;

pub fn watcher_connections(args: &RunArgs, watchers: usize) -> usize {
    let needed = watchers.div_ceil(WATCHERS_PER_CONNECTION);
    args.watcher_connections
        .unwrap_or(args.connections.max(needed))
        .max(1)
}

pub fn jsonkv(target: &Target, i: usize) -> JsonKvClient<Channel> {
    target.caller(i).jsonkv().expect("a jsonkv target")
}

/// How many watchers are open (have their snapshot), and why the first that could not open
/// failed; it lets only so many open at once.
pub struct Opened {
    count: AtomicUsize,
    failure: std::sync::Mutex<Option<String>>,
    gate: Semaphore,
}

impl Opened {
    pub fn new() -> Opened {
        Opened {
            count: AtomicUsize::new(0),
            failure: std::sync::Mutex::new(None),
            gate: Semaphore::new(OPENING_AT_ONCE),
        }
    }

    /// Runs `opening` (at most OPENING_AT_ONCE at a time) and counts the watcher it opens, or
    /// notes why it failed.
    pub async fn open<T>(
        &self,
        opening: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let permit = self.gate.acquire().await.expect("never closed");
        match opening.await {
            Ok(opened) => {
                drop(permit);
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(opened)
            }
            Err(err) => {
                let mut failure = self.failure.lock().expect("not poisoned");
                failure.get_or_insert_with(|| err.clone());
                Err(err)
            }
        }
    }

    /// Waits until `count` watchers are open, or fails with the first that could not open.
    pub async fn wait_for(&self, count: usize, progress: &Progress) -> Result<(), String> {
        progress.stage("watchers", count as u64, Unit::Items);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = self.count.load(Ordering::Relaxed);
            progress.set(done as u64, String::new());
            if done >= count {
                return Ok(());
            }
            if let Some(err) = self.failure.lock().expect("not poisoned").clone() {
                return Err(format!("a watcher failed to open: {err}"));
            }
            if Instant::now() > deadline {
                return Err(format!("only {done} of {count} watchers opened in 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Opens a watch and reads its snapshot; returns the stream and the snapshot's revision.
async fn open_watch(
    mut client: JsonKvClient<Channel>,
    key: String,
) -> Result<(Streaming<pb::WatchResponse>, i64), String> {
    let request = pb::WatchKeyRequest {
        key,
        start_revision: 0,
        value_encoding: ValueEncoding::Json as i32,
        ..Default::default()
    };
    let mut stream = client
        .watch_key(request)
        .await
        .map_err(|s| format!("watch: {s}"))?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Snapshot(snapshot)),
            })) if snapshot.last => return Ok((stream, snapshot.revision)),
            Ok(Some(_)) => continue,
            Ok(None) => return Err("watch ended before its snapshot".into()),
            Err(s) => return Err(format!("watch: {s}")),
        }
    }
}

/// Reads a fan-out watch until it has `total` events or is stopped, noting when each arrived.
async fn receive(
    mut stream: Streaming<pb::WatchResponse>,
    total: usize,
    clock: &Clock,
    mut stopped: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::new(total);
    // One wait for the stop, polled after each read rather than made anew for it: a watcher
    // reads thousands of events a second, on the cores the server needs.
    let stop = stopped.wait_for(|stop| *stop);
    tokio::pin!(stop);
    while seen.wants_more() {
        let message = tokio::select! {
            biased;
            message = stream.message() => message,
            _ = &mut stop => break,
        };
        let event = match message {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Event(event)),
            })) => event,
            Ok(Some(_)) => continue,
            Ok(None) => {
                seen.fail("the stream ended".into());
                break;
            }
            Err(s) => {
                seen.fail(format!("{:?}: {}", s.code(), s.message()));
                break;
            }
        };
        let seq = event.kv.as_ref().and_then(|kv| parse_seq(&kv.value_json));
        if !seen.note(seq, event.revision, clock.now()) {
            break;
        }
    }
    seen.finish()
}

/// What one fan-out watcher received.
pub struct Seen {
    /// Nanoseconds on the run's clock at which event `seq` arrived; 0 if it did not.
    arrivals: Vec<u64>,
    received: usize,
    last_revision: i64,
    complete: bool,
    fault: Option<String>,
}

impl Seen {
    /// Nothing yet, of `total` events.
    pub fn new(total: usize) -> Seen {
        Seen {
            arrivals: vec![0; total],
            received: 0,
            last_revision: 0,
            complete: false,
            fault: None,
        }
    }

    /// Whether some events are still to come.
    pub fn wants_more(&self) -> bool {
        self.received < self.arrivals.len()
    }

    /// Notes that the event of insert `seq` (`None`: its value had none), at `revision`,
    /// arrived `now`. False, with the fault noted, unless it is an insert not seen before, at
    /// a revision after every one seen before: a watcher must get each once, in order.
    pub fn note(&mut self, seq: Option<usize>, revision: i64, now: u64) -> bool {
        match seq {
            Some(seq)
                if seq < self.arrivals.len()
                    && self.arrivals[seq] == 0
                    && revision > self.last_revision =>
            {
                self.arrivals[seq] = now;
                self.received += 1;
                self.last_revision = revision;
                true
            }
            _ => {
                self.fail(format!(
                    "unexpected event at revision {revision} (seq {seq:?}, after revision {})",
                    self.last_revision
                ));
                false
            }
        }
    }

    /// Notes why the stream ended early.
    pub fn fail(&mut self, fault: String) {
        self.fault.get_or_insert(fault);
    }

    /// Done receiving: complete if every event came and nothing went wrong.
    pub fn finish(mut self) -> Seen {
        self.complete = !self.wants_more() && self.fault.is_none();
        self
    }

    fn arrival(&self, seq: usize) -> Option<u64> {
        Some(self.arrivals[seq]).filter(|&at| at != 0)
    }

    fn describe(&self, total: usize) -> String {
        let fault = self
            .fault
            .as_deref()
            .unwrap_or("no more events before the deadline");
        format!("a watcher got {} of {total} events: {fault}", self.received)
    }
}

/// The `seq` of a fan-out value, `{"seq":N,...}`, without parsing the whole document.
pub fn parse_seq(json: &str) -> Option<usize> {
    let digits = json.strip_prefix("{\"seq\":")?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

/// Keeps an idle watch open and read until stopped; counts its progress notices. An event is
/// an error: nobody writes an idle watcher's key.
pub async fn stay_idle(
    mut stream: Streaming<pb::WatchResponse>,
    notices: &AtomicU64,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = stopped.wait_for(|stop| *stop) => return Ok(()),
        };
        match message {
            Ok(Some(pb::WatchResponse {
                response: Some(Msg::Progress(_)),
            })) => {
                notices.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(other)) => return Err(format!("an idle watcher got {other:?}")),
            Ok(None) => return Err("an idle watch ended".into()),
            Err(s) => return Err(format!("an idle watch failed: {s}")),
        }
    }
}

/// When each insert of a fan-out run was sent and acknowledged, in nanoseconds since the run
/// began (0: not yet).
pub struct Clock {
    epoch: Instant,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
}

impl Clock {
    pub fn new(events: usize) -> Clock {
        Clock {
            epoch: Instant::now(),
            sent: (0..events).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Never 0, so that 0 can mean "not yet".
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Notes that insert `seq` is being sent now.
    pub fn mark_sent(&self, seq: usize) {
        self.sent[seq].store(self.now(), Ordering::Release);
    }

    /// Notes that insert `seq` was acknowledged (or failed) now.
    pub fn mark_acked(&self, seq: usize) {
        self.acked[seq].store(self.now(), Ordering::Release);
    }

    /// When insert `seq` was sent and acknowledged.
    pub fn span(&self, seq: usize) -> (u64, u64) {
        (
            self.sent[seq].load(Ordering::Acquire),
            self.acked[seq].load(Ordering::Acquire),
        )
    }
}

/// The server's resident memory, from /proc/PID/status.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_is_read_from_the_front_of_the_value() {
        assert_eq!(
            parse_seq(&load::json_value(100, "\"seq\":1234,")),
            Some(1234)
        );
        assert_eq!(parse_seq("{\"pad\":\"x\",\"seq\":1}"), None);
        assert_eq!(parse_seq("{\"seq\":}"), None);
    }
}
