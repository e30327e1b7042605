//! Tokens never reach a log: every log line of the process, at TRACE level and from every
//! crate (tonic, hyper, h2 included), is captured while calls with good, read-only, unknown and
//! missing tokens go through, and searched for the tokens.
//!
//! Guarantee proved here, the last of docs/security.md's token rules (`it/auth.rs` checks the
//! others): no log line shows a token or the tail of one, and refusals are logged without them:
//! `no_token_appears_in_any_log_line`.
//!
//! A binary of its own because it installs the process-wide tracing subscriber: beside other
//! tests it could not install it if one of them had, it would capture their lines too, and it
//! would slow every one of them down with TRACE output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::config;
use jsonkv::pb::{self, json_kv_client::JsonKvClient};
use jsonkv_server::{Config, RunningServer};
use tonic::Request;

const WRITER: &str = "writer-secret-5d1e8a0c";
const READER: &str = "reader-secret-93b6f4d2";
const GUESS: &str = "guessed-secret-77aa01";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_appears_in_any_log_line() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("write {WRITER}\nread {READER}\n")).unwrap();
    let server = RunningServer::start(Config {
        auth_tokens: Some(tokens),
        ..config()
    })
    .await
    .unwrap();
    let mut client = JsonKvClient::connect(server.url()).await.unwrap();
    let insert = || pb::InsertRequest {
        key: "k".into(),
        new_value: Some(pb::insert_request::NewValue::ValueJson("1".into())),
        ..Default::default()
    };
    client
        .insert(with_token(insert(), Some(WRITER)))
        .await
        .unwrap();
    let denied = client.insert(with_token(insert(), Some(READER))).await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
    let unknown = client
        .get(with_token(pb::GetRequest::default(), Some(GUESS)))
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::Unauthenticated);
    let missing = client
        .get(with_token(pb::GetRequest::default(), None))
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::Unauthenticated);
    server.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The net is wide: the HTTP/2 layer's own trace lines were captured too.
    assert!(logs.contains("h2::"), "no h2 trace output was captured");
    assert!(
        logs.contains("call refused") && logs.contains("a read-only token may not call Insert"),
        "refusals are logged:\n{logs}"
    );
    assert!(logs.contains("unknown token"), "{logs}");
    for token in [WRITER, READER, GUESS] {
        assert!(!logs.contains(token), "a log line shows the token {token}");
        // Nor its tail, in case something logs a value cut short.
        assert!(
            !logs.contains(&token[8..]),
            "a log line shows part of {token}"
        );
    }
}
