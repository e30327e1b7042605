//! Bearer tokens with roles: the `--auth-tokens` file ([`Tokens`]), and the rule for which
//! methods a role may call. The layer that applies it to every call is
//! [`crate::layers::auth`].
//!
//! A call must carry `authorization: Bearer TOKEN`. No token, or one not in the file:
//! UNAUTHENTICATED. A `read` token may call only the methods in [`READ_METHODS`], an `admin`
//! token only those in [`ADMIN_METHODS`]; anything else, including a method added later, needs
//! a `write` token (PERMISSION_DENIED otherwise).
//!
//! A token may be scoped to key prefixes (`ROLE TOKEN PREFIX...`): it may then call only the
//! methods in [`SCOPED_METHODS`], and the service checks each call's key or prefix against its
//! [`Scope`], which the layer hands on in the request's extensions, before it reads or writes
//! anything: out of scope is PERMISSION_DENIED whether or not the key exists.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, and no token ever
//! reaches a log line or an error message: refusals are logged with the method and peer only.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::Error;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Get, List, the watches, Status, and looking up leases.
    Read,
    /// Everything.
    Write,
    /// Operations without keys: Status and Backup ([`ADMIN_METHODS`]), for a backup job's
    /// token that should not read or write keys one by one.
    Admin,
}

/// The methods a `read` token may call. Read access is listed rather than write access, so
/// that a method added later is closed to read tokens until someone decides otherwise.
pub const READ_METHODS: [&str; 7] = [
    "Get",
    "List",
    "WatchKey",
    "WatchPrefix",
    "Status",
    "LeaseTimeToLive",
    "LeaseList",
];

/// The methods an `admin` token may call.
pub const ADMIN_METHODS: [&str; 2] = ["Status", "Backup"];

/// The methods a token scoped to prefixes may call: each names the keys it touches, which the
/// service checks against the scope (the lease calls check the keys a lease holds, see
/// [`crate::lease_rpc`]). Anything else (`Status`, which counts the whole store, `LeaseList`,
/// and any method added later) needs an unscoped token.
pub const SCOPED_METHODS: [&str; 13] = [
    "Get",
    "Insert",
    "Delete",
    "List",
    "Patch",
    "Txn",
    "WatchKey",
    "WatchPrefix",
    "LeaseGrant",
    "LeaseKeepAlive",
    "LeaseKeepAliveStream",
    "LeaseRevoke",
    "LeaseTimeToLive",
];

/// The keys a call's token may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole keyspace: an unscoped token, or no tokens at all.
    All,
    /// Keys starting with one of these prefixes.
    Prefixes(Arc<[String]>),
}

impl Scope {
    /// The scope a request's token was given, from its extensions (the auth layer puts it
    /// there); the whole keyspace when none is (auth is off).
    pub fn of(extensions: &tonic::Extensions) -> Scope {
        extensions.get::<Scope>().cloned().unwrap_or(Scope::All)
    }

    /// `Ok` if `key` is in scope.
    pub fn key(&self, key: &str) -> Result<(), Error> {
        match self {
            Scope::All => Ok(()),
            Scope::Prefixes(prefixes) if prefixes.iter().any(|p| key.starts_with(p.as_str())) => {
                Ok(())
            }
            Scope::Prefixes(_) => Err(Error::OutOfScope("the key is outside this token's scope")),
        }
    }

    /// `Ok` if every key under `prefix` is in scope: `prefix` lies inside one of the scope's.
    pub fn prefix(&self, prefix: &str) -> Result<(), Error> {
        self.key(prefix)
            .map_err(|_| Error::OutOfScope("the prefix reaches outside this token's scope"))
    }
}

/// The accepted tokens, as SHA-256 digests with their roles and scopes. Its `Debug` shows
/// only counts.
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

struct TokenEntry {
    digest: [u8; 32],
    role: Role,
    scope: Scope,
}

/// What a token that passed [`Tokens::check`] may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
    /// Which token it was, to check it again after a reload ([`Tokens::recheck`]).
    pub token: TokenDigest,
}

/// A token's SHA-256 digest. Its `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let writers = self.entries.iter().filter(|e| e.role == Role::Write);
        f.debug_struct("Tokens")
            .field("write", &writers.count())
            .field("total", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Reads a tokens file; the error names the file and line, never the token.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read tokens file {}: {e}", path.display()))
        })?;
        Tokens::parse(&text)
            .map_err(|why| Error::Config(format!("tokens file {}: {why}", path.display())))
    }

    /// Parses lines of `ROLE TOKEN [PREFIX...]`, ROLE `read`, `write` or `admin`; with
    /// prefixes, the token may touch only keys under them. Blank lines and lines starting with
    /// `#` are skipped. A token is visible ASCII without spaces (what an HTTP header carries);
    /// so is a prefix, which cannot hold a space.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        let mut lines_of = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, token, ref prefixes @ ..] = fields[..] else {
                return Err(format!(
                    "line {number}: expected `read TOKEN` or `write TOKEN` (then any key \
                     prefixes it is limited to), found {} word(s)",
                    fields.len()
                ));
            };
            // The words are not echoed: a line written the wrong way round would otherwise
            // print its token.
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                "admin" => Role::Admin,
                _ => {
                    return Err(format!(
                        "line {number}: the first word must be `read`, `write` or `admin`"
                    ))
                }
            };
            if role == Role::Admin && !prefixes.is_empty() {
                return Err(format!(
                    "line {number}: an admin token reaches the whole store; it takes no prefixes"
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {number}: the token has characters an HTTP header cannot carry \
                     (use visible ASCII)"
                ));
            }
            let digest = digest(token.as_bytes());
            if let Some(i) = entries.iter().position(|e| e.digest == digest) {
                return Err(format!(
                    "line {number}: the same token is already on line {}",
                    lines_of[i]
                ));
            }
            let scope = if prefixes.is_empty() {
                Scope::All
            } else {
                Scope::Prefixes(prefixes.iter().map(|p| p.to_string()).collect())
            };
            entries.push(TokenEntry {
                digest,
                role,
                scope,
            });
            lines_of.push(number);
        }
        if entries.is_empty() {
            return Err("no tokens: every call would be refused".into());
        }
        Ok(Tokens { entries })
    }

    /// The entry of `token`, if it is one of ours. Every entry is compared, in constant time,
    /// as a digest: how long it takes says nothing about how close the token came, nor about
    /// the length of any real token.
    fn entry_of(&self, token: &[u8]) -> Option<&TokenEntry> {
        self.entry_by_digest(&digest(token))
    }

    fn entry_by_digest(&self, presented: &[u8; 32]) -> Option<&TokenEntry> {
        // Indexes as u32, so that the match is selected without branching on a comparison.
        let mut found = u32::MAX;
        for (index, entry) in self.entries.iter().enumerate() {
            found.conditional_assign(&(index as u32), entry.digest.ct_eq(presented));
        }
        self.entries.get(found as usize)
    }

    /// The role of `token`, if it is one of ours.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        self.entry_of(token).map(|entry| entry.role)
    }

    /// Whether the call may go ahead: what its token may do, or the error to answer with.
    pub fn check(&self, method: &str, authorization: Option<&[u8]>) -> Result<Grant, Error> {
        let token = authorization
            .and_then(bearer_token)
            .ok_or(Error::Unauthenticated(
                "missing bearer token: send the header `authorization: Bearer TOKEN`",
            ))?;
        let entry = self
            .entry_of(token)
            .ok_or(Error::Unauthenticated("unknown token"))?;
        Tokens::grant(entry, method)
    }

    /// [`Tokens::check`] for a token checked before (a watch's, after the file was reloaded):
    /// what it may do now, or the error that ends the call.
    pub fn recheck(&self, token: TokenDigest, method: &str) -> Result<Grant, Error> {
        let entry = self
            .entry_by_digest(&token.0)
            .ok_or(Error::Unauthenticated("the token was removed"))?;
        Tokens::grant(entry, method)
    }

    fn grant(entry: &TokenEntry, method: &str) -> Result<Grant, Error> {
        let who = match entry.role {
            Role::Read if !READ_METHODS.contains(&method) => Some("a read-only token"),
            Role::Admin if !ADMIN_METHODS.contains(&method) => Some("an admin token"),
            _ => None,
        };
        if let Some(who) = who {
            return Err(Error::PermissionDenied {
                who,
                method: method.to_owned(),
            });
        }
        if entry.scope != Scope::All && !SCOPED_METHODS.contains(&method) {
            return Err(Error::OutOfScope(
                "a token limited to key prefixes may not make this call",
            ));
        }
        Ok(Grant {
            role: entry.role,
            scope: entry.scope.clone(),
            token: TokenDigest(entry.digest),
        })
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The token of an `authorization` header value of the Bearer scheme (any letter case, as
/// HTTP auth schemes are).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# operators
write w-0123456789

read  r-abcdef   \n";

    #[test]
    fn lines_give_roles_and_comments_and_blanks_are_skipped() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.role_of(b"w-0123456789"), Some(Role::Write));
        assert_eq!(tokens.role_of(b"r-abcdef"), Some(Role::Read));
        assert_eq!(tokens.role_of(b"r-abcde"), None);
        assert_eq!(tokens.role_of(b""), None);
        assert_eq!(format!("{tokens:?}"), "Tokens { write: 1, total: 2 }");
    }

    #[test]
    fn malformed_files_name_the_line_but_never_the_token() {
        for (text, why) in [
            (
                "read a\nowner s3cret\n",
                "line 2: the first word must be `read`, `write` or `admin`",
            ),
            (
                "s3cret read\n",
                "line 1: the first word must be `read`, `write` or `admin`",
            ),
            (
                "\n\nwrite\n",
                "line 3: expected `read TOKEN` or `write TOKEN` (then any key prefixes it is \
                 limited to), found 1 word(s)",
            ),
            (
                "write s3cret\nread s3cret\n",
                "line 2: the same token is already on line 1",
            ),
            (
                "write s3\u{e9}cret\n",
                "line 1: the token has characters an HTTP header cannot carry (use visible ASCII)",
            ),
            ("# nothing\n\n", "no tokens: every call would be refused"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert_eq!(err, why, "for {text:?}");
            assert!(!err.contains("s3"), "the error shows a token: {err}");
        }
    }

    #[test]
    fn read_tokens_may_only_read_and_unknown_methods_need_write() {
        let tokens = Tokens::parse("read r\nwrite w\n").unwrap();
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let granted = |role, token: &str| {
            Ok(Grant {
                role,
                scope: Scope::All,
                token: TokenDigest(digest(token.as_bytes())),
            })
        };
        for method in READ_METHODS {
            assert_eq!(
                tokens.check(method, Some(&bearer("r"))),
                granted(Role::Read, "r")
            );
        }
        for method in ["Insert", "Delete", "SomethingNew"] {
            assert_eq!(
                tokens.check(method, Some(&bearer("r"))),
                Err(Error::PermissionDenied {
                    who: "a read-only token",
                    method: method.into()
                })
            );
            assert_eq!(
                tokens.check(method, Some(&bearer("w"))),
                granted(Role::Write, "w")
            );
        }
        assert!(matches!(
            tokens.check("Get", None),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            tokens.check("Get", Some(b"Basic r")),
            Err(Error::Unauthenticated(_))
        ));
        assert_eq!(
            tokens.check("Get", Some(&bearer("x"))),
            Err(Error::Unauthenticated("unknown token"))
        );
        assert_eq!(
            tokens.check("Get", Some(b"bearer   r ")),
            granted(Role::Read, "r")
        );
    }

    #[test]
    fn a_scoped_token_gets_its_prefixes_and_only_calls_that_name_keys() {
        let tokens = Tokens::parse("write w app1/ shared/\nread r app1/\nwrite all\n").unwrap();
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let scope = tokens.check("Insert", Some(&bearer("w"))).unwrap().scope;
        assert_eq!(
            scope,
            Scope::Prefixes(vec!["app1/".to_owned(), "shared/".to_owned()].into())
        );
        for method in SCOPED_METHODS {
            assert!(tokens.check(method, Some(&bearer("w"))).is_ok(), "{method}");
        }
        for method in ["Status", "SomethingNew"] {
            assert!(matches!(
                tokens.check(method, Some(&bearer("w"))),
                Err(Error::OutOfScope(_))
            ));
        }
        assert_eq!(
            tokens.check("Status", Some(&bearer("all"))).unwrap().scope,
            Scope::All
        );
        // Roles still hold within a scope.
        assert!(matches!(
            tokens.check("Insert", Some(&bearer("r"))),
            Err(Error::PermissionDenied { .. })
        ));
    }

    #[test]
    fn an_admin_token_may_run_operations_only_and_takes_no_prefixes() {
        let tokens = Tokens::parse("admin a\n").unwrap();
        let bearer = b"Bearer a";
        for method in ADMIN_METHODS {
            assert!(tokens.check(method, Some(bearer)).is_ok(), "{method}");
        }
        for method in ["Get", "Insert", "WatchPrefix", "SomethingNew"] {
            assert_eq!(
                tokens.check(method, Some(bearer)),
                Err(Error::PermissionDenied {
                    who: "an admin token",
                    method: method.into()
                })
            );
        }
        assert_eq!(
            Tokens::parse("admin a app/\n").err().unwrap(),
            "line 1: an admin token reaches the whole store; it takes no prefixes"
        );
    }

    #[test]
    fn a_scope_holds_keys_and_prefixes_inside_its_prefixes_only() {
        // Overlapping prefixes (a/ and a/b/) grant their union.
        let scope =
            Scope::Prefixes(vec!["app1/".to_owned(), "a/b/".to_owned(), "a/".to_owned()].into());
        for key in ["app1/x", "app1/", "a/b/c", "a/c", "a/"] {
            assert_eq!(scope.key(key), Ok(()), "{key}");
            assert_eq!(scope.prefix(key), Ok(()), "{key}");
        }
        // app1/ does not grant app10/, nor the prefix app1 (which reaches app10/).
        for outside in ["app10/x", "app1", "", "a", "b/a/"] {
            assert!(
                matches!(scope.key(outside), Err(Error::OutOfScope(_))),
                "{outside}"
            );
            assert!(
                matches!(scope.prefix(outside), Err(Error::OutOfScope(_))),
                "{outside}"
            );
        }
        assert_eq!(Scope::All.prefix(""), Ok(()));
    }
}
