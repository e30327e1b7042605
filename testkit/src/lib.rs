//! jsonkv-testkit: real etcd for jsonkv's tests, on loopback, started and cleaned up by the test.
//!
//! Tests of the cluster backend (`jsonkv-server --etcd ENDPOINTS`) need an etcd. This kit runs
//! the `etcd` binary on `PATH` (Debian's `etcd-server` 3.4; `scripts/test.sh` installs it when
//! missing) on free ports of 127.0.0.1, never on etcd's default 2379/2380, each member with its own
//! temporary data directory and log.
//!
//! - Most tests share one etcd per test process, [`shared_etcd`], and keep apart by key prefix,
//!   [`unique_prefix`].
//! - Tests that break things, or that compact, start an [`EtcdCluster`] of their own, of one or
//!   more members. It can kill a member (SIGKILL), restart it with its data, find the leader,
//!   wait until the cluster is healthy, and compact.
//! - Tests of a secured etcd start one with [`EtcdCluster::start_tls`]: TLS and client
//!   certificates on the client URLs, made at start ([`EtcdTlsFiles`]). Any cluster can also
//!   turn on etcd's user/password authentication ([`EtcdCluster::enable_auth`]).
//!
//! No etcd outlives its test process. Dropping an [`EtcdCluster`] kills its members and removes
//! their files. Each etcd also runs under a small `sh` watchdog that holds the read end of a pipe
//! whose only writer is the test process. When that process ends by any means (an `exit` without
//! destructors, a panic while starting a static, SIGKILL), the kernel closes the pipe, and the
//! watchdog kills etcd and removes its directory. That is also how the never-dropped
//! [`shared_etcd`] goes away.
//!
//! Waits are bounded (30 s) and end in a panic that names the member's log and quotes its last
//! lines. When a test panics, its clusters keep their logs and say where on stderr.
//!
//! ```
//! use jsonkv_testkit::{shared_etcd, unique_prefix, EtcdCluster};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Most tests: the process's etcd, under a prefix no other test uses.
//! let etcd = shared_etcd();
//! let prefix = unique_prefix();
//! let mut client = etcd.client().await;
//! client.put(format!("{prefix}greeting"), "hello", None).await.unwrap();
//! // A jsonkv-server under test would get `--etcd` etcd.endpoints_arg().
//!
//! // Fault tests: a cluster of their own.
//! let mut cluster = EtcdCluster::start(3).await;
//! let leader = cluster.leader().await;
//! cluster.kill(leader);
//! cluster.wait_healthy().await; // the two others have elected a new leader
//! cluster.restart(leader).await; // back in the cluster: same name, ports and data
//! # }
//! ```
//!
//! Layout:
//! - [`cluster`](EtcdCluster): `EtcdCluster`, its faults and helpers.
//! - `member`: one etcd process, its files, its health probe and its watchdog.
//! - [`pki`](EtcdTlsFiles): the certificates of a TLS cluster.
//! - [`shared`](shared_etcd): the per-process shared etcd.
//! - [`unique`](unique_prefix): names no other test has (prefixes, cluster tokens).

mod cluster;
mod member;
mod pki;
mod shared;
mod unique;

pub use cluster::EtcdCluster;
/// The etcd client crate, at the version [`EtcdCluster::client`] returns.
pub use etcd_client;
pub use pki::EtcdTlsFiles;
pub use shared::shared_etcd;
pub use unique::unique_prefix;
