//! In-process cluster fixtures: real nodes on 127.0.0.1, real gRPC between
//! them, waits on conditions with deadlines (never fixed sleeps).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_server::config::ClusterState;
use cairn_server::node::forward::{ForwardRequest, ForwardResponse};
use cairn_server::serve::{start_with, PeerApi, RunningServer};
use cairn_server::ServerConfig;
use cairn_store::{Command, CommandResult, KeyRange, PutRequest, RangeRequest};
use tokio::time::Instant;

pub use cairn_chaos::ports::free_port;

/// Poll `cond` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Member {
    pub config: ServerConfig,
    /// What its peer port serves from its next start on.
    pub peer_api: PeerApi,
    pub server: Option<RunningServer>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
}

/// Timings short enough for tests, long enough for a loaded 2-core box.
pub fn test_config(name: &str, dir: PathBuf, client: u16, peer: u16) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        data_dir: dir,
        listen_client: SocketAddr::from(([127, 0, 0, 1], client)),
        listen_peer: SocketAddr::from(([127, 0, 0, 1], peer)),
        heartbeat_interval_ms: 50,
        election_timeout_ms: 400,
        tick_interval_ms: 100,
        request_timeout_ms: 5000,
        ..Default::default()
    }
}

impl Cluster {
    pub async fn start(n: usize, tweak: impl Fn(&mut ServerConfig)) -> Cluster {
        Cluster::start_with(n, tweak, PeerApi::Current).await
    }

    /// [`Cluster::start`] with every member serving `peer_api`.
    pub async fn start_with(
        n: usize,
        tweak: impl Fn(&mut ServerConfig),
        peer_api: PeerApi,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = (0..n)
            .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, ports[i].1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let mut config = test_config(&name, dir.path().join(&name), *client, *peer);
            config.initial_cluster = initial.clone();
            tweak(&mut config);
            members.push(Member {
                config,
                peer_api: PeerApi::Current,
                server: None,
            });
        }
        let mut cluster = Cluster { dir, members };
        for i in 0..n {
            cluster.members[i].peer_api = peer_api;
            cluster.start_member(i).await;
        }
        cluster
    }

    pub async fn start_member(&mut self, i: usize) {
        let member = &self.members[i];
        let server = start_with(member.config.clone(), member.peer_api)
            .await
            .expect("member starts");
        self.members[i].server = Some(server);
    }

    /// Announces a new member as a learner through member `via`, then
    /// starts it (state "existing", configured like the rest by `tweak`):
    /// its index here and its member ID.
    pub async fn add_learner(
        &mut self,
        via: usize,
        tweak: impl Fn(&mut ServerConfig),
    ) -> (usize, u64) {
        let (i, peer_url) = self.new_joiner(tweak);
        let added = self
            .node(via)
            .membership_request(ForwardRequest::AddMember {
                peer_url,
                is_learner: true,
            })
            .await
            .expect("member add");
        let ForwardResponse::Member(id) = added else {
            panic!("member add answered {added:?}")
        };
        self.start_member(i).await;
        (i, id)
    }

    /// A new member's config, to join this cluster (`existing`, with every
    /// member in its `--initial-cluster`), not started and not added: its
    /// index and peer URL.
    pub fn new_joiner(&mut self, tweak: impl Fn(&mut ServerConfig)) -> (usize, String) {
        let i = self.members.len();
        let name = format!("n{}", i + 1);
        let (client, peer) = (free_port(), free_port());
        let mut config = test_config(&name, self.dir.path().join(&name), client, peer);
        config.initial_cluster = format!(
            "{},{name}=http://127.0.0.1:{peer}",
            self.members[0].config.initial_cluster
        );
        tweak(&mut config);
        existing(&mut config);
        self.members.push(Member {
            config,
            peer_api: PeerApi::Current,
            server: None,
        });
        (i, format!("http://127.0.0.1:{peer}"))
    }

    /// Stop a member (its data dir stays).
    pub async fn stop_member(&mut self, i: usize) {
        if let Some(s) = self.members[i].server.take() {
            s.shutdown().await;
        }
    }

    pub fn node(&self, i: usize) -> &std::sync::Arc<cairn_server::Node> {
        &self.members[i]
            .server
            .as_ref()
            .expect("member running")
            .node
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].server.is_some())
            .collect()
    }

    /// Index of the member that leads, once all running members agree.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let mut found = None;
        wait_until("a leader all running members agree on", timeout, || {
            let running = self.running();
            let leaders: Vec<Option<u64>> =
                running.iter().map(|i| self.node(*i).leader_id()).collect();
            let agreed = leaders
                .first()
                .copied()
                .flatten()
                .filter(|l| leaders.iter().all(|x| *x == Some(*l)));
            found = agreed.and_then(|l| {
                running
                    .iter()
                    .copied()
                    .find(|i| self.node(*i).member_id() == l)
            });
            let ok = found.is_some_and(|i| self.node(i).raft.is_leader());
            async move { ok }
        })
        .await;
        found.unwrap()
    }

    /// Every running member builds a snapshot of all it has applied and
    /// purges its log up to it: a member that was down must then catch up
    /// by a snapshot install.
    pub async fn snapshot_and_purge(&self, timeout: Duration) {
        use openraft::async_runtime::WatchReceiver;
        for i in self.running() {
            let raft = &self.node(i).raft;
            let applied = raft.metrics().borrow_watched().last_applied.unwrap().index;
            raft.trigger().snapshot().await.unwrap();
            let m = raft
                .wait(Some(timeout))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "snapshot built",
                )
                .await
                .unwrap();
            let snapshot = m.snapshot.unwrap().index;
            raft.trigger().purge_log(snapshot).await.unwrap();
            raft.wait(Some(timeout))
                .metrics(
                    |m| m.purged.is_some_and(|p| p.index >= snapshot),
                    "log purged",
                )
                .await
                .unwrap();
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i).await;
        }
    }
}

/// Through `channel`, while auth is off: `root` (password `rootpw`, the
/// root role) and `user` (`password`; none when empty) holding role `r`,
/// read-write on `[a, b)`; then auth on.
pub async fn set_up_auth(channel: tonic::transport::Channel, user: &str, password: &str) {
    use cairn_proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
    use cairn_proto::etcdserverpb::auth_client::AuthClient;
    use cairn_proto::etcdserverpb::*;
    let mut auth = AuthClient::new(channel);
    for (name, password) in [("root", "rootpw"), (user, password)] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: Some(UserAddOptions {
                no_password: password.is_empty(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let grant = |user: &str, role: &str| AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    };
    auth.user_grant_role(grant("root", "root")).await.unwrap();
    auth.role_add(AuthRoleAddRequest { name: "r".into() })
        .await
        .unwrap();
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "r".into(),
        perm: Some(Permission {
            perm_type: PermType::Readwrite as i32,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }),
    })
    .await
    .unwrap();
    auth.user_grant_role(grant(user, "r")).await.unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
}

pub fn existing(config: &mut ServerConfig) {
    config.initial_cluster_state = ClusterState::Existing;
}

/// Waits (at most 20 s) until `node` finds itself removed from the
/// cluster; its reason must name it.
pub async fn stops_as_removed(node: &cairn_server::Node) {
    let id = node.member_id();
    let why = tokio::time::timeout(Duration::from_secs(20), node.removed())
        .await
        .unwrap_or_else(|_| panic!("removed member {id:x} did not stop"));
    assert!(why.contains(&format!("member {id:x} is not in")), "{why}");
}

pub async fn put(node: &cairn_server::Node, key: &str, value: &str) -> i64 {
    let r = node
        .write(Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    match r {
        CommandResult::Put(p) => p.revision,
        other => panic!("unexpected {other:?}"),
    }
}

/// Linearizable read of one key on `node`.
pub async fn get(node: &cairn_server::Node, key: &str) -> Option<Vec<u8>> {
    node.read_barrier().await.expect("read barrier");
    let store = node.store();
    let r = store
        .range(&RangeRequest {
            range: KeyRange::single(key),
            ..Default::default()
        })
        .unwrap();
    r.kvs.into_iter().next().map(|kv| kv.value)
}

pub fn local_count(node: &cairn_server::Node, prefix: &str) -> i64 {
    let store = node.store();
    store
        .range(&RangeRequest {
            range: KeyRange::prefix(prefix),
            count_only: true,
            ..Default::default()
        })
        .unwrap()
        .count
}

/// A connection to member `i`'s client port.
pub async fn member_channel(c: &Cluster, i: usize) -> tonic::transport::Channel {
    let url = c.members[i]
        .server
        .as_ref()
        .expect("member running")
        .client_url();
    tonic::transport::Channel::from_shared(url)
        .expect("member URL")
        .connect()
        .await
        .expect("connect to member")
}

/// A numeric knob from the environment (`CAIRN_FUZZ_SEED`, ...), else
/// `default`; a value that is not a number stops the test.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a number")),
        Err(_) => default,
    }
}

/// A request's Debug form, cut short: values run to megabytes.
pub fn describe(request: &dyn std::fmt::Debug) -> String {
    const MAX_CHARS: usize = 4_000;
    let full = format!("{request:?}");
    if full.len() <= MAX_CHARS {
        return full;
    }
    let cut: String = full.chars().take(MAX_CHARS).collect();
    format!("{cut}… ({} chars in all)", full.len())
}

/// etcd's `GetPrefixRangeEnd`.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// How a fuzz client's failure message tells how to reproduce it; a panic
/// carrying it is the client's own failure, not a member's.
pub const REPRODUCE: &str = "reproduce: CAIRN_FUZZ_SEED=";

static MEMBER_PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The members of an in-process cluster run in the test's process: a panic
/// in one of their tasks is recorded here (see [`member_panics`]), with
/// what `context` says was going on, and reported as usual. A task that
/// dies can leave its member serving, so the answers alone would not show
/// it. A fuzz client's own failure (its message carries [`REPRODUCE`]) is
/// reported by the test, not recorded.
pub fn record_member_panics(context: fn() -> String) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.to_string().contains(REPRODUCE) {
            return default(info);
        }
        let thread = std::thread::current();
        MEMBER_PANICS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}, thread {:?}: {info}", context(), thread.name()));
        default(info);
    }));
}

/// The panics [`record_member_panics`] recorded so far.
pub fn member_panics() -> Vec<String> {
    MEMBER_PANICS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}
