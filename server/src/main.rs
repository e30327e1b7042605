//! The `jsonkv-server` binary: parses flags, sets up logging, and runs the server until Ctrl-C
//! or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use jsonkv_server::config::{
    BackendConfig, DiskConfig, EtcdConfig, EtcdTls, EtcdUser, HttpPlacement, SyncMode, TlsFiles,
};
use jsonkv_server::{serve, Config, Listeners, Reloader, Security, Store};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// With `--features mimalloc`: faster gets and inserts (glibc's malloc and free are a visible
/// share of the server's CPU under load), but not the default, because it holds more memory per
/// small allocation and so per idle watcher. docs/performance.md has the trade-off.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jsonkv: a JSON key-value database served over gRPC.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Directory the data is kept in (created if missing; one server at a time).
    #[arg(long, default_value = "./jsonkv-data")]
    data_dir: PathBuf,
    /// Keep data in memory only: nothing is written to disk, and a restart starts empty.
    #[arg(long, conflicts_with_all = ["data_dir", "sync"])]
    in_memory: bool,
    /// Build --data-dir (which must be empty or absent) from this backup (`jsonkv backup`),
    /// verified whole first, then serve it. The restored store gets a new identity.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["in_memory", "etcd"])]
    restore: Option<PathBuf>,
    /// When a write is acknowledged: `always` after fsync (survives power loss; concurrent
    /// writes share one fsync), `none` after handing it to the OS (survives a process crash).
    #[arg(long, value_enum, default_value_t = Sync::Always)]
    sync: Sync,
    /// Size at which a log segment is sealed and may be compacted into a snapshot.
    #[arg(long, default_value_t = DiskConfig::new("").segment_bytes)]
    segment_bytes: u64,
    /// Run as one of several servers on an etcd cluster (comma-separated client URLs, e.g.
    /// `http://127.0.0.1:2379,http://127.0.0.1:22379`): etcd holds the data, this server a
    /// live view of it. Replaces --data-dir, --in-memory and --sync.
    #[arg(long, value_name = "ENDPOINTS", value_delimiter = ',', conflicts_with_all = ["data_dir", "in_memory", "sync"])]
    etcd: Vec<String>,
    /// Where in etcd jsonkv keeps its keys; servers sharing a prefix share a keyspace.
    #[arg(long, value_name = "PREFIX", default_value = "/jsonkv/", value_parser = non_empty)]
    etcd_prefix: String,
    /// Milliseconds one etcd request may take before the call fails with UNAVAILABLE.
    #[arg(long, default_value_t = 5000)]
    etcd_timeout_ms: u64,
    /// Reach etcd over TLS (`https://` endpoints), trusting this PEM CA, and only it, for the
    /// members' certificates.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_ca: Option<PathBuf>,
    /// Present this PEM client certificate chain to etcd (members run with
    /// `--client-cert-auth`); needs --etcd-key and --etcd-ca.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_cert: Option<PathBuf>,
    /// The PEM private key of --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_key: Option<PathBuf>,
    /// Log in to etcd (etcd's own authentication) as this user. The password comes from the
    /// environment variable JSONKV_ETCD_PASSWORD, never from a flag: the process list shows
    /// flags to every user of the machine.
    #[arg(long, value_name = "NAME", requires = "etcd")]
    etcd_user: Option<String>,
    /// Milliseconds a read or watch carrying `min_revision` may wait for this server to reach
    /// that revision before it gets UNAVAILABLE.
    #[arg(long, default_value_t = Config::default().revision_wait.as_millis() as u64)]
    revision_wait_ms: u64,
    /// Events kept in memory for watch replay (`start_revision`) and for slow watchers to catch
    /// up; older revisions answer OUT_OF_RANGE.
    #[arg(long, default_value_t = Config::default().history_size)]
    history_size: usize,
    /// Bytes of keys and values the history may hold: past it, the oldest events are dropped
    /// before --history-size is reached (large values would otherwise fill memory).
    #[arg(long, default_value_t = Config::default().history_bytes)]
    history_bytes: usize,
    /// Events buffered per watched key or prefix before a slow watcher must catch up from
    /// history.
    #[arg(long, default_value_t = Config::default().watch_buffer)]
    watch_buffer: usize,
    /// Longest key or prefix, in bytes.
    #[arg(long, default_value_t = Config::default().max_key_bytes)]
    max_key_bytes: usize,
    /// Largest value, in bytes of compact JSON text.
    #[arg(long, default_value_t = Config::default().max_value_bytes)]
    max_value_bytes: usize,
    /// Most bytes of compact JSON text the documents one transaction writes may total.
    #[arg(long, default_value_t = Config::default().max_txn_bytes)]
    max_txn_bytes: usize,
    /// Largest gRPC message received or sent, in bytes.
    #[arg(long, default_value_t = Config::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Milliseconds between progress notices on an idle watch (0: never).
    #[arg(long, default_value_t = Config::default().progress_interval.as_millis() as u64)]
    progress_interval_ms: u64,
    /// Revisions the store must move past an idle watch before it gets a progress notice.
    #[arg(long, default_value_t = Config::default().progress_min_lag)]
    progress_min_lag: i64,
    /// Seconds in-flight calls get to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = Config::default().shutdown_grace.as_secs())]
    shutdown_grace_secs: u64,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate signed by this PEM CA.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// File of `read TOKEN`, `write TOKEN` and `admin TOKEN` lines, read and write ones
    /// optionally followed by the key prefixes the token is limited to (`#` comments and blank
    /// lines allowed).
    /// JsonKv calls then need `authorization: Bearer TOKEN`; health and reflection stay open.
    #[arg(long, value_name = "FILE")]
    auth_tokens: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP; keep it private).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the HTTP/JSON API and the web console on ADDR instead of on --listen beside
    /// gRPC; `off` serves neither.
    #[arg(long, value_name = "ADDR|off", value_parser = http_placement)]
    http_listen: Option<HttpPlacement>,
    /// Let pages of this origin (`https://app.example.com`) call the HTTP API from a browser
    /// (CORS); repeat for more. Off unless given.
    #[arg(long, value_name = "ORIGIN", value_parser = origin)]
    http_cors_origin: Vec<String>,
    /// Seconds between the comment lines that keep a quiet HTTP watch (server-sent events)
    /// open through proxies.
    #[arg(long, value_name = "SECS", default_value_t = Config::default().http_heartbeat.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    http_heartbeat: u64,
    /// HTTP/2 streams (calls and watches in flight) one connection may have open; clients
    /// queue calls beyond it.
    #[arg(long, default_value_t = Config::default().max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// Open watches per client connection; more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = Config::default().max_watchers_per_connection)]
    max_watchers_per_connection: usize,
    /// Open watches in total; more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = Config::default().max_watchers)]
    max_watchers: usize,
    /// Live leases (embedded store); more grants get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = Config::default().max_leases)]
    max_leases: usize,
    /// Threads that serve calls (tokio workers; default: one per CPU). Fewer leave cores to
    /// other processes (a client on the same machine, say), but one worker can never use more
    /// than one core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Seconds a call may take before it gets DEADLINE_EXCEEDED (0: no limit). A watch only
    /// has to open in that time; it then streams for as long as it likes.
    #[arg(long, default_value_t = Config::default().request_timeout.as_secs())]
    request_timeout_secs: u64,
    /// Seconds between HTTP/2 pings on a connection, to find peers that vanished (0: never).
    #[arg(long, default_value_t = Config::default().keepalive_interval.as_secs())]
    keepalive_interval_secs: u64,
    /// Seconds a ping may go unanswered before the connection (and its watches) is closed.
    #[arg(long, default_value_t = Config::default().keepalive_timeout.as_secs())]
    keepalive_timeout_secs: u64,
    /// Client connections open at once; one beyond it is closed as soon as it is accepted.
    /// Keep the open-files limit (ulimit -n) above it.
    #[arg(long, default_value_t = Config::default().max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a new connection has to finish its TLS handshake and start speaking HTTP/2;
    /// it is closed after that.
    #[arg(long, default_value_t = Config::default().handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout_secs: u64,
    /// Bytes of requests not yet fully arrived that one connection may hold; past it, a
    /// request fails with RESOURCE_EXHAUSTED. At least --max-message-bytes.
    #[arg(long, default_value_t = Config::default().max_request_buffer_per_connection)]
    max_request_buffer_per_connection: usize,
    /// The same over all connections together. At least --max-request-buffer-per-connection.
    #[arg(long, default_value_t = Config::default().max_request_buffer)]
    max_request_buffer: usize,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(
            "must not be empty (it would put jsonkv's keys among everything else in etcd)".into(),
        );
    }
    Ok(s.to_owned())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Sync {
    Always,
    None,
}

/// Where `--etcd-user`'s password comes from.
const ETCD_PASSWORD_VARIABLE: &str = "JSONKV_ETCD_PASSWORD";

impl TryFrom<Args> for Config {
    /// Why the flags do not make a configuration, on one line.
    type Error = String;

    fn try_from(args: Args) -> Result<Config, String> {
        // clap refuses --etcd with --data-dir, --in-memory or --sync, so no setting is dropped.
        let backend = if !args.etcd.is_empty() {
            BackendConfig::Etcd(EtcdConfig {
                endpoints: args.etcd,
                prefix: args.etcd_prefix,
                timeout: Duration::from_millis(args.etcd_timeout_ms),
                tls: etcd_tls(args.etcd_ca, args.etcd_cert, args.etcd_key)?,
                user: args.etcd_user.map(etcd_user).transpose()?,
            })
        } else if args.in_memory {
            BackendConfig::InMemory
        } else {
            BackendConfig::Disk(DiskConfig {
                dir: args.data_dir,
                sync: match args.sync {
                    Sync::Always => SyncMode::Always,
                    Sync::None => SyncMode::None,
                },
                segment_bytes: args.segment_bytes,
            })
        };
        if args.max_request_buffer_per_connection < args.max_message_bytes {
            return Err(format!(
                "--max-request-buffer-per-connection ({}) is below --max-message-bytes ({}): a request of the largest size could never arrive",
                args.max_request_buffer_per_connection, args.max_message_bytes
            ));
        }
        if args.max_request_buffer < args.max_request_buffer_per_connection {
            return Err(format!(
                "--max-request-buffer ({}) is below --max-request-buffer-per-connection ({})",
                args.max_request_buffer, args.max_request_buffer_per_connection
            ));
        }
        Ok(Config {
            listen: args.listen,
            backend,
            revision_wait: Duration::from_millis(args.revision_wait_ms),
            history_size: args.history_size,
            history_bytes: args.history_bytes,
            watch_buffer: args.watch_buffer,
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
            max_txn_bytes: args.max_txn_bytes,
            max_message_bytes: args.max_message_bytes,
            progress_interval: Duration::from_millis(args.progress_interval_ms),
            progress_min_lag: args.progress_min_lag,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            tls: match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca: args.tls_client_ca,
                }),
                // clap requires both or neither.
                _ => None,
            },
            auth_tokens: args.auth_tokens,
            metrics_listen: args.metrics_listen,
            http: args.http_listen.unwrap_or(HttpPlacement::SharedPort),
            http_cors_origins: args.http_cors_origin,
            http_heartbeat: Duration::from_secs(args.http_heartbeat),
            max_concurrent_streams: args.max_concurrent_streams,
            max_watchers_per_connection: args.max_watchers_per_connection,
            max_watchers: args.max_watchers,
            max_leases: args.max_leases,
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            keepalive_interval: Duration::from_secs(args.keepalive_interval_secs),
            keepalive_timeout: Duration::from_secs(args.keepalive_timeout_secs),
            max_connections: args.max_connections as usize,
            handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
            max_request_buffer_per_connection: args.max_request_buffer_per_connection,
            max_request_buffer: args.max_request_buffer,
            max_send_buffer_bytes: Config::default().max_send_buffer_bytes,
        })
    }
}

/// `--http-listen`: an address, or `off`.
fn http_placement(text: &str) -> Result<HttpPlacement, String> {
    if text == "off" {
        return Ok(HttpPlacement::Off);
    }
    text.parse()
        .map(HttpPlacement::Own)
        .map_err(|e| format!("{text:?} is neither an address (127.0.0.1:8080) nor off: {e}"))
}

/// `--http-cors-origin`: a scheme, a host and maybe a port, exactly as a browser's `Origin`
/// header says it; `*` is refused, since the API takes bearer tokens.
fn origin(text: &str) -> Result<String, String> {
    let valid = (text.starts_with("http://") || text.starts_with("https://"))
        && !text.ends_with('/')
        && text
            .split("://")
            .nth(1)
            .is_some_and(|host| !host.is_empty() && !host.contains('/'))
        && http::HeaderValue::from_str(text).is_ok();
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an origin: scheme://host[:port], no path (such as https://app.example.com)"
        ))
    }
}

/// The etcd TLS files from `--etcd-ca`, `--etcd-cert` and `--etcd-key`. A client certificate
/// needs its key, and a CA: it is only ever sent over TLS, and without a CA no member's
/// certificate could be trusted. Whether the endpoints are `https://` is checked on connecting.
fn etcd_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<EtcdTls>, String> {
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => return Err("--etcd-cert needs --etcd-key, its private key".into()),
        (None, Some(_)) => {
            return Err("--etcd-key needs --etcd-cert, the certificate it belongs to".into())
        }
        (None, None) => None,
    };
    match (ca, client) {
        (Some(ca), client) => Ok(Some(EtcdTls { ca, client })),
        (None, Some(_)) => Err(
            "--etcd-cert needs --etcd-ca, the CA that signed the etcd members' certificates".into(),
        ),
        (None, None) => Ok(None),
    }
}

/// The `--etcd-user` NAME, with its password from the environment.
fn etcd_user(name: String) -> Result<EtcdUser, String> {
    match std::env::var(ETCD_PASSWORD_VARIABLE) {
        Ok(password) if !password.is_empty() => Ok(EtcdUser { name, password }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(format!(
            "--etcd-user {name} needs the password in the environment variable {ETCD_PASSWORD_VARIABLE}"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "the environment variable {ETCD_PASSWORD_VARIABLE} is not valid UTF-8"
        )),
    }
}

fn main() {
    // Logs go to stderr, as the docs say, coloured only when a person is reading them there: a
    // log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    // The runtime is built here rather than by `#[tokio::main]` so that --workers can size it.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.into());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .unwrap_or_else(|err| fail(format!("cannot start the runtime: {err}")));
    let restore = args.restore.clone();
    let config = Config::try_from(args).unwrap_or_else(|err| fail(err));
    runtime.block_on(run(config, restore));
}

/// Everything after the flags: files, listeners, the store, then serving until a shutdown
/// signal.
async fn run(config: Config, restore: Option<PathBuf>) {
    // Files first: a bad certificate or tokens file should stop start-up before anything else.
    let security = Security::load(&config).unwrap_or_else(|err| fail(err));
    if let (Some(backup), BackendConfig::Disk(disk)) = (&restore, &config.backend) {
        match jsonkv_server::storage::disk::restore(&disk.dir, backup) {
            Ok((revision, keys)) => tracing::info!(
                backup = %backup.display(),
                data_dir = %disk.dir.display(),
                revision,
                keys,
                "restored"
            ),
            Err(err) => fail(format!("cannot restore {}: {err}", backup.display())),
        }
    }
    // SIGHUP's default action ends the process; operators send it to reload.
    hangups(security.reloader());
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => fail(format!("cannot listen on {}: {err}", config.listen)),
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let listeners = Listeners::around(&config, listener)
        .await
        .unwrap_or_else(|err| fail(err));
    let console = listeners
        .http_addr(&config)
        .unwrap_or_else(|err| fail(err))
        .map(|addr| {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{addr}/")
        });
    let store = Store::start(&config).await.unwrap_or_else(|err| fail(err));
    let tls = match &config.tls {
        None => "off",
        Some(files) if files.client_ca.is_some() => "mutual",
        Some(_) => "on",
    };
    let auth = config.auth_tokens.is_some();
    let metrics = listeners.metrics.as_ref().and_then(|l| l.local_addr().ok());
    match &config.backend {
        BackendConfig::Etcd(etcd) => {
            let etcd_user = etcd.user.as_ref().map(|user| user.name.as_str());
            tracing::info!(%addr, etcd = %etcd.endpoints.join(","), prefix = %etcd.prefix, etcd_tls = etcd.tls.is_some(), ?etcd_user, tls, auth, ?metrics, "jsonkv-server listening (on etcd)")
        }
        BackendConfig::Disk(disk) => {
            tracing::info!(%addr, data_dir = %disk.dir.display(), sync = ?disk.sync, tls, auth, ?metrics, "jsonkv-server listening")
        }
        BackendConfig::InMemory => {
            tracing::info!(%addr, tls, auth, ?metrics, "jsonkv-server listening (in memory: nothing is persisted)")
        }
    }
    match console {
        Some(url) => tracing::info!("console and HTTP API at {url}"),
        None => tracing::info!("the HTTP API and console are off (--http-listen off)"),
    }
    if let Err(err) = serve(config, security, listeners, store, shutdown_signal()).await {
        fail(err);
    }
}

/// Ends the process after a start-up or serving failure, with the reason on stderr.
fn fail(err: impl std::fmt::Display) -> ! {
    eprintln!("error: {err}");
    std::process::exit(1);
}

/// Takes SIGHUP over from its default (ending the process): each one reloads the tokens file
/// and the TLS files (a file that fails to load is logged and the old one kept), and the
/// server serves on.
fn hangups(reloader: Reloader) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("received SIGHUP; reloading");
                    // Reported by reload() itself.
                    let _ = reloader.reload();
                }
            });
        }
        Err(err) => tracing::warn!(%err, "cannot listen for SIGHUP; it will end the server"),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
