//! Tokens and roles through the real server: `authorization: Bearer TOKEN` on every JsonKv call.
//!
//! Guarantees proved here, the rules of docs/security.md's tokens section, against the real
//! server (that no token reaches a log: `auth_logs.rs`; through the Rust client and the CLI: the
//! client's `secure.rs`):
//! - Every JsonKv call without a token, or with an unknown one, is UNAUTHENTICATED:
//!   `without_a_known_token_every_jsonkv_call_is_unauthenticated`.
//! - A read token reads, watches and asks for the status, and its writes are PERMISSION_DENIED:
//!   `a_read_token_reads_and_watches_but_may_not_write`.
//! - A write token may do everything, and the scheme is case-insensitive:
//!   `a_write_token_may_do_everything_and_the_scheme_is_case_insensitive`.
//! - Health and reflection stay open without a token:
//!   `health_and_reflection_stay_open_without_a_token`.
//! - Without a tokens file no token is needed: `without_a_tokens_file_no_token_is_needed`.
//! - A malformed tokens file stops start-up naming its line:
//!   `a_malformed_tokens_file_stops_start_up_naming_the_line`.
//! - A token scoped to key prefixes touches keys under them only; out of scope is
//!   PERMISSION_DENIED whether the key exists or not, changes nothing, and `app1/` does not
//!   grant `app10/`: `a_scoped_token_reaches_only_its_prefixes`.
//! - A reload puts a changed tokens file in force: a removed token's calls and open watches end
//!   UNAUTHENTICATED, a narrowed token's watches outside its new scope end PERMISSION_DENIED,
//!   the rest go on, and a broken file keeps the old tokens:
//!   `a_reload_ends_what_a_token_may_no_longer_do`.
//! - An admin token may ask for the status and take a backup, and touch no key:
//!   `an_admin_token_backs_up_but_touches_no_key`.
//! - A scoped token grants and keeps alive leases, sees only its keys of one, revokes only a
//!   lease whose keys are all in scope, and may not list leases; a read token only looks leases
//!   up: `a_scoped_token_uses_leases_within_its_prefixes`.

use std::path::PathBuf;

use jsonkv::pb::{self, json_kv_client::JsonKvClient};
use jsonkv_server::{Config, RunningServer};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::common::{self, config, within, Client};

const TOKENS: &str = "\
# who may do what
write writer-7f3a9c2e41

read reader-0b8d5e6f17
";

fn tokens_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("tokens");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_with_tokens(dir: &tempfile::TempDir) -> RunningServer {
    RunningServer::start(Config {
        auth_tokens: Some(tokens_file(dir, TOKENS)),
        ..config()
    })
    .await
    .unwrap()
}

/// Sends a fixed `authorization` header (or none) with every call.
#[derive(Clone)]
struct Authorization(Option<MetadataValue<Ascii>>);

impl Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type AuthedClient = JsonKvClient<InterceptedService<Channel, Authorization>>;

/// A client that sends `header` as its `authorization` metadata (none with `None`).
async fn client_with(server: &RunningServer, header: Option<&str>) -> AuthedClient {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header = Authorization(header.map(|h| h.parse().unwrap()));
    JsonKvClient::with_interceptor(channel, header)
}

fn insert(key: &str) -> pb::InsertRequest {
    pb::InsertRequest {
        key: key.into(),
        new_value: Some(pb::insert_request::NewValue::ValueJson("1".into())),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn delete(key: &str) -> pb::DeleteRequest {
    pb::DeleteRequest {
        key: key.into(),
        allow_missing: true,
        ..Default::default()
    }
}

/// The code of every JsonKv method called with `client`: Get, List, WatchKey, WatchPrefix,
/// Insert, Delete.
async fn codes(client: &mut AuthedClient) -> [Code; 7] {
    let code = |r: Result<(), Status>| r.err().map_or(Code::Ok, |s| s.code());
    [
        code(client.get(get("k")).await.map(drop)),
        code(client.list(pb::ListRequest::default()).await.map(drop)),
        code(
            client
                .watch_key(pb::WatchKeyRequest {
                    key: "k".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        code(
            client
                .watch_prefix(pb::WatchPrefixRequest::default())
                .await
                .map(drop),
        ),
        code(client.insert(insert("k")).await.map(drop)),
        code(client.delete(delete("k")).await.map(drop)),
        code(client.status(pb::StatusRequest {}).await.map(drop)),
    ]
}

#[tokio::test]
async fn without_a_known_token_every_jsonkv_call_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(&dir).await;
    for header in [
        None,
        Some("Bearer not-a-token"),
        Some("Bearer writer-7f3a9c2e4"),   // a prefix of a real token
        Some("Bearer writer-7f3a9c2e41x"), // a real token and more
        Some("Basic writer-7f3a9c2e41"),   // the right token, the wrong scheme
        Some("writer-7f3a9c2e41"),
        Some("Bearer "),
    ] {
        let mut client = client_with(&server, header).await;
        assert_eq!(
            codes(&mut client).await,
            [Code::Unauthenticated; 7],
            "with authorization {header:?}"
        );
    }
    let mut client = client_with(&server, None).await;
    let status = client.get(get("k")).await.unwrap_err();
    assert_eq!(
        status.message(),
        "missing bearer token: send the header `authorization: Bearer TOKEN`"
    );
    let mut client = client_with(&server, Some("Bearer nope")).await;
    assert_eq!(
        client.get(get("k")).await.unwrap_err().message(),
        "unknown token"
    );
    assert_eq!(server.store().revision(), 0, "nothing was written");
    server.shutdown().await;
}

#[tokio::test]
async fn a_read_token_reads_and_watches_but_may_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(&dir).await;
    let mut reader = client_with(&server, Some("Bearer reader-0b8d5e6f17")).await;
    assert_eq!(
        codes(&mut reader).await,
        [
            Code::NotFound,
            Code::Ok,
            Code::Ok,
            Code::Ok,
            Code::PermissionDenied,
            Code::PermissionDenied,
            Code::Ok
        ]
    );
    let status = reader.insert(insert("k")).await.unwrap_err();
    assert_eq!(status.message(), "a read-only token may not call Insert");
    assert_eq!(server.store().revision(), 0, "nothing was written");

    // What a writer writes, a reader sees, live.
    let mut writer = client_with(&server, Some("Bearer writer-7f3a9c2e41")).await;
    let mut watch = reader
        .watch_key(pb::WatchKeyRequest {
            key: "shared".into(),
            value_encoding: pb::ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    within("snapshot", watch.message()).await.unwrap().unwrap();
    writer.insert(insert("shared")).await.unwrap();
    let event = loop {
        let msg = within("event", watch.message()).await.unwrap().unwrap();
        if let Some(pb::watch_response::Response::Event(event)) = msg.response {
            break event;
        }
    };
    assert_eq!(event.kv.unwrap().key, "shared");
    server.shutdown().await;
}

#[tokio::test]
async fn a_write_token_may_do_everything_and_the_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(&dir).await;
    for header in ["Bearer writer-7f3a9c2e41", "bearer writer-7f3a9c2e41"] {
        let mut writer = client_with(&server, Some(header)).await;
        let [get, list, watch_key, watch_prefix, insert, delete, status] = codes(&mut writer).await;
        assert_eq!(
            [list, watch_key, watch_prefix, insert, delete, status],
            [Code::Ok; 6],
            "{header}"
        );
        assert!(matches!(get, Code::Ok | Code::NotFound), "{get:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_stay_open_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(&dir).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jsonkv.v1.JsonKv".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let listed = format!("{:?}", responses.message().await.unwrap().unwrap());
    assert!(listed.contains("jsonkv.v1.JsonKv"), "{listed}");
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_tokens_file_no_token_is_needed() {
    let (server, mut client): (RunningServer, Client) = common::start(config()).await;
    common::put(&mut client, "k", "1").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_tokens_file_stops_start_up_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "write good-token-1\nowner s3cret-token\n",
            "line 2: the first word must be `read`, `write` or `admin`",
        ),
        (
            "# only a comment\n\nread\n",
            "line 3: expected `read TOKEN` or `write TOKEN`",
        ),
        ("# nothing here\n", "no tokens"),
    ] {
        let path = tokens_file(&dir, text);
        let err = RunningServer::start(Config {
            auth_tokens: Some(path.clone()),
            ..config()
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("{text:?} was accepted"))
        .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("s3cret"), "the error shows a token: {err}");
    }
    let err = RunningServer::start(Config {
        auth_tokens: Some(dir.path().join("missing")),
        ..config()
    })
    .await
    .err()
    .expect("a missing tokens file must stop start-up")
    .to_string();
    assert!(err.contains("cannot read tokens file"), "{err}");
}

#[tokio::test]
async fn a_scoped_token_reaches_only_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(Config {
        auth_tokens: Some(tokens_file(
            &dir,
            "write admin-6b1f0c\nwrite app1-w-93ad17 app1/ shared/\nread app1-r-2c8e44 app1/\n",
        )),
        ..config()
    })
    .await
    .unwrap();
    let mut admin = client_with(&server, Some("Bearer admin-6b1f0c")).await;
    for key in ["app1/a", "app10/secret", "shared/x", "other"] {
        admin.insert(insert(key)).await.unwrap();
    }
    let before = server.store().revision();
    let mut scoped = client_with(&server, Some("Bearer app1-w-93ad17")).await;
    let mut reader = client_with(&server, Some("Bearer app1-r-2c8e44")).await;
    let denied = |result: Result<(), Status>| {
        let status = result.expect_err("out of scope");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        // Names no key and no scope.
        assert!(!status.message().contains("app"), "{status:?}");
    };

    // In scope: every method works.
    scoped.insert(insert("app1/b")).await.unwrap();
    scoped.insert(insert("shared/y")).await.unwrap();
    scoped.get(get("app1/a")).await.unwrap();
    reader.get(get("app1/b")).await.unwrap();
    scoped.delete(delete("app1/b")).await.unwrap();
    let listed = scoped
        .list(pb::ListRequest {
            prefix: "app1/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.kvs.len(), 1);
    let mut watch = reader
        .watch_prefix(pb::WatchPrefixRequest {
            prefix: "app1/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    within("the scoped watch's snapshot", watch.message())
        .await
        .unwrap();

    // Out of scope, existing or not, app10/ included: refused, before any read or write.
    for key in ["app10/secret", "app10/absent", "other", "absent"] {
        denied(scoped.get(get(key)).await.map(drop));
        denied(scoped.insert(insert(key)).await.map(drop));
        denied(scoped.delete(delete(key)).await.map(drop));
        denied(
            scoped
                .watch_key(pb::WatchKeyRequest {
                    key: key.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        );
    }
    // A prefix must lie inside the scope: the whole keyspace, or app1 (which covers app10/),
    // is refused.
    for prefix in ["", "app1", "app"] {
        denied(
            scoped
                .list(pb::ListRequest {
                    prefix: prefix.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        );
        denied(
            reader
                .watch_prefix(pb::WatchPrefixRequest {
                    prefix: prefix.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        );
    }
    // Status counts the whole store, and a backup copies it: an unscoped token's calls.
    denied(scoped.status(pb::StatusRequest {}).await.map(drop));
    denied(scoped.backup(pb::BackupRequest {}).await.map(drop));
    // A backup needs a write token.
    let status = reader.backup(pb::BackupRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    admin.status(pb::StatusRequest {}).await.unwrap();
    // The roles still hold inside a scope.
    let status = reader.insert(insert("app1/c")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The out-of-scope calls changed nothing: only the three in-scope writes happened.
    assert_eq!(server.store().revision(), before + 3);
    assert_eq!(server.store().get("app10/secret").0.unwrap().version, 1);
    server.shutdown().await;
}

/// Reads `watch` until it ends; its status.
async fn ended(watch: &mut tonic::Streaming<pb::WatchResponse>) -> Status {
    within("the watch to end", async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watch ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_reload_ends_what_a_token_may_no_longer_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = tokens_file(
        &dir,
        "write admin-6b1f0c\nread gone-1d2e3f\nread app-5a6b7c app1/\n",
    );
    let server = RunningServer::start(Config {
        auth_tokens: Some(path.clone()),
        ..config()
    })
    .await
    .unwrap();
    let mut admin = client_with(&server, Some("Bearer admin-6b1f0c")).await;
    let mut gone = client_with(&server, Some("Bearer gone-1d2e3f")).await;
    let mut app = client_with(&server, Some("Bearer app-5a6b7c")).await;
    let open = |prefix: &str| pb::WatchPrefixRequest {
        prefix: prefix.into(),
        ..Default::default()
    };
    let mut everything = gone.watch_prefix(open("")).await.unwrap().into_inner();
    let mut app1 = app.watch_prefix(open("app1/")).await.unwrap().into_inner();
    let mut app1_sub = app
        .watch_prefix(open("app1/sub/"))
        .await
        .unwrap()
        .into_inner();
    for watch in [&mut everything, &mut app1, &mut app1_sub] {
        within("a snapshot", watch.message()).await.unwrap();
    }

    // `gone` removed, `app` narrowed to app1/sub/.
    std::fs::write(&path, "write admin-6b1f0c\nread app-5a6b7c app1/sub/\n").unwrap();
    server.reload().unwrap();
    assert_eq!(ended(&mut everything).await.code(), Code::Unauthenticated);
    assert_eq!(ended(&mut app1).await.code(), Code::PermissionDenied);
    let status = gone.get(get("k")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app.get(get("app1/x")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // What the new scope still covers goes on.
    admin.insert(insert("app1/sub/k")).await.unwrap();
    let event = within("the event", async {
        loop {
            let message = app1_sub.message().await.unwrap().expect("still open");
            if let Some(pb::watch_response::Response::Event(event)) = message.response {
                break event;
            }
        }
    })
    .await;
    assert_eq!(event.kv.unwrap().key, "app1/sub/k");

    // A broken file is refused, and the tokens in force stay.
    std::fs::write(&path, "write\n").unwrap();
    let err = server.reload().unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    admin.get(get("app1/sub/k")).await.unwrap();
    app.get(get("app1/sub/k")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn an_admin_token_backs_up_but_touches_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(Config {
        auth_tokens: Some(tokens_file(&dir, "write w-11aa22\nadmin ops-33bb44\n")),
        ..config()
    })
    .await
    .unwrap();
    let mut writer = client_with(&server, Some("Bearer w-11aa22")).await;
    writer.insert(insert("k")).await.unwrap();
    let mut admin = client_with(&server, Some("Bearer ops-33bb44")).await;
    admin.status(pb::StatusRequest {}).await.unwrap();
    let mut backup = admin
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let last = within("the backup", async {
        loop {
            let chunk = backup.message().await.unwrap().expect("a last chunk");
            if chunk.last {
                break chunk;
            }
        }
    })
    .await;
    assert_eq!(last.keys, 1);
    let status = admin.get(get("k")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "an admin token may not call Get");
    let status = admin.insert(insert("k")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.shutdown().await;
}

/// A scoped token may grant, keep alive and look up leases, and revoke one whose keys all lie
/// in its scope; it sees only its own keys of a lease, and may not list leases. A read token may
/// look leases up, and not grant or revoke one.
#[tokio::test]
async fn a_scoped_token_uses_leases_within_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(Config {
        auth_tokens: Some(tokens_file(
            &dir,
            "write admin-6b1f0c\nwrite app1-w-93ad17 app1/\nread reader-44e1 app1/\n",
        )),
        ..config()
    })
    .await
    .unwrap();
    let mut admin = client_with(&server, Some("Bearer admin-6b1f0c")).await;
    let mut scoped = client_with(&server, Some("Bearer app1-w-93ad17")).await;
    let mut reader = client_with(&server, Some("Bearer reader-44e1")).await;
    let grant = |ttl_seconds| pb::LeaseGrantRequest { ttl_seconds, id: 0 };
    let leased = |key: &str, lease: i64| pb::InsertRequest {
        lease,
        ..insert(key)
    };

    let own = scoped.lease_grant(grant(60)).await.unwrap().into_inner().id;
    scoped.insert(leased("app1/a", own)).await.unwrap();
    scoped
        .lease_keep_alive(pb::LeaseKeepAliveRequest { id: own })
        .await
        .unwrap();
    // A lease that also holds a key outside the scope: looked up without it, not revoked.
    let mixed = admin.lease_grant(grant(60)).await.unwrap().into_inner().id;
    admin.insert(leased("app1/b", mixed)).await.unwrap();
    admin.insert(leased("other/c", mixed)).await.unwrap();
    let seen = scoped
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: mixed,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.keys, ["app1/b"]);
    let refused = scoped
        .lease_revoke(pb::LeaseRevokeRequest { id: mixed })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        server.store().get("other/c").0.is_some(),
        "a refused revoke deleted a key"
    );
    let refused = scoped
        .lease_list(pb::LeaseListRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The reader looks up, and may not change, leases.
    reader
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: own,
            keys: true,
        })
        .await
        .unwrap();
    for status in [
        reader.lease_grant(grant(60)).await.unwrap_err(),
        reader
            .lease_revoke(pb::LeaseRevokeRequest { id: own })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let revoked = scoped
        .lease_revoke(pb::LeaseRevokeRequest { id: own })
        .await
        .unwrap();
    assert!(!common::store_header(&revoked).is_empty());
    assert!(server.store().get("app1/a").0.is_none());
    let listed = admin
        .lease_list(pb::LeaseListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.ids, [mixed]);
}

#[tokio::test]
async fn a_transaction_or_patch_may_name_only_keys_in_scope() {
    use pb::op::Request as Op;
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(Config {
        auth_tokens: Some(tokens_file(
            &dir,
            "write admin-6b1f0c\nwrite app1-w-93ad17 app1/\nread reader-0b8d5e6f17\n",
        )),
        ..config()
    })
    .await
    .unwrap();
    let mut admin = client_with(&server, Some("Bearer admin-6b1f0c")).await;
    admin.insert(insert("other/secret")).await.unwrap();
    let mut scoped = client_with(&server, Some("Bearer app1-w-93ad17")).await;
    let mut reader = client_with(&server, Some("Bearer reader-0b8d5e6f17")).await;
    let write = |key: &str| pb::Op {
        request: Some(Op::Insert(insert(key))),
    };
    let exists = |key: &str| pb::Compare {
        key: key.into(),
        target: Some(pb::compare::Target::Exists(true)),
        ..Default::default()
    };
    let txn =
        |compare: Vec<pb::Compare>, success: Vec<pb::Op>, failure: Vec<pb::Op>| pb::TxnRequest {
            compare,
            success,
            failure,
        };
    let merge = |key: &str| pb::PatchRequest {
        key: key.into(),
        patch: Some(pb::patch_request::Patch::MergeJson("{}".into())),
        ..Default::default()
    };
    let before = server.store().revision();
    // Out of scope anywhere (a comparison, either branch): refused before anything is read.
    for request in [
        txn(vec![exists("other/secret")], vec![write("app1/a")], vec![]),
        txn(vec![], vec![write("app1/a")], vec![write("other/x")]),
        txn(
            vec![],
            vec![
                write("app1/a"),
                pb::Op {
                    request: Some(Op::Get(get("other/secret"))),
                },
            ],
            vec![],
        ),
    ] {
        let status = scoped.txn(request).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let status = scoped.patch(merge("other/secret")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A read token may do neither.
    let status = reader.txn(txn(vec![], vec![], vec![])).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = reader.patch(merge("app1/a")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(server.store().revision(), before, "nothing was written");
    // In scope, both work.
    let done = scoped
        .txn(txn(vec![exists("app1/a")], vec![], vec![write("app1/a")]))
        .await
        .unwrap()
        .into_inner();
    assert!(!done.succeeded && done.revision > before);
    scoped.patch(merge("app1/b")).await.unwrap();
    server.shutdown().await;
}
