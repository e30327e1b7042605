//! The client's integration tests, built as one binary: the shared modules compile once, and one
//! link replaces one per file. Each module below was a test file of its own; run one with
//! `cargo test -p jsonkv-client --test it watch::`. A module's doc names the guarantees it
//! proves, if any, and the tests that prove them.

/// The server's test certificates, shared with its tests.
#[path = "../../../server/tests/certs/mod.rs"]
mod certs;
mod common;

mod cli;
mod client;
mod cluster;
mod consistency;
mod failover;
mod leases;
mod secure;
mod txn;
mod watch;
