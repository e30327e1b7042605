//! Setting up the link to etcd: the TLS settings from the `--etcd-ca/-cert/-key` files, and
//! the first request, whose failure is explained on one line in the flags' terms.

use etcd_client::{Certificate, Identity, TlsOptions};

use super::error::status_text;
use crate::config::EtcdConfig;
use crate::error::Error;
use crate::tls;

/// The etcd client's TLS settings from `config`'s files; `None` for plaintext. Every endpoint
/// must have the scheme that agrees: etcd-client would refuse a `http://` one with TLS settings
/// only when connecting, and `https://` without a CA could trust nothing.
pub(super) fn tls_options(config: &EtcdConfig) -> Result<Option<TlsOptions>, Error> {
    let Some(tls) = &config.tls else {
        return match config.endpoints.iter().find(|e| e.starts_with("https://")) {
            Some(endpoint) => Err(Error::Config(format!(
                "etcd endpoint {endpoint} is https://, but no CA to trust for it is given (--etcd-ca)"
            ))),
            None => Ok(None),
        };
    };
    if let Some(endpoint) = config.endpoints.iter().find(|e| !e.starts_with("https://")) {
        return Err(Error::Config(format!(
            "etcd TLS files are given (--etcd-ca), but etcd endpoint {endpoint} is not https://"
        )));
    }
    let mut options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(tls::read(&tls.ca, "etcd CA")?));
    if let Some((cert, key)) = &tls.client {
        options = options.identity(Identity::from_pem(
            tls::read(cert, "etcd client certificate")?,
            tls::read(key, "etcd client key")?,
        ));
    }
    Ok(Some(options))
}

/// Runs a request of [`Remote::connect`] under the configured timeout, with its errors on one
/// line that says what they most likely mean.
pub(super) async fn first_request<T>(
    config: &EtcdConfig,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(config.timeout, request).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(connect_error(config, err)),
        Err(_) => Err(Error::Unavailable(format!(
            "etcd at {} did not answer within {:?}{}",
            config.endpoints.join(","),
            config.timeout,
            user_phrase(config),
        ))),
    }
}

/// Why connecting failed, on one line. `Client::connect` itself only parses the TLS files,
/// unless it logs in.
fn connect_error(config: &EtcdConfig, err: etcd_client::Error) -> Error {
    use tonic::Code;
    match err {
        etcd_client::Error::TransportError(err) => {
            let files = config.tls.iter().flat_map(|tls| {
                std::iter::once(&tls.ca).chain(tls.client.iter().flat_map(|(c, k)| [c, k]))
            });
            Error::Config(format!(
                "cannot use the etcd TLS files {}: {}",
                files
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                tls::error_chain(&err)
            ))
        }
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                let text = status_text(&status);
                let hint = if config.tls.is_some() {
                    tls_hint(&text)
                } else {
                    ""
                };
                Error::Unavailable(format!(
                    "cannot reach etcd at {}{}: {text}{hint}",
                    config.endpoints.join(","),
                    user_phrase(config),
                ))
            }
            _ => Error::Config(format!(
                "etcd refused{}: {}",
                user_phrase(config),
                status.message()
            )),
        },
        other => Error::Config(format!(
            "cannot use etcd endpoints {}: {other}",
            config.endpoints.join(",")
        )),
    }
}

/// What a TLS failure to connect most likely means, in the flags' terms, or "".
fn tls_hint(text: &str) -> &'static str {
    if text.contains("invalid peer certificate") {
        " (check that --etcd-ca is the CA that signed the etcd members' certificates, and that \
         those name the endpoint's host)"
    } else if [
        "fatal alert",
        "connection closed",
        "broken pipe",
        "connection reset",
    ]
    .iter()
    .any(|sign| text.contains(sign))
    {
        // How a member that refuses the client certificate shows: an alert, or (the TLS 1.3
        // handshake being over for the client) just a connection it closes, which the client
        // sees as closed, or as a broken pipe or a reset if it was writing at that moment.
        " (etcd most likely refused the client certificate: it wants one, --etcd-cert and \
         --etcd-key, signed by a CA in its --trusted-ca-file)"
    } else {
        ""
    }
}

/// " to log in user NAME" when there is a user, for messages about connecting.
fn user_phrase(config: &EtcdConfig) -> String {
    config
        .user
        .as_ref()
        .map_or_else(String::new, |u| format!(" to log in user {}", u.name))
}
