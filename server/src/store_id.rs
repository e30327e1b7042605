//! [`StoreId`]: which store a revision belongs to. Revisions count one store's changes, so a
//! watch resumed, or a read floor carried, from one store to another would skip changes or wait
//! for nothing; requests that carry revisions also carry the store they came from.

use std::fmt;

use sha2::{Digest, Sha256};

/// Longest store identity accepted from a client: every identity this server makes is shorter
/// (a random one is 32 characters, one on etcd 38).
pub const MAX_LEN: usize = 64;

/// A store's identity: letters, digits and dashes, at most [`MAX_LEN`] characters, so that it
/// travels as an HTTP header value and quoting it in a message stays short.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreId(String);

impl StoreId {
    /// A fresh identity: 128 random bits from the OS, as 32 hex digits.
    pub fn random() -> StoreId {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        StoreId(hex(&bytes))
    }

    /// The identity of jsonkv's keyspace under `prefix` in the etcd cluster `cluster_id`: a
    /// cluster keeps its ID for life (a restore from a snapshot makes a new one), and each
    /// prefix is a keyspace of its own. Every server of the cluster computes the same.
    pub fn of_etcd_prefix(cluster_id: u64, prefix: &str) -> StoreId {
        let prefix = hex(&Sha256::digest(prefix.as_bytes())[..8]);
        StoreId(format!("etcd-{cluster_id:016x}-{prefix}"))
    }

    /// `text` as an identity, if it has the form of one; otherwise why not, without quoting
    /// it (it may be anything a client sent).
    pub fn parse(text: &str) -> Result<StoreId, String> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(format!(
                "a store identity is 1 to {MAX_LEN} characters, this one is {}",
                text.len()
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("a store identity has only letters, digits and dashes".into());
        }
        Ok(StoreId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_made_here_parse_and_others_are_refused() {
        let random = StoreId::random();
        assert_eq!(random.as_str().len(), 32);
        assert_ne!(random, StoreId::random());
        assert_eq!(StoreId::parse(random.as_str()), Ok(random));
        let etcd = StoreId::of_etcd_prefix(0xabc, "/jsonkv/");
        assert_eq!(etcd.as_str().len(), 38);
        assert!(etcd.as_str().starts_with("etcd-0000000000000abc-"));
        assert_eq!(StoreId::parse(etcd.as_str()), Ok(etcd));
        assert!(StoreId::parse("").is_err());
        assert!(StoreId::parse(&"a".repeat(MAX_LEN + 1)).is_err());
        let err = StoreId::parse("a b\n<script>").unwrap_err();
        assert!(!err.contains("script"), "quotes the input: {err}");
    }
}
