//! The HTTP/JSON API through the real server, as curl and browsers call it: HTTP/1.1 (and h2
//! through ALPN with TLS) on the gRPC port, or on a port of its own.
//!
//! Guarantees proved here (the contract: docs/http.md):
//! - A document is a resource: PUT stores the body as the lossless `value_json` path does and
//!   answers `{"revision":N}` with the ETag; GET answers the stored text with its revisions in
//!   headers, and 304 for a matching If-None-Match; keys are the percent-decoded rest of the
//!   path: `a_document_is_a_resource_with_its_revision_as_etag`.
//! - If-Match is compare-and-swap and If-None-Match: * creates only, for PUT, DELETE and PATCH;
//!   a failed condition is 412 with the current mod revision, and changes nothing:
//!   `conditional_requests_are_compare_and_swap`.
//! - PATCH takes RFC 7396 and RFC 6902 by media type; a failed `test` is 409, another media
//!   type 415: `patch_takes_merge_and_json_patch_by_media_type`.
//! - `GET /v1/kv` pages through a prefix with metadata: `a_prefix_lists_in_pages`.
//! - `POST /v1/txn` is the Txn call in the proto's JSON mapping: `a_transaction_in_proto_json`.
//! - A watch is a `text/event-stream`: the snapshot, then each change, ids only at safe resume
//!   points (never inside a transaction), Last-Event-ID resumes exactly after it, heartbeats
//!   keep a quiet stream open: `a_watch_is_an_event_stream_that_resumes_exactly`.
//! - Every error is a JSON body with the gRPC code's name, under the mapped status:
//!   `every_error_status_has_a_json_body`.
//! - The same tokens, roles and scopes as gRPC; a token never in a URL:
//!   `tokens_roles_and_scopes_hold_over_http`.
//! - `--http-listen` moves the API and the gRPC port says where; `off` turns it off, leaving
//!   the port HTTP/2 and gRPC alone:
//!   `the_api_can_move_to_its_own_port_or_be_off`.
//! - With TLS, HTTP/1.1 and h2 through ALPN beside gRPC on one port:
//!   `tls_serves_http1_h2_and_grpc_on_one_port`.
//! - CORS only for the origins named: `cors_answers_only_named_origins`.
//! - Requests are counted by route, method and status:
//!   `metrics_count_http_requests_by_route_and_status`.
//! - The console is served from the binary under a strict Content-Security-Policy:
//!   `the_console_is_served_with_a_strict_policy`.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use jsonkv::pb;
use jsonkv_server::config::HttpPlacement;
use jsonkv_server::{Config, RunningServer};
use reqwest::{Client as Http, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::common::{both_backends, config, get_json, start_on, within, Backend};
use crate::prom;

fn http() -> Http {
    Http::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn url(server: &RunningServer, path: &str) -> String {
    format!(
        "{}{path}",
        server.http_url().expect("the HTTP API is served")
    )
}

async fn body(response: Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Asserts `response` is an error of `status` and gRPC code `code`, with a JSON body; the body.
async fn problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "{:?}", response.url());
    assert_eq!(header(&response, "content-type"), "application/json");
    let body = body(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    body
}

async fn put(http: &Http, server: &RunningServer, key: &str, json: &str) -> i64 {
    let response = http
        .put(url(server, &format!("/v1/kv/{key}")))
        .body(json.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body(response).await["revision"].as_i64().unwrap()
}

async fn get_text(server: &RunningServer, key: &str) -> (StatusCode, String) {
    let response = http()
        .get(url(server, &format!("/v1/kv/{key}")))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn a_document_is_a_resource_with_its_revision_as_etag(backend: Backend) {
    let (server, mut grpc) = start_on(backend, config()).await;
    let http = http();
    let document = "{ \"name\": \"Ada\", \"n\": 123456789012345678901234567890, \"z\": 1, \"a\": [1.50, -0.0] }";
    let response = http
        .put(url(&server, "/v1/kv/user/ada"))
        .header("content-type", "application/json")
        .body(document)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = header(&response, "etag").to_owned();
    let written = body(response).await;
    let revision = written["revision"].as_i64().unwrap();
    assert_eq!(
        written,
        json!({ "revision": revision }),
        "the answer is the revision alone"
    );
    assert_eq!(etag, format!("\"{revision}\""));

    // Stored as gRPC's lossless value_json stores the same text: compact, every digit, key order.
    let compact = r#"{"name":"Ada","n":123456789012345678901234567890,"z":1,"a":[1.50,-0.0]}"#;
    let grpc_text = get_json(
        &mut grpc,
        pb::GetRequest {
            key: "user/ada".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(grpc_text, compact);

    let response = http
        .get(url(&server, "/v1/kv/user/ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(header(&response, "etag"), etag);
    assert_eq!(
        header(&response, "jsonkv-mod-revision"),
        revision.to_string()
    );
    assert_eq!(
        header(&response, "jsonkv-create-revision"),
        revision.to_string()
    );
    assert_eq!(header(&response, "jsonkv-version"), "1");
    assert_eq!(header(&response, "jsonkv-lease"), "0");
    assert!(header(&response, "jsonkv-revision").parse::<i64>().unwrap() >= revision);
    assert_eq!(
        header(&response, "jsonkv-store-id"),
        server.store().id().as_str()
    );
    assert_eq!(response.text().await.unwrap(), compact);

    let unchanged = http
        .get(url(&server, "/v1/kv/user/ada"))
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&unchanged, "etag"), etag);
    let stale = http
        .get(url(&server, "/v1/kv/user/ada"))
        .header("if-none-match", "\"1000000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);

    // HEAD answers the headers alone.
    let head = http
        .head(url(&server, "/v1/kv/user/ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "etag"), etag);
    assert_eq!(head.text().await.unwrap(), "");

    // The key is the rest of the path, percent-decoded: %2F and / name the same key.
    put(&http, &server, "a%20b%2Fc%3F", "7").await;
    let text = get_json(
        &mut grpc,
        pb::GetRequest {
            key: "a b/c?".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(text, "7");
    assert_eq!(
        get_text(&server, "a%20b/c%3F").await,
        (StatusCode::OK, "7".into())
    );

    let second = put(&http, &server, "user/ada", "[]").await;
    let response = http
        .get(url(&server, "/v1/kv/user/ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "jsonkv-version"), "2");
    assert_eq!(header(&response, "etag"), format!("\"{second}\""));
    assert_eq!(
        header(&response, "jsonkv-create-revision"),
        revision.to_string()
    );

    let gone = http
        .delete(url(&server, "/v1/kv/user/ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::OK);
    let deleted_at = body(gone).await["revision"].as_i64().unwrap();
    assert!(deleted_at > second);
    let missing = http
        .get(url(&server, "/v1/kv/user/ada"))
        .send()
        .await
        .unwrap();
    problem(missing, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}
both_backends!(a_document_is_a_resource_with_its_revision_as_etag);

async fn conditional_requests_are_compare_and_swap(backend: Backend) {
    let (server, _grpc) = start_on(backend, config()).await;
    let http = http();
    let key = url(&server, "/v1/kv/doc");
    let send = |method: Method, condition: (&'static str, String), body: &'static str| {
        http.request(method, &key)
            .header(condition.0, condition.1)
            .body(body)
            .send()
    };

    // Create only: once, then 412.
    let created = send(Method::PUT, ("if-none-match", "*".into()), "1")
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let first = body(created).await["revision"].as_i64().unwrap();
    let again = send(Method::PUT, ("if-none-match", "*".into()), "2")
        .await
        .unwrap();
    let refused = problem(
        again,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
    assert_eq!(refused["reason"], "REVISION_MISMATCH");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("exists") && message.contains("creates"),
        "{refused}"
    );
    assert_eq!(
        refused["metadata"]["current_mod_revision"],
        first.to_string()
    );

    // A stale tag is refused with the current revision; the right one writes.
    let stale = send(Method::PUT, ("if-match", "\"999999\"".into()), "3")
        .await
        .unwrap();
    let refused = problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
    assert_eq!(
        refused["metadata"]["current_mod_revision"],
        first.to_string()
    );
    assert_eq!(
        get_text(&server, "doc").await.1,
        "1",
        "a refused write changes nothing"
    );
    let swapped = send(Method::PUT, ("if-match", format!("\"{first}\"")), "4")
        .await
        .unwrap();
    assert_eq!(swapped.status(), StatusCode::OK);
    let second = body(swapped).await["revision"].as_i64().unwrap();

    // If-Match: * needs the key to exist.
    let exists = send(Method::PUT, ("if-match", "*".into()), "5")
        .await
        .unwrap();
    assert_eq!(exists.status(), StatusCode::OK);
    let third = body(exists).await["revision"].as_i64().unwrap();
    let absent = http
        .put(url(&server, "/v1/kv/never"))
        .header("if-match", "*")
        .body("1")
        .send()
        .await
        .unwrap();
    problem(
        absent,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
    assert_eq!(get_text(&server, "never").await.0, StatusCode::NOT_FOUND);

    // PATCH and DELETE take If-Match the same way.
    let patch = |tag: String| {
        http.patch(&key)
            .header("content-type", "application/merge-patch+json")
            .header("if-match", tag)
            .body(r#"{"a":1}"#)
            .send()
    };
    let stale = patch(format!("\"{second}\"")).await.unwrap();
    problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
    let patched = patch(format!("\"{third}\"")).await.unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let fourth: i64 = header(&patched, "jsonkv-mod-revision").parse().unwrap();
    let stale = send(Method::DELETE, ("if-match", format!("\"{third}\"")), "")
        .await
        .unwrap();
    problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
    assert_eq!(get_text(&server, "doc").await.1, r#"{"a":1}"#);
    let deleted = send(Method::DELETE, ("if-match", format!("\"{fourth}\"")), "")
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let absent = send(Method::DELETE, ("if-match", "*".into()), "")
        .await
        .unwrap();
    problem(
        absent,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
    let absent = http.delete(&key).send().await.unwrap();
    problem(absent, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    // Malformed conditions are bad requests, not ignored.
    for (name, value) in [
        ("if-match", "W/\"3\""),
        ("if-match", "3"),
        ("if-match", "\"1\", \"2\""),
        ("if-none-match", "\"3\""),
    ] {
        let response = http
            .put(&key)
            .header(name, value)
            .body("1")
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
        assert!(body["message"].as_str().unwrap().contains("If-"), "{body}");
    }
    assert_eq!(get_text(&server, "doc").await.0, StatusCode::NOT_FOUND);
}
both_backends!(conditional_requests_are_compare_and_swap);

async fn patch_takes_merge_and_json_patch_by_media_type(backend: Backend) {
    let (server, _grpc) = start_on(backend, config()).await;
    let http = http();
    let key = url(&server, "/v1/kv/order");
    let patch = |media_type: &'static str, body: &'static str| {
        http.patch(&key)
            .header("content-type", media_type)
            .body(body)
            .send()
    };

    // A merge patch creates an absent key; a JSON Patch needs one.
    let missing = patch(
        "application/json-patch+json",
        r#"[{"op":"add","path":"/a","value":1}]"#,
    )
    .await
    .unwrap();
    problem(missing, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let created = patch(
        "application/merge-patch+json",
        r#"{"state":"open","total":10,"big":123456789012345678901234567890}"#,
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(header(&created, "jsonkv-version"), "1");

    let merged = patch(
        "application/merge-patch+json; charset=utf-8",
        r#"{"state":"paid","total":null}"#,
    )
    .await
    .unwrap();
    assert_eq!(merged.status(), StatusCode::OK);
    let etag = header(&merged, "etag").to_owned();
    assert_eq!(
        merged.text().await.unwrap(),
        r#"{"state":"paid","big":123456789012345678901234567890}"#,
        "the answer is the new document"
    );
    assert_eq!(
        get_text(&server, "order").await.1,
        r#"{"state":"paid","big":123456789012345678901234567890}"#
    );

    let patched = patch(
        "application/json-patch+json",
        r#"[{"op":"test","path":"/state","value":"paid"},{"op":"add","path":"/items","value":[1]}]"#,
    )
    .await
    .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_ne!(header(&patched, "etag"), etag);

    let failed = patch(
        "application/json-patch+json",
        r#"[{"op":"test","path":"/state","value":"open"},{"op":"remove","path":"/items"}]"#,
    )
    .await
    .unwrap();
    let body = problem(failed, StatusCode::CONFLICT, "FAILED_PRECONDITION").await;
    assert_eq!(body["reason"], "PATCH_TEST_FAILED");
    assert_eq!(body["metadata"]["path"], "/state");
    let malformed = patch("application/json-patch+json", r#"{"op":"add"}"#)
        .await
        .unwrap();
    problem(malformed, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;

    for media_type in ["application/json", "text/plain"] {
        let wrong = patch(media_type, r#"{"a":1}"#).await.unwrap();
        let body = problem(
            wrong,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_ARGUMENT",
        )
        .await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("merge-patch+json"),
            "{body}"
        );
    }
    let none = http.patch(&key).body("{}").send().await.unwrap();
    problem(none, StatusCode::UNSUPPORTED_MEDIA_TYPE, "INVALID_ARGUMENT").await;
    assert_eq!(
        get_text(&server, "order").await.1,
        r#"{"state":"paid","big":123456789012345678901234567890,"items":[1]}"#,
        "refused patches changed nothing"
    );
}
both_backends!(patch_takes_merge_and_json_patch_by_media_type);

async fn a_prefix_lists_in_pages(backend: Backend) {
    let (server, _grpc) = start_on(backend, config()).await;
    let http = http();
    for (key, value) in [
        ("p/a", "1"),
        ("p/b", "{\"x\":[true]}"),
        ("p/c", "3"),
        ("q/a", "4"),
        ("p/d", "5"),
    ] {
        put(&http, &server, key, value).await;
    }
    let mut keys = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let response = http
            .get(url(&server, "/v1/kv"))
            .query(&[
                ("prefix", "p/"),
                ("limit", "2"),
                ("page_token", token.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let page = body(response).await;
        pages += 1;
        assert!(page["revision"].as_i64().unwrap() > 0);
        for kv in page["kvs"].as_array().unwrap() {
            assert!(kv["mod_revision"].as_i64().unwrap() > 0, "{kv}");
            assert_eq!(kv["version"], 1);
            assert_eq!(kv["lease"], "0", "lease ids are strings");
            keys.push((kv["key"].as_str().unwrap().to_owned(), kv["value"].clone()));
        }
        token = page["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(
        keys,
        vec![
            ("p/a".to_owned(), json!(1)),
            ("p/b".to_owned(), json!({"x": [true]})),
            ("p/c".to_owned(), json!(3)),
            ("p/d".to_owned(), json!(5)),
        ]
    );

    let all = body(
        http.get(url(&server, "/v1/kv?keys_only=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kvs = all["kvs"].as_array().unwrap();
    assert_eq!(kvs.len(), 5);
    assert!(kvs.iter().all(|kv| kv.get("value").is_none()), "{all}");

    for bad in [
        "/v1/kv?limit=-1",
        "/v1/kv?limit=x",
        "/v1/kv?prefx=p",
        "/v1/kv?page_token=%25%25",
    ] {
        let response = http.get(url(&server, bad)).send().await.unwrap();
        problem(response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
    }
}
both_backends!(a_prefix_lists_in_pages);

async fn a_transaction_in_proto_json(backend: Backend) {
    let (server, _grpc) = start_on(backend, config()).await;
    let http = http();
    let txn = |body: Value| {
        http.post(url(&server, "/v1/txn"))
            .body(body.to_string())
            .send()
    };
    let request = json!({
        "compare": [{"key": "job/1", "exists": false}],
        "success": [
            {"insert": {"key": "job/1", "value_json": "{\"state\":\"queued\"}"}},
            {"insert": {"key": "queue/1", "value": "job/1"}}
        ],
        "failure": [{"get": {"key": "job/1", "valueEncoding": "VALUE_ENCODING_JSON"}}]
    });
    let response = txn(request.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let first = body(response).await;
    assert_eq!(first["succeeded"], true, "{first}");
    let revision: i64 = first["revision"].as_str().unwrap().parse().unwrap();
    let job = http.get(url(&server, "/v1/kv/job/1")).send().await.unwrap();
    assert_eq!(header(&job, "etag"), format!("\"{revision}\""));
    let queue = http
        .get(url(&server, "/v1/kv/queue/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&queue, "etag"),
        format!("\"{revision}\""),
        "one revision for both"
    );

    let second = body(txn(request).await.unwrap()).await;
    assert_eq!(second["succeeded"], false, "{second}");
    assert_eq!(
        second["results"][0]["get"]["kv"]["value_json"],
        "{\"state\":\"queued\"}"
    );

    let misspelt = txn(json!({"compares": []})).await.unwrap();
    let body = problem(misspelt, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
    assert!(
        body["message"].as_str().unwrap().contains("compares"),
        "{body}"
    );
    let twice = txn(json!({"success": [
        {"insert": {"key": "k", "value_json": "1"}},
        {"delete": {"key": "k"}}
    ]}))
    .await
    .unwrap();
    problem(twice, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
    assert_eq!(get_text(&server, "k").await.0, StatusCode::NOT_FOUND);
}
both_backends!(a_transaction_in_proto_json);

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    id: Option<i64>,
    data: Value,
}

/// Reads a `text/event-stream` body: events, and how many comment lines came.
struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    comments: usize,
}

impl EventStream {
    fn new(response: Response) -> EventStream {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), "text/event-stream");
        EventStream {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event (comments counted and skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), None, None);
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(Sse { event, id, data });
                }
                continue;
            }
            let chunk = within("the next server-sent event", self.body.next()).await?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }

    /// Events until one with id `revision` or above; progress notices left out.
    async fn until(&mut self, revision: i64) -> Vec<Sse> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await.expect("the stream goes on");
            let done = event.id.is_some_and(|id| id >= revision);
            if event.event != "progress" {
                events.push(event);
            }
            if done {
                return events;
            }
        }
    }
}

async fn watch(
    http: &Http,
    server: &RunningServer,
    query: &str,
    last_event_id: Option<i64>,
) -> EventStream {
    let mut request = http.get(url(server, &format!("/v1/watch?{query}")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    EventStream::new(request.send().await.unwrap())
}

async fn a_watch_is_an_event_stream_that_resumes_exactly(backend: Backend) {
    let (server, _grpc) = start_on(
        backend,
        Config {
            http_heartbeat: Duration::from_millis(50),
            ..config()
        },
    )
    .await;
    // No client timeout: the streams stay open as long as the test reads.
    let http = Http::new();
    let before = put(&http, &server, "w/a", "1").await;
    put(&http, &server, "other", "0").await;

    let response = http
        .get(url(&server, "/v1/watch?prefix=w/&prev_kv=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "jsonkv-heartbeat-seconds"), "1");
    let mut live = EventStream::new(response);
    let snapshot = live.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    let at = snapshot.data["revision"].as_i64().unwrap();
    assert_eq!(snapshot.id, Some(at));
    assert_eq!(snapshot.data["last"], true);
    assert_eq!(snapshot.data["kvs"][0]["key"], "w/a");
    assert_eq!(snapshot.data["kvs"][0]["mod_revision"], before);

    let b = put(&http, &server, "w/b", r#"{"n":1}"#).await;
    let txn = http
        .post(url(&server, "/v1/txn"))
        .body(
            json!({"success": [
                {"insert": {"key": "w/c", "value_json": "3"}},
                {"delete": {"key": "w/a"}},
                {"insert": {"key": "other", "value_json": "9"}}
            ]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let t: i64 = body(txn).await["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let d = http
        .delete(url(&server, "/v1/kv/w/b"))
        .send()
        .await
        .unwrap();
    let d = body(d).await["revision"].as_i64().unwrap();

    let events = live.until(d).await;
    let seen: Vec<(&str, &str, Option<i64>)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.data["key"].as_str().unwrap(), e.id))
        .collect();
    // The transaction's two events share its revision; only the last is a resume point.
    assert_eq!(
        seen,
        vec![
            ("put", "w/b", Some(b)),
            ("put", "w/c", None),
            ("delete", "w/a", Some(t)),
            ("delete", "w/b", Some(d)),
        ]
    );
    assert_eq!(events[0].data["value"], json!({"n": 1}));
    assert_eq!(events[0].data["revision"], b);
    assert_eq!(events[1].data["more_at_revision"], true);
    assert_eq!(
        events[2].data["prev"]["value"],
        json!(1),
        "prev_kv=true sends the previous value"
    );
    assert_eq!(events[3].data["prev"]["value"], json!({"n": 1}));

    // A quiet stream gets heartbeat comments (and progress notices).
    let comments = live.comments;
    within("a heartbeat", async {
        while live.comments == comments {
            let _ = tokio::time::timeout(Duration::from_millis(200), live.next()).await;
        }
    })
    .await;

    // Last-Event-ID resumes exactly after it: no snapshot, nothing repeated or lost.
    let mut resumed = watch(&http, &server, "prefix=w/", Some(b)).await;
    let replay = resumed.until(d).await;
    let kinds: Vec<(&str, Option<i64>)> = replay.iter().map(|e| (e.event.as_str(), e.id)).collect();
    assert_eq!(
        kinds,
        vec![("put", None), ("delete", Some(t)), ("delete", Some(d))]
    );
    // ...and wins over the URL's start_revision, as a reconnecting client keeps its URL.
    let mut resumed = watch(
        &http,
        &server,
        &format!("prefix=w/&start_revision={before}"),
        Some(t),
    )
    .await;
    assert_eq!(resumed.until(d).await.len(), 1);
    // A key watch.
    let mut key = watch(&http, &server, "key=w/c", None).await;
    let snapshot = key.next().await.unwrap();
    assert_eq!(snapshot.data["kvs"][0]["value"], 3);

    // Bad watches are refused before the stream starts.
    for bad in [
        "",
        "key=a&prefix=b",
        "prefix=a&start_revision=-1",
        "prefix=a&bogus=1",
    ] {
        let response = http
            .get(url(&server, &format!("/v1/watch?{bad}")))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
    }
    let response = http
        .get(url(&server, "/v1/watch?prefix=w/"))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
    let response = http
        .get(url(
            &server,
            "/v1/watch?prefix=w/&store_id=0000000000000000000000000000beef&start_revision=1",
        ))
        .send()
        .await
        .unwrap();
    problem(
        response,
        StatusCode::PRECONDITION_FAILED,
        "FAILED_PRECONDITION",
    )
    .await;
}
both_backends!(a_watch_is_an_event_stream_that_resumes_exactly);

async fn live_queries_take_the_same_filter_over_http(backend: Backend) {
    let (server, _grpc) = start_on(backend, config()).await;
    let http = Http::new();
    put(
        &http,
        &server,
        "q/1",
        r#"{"status":"open","total":150,"who":"a"}"#,
    )
    .await;
    put(
        &http,
        &server,
        "q/2",
        r#"{"status":"open","total":50,"who":"b"}"#,
    )
    .await;
    let at = put(
        &http,
        &server,
        "q/3",
        r#"{"status":"closed","total":500,"who":"c"}"#,
    )
    .await;
    let filter = "filter=value.status%20%3D%3D%20%22open%22%20%26%26%20value.total%20%3E%20100";

    // A list: only the matches, with the fields asked for (the parameter repeats).
    let response = http
        .get(url(
            &server,
            &format!("/v1/kv?prefix=q/&{filter}&fields=/total&fields=/who"),
        ))
        .send()
        .await
        .unwrap();
    let page = body(response).await;
    assert_eq!(page["kvs"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["kvs"][0]["key"], "q/1");
    assert_eq!(page["kvs"][0]["value"], json!({"total": 150, "who": "a"}));

    // A watch: a view of the matches, with the change each event makes and its merge patch.
    let mut live = watch(
        &http,
        &server,
        &format!("prefix=q/&{filter}&fields=/total&diff=true"),
        None,
    )
    .await;
    let snapshot = live.next().await.unwrap();
    assert!(snapshot.id.unwrap() >= at);
    assert_eq!(snapshot.data["kvs"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot.data["kvs"][0]["key"], "q/1");
    assert_eq!(snapshot.data["kvs"][0]["value"], json!({"total": 150}));
    let entered = put(
        &http,
        &server,
        "q/2",
        r#"{"status":"open","total":101,"who":"b"}"#,
    )
    .await;
    put(
        &http,
        &server,
        "q/3",
        r#"{"status":"closed","total":501,"who":"c"}"#,
    )
    .await;
    let updated = put(
        &http,
        &server,
        "q/1",
        r#"{"status":"open","total":151,"who":"a"}"#,
    )
    .await;
    let left = put(
        &http,
        &server,
        "q/1",
        r#"{"status":"closed","total":151,"who":"a"}"#,
    )
    .await;
    let events = live.until(left).await;
    let seen: Vec<(&str, &str, &str, Option<i64>)> = events
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.data["key"].as_str().unwrap(),
                e.data["view_change"].as_str().unwrap(),
                e.id,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("put", "q/2", "entered", Some(entered)),
            ("put", "q/1", "updated", Some(updated)),
            ("delete", "q/1", "left", Some(left)),
        ]
    );
    assert_eq!(events[1].data["value"], json!({"total": 151}));
    assert_eq!(events[1].data["merge_patch"], json!({"total": 151}));

    // Last-Event-ID resumes the same view.
    let mut resumed = watch(
        &http,
        &server,
        &format!("prefix=q/&{filter}"),
        Some(entered),
    )
    .await;
    let replay = resumed.until(left).await;
    let kinds: Vec<(&str, Option<i64>)> = replay.iter().map(|e| (e.event.as_str(), e.id)).collect();
    assert_eq!(kinds, [("put", Some(updated)), ("delete", Some(left))]);

    // A bad filter is a 400 naming the place; a key watch takes no filter.
    for bad in [
        "/v1/kv?filter=value.total%20%3E",
        "/v1/watch?prefix=q/&filter=value.total%20%3E",
    ] {
        let response = http.get(url(&server, bad)).send().await.unwrap();
        let problem = problem(response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
        assert!(
            problem["message"].as_str().unwrap().contains("1:14"),
            "{problem}"
        );
    }
    let response = http
        .get(url(&server, "/v1/watch?key=q/1&filter=true"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT").await;
}
both_backends!(live_queries_take_the_same_filter_over_http);

fn tokens_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("tokens");
    std::fs::write(
        &path,
        "write writer-7f3a9c2e41\nread reader-0b8d5e6f17\nwrite app-5c1d2e3f4a app/\n",
    )
    .unwrap();
    path
}

#[tokio::test]
async fn every_error_status_has_a_json_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(Config {
        max_value_bytes: 64,
        max_message_bytes: 1024,
        max_watchers: 1,
        history_size: 4,
        revision_wait: Duration::from_millis(100),
        auth_tokens: Some(tokens_file(&dir)),
        ..config()
    })
    .await
    .unwrap();
    let http = http();
    let bearer = "Bearer writer-7f3a9c2e41";
    let send = |method: Method, path: &str, body: &str| {
        http.request(method, url(&server, path))
            .header("authorization", bearer)
            .body(body.to_owned())
            .send()
    };
    put_with(&http, &server, bearer, "k", "1").await;

    let cases: Vec<(Response, StatusCode, &str)> = vec![
        (
            send(Method::PUT, "/v1/kv/k", "{").await.unwrap(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            send(Method::PUT, "/v1/kv/", "1").await.unwrap(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            send(Method::GET, "/v1/kv/%FF", "").await.unwrap(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            http.get(url(&server, "/v1/kv/k")).send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
        (
            http.put(url(&server, "/v1/kv/k"))
                .header("authorization", "Bearer reader-0b8d5e6f17")
                .body("2")
                .send()
                .await
                .unwrap(),
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
        ),
        (
            send(Method::GET, "/v1/kv/nope", "").await.unwrap(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            send(Method::GET, "/v1/nothing", "").await.unwrap(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            send(Method::POST, "/v1/kv/k", "1").await.unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
        ),
        (
            send(Method::PUT, "/v1/kv/k", &format!("\"{}\"", "v".repeat(100)))
                .await
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
        ),
        (
            send(
                Method::PUT,
                "/v1/kv/k",
                &format!("\"{}\"", "v".repeat(2000)),
            )
            .await
            .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
        ),
        (
            send(Method::GET, "/v1/kv/k?min_revision=1000", "")
                .await
                .unwrap(),
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
        ),
    ];
    for (response, status, code) in cases {
        problem(response, status, code).await;
    }
    assert_eq!(
        get_with(&http, &server, bearer, "k").await,
        "1",
        "nothing refused changed the key"
    );

    // 409: a patch whose test fails (also in patch_takes_...); 410: history already gone.
    for i in 0..8 {
        put_with(&http, &server, bearer, "k", &i.to_string()).await;
    }
    let gone = send(Method::GET, "/v1/watch?key=k&start_revision=2", "")
        .await
        .unwrap();
    problem(gone, StatusCode::GONE, "OUT_OF_RANGE").await;
    let conflict = http
        .patch(url(&server, "/v1/kv/k"))
        .header("authorization", bearer)
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"test","path":"","value":"no"}]"#)
        .send()
        .await
        .unwrap();
    problem(conflict, StatusCode::CONFLICT, "FAILED_PRECONDITION").await;

    // 429: past --max-watchers.
    let open = send(Method::GET, "/v1/watch?key=k", "").await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let refused = send(Method::GET, "/v1/watch?key=k", "").await.unwrap();
    problem(refused, StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED").await;
    drop(open);
}

async fn put_with(http: &Http, server: &RunningServer, bearer: &str, key: &str, json: &str) {
    let response = http
        .put(url(server, &format!("/v1/kv/{key}")))
        .header("authorization", bearer)
        .body(json.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
}

async fn get_with(http: &Http, server: &RunningServer, bearer: &str, key: &str) -> String {
    let response = http
        .get(url(server, &format!("/v1/kv/{key}")))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test]
async fn tokens_roles_and_scopes_hold_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(Config {
        auth_tokens: Some(tokens_file(&dir)),
        ..config()
    })
    .await
    .unwrap();
    let http = http();
    put_with(&http, &server, "Bearer writer-7f3a9c2e41", "app/x", "1").await;
    put_with(&http, &server, "bearer writer-7f3a9c2e41", "secret", "2").await;

    // Every route but the console needs a token.
    for path in [
        "/v1/kv/app/x",
        "/v1/kv?prefix=app/",
        "/v1/watch?prefix=app/",
    ] {
        let response = http.get(url(&server, path)).send().await.unwrap();
        problem(response, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
        let response = http
            .get(url(&server, path))
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    }
    let txn = http
        .post(url(&server, "/v1/txn"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(txn, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED").await;
    // A token is never read from the URL.
    let in_url = http
        .get(url(&server, "/v1/kv/app/x?token=writer-7f3a9c2e41"))
        .send()
        .await
        .unwrap();
    assert!(in_url.status().is_client_error());
    assert_eq!(
        http.get(url(&server, "/")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // A read token reads and watches, and may not write.
    let reader = "Bearer reader-0b8d5e6f17";
    assert_eq!(get_with(&http, &server, reader, "secret").await, "2");
    let watch = http
        .get(url(&server, "/v1/watch?key=secret"))
        .header("authorization", reader)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    for method in [Method::PUT, Method::DELETE] {
        let response = http
            .request(method, url(&server, "/v1/kv/secret"))
            .header("authorization", reader)
            .body("3")
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::FORBIDDEN, "PERMISSION_DENIED").await;
    }

    // A scoped token reaches its prefix only, by every route.
    let app = "Bearer app-5c1d2e3f4a";
    put_with(&http, &server, app, "app/y", "4").await;
    let out = [
        http.get(url(&server, "/v1/kv/secret")),
        http.put(url(&server, "/v1/kv/secret")).body("5"),
        http.get(url(&server, "/v1/kv?prefix=")),
        http.get(url(&server, "/v1/watch?prefix=")),
        http.post(url(&server, "/v1/txn"))
            .body(r#"{"success":[{"get":{"key":"secret"}}]}"#),
    ];
    for request in out {
        let response = request.header("authorization", app).send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN, "PERMISSION_DENIED").await;
    }
    assert_eq!(get_with(&http, &server, reader, "secret").await, "2");
}

#[tokio::test]
async fn the_api_can_move_to_its_own_port_or_be_off() {
    let (server, mut grpc) = crate::common::start(Config {
        http: HttpPlacement::Own("127.0.0.1:0".parse().unwrap()),
        ..config()
    })
    .await;
    let http_addr = server.http_addr().unwrap();
    assert_ne!(http_addr, server.addr());
    let http = http();
    put(&http, &server, "moved", "1").await;
    assert_eq!(
        get_json(
            &mut grpc,
            pb::GetRequest {
                key: "moved".into(),
                ..Default::default()
            }
        )
        .await,
        "1",
        "gRPC still serves on its own port"
    );
    let on_grpc_port = http
        .get(format!("http://{}/v1/kv/moved", server.addr()))
        .send()
        .await
        .unwrap();
    let body = problem(on_grpc_port, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&http_addr.to_string()),
        "{body}"
    );

    // Off, the port is HTTP/2 and gRPC alone, as before there was an API: HTTP/1.1 is refused
    // outright, and gRPC serves.
    let (off, mut grpc) = crate::common::start(Config {
        http: HttpPlacement::Off,
        ..config()
    })
    .await;
    assert_eq!(off.http_addr(), None);
    let refused = http
        .get(format!("http://{}/v1/kv/moved", off.addr()))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    crate::common::put(&mut grpc, "off", "1").await;
}

#[tokio::test]
async fn tls_serves_http1_h2_and_grpc_on_one_port() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let pki = crate::certs::Pki::new("http-tls");
    let server = RunningServer::start(Config {
        tls: Some(pki.server_tls(false)),
        ..config()
    })
    .await
    .unwrap();
    assert!(server.http_url().unwrap().starts_with("https://"));
    let client = |versions: &[&[u8]]| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = versions.iter().map(|v| v.to_vec()).collect();
        Http::builder().use_preconfigured_tls(tls).build().unwrap()
    };
    let base = format!("https://localhost:{}", server.addr().port());
    let http1 = client(&[b"http/1.1"]);
    let response = http1
        .put(format!("{base}/v1/kv/t"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    let h2 = client(&[b"h2", b"http/1.1"]);
    let response = h2.get(format!("{base}/v1/kv/t")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "1");

    let channel = tonic::transport::Endpoint::from_shared(base)
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca_pem())),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = jsonkv::pb::json_kv_client::JsonKvClient::new(channel);
    assert_eq!(
        get_json(
            &mut grpc,
            pb::GetRequest {
                key: "t".into(),
                ..Default::default()
            }
        )
        .await,
        "1"
    );
}

#[tokio::test]
async fn cors_answers_only_named_origins() {
    let (open, _grpc) = crate::common::start(Config {
        http_cors_origins: vec!["https://app.example.com".into()],
        ..config()
    })
    .await;
    let http = http();
    let preflight = |server: &RunningServer, origin: &'static str| {
        http.request(Method::OPTIONS, url(server, "/v1/kv/k"))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "authorization,if-match")
            .send()
    };
    let allowed = preflight(&open, "https://app.example.com").await.unwrap();
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&allowed, "access-control-allow-methods").contains("PUT"));
    assert!(header(&allowed, "access-control-allow-headers").contains("if-match"));
    let other = preflight(&open, "https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let get = http
        .get(url(&open, "/v1/kv/k"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&get, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&get, "access-control-expose-headers").contains("etag"));

    let (closed, _grpc) = crate::common::start(config()).await;
    let response = preflight(&closed, "https://app.example.com").await.unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn metrics_count_http_requests_by_route_and_status() {
    let server = RunningServer::start(Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    })
    .await
    .unwrap();
    let metrics: SocketAddr = server.metrics_addr().unwrap();
    let http = http();
    put(&http, &server, "m", "1").await;
    for _ in 0..3 {
        get_text(&server, "nope").await;
    }
    http.get(url(&server, "/made/up/path"))
        .send()
        .await
        .unwrap();
    let text = prom::wait_for(
        metrics,
        r#"jsonkv_http_requests_total{route="/v1/kv/{*key}",method="GET",status="404"}"#,
        |v| v == 3.0,
    )
    .await;
    assert_eq!(
        prom::value(
            &text,
            r#"jsonkv_http_requests_total{route="/v1/kv/{*key}",method="PUT",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        prom::value(
            &text,
            r#"jsonkv_http_requests_total{route="other",method="GET",status="404"}"#
        ),
        1.0,
        "made-up paths share one label"
    );
    assert!(text.contains("jsonkv_http_request_duration_seconds_count{route=\"/v1/kv/{*key}\"}"));
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let (server, _grpc) = crate::common::start(config()).await;
    let http = http();
    let page = http.get(url(&server, "/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let policy = header(&page, "content-security-policy").to_owned();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js") && html.contains("/console/style.css"));
    for (asset, media_type) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let response = http
            .get(url(&server, &format!("/console/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(header(&response, "content-type").starts_with(media_type));
    }
    let missing = http
        .get(url(&server, "/console/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing = http
        .get(url(&server, "/console/nope.js"))
        .send()
        .await
        .unwrap();
    problem(missing, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}
