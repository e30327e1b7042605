//! Crash test on the real binary: concurrent writers record every acknowledgement, the server
//! is killed with SIGKILL at pseudo-random moments, many times over, and after each restart
//! every acknowledged write is there with its value and revision, no value appears that no
//! writer sent, and revisions go on increasing. Rounds alternate `--sync always` and
//! `--sync none` (both promise to survive a process crash), and one tokio worker
//! (`--workers 1`) and two, checking that the server runs that many.
//!
//! Guarantees proved here, both by `acknowledged_writes_survive_sigkill` (eight kills):
//! - Every acknowledged write survives SIGKILL, with its value and revision, under either sync
//!   mode; nothing appears that no writer sent.
//! - `--workers N` runs N tokio workers, and the crash guarantees hold with one.
//! - Acknowledged lease grants, leased keys and revokes survive SIGKILL, and a revoke is all or
//!   nothing: `leases_and_revokes_survive_sigkill` (four kills).
//! - An acknowledged transaction survives SIGKILL whole, and one cut off is there whole or not
//!   at all: never part of its writes (`transactions_survive_sigkill_whole`, four kills).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonkv::pb::json_kv_client::JsonKvClient;
use jsonkv::pb::{self, insert_request::NewValue, ValueEncoding};
use tonic::transport::Channel;

const ROUNDS: u64 = 8;
const WRITERS: usize = 8;
/// How long a writer waits for an answer before it takes the server for gone.
const CALL_LIMIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process, killed when dropped, so that a failing assertion leaves no server behind.
struct Server(Child);

impl Server {
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(dir: &Path, port: u16, sync: &str, workers: usize) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_jsonkv-server"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--sync",
                sync,
                "--segment-bytes",
                "65536",
                "--workers",
                &workers.to_string(),
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server binary starts"),
    )
}

/// The server's tokio worker threads, counted by name in /proc.
fn tokio_workers(server: &Server) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.0.id())).expect("/proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

async fn connect(port: u16) -> JsonKvClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match JsonKvClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("server did not come up: {e}"),
        }
    }
}

/// A small deterministic generator, so a failing round can be replayed.
fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // key -> (revision, value) for every acknowledged insert; the last ack per key wins.
    let mut acked: HashMap<String, (i64, String)> = HashMap::new();
    // Every value any writer ever sent, acknowledged or not.
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    let mut max_acked = 0;
    let mut rng = 0x5eed_u64;

    for round in 0..ROUNDS {
        let sync = if round % 2 == 0 { "always" } else { "none" };
        let workers = 1 + (round as usize / 2) % 2;
        let port = free_port();
        let mut server = spawn_server(dir.path(), port, sync, workers);
        let client = connect(port).await;
        assert_eq!(
            tokio_workers(&server),
            workers,
            "round {round}: --workers {workers}"
        );

        verify(&client, &acked, &sent, max_acked).await;

        // Writers: unique keys, plus a few shared keys that several writers overwrite.
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let mut client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut log = Vec::new();
                for i in 0.. {
                    let key = if i % 3 == 0 {
                        format!("shared/{}", i % 5)
                    } else {
                        format!("r{round}/w{w}/{i}")
                    };
                    let value = format!(r#"{{"round":{round},"w":{w},"i":{i}}}"#);
                    let request = pb::InsertRequest {
                        key: key.clone(),
                        new_value: Some(NewValue::ValueJson(value.clone())),
                        ..Default::default()
                    };
                    // Bounded: a call to a killed server should fail at once, but one once hung
                    // the whole run with nothing left to wake it (tonic's client, not the
                    // server, which was gone). Unanswered is unacknowledged either way.
                    let result = tokio::time::timeout(CALL_LIMIT, client.insert(request)).await;
                    let ack = match result {
                        Ok(Ok(response)) => Some(response.into_inner().revision),
                        Ok(Err(_)) | Err(_) => None,
                    };
                    let failed = ack.is_none();
                    log.push((key, value, ack));
                    if failed {
                        break; // the server is gone
                    }
                }
                log
            }));
        }
        tokio::time::sleep(Duration::from_millis(50 + next_random(&mut rng) % 400)).await;
        server.kill();

        let mut acks_this_round = 0;
        let mut logs: Vec<_> = Vec::new();
        for task in tasks {
            logs.extend(task.await.unwrap());
        }
        // Apply acknowledgements in revision order so the last write to a shared key wins.
        logs.sort_by_key(|(_, _, ack)| ack.unwrap_or(i64::MAX));
        for (key, value, ack) in logs {
            sent.entry(key.clone()).or_default().push(value.clone());
            if let Some(revision) = ack {
                assert!(
                    revision > max_acked,
                    "revision {revision} after {max_acked}: revisions must only grow"
                );
                max_acked = revision;
                acked.insert(key, (revision, value));
                acks_this_round += 1;
            }
        }
        assert!(
            acks_this_round > 0,
            "round {round}: no write was acknowledged before the kill"
        );
    }

    // A last restart, checked the same way.
    let port = free_port();
    let mut server = spawn_server(dir.path(), port, "always", 2);
    let client = connect(port).await;
    verify(&client, &acked, &sent, max_acked).await;
    server.kill();
}

/// Every acknowledged write is present with its value and revision (unless a later
/// acknowledged write replaced it), and every stored value is one a writer sent.
async fn verify(
    client: &JsonKvClient<Channel>,
    acked: &HashMap<String, (i64, String)>,
    sent: &HashMap<String, Vec<String>>,
    max_acked: i64,
) {
    let mut client = client.clone();
    let mut stored = HashMap::new();
    let mut token = String::new();
    let revision = loop {
        let page = client
            .list(pb::ListRequest {
                page_size: 1000,
                page_token: token,
                value_encoding: ValueEncoding::Json as i32,
                ..Default::default()
            })
            .await
            .expect("list after restart")
            .into_inner();
        for kv in page.kvs {
            stored.insert(kv.key, (kv.mod_revision, kv.value_json));
        }
        if page.next_page_token.is_empty() {
            break page.revision;
        }
        token = page.next_page_token;
    };
    assert!(
        revision >= max_acked,
        "store revision {revision} is behind acknowledged {max_acked}"
    );
    for (key, (ack_revision, value)) in acked {
        let (mod_revision, stored_value) = stored
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged key {key} lost"));
        assert!(
            mod_revision >= ack_revision,
            "{key}: stored revision {mod_revision} older than acknowledged {ack_revision}"
        );
        if mod_revision == ack_revision {
            assert_eq!(
                stored_value, value,
                "{key}: value at its acknowledged revision"
            );
        }
    }
    for (key, (_, value)) in &stored {
        let candidates = sent
            .get(key)
            .unwrap_or_else(|| panic!("{key} was never written"));
        assert!(
            candidates.contains(value),
            "{key} holds {value}, which no writer sent"
        );
    }
}

/// What a lease writer saw acknowledged for one lease.
#[derive(Debug, Default)]
struct LeaseFate {
    /// Keys whose leased insert was acknowledged.
    keys: Vec<String>,
    /// The revoke was sent (its answer may have been lost to the kill).
    revoking: bool,
    /// The revoke was acknowledged.
    revoked: bool,
}

/// Leases under SIGKILL: writers grant leases, attach keys and revoke some, while the server
/// is killed. After each restart every acknowledged grant is live with its acknowledged keys
/// attached, every acknowledged revoke took all its keys, and a revoke cut off by the kill
/// took all of them or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_revokes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut fates: HashMap<i64, LeaseFate> = HashMap::new();
    let mut seed = 0x1ea5e;
    for round in 0..4u64 {
        let port = free_port();
        let sync = if round % 2 == 0 { "always" } else { "none" };
        let mut server = spawn_server(dir.path(), port, sync, 2);
        let client = connect(port).await;
        verify_leases(&mut client.clone(), &fates).await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let mut seen: Vec<(i64, LeaseFate)> = Vec::new();
                    for n in 0.. {
                        let grant = pb::LeaseGrantRequest {
                            ttl_seconds: 3600,
                            id: 0,
                        };
                        let Ok(Ok(granted)) =
                            tokio::time::timeout(CALL_LIMIT, client.lease_grant(grant)).await
                        else {
                            return seen;
                        };
                        let id = granted.into_inner().id;
                        seen.push((id, LeaseFate::default()));
                        for k in 0..3 {
                            let key = format!("lease/{round}-{w}-{n}/{k}");
                            let insert = pb::InsertRequest {
                                key: key.clone(),
                                new_value: Some(NewValue::ValueJson(k.to_string())),
                                lease: id,
                                ..Default::default()
                            };
                            match tokio::time::timeout(CALL_LIMIT, client.insert(insert)).await {
                                Ok(Ok(_)) => seen.last_mut().unwrap().1.keys.push(key),
                                _ => return seen,
                            }
                        }
                        if n % 2 == 0 {
                            seen.last_mut().unwrap().1.revoking = true;
                            let revoke = pb::LeaseRevokeRequest { id };
                            match tokio::time::timeout(CALL_LIMIT, client.lease_revoke(revoke))
                                .await
                            {
                                Ok(Ok(_)) => seen.last_mut().unwrap().1.revoked = true,
                                _ => return seen,
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + next_random(&mut seed) % 400)).await;
        server.kill();
        for writer in writers {
            fates.extend(writer.await.unwrap());
        }
    }
    let port = free_port();
    let _server = spawn_server(dir.path(), port, "always", 2);
    let mut client = connect(port).await;
    verify_leases(&mut client, &fates).await;
    assert!(
        fates.values().filter(|f| f.revoked).count() > 0
            && fates
                .values()
                .filter(|f| !f.revoking && !f.keys.is_empty())
                .count()
                > 0,
        "the kills left nothing to check"
    );
}

/// Checks every lease writer's acknowledgements against the restarted server.
async fn verify_leases(client: &mut JsonKvClient<Channel>, fates: &HashMap<i64, LeaseFate>) {
    let live = client
        .lease_list(pb::LeaseListRequest {})
        .await
        .unwrap()
        .into_inner()
        .ids;
    for (id, fate) in fates {
        let mut present = Vec::new();
        for key in &fate.keys {
            let found = client
                .get(pb::GetRequest {
                    key: key.clone(),
                    value_encoding: ValueEncoding::Json as i32,
                    ..Default::default()
                })
                .await;
            if let Ok(found) = found {
                assert_eq!(found.into_inner().kv.unwrap().lease, *id, "{key}");
                present.push(key);
            }
        }
        let listed = live.contains(id);
        if fate.revoked {
            assert!(
                present.is_empty() && !listed,
                "lease {id}: revoked, yet {present:?} left"
            );
        } else if fate.revoking {
            // Cut off: all or nothing.
            assert!(
                (listed && present.len() == fate.keys.len()) || (!listed && present.is_empty()),
                "lease {id}: a revoke half done: listed {listed}, {present:?} of {:?}",
                fate.keys
            );
        } else {
            assert!(listed, "lease {id}: an acknowledged grant was lost");
            assert_eq!(
                present.len(),
                fate.keys.len(),
                "lease {id}: acknowledged keys lost"
            );
        }
    }
}

/// One writer's transactions: each moves its three keys to the next generation (writes
/// `gen/N/k` and deletes `gen/N-1/k`), so after a crash exactly one generation is there, whole.
#[derive(Debug, Default)]
struct Generations {
    /// The last generation a transaction was acknowledged for.
    acknowledged: Option<u64>,
    /// The generation of the transaction in flight when the server died, if any.
    in_flight: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_sigkill_whole() {
    use pb::op::Request as Op;
    let dir = tempfile::tempdir().unwrap();
    let mut writers_state: Vec<Generations> = (0..4).map(|_| Generations::default()).collect();
    let mut transactions = 0;
    let mut seed = 0x7e57;
    let key = |w: usize, generation: u64, k: usize| format!("txn/{w}/{generation}/{k}");
    for round in 0..4u64 {
        let port = free_port();
        let sync = if round % 2 == 0 { "always" } else { "none" };
        let mut server = spawn_server(dir.path(), port, sync, 2);
        let client = connect(port).await;
        let present = verify_generations(&mut client.clone(), &writers_state, key).await;
        let writers: Vec<_> = present
            .into_iter()
            .enumerate()
            .map(|(w, previous)| {
                let mut client = client.clone();
                // A transaction cut off in the last round may or may not have happened: go on
                // from whichever generation is there.
                let start = previous.map_or(0, |g| g + 1);
                tokio::spawn(async move {
                    let mut previous = previous;
                    let mut last = None;
                    let mut done = 0;
                    for generation in start.. {
                        let mut ops: Vec<pb::Op> = (0..3)
                            .map(|k| pb::Op {
                                request: Some(Op::Insert(pb::InsertRequest {
                                    key: key(w, generation, k),
                                    new_value: Some(NewValue::ValueJson(generation.to_string())),
                                    ..Default::default()
                                })),
                            })
                            .collect();
                        if let Some(old) = previous {
                            ops.extend((0..3).map(|k| pb::Op {
                                request: Some(Op::Delete(pb::DeleteRequest {
                                    key: key(w, old, k),
                                    allow_missing: true,
                                    ..Default::default()
                                })),
                            }));
                        }
                        let request = pb::TxnRequest {
                            compare: vec![],
                            success: ops,
                            failure: vec![],
                        };
                        match tokio::time::timeout(CALL_LIMIT, client.txn(request)).await {
                            Ok(Ok(_)) => {
                                last = Some(generation);
                                previous = Some(generation);
                                done += 1;
                            }
                            // A refusal, not the server going away: the test's own mistake.
                            Ok(Err(status))
                                if matches!(
                                    status.code(),
                                    tonic::Code::InvalidArgument
                                        | tonic::Code::FailedPrecondition
                                        | tonic::Code::NotFound
                                ) =>
                            {
                                panic!("writer {w}, generation {generation}: {status}")
                            }
                            _ => return (last, Some(generation), done),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + next_random(&mut seed) % 400)).await;
        server.kill();
        for (state, writer) in writers_state.iter_mut().zip(writers) {
            let (acknowledged, in_flight, done) = writer.await.unwrap();
            transactions += done;
            if acknowledged.is_some() {
                state.acknowledged = acknowledged;
            }
            state.in_flight = in_flight;
        }
    }
    let port = free_port();
    let _server = spawn_server(dir.path(), port, "always", 2);
    let mut client = connect(port).await;
    verify_generations(&mut client, &writers_state, key).await;
    assert!(
        writers_state.iter().all(|s| s.acknowledged.is_some()) && transactions > 40,
        "the kills left little to check: {transactions} transactions, {writers_state:?}"
    );
}

/// Each writer has exactly one generation of keys, whole: the acknowledged one, or the one in
/// flight when the server died. Returns the generation each writer has.
async fn verify_generations(
    client: &mut JsonKvClient<Channel>,
    writers: &[Generations],
    key: impl Fn(usize, u64, usize) -> String,
) -> Vec<Option<u64>> {
    let mut present = Vec::new();
    for (w, state) in writers.iter().enumerate() {
        let listed = client
            .list(pb::ListRequest {
                prefix: format!("txn/{w}/"),
                page_size: 1000,
                value_encoding: ValueEncoding::Json as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .kvs;
        let Some(acknowledged) = state.acknowledged else {
            assert!(
                listed.is_empty() || listed.len() == 3,
                "writer {w}: a partial transaction: {listed:?}"
            );
            present.push(listed.first().map(|kv| kv.value_json.parse().unwrap()));
            continue;
        };
        let generation: u64 = listed
            .first()
            .unwrap_or_else(|| panic!("writer {w}: generation {acknowledged} lost"))
            .value_json
            .parse()
            .unwrap();
        assert!(
            generation == acknowledged || Some(generation) == state.in_flight,
            "writer {w}: generation {generation}, acknowledged {acknowledged}, in flight {:?}",
            state.in_flight
        );
        let want: Vec<String> = (0..3).map(|k| key(w, generation, k)).collect();
        let got: Vec<String> = listed.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(got, want, "writer {w}: one generation, whole");
        let revisions: Vec<i64> = listed.iter().map(|kv| kv.mod_revision).collect();
        assert!(
            revisions.windows(2).all(|r| r[0] == r[1]),
            "one revision: {revisions:?}"
        );
        present.push(Some(generation));
    }
    present
}
