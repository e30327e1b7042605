//! One etcd process of a test cluster: its flags, its files (data directory and log) and the `sh`
//! watchdog it runs under, which kills it when the test process is gone even if no destructor ran.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pki::{EtcdTlsFiles, Pki};

/// Runs etcd (the arguments after the member directory `$1`) in the background and watches its
/// own stdin, a pipe whose only writer is the test process (std opens pipes close-on-exec, so no
/// other child inherits it):
/// - a line means "kill etcd": the test called `kill`, or dropped the member and deals with the
///   files itself;
/// - end of file means the test process is gone, however it went (exit without destructors, a
///   panic in a static, SIGKILL): nothing else will clean up, so the watchdog kills etcd and
///   removes the member directory.
///
/// If etcd exits by itself, so does the watchdog, with etcd's status, and the files stay for the
/// post-mortem. A background job in a non-interactive shell reads /dev/null unless redirected,
/// hence the pipe is handed to the reader as fd 3.
const WATCHDOG: &str = r#"
dir=$1
shift
exec 3<&0 </dev/null
"$@" 3<&- &
etcd=$!
(
  if read -r line; then
    gone=0
    echo "jsonkv-testkit: the test killed etcd (SIGKILL)" >&2
  else
    gone=1
  fi
  # The shell TERMs the watcher once etcd is dead; from here on, that must not cut this one
  # short, since its exit status tells whether the owner is gone.
  trap '' TERM
  kill -KILL "$etcd" 2>/dev/null
  exit "$gone"
) <&3 &
watcher=$!
exec 3<&-
wait "$etcd"
status=$?
# Stops a watcher still reading (etcd exited by itself), quietly: the shell would log
# "Terminated".
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
if [ "$?" = 1 ]; then rm -rf "$dir"; fi
exit "$status"
"#;

/// A TLS member's certificates and keys, inside its directory.
const TLS_DIR: &str = "tls";

/// How long one `/health` probe may take. etcd answers within a second (its quorum read times out
/// after one), so this only bounds a member too starved to answer at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a member starts a cluster or joins the one its data directory already belongs to.
#[derive(Clone, Copy)]
pub(crate) enum ClusterState {
    New,
    Existing,
}

/// One member: fixed name and ports, its own temporary directory (`data/` and `etcd.log`), and
/// its process while it runs.
pub(crate) struct Member {
    name: String,
    client_port: u16,
    /// Whether the client URL is `https://` (and wants a client certificate).
    tls: bool,
    /// Where `/health` is served: the client port, or with TLS a plaintext metrics port.
    health_port: u16,
    dir: TempDir,
    /// Every etcd flag but `--initial-cluster-state`, which differs between start and restart.
    flags: Vec<String>,
    process: Option<Process>,
}

/// A running member: the watchdog (our child; etcd is its child) and the write end of the pipe
/// that keeps etcd alive.
struct Process {
    /// In a mutex only so that `&self` methods can poll it with `try_wait`.
    watchdog: Mutex<Child>,
    owner: ChildStdin,
}

/// TLS on a member's client URL (peers still talk plaintext: nothing of a test crosses the
/// loopback between them that TLS would protect).
pub(crate) struct ClientTls<'a> {
    pub pki: &'a Pki,
    /// A plaintext port for `/health` (etcd's `--listen-metrics-urls`): the client port wants a
    /// client certificate, and the probe is a bare HTTP request.
    pub metrics_port: u16,
}

/// Where a cluster's members listen, and how they find each other.
pub(crate) struct Topology<'a> {
    /// `--initial-cluster`: `name=peer URL` for every member.
    pub initial_cluster: &'a str,
    /// `--initial-cluster-token`, unique, so that members of different clusters never talk.
    pub token: &'a str,
}

impl Member {
    /// Makes the member's directory (with TLS, its certificates in `tls/`); nothing runs until
    /// [`Member::spawn`].
    pub(crate) fn new(
        name: String,
        client_port: u16,
        peer_port: u16,
        topology: &Topology,
        tls: Option<ClientTls>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jsonkv-etcd-")
            .tempdir()
            .expect("cannot create a temporary directory for an etcd member");
        let client_url = client_url(client_port, tls.is_some());
        let peer_url = loopback_url(peer_port);
        let data_dir = dir.path().join("data");
        let mut flags = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={}", topology.initial_cluster),
            format!("--initial-cluster-token={}", topology.token),
            // Half etcd's defaults (100 ms, 1 s) for the heartbeat, three quarters for the
            // election: a 3-member cluster starts in about 0.5 s instead of 2 s, and elects a new
            // leader about 1 s after a kill. Shorter timeouts would call spurious elections
            // whenever a loaded machine starves etcd for a few hundred milliseconds, and every
            // test running then would see "leader changed" errors; this held with the two cores
            // saturated and the disk busy.
            "--heartbeat-interval=50".to_owned(),
            "--election-timeout=750".to_owned(),
            // etcd 3.4 still defaults to the deprecated capnslog logger, and says so on every
            // start.
            "--logger=zap".to_owned(),
            "--log-outputs=stderr".to_owned(),
        ];
        let mut health_port = client_port;
        if let Some(tls) = &tls {
            // In the member's own directory, so that the watchdog removes them with it.
            flags.extend(tls.pki.write(&dir.path().join(TLS_DIR)));
            flags.push(format!(
                "--listen-metrics-urls={}",
                loopback_url(tls.metrics_port)
            ));
            health_port = tls.metrics_port;
        }
        Member {
            name,
            client_port,
            tls: tls.is_some(),
            health_port,
            dir,
            flags,
            process: None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn client_url(&self) -> String {
        client_url(self.client_port, self.tls)
    }

    /// The client files of a TLS member (see [`Pki::write`]).
    pub(crate) fn tls_files(&self) -> Option<EtcdTlsFiles> {
        self.tls
            .then(|| EtcdTlsFiles::in_dir(&self.dir.path().join(TLS_DIR)))
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub(crate) fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Starts etcd under its watchdog. A restart appends to the same log.
    pub(crate) fn spawn(&mut self, state: ClusterState) {
        assert!(
            self.process.is_none(),
            "etcd member {} is already running",
            self.name
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("cannot open an etcd member's log file");
        let state = match state {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        };
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("jsonkv-etcd-watchdog")
            .arg(self.dir.path())
            .arg("etcd")
            .args(&self.flags)
            .arg(format!("--initial-cluster-state={state}"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("cannot share an etcd log file"))
            .stderr(log);
        // etcd reads any ETCD_* variable as a flag; one left in the environment must not
        // reconfigure a test cluster.
        for (variable, _) in std::env::vars_os() {
            if variable.to_string_lossy().starts_with("ETCD_") {
                command.env_remove::<OsString>(variable);
            }
        }
        let mut watchdog = command
            .spawn()
            .expect("cannot run sh to start an etcd member");
        let owner = watchdog.stdin.take().expect("stdin is piped");
        self.process = Some(Process {
            watchdog: Mutex::new(watchdog),
            owner,
        });
    }

    /// SIGKILLs etcd and waits until it is gone, so that its ports and data directory are free.
    /// Does nothing if it is not running.
    pub(crate) fn kill(&mut self) {
        let Some(process) = self.process.take() else {
            return;
        };
        // If etcd already exited, the watchdog did too and the write fails: nothing to kill.
        let _ = (&process.owner).write_all(b"kill\n");
        drop(process.owner);
        let mut watchdog = process
            .watchdog
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        watchdog.wait().expect("cannot wait for an etcd watchdog");
    }

    /// How etcd ended, if it exited by itself; `None` while it runs (or after `kill`).
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        let process = self.process.as_ref()?;
        let mut watchdog = process.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        watchdog.try_wait().ok().flatten()
    }

    /// Whether the member's `/health` says true. In etcd 3.4 that means it has a leader, no alarm,
    /// and a quorum read went through raft: the cluster commits. It writes no key, so a fresh
    /// cluster's first put still gets revision 2 (etcd starts at 1).
    pub(crate) async fn healthy(&self) -> bool {
        let probe = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.health_port)).await?;
            stream
                .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            io::Result::Ok(response)
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(response)) => String::from_utf8_lossy(&response).contains(r#""health":"true""#),
            _ => false,
        }
    }

    /// The last lines of the log, for a panic message.
    pub(crate) fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// The URL etcd listens on, and is reached at, for a port of 127.0.0.1.
pub(crate) fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A member's client URL: [`loopback_url`], or its `https://` twin with TLS.
fn client_url(port: u16, tls: bool) -> String {
    if tls {
        format!("https://127.0.0.1:{port}")
    } else {
        loopback_url(port)
    }
}

impl Drop for Member {
    /// Kills etcd, then removes the member's files. If a test is panicking, the log stays (and its
    /// path goes to stderr, which the test harness shows with the failure): it is usually why.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let _ = fs::remove_dir_all(self.dir.path().join("data"));
            let _ = fs::remove_dir_all(self.dir.path().join(TLS_DIR));
            self.dir.disable_cleanup(true);
            eprintln!(
                "jsonkv-testkit: kept the log of etcd member {}: {}",
                self.name,
                self.log_file().display()
            );
        }
    }
}
