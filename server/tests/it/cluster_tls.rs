//! jsonkv on an etcd cluster secured as production ones are: TLS with client certificates on
//! etcd's client URLs (jsonkv-testkit's `EtcdCluster::start_tls`), and etcd's own user/password
//! authentication.
//!
//! Guarantees proved here:
//! - Writes, reads and watches go through etcd over mutual TLS, and with etcd's authentication:
//!   `writes_reads_and_watches_go_through_tls_with_a_client_certificate`,
//!   `with_etcd_auth_the_right_password_serves_and_a_wrong_one_fails_start_up`.
//! - A missing client certificate, an untrusted CA, an endpoint that never answers the handshake
//!   and a wrong password stop start-up within the etcd timeout, naming etcd:
//!   `start_up_fails_in_time_naming_etcd_without_a_client_certificate_or_with_the_wrong_ca`,
//!   `an_etcd_endpoint_that_never_answers_the_handshake_fails_start_up_within_the_timeout`,
//!   `with_etcd_auth_the_right_password_serves_and_a_wrong_one_fails_start_up`.
//! - TLS settings that cannot work (an `http://` endpoint, no CA, a file that is missing or not a
//!   key) are refused before connecting, naming the endpoint, flag or file:
//!   `tls_settings_that_cannot_work_are_refused_before_connecting`.
//! - A restarted etcd's forgotten token is renewed, and the watch resumes:
//!   `after_etcd_restarts_and_forgets_its_tokens_the_server_logs_in_again_and_the_watch_resumes`.
//! - The binary takes the etcd flags, and the password from the environment:
//!   `the_binary_takes_the_etcd_flags_and_the_password_from_the_environment`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jsonkv::pb;
use jsonkv_server::config::{BackendConfig, EtcdConfig, EtcdTls, EtcdUser};
use jsonkv_server::{Config, RunningServer};
use jsonkv_testkit::etcd_client::Permission;
use jsonkv_testkit::{unique_prefix, EtcdCluster, EtcdTlsFiles};
use tokio::net::TcpListener;

use crate::certs;
use crate::common::*;

/// The etcd timeout of these tests: start-up failures must come within it (plus slack).
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);
/// What a failed start-up may take beyond [`ETCD_TIMEOUT`]: scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// The cluster's CA and client certificate, as jsonkv takes them.
fn etcd_tls(files: &EtcdTlsFiles) -> EtcdTls {
    EtcdTls {
        ca: files.ca.clone(),
        client: Some((files.client_cert.clone(), files.client_key.clone())),
    }
}

/// A server config on `cluster` under a prefix of its own, with `tls` and `user`.
fn config_on(cluster: &EtcdCluster, tls: Option<EtcdTls>, user: Option<EtcdUser>) -> Config {
    Config {
        backend: BackendConfig::Etcd(EtcdConfig {
            endpoints: cluster.endpoints(),
            prefix: unique_prefix(),
            timeout: ETCD_TIMEOUT,
            tls,
            user,
        }),
        ..config()
    }
}

fn root(password: &str) -> Option<EtcdUser> {
    Some(EtcdUser {
        name: "root".into(),
        password: password.into(),
    })
}

/// Starts a server on `config`, which must fail: returns the error's text, after checking that
/// it is one line, names etcd, and came within the etcd timeout.
async fn start_up_error(config: Config) -> String {
    let started = Instant::now();
    let err = match RunningServer::start(config).await {
        Ok(_) => panic!("the server started, but its etcd settings are wrong"),
        Err(err) => err.to_string(),
    };
    let took = started.elapsed();
    // Shown with --nocapture: the texts an operator would read.
    eprintln!("start-up failed after {took:?}: {err}");
    assert!(
        took < ETCD_TIMEOUT + SLACK,
        "start-up took {took:?} to fail: {err}"
    );
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(err.contains("etcd"), "does not name etcd: {err}");
    err
}

async fn get_linearizable(client: &mut Client, key: &str, linearizable: bool) -> String {
    let request = pb::GetRequest {
        key: key.into(),
        linearizable,
        ..Default::default()
    };
    get_json(client, request).await
}

#[tokio::test]
async fn writes_reads_and_watches_go_through_tls_with_a_client_certificate() {
    let cluster = EtcdCluster::start_tls(3).await;
    let files = cluster.tls_files().expect("a TLS cluster has files");
    assert!(cluster
        .endpoints()
        .iter()
        .all(|e| e.starts_with("https://")));
    let config = config_on(&cluster, Some(etcd_tls(&files)), None);
    let prefix = etcd_of(&mut config.clone()).prefix.clone();
    let (_server, mut client) = start(config).await;

    let mut watch = watch_prefix(&mut client, "", 0).await.expect("watch opens");
    let Seen::Snapshot { kvs, .. } = next(&mut watch).await.expect("a snapshot") else {
        panic!("a watch starts with a snapshot");
    };
    assert!(kvs.is_empty());
    let a = put(&mut client, "a", r#"{"n":1}"#).await;
    let b = put(&mut client, "b", r#"{"n":2}"#).await;
    let gone = del(&mut client, "a").await;
    assert_eq!(
        read_until(&mut watch, gone).await,
        [
            Seen::Put {
                revision: a,
                key: "a".into(),
                json: r#"{"n":1}"#.into()
            },
            Seen::Put {
                revision: b,
                key: "b".into(),
                json: r#"{"n":2}"#.into()
            },
            Seen::Delete {
                revision: gone,
                key: "a".into()
            },
        ]
    );
    assert_eq!(
        get_linearizable(&mut client, "b", false).await,
        r#"{"n":2}"#
    );
    assert_eq!(get_linearizable(&mut client, "b", true).await, r#"{"n":2}"#);

    // The data is in etcd, where the kit's own client (with the same certificates) finds it.
    let mut etcd = cluster.client().await;
    let stored = etcd
        .get(format!("{prefix}b"), None)
        .await
        .expect("etcd get");
    assert_eq!(stored.kvs()[0].value(), br#"{"n":2}"#);
}

#[tokio::test]
async fn start_up_fails_in_time_naming_etcd_without_a_client_certificate_or_with_the_wrong_ca() {
    let cluster = EtcdCluster::start_tls(1).await;
    let files = cluster.tls_files().unwrap();

    let no_client_cert = EtcdTls {
        client: None,
        ..etcd_tls(&files)
    };
    let err = start_up_error(config_on(&cluster, Some(no_client_cert), None)).await;
    assert!(err.contains("client certificate"), "{err}");

    let other = certs::Pki::new("some other CA");
    let wrong_ca = EtcdTls {
        ca: other.ca_path(),
        ..etcd_tls(&files)
    };
    let err = start_up_error(config_on(&cluster, Some(wrong_ca), None)).await;
    assert!(err.contains("--etcd-ca"), "{err}");

    // A certificate from another CA, which etcd does not trust.
    let stranger = other.client("stranger");
    let untrusted_client = EtcdTls {
        client: Some((stranger.cert, stranger.key)),
        ..etcd_tls(&files)
    };
    let err = start_up_error(config_on(&cluster, Some(untrusted_client), None)).await;
    assert!(err.contains("client certificate"), "{err}");
}

#[tokio::test]
async fn an_etcd_endpoint_that_never_answers_the_handshake_fails_start_up_within_the_timeout() {
    // Accepts connections, and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let pki = certs::Pki::new("jsonkv test CA");
    let client = pki.client("jsonkv");
    for user in [None, root("secret")] {
        let config = Config {
            backend: BackendConfig::Etcd(EtcdConfig {
                endpoints: vec![endpoint.clone()],
                timeout: ETCD_TIMEOUT,
                tls: Some(EtcdTls {
                    ca: pki.ca_path(),
                    client: Some((client.cert.clone(), client.key.clone())),
                }),
                user,
                ..EtcdConfig::default()
            }),
            ..config()
        };
        let err = start_up_error(config).await;
        assert!(err.contains("did not answer within"), "{err}");
    }
    held.abort();
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_before_connecting() {
    let pki = certs::Pki::new("jsonkv test CA");
    let client = pki.client("jsonkv");
    let tls = EtcdTls {
        ca: pki.ca_path(),
        client: Some((client.cert.clone(), client.key.clone())),
    };
    let with = |endpoints: &[&str], tls: Option<EtcdTls>| Config {
        backend: BackendConfig::Etcd(EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            timeout: ETCD_TIMEOUT,
            tls,
            ..EtcdConfig::default()
        }),
        ..config()
    };

    let err = start_up_error(with(&["http://127.0.0.1:1"], Some(tls.clone()))).await;
    assert!(
        err.contains("http://127.0.0.1:1") && err.contains("not https://"),
        "{err}"
    );
    let err = start_up_error(with(
        &["https://127.0.0.1:1", "http://127.0.0.1:2"],
        Some(tls.clone()),
    ))
    .await;
    assert!(err.contains("http://127.0.0.1:2"), "{err}");
    let err = start_up_error(with(&["https://127.0.0.1:1"], None)).await;
    assert!(err.contains("--etcd-ca"), "{err}");

    let missing = pki.dir().join("missing.pem");
    let err = start_up_error(with(
        &["https://127.0.0.1:1"],
        Some(EtcdTls {
            ca: missing.clone(),
            ..tls.clone()
        }),
    ))
    .await;
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let not_pem = pki.dir().join("not.pem");
    std::fs::write(&not_pem, "not a key").unwrap();
    let err = start_up_error(with(
        &["https://127.0.0.1:1"],
        Some(EtcdTls {
            client: Some((client.cert.clone(), not_pem.clone())),
            ..tls.clone()
        }),
    ))
    .await;
    assert!(err.contains(&not_pem.display().to_string()), "{err}");

    // PEM, but not a key: tonic only finds out when it builds the TLS settings.
    let err = start_up_error(with(
        &["https://127.0.0.1:1"],
        Some(EtcdTls {
            client: Some((client.cert.clone(), client.cert.clone())),
            ..tls
        }),
    ))
    .await;
    assert!(err.contains(&client.cert.display().to_string()), "{err}");
}

#[tokio::test]
async fn with_etcd_auth_the_right_password_serves_and_a_wrong_one_fails_start_up() {
    let mut cluster = EtcdCluster::start_tls(1).await;
    cluster.enable_auth("root password").await;
    let tls = etcd_tls(&cluster.tls_files().unwrap());
    // As an operator would: a user of jsonkv's own, allowed only its prefix.
    let config = config_on(&cluster, Some(tls), None);
    let prefix = etcd_of(&mut config.clone()).prefix.clone();
    let mut admin = cluster.client().await;
    admin.role_add("jsonkv").await.expect("role add");
    let prefix_only = Permission::read_write(prefix).with_prefix();
    admin
        .role_grant_permission("jsonkv", prefix_only)
        .await
        .expect("grant");
    admin
        .user_add("jsonkv", "correct horse", None)
        .await
        .expect("user add");
    admin
        .user_grant_role("jsonkv", "jsonkv")
        .await
        .expect("grant role");
    let as_jsonkv = |password: &str| {
        let mut config = config.clone();
        etcd_of(&mut config).user = Some(EtcdUser {
            name: "jsonkv".into(),
            password: password.into(),
        });
        config
    };

    let err = start_up_error(as_jsonkv("wrong")).await;
    assert!(
        err.contains("user jsonkv") && err.contains("authentication failed"),
        "{err}"
    );
    let err = start_up_error(config.clone()).await;
    assert!(err.contains("permission denied"), "{err}");

    let (_server, mut client) = start(as_jsonkv("correct horse")).await;
    let mut watch = watch_key(&mut client, "k", 0).await.expect("watch opens");
    next(&mut watch).await.expect("a snapshot");
    let written = put(&mut client, "k", "1").await;
    assert_eq!(
        read_until(&mut watch, written).await,
        [Seen::Put {
            revision: written,
            key: "k".into(),
            json: "1".into()
        }]
    );
    assert_eq!(get_linearizable(&mut client, "k", true).await, "1");
}

#[tokio::test]
async fn after_etcd_restarts_and_forgets_its_tokens_the_server_logs_in_again_and_the_watch_resumes()
{
    let mut cluster = EtcdCluster::start_tls(1).await;
    cluster.enable_auth("secret").await;
    let tls = etcd_tls(&cluster.tls_files().unwrap());
    let (_server, mut client) = start(config_on(&cluster, Some(tls), root("secret"))).await;
    let mut watch = watch_key(&mut client, "k", 0).await.expect("watch opens");
    next(&mut watch).await.expect("a snapshot");
    let before = put(&mut client, "k", "1").await;

    // etcd keeps its simple tokens in memory: after a restart, the server's is unknown.
    cluster.kill(0);
    cluster.restart(0).await;
    let after = put_eventually(&mut client, "k", "2").await;
    assert_eq!(
        read_until(&mut watch, after).await,
        [
            Seen::Put {
                revision: before,
                key: "k".into(),
                json: "1".into()
            },
            Seen::Put {
                revision: after,
                key: "k".into(),
                json: "2".into()
            },
        ]
    );
}

#[tokio::test]
async fn the_binary_takes_the_etcd_flags_and_the_password_from_the_environment() {
    let pki = certs::Pki::new("jsonkv test CA");
    let ca = pki.ca_path().display().to_string();
    let client = pki.client("jsonkv");
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let https: &[&str] = &["--etcd", "https://127.0.0.1:1"];

    let err = binary_error(
        &[https, &["--etcd-ca", &ca, "--etcd-cert", &cert]].concat(),
        &[],
    );
    assert!(err.contains("--etcd-cert needs --etcd-key"), "{err}");
    let err = binary_error(
        &[https, &["--etcd-ca", &ca, "--etcd-key", &key]].concat(),
        &[],
    );
    assert!(err.contains("--etcd-key needs --etcd-cert"), "{err}");
    let err = binary_error(
        &[https, &["--etcd-cert", &cert, "--etcd-key", &key]].concat(),
        &[],
    );
    assert!(err.contains("--etcd-cert needs --etcd-ca"), "{err}");
    let err = binary_error(
        &[https, &["--etcd-ca", &ca, "--etcd-user", "root"]].concat(),
        &[],
    );
    assert!(err.contains("JSONKV_ETCD_PASSWORD"), "{err}");
    let err = binary_error(
        &[https, &["--etcd-ca", &ca, "--etcd-user", "root"]].concat(),
        &[("JSONKV_ETCD_PASSWORD", "")],
    );
    assert!(err.contains("JSONKV_ETCD_PASSWORD"), "{err}");

    // And with everything right, it serves.
    let mut cluster = EtcdCluster::start_tls(1).await;
    cluster.enable_auth("from the environment").await;
    let files = cluster.tls_files().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let path = |p: &PathBuf| p.display().to_string();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_jsonkv-server"))
            .args([
                "--listen",
                &listen.to_string(),
                "--etcd",
                &cluster.endpoints_arg(),
            ])
            .args(["--etcd-ca", &path(&files.ca)])
            .args(["--etcd-cert", &path(&files.client_cert)])
            .args(["--etcd-key", &path(&files.client_key)])
            .args(["--etcd-user", "root", "--etcd-prefix", &unique_prefix()])
            .env("JSONKV_ETCD_PASSWORD", "from the environment")
            // Its log; its stderr, where a start-up error would go, stays.
            .stdout(Stdio::null())
            .spawn()
            .expect("jsonkv-server runs"),
    );
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match pb::json_kv_client::JsonKvClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(err) => {
                assert!(
                    server.0.try_wait().unwrap().is_none(),
                    "jsonkv-server exited"
                );
                assert!(
                    Instant::now() < deadline,
                    "jsonkv-server never served: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    put(&mut client, "k", r#""v""#).await;
    assert_eq!(get_linearizable(&mut client, "k", true).await, r#""v""#);
}

/// A server process, killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The etcd settings of a config made by `config_on`.
fn etcd_of(config: &mut Config) -> &mut EtcdConfig {
    match &mut config.backend {
        BackendConfig::Etcd(etcd) => etcd,
        other => panic!("not on etcd: {other:?}"),
    }
}
