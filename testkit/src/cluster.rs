//! [`EtcdCluster`]: an etcd cluster of N members on loopback, started for a test and stopped with
//! it, with the faults a cluster test needs (kill a member, restart it) and a few helpers; on
//! request with TLS and client certificates on its client URLs, and with etcd's authentication.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, CompactionOptions, ConnectOptions, TlsOptions};
use tokio::time::Instant;

use crate::member::{loopback_url, ClientTls, ClusterState, Member, Topology};
use crate::pki::{EtcdTlsFiles, Pki};
use crate::unique::unique_id;

/// How long members get to become healthy: generous, since a loaded machine (two cores, a build
/// alongside) can slow an election down a lot; only a broken start ever waits that long.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// Between two rounds of health probes.
const POLL: Duration = Duration::from_millis(100);
/// Bounds one etcd request made by the kit itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Starts before giving up on port clashes (see [`free_ports`]).
const START_ATTEMPTS: usize = 5;

/// An etcd cluster on 127.0.0.1, each member on its own free ports and with its own temporary
/// directory. Dropping it kills every member and removes their files; if the test process dies
/// without dropping it, each member's watchdog does the same.
pub struct EtcdCluster {
    members: Vec<Member>,
    /// TLS settings of the kit's own clients, for a cluster started with TLS.
    tls: Option<TlsOptions>,
    /// root's password, once [`EtcdCluster::enable_auth`] has turned authentication on.
    root_password: Option<String>,
}

/// Why members did not become healthy.
enum Unhealthy {
    /// A member's etcd exited (the index, and how).
    Exited(usize, std::process::ExitStatus),
    /// These members were still unhealthy at the deadline.
    TimedOut(Vec<usize>),
}

impl EtcdCluster {
    /// Starts a cluster of `members` members and waits until every one is healthy (it has a
    /// leader and the cluster commits). Panics, naming the members' logs (which are kept), if that
    /// takes over 30 s or a member exits. A member that loses a race for its port is retried on
    /// fresh ports.
    pub async fn start(members: usize) -> EtcdCluster {
        EtcdCluster::start_with(members, false).await
    }

    /// [`EtcdCluster::start`], with TLS on the client URLs (`https://`): the members present a
    /// certificate for `127.0.0.1` and `localhost`, and accept only clients presenting one
    /// from the same CA (`--client-cert-auth`). The certificates are made for this cluster;
    /// [`EtcdCluster::tls_files`] says where they are. Peers talk plaintext among themselves.
    pub async fn start_tls(members: usize) -> EtcdCluster {
        EtcdCluster::start_with(members, true).await
    }

    async fn start_with(members: usize, tls: bool) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        for attempt in 1..=START_ATTEMPTS {
            let cluster = EtcdCluster::spawn(members, tls);
            match cluster.wait_until_healthy(0..members).await {
                Ok(()) => return cluster,
                Err(Unhealthy::Exited(i, _))
                    if attempt < START_ATTEMPTS
                        && cluster.members[i]
                            .log_tail()
                            .contains("address already in use") =>
                {
                    continue;
                }
                Err(unhealthy) => panic!("{}", cluster.describe(&unhealthy, "start")),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Creates the members on fresh ports and starts each one.
    fn spawn(members: usize, tls: bool) -> EtcdCluster {
        // Client and peer ports; with TLS, also a plaintext one for health probes.
        let per_member = if tls { 3 } else { 2 };
        let ports = free_ports(per_member * members);
        let pki = tls.then(Pki::new);
        let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(ports.chunks(per_member))
            .map(|(name, ports)| format!("{name}={}", loopback_url(ports[1])))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("jsonkv-test-{}", unique_id());
        let topology = Topology {
            initial_cluster: &initial_cluster,
            token: &token,
        };
        let mut members: Vec<Member> = names
            .into_iter()
            .zip(ports.chunks(per_member))
            .map(|(name, ports)| {
                let tls = pki.as_ref().map(|pki| ClientTls {
                    pki,
                    metrics_port: ports[2],
                });
                Member::new(name, ports[0], ports[1], &topology, tls)
            })
            .collect();
        for member in &mut members {
            member.spawn(ClusterState::New);
        }
        EtcdCluster {
            members,
            tls: pki.as_ref().map(Pki::client_options),
            root_password: None,
        }
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`, or `https://` with TLS), killed
    /// members included, as a real deployment lists its whole cluster.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// [`EtcdCluster::endpoints`] joined with commas: the value for jsonkv-server's `--etcd`.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The CA and client certificate of a cluster started with [`EtcdCluster::start_tls`]
    /// (`None` without TLS): PEM files that live as long as the cluster.
    pub fn tls_files(&self) -> Option<EtcdTlsFiles> {
        self.members[0].tls_files()
    }

    /// Turns on etcd's authentication, as an operator would: adds the user `root` with
    /// `root_password` and the root role, then enables auth. From then on, every client must log
    /// in (jsonkv-server: `--etcd-user`), and the kit's own clients log in as root. Panics on
    /// error.
    pub async fn enable_auth(&mut self, root_password: &str) {
        let mut client = self.client().await;
        within_request(
            "adding the root user",
            client.user_add("root", root_password, None),
        )
        .await;
        within_request(
            "granting root the root role",
            client.user_grant_role("root", "root"),
        )
        .await;
        within_request("enabling authentication", client.auth_enable()).await;
        self.root_password = Some(root_password.to_owned());
    }

    /// Member `i`'s log (stdout and stderr of etcd, across restarts).
    pub fn log_file(&self, i: usize) -> PathBuf {
        self.member(i).log_file()
    }

    /// SIGKILLs member `i` and waits until the process is gone. Its data stays for
    /// [`EtcdCluster::restart`]. Panics if it is not running.
    pub fn kill(&mut self, i: usize) {
        let member = self.member_mut(i);
        assert!(member.is_running(), "etcd member {i} is not running");
        member.kill();
    }

    /// Starts killed member `i` again, with its name, ports and data directory, and waits until it
    /// is healthy again, that is, back in the cluster. Panics, naming its log, if it is not within
    /// 30 s.
    pub async fn restart(&mut self, i: usize) {
        self.member_mut(i).spawn(ClusterState::Existing);
        if let Err(unhealthy) = self.wait_until_healthy([i]).await {
            panic!("{}", self.describe(&unhealthy, "restart"));
        }
    }

    /// Waits until every running member is healthy: say, after a kill, until the survivors have
    /// elected a leader. Panics, naming the logs, if that takes over 30 s.
    pub async fn wait_healthy(&self) {
        let running = (0..self.members.len()).filter(|&i| self.members[i].is_running());
        if let Err(unhealthy) = self.wait_until_healthy(running).await {
            panic!("{}", self.describe(&unhealthy, "wait_healthy"));
        }
    }

    /// A client of the running members (no request timeout set: bound your own waits). Once
    /// auth is on, making it logs in as root, which needs a leader; panics if that fails.
    pub async fn client(&self) -> Client {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::client_url)
            .collect();
        assert!(!endpoints.is_empty(), "every etcd member is killed");
        self.connect(&endpoints).await
    }

    /// The index of the current leader, as every running member sees it. Waits (30 s at most)
    /// while they disagree or the leader is a killed member they have not yet replaced.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "the running etcd members did not agree on a leader within {HEALTHY_WITHIN:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// One round of [`EtcdCluster::leader`]: asks each running member for its own raft ID and
    /// its leader's; `None` unless all answer and name the same running member.
    async fn agreed_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            if !member.is_running() {
                continue;
            }
            // Not `connect`: a member that cannot log us in yet is a "not now", not a failure.
            let connect = Client::connect([member.client_url()], Some(self.connect_options()));
            let mut client = tokio::time::timeout(REQUEST_TIMEOUT, connect)
                .await
                .ok()?
                .ok()?;
            let status = tokio::time::timeout(REQUEST_TIMEOUT, client.status())
                .await
                .ok()?
                .ok()?;
            ids.push((i, status.header()?.member_id()));
            leaders.push(status.leader());
        }
        let leader = leaders[0];
        if leaders.iter().any(|&l| l != leader) {
            return None;
        }
        ids.iter().find(|&&(_, id)| id == leader).map(|&(i, _)| i)
    }

    /// Compacts the history up to `revision`, physically (etcd has freed it when this returns),
    /// so that a watch or a read at an older revision fails as compacted. Panics on error.
    pub async fn compact(&self, revision: i64) {
        let mut client = self.client().await;
        let options = CompactionOptions::new().with_physical();
        within_request(
            &format!("etcd compaction to {revision}"),
            client.compact(revision, Some(options)),
        )
        .await;
    }

    /// Connects a client without a request timeout; without auth, `connect` itself only parses
    /// the URLs, and the connection is made by the first request.
    async fn connect(&self, endpoints: &[String]) -> Client {
        within_request(
            &format!("making an etcd client for {endpoints:?}"),
            Client::connect(endpoints, Some(self.connect_options())),
        )
        .await
    }

    /// How the kit's clients connect: this cluster's TLS settings, and root once auth is on.
    fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some(password) = &self.root_password {
            options = options.with_user("root", password);
        }
        options
    }

    fn member(&self, i: usize) -> &Member {
        let count = self.members.len();
        self.members
            .get(i)
            .unwrap_or_else(|| panic!("no etcd member {i}: the cluster has {count}"))
    }

    fn member_mut(&mut self, i: usize) -> &mut Member {
        self.member(i);
        &mut self.members[i]
    }

    /// Probes the given members until all are healthy, one exits, or [`HEALTHY_WITHIN`] passes.
    async fn wait_until_healthy(
        &self,
        members: impl IntoIterator<Item = usize>,
    ) -> Result<(), Unhealthy> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let mut pending: Vec<usize> = members.into_iter().collect();
        loop {
            for &i in &pending {
                if let Some(status) = self.members[i].exit_status() {
                    return Err(Unhealthy::Exited(i, status));
                }
            }
            let mut still = Vec::new();
            for i in pending {
                if !self.members[i].healthy().await {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Unhealthy::TimedOut(pending));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The panic message for members that did not become healthy during `during`: what
    /// happened, each log's path (a panicking test keeps it) and its last lines.
    fn describe(&self, unhealthy: &Unhealthy, during: &str) -> String {
        let (mut message, culprits) = match unhealthy {
            Unhealthy::Exited(i, status) => (
                format!(
                    "etcd member {} exited ({status}) during {during}",
                    self.members[*i].name()
                ),
                vec![*i],
            ),
            Unhealthy::TimedOut(pending) => (
                format!(
                    "etcd member(s) {} not healthy within {HEALTHY_WITHIN:?} during {during}",
                    pending
                        .iter()
                        .map(|&i| self.members[i].name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                pending.clone(),
            ),
        };
        for i in culprits {
            let member = &self.members[i];
            let _ = write!(
                message,
                "\n--- {} log (kept): {}, last lines:\n{}",
                member.name(),
                member.log_file().display(),
                member.log_tail()
            );
        }
        message
    }
}

/// Runs one request of the kit's own, bounded by [`REQUEST_TIMEOUT`]; panics, saying what it
/// was, if it fails or takes longer.
async fn within_request<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> T {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// `count` distinct free ports on 127.0.0.1. Every listener is held until all are bound, so the
/// kernel never hands out one twice; they close before etcd binds them, and another process (or
/// test) may take one in between: [`EtcdCluster::start`] then retries on fresh ports.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port on 127.0.0.1"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("a bound listener has an address")
                .port()
        })
        .collect()
}
