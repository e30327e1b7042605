//! TLS: the server speaks gRPC over TLS with `tls`, and requires client certificates from a CA
//! with `tls.client_ca` (mutual TLS).
//!
//! Guarantees proved here, the rules of docs/security.md's certificates section, against the
//! real server (the client's `secure.rs` checks them through the Rust client and the CLI):
//! - Clients that trust the CA use the service and health over TLS; one that does not is
//!   refused: `clients_that_trust_the_ca_use_the_service_and_health_over_tls`,
//!   `a_client_that_does_not_trust_the_certificate_is_refused`.
//! - Mutual TLS requires a client certificate from the CA:
//!   `mutual_tls_requires_a_client_certificate_from_the_ca`.
//! - Plaintext sent to a TLS port fails cleanly and does not disturb the server, and a TLS
//!   client of a plaintext server fails cleanly:
//!   `plaintext_sent_to_a_tls_port_fails_cleanly_and_the_server_carries_on`,
//!   `a_tls_client_of_a_plaintext_server_fails_cleanly`.
//! - Unusable certificate files stop start-up naming the file:
//!   `unusable_certificate_files_stop_start_up_naming_the_file`.
//! - A reload serves a renewed certificate to new connections while open ones go on, and keeps
//!   the old one when the new files are broken:
//!   `a_reload_serves_a_renewed_certificate_to_new_connections`.

use std::time::Duration;

use jsonkv::pb::{self, json_kv_client::JsonKvClient};
use jsonkv_server::config::TlsFiles;
use jsonkv_server::{Config, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::certs::{Issued, Pki};
use crate::common::{config, put, Client};

fn tls_config(tls: TlsFiles) -> Config {
    Config {
        tls: Some(tls),
        ..config()
    }
}

/// A client of `server` that trusts `ca` and presents `identity`, if given. Errors from the
/// connection or from a first call (TLS 1.3 reports a refused client certificate only then)
/// come back as one string.
async fn tls_client(
    server: &RunningServer,
    ca: &str,
    identity: Option<&Issued>,
) -> Result<Client, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&issued.cert).unwrap(),
            std::fs::read(&issued.key).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(server.url())
        .unwrap()
        .timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(|e| format!("{e:?}"))?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut client = JsonKvClient::new(channel);
    client
        .get(pb::GetRequest {
            key: "probe".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .or_else(|status| match status.code() {
            tonic::Code::NotFound => Ok(()),
            _ => Err(format!("{status:?}")),
        })?;
    Ok(client)
}

#[tokio::test]
async fn clients_that_trust_the_ca_use_the_service_and_health_over_tls() {
    let pki = Pki::new("jsonkv test CA");
    let server = RunningServer::start(tls_config(pki.server_tls(false)))
        .await
        .unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let mut client = tls_client(&server, &pki.ca_pem(), None).await.unwrap();
    let revision = put(&mut client, "k", r#"{"over":"tls"}"#).await;
    let got = client
        .get(pb::GetRequest {
            key: "k".into(),
            value_encoding: pb::ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().value_json, r#"{"over":"tls"}"#);
    assert_eq!(got.revision, revision);

    let channel = Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem())))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(
        health.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let pki = Pki::new("jsonkv test CA");
    let stranger = Pki::new("some other CA");
    let server = RunningServer::start(tls_config(pki.server_tls(false)))
        .await
        .unwrap();
    let err = tls_client(&server, &stranger.ca_pem(), None)
        .await
        .expect_err("an unknown issuer must be refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn plaintext_sent_to_a_tls_port_fails_cleanly_and_the_server_carries_on() {
    let pki = Pki::new("jsonkv test CA");
    let server = RunningServer::start(tls_config(pki.server_tls(false)))
        .await
        .unwrap();
    let plain_url = format!("http://{}", server.addr());

    // A gRPC client speaking plaintext HTTP/2 gets an error, promptly, never an answer.
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        let channel = Endpoint::from_shared(plain_url.clone())
            .unwrap()
            .connect()
            .await?;
        JsonKvClient::new(channel)
            .get(pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
            .map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await
    .expect("a plaintext client must fail, not hang");
    assert!(outcome.is_err(), "a plaintext call to a TLS port succeeded");

    // Raw bytes of an HTTP/2 preface: the server answers with at most a TLS alert and closes.
    let mut socket = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut answer))
        .await
        .expect("the server must close a plaintext connection");
    assert!(
        read.is_err() || !answer.starts_with(b"HTTP"),
        "plaintext got a plaintext answer: {answer:?}"
    );

    // TLS clients are served as before.
    let mut client = tls_client(&server, &pki.ca_pem(), None).await.unwrap();
    put(&mut client, "still", "1").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_fails_cleanly() {
    let pki = Pki::new("jsonkv test CA");
    let server = RunningServer::start(config()).await.unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem()));
    let attempt = tokio::time::timeout(
        Duration::from_secs(15),
        Endpoint::from_shared(format!("https://{}", server.addr()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
    .expect("must fail, not hang");
    assert!(attempt.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new("jsonkv test CA");
    let stranger = Pki::new("some other CA");
    let server = RunningServer::start(tls_config(pki.server_tls(true)))
        .await
        .unwrap();

    let without = tls_client(&server, &pki.ca_pem(), None).await;
    assert!(without.is_err(), "a client without a certificate got in");
    let foreign = stranger.client("mallory");
    let with_foreign = tls_client(&server, &pki.ca_pem(), Some(&foreign)).await;
    assert!(
        with_foreign.is_err(),
        "a certificate from another CA got in"
    );

    let mut client = tls_client(&server, &pki.ca_pem(), Some(&pki.client("alice")))
        .await
        .unwrap();
    put(&mut client, "k", "1").await;
    server.shutdown().await;
}

#[tokio::test]
async fn unusable_certificate_files_stop_start_up_naming_the_file() {
    let pki = Pki::new("jsonkv test CA");
    let good = pki.server_tls(false);

    let missing = TlsFiles {
        key: pki.dir().join("no-such.key"),
        ..good.clone()
    };
    let err = RunningServer::start(tls_config(missing))
        .await
        .err()
        .expect("a missing key must stop start-up")
        .to_string();
    assert!(err.contains("no-such.key"), "{err}");

    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err = RunningServer::start(tls_config(TlsFiles {
        cert: garbage,
        ..good.clone()
    }))
    .await
    .err()
    .expect("a non-PEM certificate must stop start-up")
    .to_string();
    assert!(
        err.contains("garbage.pem") && err.contains("not PEM"),
        "{err}"
    );

    // A key that is PEM but not a key: rustls refuses it when the config is built.
    let err = RunningServer::start(tls_config(TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    }))
    .await
    .err()
    .expect("a certificate given as the key must stop start-up")
    .to_string();
    assert!(err.contains("server.pem"), "{err}");
}

#[tokio::test]
async fn a_reload_serves_a_renewed_certificate_to_new_connections() {
    let old_ca = Pki::new("old CA");
    let files = old_ca.server_tls(false);
    let server = RunningServer::start(tls_config(files.clone()))
        .await
        .unwrap();
    let mut open = tls_client(&server, &old_ca.ca_pem(), None).await.unwrap();

    // The operator renews the certificate in place, from another CA, and reloads.
    let new_ca = Pki::new("new CA");
    let renewed = new_ca.server();
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    std::fs::copy(&renewed.key, &files.key).unwrap();
    server.reload().unwrap();

    tls_client(&server, &new_ca.ca_pem(), None)
        .await
        .expect("a new connection gets the renewed certificate");
    let err = tls_client(&server, &old_ca.ca_pem(), None)
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The connection made before the reload was not dropped.
    put(&mut open, "still", "1").await;

    // Broken files are refused naming the file, and the renewed certificate stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let err = server.reload().unwrap_err().to_string();
    assert!(err.contains("not PEM"), "{err}");
    tls_client(&server, &new_ca.ca_pem(), None)
        .await
        .expect("the certificate in force stays");
    server.shutdown().await;
}
