//! The `jsonkv` binary, run as a child process against a real in-process server: its output
//! lines, exit codes and one-line errors.
//!
//! Guarantees proved here: the CLI's `--timeout` ends a call that gets no answer, with one line
//! and exit 1: `timeout_ends_a_call_that_gets_no_answer` (the library's timeout: `failover.rs`);
//! `jsonkv status` prints the server's status as one JSON object, the library's `status()` the
//! same: `status_prints_one_json_object`; `jsonkv backup FILE` writes the whole backup there
//! and nothing beside it, and prints what it wrote: `backup_writes_the_file_and_prints_its_revision`;
//! the lease commands, `put --ttl`, `lock` (holders never overlap, the exit status passes through,
//! a holder killed outright frees the lock within its TTL) and `elect` (one leader at a time,
//! `--listen` follows it): the tests named after them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jsonkv_client::Client;
use serde_json::Value;

use crate::common::{self, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_jsonkv");

/// Runs `jsonkv --addr ADDR ARGS...`, feeding `stdin` if given.
fn jsonkv(addr: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run(command(addr, args), stdin)
}

/// `jsonkv --addr ADDR ARGS...`, with no address from the environment.
fn command(addr: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("JSONKV_ADDR");
    command
}

/// Runs `command` to its end, feeding `stdin` if given; a run that has not ended within
/// [`PATIENCE`] is killed and fails the test rather than hanging it.
fn run(mut command: Command, stdin: Option<&str>) -> Output {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jsonkv");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
        // Dropping the pipe closes it, so the child sees end of input.
    }
    let pid = child.id();
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match output.recv_timeout(PATIENCE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not end within {PATIENCE:?}");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts a successful run and returns its stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts stderr is exactly one line, without a panic or a Debug dump.
fn assert_one_line_error(output: &Output) {
    let err = stderr(output);
    assert!(!output.status.success());
    assert!(err.ends_with('\n') && err.lines().count() == 1, "{err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("Status {"),
        "{err:?}"
    );
}

// The server runs on the runtime's worker threads while the test thread blocks on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_del_list_print_json_lines() {
    let server = common::start().await;
    let addr = server.url();

    // Printed exactly as written: key order and every digit.
    let value = r#"{"name":"ünï","f":1.50,"n":123456789012345678901234567890,"list":[1,null]}"#;
    assert_eq!(
        ok(jsonkv(&addr, &["put", "cfg/a", value], None)),
        "{\"revision\":1}\n"
    );
    assert_eq!(
        ok(jsonkv(&addr, &["get", "cfg/a"], None)),
        format!("{value}\n")
    );
    // Pretty input is printed back compact.
    ok(jsonkv(&addr, &["put", "cfg/b", "[ 1,\n 2 ]"], None));
    assert_eq!(ok(jsonkv(&addr, &["get", "cfg/b"], None)), "[1,2]\n");
    ok(jsonkv(&addr, &["put", "other", "true"], None));
    ok(jsonkv(&addr, &["put", "cfg/b", "\"s\""], None));

    let lines = ok(jsonkv(&addr, &["list", "cfg/"], None));
    assert_eq!(
        lines,
        format!(
            "{{\"key\":\"cfg/a\",\"value\":{value},\"create_revision\":1,\"mod_revision\":1,\"version\":1}}\n\
             {{\"key\":\"cfg/b\",\"value\":\"s\",\"create_revision\":2,\"mod_revision\":4,\"version\":2}}\n"
        )
    );
    // Without a prefix: every key.
    assert_eq!(ok(jsonkv(&addr, &["list"], None)).lines().count(), 3);

    assert_eq!(
        ok(jsonkv(&addr, &["del", "cfg/a"], None)),
        "{\"revision\":5}\n"
    );
    let gone = jsonkv(&addr, &["get", "cfg/a"], None);
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(stderr(&gone), "key not found: cfg/a\n");
    assert!(gone.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_keys_exit_1_with_the_exact_message() {
    let server = common::start().await;
    let get = jsonkv(&server.url(), &["get", "no/such"], None);
    assert_eq!(get.status.code(), Some(1));
    assert_eq!(stderr(&get), "key not found: no/such\n");
    assert!(get.stdout.is_empty());

    let del = jsonkv(&server.url(), &["del", "no/such"], None);
    assert_eq!(del.status.code(), Some(1));
    assert_eq!(stderr(&del), "key not found: no/such\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reads_the_value_from_stdin() {
    let server = common::start().await;
    let addr = server.url();
    let text = "{\"big\": 340282366920938463463374607431768211456, \"s\": \"line\\nbreak\"}\n";
    assert_eq!(
        ok(jsonkv(&addr, &["put", "k", "-"], Some(text))),
        "{\"revision\":1}\n"
    );
    assert_eq!(
        ok(jsonkv(&addr, &["get", "k"], None)),
        "{\"big\":340282366920938463463374607431768211456,\"s\":\"line\\nbreak\"}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_rejected_locally() {
    let server = common::start().await;
    for bad in ["{", "{'a':1}", "", "1 2", "nul"] {
        let out = jsonkv(&server.url(), &["put", "k", bad], None);
        assert_one_line_error(&out);
        assert!(
            stderr(&out).starts_with("error: malformed JSON"),
            "{}",
            stderr(&out)
        );
    }
    let out = jsonkv(&server.url(), &["put", "k", "-"], Some("[1,"));
    assert_one_line_error(&out);
    // Nothing reached the server.
    let client = Client::connect(server.url()).await.unwrap();
    assert!(client.get::<Value>("k").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_put_and_del() {
    let server = common::start().await;
    let addr = server.url();
    ok(jsonkv(&addr, &["put", "k", "1", "--if-absent"], None));
    let again = jsonkv(&addr, &["put", "k", "2", "--if-absent"], None);
    assert_one_line_error(&again);
    assert_eq!(again.status.code(), Some(3));
    assert!(stderr(&again).contains("current mod revision is 1"));

    assert_eq!(
        ok(jsonkv(
            &addr,
            &["put", "k", "2", "--if-mod-revision", "1"],
            None
        )),
        "{\"revision\":2}\n"
    );
    let stale = jsonkv(&addr, &["del", "k", "--if-mod-revision", "1"], None);
    assert_eq!(stale.status.code(), Some(3));
    assert_eq!(
        ok(jsonkv(&addr, &["del", "k", "--if-mod-revision", "2"], None)),
        "{\"revision\":3}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_one_line() {
    let server = common::start().await;
    let out = jsonkv(&server.url(), &["put", "", "1"], None);
    assert_one_line_error(&out);
    assert!(
        stderr(&out).starts_with("error: invalid argument: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn server_down_is_one_line_and_no_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for args in [
        &["get", "k"][..],
        &["put", "k", "1"],
        &["list"],
        &["watch", "k"],
    ] {
        let out = jsonkv(&format!("127.0.0.1:{port}"), args, None);
        assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!("error: cannot connect to http://127.0.0.1:{port}: connection refused\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_addresses_and_linearizable_reads() {
    let server = common::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The first server is down: the CLI goes on to the second.
    let addrs = format!("{dead},{}", server.url());
    assert_eq!(
        ok(jsonkv(&addrs, &["put", "k", "[1]"], None)),
        "{\"revision\":1}\n"
    );
    assert_eq!(
        ok(jsonkv(&addrs, &["get", "--linearizable", "k"], None)),
        "[1]\n"
    );
    assert_eq!(
        ok(jsonkv(&addrs, &["list", "--linearizable"], None)),
        "{\"key\":\"k\",\"value\":[1],\"create_revision\":1,\"mod_revision\":1,\"version\":1}\n"
    );
    for bad in ["a,,b", ",", ""] {
        let out = jsonkv(bad, &["get", "k"], None);
        assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with("error: bad server address list"),
            "{}",
            stderr(&out)
        );
    }
}

/// `--timeout`: a server that holds the call (its connection frozen) costs the CLI that long,
/// then one line and exit 1; the same call with a timeout on a server that answers succeeds, and
/// a timeout that is no number of seconds is a usage error. (A watch whose opening times out
/// reconnects, as it does from a server that is down; the library's tests cover that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_a_call_that_gets_no_answer() {
    let server = common::start().await;
    let proxy = common::proxy::Proxy::start(server.addr()).await;
    assert_eq!(
        ok(jsonkv(
            &proxy.url(),
            &["--timeout", "5", "put", "k", "1"],
            None
        )),
        "{\"revision\":1}\n"
    );
    proxy.freeze();
    for args in [
        &["get", "k"][..],
        &["put", "k", "2"],
        &["list"],
        &["del", "k"],
    ] {
        let mut with_timeout = vec!["--timeout", "0.3"];
        with_timeout.extend_from_slice(args);
        let out = jsonkv(&proxy.url(), &with_timeout, None);
        assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "error: deadline exceeded: no answer within 300 ms (the client's timeout)\n",
            "{args:?}"
        );
    }
    // The same limit from the environment, as README says.
    let mut get = command(&proxy.url(), &["get", "k"]);
    get.env("JSONKV_TIMEOUT", "0.3");
    let out = run(get, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: deadline exceeded: no answer within 300 ms (the client's timeout)\n"
    );
    for bad in ["0", "-1", "soon"] {
        let out = jsonkv(&server.url(), &["--timeout", bad, "get", "k"], None);
        assert_eq!(out.status.code(), Some(2), "--timeout {bad}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).args(["get"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["watch", "k", "--prefix", "p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_comes_from_the_environment_and_may_be_bare() {
    let server = common::start().await;
    let out = Command::new(BIN)
        .args(["put", "k", "7"])
        .env("JSONKV_ADDR", server.addr().to_string())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "{\"revision\":1}\n", "{}", stderr(&out));
}

/// A running `jsonkv watch`, its stdout lines arriving on a channel.
struct WatchChild {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl WatchChild {
    fn spawn(addr: &str, args: &[&str]) -> WatchChild {
        let mut child = Command::new(BIN)
            .arg("--addr")
            .arg(addr)
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        WatchChild { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("no line from jsonkv watch in time")
    }
}

impl Drop for WatchChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_the_snapshot_then_each_change() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    client
        .insert("w", &serde_json::json!({"v": 1}))
        .await
        .unwrap(); // 1

    let watch = WatchChild::spawn(&server.url(), &["w"]);
    assert_eq!(
        watch.next_line(),
        r#"{"type":"snapshot","revision":1,"kvs":[{"key":"w","value":{"v":1},"mod_revision":1}]}"#
    );
    let big: Value = serde_json::from_str("[123456789012345678901234567890]").unwrap();
    client.insert("w", &big).await.unwrap(); // 2
    client.delete("w").await.unwrap(); // 3
    assert_eq!(
        watch.next_line(),
        r#"{"type":"put","key":"w","value":[123456789012345678901234567890],"revision":2}"#
    );
    assert_eq!(
        watch.next_line(),
        r#"{"type":"delete","key":"w","revision":3}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prefix_and_start_revision() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();

    let watch = WatchChild::spawn(&server.url(), &["--prefix", "p/"]);
    assert_eq!(
        watch.next_line(),
        r#"{"type":"snapshot","revision":0,"kvs":[]}"#
    );
    client.insert("q", &0).await.unwrap(); // 1: outside
    client.insert("p/x", &"a").await.unwrap(); // 2
    assert_eq!(
        watch.next_line(),
        r#"{"type":"put","key":"p/x","value":"a","revision":2}"#
    );
    drop(watch);

    // Replay from revision 2: no snapshot line, the put first.
    let replay = WatchChild::spawn(&server.url(), &["--prefix", "p/", "--start-revision", "2"]);
    assert_eq!(
        replay.next_line(),
        r#"{"type":"put","key":"p/x","value":"a","revision":2}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_one_json_object() {
    let server = common::start().await;
    let addr = server.url();
    ok(jsonkv(&addr, &["put", "a", "[1,2]"], None));
    ok(jsonkv(&addr, &["put", "b", "true"], None));
    let printed = ok(jsonkv(&addr, &["status"], None));
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let status: Value = serde_json::from_str(&printed).unwrap();
    let fields: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "revision",
            "keys",
            "store_id",
            "backend",
            "version",
            "data_bytes",
            "disk_bytes",
            "history_oldest_revision",
            "history_events",
            "watchers",
            "uptime_seconds",
            "leases"
        ]
    );
    assert_eq!(status["revision"], 2);
    assert_eq!(status["keys"], 2);
    assert_eq!(status["data_bytes"], 1 + 5 + 1 + 4);
    assert_eq!(status["backend"], "memory");
    assert_eq!(status["store_id"], server.store().id().as_str());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    let client = Client::connect(addr.as_str()).await.unwrap();
    let library = client.status().await.unwrap();
    assert_eq!(serde_json::to_value(&library).unwrap()["keys"], 2);
    assert_eq!(library.store_id, server.store().id().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_writes_the_file_and_prints_its_revision() {
    let server = common::start().await;
    let addr = server.url();
    ok(jsonkv(&addr, &["put", "a", "[1,2]"], None));
    ok(jsonkv(&addr, &["put", "b", "true"], None));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    let printed = ok(jsonkv(&addr, &["backup", file.to_str().unwrap()], None));
    let info: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(info["revision"], 2);
    assert_eq!(info["keys"], 2);
    let written = std::fs::metadata(&file).unwrap().len();
    assert_eq!(info["bytes"], written);
    // Only the backup: its temporary file is gone.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("store.backup")]);
    // What the server restores from it.
    let data = dir.path().join("data");
    let (revision, keys) = jsonkv_server::storage::disk::restore(&data, &file).unwrap();
    assert_eq!((revision, keys), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_grant_attach_inspect_and_revoke() {
    let server = common::start().await;
    let addr = server.url();
    let grant: Value =
        serde_json::from_str(&ok(jsonkv(&addr, &["lease", "grant", "60"], None))).unwrap();
    assert_eq!(grant["ttl_seconds"], 60);
    let id = grant["id"].as_i64().unwrap().to_string();
    assert_eq!(
        ok(jsonkv(&addr, &["put", "--lease", &id, "s/a", "1"], None)),
        format!("{{\"revision\":2,\"lease\":{id}}}\n")
    );
    ok(jsonkv(&addr, &["put", "--lease", &id, "s/b", "2"], None));
    let ttl: Value =
        serde_json::from_str(&ok(jsonkv(&addr, &["lease", "ttl", &id, "--keys"], None))).unwrap();
    assert_eq!(ttl["granted_ttl_seconds"], 60);
    assert_eq!(ttl["keys"], serde_json::json!(["s/a", "s/b"]));
    assert_eq!(
        ok(jsonkv(&addr, &["lease", "list"], None)),
        format!("{{\"id\":{id}}}\n")
    );
    // A watch from before the revoke prints both deletes, naming the lease and the cause.
    let mut watch = command(&addr, &["watch", "--prefix", "s/", "--start-revision", "4"]);
    let mut watch = watch
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(
        ok(jsonkv(&addr, &["lease", "revoke", &id], None)),
        "{\"revision\":4}\n"
    );
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    for key in ["s/a", "s/b"] {
        assert_eq!(
            lines.next().unwrap().unwrap(),
            format!(
                "{{\"type\":\"delete\",\"key\":\"{key}\",\"revision\":4,\"lease\":{id},\"cause\":\"revoked\"}}"
            )
        );
    }
    watch.kill().unwrap();
    let _ = watch.wait();

    // A lease that is gone: one line and exit 1, for each command that names one.
    for args in [
        vec!["lease", "revoke", id.as_str()],
        vec!["lease", "ttl", id.as_str()],
        vec!["lease", "keepalive", id.as_str()],
        vec!["put", "--lease", id.as_str(), "s/c", "3"],
    ] {
        let out = jsonkv(&addr, &args, None);
        assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(&format!("lease {id} not found")),
            "{}",
            stderr(&out)
        );
    }
    let bad = jsonkv(&addr, &["lease", "grant", "0"], None);
    assert_one_line_error(&bad);
    assert!(stderr(&bad).contains("ttl_seconds"), "{}", stderr(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_a_ttl_expires_and_the_watch_says_so() {
    let server = common::start().await;
    let addr = server.url();
    let mut watch = command(&addr, &["watch", "gone"]);
    let mut watch = watch
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "{\"type\":\"snapshot\",\"revision\":0,\"kvs\":[]}"
    );
    let put: Value = serde_json::from_str(&ok(jsonkv(
        &addr,
        &["put", "--ttl", "1", "gone", "{}"],
        None,
    )))
    .unwrap();
    let lease = put["lease"].as_i64().expect("the granted lease is printed");
    assert!(lines
        .next()
        .unwrap()
        .unwrap()
        .starts_with("{\"type\":\"put\""));
    // Nobody keeps the lease alive: the key expires.
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("{{\"type\":\"delete\",\"key\":\"gone\",\"revision\":3,\"lease\":{lease},\"cause\":\"expired\"}}")
    );
    watch.kill().unwrap();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keepalive_holds_a_lease_until_interrupted() {
    let server = common::start().await;
    let addr = server.url();
    let grant: Value =
        serde_json::from_str(&ok(jsonkv(&addr, &["lease", "grant", "2"], None))).unwrap();
    let id = grant["id"].as_i64().unwrap().to_string();
    ok(jsonkv(&addr, &["put", "--lease", &id, "held", "1"], None));
    let mut keeper = command(&addr, &["lease", "keepalive", &id]);
    let mut keeper = keeper
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(keeper.stdout.take().unwrap()).lines();
    // Six renewals at a third of the TTL each: twice the TTL, and the key is still there.
    for _ in 0..6 {
        assert_eq!(
            lines.next().unwrap().unwrap(),
            format!("{{\"id\":{id},\"ttl_seconds\":2}}")
        );
    }
    let client = Client::connect(&addr).await.unwrap();
    assert!(client.get::<Value>("held").await.unwrap().is_some());
    keeper.kill().unwrap();
    let _ = keeper.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_commands_one_at_a_time_and_exits_with_their_status() {
    let server = common::start().await;
    let addr = server.url();
    let dir = tempfile::tempdir().unwrap();
    let held = dir.path().join("held");
    // Each holder makes a directory that must not exist, holds it a moment, and removes it: two
    // holders at once make the second mkdir fail (exit 99).
    let script = format!("mkdir {0} || exit 99; sleep 0.2; rmdir {0}", held.display());
    let holders: Vec<_> = (0..4)
        .map(|_| {
            let mut child = command(&addr, &["lock", "job", "--", "sh", "-c", &script]);
            child.stdout(Stdio::null()).stderr(Stdio::piped());
            child.spawn().unwrap()
        })
        .collect();
    for holder in holders {
        let out = holder.wait_with_output().unwrap();
        assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    }
    let out = jsonkv(&addr, &["lock", "job", "--", "sh", "-c", "exit 7"], None);
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // Released: nothing left in line.
    let client = Client::connect(&addr).await.unwrap();
    assert!(client.list::<Value>("job/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_outright_releases_the_lock_within_its_ttl() {
    let server = common::start().await;
    let addr = server.url();
    // The command prints its pid (exec keeps it) once the lock is held, then sleeps.
    let mut holder = command(
        &addr,
        &[
            "lock",
            "--ttl",
            "1",
            "job",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 60",
        ],
    );
    let mut holder = holder
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let sleeper = lines.next().unwrap().unwrap();
    holder.kill().unwrap(); // SIGKILL: no release, no revoke.
    let _ = holder.wait();
    let _ = Command::new("kill").args(["-KILL", &sleeper]).status();
    // The next holder gets the lock once the dead one's lease expires.
    let out = jsonkv(&addr, &["lock", "job", "--", "echo", "second"], None);
    assert_eq!(ok(out), "second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_waiter_stopped_by_a_signal_exits_at_once() {
    let server = common::start().await;
    let addr = server.url();
    // The holder prints when it has the lock, then holds it until killed.
    let mut holder = command(
        &addr,
        &["lock", "w", "--", "sh", "-c", "echo held; exec sleep 60"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "held");
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let mut waiter = command(&addr, &["lock", "w", "--", "echo", "never"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Until its key is there, the waiter may not have reached its wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ok(jsonkv(&addr, &["list", "w/"], None)).lines().count() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never queued"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = Command::new("kill")
            .args([signal, &waiter.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = waiter.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = waiter.kill();
                panic!("{signal}: the waiter went on waiting");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(code), "{signal}: {status:?}");
        let mut out = String::new();
        waiter
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "", "the command never ran");
    }
    holder.kill().unwrap();
    let _ = holder.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leads_one_at_a_time_and_listen_follows_the_leader() {
    let server = common::start().await;
    let addr = server.url();
    let spawn = |args: &[&str]| {
        command(&addr, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut listener = spawn(&["elect", "--listen", "e"]);
    let mut heard = BufReader::new(listener.stdout.take().unwrap()).lines();
    let mut first = spawn(&["elect", "e", "\"a\""]);
    let mut first_says = BufReader::new(first.stdout.take().unwrap()).lines();
    let led = first_says.next().unwrap().unwrap();
    assert!(led.ends_with(",\"value\":\"a\"}"), "{led}");
    assert_eq!(heard.next().unwrap().unwrap(), led);
    let mut second = spawn(&["elect", "e", "\"b\""]);
    // SIGTERM: the first resigns, and the second leads.
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(first.wait().unwrap().success(), "a resign is a clean exit");
    let mut second_says = BufReader::new(second.stdout.take().unwrap()).lines();
    let next = second_says.next().unwrap().unwrap();
    assert!(next.ends_with(",\"value\":\"b\"}"), "{next}");
    assert_eq!(heard.next().unwrap().unwrap(), next);
    for child in [&mut second, &mut listener] {
        child.kill().unwrap();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_merges_and_prints_the_revision_and_document() {
    let server = common::start().await;
    let addr = server.url();
    ok(jsonkv(
        &addr,
        &[
            "put",
            "p",
            r#"{"big":123456789012345678901234567890,"gone":1,"f":1.50}"#,
        ],
        None,
    ));
    assert_eq!(
        ok(jsonkv(&addr, &["patch", "p", r#"{"gone":null,"n":{"x":2}}"#], None)),
        "{\"revision\":2,\"value\":{\"big\":123456789012345678901234567890,\"f\":1.50,\"n\":{\"x\":2}}}\n"
    );
    assert_eq!(
        ok(jsonkv(&addr, &["get", "p"], None)),
        "{\"big\":123456789012345678901234567890,\"f\":1.50,\"n\":{\"x\":2}}\n"
    );
    // A merge patch creates an absent key; from stdin, like `put -`.
    assert_eq!(
        ok(jsonkv(
            &addr,
            &["patch", "new", "-"],
            Some("{\"a\": [1,\n 2]}\n")
        )),
        "{\"revision\":3,\"value\":{\"a\":[1,2]}}\n"
    );
    // Conditions as `put` takes them.
    let stale = jsonkv(&addr, &["patch", "p", "{}", "--if-mod-revision", "1"], None);
    assert_one_line_error(&stale);
    assert_eq!(stale.status.code(), Some(3));
    let malformed = jsonkv(&addr, &["patch", "p", "{"], None);
    assert_one_line_error(&malformed);
    assert!(stderr(&malformed).starts_with("error: malformed JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_json_patch_applies_all_or_nothing() {
    let server = common::start().await;
    let addr = server.url();
    ok(jsonkv(
        &addr,
        &["put", "j", r#"{"state":"idle","n":1}"#],
        None,
    ));
    let ops = r#"[{"op":"test","path":"/state","value":"idle"},{"op":"replace","path":"/state","value":"busy"}]"#;
    assert_eq!(
        ok(jsonkv(&addr, &["patch", "--json-patch", "j", ops], None)),
        "{\"revision\":2,\"value\":{\"state\":\"busy\",\"n\":1}}\n"
    );
    // The test fails now: exit 3, one line naming the operation and path, nothing changed.
    let failed = jsonkv(&addr, &["patch", "--json-patch", "j", "-"], Some(ops));
    assert_one_line_error(&failed);
    assert_eq!(failed.status.code(), Some(3));
    assert_eq!(
        stderr(&failed),
        "error: patch does not apply to key j: operation 0 at path \"/state\": test failed\n"
    );
    assert!(failed.stdout.is_empty());
    let client = Client::connect(&addr).await.unwrap();
    let entry = client.get::<Value>("j").await.unwrap().unwrap();
    assert_eq!(entry.mod_revision, 2);
    // A path that names nothing is an error, not a failed condition.
    let missing = jsonkv(
        &addr,
        &[
            "patch",
            "--json-patch",
            "j",
            r#"[{"op":"remove","path":"/x"}]"#,
        ],
        None,
    );
    assert_one_line_error(&missing);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("path not found"),
        "{}",
        stderr(&missing)
    );
    // Not a JSON Patch at all.
    let bad = jsonkv(
        &addr,
        &["patch", "--json-patch", "j", r#"{"op":"add"}"#],
        None,
    );
    assert_one_line_error(&bad);
    assert!(
        stderr(&bad).starts_with("error: invalid argument"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_reads_proto3_json_and_prints_the_response_the_same_way() {
    let server = common::start().await;
    let addr = server.url();
    for n in 1..=5 {
        ok(jsonkv(&addr, &["put", "a", &n.to_string()], None));
    }
    // a is at mod revision 5: int64 as a string, original field names, enums by name, oneofs
    // by field name.
    let request = r#"{
        "compare": [
            {"key": "a", "mod_revision": "5"},
            {"key": "a", "result": "COMPARE_RESULT_GREATER", "version": "4"}
        ],
        "success": [
            {"insert": {"key": "b", "value_json": "{\"big\":123456789012345678901234567890}"}},
            {"patch": {"key": "a", "json_patch": "[{\"op\":\"replace\",\"path\":\"\",\"value\":6}]"}},
            {"get": {"key": "b", "value_encoding": "VALUE_ENCODING_JSON"}}
        ],
        "failure": [{"get": {"key": "a"}}]
    }"#;
    let out: Value = serde_json::from_str(&ok(jsonkv(&addr, &["txn"], Some(request)))).unwrap();
    assert_eq!(out["succeeded"], true);
    assert_eq!(out["revision"], "6", "int64 prints as a string");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results[0]["insert"]["revision"], "6");
    assert_eq!(results[1]["patch"]["kv"]["mod_revision"], "6");
    assert_eq!(
        results[2]["get"]["kv"]["value_json"],
        "{\"big\":123456789012345678901234567890}"
    );
    let client = Client::connect(&addr).await.unwrap();
    assert_eq!(client.get::<i64>("a").await.unwrap().unwrap().value, 6);

    // The same again, in camelCase with an int64 as a number: a moved, so `failure` runs, and
    // its answer says so (a false `succeeded` is printed, not left out).
    let request = r#"{"compare":[{"key":"a","modRevision":5}],
                      "success":[{"delete":{"key":"a"}}],
                      "failure":[{"get":{"key":"a","valueEncoding":"VALUE_ENCODING_JSON"}}]}"#;
    let out: Value = serde_json::from_str(&ok(jsonkv(&addr, &["txn"], Some(request)))).unwrap();
    assert_eq!(out["succeeded"], false);
    assert_eq!(out["results"][0]["get"]["kv"]["value_json"], "6");
    assert!(client.get::<i64>("a").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_refuses_bad_requests_in_one_line() {
    let server = common::start().await;
    let addr = server.url();
    for (request, says) in [
        ("{", "error: malformed TxnRequest"),
        ("", "error: malformed TxnRequest"),
        // A misspelt field would drop a condition: refused, not ignored.
        (
            r#"{"compare":[{"key":"a","mod_revison":"1"}]}"#,
            "error: malformed TxnRequest",
        ),
        (
            r#"{"compare":[{"key":"a","result":"BIGGER","version":"1"}]}"#,
            "error: malformed TxnRequest",
        ),
        (
            r#"{"compare":[{"key":"a","mod_revision":"five"}]}"#,
            "error: malformed TxnRequest",
        ),
        // Well-formed, but the server refuses it: one key written twice.
        (
            r#"{"success":[{"insert":{"key":"a","value_json":"1"}},{"delete":{"key":"a"}}]}"#,
            "error: invalid argument",
        ),
    ] {
        let out = jsonkv(&addr, &["txn"], Some(request));
        assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1), "{request}");
        assert!(
            stderr(&out).starts_with(says),
            "{request}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    let client = Client::connect(&addr).await.unwrap();
    assert_eq!(
        client.status().await.unwrap().revision,
        0,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prev_kv_prints_what_each_change_replaced() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let watch = WatchChild::spawn(&server.url(), &["w", "--prev-kv"]);
    assert_eq!(
        watch.next_line(),
        r#"{"type":"snapshot","revision":0,"kvs":[]}"#
    );
    client.insert("w", &Value::Null).await.unwrap(); // 1
    client
        .merge::<Value>("w", &serde_json::json!({"v": 2}))
        .await
        .unwrap(); // 2
    client.delete("w").await.unwrap(); // 3
    assert_eq!(
        watch.next_line(),
        r#"{"type":"put","key":"w","value":null,"revision":1,"prev":null}"#
    );
    // A previous value of null is a value: an object says so.
    assert_eq!(
        watch.next_line(),
        r#"{"type":"put","key":"w","value":{"v":2},"revision":2,"prev":{"value":null,"mod_revision":1}}"#
    );
    assert_eq!(
        watch.next_line(),
        r#"{"type":"delete","key":"w","revision":3,"prev":{"value":{"v":2},"mod_revision":2}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_take_a_live_query() {
    let server = common::start().await;
    let addr = server.url();
    let client = Client::connect(server.url()).await.unwrap();
    let doc = |status: &str, total: u64| serde_json::json!({"status": status, "total": total, "who": "x"});
    client.insert("o/1", &doc("open", 150)).await.unwrap(); // 1
    client.insert("o/2", &doc("open", 50)).await.unwrap(); // 2
    client.insert("o/3", &doc("closed", 500)).await.unwrap(); // 3

    let filter = r#"value.status == "open" && value.total > 100"#;
    let listed = ok(jsonkv(
        &addr,
        &[
            "list",
            "o/",
            "--where",
            filter,
            "--fields",
            "/total,/status",
        ],
        None,
    ));
    assert_eq!(
        listed,
        "{\"key\":\"o/1\",\"value\":{\"status\":\"open\",\"total\":150},\"create_revision\":1,\"mod_revision\":1,\"version\":1}\n"
    );

    let watch = WatchChild::spawn(
        &addr,
        &[
            "--prefix", "o/", "--where", filter, "--fields", "/total", "--diff",
        ],
    );
    assert_eq!(
        watch.next_line(),
        r#"{"type":"snapshot","revision":3,"kvs":[{"key":"o/1","value":{"total":150},"mod_revision":1}]}"#
    );
    client.insert("o/2", &doc("open", 101)).await.unwrap(); // 4: enters
    client.insert("o/3", &doc("closed", 501)).await.unwrap(); // 5: outside the view
    client.insert("o/1", &doc("open", 151)).await.unwrap(); // 6: updated
    client.insert("o/1", &doc("closed", 151)).await.unwrap(); // 7: leaves
    assert_eq!(
        watch.next_line(),
        r#"{"type":"put","key":"o/2","value":{"total":101},"revision":4,"view_change":"entered","merge_patch":{"total":101}}"#
    );
    assert_eq!(
        watch.next_line(),
        r#"{"type":"put","key":"o/1","value":{"total":151},"revision":6,"view_change":"updated","merge_patch":{"total":151}}"#
    );
    assert_eq!(
        watch.next_line(),
        r#"{"type":"delete","key":"o/1","revision":7,"view_change":"left"}"#
    );

    // A bad expression: one line naming the place, and a non-zero exit.
    for args in [
        &["list", "o/", "--where", "value.total >"][..],
        &["watch", "--prefix", "o/", "--where", "value.total >"][..],
    ] {
        let out = jsonkv(&addr, args, None);
        assert_one_line_error(&out);
        assert!(stderr(&out).contains("1:14"), "{}", stderr(&out));
    }
    let out = jsonkv(&addr, &["list", "o/", "--fields", "total"], None);
    assert_one_line_error(&out);
    assert!(stderr(&out).contains("fields"), "{}", stderr(&out));
}
