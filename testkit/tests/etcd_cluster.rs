//! The kit against the real etcd: a 3-member cluster serves writes through a killed leader and
//! takes it back; compaction; the shared etcd with prefixes; TLS with client certificates, and
//! etcd's authentication; and no etcd outlives its cluster, nor its test process when that dies
//! without running destructors.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jsonkv_testkit::etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchOptions,
};
use jsonkv_testkit::{shared_etcd, unique_prefix, EtcdCluster};

/// Bounds every wait of these tests; only a broken etcd or kit ever reaches it.
const WAIT: Duration = Duration::from_secs(30);
/// Bounds one etcd request.
const REQUEST: Duration = Duration::from_secs(2);

/// Puts until one succeeds. Right after a member is killed, requests fail or hang until the
/// survivors notice (and, if it was the leader, elect another).
async fn put_eventually(client: &mut Client, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(REQUEST, client.put(key, value, None)).await {
            Ok(Ok(response)) => return response.header().expect("a header").revision(),
            outcome => assert!(
                Instant::now() < deadline,
                "put {key} kept failing for {WAIT:?}; the last attempt: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The etcd processes whose data directory is under `dir` (not their `sh` watchdogs).
fn etcd_processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc is readable") {
        let entry = entry.expect("a /proc entry");
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may end while we look: an unreadable cmdline is simply not a match.
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
        if args.next().as_deref() == Some("etcd") && args.any(|arg| arg.contains(&dir)) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn three_members_serve_writes_through_a_killed_leader_and_take_it_back() {
    let mut cluster = EtcdCluster::start(3).await;
    assert_eq!(cluster.endpoints().len(), 3);
    assert_eq!(cluster.endpoints_arg(), cluster.endpoints().join(","));
    let mut client = cluster.client().await;
    put_eventually(&mut client, "key", "before").await;
    let members = tokio::time::timeout(REQUEST, client.member_list())
        .await
        .expect("member list in time")
        .expect("member list");
    assert_eq!(members.members().len(), 3);

    let leader = cluster.leader().await;
    let killed = Instant::now();
    cluster.kill(leader);
    let mut client = cluster.client().await;
    put_eventually(&mut client, "key", "while down").await;
    // Not asserted (timing depends on the machine), but worth seeing with --nocapture.
    eprintln!(
        "a put succeeded {:?} after the leader was killed",
        killed.elapsed()
    );
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader, "a killed member cannot lead");

    cluster.restart(leader).await;
    cluster.wait_healthy().await;
    // A linearizable read through the restarted member alone sees the write it missed: it is back
    // in the cluster and caught up.
    let mut rejoined = Client::connect([cluster.endpoints()[leader].clone()], None)
        .await
        .expect("a client");
    let response = tokio::time::timeout(REQUEST, rejoined.get("key", None))
        .await
        .expect("get in time")
        .expect("get through the restarted member");
    assert_eq!(response.kvs()[0].value_str().unwrap(), "while down");
}

#[tokio::test]
async fn compaction_cancels_a_watch_from_an_older_revision() {
    // A cluster of its own: compacting the shared one would break other tests' watches.
    let cluster = EtcdCluster::start(1).await;
    let mut client = cluster.client().await;
    let first = put_eventually(&mut client, "key", "1").await;
    put_eventually(&mut client, "key", "2").await;
    let last = put_eventually(&mut client, "key", "3").await;
    cluster.compact(last).await;

    let options = WatchOptions::new().with_start_revision(first);
    let mut watch = tokio::time::timeout(REQUEST, client.watch("key", Some(options)))
        .await
        .expect("watch in time")
        .expect("watch");
    // etcd confirms the watch's creation, then cancels it as compacted.
    let canceled = tokio::time::timeout(WAIT, async {
        loop {
            let response = watch
                .message()
                .await
                .expect("watch response")
                .expect("open");
            if response.canceled() {
                return response;
            }
        }
    })
    .await
    .expect("the watch canceled in time");
    assert_eq!(canceled.compact_revision(), last);
    assert!(canceled.events().is_empty());

    // Reads at a compacted revision fail too; the current one is whole.
    let old = client
        .get("key", Some(GetOptions::new().with_revision(first)))
        .await;
    let error = old.expect_err("a read at a compacted revision").to_string();
    assert!(error.contains("compacted"), "{error}");
    let mut watch = client
        .watch("key", Some(WatchOptions::new().with_start_revision(last)))
        .await
        .expect("watch");
    let replayed = tokio::time::timeout(WAIT, async {
        loop {
            let response = watch
                .message()
                .await
                .expect("watch response")
                .expect("open");
            if let Some(event) = response.events().first() {
                return event.clone();
            }
        }
    })
    .await
    .expect("the watch replayed in time");
    assert_eq!(replayed.event_type(), EventType::Put);
    assert_eq!(replayed.kv().unwrap().value_str().unwrap(), "3");
}

/// One put through a client of `endpoints` made with `options`: its outcome, as text.
async fn try_put(endpoints: &[String], options: ConnectOptions) -> Result<(), String> {
    let mut client = Client::connect(endpoints, Some(options))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(REQUEST, client.put("key", "value", None)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// [`try_put`] just after auth was enabled. A member that has not applied the change yet
/// answers "revision of auth store is old" for a moment (etcd's ErrAuthOldRevision, which its
/// own clients retry); that answer is retried, for up to 5 s.
async fn try_put_after_auth(
    endpoints: &[String],
    options: impl Fn() -> ConnectOptions,
) -> Result<(), String> {
    for _ in 0..50 {
        match try_put(endpoints, options()).await {
            Err(e) if e.contains("revision of auth store is old") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
    Err("auth was still settling after 5 s".into())
}

#[tokio::test]
async fn a_tls_cluster_wants_a_client_certificate_and_with_auth_a_password() {
    let mut cluster = EtcdCluster::start_tls(3).await;
    assert!(cluster
        .endpoints()
        .iter()
        .all(|e| e.starts_with("https://")));
    let files = cluster.tls_files().expect("a TLS cluster has files");
    let read = |path: &Path| std::fs::read(path).expect("a TLS file");
    let ca = Certificate::from_pem(read(&files.ca));
    let identity = Identity::from_pem(read(&files.client_cert), read(&files.client_key));
    let endpoints = cluster.endpoints();
    let with_cert = || {
        ConnectOptions::new().with_tls(
            TlsOptions::new()
                .ca_certificate(ca.clone())
                .identity(identity.clone()),
        )
    };

    // The kit's own client, and one made from the files, get through; none without a
    // certificate, nor in plaintext.
    put_eventually(&mut cluster.client().await, "key", "kit").await;
    assert_eq!(try_put(&endpoints, with_cert()).await, Ok(()));
    let without_cert = ConnectOptions::new().with_tls(TlsOptions::new().ca_certificate(ca.clone()));
    assert!(try_put(&endpoints, without_cert).await.is_err());
    let plaintext: Vec<String> = endpoints
        .iter()
        .map(|e| e.replace("https://", "http://"))
        .collect();
    assert!(try_put(&plaintext, ConnectOptions::new()).await.is_err());

    // With auth on, the certificate alone is not enough; root's password is.
    cluster.enable_auth("root password").await;
    let refused = try_put_after_auth(&endpoints, with_cert)
        .await
        .expect_err("no user");
    assert!(refused.contains("permission denied"), "{refused}");
    let as_root = || with_cert().with_user("root", "root password");
    assert_eq!(try_put_after_auth(&endpoints, as_root).await, Ok(()));
    let wrong = || with_cert().with_user("root", "wrong");
    let refused = try_put_after_auth(&endpoints, wrong)
        .await
        .expect_err("a wrong password");
    assert!(refused.contains("authentication failed"), "{refused}");

    // Faults work as on any cluster: health probes and the kit's clients find their way.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    cluster.wait_healthy().await;
    cluster.restart(leader).await;
    put_eventually(&mut cluster.client().await, "key", "after").await;

    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| cluster.log_file(i).parent().unwrap().to_owned())
        .collect();
    drop(cluster);
    for dir in &dirs {
        assert!(
            !dir.exists(),
            "{} (and its keys) left behind",
            dir.display()
        );
    }
}

#[tokio::test]
async fn tests_sharing_the_etcd_see_only_their_prefix() {
    assert!(std::ptr::eq(shared_etcd(), shared_etcd()));
    let (mine, theirs) = (unique_prefix(), unique_prefix());
    assert_ne!(mine, theirs);
    let mut client = shared_etcd().client().await;
    put_eventually(&mut client, &format!("{mine}a"), "mine").await;
    put_eventually(&mut client, &format!("{theirs}b"), "theirs").await;
    let response = tokio::time::timeout(
        REQUEST,
        client.get(mine.clone(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .expect("get in time")
    .expect("get");
    let keys: Vec<&str> = response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap())
        .collect();
    assert_eq!(keys, [format!("{mine}a")]);
}

#[tokio::test]
async fn dropping_a_cluster_kills_its_members_and_removes_their_files() {
    let cluster = EtcdCluster::start(2).await;
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| cluster.log_file(i).parent().unwrap().to_owned())
        .collect();
    for dir in &dirs {
        assert_eq!(
            etcd_processes_in(dir).len(),
            1,
            "one etcd in {}",
            dir.display()
        );
    }
    drop(cluster);
    // Drop waits for each etcd to be reaped, so there is nothing to wait for.
    for dir in &dirs {
        assert_eq!(etcd_processes_in(dir), [], "etcd left in {}", dir.display());
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// Set for the child process of [`members_die_with_their_test_process`].
const ORPHAN_HELPER: &str = "JSONKV_TESTKIT_ORPHAN_HELPER";

/// In a child process: starts a cluster and the shared etcd, says where their files are, and
/// waits to be SIGKILLed.
#[tokio::test]
#[ignore = "a helper: members_die_with_their_test_process runs it in a child process"]
async fn orphan_helper() {
    if std::env::var_os(ORPHAN_HELPER).is_none() {
        return;
    }
    let cluster = EtcdCluster::start(1).await;
    for log in [cluster.log_file(0), shared_etcd().log_file(0)] {
        println!("member dir: {}", log.parent().unwrap().display());
    }
    println!("orphan helper ready");
    // The bound only matters if the parent died before killing this process.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[test]
fn members_die_with_their_test_process() {
    let mut helper = Command::new(std::env::current_exe().expect("this test's binary"))
        .args(["orphan_helper", "--exact", "--ignored", "--nocapture"])
        .env(ORPHAN_HELPER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the helper");
    let stdout = helper.stdout.take().expect("piped");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.expect("helper output")).is_err() {
                break;
            }
        }
    });
    let mut dirs = Vec::new();
    loop {
        // Its own waits are bounded by the kit; this bounds a helper that hangs anyway.
        let line = received
            .recv_timeout(Duration::from_secs(90))
            .expect("the helper ended or hung before it was ready (its stderr is above)");
        if let Some((_, dir)) = line.split_once("member dir: ") {
            dirs.push(PathBuf::from(dir));
        }
        if line.ends_with("orphan helper ready") {
            break;
        }
    }
    assert_eq!(dirs.len(), 2);
    for dir in &dirs {
        assert_eq!(
            etcd_processes_in(dir).len(),
            1,
            "one etcd in {}",
            dir.display()
        );
    }

    // SIGKILL: no destructor, no exit handler runs in the helper.
    helper.kill().expect("kill the helper");
    helper.wait().expect("reap the helper");
    let deadline = Instant::now() + WAIT;
    while dirs
        .iter()
        .any(|dir| !etcd_processes_in(dir).is_empty() || dir.exists())
    {
        assert!(
            Instant::now() < deadline,
            "etcd or its files outlived the helper by {WAIT:?}: {dirs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
