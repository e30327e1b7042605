//! The client library and the `jsonkv` CLI against a secured server: `https://` addresses with
//! a CA (`ca_file` / `--ca`), client certificates for mutual TLS (`identity_files` /
//! `--cert --key`), and bearer tokens (`token` / `--token` / `JSONKV_TOKEN`). Refusals come back
//! as one clear error; a watch refused for its token ends instead of retrying forever.
//!
//! Guarantees proved here: TLS, mutual TLS and tokens work through the Rust client and the CLI,
//! as the server's `tls.rs` and `auth.rs` check them against the server:
//! `tokens_and_a_ca_file_give_each_role_its_calls`,
//! `without_a_token_calls_fail_and_a_watch_ends_instead_of_retrying`,
//! `tls_options_are_checked_before_connecting`, `mutual_tls_with_a_client_certificate`,
//! `a_watch_over_tls_with_a_token_resumes_across_a_restart`,
//! `tls_and_the_token_apply_to_every_server_of_the_list`,
//! `the_cli_takes_https_a_ca_and_a_token_from_flag_or_environment`,
//! `the_cli_presents_a_client_certificate_for_mutual_tls`.
//! - Certificate failures are explained in one line that says what to do (a CA certificate used
//!   as the server's, a name mismatch, an unknown issuer, a missing client certificate), by the
//!   library and the CLI: `certificate_failures_say_what_to_do`.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jsonkv_client::{Client, Error, WatchEvent};
use jsonkv_server::{Config, RunningServer};
use tonic::Code;

use crate::certs::Pki;
use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_jsonkv");
const WRITE: &str = "w-5b0c2a9e7d";
const READ: &str = "r-18f4c6a3b0";

struct Secured {
    server: RunningServer,
    pki: Pki,
}

/// A server with TLS (mutual with `mutual`) and tokens.
async fn secured(mutual: bool) -> Secured {
    let pki = Pki::new("jsonkv test CA");
    let tokens = pki.dir().join("tokens");
    std::fs::write(&tokens, format!("write {WRITE}\nread {READ}\n")).unwrap();
    let server = RunningServer::start(Config {
        tls: Some(pki.server_tls(mutual)),
        auth_tokens: Some(tokens),
        ..common::config()
    })
    .await
    .unwrap();
    Secured { server, pki }
}

#[tokio::test]
async fn tokens_and_a_ca_file_give_each_role_its_calls() {
    let s = secured(false).await;
    let url = s.server.url();
    assert!(url.starts_with("https://"));
    let writer = Client::builder(&url)
        .ca_file(s.pki.ca_path())
        .token(WRITE)
        .connect()
        .await
        .unwrap();
    let put = writer
        .insert("k", &serde_json::json!({"n": 1}))
        .await
        .unwrap();

    let reader = Client::builder(&url)
        .ca_pem(s.pki.ca_pem())
        .token(READ)
        .connect()
        .await
        .unwrap();
    let entry = reader.get::<serde_json::Value>("k").await.unwrap().unwrap();
    assert_eq!(entry.mod_revision, put.revision);
    let err = reader.insert("k", &2).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert_eq!(
        err.to_string(),
        "permission denied: a read-only token may not call Insert"
    );
    let err = reader.delete("k").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));

    // A reader's watch sees the writer's changes.
    let mut watch = reader.watch_key::<serde_json::Value>("k");
    assert!(matches!(
        common::next_event(&mut watch).await,
        WatchEvent::Snapshot { .. }
    ));
    let next = writer.insert("k", &3).await.unwrap();
    assert!(matches!(
        common::next_event(&mut watch).await,
        WatchEvent::Put { revision, .. } if revision == next.revision
    ));
    s.server.shutdown().await;
}

#[tokio::test]
async fn without_a_token_calls_fail_and_a_watch_ends_instead_of_retrying() {
    let s = secured(false).await;
    let anonymous = Client::builder(s.server.url())
        .ca_file(s.pki.ca_path())
        .connect()
        .await
        .unwrap();
    let err = anonymous.get::<u8>("k").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    assert_eq!(
        err.to_string(),
        "unauthenticated: missing bearer token: send the header `authorization: Bearer TOKEN`"
    );
    let mut watch = anonymous.watch_prefix::<u8>("");
    let err = common::next_item(&mut watch).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    let ended = tokio::time::timeout(common::PATIENCE, futures::StreamExt::next(&mut watch))
        .await
        .unwrap();
    assert!(ended.is_none(), "the watch went on after UNAUTHENTICATED");

    let wrong = Client::builder(s.server.url())
        .ca_file(s.pki.ca_path())
        .token("guess")
        .connect()
        .await
        .unwrap();
    let err = wrong.get::<u8>("k").await.unwrap_err();
    assert_eq!(err.to_string(), "unauthenticated: unknown token");
    s.server.shutdown().await;
}

#[tokio::test]
async fn tls_options_are_checked_before_connecting() {
    let s = secured(false).await;
    // The platform's roots do not know the test CA.
    let err = Client::builder(s.server.url())
        .token(WRITE)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the server's certificate is not signed by a CA this client trusts"),
        "{err}"
    );
    // A CA is for https:// only; a missing CA file is named.
    let err = Client::builder(format!("http://{}", s.server.addr()))
        .ca_file(s.pki.ca_path())
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not an https:// address"),
        "{err}"
    );
    let err = Client::builder(s.server.url())
        .ca_file(s.pki.dir().join("nope.pem"))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let err = Client::builder(s.server.url())
        .ca_file(s.pki.ca_path())
        .token("two words")
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("visible ASCII"), "{err}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let s = secured(true).await;
    let alice = s.pki.client("alice");
    let client = Client::builder(s.server.url())
        .ca_file(s.pki.ca_path())
        .identity_files(&alice.cert, &alice.key)
        .token(WRITE)
        .connect()
        .await
        .unwrap();
    client.insert("k", &1).await.unwrap();

    // Without a certificate the handshake (or, with TLS 1.3, the first call) fails.
    let refused = async {
        let client = Client::builder(s.server.url())
            .ca_file(s.pki.ca_path())
            .token(WRITE)
            .connect()
            .await?;
        client.insert("k", &2).await
    };
    let err = refused.await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the server requires a client certificate"),
        "{err}"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_watch_over_tls_with_a_token_resumes_across_a_restart() {
    let pki = Pki::new("jsonkv test CA");
    let tokens = pki.dir().join("tokens");
    std::fs::write(&tokens, format!("write {WRITE}\n")).unwrap();
    let config = Config {
        tls: Some(pki.server_tls(false)),
        auth_tokens: Some(tokens),
        ..common::config()
    };
    let store = jsonkv_server::Store::in_memory(&config);
    let first = common::start_with_store(config.clone(), store.clone()).await;
    let url = first.url();
    let connect = || {
        Client::builder(url.clone())
            .ca_file(pki.ca_path())
            .token(WRITE)
            .connect()
    };
    let client = connect().await.unwrap();
    let mut watch = common::Drained::new(client.watch_prefix::<i64>("w/"));
    assert!(matches!(
        watch.next_event().await,
        WatchEvent::Snapshot { .. }
    ));
    let a = client.insert("w/a", &1).await.unwrap().revision;
    first.shutdown().await;
    let b = store
        .put("w/b".into(), serde_json::json!(2), None)
        .await
        .unwrap()
        .revision;

    let second = common::start_with_store(
        Config {
            listen: url.trim_start_matches("https://").parse().unwrap(),
            ..config
        },
        store,
    )
    .await;
    let mut revisions = Vec::new();
    while revisions.last() != Some(&b) {
        match watch.next_event().await {
            WatchEvent::Put { revision, .. } => revisions.push(revision),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(revisions, [a, b]);
    second.shutdown().await;
}

/// The CA, the client certificate and the token apply to every server of an address list: once
/// the first server shuts down, calls go to the second, still over mutual TLS with the token.
#[tokio::test]
async fn tls_and_the_token_apply_to_every_server_of_the_list() {
    let pki = Pki::new("jsonkv test CA");
    let tokens = pki.dir().join("tokens");
    std::fs::write(&tokens, format!("write {WRITE}\n")).unwrap();
    let config = Config {
        tls: Some(pki.server_tls(true)),
        auth_tokens: Some(tokens),
        ..common::config()
    };
    let store = jsonkv_server::Store::in_memory(&config);
    let first = common::start_with_store(config.clone(), store.clone()).await;
    let second = common::start_with_store(config, store).await;
    let alice = pki.client("alice");
    let builder = |addrs: String| {
        Client::builder(addrs)
            .ca_file(pki.ca_path())
            .identity_files(&alice.cert, &alice.key)
            .token(WRITE)
    };
    let client = builder(format!("{},{}", first.url(), second.url()))
        .connect()
        .await
        .unwrap();
    let put = client.insert("k", &1).await.unwrap();
    first.shutdown().await;
    let entry = client.get::<i64>("k").await.unwrap().unwrap();
    assert_eq!(entry.mod_revision, put.revision);
    client.insert("k", &2).await.unwrap();

    // A plaintext address anywhere in the list cannot use the CA: refused, and named.
    let plain = format!("http://{}", second.addr());
    let err = builder(format!("{},{plain}", second.url()))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("a CA or client certificate was given, but {plain} is not an https:// address")
    );
    second.shutdown().await;
}

/// Runs `jsonkv ARGS...` with the given environment (and none of the JSONKV_ variables of the
/// test's own environment).
fn jsonkv(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args);
    for var in [
        "JSONKV_ADDR",
        "JSONKV_TOKEN",
        "JSONKV_CA",
        "JSONKV_CERT",
        "JSONKV_KEY",
    ] {
        command.env_remove(var);
    }
    command
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run jsonkv")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Asserts a failure with exactly one line on stderr, and returns it.
fn one_line_error(output: &Output) -> String {
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.ends_with('\n') && err.lines().count() == 1, "{err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

// The server runs on the runtime's worker threads while the test thread blocks on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_https_a_ca_and_a_token_from_flag_or_environment() {
    let s = secured(false).await;
    let url = s.server.url();
    let ca = s.pki.ca_path().display().to_string();

    let put = jsonkv(
        &[
            "--addr",
            &url,
            "--ca",
            &ca,
            "--token",
            WRITE,
            "put",
            "k",
            r#"{"a":1}"#,
        ],
        &[],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert_eq!(text(&put.stdout), "{\"revision\":1}\n");
    let get = jsonkv(
        &["get", "k"],
        &[
            ("JSONKV_ADDR", &url),
            ("JSONKV_CA", &ca),
            ("JSONKV_TOKEN", READ),
        ],
    );
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "{\"a\":1}\n");

    let denied = jsonkv(
        &["--addr", &url, "--ca", &ca, "put", "k", "2"],
        &[("JSONKV_TOKEN", READ)],
    );
    assert_eq!(
        one_line_error(&denied),
        "error: permission denied: a read-only token may not call Insert\n"
    );
    let anonymous = jsonkv(&["--addr", &url, "--ca", &ca, "get", "k"], &[]);
    assert!(
        one_line_error(&anonymous).starts_with("error: unauthenticated: missing bearer token"),
        "{}",
        text(&anonymous.stderr)
    );
    let untrusted = jsonkv(&["--addr", &url, "--token", READ, "get", "k"], &[]);
    let err = one_line_error(&untrusted);
    assert!(
        err.starts_with(&format!("error: cannot connect to {url}")),
        "{err}"
    );

    // Plaintext to the TLS port: a clean one-line error, promptly.
    let plain = format!("http://{}", s.server.addr());
    let started = std::time::Instant::now();
    let plaintext = jsonkv(&["--addr", &plain, "--token", READ, "get", "k"], &[]);
    one_line_error(&plaintext);
    assert!(started.elapsed() < Duration::from_secs(15));

    // The token never shows in --help, even when it is set in the environment.
    let help = jsonkv(&["--help"], &[("JSONKV_TOKEN", WRITE)]);
    assert!(!text(&help.stdout).contains(WRITE));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_presents_a_client_certificate_for_mutual_tls() {
    let s = secured(true).await;
    let url = s.server.url();
    let ca = s.pki.ca_path().display().to_string();
    let bob = s.pki.client("bob");
    let (cert, key) = (
        bob.cert.display().to_string(),
        bob.key.display().to_string(),
    );
    let put = jsonkv(
        &[
            "--addr", &url, "--ca", &ca, "--cert", &cert, "--key", &key, "put", "k", "1",
        ],
        &[("JSONKV_TOKEN", WRITE)],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let without = jsonkv(
        &["--addr", &url, "--ca", &ca, "get", "k"],
        &[("JSONKV_TOKEN", WRITE)],
    );
    one_line_error(&without);
    let half = jsonkv(&["--addr", &url, "--cert", &cert, "get", "k"], &[]);
    assert_eq!(
        half.status.code(),
        Some(2),
        "--cert needs --key: a usage error"
    );
    s.server.shutdown().await;
}

/// Why a client trusting `pki`'s CA cannot connect to `server`.
async fn refused_trusting(pki: &Pki, server: &RunningServer) -> Error {
    Client::builder(server.url())
        .ca_file(pki.ca_path())
        .connect()
        .await
        .expect_err("the connection is refused")
}

/// A TLS server (no tokens) with `tls`.
async fn tls_server(tls: jsonkv_server::config::TlsFiles) -> RunningServer {
    RunningServer::start(Config {
        tls: Some(tls),
        ..common::config()
    })
    .await
    .unwrap()
}

// The server runs on the runtime's worker threads while the test thread blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_failures_say_what_to_do() {
    let pki = Pki::new("jsonkv test CA");
    let ca = pki.ca_path().display().to_string();

    // A self-signed CA as the server's certificate, trusted as the CA: what `openssl req -x509`
    // gives people.
    let server = tls_server(pki.ca_as_server()).await;
    let err = refused_trusting(&pki, &server).await;
    assert!(
        err.to_string()
            .contains("presents a CA certificate as its own")
            && err
                .to_string()
                .contains("basicConstraints=critical,CA:FALSE"),
        "{err}"
    );
    let cli = one_line_error(&jsonkv(
        &["--addr", &server.url(), "--ca", &ca, "get", "k"],
        &[],
    ));
    assert!(
        cli.contains("presents a CA certificate as its own"),
        "{cli}"
    );
    server.shutdown().await;

    // A certificate for another name.
    let other = pki.server_named(&["db.example"]);
    let server = tls_server(jsonkv_server::config::TlsFiles {
        cert: other.cert,
        key: other.key,
        client_ca: None,
    })
    .await;
    let err = refused_trusting(&pki, &server).await;
    assert!(
        err.to_string().contains("not valid for name \"127.0.0.1\"")
            && err.to_string().contains("db.example")
            && err.to_string().contains("connect by a name it holds"),
        "{err}"
    );
    server.shutdown().await;

    // Mutual TLS without a client certificate, through the CLI.
    let server = tls_server(pki.server_tls(true)).await;
    let cli = one_line_error(&jsonkv(
        &["--addr", &server.url(), "--ca", &ca, "get", "k"],
        &[],
    ));
    // The server's alert may come before the call fails, or only the closed connection.
    assert!(
        (cli.contains("the server requires a client certificate")
            || cli.contains("if it requires a client certificate"))
            && cli.contains("--cert FILE --key FILE"),
        "{cli}"
    );
    server.shutdown().await;
}
