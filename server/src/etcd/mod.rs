//! The cluster backend (`--etcd`): etcd is the source of truth, and this server's `Database` is
//! a materialized view of jsonkv's prefix in it.
//!
//! - [`Remote`] speaks to etcd: writes become etcd requests (a compare-and-swap is a Txn on the
//!   key's `mod_revision`), and linearizable reads are etcd ranges. etcd's key metadata
//!   (create/mod revision, version) is jsonkv's, one to one.
//! - [`follow`] keeps a [`View`] (the store) in step: it watches the prefix from the view's
//!   revision + 1 and applies every event in revision order, re-watching from where it stopped
//!   whenever etcd goes away, so local watchers see no gap. Only when etcd has compacted the
//!   revisions it missed does it reload the view, and the store ends the watches it cannot
//!   serve without a gap.
//! - [`Replay`] serves a watch resume older than the local history from etcd's own history.
//!
//! Values are stored in etcd as compact JSON text, and read back as they are (checked, not
//! parsed). A value under the prefix that is not JSON (written by something other than
//! jsonkv) is treated as absent, with a warning; JSON written by something else is served as
//! it was written.
//!
//! Files: `remote.rs` (the client and its errors), `connect.rs` (TLS, login and the first
//! request), `follow.rs` (the follower and `Replay`).

mod connect;
mod follow;
mod remote;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use follow::{follow, Replay, View};
pub use remote::{Remote, Written};

/// Where jsonkv keeps its keys in etcd, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`; all `https://` with
    /// `tls`, all `http://` without.
    pub endpoints: Vec<String>,
    /// Every jsonkv key is stored in etcd under this prefix.
    pub prefix: String,
    /// How long one etcd request may take before the call fails with UNAVAILABLE.
    pub timeout: Duration,
    /// Speak TLS to etcd, with these files; `None` speaks plaintext.
    pub tls: Option<EtcdTls>,
    /// Log in to etcd (etcd's own user/password authentication) as this user; `None` sends
    /// no credentials.
    pub user: Option<EtcdUser>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/jsonkv/".into(),
            timeout: Duration::from_secs(5),
            tls: None,
            user: None,
        }
    }
}

/// The PEM files for reaching etcd over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates: the only one trusted for them.
    pub ca: PathBuf,
    /// A client certificate chain and its private key, for members run with
    /// `--client-cert-auth`.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// An etcd user and its password. `Debug` leaves the password out, so that logging a config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
