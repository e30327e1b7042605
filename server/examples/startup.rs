//! Start-up time benchmark: fills a data directory with N keys through the real `Store`, then
//! times recovery twice: from the log alone, and from a compacted snapshot. Prints one line per
//! case (add `--json` for JSON lines).
//!
//! `cargo run --release -p jsonkv-server --example startup -- --keys 1000000`

use std::time::{Duration, Instant};

use jsonkv_server::config::{BackendConfig, DiskConfig, SyncMode};
use jsonkv_server::{Config, Store};
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: usize = flag(&args, "--keys").unwrap_or(1_000_000);
    let json_out = args.iter().any(|a| a == "--json");
    let dir = tempfile::tempdir().expect("temp dir");

    // 1. Fill: 64 writers, no fsync (the fill is not what is measured), one huge segment so
    //    nothing is compacted yet.
    let on_disk = |segment_bytes| Config {
        backend: BackendConfig::Disk(DiskConfig {
            sync: SyncMode::None,
            segment_bytes,
            ..DiskConfig::new(dir.path())
        }),
        history_size: 1000,
        ..Config::default()
    };
    let log_only = on_disk(u64::MAX / 2);
    let started = Instant::now();
    {
        let store = Store::start(&log_only).await.expect("open");
        let writers = 64;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..keys).step_by(writers) {
                    let value = json!({"id": i, "name": format!("user-{i}"), "tags": ["a", "b"], "score": i as f64 / 7.0});
                    store.put(format!("user/{i:08}"), value, None).await.expect("put");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let fill = started.elapsed();
    // The fill ran without fsync: flush now, or the first timed start-up competes with the
    // kernel writing back the dirty pages.
    flush(dir.path());
    let log_bytes = dir_bytes(dir.path());
    report(json_out, "fill", keys, fill, log_bytes);

    // 2. Recover from the log alone.
    let (elapsed, revision) = time_open(&log_only).await;
    assert_eq!(revision, keys as i64);
    report(json_out, "startup_from_log", keys, elapsed, log_bytes);

    // 3. Seal the log with one more write at a small segment size, wait for the compactor to
    //    fold it into a snapshot, then recover from that.
    let compacting = on_disk(1);
    {
        let store = Store::start(&compacting).await.expect("open");
        store
            .put("seal".into(), json!(true), None)
            .await
            .expect("put");
        let deadline = Instant::now() + Duration::from_secs(600);
        while !std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot-")
        }) {
            assert!(Instant::now() < deadline, "no snapshot appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    flush(dir.path());
    let snapshot_bytes = dir_bytes(dir.path());
    let (elapsed, revision) = time_open(&log_only).await;
    assert_eq!(revision, keys as i64 + 1);
    report(
        json_out,
        "startup_from_snapshot",
        keys,
        elapsed,
        snapshot_bytes,
    );
}

async fn time_open(config: &Config) -> (Duration, i64) {
    let started = Instant::now();
    let store = Store::start(config).await.expect("recover");
    let elapsed = started.elapsed();
    (elapsed, store.revision())
}

fn report(json: bool, case: &str, keys: usize, elapsed: Duration, bytes: u64) {
    if json {
        println!(
            r#"{{"case":"{case}","keys":{keys},"seconds":{:.3},"bytes":{bytes}}}"#,
            elapsed.as_secs_f64()
        );
    } else {
        println!(
            "{case:<24} keys={keys:<9} {:>8.3} s  data={:.1} MiB",
            elapsed.as_secs_f64(),
            bytes as f64 / 1048576.0
        );
    }
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1)?.parse().ok()
}

fn flush(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(file) = std::fs::File::open(&path) {
            let _ = file.sync_all();
        }
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}
