//! Several jsonkv servers on one etcd cluster, through the real gRPC interface: a shared
//! keyspace, watches that see every server's writes in order, and the faults: an etcd member
//! killed under load, etcd unreachable, a jsonkv server restarted during a watch, history
//! compacted in etcd (for a resume, and for a server that was cut off while it happened).
//!
//! Each test starts its own etcd cluster on loopback (jsonkv-testkit), so that killing members
//! and compacting touch nobody else.
//!
//! Guarantees proved here:
//! - Two servers on one etcd cluster share a keyspace; a watch on one sees every write through
//!   both, in order, against the write log:
//!   `two_servers_share_one_keyspace_and_watch_every_write_in_order`.
//! - With the etcd leader killed under write load, writes continue, no acknowledged write is lost
//!   and nothing unsent appears:
//!   `writes_continue_when_an_etcd_member_dies_and_no_acknowledged_write_is_lost`.
//! - With a follower down no write fails (a request the balancer sends towards the dead member
//!   never leaves, and is retried): `with_a_follower_down_no_write_fails`.
//! - While etcd is down, writes are UNAVAILABLE, health says NOT_SERVING, reads are served, and
//!   watches resume with no gap:
//!   `while_etcd_is_down_writes_are_unavailable_health_says_so_and_watches_resume_without_a_gap`.
//! - A watch across a restart of its jsonkv server replays etcd's history, then goes live, with
//!   no gap or duplicate: `a_watch_resumes_without_a_gap_across_a_restart_of_its_jsonkv_server`.
//! - A resume from a revision etcd compacted is OUT_OF_RANGE naming etcd's oldest:
//!   `a_resume_from_a_revision_etcd_compacted_is_out_of_range`.
//! - A server cut off while etcd compacted reloads its view and ends its watches clearly:
//!   `a_server_that_missed_history_etcd_compacted_reloads_and_ends_its_watches`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonkv::pb;
use jsonkv_server::config::{BackendConfig, EtcdConfig};
use jsonkv_server::{Config, RunningServer};
use jsonkv_testkit::{unique_prefix, EtcdCluster};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::Code;

use crate::common::*;
use crate::prom;

/// A server config on `endpoints` under `prefix`, with short etcd timeouts so that the fault
/// tests see UNAVAILABLE quickly.
fn cluster_config(endpoints: Vec<String>, prefix: &str) -> Config {
    Config {
        backend: BackendConfig::Etcd(EtcdConfig {
            endpoints,
            prefix: prefix.to_owned(),
            timeout: Duration::from_secs(2),
            ..EtcdConfig::default()
        }),
        ..config()
    }
}

async fn serve(config: Config) -> RunningServer {
    RunningServer::start(config)
        .await
        .expect("server starts on etcd")
}

/// One acknowledged write: (revision, key, JSON text).
type Ack = (i64, String, String);

/// Writes `count` values through `client` under `keys` distinct keys, retrying a write that
/// fails (an etcd election, a dead member) until `deadline`; returns the acknowledged writes
/// and every value sent (acknowledged or not).
async fn write_load(
    mut client: Client,
    writer: &str,
    keys: usize,
    count: usize,
) -> (Vec<Ack>, Vec<String>) {
    let mut acks = Vec::new();
    let mut sent = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for i in 0..count {
        let key = format!("load/{writer}/{}", i % keys);
        let json = format!(r#"{{"writer":"{writer}","i":{i}}}"#);
        loop {
            sent.push(json.clone());
            let request = pb::InsertRequest {
                key: key.clone(),
                new_value: Some(pb::insert_request::NewValue::ValueJson(json.clone())),
                ..Default::default()
            };
            match client.insert(request).await {
                Ok(response) => {
                    acks.push((response.into_inner().revision, key.clone(), json.clone()));
                    break;
                }
                Err(status) => {
                    eprintln!("{writer}: write failed, retrying: {status:?}");
                    assert!(
                        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                        "a write may only fail as unavailable while etcd recovers: {status:?}"
                    );
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "writes did not resume: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    (acks, sent)
}

/// The events of a watch until it has shown `revision`, as acks (a delete has no JSON).
async fn events_until(stream: &mut tonic::Streaming<pb::WatchResponse>, revision: i64) -> Vec<Ack> {
    read_until(stream, revision)
        .await
        .into_iter()
        .filter_map(|seen| match seen {
            Seen::Put {
                revision,
                key,
                json,
            } => Some((revision, key, json)),
            Seen::Delete { revision, key } => Some((revision, key, String::new())),
            Seen::Snapshot { .. } | Seen::Progress(_) => None,
        })
        .collect()
}

fn assert_strictly_increasing(events: &[Ack]) {
    for pair in events.windows(2) {
        assert!(pair[0].0 < pair[1].0, "out of order or repeated: {pair:?}");
    }
}

async fn get_at(client: &mut Client, key: &str, min_revision: i64) -> String {
    let request = pb::GetRequest {
        key: key.into(),
        min_revision,
        ..Default::default()
    };
    get_json(client, request).await
}

#[tokio::test]
async fn two_servers_share_one_keyspace_and_watch_every_write_in_order() {
    let cluster = EtcdCluster::start(3).await;
    let prefix = unique_prefix();
    let a = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let b = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let (mut ca, mut cb) = (connect(&a).await, connect(&b).await);

    // A write through A, read through B: min_revision makes B wait for its view to have it.
    let written = put(&mut ca, "greeting", r#""hello""#).await;
    assert_eq!(get_at(&mut cb, "greeting", written).await, r#""hello""#);

    let mut watch = watch_prefix(&mut cb, "load/", 0).await.unwrap();
    let writers = [("a", ca.clone()), ("b", cb.clone()), ("a2", ca.clone())];
    let mut tasks = JoinSet::new();
    for (name, client) in writers {
        tasks.spawn(async move { write_load(client, name, 4, 60).await.0 });
    }
    let mut log: Vec<Ack> = Vec::new();
    while let Some(acks) = tasks.join_next().await {
        log.extend(acks.unwrap());
    }
    log.sort();
    let last = log.last().unwrap().0;
    let seen = within(
        "B's watch to see every write",
        events_until(&mut watch, last),
    )
    .await;
    assert_strictly_increasing(&seen);
    assert_eq!(
        seen, log,
        "B's watch against the log of every acknowledged write"
    );

    // A watch on A sees the same history, replayed from a revision.
    let first = log.first().unwrap().0;
    let mut replay = watch_prefix(&mut ca, "load/", first).await.unwrap();
    let replayed = within("A's replay", events_until(&mut replay, last)).await;
    assert_eq!(replayed, log);
    drop(cluster);
}

#[tokio::test]
async fn writes_continue_when_an_etcd_member_dies_and_no_acknowledged_write_is_lost() {
    let mut cluster = EtcdCluster::start(3).await;
    let prefix = unique_prefix();
    let server = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let client = connect(&server).await;
    let start = server.store().revision() + 1;

    let mut tasks = JoinSet::new();
    for writer in ["w1", "w2", "w3", "w4"] {
        let client = client.clone();
        tasks.spawn(async move { write_load(client, writer, 8, 150).await });
    }
    // Let the load get going, then kill the leader: the worst member to lose.
    let mut probe = client.clone();
    within("the load to start", async {
        while server.store().revision() < start + 40 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let leader = cluster.leader().await;
    cluster.kill(leader);

    let mut acks = Vec::new();
    let mut sent = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        let (a, s) = result.unwrap();
        acks.extend(a);
        sent.extend(s);
    }
    assert_eq!(acks.len(), 4 * 150, "every writer finished its writes");

    // Everything that happened, in order, from etcd's history through the server.
    let last = server.store().revision();
    let mut watch = watch_prefix(&mut probe, "load/", start).await.unwrap();
    let history = within("the replay", events_until(&mut watch, last)).await;
    assert_strictly_increasing(&history);
    let history_set: HashSet<&Ack> = history.iter().collect();
    for ack in &acks {
        assert!(
            history_set.contains(ack),
            "acknowledged write lost: {ack:?}"
        );
    }
    for (_, _, json) in &history {
        assert!(sent.contains(json), "a value nobody sent: {json}");
    }
    // And the final state is the last write to each key.
    let mut latest = BTreeMap::new();
    for (_, key, json) in &history {
        latest.insert(key.clone(), json.clone());
    }
    for (key, json) in latest {
        assert_eq!(get_at(&mut probe, &key, last).await, json);
    }

    cluster.restart(leader).await;
    cluster.wait_healthy().await;
    // The member is back; a write goes through (one caught by the member's return may still
    // fail as unavailable and is retried, as write_load does).
    let (after, _) = within(
        "a write after the restart",
        write_load(probe, "after", 1, 1),
    )
    .await;
    assert!(after[0].0 > last);
}

#[tokio::test]
async fn with_a_follower_down_no_write_fails() {
    let mut cluster = EtcdCluster::start(3).await;
    let prefix = unique_prefix();
    let server = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let mut client = connect(&server).await;
    put(&mut client, "k", "0").await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    // The quorum is intact, so every write must succeed: one the client's balancer sends
    // towards the dead member never leaves, and goes to another.
    for i in 1..=60 {
        put(&mut client, "k", &i.to_string()).await;
        assert_eq!(get_at(&mut client, "k", 0).await, i.to_string());
    }
    cluster.restart(follower).await;
}

#[tokio::test]
async fn while_etcd_is_down_writes_are_unavailable_health_says_so_and_watches_resume_without_a_gap()
{
    let mut cluster = EtcdCluster::start(1).await;
    let prefix = unique_prefix();
    let server = serve(Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..cluster_config(cluster.endpoints(), &prefix)
    })
    .await;
    let metrics = server.metrics_addr().unwrap();
    let mut client = connect(&server).await;
    let mut watch = watch_prefix(&mut client, "", 0).await.unwrap();
    let before = put(&mut client, "k", "1").await;
    prom::wait_for(metrics, "jsonkv_source_up", |up| up == 1.0).await;
    assert_eq!(events_until(&mut watch, before).await.len(), 1);

    cluster.kill(0);
    // Health says so, for load balancers: NOT_SERVING while etcd is out of reach.
    within(
        "health to turn NOT_SERVING",
        wait_for_health(&server, false),
    )
    .await;
    let status = client
        .insert(pb::InsertRequest {
            key: "k".into(),
            new_value: Some(pb::insert_request::NewValue::ValueJson("2".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("etcd"), "{status:?}");
    // Reads are still served from the view.
    assert_eq!(get_at(&mut client, "k", 0).await, "1");

    // `value` reads an absent series as 0, so check the sample is there.
    let text = prom::wait_for(metrics, "jsonkv_source_up", |up| up == 0.0).await;
    assert!(text.lines().any(|l| l == "jsonkv_source_up 0"), "{text}");
    cluster.restart(0).await;
    within("health to turn SERVING", wait_for_health(&server, true)).await;
    prom::wait_for(metrics, "jsonkv_source_up", |up| up == 1.0).await;
    let after = within(
        "writes to work again",
        put_eventually(&mut client, "k", "3"),
    )
    .await;
    // The watch never closed, and shows the one change after the outage: nothing lost, nothing
    // repeated.
    let seen = within("the watch to resume", events_until(&mut watch, after)).await;
    assert_eq!(seen, [(after, "k".to_owned(), "3".to_owned())]);
}

/// Polls the server's health (overall and for jsonkv.v1.JsonKv) until it is `serving` (or not).
async fn wait_for_health(server: &RunningServer, serving: bool) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = tonic::transport::Endpoint::new(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let want = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    } as i32;
    loop {
        let mut all = true;
        for service in ["", "jsonkv.v1.JsonKv"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            all &= status == want;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_watch_resumes_without_a_gap_across_a_restart_of_its_jsonkv_server() {
    let cluster = EtcdCluster::start(1).await;
    let prefix = unique_prefix();
    let a = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let b = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let b_addr = b.addr();
    let mut ca = connect(&a).await;
    let mut cb = connect(&b).await;

    let mut log = Vec::new();
    let mut watch = watch_prefix(&mut cb, "", 0).await.unwrap();
    for i in 0..10 {
        let json = i.to_string();
        log.push((put(&mut ca, "k", &json).await, "k".to_owned(), json));
    }
    let delivered = within("the first events", events_until(&mut watch, log[9].0)).await;
    assert_eq!(delivered, log);
    let resume_from = log[9].0 + 1;

    // B goes away; writes go on through A; a new B starts on the same address with a view
    // loaded after those writes, so its local history does not reach back to the resume point.
    drop(watch);
    b.shutdown().await;
    for i in 10..20 {
        let json = i.to_string();
        log.push((put(&mut ca, "k", &json).await, "k".to_owned(), json));
    }
    let b = serve(Config {
        listen: b_addr,
        ..cluster_config(cluster.endpoints(), &prefix)
    })
    .await;
    let mut cb = connect(&b).await;
    let mut watch = watch_prefix(&mut cb, "", resume_from).await.unwrap();
    // Writes after the resume: the watch must move from etcd's history to live events with
    // nothing lost or repeated at the seam.
    for i in 20..25 {
        let json = i.to_string();
        log.push((put(&mut ca, "k", &json).await, "k".to_owned(), json));
    }
    let resumed = within("the resumed watch", events_until(&mut watch, log[24].0)).await;
    assert_eq!(resumed, log[10..]);
}

#[tokio::test]
async fn a_resume_from_a_revision_etcd_compacted_is_out_of_range() {
    let cluster = EtcdCluster::start(1).await;
    let prefix = unique_prefix();
    let server = serve(Config {
        // Local history holds two events, so older resumes need etcd's history.
        history_size: 2,
        ..cluster_config(cluster.endpoints(), &prefix)
    })
    .await;
    let mut client = connect(&server).await;
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(put(&mut client, &format!("k{}", i % 3), &i.to_string()).await);
    }
    let compacted = revisions[5];
    cluster.compact(compacted).await;

    let mut watch = watch_prefix(&mut client, "", revisions[1]).await.unwrap();
    let status = within("the compacted resume to fail", next(&mut watch))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(detail(&status, "oldest_revision"), compacted);
    assert_eq!(detail(&status, "requested_revision"), revisions[1]);

    // From the oldest revision etcd still holds, the replay works, older than local history.
    let mut watch = watch_prefix(&mut client, "", compacted).await.unwrap();
    let seen = within("the replay", events_until(&mut watch, revisions[9])).await;
    let seen: Vec<i64> = seen.iter().map(|(r, _, _)| *r).collect();
    assert_eq!(seen, revisions[5..]);
}

/// A TCP proxy that can cut every connection through it and refuse new ones: etcd unreachable
/// for one jsonkv server only, while everyone else can still use it.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<parking_lot::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(parking_lot::Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let open = Arc::clone(&open);
            let connections = Arc::clone(&connections);
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: refused
                    }
                    connections.lock().spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        });
        Proxy {
            addr,
            open,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.connections.lock().abort_all();
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().abort_all();
    }
}

#[tokio::test]
async fn a_server_that_missed_history_etcd_compacted_reloads_and_ends_its_watches() {
    let cluster = EtcdCluster::start(1).await;
    let prefix = unique_prefix();
    let upstream: SocketAddr = cluster.endpoints()[0]
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let cut_off = serve(cluster_config(
        vec![format!("http://{}", proxy.addr)],
        &prefix,
    ))
    .await;
    let healthy = serve(cluster_config(cluster.endpoints(), &prefix)).await;
    let mut cut_client = connect(&cut_off).await;
    let mut healthy_client = connect(&healthy).await;

    let first = put(&mut healthy_client, "k", "1").await;
    // min_revision: the snapshot waits until the cut-off server's view has the write.
    let mut watch = cut_client
        .watch_prefix(pb::WatchPrefixRequest {
            min_revision: first,
            value_encoding: pb::ValueEncoding::Json as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = within("the snapshot", read_until(&mut watch, first)).await;
    assert!(
        matches!(&snapshot[..], [Seen::Snapshot { revision, .. }] if *revision >= first),
        "{snapshot:?}"
    );

    // While the server is cut off, the keyspace moves on and etcd compacts what it missed.
    proxy.cut();
    put(&mut healthy_client, "k", "2").await;
    let deleted = put(&mut healthy_client, "gone", "0").await;
    del(&mut healthy_client, "gone").await;
    let last = put(&mut healthy_client, "k", "3").await;
    assert!(deleted > first);
    cluster.compact(last).await;
    proxy.restore();

    // The watch cannot be continued without a gap: it ends, saying so.
    let status = within("the watch to end", async {
        loop {
            match next(&mut watch).await {
                Ok(Seen::Progress(_)) => continue,
                Ok(other) => panic!("no event may be delivered across the gap: {other:?}"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("compacted"), "{status:?}");
    // The view itself is whole again: the latest state, and new watches work.
    assert_eq!(get_at(&mut cut_client, "k", last).await, "3");
    let mut fresh = watch_prefix(&mut cut_client, "", 0).await.unwrap();
    match within("a new watch", next(&mut fresh)).await.unwrap() {
        Seen::Snapshot { revision, kvs, .. } => {
            assert!(revision >= last);
            assert_eq!(kvs, [("k".to_owned(), "3".to_owned())]);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}
