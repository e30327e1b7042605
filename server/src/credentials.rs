//! [`TokenStore`]: the tokens file as the server holds it now, which a reload (SIGHUP)
//! replaces whole or not at all; and [`Credential`], what one call's token was granted, which
//! a call that lasts (a watch) checks again after each reload, so that a removed or narrowed
//! token loses what it may no longer see.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::auth::{Grant, Scope, Tokens};
use crate::error::Error;

/// The tokens in force, and the file they come from.
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<Arc<Tokens>>,
    /// Counts reloads; every credential listens, to check itself again.
    reloads: watch::Sender<u64>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("path", &self.path)
            .field("tokens", &*self.current.read())
            .finish()
    }
}

impl TokenStore {
    /// Reads the tokens file at `path`; the error names the file and line, never a token.
    pub fn load(path: &Path) -> Result<Arc<TokenStore>, Error> {
        Ok(Arc::new(TokenStore {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(Tokens::load(path)?)),
            reloads: watch::Sender::new(0),
        }))
    }

    /// Reads the file again and puts it in force. A file that cannot be read or parsed leaves
    /// the tokens as they were, and says why.
    pub fn reload(&self) -> Result<(), Error> {
        let tokens = Tokens::load(&self.path)?;
        *self.current.write() = Arc::new(tokens);
        self.reloads.send_modify(|count| *count += 1);
        Ok(())
    }

    /// Whether a call of `method` with this `authorization` header may go ahead, and with
    /// what: [`Tokens::check`] against the tokens in force.
    pub fn check(&self, method: &str, authorization: Option<&[u8]>) -> Result<Grant, Error> {
        self.current.read().check(method, authorization)
    }

    /// What a call that lasts (a watch) keeps, to check `grant` again after each reload.
    pub fn credential(self: &Arc<Self>, grant: Grant, method: &str) -> Credential {
        Credential {
            store: Arc::clone(self),
            grant,
            method: method.to_owned(),
            reloads: self.reloads.subscribe(),
        }
    }
}

/// What one call's token was granted, kept with the call.
#[derive(Debug, Clone)]
pub struct Credential {
    store: Arc<TokenStore>,
    grant: Grant,
    method: String,
    reloads: watch::Receiver<u64>,
}

impl Credential {
    pub fn scope(&self) -> &Scope {
        &self.grant.scope
    }

    /// Waits for the next reload of the tokens, then checks the token again for this call's
    /// method: what it may touch now, or the error that ends the call (UNAUTHENTICATED once
    /// removed, PERMISSION_DENIED once it may no longer call the method).
    pub async fn reloaded(&mut self) -> Result<&Scope, Error> {
        if self.reloads.changed().await.is_err() {
            // The store is gone, so no reload can come.
            std::future::pending::<()>().await;
        }
        let tokens = Arc::clone(&self.store.current.read());
        self.grant = tokens.recheck(self.grant.token, &self.method)?;
        Ok(&self.grant.scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_puts_the_new_file_in_force_or_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "write w\nread r\n").unwrap();
        let store = TokenStore::load(&path).unwrap();
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let grant = store.check("WatchPrefix", Some(&bearer("r"))).unwrap();
        let mut reader = store.credential(grant, "WatchPrefix");
        assert_eq!(reader.scope(), &Scope::All);

        // Narrowed: the watch learns its new scope.
        std::fs::write(&path, "write w\nread r app/\n").unwrap();
        store.reload().unwrap();
        let scope = reader.reloaded().await.unwrap().clone();
        assert!(scope.prefix("app/x").is_ok() && scope.prefix("").is_err());

        // A broken file changes nothing.
        std::fs::write(&path, "read\n").unwrap();
        assert!(store.reload().is_err());
        assert!(store.check("Get", Some(&bearer("r"))).is_ok());

        // Removed: the watch ends, and new calls are refused.
        std::fs::write(&path, "write w\n").unwrap();
        store.reload().unwrap();
        assert_eq!(
            reader.reloaded().await.unwrap_err(),
            Error::Unauthenticated("the token was removed")
        );
        assert_eq!(
            store.check("Get", Some(&bearer("r"))).unwrap_err(),
            Error::Unauthenticated("unknown token")
        );
    }
}
