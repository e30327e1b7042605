//! TLS files: reads the PEM files `--tls-cert`, `--tls-key` and `--tls-client-ca` into the
//! listener's rustls configuration, and the etcd client's files for `backend/etcd`.

use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::error::Error;

/// The listener's TLS, which a reload replaces while the server serves: each new connection
/// takes the certificate in force then, and open connections keep theirs. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl ServerTls {
    /// Reads `files`; the error names the file that is wrong.
    pub fn load(files: &TlsFiles) -> Result<ServerTls, Error> {
        Ok(ServerTls {
            files: files.clone(),
            current: Arc::new(RwLock::new(acceptor(files)?)),
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().clone()
    }

    /// Reads the files again and puts them in force for new connections; files that fail to
    /// load leave the certificate in force as it was.
    pub fn reload(&self) -> Result<(), Error> {
        let fresh = acceptor(&self.files)?;
        *self.current.write() = fresh;
        Ok(())
    }
}

/// The listener's TLS from `files`: its certificate and key, and with a client CA, mutual
/// TLS (every client must present a certificate that CA signed). HTTP/2 is offered through
/// ALPN, as gRPC clients require, and HTTP/1.1.
fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, Error> {
    let bad = |what: &str, path: &Path, err: &dyn std::fmt::Display| {
        Error::Config(format!("{what} {}: {err}", path.display()))
    };
    let certs = CertificateDer::pem_slice_iter(&read(&files.cert, "TLS certificate")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("TLS certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("TLS certificate", &files.cert, &"no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "TLS key")?)
        .map_err(|e| bad("TLS key", &files.key, &e))?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(ca, "client CA")?) {
                let cert = cert.map_err(|e| bad("client CA", ca, &e))?;
                roots.add(cert).map_err(|e| bad("client CA", ca, &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad("client CA", ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        Error::Config(format!(
            "TLS certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    // HTTP/1.1 for the HTTP API's clients; gRPC clients ask for h2.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The PEM file at `path`, or an error that names it (as `what`) and says what is wrong.
pub(crate) fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", path.display())))?;
    // rustls would only say "no certificate" later; name the file now.
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Config(format!(
            "{what} {} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(pem)
}

/// An error and its causes on one line: tonic's own message ("transport error") says little.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
