//! `GET /v1/watch?key=K` or `?prefix=P`: a watch as a `text/event-stream`. The first event is
//! the snapshot, then one event per change (`put`, `delete`) and `progress` notices, each with
//! its revision as `id`. A reconnect sending `Last-Event-ID: R` resumes exactly after R, with
//! no snapshot, as `start_revision = R + 1` does over gRPC.
//!
//! An `id` is sent only where a stream may resume: on the last part of a snapshot, on a
//! change's last event of its revision (a transaction's others carry `more_at_revision`),
//! and on progress notices. Comments every `--http-heartbeat` keep proxies from closing an
//! idle stream. An error once the stream has started is an `error` event, and the end.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::request::Parts;
use http::{header, HeaderValue};
use jsonkv::pb::{self, json_kv_server::JsonKv, watch_response, ValueEncoding};
use serde::Deserialize;

use super::call::{query, Api};
use super::json;
use super::problem::Problem;
use crate::service::STORE_ID_HEADER;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
    /// `prefix=` (empty) watches every key: present, not absent.
    #[serde(default, deserialize_with = "present")]
    prefix: Option<String>,
    #[serde(default)]
    start_revision: i64,
    #[serde(default)]
    min_revision: i64,
    #[serde(default)]
    prev_kv: bool,
    #[serde(default)]
    store_id: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    fields: Vec<String>,
    #[serde(default)]
    diff: bool,
}

/// A parameter that is there, even empty (the query reader takes an empty value of an
/// `Option` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

const LAST_EVENT_ID: &str = "last-event-id";

pub async fn watch(State(api): State<Api>, parts: Parts) -> Result<Response, Problem> {
    let q: WatchQuery = query(&parts)?;
    // A reconnect's resume point wins over the URL's start: EventSource and the console keep
    // the URL they opened with and add the last id they saw.
    let start_revision = match parts.headers.get(LAST_EVENT_ID) {
        Some(id) => id
            .to_str()
            .ok()
            .and_then(|id| id.trim().parse::<i64>().ok())
            .filter(|r| *r >= 0)
            .map(|r| r + 1)
            .ok_or_else(|| {
                Problem::bad_request("Last-Event-ID must be a revision this API sent as an id")
            })?,
        None => q.start_revision,
    };
    let encoding = ValueEncoding::Json as i32;
    let stream = match (q.key, q.prefix) {
        (Some(key), None) => {
            if !q.filter.is_empty() || !q.fields.is_empty() || q.diff {
                return Err(Problem::bad_request(
                    "filter, fields and diff apply to a prefix watch: use ?prefix=P",
                ));
            }
            let request = api.request(
                "WatchKey",
                &parts,
                pb::WatchKeyRequest {
                    key,
                    start_revision,
                    value_encoding: encoding,
                    min_revision: q.min_revision,
                    store_id: q.store_id,
                    prev_kv: q.prev_kv,
                },
            )?;
            api.unary(api.service.watch_key(request))
                .await?
                .into_inner()
        }
        (None, Some(prefix)) => {
            let request = api.request(
                "WatchPrefix",
                &parts,
                pb::WatchPrefixRequest {
                    prefix,
                    start_revision,
                    value_encoding: encoding,
                    min_revision: q.min_revision,
                    store_id: q.store_id,
                    prev_kv: q.prev_kv,
                    filter: q.filter,
                    fields: q.fields,
                    diff: q.diff,
                },
            )?;
            api.unary(api.service.watch_prefix(request))
                .await?
                .into_inner()
        }
        _ => {
            return Err(Problem::bad_request(
                "name what to watch: ?key=K or ?prefix=P (an empty prefix watches every key)",
            ))
        }
    };
    let mut response = Sse::new(events(stream))
        .keep_alive(KeepAlive::new().interval(api.heartbeat).text("heartbeat"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to, which would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(STORE_ID_HEADER, api.store_id_header());
    // How long a client may hear nothing before it should think the stream dead.
    headers.insert(
        "jsonkv-heartbeat-seconds",
        HeaderValue::from(api.heartbeat.as_secs().max(1)),
    );
    Ok(response)
}

/// The watch's messages as server-sent events, ending after the first error.
fn events(
    stream: impl Stream<Item = Result<pb::WatchResponse, tonic::Status>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    stream
        .scan(false, |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            let event = match item {
                Ok(message) => sse_event(message),
                Err(status) => {
                    *failed = true;
                    let problem = Problem::from(status);
                    Some(
                        Event::default()
                            .event("error")
                            .data(serde_json::to_string(&problem).expect("problems serialize")),
                    )
                }
            };
            futures::future::ready(Some(event))
        })
        .filter_map(|event| futures::future::ready(event.map(Ok)))
}

fn sse_event(message: pb::WatchResponse) -> Option<Event> {
    Some(match message.response? {
        watch_response::Response::Snapshot(snapshot) => {
            let event = Event::default()
                .event("snapshot")
                .data(json::snapshot(&snapshot));
            if snapshot.last {
                event.id(snapshot.revision.to_string())
            } else {
                event
            }
        }
        watch_response::Response::Event(change) => {
            let kind = match change.r#type() {
                pb::event::EventType::Delete => "delete",
                _ => "put",
            };
            let event = Event::default().event(kind).data(json::event(&change));
            if change.more_at_revision {
                event
            } else {
                event.id(change.revision.to_string())
            }
        }
        watch_response::Response::Progress(progress) => Event::default()
            .event("progress")
            .id(progress.revision.to_string())
            .data(format!("{{\"revision\":{}}}", progress.revision)),
    })
}
