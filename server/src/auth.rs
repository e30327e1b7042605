//! Bearer tokens with roles: the `--auth-tokens` file ([`Tokens`]), and the rule for which
//! methods a role may call. The layer that applies it to every call is
//! [`crate::layers::auth`].
//!
//! A call must carry `authorization: Bearer TOKEN`. No token, or one not in the file:
//! UNAUTHENTICATED. A `read` token may call only the methods in [`READ_METHODS`]; anything else,
//! including a method added later, needs a `write` token (PERMISSION_DENIED otherwise).
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, and no token ever
//! reaches a log line or an error message: refusals are logged with the method and peer only.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::Error;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Get, List and the watches.
    Read,
    /// Everything.
    Write,
}

/// The methods a `read` token may call. Read access is listed rather than write access, so
/// that a method added later is closed to read tokens until someone decides otherwise.
pub const READ_METHODS: [&str; 5] = ["Get", "List", "WatchKey", "WatchPrefix", "Status"];

/// The accepted tokens, as SHA-256 digests with their roles. Its `Debug` shows only counts.
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

struct TokenEntry {
    digest: [u8; 32],
    role: Role,
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

// Roles as bytes, so that a lookup can select one without branching on a comparison.
const NO_ROLE: u8 = 0;
const READ: u8 = 1;
const WRITE: u8 = 2;

impl Tokens {
    /// Reads a tokens file; the error names the file and line, never the token.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read tokens file {}: {e}", path.display()))
        })?;
        Tokens::parse(&text)
            .map_err(|why| Error::Config(format!("tokens file {}: {why}", path.display())))
    }

    /// Parses lines of `read TOKEN` or `write TOKEN`. Blank lines and lines starting with `#`
    /// are skipped. A token is visible ASCII without spaces (what an HTTP header carries).
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
            let [role, token] = fields[..] else {
                return Err(format!(
                    "line {number}: expected `read TOKEN` or `write TOKEN`, found {} word(s)",
                    fields.len()
                ));
            };
            // The words are not echoed: a line written the wrong way round would otherwise
            // print its token.
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                _ => {
                    return Err(format!(
                        "line {number}: the first word must be `read` or `write`"
                    ))
                }
            };
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
            entries.push(TokenEntry { digest, role });
            lines_of.push(number);
        }
        if entries.is_empty() {
            return Err("no tokens: every call would be refused".into());
        }
        Ok(Tokens { entries })
    }

    /// The role of `token`, if it is one of ours. Every entry is compared, in constant time,
    /// as a digest: how long it takes says nothing about how close the token came, nor about
    /// the length of any real token.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let presented = digest(token);
        let mut found = NO_ROLE;
        for entry in &self.entries {
            let code = match entry.role {
                Role::Read => READ,
                Role::Write => WRITE,
            };
            found.conditional_assign(&code, entry.digest.ct_eq(&presented));
        }
        match found {
            READ => Some(Role::Read),
            WRITE => Some(Role::Write),
            _ => None,
        }
    }

    /// Whether the call may go ahead: `Ok`, or the error to answer with.
    pub fn check(&self, method: &str, authorization: Option<&[u8]>) -> Result<(), Error> {
        let token = authorization
            .and_then(bearer_token)
            .ok_or(Error::Unauthenticated(
                "missing bearer token: send the header `authorization: Bearer TOKEN`",
            ))?;
        match self.role_of(token) {
            None => Err(Error::Unauthenticated("unknown token")),
            Some(Role::Write) => Ok(()),
            Some(Role::Read) if READ_METHODS.contains(&method) => Ok(()),
            Some(Role::Read) => Err(Error::PermissionDenied {
                method: method.to_owned(),
            }),
        }
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
                "read a\nadmin s3cret\n",
                "line 2: the first word must be `read` or `write`",
            ),
            (
                "s3cret read\n",
                "line 1: the first word must be `read` or `write`",
            ),
            (
                "\n\nwrite\n",
                "line 3: expected `read TOKEN` or `write TOKEN`, found 1 word(s)",
            ),
            (
                "write s3cret extra\n",
                "line 1: expected `read TOKEN` or `write TOKEN`, found 3 word(s)",
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
        for method in READ_METHODS {
            assert_eq!(tokens.check(method, Some(&bearer("r"))), Ok(()));
        }
        for method in ["Insert", "Delete", "SomethingNew"] {
            assert_eq!(
                tokens.check(method, Some(&bearer("r"))),
                Err(Error::PermissionDenied {
                    method: method.into()
                })
            );
            assert_eq!(tokens.check(method, Some(&bearer("w"))), Ok(()));
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
        assert_eq!(tokens.check("Get", Some(b"bearer   r ")), Ok(()));
    }
}
