//! The server's integration tests, built as one binary: the shared modules compile once, and
//! one link replaces one per file. Each module below was a test file of its own; run one with
//! `cargo test -p jsonkv-server --test it watch::`. Each module's doc names the guarantees it
//! proves and the tests that prove them.
//!
//! Two tests keep a binary, and so a process, of their own, and say why in their module docs:
//! `auth_logs.rs` installs the process-wide tracing subscriber, and `load.rs` loads the machine
//! for as long as `JSONKV_LOAD_SECS` says.

#[path = "../blackhole/mod.rs"]
mod blackhole;
#[path = "../certs/mod.rs"]
mod certs;
#[path = "../common/mod.rs"]
mod common;
#[path = "../prom/mod.rs"]
mod prom;

mod api;
mod auth;
mod backup;
mod cluster;
mod cluster_tls;
mod connections;
mod crash;
mod fuzz;
mod http;
mod leases;
mod limits;
mod live_query;
mod metrics;
mod process;
mod service_consistency;
mod service_large_values;
mod storage;
mod tls;
mod txn;
mod watch;
