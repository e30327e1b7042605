//! How a [`Client`] connects: [`Client::connect`], and [`ClientBuilder`], which takes the server
//! addresses, the TLS settings (a CA to trust, a client certificate for mutual TLS), the bearer
//! token and the read settings, and opens the connections.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::consistency::Consistency;
use crate::failover::{Server, Servers};
use crate::rpc::{rpc, BearerToken};
use crate::{Client, Error};

/// Bounds the eager connect, so that an address that drops packets fails instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pings on an idle connection so that a watch on a server that vanished without closing the
/// connection (host down, network cut) fails and reconnects instead of waiting forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects to `addr` (`http://host:port`, `https://host:port` with the platform's trusted
    /// roots, or bare `host:port`; several separated by commas) without a token, failing now if
    /// no server can be reached. [`Client::builder`] sets a token, a CA or a client certificate.
    pub async fn connect(addr: impl Into<String>) -> Result<Client, Error> {
        Client::builder(addr).connect().await
    }

    /// Options for connecting to `addr` (one address, or several separated by commas): token,
    /// CA, client certificate, read-your-writes.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(addr.into())
    }
}

/// Options for connecting to jsonkv servers, from [`Client::builder`]. The TLS settings and the
/// token apply to every server in the address list.
///
/// ```no_run
/// # async fn demo() -> Result<(), jsonkv_client::Error> {
/// let client = jsonkv_client::Client::builder("https://db.example:50051")
///     .ca_file("ca.pem")
///     .token(std::env::var("JSONKV_TOKEN").unwrap_or_default())
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    addr: String,
    token: Option<String>,
    ca: Option<Pem>,
    identity: Option<(Pem, Pem)>,
    read_your_writes: bool,
    timeout: Option<Duration>,
}

/// PEM text, or the file to read it from when connecting.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Text(Vec<u8>),
}

impl fmt::Debug for ClientBuilder {
    // By hand, so that the token never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("read_your_writes", &self.read_your_writes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientBuilder {
    fn new(addr: String) -> Self {
        ClientBuilder {
            addr,
            token: None,
            ca: None,
            identity: None,
            read_your_writes: true,
            timeout: None,
        }
    }

    /// Sends `authorization: Bearer TOKEN` with every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts only the CA certificate in this PEM file for `https://` addresses, instead of the
    /// platform's roots (the usual set-up with a private CA).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// Like [`ClientBuilder::ca_file`], with the PEM text itself.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Text(pem.into()));
        self
    }

    /// Presents this certificate and key (PEM files) to servers that require mutual TLS.
    pub fn identity_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

    /// Like [`ClientBuilder::identity_files`], with the PEM text itself.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((Pem::Text(cert.into()), Pem::Text(key.into())));
        self
    }

    /// Whether reads and watches wait for the client's own writes (on by default): each sends
    /// [`Client::revision_floor`] as its `min_revision`, so a server whose view trails the
    /// cluster answers only once it has caught up with them. Off, nothing is sent; the floor is
    /// still kept, to hand to another client ([`Client::observe_revision`]).
    pub fn read_your_writes(mut self, on: bool) -> Self {
        self.read_your_writes = on;
        self
    }

    /// Bounds every call: a get, insert, delete or list page, or the opening of a watch, that
    /// has no answer within `limit` (over all the servers it tries) fails with
    /// DEADLINE_EXCEEDED ([`Error::Status`]), and the client moves on from the server in use, as
    /// from one that is down. A write that times out may still have been applied. A watch whose
    /// opening times out reconnects, like one whose connection broke; once open it streams for
    /// as long as it likes. No limit by default: HTTP/2 keepalive still finds a server that
    /// vanished, but not one that holds a call without answering.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Connects, failing now if no server can be reached. Each address is `http://host:port`,
    /// `https://host:port` (TLS) or bare `host:port` (plaintext); several are separated by
    /// commas. The first that accepts a connection is used first (a server that drops packets
    /// holds this up for the 5 s connect timeout); see [`Client`] for how calls move between
    /// them.
    pub async fn connect(self) -> Result<Client, Error> {
        let addrs = parse_addresses(&self.addr)?;
        let token = BearerToken::new(self.token.as_deref())?;
        let tls = self.tls_config(&addrs)?;
        let endpoints = addrs
            .iter()
            .map(|addr| endpoint(addr, tls.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;

        let mut connected = None;
        let mut last_error = None;
        for (index, endpoint) in endpoints.iter().enumerate() {
            match endpoint.connect().await {
                Ok(channel) => {
                    connected = Some((index, channel));
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let (current, channel) = match (connected, last_error) {
            (Some(connected), _) => connected,
            (None, Some(source)) => {
                return Err(Error::Connect {
                    addr: addrs.join(", "),
                    source,
                })
            }
            (None, None) => unreachable!("parse_addresses returns at least one address"),
        };
        let servers = addrs
            .into_iter()
            .zip(endpoints)
            .enumerate()
            .map(|(index, (addr, endpoint))| {
                // The others connect when a call first needs them.
                let channel = if index == current {
                    channel.clone()
                } else {
                    endpoint.connect_lazy()
                };
                Server {
                    addr,
                    rpc: rpc(channel, token.clone()),
                }
            })
            .collect();
        let without_certificate = tls.is_some() && self.identity.is_none();
        Ok(Client {
            servers: Servers::new(servers, current, self.timeout, without_certificate),
            consistency: Consistency::new(self.read_your_writes),
        })
    }

    /// The TLS settings every `https://` address gets; `None` when no address is `https://`. A
    /// CA or client certificate given for a plaintext address is an error, not silently unused.
    fn tls_config(&self, addrs: &[String]) -> Result<Option<ClientTlsConfig>, Error> {
        let https = |addr: &String| addr.starts_with("https://");
        if self.ca.is_some() || self.identity.is_some() {
            if let Some(plain) = addrs.iter().find(|addr| !https(addr)) {
                return Err(Error::Config(format!(
                    "a CA or client certificate was given, but {plain} is not an https:// address"
                )));
            }
        }
        if !addrs.iter().any(https) {
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca.read("CA")?)),
            None => tls.with_enabled_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(
                cert.read("client certificate")?,
                key.read("client key")?,
            ));
        }
        Ok(Some(tls))
    }
}

/// The addresses of a comma-separated list, each with a scheme (`http://` when it has none).
fn parse_addresses(list: &str) -> Result<Vec<String>, Error> {
    list.split(',')
        .map(|addr| {
            let addr = addr.trim();
            if addr.is_empty() {
                Err(Error::Config(format!(
                    "bad server address list {list:?}: give one or more addresses separated by \
                     commas, none of them empty"
                )))
            } else if addr.contains("://") {
                Ok(addr.to_owned())
            } else {
                Ok(format!("http://{addr}"))
            }
        })
        .collect()
}

/// One server's endpoint, with the connection settings every server gets, and `tls` if it is an
/// `https://` address.
fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, Error> {
    let connect_error = |source| Error::Connect {
        addr: addr.to_owned(),
        source,
    };
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(connect_error)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match tls {
        Some(tls) if addr.starts_with("https://") => {
            endpoint.tls_config(tls.clone()).map_err(connect_error)
        }
        _ => Ok(endpoint),
    }
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>, Error> {
        match self {
            Pem::Text(text) => Ok(text.clone()),
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows() {
        let builder = ClientBuilder::new("http://x:1".into()).token("s3cret-token");
        assert!(!format!("{builder:?}").contains("s3cret"));
    }
}
