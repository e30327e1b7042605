//! `/metrics` through the real server.
//!
//! Guarantees proved here, the metrics of docs/operations.md, against the real server:
//! - Calls are counted by method and status code with their latency, and open watchers, events
//!   delivered and storage timings are measured: `calls_watchers_events_and_storage_are_measured`.
//! - Health checks and unknown methods are counted without growing the set of labels:
//!   `health_checks_and_unknown_methods_are_counted_without_growing_labels`.
//! - Refusals (UNAUTHENTICATED, RESOURCE_EXHAUSTED) are counted by their code like any other
//!   status: `refusals_are_counted_by_their_code`.
//! - Leases in force and leases that expired are measured (a revoke is not an expiry):
//!   `leases_in_force_and_expiries_are_measured`.
//! - Catch-ups and overflows are counted: `a_watcher_that_catches_up_from_history_is_counted`,
//!   `a_watcher_that_falls_behind_history_is_counted_as_an_overflow`.

use jsonkv::pb;
use jsonkv_server::config::{BackendConfig, DiskConfig};
use jsonkv_server::{Config, RunningServer};
use tonic::{Code, Request};

use crate::common::{config, connect, next, put, start, watch_key, within, Seen};
use crate::prom::{scrape, value, wait_for};

fn with_metrics(config: Config) -> Config {
    Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config
    }
}

fn calls(method: &str, code: &str) -> String {
    format!(r#"jsonkv_requests_total{{method="jsonkv.v1.JsonKv/{method}",code="{code}"}}"#)
}

#[tokio::test]
async fn calls_watchers_events_and_storage_are_measured() {
    // On disk: an in-memory store applies writes without storage appends to measure.
    let dir = tempfile::tempdir().unwrap();
    let disk = jsonkv_server::Config {
        backend: BackendConfig::Disk(DiskConfig::new(dir.path().to_owned())),
        ..config()
    };
    let (server, mut client) = start(with_metrics(disk)).await;
    let metrics = server.metrics_addr().unwrap();

    let missing = client
        .get(pb::GetRequest {
            key: "nope".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let bad = client.insert(pb::InsertRequest::default()).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let mut watch = watch_key(&mut client, "k", 0).await.unwrap();
    assert!(matches!(
        next(&mut watch).await.unwrap(),
        Seen::Snapshot { .. }
    ));
    for i in 0..3 {
        put(&mut client, "k", &i.to_string()).await;
    }
    for _ in 0..3 {
        loop {
            if let Seen::Put { .. } = next(&mut watch).await.unwrap() {
                break;
            }
        }
    }

    let text = scrape(metrics).await;
    assert_eq!(value(&text, &calls("Get", "NOT_FOUND")), 1.0, "{text}");
    assert_eq!(value(&text, &calls("Insert", "INVALID_ARGUMENT")), 1.0);
    assert_eq!(value(&text, &calls("Insert", "OK")), 3.0);
    assert_eq!(
        value(
            &text,
            r#"jsonkv_request_duration_seconds_count{method="jsonkv.v1.JsonKv/Insert"}"#
        ),
        4.0
    );
    assert!(
        text.contains(
            r#"jsonkv_request_duration_seconds_bucket{le="+Inf",method="jsonkv.v1.JsonKv/Insert"} 4"#
        ),
        "{text}"
    );
    assert_eq!(value(&text, "jsonkv_watchers_active"), 1.0);
    // The embedded store is its own source of truth: always up.
    assert_eq!(value(&text, "jsonkv_source_up"), 1.0);
    assert_eq!(value(&text, "jsonkv_watch_events_delivered_total"), 3.0);
    // Process-wide, so at least this server's three commits.
    assert!(value(&text, "jsonkv_storage_append_duration_seconds_count") >= 3.0);
    assert!(value(&text, "jsonkv_storage_batch_events_sum") >= 3.0);
    for name in [
        "jsonkv_requests",
        "jsonkv_request_duration_seconds",
        "jsonkv_watchers_active",
        "jsonkv_watch_events_delivered",
        "jsonkv_watch_catch_ups",
        "jsonkv_watch_overflows",
        "jsonkv_storage_append_duration_seconds",
        "jsonkv_storage_batch_events",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("jsonkv_"),
            "a metric outside jsonkv_: {line}"
        );
    }

    // A watch the client drops ends as CANCELLED, and is no longer active.
    drop(watch);
    let text = wait_for(metrics, &calls("WatchKey", "CANCELLED"), |v| v == 1.0).await;
    assert_eq!(value(&text, "jsonkv_watchers_active"), 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn health_checks_and_unknown_methods_are_counted_without_growing_labels() {
    let (server, _client) = start(with_metrics(config())).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // A method nobody serves, called by path.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = "/made.up.Service/Whatever".parse().unwrap();
    let codec = tonic_prost::ProstCodec::<pb::GetRequest, pb::GetResponse>::default();
    let status = grpc
        .unary(Request::new(pb::GetRequest::default()), path, codec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    let text = scrape(server.metrics_addr().unwrap()).await;
    assert_eq!(
        value(
            &text,
            r#"jsonkv_requests_total{method="grpc.health.v1.Health/Check",code="OK"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"jsonkv_requests_total{method="unknown",code="UNIMPLEMENTED"}"#
        ),
        1.0,
        "{text}"
    );
    assert!(!text.contains("made.up"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn refusals_are_counted_by_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "write w-token-1234\n").unwrap();
    let server = RunningServer::start(with_metrics(Config {
        auth_tokens: Some(tokens),
        max_watchers: 1,
        ..config()
    }))
    .await
    .unwrap();
    let mut client = connect(&server).await;
    let authorized = |key: &str| {
        let mut request = Request::new(pb::WatchKeyRequest {
            key: key.into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer w-token-1234".parse().unwrap());
        request
    };
    let status = client
        .watch_key(pb::WatchKeyRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let _open = client.watch_key(authorized("a")).await.unwrap();
    let status = client.watch_key(authorized("b")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);

    let text = scrape(server.metrics_addr().unwrap()).await;
    assert_eq!(
        value(&text, &calls("WatchKey", "UNAUTHENTICATED")),
        1.0,
        "{text}"
    );
    assert_eq!(value(&text, &calls("WatchKey", "RESOURCE_EXHAUSTED")), 1.0);
    assert_eq!(value(&text, "jsonkv_watchers_active"), 1.0);
    server.shutdown().await;
}

/// Writes `count` large values to `key` while a watcher of it is not reading, so that the
/// server's side of its stream stalls on HTTP/2 flow control and falls behind the writers.
async fn write_past(server: &RunningServer, key: &str, count: usize) -> i64 {
    let payload = format!(r#""{}""#, "x".repeat(2000));
    let mut writer = connect(server).await;
    let mut revision = 0;
    for _ in 0..count {
        revision = put(&mut writer, key, &payload).await;
    }
    revision
}

#[tokio::test]
async fn a_watcher_that_catches_up_from_history_is_counted() {
    let (server, mut client) = start(with_metrics(Config {
        watch_buffer: 8,
        ..config()
    }))
    .await;
    let mut slow = watch_key(&mut client, "hot", 0).await.unwrap();
    next(&mut slow).await.unwrap();
    let last = write_past(&server, "hot", 1500).await;
    let mut expected = 1;
    while expected <= last {
        match next(&mut slow).await.unwrap() {
            Seen::Put { revision, .. } => {
                assert_eq!(revision, expected);
                expected += 1;
            }
            Seen::Progress(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let text = scrape(server.metrics_addr().unwrap()).await;
    assert!(
        value(&text, "jsonkv_watch_catch_ups_total") >= 1.0,
        "{text}"
    );
    assert_eq!(value(&text, "jsonkv_watch_overflows_total"), 0.0);
    assert_eq!(
        value(&text, "jsonkv_watch_events_delivered_total"),
        last as f64
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_watcher_that_falls_behind_history_is_counted_as_an_overflow() {
    let (server, mut client) = start(with_metrics(Config {
        watch_buffer: 8,
        history_size: 16,
        ..config()
    }))
    .await;
    let mut slow = watch_key(&mut client, "hot", 0).await.unwrap();
    next(&mut slow).await.unwrap();
    write_past(&server, "hot", 3000).await;
    let status = within("the overflow", async {
        loop {
            match next(&mut slow).await {
                Ok(_) => {}
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(status.code(), Code::OutOfRange);
    let metrics = server.metrics_addr().unwrap();
    let text = wait_for(metrics, &calls("WatchKey", "OUT_OF_RANGE"), |v| v == 1.0).await;
    assert_eq!(value(&text, "jsonkv_watch_overflows_total"), 1.0, "{text}");
    assert!(value(&text, "jsonkv_watch_catch_ups_total") >= 1.0);
    assert_eq!(value(&text, "jsonkv_watchers_active"), 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn leases_in_force_and_expiries_are_measured() {
    let (server, mut client) = start(with_metrics(config())).await;
    let metrics = server.metrics_addr().unwrap();
    let grant = |ttl_seconds| pb::LeaseGrantRequest { ttl_seconds, id: 0 };
    let kept = client
        .lease_grant(grant(3600))
        .await
        .unwrap()
        .into_inner()
        .id;
    let revoked = client
        .lease_grant(grant(3600))
        .await
        .unwrap()
        .into_inner()
        .id;
    client.lease_grant(grant(1)).await.unwrap();
    let text = scrape(metrics).await;
    assert_eq!(value(&text, "jsonkv_leases"), 3.0, "{text}");
    assert_eq!(value(&text, "jsonkv_lease_expiries_total"), 0.0);
    // A revoke is not an expiry; the short lease, left alone, is.
    client
        .lease_revoke(pb::LeaseRevokeRequest { id: revoked })
        .await
        .unwrap();
    let text = wait_for(metrics, "jsonkv_lease_expiries_total", |v| v == 1.0).await;
    assert_eq!(
        value(&text, "jsonkv_leases"),
        1.0,
        "only {kept} is left: {text}"
    );
    server.shutdown().await;
}
