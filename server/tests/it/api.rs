//! The unary RPCs through the real server, on both backends: values in both encodings,
//! revisions, compare-and-swap, listing, NOT_FOUND, every INVALID_ARGUMENT case, health and
//! reflection.
//!
//! Guarantees proved here:
//! - Every change gets the next revision, and a key reports its create and mod revisions and
//!   version: `native_json_round_trip_with_metadata` (also a unit test in `database.rs`).
//! - Numbers survive exactly on the JSON-text path: `json_text_is_lossless_for_big_numbers`
//!   (also the unit tests of the jsonkv crate's `value.rs`).
//! - Inserted JSON text is stored as parsing it and writing it compact would store it (as sent
//!   when that is the same), with the same errors: `json_text_comes_back_compact` (also
//!   `json_text.rs`'s unit tests: a proptest over escapes, every number form, repeated keys and
//!   whitespace, and broken or too deep documents).
//! - A failed precondition changes nothing and reports the current revision:
//!   `compare_and_swap_on_insert_and_delete`.
//! - Bad input is INVALID_ARGUMENT naming the problem and changes nothing; the limits are
//!   configurable: `bad_input_is_invalid_argument_and_changes_nothing`,
//!   `limits_are_configurable`. A request that does not decode (a key that is not UTF-8, a
//!   field of the wrong wire type) is INVALID_ARGUMENT too:
//!   `undecodable_requests_are_invalid_argument`. Input is quoted back only up to a bound:
//!   `a_64_kib_store_id_is_refused_without_being_echoed`.
//! - Status reports the store at a glance, as it is: `status_reports_the_store_as_it_is`, and
//!   the data directory's size: `status_reports_the_data_directory_on_disk`.
//! - The lease calls refuse bad TTLs and ids (INVALID_ARGUMENT), a taken id (ALREADY_EXISTS)
//!   and a lease that is not live (NOT_FOUND, writing nothing); the streaming keep-alive answers
//!   in order; a revoke's deletes come at one revision, naming lease and cause on the embedded
//!   store: `lease_calls_and_their_errors` (the store-level suite: `leases.rs`). Grants past
//!   `--max-leases` are RESOURCE_EXHAUSTED: `grants_past_the_lease_limit_are_resource_exhausted`.
//!   Keep-alive streams count against the watch limits: `keep_alive_streams_count_as_watches`.
//! - Health and reflection (v1 and v1alpha) are served:
//!   `health_and_both_reflection_versions_are_served` (also `clients/grpcurl/test.sh`).

use jsonkv::pb::{self, insert_request::NewValue, ValueEncoding};
use jsonkv::value;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

fn insert_json(key: &str, json: &str) -> pb::InsertRequest {
    pb::InsertRequest {
        key: key.into(),
        new_value: Some(NewValue::ValueJson(json.into())),
        ..Default::default()
    }
}

async fn get(
    client: &mut Client,
    key: &str,
    encoding: ValueEncoding,
) -> Result<pb::GetResponse, tonic::Status> {
    client
        .get(pb::GetRequest {
            key: key.into(),
            value_encoding: encoding as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn native_json_round_trip_with_metadata(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let base = server.store().revision();
    let doc = json!({"hello": "wörld ✓", "n": 3, "nested": {"list": [1, 2.5, null, true]}});
    let resp = client
        .insert(pb::InsertRequest {
            key: "greeting".into(),
            new_value: Some(NewValue::Value(value::to_proto(&doc))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created = resp.revision;
    assert_eq!((resp.create_revision, resp.version), (created, 1));

    let got = get(&mut client, "greeting", ValueEncoding::Unspecified)
        .await
        .unwrap();
    let kv = got.kv.unwrap();
    assert_eq!(value::from_proto(kv.value.as_ref().unwrap()).unwrap(), doc);
    assert!(
        kv.value_json.is_empty(),
        "only the asked-for encoding is sent"
    );
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            got.revision
        ),
        (created, created, 1, created)
    );

    // Replacing keeps the create revision and bumps the version.
    let other = put(&mut client, "other", "1").await;
    let resp = client
        .insert(pb::InsertRequest {
            return_previous: true,
            value_encoding: ValueEncoding::Json as i32,
            ..insert_json("greeting", r#""bye""#)
        })
        .await
        .unwrap()
        .into_inner();
    let replaced = resp.revision;
    assert_eq!((resp.create_revision, resp.version), (created, 2));
    let previous = resp.previous.unwrap();
    assert_eq!(value::parse_json_text(&previous.value_json).unwrap(), doc);
    assert_eq!(previous.mod_revision, created);
    assert_increasing(&[base, created, other, replaced]);
    backend.assert_embedded_revisions(&[base, created, other, replaced], &[0, 1, 2, 3]);
}
both_backends!(native_json_round_trip_with_metadata);

async fn json_text_is_lossless_for_big_numbers(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    let text = r#"{"i64max":9223372036854775807,"u64max":18446744073709551615,"beyond":123456789012345678901234567890,"precise":0.10000000000000000555,"neg":-9007199254740993}"#;
    client.insert(insert_json("big", text)).await.unwrap();
    let kv = get(&mut client, "big", ValueEncoding::Json)
        .await
        .unwrap()
        .kv
        .unwrap();
    // The document comes back as written: key order and every digit.
    assert_eq!(kv.value_json, text);
}
both_backends!(json_text_is_lossless_for_big_numbers);

/// JSON text that is not compact comes back compact, as docs/clients.md says: no whitespace,
/// escapes only where JSON needs them, exponents as `e+`, and a repeated key's last value in its
/// first place; digits stay as written.
async fn json_text_comes_back_compact(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    for (key, sent, stored) in [
        (
            "loose",
            r#"{ "b": 1E5, "a": "\u00e9\/", "b": [1.50, -0] }"#,
            r#"{"b":[1.50,-0],"a":"é/"}"#,
        ),
        ("exp", "[1E5, 2e-3]", "[1e+5,2e-3]"),
    ] {
        client.insert(insert_json(key, sent)).await.unwrap();
        let request = pb::GetRequest {
            key: key.into(),
            ..Default::default()
        };
        assert_eq!(get_json(&mut client, request).await, stored);
    }
}
both_backends!(json_text_comes_back_compact);

async fn get_of_a_missing_key_is_not_found(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    let status = get(&mut client, "nope", ValueEncoding::Json)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "key not found: \"nope\"");
}
both_backends!(get_of_a_missing_key_is_not_found);

async fn compare_and_swap_on_insert_and_delete(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let created = client
        .insert(pb::InsertRequest {
            expected_mod_revision: Some(0),
            ..insert_json("lock", r#""me""#)
        })
        .await
        .unwrap()
        .into_inner()
        .revision;

    // "Only if absent" fails now, names the current revision, and changes nothing.
    let status = client
        .insert(pb::InsertRequest {
            expected_mod_revision: Some(0),
            ..insert_json("lock", r#""you""#)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "REVISION_MISMATCH");
    assert_eq!(detail(&status, "current_mod_revision"), created);
    assert_eq!(detail(&status, "expected_mod_revision"), 0);
    assert_eq!(server.store().revision(), created);

    // A matching revision swaps.
    let swapped = client
        .insert(pb::InsertRequest {
            expected_mod_revision: Some(created),
            ..insert_json("lock", r#""you""#)
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert!(swapped > created, "{swapped} after {created}");

    // A stale revision on delete fails and leaves the value.
    let status = client
        .delete(pb::DeleteRequest {
            key: "lock".into(),
            expected_mod_revision: Some(created),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(detail(&status, "current_mod_revision"), swapped);
    let kv = get(&mut client, "lock", ValueEncoding::Json)
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.value_json, r#""you""#);

    // The current revision deletes, returning the previous value.
    let resp = client
        .delete(pb::DeleteRequest {
            key: "lock".into(),
            expected_mod_revision: Some(swapped),
            return_previous: true,
            value_encoding: ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.deleted);
    let deleted = resp.revision;
    assert!(deleted > swapped, "{deleted} after {swapped}");
    assert_eq!(resp.previous.unwrap().value_json, r#""you""#);

    // Now absent: a revision precondition reports current 0.
    let status = client
        .insert(pb::InsertRequest {
            expected_mod_revision: Some(swapped),
            ..insert_json("lock", "1")
        })
        .await
        .unwrap_err();
    assert_eq!(detail(&status, "current_mod_revision"), 0);
    assert_eq!(
        server.store().revision(),
        deleted,
        "the failed swap changed nothing"
    );
    backend.assert_embedded_revisions(&[created, swapped, deleted], &[1, 2, 3]);
}
both_backends!(compare_and_swap_on_insert_and_delete);

async fn delete_of_a_missing_key(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let written = put(&mut client, "x", "1").await;
    let mut watch = watch_prefix(&mut client, "", 0).await.unwrap();
    assert!(matches!(
        next(&mut watch).await.unwrap(),
        Seen::Snapshot { revision, .. } if revision == written
    ));
    let status = client
        .delete(pb::DeleteRequest {
            key: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    for request in [
        pb::DeleteRequest {
            key: "missing".into(),
            allow_missing: true,
            ..Default::default()
        },
        pb::DeleteRequest {
            key: "missing".into(),
            expected_mod_revision: Some(0),
            ..Default::default()
        },
    ] {
        let resp = client.delete(request).await.unwrap().into_inner();
        assert!(!resp.deleted);
        assert_eq!(
            resp.revision, written,
            "nothing deleted: the current revision, none used"
        );
    }
    assert_eq!(server.store().revision(), written);
    // No change was published either: the next event a watcher sees is the next write.
    let after = put(&mut client, "y", "2").await;
    assert_eq!(
        read_until(&mut watch, after).await,
        [Seen::Put {
            revision: after,
            key: "y".into(),
            json: "2".into()
        }]
    );
    backend.assert_embedded_revisions(&[written, after], &[1, 2]);
}
both_backends!(delete_of_a_missing_key);

async fn list_pages_through_a_prefix_in_key_order(backend: Backend) {
    let (_server, mut client) = start_on(backend, config()).await;
    for i in (0..25).rev() {
        put(
            &mut client,
            &format!("user/{i:02}"),
            &format!(r#"{{"id":{i}}}"#),
        )
        .await;
    }
    put(&mut client, "users", "0").await;
    let last = put(&mut client, "team/1", "0").await;
    backend.assert_embedded_revisions(&[last], &[27]);

    let pages = list_pages(
        &mut client,
        pb::ListRequest {
            prefix: "user/".into(),
            page_size: 10,
            value_encoding: ValueEncoding::Json as i32,
            keys_only: false,
            ..Default::default()
        },
    )
    .await;
    let mut keys = Vec::new();
    for page in &pages {
        assert_eq!(page.revision, last);
        for kv in &page.kvs {
            let id: u32 = kv.key["user/".len()..].parse().unwrap();
            assert_eq!(kv.value_json, format!(r#"{{"id":{id}}}"#));
            keys.push(kv.key.clone());
        }
    }
    assert_eq!(pages.len(), 3);
    let expected: Vec<_> = (0..25).map(|i| format!("user/{i:02}")).collect();
    assert_eq!(keys, expected);

    // keys_only leaves values out; an empty prefix lists everything.
    let all = client
        .list(pb::ListRequest {
            keys_only: true,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.kvs.len(), 27);
    assert!(all
        .kvs
        .iter()
        .all(|kv| kv.value.is_none() && kv.value_json.is_empty()));
    assert!(all.next_page_token.is_empty());
}
both_backends!(list_pages_through_a_prefix_in_key_order);

async fn bad_input_is_invalid_argument_and_changes_nothing(backend: Backend) {
    let mut cfg = config();
    cfg.max_key_bytes = 4 * 1024;
    cfg.max_value_bytes = 1024 * 1024;
    let (server, mut client) = start_on(backend, cfg).await;
    put(&mut client, "keep", r#""original""#).await;

    let long_key = "k".repeat(4 * 1024 + 1);
    let big_value = format!(r#""{}""#, "v".repeat(1024 * 1024));
    let cases: Vec<(&str, pb::InsertRequest, &str)> = vec![
        ("empty key", insert_json("", "1"), "key must not be empty"),
        (
            "long key",
            insert_json(&long_key, "1"),
            "4097 bytes, over the limit of 4096",
        ),
        (
            "big value",
            insert_json("keep", &big_value),
            "over the limit of 1048576 bytes",
        ),
        (
            "malformed JSON",
            insert_json("keep", r#"{"a": }"#),
            "malformed JSON text",
        ),
        (
            "no value",
            pb::InsertRequest {
                key: "keep".into(),
                ..Default::default()
            },
            "a value is required",
        ),
        (
            "negative precondition",
            pb::InsertRequest {
                expected_mod_revision: Some(-1),
                ..insert_json("keep", "1")
            },
            "must not be negative",
        ),
        (
            "unknown encoding",
            pb::InsertRequest {
                value_encoding: 99,
                ..insert_json("keep", "1")
            },
            "unknown value encoding",
        ),
    ];
    for (what, request, message) in cases {
        let status = client.insert(request).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?}",
            status.message()
        );
        assert!(
            status.get_details_bad_request().is_some(),
            "{what}: names the field"
        );
    }
    // The big value in native form is refused too.
    let status = client
        .insert(pb::InsertRequest {
            key: "keep".into(),
            new_value: Some(NewValue::Value(value::to_proto(&json!(
                "v".repeat(1024 * 1024)
            )))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = get(&mut client, "", ValueEncoding::Json).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .delete(pb::DeleteRequest {
            key: long_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    for token in ["not base64!", "AAAA", "Zm9v"] {
        let status = client
            .list(pb::ListRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "token {token:?}");
        assert!(
            status.message().contains("page_token is invalid"),
            "{}",
            status.message()
        );
    }
    // A real token presented with another prefix is refused as well.
    let mut last = 0;
    for i in 0..3 {
        last = put(&mut client, &format!("p/{i}"), "0").await;
    }
    backend.assert_embedded_revisions(&[last], &[4]);
    let token = client
        .list(pb::ListRequest {
            prefix: "p/".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let status = client
        .list(pb::ListRequest {
            prefix: "q/".into(),
            page_token: token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .list(pb::ListRequest {
            page_size: -5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    for status in [
        watch_key(&mut client, "", 0).await.unwrap_err(),
        watch_key(&mut client, "k", -1).await.unwrap_err(),
        watch_prefix(&mut client, &long_key, 0).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    // Nothing changed: same revision, same value.
    assert_eq!(server.store().revision(), last);
    let kv = get(&mut client, "keep", ValueEncoding::Json)
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.value_json, r#""original""#);
}
both_backends!(bad_input_is_invalid_argument_and_changes_nothing);

async fn limits_are_configurable(backend: Backend) {
    let mut cfg = config();
    cfg.max_key_bytes = 3;
    cfg.max_value_bytes = 5;
    let (_server, mut client) = start_on(backend, cfg).await;
    client.insert(insert_json("abc", "12345")).await.unwrap();
    let status = client.insert(insert_json("abcd", "1")).await.unwrap_err();
    assert!(
        status.message().contains("over the limit of 3"),
        "{}",
        status.message()
    );
    let status = client
        .insert(insert_json("abc", "123456"))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("over the limit of 5"),
        "{}",
        status.message()
    );
    // An oversized value says so in a form a program reads (the HTTP API answers 413 on it);
    // an oversized key is only a bad field.
    let reason = |status: &tonic::Status| status.get_details_error_info().map(|i| i.reason);
    assert_eq!(reason(&status).as_deref(), Some("VALUE_TOO_LARGE"));
    let status = client.insert(insert_json("abcd", "1")).await.unwrap_err();
    assert_eq!(reason(&status), None);
}
both_backends!(limits_are_configurable);

async fn health_and_both_reflection_versions_are_served(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (server, _client) = start_on(backend, config()).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "jsonkv.v1.JsonKv"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let list_services = || tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        channel.clone(),
    );
    let mut responses = v1
        .server_reflection_info(futures::stream::iter([list_services()]))
        .await
        .unwrap()
        .into_inner();
    let resp = responses.message().await.unwrap().unwrap();
    let names = format!("{:?}", resp.message_response);
    assert!(names.contains("jsonkv.v1.JsonKv"), "{names}");
    assert!(names.contains("grpc.health.v1.Health"), "{names}");

    use tonic_reflection::pb::v1alpha as alpha;
    let mut v1alpha = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "jsonkv.v1.JsonKv".into(),
            ),
        ),
    };
    let mut responses = v1alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let resp = responses.message().await.unwrap().unwrap();
    match resp.message_response.unwrap() {
        alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("expected file descriptors, got {other:?}"),
    }
}
both_backends!(health_and_both_reflection_versions_are_served);

/// An Insert as a client with a broken encoder might send it: the key as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawKeyInsert {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(string, tag = "3")]
    value_json: String,
}

/// A Get whose key field (a string, length-delimited) comes as a number.
#[derive(Clone, PartialEq, prost::Message)]
struct NumberKeyGet {
    #[prost(uint64, tag = "1")]
    key: u64,
}

/// Sends `message` to `method` of the JsonKv service by path, as any gRPC client would.
async fn call_raw<M: prost::Message + Default + Send + Sync + 'static>(
    server: &jsonkv_server::RunningServer,
    method: &str,
    message: M,
) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = format!("/jsonkv.v1.JsonKv/{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<M, pb::GetResponse>::default();
    grpc.unary(tonic::Request::new(message), path, codec)
        .await
        .expect_err("the server refuses it")
}

async fn undecodable_requests_are_invalid_argument(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let status = call_raw(
        &server,
        "Insert",
        RawKeyInsert {
            key: vec![b'k', 0xff, 0xfe],
            value_json: "1".into(),
        },
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a valid InsertRequest")
            && status.message().contains("UTF-8"),
        "{status:?}"
    );
    let status = call_raw(&server, "Get", NumberKeyGet { key: 7 }).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a valid GetRequest"),
        "{status:?}"
    );
    // Nothing was written.
    let listed = list_pages(&mut client, pb::ListRequest::default()).await;
    assert!(listed.iter().all(|page| page.kvs.is_empty()), "{listed:?}");
}
both_backends!(undecodable_requests_are_invalid_argument);

async fn a_64_kib_store_id_is_refused_without_being_echoed(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let store_id = "s".repeat(64 * 1024);
    let status = client
        .watch_key(pb::WatchKeyRequest {
            key: "k".into(),
            start_revision: 1,
            store_id: store_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("store_id is invalid"),
        "{status:?}"
    );
    assert!(status.message().len() < 256, "{}", status.message().len());
    // The whole answer, headers and details, stays small too.
    assert!(status.details().len() < 1024, "{}", status.details().len());
    drop(server);
}
both_backends!(a_64_kib_store_id_is_refused_without_being_echoed);

async fn status_reports_the_store_as_it_is(backend: Backend) {
    let (server, mut client) = start_on(backend, config()).await;
    let first = put(&mut client, "s/a", r#""xyz""#).await;
    put(&mut client, "s/b", "[1,2]").await;
    put(&mut client, "s/c", "true").await;
    let last = del(&mut client, "s/c").await;
    let mut watch = watch_prefix(&mut client, "s/", 0).await.unwrap();
    next(&mut watch).await.unwrap();
    let inserted = client.insert(insert_json("s/d", "1")).await.unwrap();
    let header = store_header(&inserted);
    let last = last.max(inserted.into_inner().revision);

    let status = client
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.revision, last);
    assert_eq!(status.keys, 3);
    // "s/a" + "xyz" quoted, "s/b" + [1,2], "s/d" + 1.
    assert_eq!(status.data_bytes, 3 + 5 + 3 + 5 + 3 + 1);
    assert_eq!(status.store_id, header);
    let kind = match backend {
        Backend::Embedded => "memory",
        Backend::Etcd => "etcd",
    };
    assert_eq!(status.backend, kind);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.disk_bytes, 0);
    assert!(
        status.history_oldest_revision <= first && status.history_events >= 5,
        "{status:?}"
    );
    assert_eq!(status.watchers, 1);
    assert!(status.uptime_seconds >= 0);
    drop(watch);
    server.shutdown().await;
}
both_backends!(status_reports_the_store_as_it_is);

#[tokio::test]
async fn status_reports_the_data_directory_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client) = start(jsonkv_server::Config {
        backend: jsonkv_server::config::BackendConfig::Disk(
            jsonkv_server::config::DiskConfig::new(dir.path()),
        ),
        ..config()
    })
    .await;
    put(&mut client, "k", &format!(r#""{}""#, "x".repeat(1000))).await;
    let status = client
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.backend, "disk");
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(status.disk_bytes >= 1000, "{status:?}");
    assert_eq!(status.disk_bytes as u64, on_disk);
    server.shutdown().await;
}

/// The lease calls through the server: codes for bad input, an unknown lease and a taken id;
/// the streaming keep-alive; a revoke's deletes naming the lease and cause (embedded) on the
/// watch; and a key's lease shown by Get.
async fn lease_calls_and_their_errors(backend: Backend) {
    let embedded = matches!(backend, Backend::Embedded);
    let (server, mut client) = start_on(backend, config()).await;
    for ttl_seconds in [0, -5, 365 * 24 * 3600 + 1] {
        let status = client
            .lease_grant(pb::LeaseGrantRequest { ttl_seconds, id: 0 })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("ttl_seconds"), "{status:?}");
    }
    let status = client
        .lease_grant(pb::LeaseGrantRequest {
            ttl_seconds: 5,
            id: -3,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let id = 0x7e57_0001;
    let granted = client
        .lease_grant(pb::LeaseGrantRequest {
            ttl_seconds: 60,
            id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((granted.id, granted.ttl_seconds), (id, 60));
    let status = client
        .lease_grant(pb::LeaseGrantRequest {
            ttl_seconds: 60,
            id,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let before = server.store().revision();
    let status = client
        .insert(pb::InsertRequest {
            lease: 0x7e57_0002,
            ..insert_json("l/x", "1")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("lease"), "{status:?}");
    assert_eq!(
        server.store().revision(),
        before,
        "an unknown lease wrote something"
    );
    let status = client
        .insert(pb::InsertRequest {
            lease: -1,
            ..insert_json("l/x", "1")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    for key in ["l/a", "l/b"] {
        client
            .insert(pb::InsertRequest {
                lease: id,
                ..insert_json(key, "1")
            })
            .await
            .unwrap();
    }
    let kv = get(&mut client, "l/a", ValueEncoding::Json)
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.lease, id);

    // The streaming keep-alive answers each request in order; a lease that is not live gets 0.
    let requests =
        futures::stream::iter([id, 0x7e57_0003, id].map(|id| pb::LeaseKeepAliveRequest { id }));
    let mut answers = client
        .lease_keep_alive_stream(requests)
        .await
        .unwrap()
        .into_inner();
    for (want_id, want_ttl) in [(id, 60), (0x7e57_0003, 0), (id, 60)] {
        let answer = within("a keep-alive answer", answers.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((answer.id, answer.ttl_seconds), (want_id, want_ttl));
    }

    let mut watch = watch_prefix(&mut client, "l/", 0).await.unwrap();
    next(&mut watch).await.unwrap();
    let revoked = client
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .unwrap()
        .into_inner()
        .revision;
    for (key, more) in [("l/a", true), ("l/b", false)] {
        let Some(pb::watch_response::Response::Event(event)) = within("a delete", watch.message())
            .await
            .unwrap()
            .unwrap()
            .response
        else {
            panic!("expected an event");
        };
        assert_eq!(event.kv.unwrap().key, key);
        assert_eq!((event.revision, event.more_at_revision), (revoked, more));
        let (lease, cause) = if embedded {
            (id, pb::event::Cause::Revoked)
        } else {
            (0, pb::event::Cause::Unspecified)
        };
        assert_eq!((event.lease, event.cause), (lease, cause as i32));
    }
    for status in [
        client
            .lease_revoke(pb::LeaseRevokeRequest { id })
            .await
            .unwrap_err(),
        client
            .lease_keep_alive(pb::LeaseKeepAliveRequest { id })
            .await
            .unwrap_err(),
        client
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
}
both_backends!(lease_calls_and_their_errors);

#[tokio::test]
async fn grants_past_the_lease_limit_are_resource_exhausted() {
    let mut cfg = config();
    cfg.max_leases = 2;
    let (_server, mut client) = start_on(Backend::Embedded, cfg).await;
    let grant = pb::LeaseGrantRequest {
        ttl_seconds: 60,
        id: 0,
    };
    let first = client.lease_grant(grant).await.unwrap().into_inner().id;
    client.lease_grant(grant).await.unwrap();
    let status = client.lease_grant(grant).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit is 2"), "{status:?}");
    let status = client
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.leases, 2);
    client
        .lease_revoke(pb::LeaseRevokeRequest { id: first })
        .await
        .unwrap();
    client.lease_grant(grant).await.unwrap();
}

/// A keep-alive stream is held as long as a watch, and counted with them.
#[tokio::test]
async fn keep_alive_streams_count_as_watches() {
    let mut cfg = config();
    cfg.max_watchers_per_connection = 1;
    let (_server, mut client) = start_on(Backend::Embedded, cfg).await;
    let (_requests, pending) = tokio::sync::mpsc::channel::<pb::LeaseKeepAliveRequest>(1);
    let held = client
        .lease_keep_alive_stream(tokio_stream::wrappers::ReceiverStream::new(pending))
        .await
        .unwrap();
    let refused = client
        .lease_keep_alive_stream(futures::stream::empty())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let refused = watch_key(&mut client, "k", 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    drop(held);
}
