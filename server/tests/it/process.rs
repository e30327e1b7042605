//! The server binary as a process: where its logs go, and the signals it takes.
//!
//! Guarantees proved here (docs/operations.md and docs/security.md's logs section):
//! - Logs go to stderr, without colour codes when stderr is not a terminal:
//!   `logs_go_to_stderr_as_plain_text_when_it_is_a_file`.
//! - SIGHUP does not end the server; it is logged and the server serves on:
//!   `sighup_is_logged_and_the_server_serves_on`; it reloads the tokens file:
//!   `sighup_reloads_the_tokens_file`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonkv::pb::json_kv_client::JsonKvClient;
use tonic::transport::Channel;

use crate::common::{put, within};

/// A running `jsonkv-server --in-memory`, its stdout and stderr written to files; killed when
/// dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn start() -> Process {
        Process::start_with(&[])
    }

    /// A server with `args` besides `--in-memory --listen ADDR`.
    pub fn start_with(args: &[&str]) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_jsonkv-server"))
            .args(["--in-memory", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(File::create(&stdout).unwrap()))
            .stderr(Stdio::from(File::create(&stderr).unwrap()))
            .spawn()
            .expect("jsonkv-server runs");
        Process {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            _dir: dir,
            stdout,
            stderr,
        }
    }

    /// A client, once the server answers.
    pub async fn client(&self) -> JsonKvClient<Channel> {
        let url = format!("http://{}", self.addr);
        within("the server to come up", async {
            loop {
                match JsonKvClient::connect(url.clone()).await {
                    Ok(client) => break client,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
    }

    /// Waits until stderr holds `text`; returns all of it.
    pub async fn logged(&self, text: &str) -> String {
        within(&format!("{text:?} in the log"), async {
            loop {
                let log = std::fs::read_to_string(&self.stderr).unwrap();
                if log.contains(text) {
                    break log;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

#[tokio::test]
async fn logs_go_to_stderr_as_plain_text_when_it_is_a_file() {
    let server = Process::start();
    let mut client = server.client().await;
    put(&mut client, "k", "1").await;
    let log = server.logged("listening").await;
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    assert_eq!(std::fs::read_to_string(&server.stdout).unwrap(), "");
}

#[tokio::test]
async fn sighup_is_logged_and_the_server_serves_on() {
    let mut server = Process::start();
    let mut client = server.client().await;
    server.logged("listening").await;
    for _ in 0..2 {
        let status = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    server.logged("received SIGHUP").await;
    put(&mut client, "k", "1").await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server ended on SIGHUP"
    );
}

#[tokio::test]
async fn sighup_reloads_the_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "write w-4e5f6a\nread r-7b8c9d\n").unwrap();
    let server = Process::start_with(&["--auth-tokens", tokens.to_str().unwrap()]);
    server.logged("listening").await;
    server.client().await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = JsonKvClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", "Bearer r-7b8c9d".parse().unwrap());
        Ok(request)
    });
    let get = || jsonkv::pb::GetRequest {
        key: "k".into(),
        ..Default::default()
    };
    let status = client.get(get()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "the reader may read");

    std::fs::write(&tokens, "write w-4e5f6a\n").unwrap();
    let sent = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    server.logged("the new tokens are in force").await;
    let status = client.get(get()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
