//! TLS for the gRPC listener: reads the PEM files `--tls-cert`, `--tls-key` and
//! `--tls-client-ca` name into tonic's rustls-based server configuration.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::TlsFiles;
use crate::error::Error;

/// A handshake that has not finished by then is dropped, so that connections that stall in
/// it (or plaintext clients that never speak TLS) cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings from `files`: its certificate and key, and with a client CA,
/// mutual TLS (every client must present a certificate that CA signed).
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, Error> {
    let cert = read(&files.cert, "TLS certificate")?;
    let key = read(&files.key, "TLS key")?;
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    // tonic parses the PEM when the config is applied; do it now, so that a bad file stops
    // start-up with its name rather than failing later.
    Server::builder().tls_config(config.clone()).map_err(|e| {
        Error::Config(format!(
            "TLS certificate {} with key {}: {}",
            files.cert.display(),
            files.key.display(),
            error_chain(&e)
        ))
    })?;
    Ok(config)
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
