//! The watch fan-out over HTTP (`sse-fanout`): W watchers on one key, each its own HTTP/1.1
//! stream, and one writer inserting at a fixed rate over gRPC, as the gRPC fan-out does
//! (`watch::FanoutPlan` makes the inserts, checks and figures of both). On jsonkv each watcher
//! is `GET /v1/watch?key=K`, server-sent events; on etcd, its JSON gateway's
//! `POST /v3/watch`, a stream of JSON messages with the values in base64.
//!
//! HTTP/1.1 carries one stream per connection, so W watchers are W connections, and as many
//! file descriptors in this process (and the server's): the run checks the limit first.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use memchr::memmem;
use serde::Deserialize;
use tokio::sync::watch::Receiver;

use crate::http::{Addr, Conn};
use crate::progress::Progress;
use crate::report::Report;
use crate::watch::{parse_seq, writer, Clock, FanoutPlan, Opened, Seen, Watcher};
use crate::{RunArgs, TargetKind};

/// What comes before the `seq` of a fan-out value in a put event's data (the value is the
/// document as written, `{"seq":N,...}`, see `load::json_value`), found once for every event.
static SEQ: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"value\":{\"seq\":"));

/// File descriptors the process needs beside one per watcher: the writer's connection, the
/// runtime's own, stdio.
const SPARE_FDS: u64 = 64;

pub async fn fanout(args: &RunArgs) -> Result<Report, String> {
    let watchers = args.watchers.unwrap_or(1000);
    check_fd_limit(watchers as u64 + SPARE_FDS)?;
    let addr = Addr::parse(&args.addr)?;
    let progress = Progress::new(args.quiet);
    let plan = FanoutPlan::new(args, &format!("{}fanout", args.key_prefix));
    let api = match args.target {
        TargetKind::Jsonkv => Api::ServerSentEvents,
        TargetKind::Etcd => Api::EtcdGateway,
        TargetKind::Echo => return Err("sse-fanout runs against jsonkv or etcd".into()),
    };
    // The first connection waits for the server; the others find it up.
    drop(Conn::open(&addr, args.connect_timeout()).await?);
    let opened = Arc::new(Opened::new());
    let fast: Vec<Watcher> = (0..watchers)
        .map(|_| {
            let (addr, key, opened) = (addr.clone(), plan.key.clone(), Arc::clone(&opened));
            let (total, clock, stopped) = (plan.total, Arc::clone(&plan.clock), plan.stopped());
            tokio::spawn(async move {
                let stream = opened.open(Stream::open(api, &addr, &key)).await?;
                Ok(stream.receive(total, &clock, stopped).await)
            })
        })
        .collect();
    opened.wait_for(watchers, &progress).await?;
    let writer = writer(args, args.target).await?;
    plan.run(args, writer, fast, Vec::new(), &progress).await
}

/// Fails unless this process may open `needed` files (`ulimit -n`).
fn check_fd_limit(needed: u64) -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<u64>().ok());
    match soft {
        Some(soft) if soft < needed => Err(format!(
            "{needed} open files needed (a connection per watcher), but the limit is {soft}: \
             raise it (ulimit -n)"
        )),
        _ => Ok(()),
    }
}

/// What a watcher's stream speaks.
#[derive(Clone, Copy)]
enum Api {
    /// jsonkv: `GET /v1/watch?key=K`, `text/event-stream`.
    ServerSentEvents,
    /// etcd's gateway: `POST /v3/watch`, one JSON message per line.
    EtcdGateway,
}

/// One watcher's open stream: its body, and what of it has come but is not read yet.
struct Stream {
    api: Api,
    body: Incoming,
    buffer: Buffer,
    /// The connection, held for as long as the stream is read.
    _conn: Conn,
}

impl Stream {
    /// Opens a watch on `key` and reads until it is live: jsonkv's snapshot (its last part),
    /// etcd's `created` message.
    async fn open(api: Api, addr: &Addr, key: &str) -> Result<Stream, String> {
        let mut conn = Conn::open(addr, Duration::ZERO).await?;
        let response = match api {
            Api::ServerSentEvents => {
                let path = format!("/v1/watch?key={key}");
                conn.send(Method::GET, &path, None).await?
            }
            Api::EtcdGateway => {
                let key = BASE64_STANDARD.encode(key);
                let body = format!("{{\"create_request\":{{\"key\":\"{key}\"}}}}");
                conn.send(Method::POST, "/v3/watch", Some(Bytes::from(body)))
                    .await?
            }
        };
        let status = response.status();
        let mut stream = Stream {
            api,
            body: response.into_body(),
            buffer: Buffer::default(),
            _conn: conn,
        };
        if status != StatusCode::OK {
            let text = stream.body.collect().await.map(|b| b.to_bytes());
            let text = text
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            return Err(format!("watch: {status}: {text}"));
        }
        loop {
            let live = match stream.api {
                Api::ServerSentEvents => stream.buffer.next_event().map(|event| {
                    let last = memmem::find(event.data, b"\"last\":true").is_some();
                    match event.kind {
                        b"snapshot" => Ok(last),
                        b"" => Ok(false),
                        other => Err(format!(
                            "watch: {} before the snapshot",
                            String::from_utf8_lossy(other)
                        )),
                    }
                }),
                Api::EtcdGateway => stream.buffer.next_line().map(|line| {
                    let message = gateway_message(line)?;
                    Ok(message.created)
                }),
            };
            match live {
                Some(Ok(true)) => return Ok(stream),
                Some(Ok(false)) => continue,
                Some(Err(err)) => return Err(err),
                None => stream.read().await.map_err(|err| format!("watch: {err}"))?,
            }
        }
    }

    /// Reads more of the body into the buffer.
    async fn read(&mut self) -> Result<(), String> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.push(&data);
                        return Ok(());
                    }
                }
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("the stream ended".into()),
            }
        }
    }

    /// Reads the watch until it has `total` events or is stopped, noting when each arrived.
    async fn receive(mut self, total: usize, clock: &Clock, mut stopped: Receiver<bool>) -> Seen {
        let mut seen = Seen::new(total);
        // As `watch::receive` does: one wait for the stop, polled after each read.
        let stop = stopped.wait_for(|stop| *stop);
        tokio::pin!(stop);
        while seen.wants_more() {
            let read = tokio::select! {
                biased;
                read = self.read() => read,
                _ = &mut stop => break,
            };
            if let Err(err) = read {
                seen.fail(err);
                break;
            }
            // Every event the read completed arrived at this moment.
            let now = clock.now();
            if !self.note_events(&mut seen, now) {
                break;
            }
        }
        seen.finish()
    }

    /// Notes every whole event in the buffer; false once one was wrong.
    fn note_events(&mut self, seen: &mut Seen, now: u64) -> bool {
        match self.api {
            Api::ServerSentEvents => {
                while let Some(event) = self.buffer.next_event() {
                    match event.kind {
                        b"put" => {
                            let seq = SEQ
                                .find(event.data)
                                .and_then(|at| parse_digits(&event.data[at + SEQ.needle().len()..]))
                                .and_then(|seq| usize::try_from(seq).ok());
                            let Some(revision) = event.id else {
                                seen.fail("a put without an id".into());
                                return false;
                            };
                            if !seen.note(seq, revision, now) {
                                return false;
                            }
                        }
                        // Heartbeats (comments only) and progress notices.
                        b"" | b"progress" => {}
                        other => {
                            let data = String::from_utf8_lossy(event.data);
                            seen.fail(format!(
                                "unexpected {} event: {data}",
                                String::from_utf8_lossy(other)
                            ));
                            return false;
                        }
                    }
                }
            }
            Api::EtcdGateway => {
                while let Some(line) = self.buffer.next_line() {
                    let message = match gateway_message(line) {
                        Ok(message) => message,
                        Err(err) => {
                            seen.fail(err);
                            return false;
                        }
                    };
                    for event in message.events {
                        if event.kind.is_some() {
                            seen.fail("a delete event".into());
                            return false;
                        }
                        let value = BASE64_STANDARD.decode(event.kv.value).unwrap_or_default();
                        let seq = std::str::from_utf8(&value).ok().and_then(parse_seq);
                        let revision = event.kv.mod_revision.parse().unwrap_or(0);
                        if !seen.note(seq, revision, now) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}

/// The number the digits at the start of `text` spell, if it starts with one.
fn parse_digits(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    Some(
        text[..digits]
            .iter()
            .fold(0, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// Bytes received but not read yet, cut into server-sent events or lines.
#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// Where the next event or line starts.
    start: usize,
}

/// One server-sent event, borrowed from the buffer: its `event:` (empty for a comment-only
/// block such as a heartbeat), its `data:` (one line: the API sends no more) and its `id:`.
struct Event<'a> {
    kind: &'a [u8],
    data: &'a [u8],
    id: Option<i64>,
}

impl Buffer {
    fn push(&mut self, data: &[u8]) {
        // What was read already goes first, so that the buffer stays the size of one read.
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// The next whole event (the lines up to a blank one), if one has come.
    fn next_event(&mut self) -> Option<Event<'_>> {
        let rest = &self.bytes[self.start..];
        let mut event = Event {
            kind: b"",
            data: b"",
            id: None,
        };
        // Each byte is looked at once (memchr), as the client reads every event of the run.
        let mut line_start = 0;
        for end in memchr::memchr_iter(b'\n', rest) {
            let line = &rest[line_start..end];
            line_start = end + 1;
            if line.is_empty() {
                self.start += line_start;
                return Some(event);
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(0) => continue,
                Some(at) => (
                    &line[..at],
                    line[at + 1..].strip_prefix(b" ").unwrap_or(&line[at + 1..]),
                ),
                None => (line, &b""[..]),
            };
            match field {
                b"event" => event.kind = value,
                b"data" => event.data = value,
                b"id" => event.id = parse_digits(value).and_then(|id| i64::try_from(id).ok()),
                _ => {}
            }
        }
        None
    }

    /// The next whole line, if one has come (blank lines are skipped).
    fn next_line(&mut self) -> Option<&[u8]> {
        loop {
            let rest = &self.bytes[self.start..];
            let end = memchr::memchr(b'\n', rest)?;
            self.start += end + 1;
            if !rest[..end].trim_ascii().is_empty() {
                return Some(&self.bytes[self.start - end - 1..self.start - 1]);
            }
        }
    }
}

/// A message of etcd's gateway watch: `{"result":{...}}`, or `{"error":{...}}`.
#[derive(Deserialize)]
struct GatewayLine {
    result: Option<GatewayResult>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct GatewayResult {
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    events: Vec<GatewayEvent>,
}

#[derive(Deserialize)]
struct GatewayEvent {
    /// Absent for a put (the zero value of the enum), `DELETE` for a delete.
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: GatewayKv,
}

/// etcd's gateway writes 64-bit numbers as strings and bytes in base64.
#[derive(Deserialize)]
struct GatewayKv {
    #[serde(default)]
    mod_revision: String,
    #[serde(default)]
    value: String,
}

fn gateway_message(line: &[u8]) -> Result<GatewayResult, String> {
    let text = String::from_utf8_lossy(line);
    let message: GatewayLine =
        serde_json::from_slice(line).map_err(|err| format!("gateway message {text}: {err}"))?;
    match (message.result, message.error) {
        (_, Some(error)) => Err(format!("gateway error: {error}")),
        (Some(result), None) if result.canceled => Err(format!("watch canceled: {text}")),
        (Some(result), None) => Ok(result),
        (None, None) => Err(format!("gateway message without a result: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_cut_at_blank_lines_across_reads() {
        let mut buffer = Buffer::default();
        buffer.push(b": heartbeat\n\nevent: put\ndata: {\"a\":1}\nid: 7");
        let heartbeat = buffer.next_event().expect("the heartbeat");
        assert_eq!(
            (heartbeat.kind, heartbeat.data, heartbeat.id),
            (&b""[..], &b""[..], None)
        );
        assert!(buffer.next_event().is_none(), "the put is not whole yet");
        buffer.push(b"\n\nevent: progress\n");
        let put = buffer.next_event().expect("the put");
        assert_eq!(
            (put.kind, put.data, put.id),
            (&b"put"[..], &br#"{"a":1}"#[..], Some(7))
        );
        assert!(buffer.next_event().is_none());
    }

    #[test]
    fn the_sequence_number_is_read_from_a_put_events_value() {
        let data = format!(
            r#"{{"key":"k","value":{},"create_revision":2,"revision":9}}"#,
            crate::load::json_value(100, "\"seq\":1234,")
        );
        let at = SEQ.find(data.as_bytes()).expect("the value");
        assert_eq!(
            parse_digits(&data.as_bytes()[at + SEQ.needle().len()..]),
            Some(1234)
        );
        assert_eq!(parse_digits(b"x1"), None);
        assert_eq!(parse_digits(b"42"), Some(42));
    }

    #[test]
    fn gateway_lines_are_messages() {
        let mut buffer = Buffer::default();
        buffer.push(b"{\"result\":{\"created\":true}}\n\n{\"result\":{\"events\":[{\"kv\":");
        let created = gateway_message(buffer.next_line().unwrap()).unwrap();
        assert!(created.created);
        assert!(buffer.next_line().is_none());
        let value = BASE64_STANDARD.encode(r#"{"seq":3,"pad":""}"#);
        buffer
            .push(format!("{{\"mod_revision\":\"9\",\"value\":\"{value}\"}}}}]}}}}\n").as_bytes());
        let events = gateway_message(buffer.next_line().unwrap()).unwrap().events;
        assert_eq!(events[0].kv.mod_revision, "9");
        assert!(gateway_message(br#"{"error":{"code":2}}"#).is_err());
    }
}
