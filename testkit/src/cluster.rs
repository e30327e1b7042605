//! [`EtcdCluster`]: an etcd cluster of N members on loopback, started for a test and stopped with
//! it, with the faults a cluster test needs (kill a member, restart it) and a few helpers.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, CompactionOptions, ConnectOptions};
use tokio::time::Instant;

use crate::member::{loopback_url, ClusterState, Member, Topology};
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
        assert!(members > 0, "an etcd cluster needs at least one member");
        for attempt in 1..=START_ATTEMPTS {
            let cluster = EtcdCluster::spawn(members);
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
    fn spawn(members: usize) -> EtcdCluster {
        let ports = free_ports(2 * members);
        let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(ports.chunks(2))
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
            .zip(ports.chunks(2))
            .map(|(name, ports)| Member::new(name, ports[0], ports[1], &topology))
            .collect();
        for member in &mut members {
            member.spawn(ClusterState::New);
        }
        EtcdCluster { members }
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`), killed members included, as a real
    /// deployment lists its whole cluster.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// [`EtcdCluster::endpoints`] joined with commas: the value for jsonkv-server's `--etcd`.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
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

    /// A client of the running members (no request timeout set: bound your own waits).
    pub async fn client(&self) -> Client {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::client_url)
            .collect();
        assert!(!endpoints.is_empty(), "every etcd member is killed");
        connect(&endpoints).await
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
            let mut client = connect(&[member.client_url()]).await;
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
        tokio::time::timeout(REQUEST_TIMEOUT, client.compact(revision, Some(options)))
            .await
            .unwrap_or_else(|_| panic!("etcd compaction to {revision} timed out"))
            .unwrap_or_else(|e| panic!("etcd compaction to {revision} failed: {e}"));
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

/// Connects a client without a request timeout; `connect` itself only parses the URLs, the
/// connection is made by the first request.
async fn connect(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|e| panic!("cannot make an etcd client for {endpoints:?}: {e}"))
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
