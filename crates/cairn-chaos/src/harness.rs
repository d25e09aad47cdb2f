//! A cluster of real `cairn` processes that faults can be injected into:
//! SIGKILL + restart, SIGSTOP / SIGCONT, and — when it runs in a
//! [`NetLab`] (each member in its own network namespace) — partitions and
//! packet delay/loss. Without a lab every member listens on 127.0.0.1.
//!
//! In a lab a member runs as `ip netns exec <ns> cairn serve ...`; `ip`
//! execs `cairn` in place, so the child pid is the `cairn` process itself
//! and SIGKILL / SIGSTOP hit it directly.
//!
//! Every child is killed (SIGKILL) when the [`ProcCluster`] drops, also when
//! a test panics, and the data directory (a temp dir) is removed then
//! unless [`ProcCluster::keep_dir`] was called.
//!
//! # Which binary
//!
//! `cairn` is a binary of another crate, so `CARGO_BIN_EXE_cairn` is not
//! available here. [`cairn_bin`] looks, in order, for
//!
//! 1. `$CAIRN_BIN` (used as is; must exist);
//! 2. `$CARGO_TARGET_DIR/debug/cairn` (relative `CARGO_TARGET_DIR` taken
//!    from the workspace root);
//! 3. `<workspace>/target/debug/cairn`.
//!
//! If none exists it runs `cargo build -p cairn` once (bounded to 15
//! minutes) and uses the result. Build the binary first (`cargo build -p
//! cairn`) to be sure the harness does not test a stale one: when a binary
//! is found it is used as is.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

use crate::certs::TestPki;

use crate::netns::NetLab;
use crate::ports::free_port;
use crate::power::PowerDisks;
use crate::proxy::ProxySet;

/// Heartbeat interval passed to every member.
pub const HEARTBEAT_MS: u64 = 50;
/// Election timeout passed to every member.
pub const ELECTION_TIMEOUT_MS: u64 = 500;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Path of the `cairn` binary (see the module docs); builds it once if it
/// cannot be found.
pub fn cairn_bin() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("CAIRN_BIN={} does not exist", p.display()))
        };
    }
    let candidates = [
        target_dir().join("debug/cairn"),
        workspace_root().join("target/debug/cairn"),
    ];
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("cairn-chaos: no cairn binary found; running `cargo build -p cairn`");
    let mut child = Command::new(cargo)
        .args(["build", "-p", "cairn"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn cargo build: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => return Err(format!("cargo build -p cairn failed: {status}")),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cargo build -p cairn timed out; build it first".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("waiting for cargo build: {e}")),
        }
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| "cargo build -p cairn succeeded but no binary found".into())
}

/// Client and peer port of every member inside a [`NetLab`] (each member
/// has its own address there); a re-added member gets peer port
/// `LAB_PEER_PORT + generation`.
pub const LAB_CLIENT_PORT: u16 = 2379;
pub const LAB_PEER_PORT: u16 = 2380;

/// `GET /health` answered 200 (the member sees a leader).
pub fn http_health(host: Ipv4Addr, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&(host, port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Run state of one member process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Not running (never started or killed).
    Down,
    Running,
    /// SIGSTOPped.
    Paused,
}

pub struct Member {
    /// Changes when the member is removed and re-added (`n2g1`, ...).
    pub name: String,
    /// 127.0.0.1, or the member's address in its namespace.
    pub host: Ipv4Addr,
    /// The namespace it runs in (`ip netns exec`), if in a lab.
    pub netns: Option<String>,
    pub client_port: u16,
    /// Changes when the member is re-added (a new peer URL is a new member
    /// ID, as etcd gives a re-added member a new ID).
    pub peer_port: u16,
    /// How many times this slot was removed and re-added.
    pub generation: u32,
    /// `(host, port)` of the member's peer proxy, if peer traffic goes
    /// through [`ProxySet`]: then this, not the real peer port, is the
    /// member's advertised peer URL (what its ID is derived from).
    pub peer_proxy: Option<(Ipv4Addr, u16)>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started before: restarts go without bootstrap flags, as an
    /// operator would restart a member on its data dir.
    started: bool,
    /// Joins an existing cluster on first start (after `member add`)
    /// instead of bootstrapping.
    joins: bool,
    /// `https` when the cluster runs TLS, else `http`.
    scheme: &'static str,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.client_port)
    }

    /// The advertised peer URL: the proxy's if there is one.
    pub fn peer_url(&self) -> String {
        match self.peer_proxy {
            Some((host, port)) => format!("{}://{host}:{port}", self.scheme),
            None => format!("{}://{}:{}", self.scheme, self.host, self.peer_port),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn state(&self) -> RunState {
        match (&self.child, self.paused) {
            (None, _) => RunState::Down,
            (Some(_), false) => RunState::Running,
            (Some(_), true) => RunState::Paused,
        }
    }
}

/// N `cairn serve` processes forming one cluster.
pub struct ProcCluster {
    dir: Option<tempfile::TempDir>,
    pub members: Vec<Member>,
    pub initial_cluster: String,
    bin: PathBuf,
    /// The private network, if the members run in namespaces. Dropped
    /// after the processes are killed (see `Drop`).
    pub net: Option<NetLab>,
    /// Userspace peer proxies (delay/loss without netem), if used.
    /// Dropped with the cluster, after the processes.
    pub proxies: Option<ProxySet>,
    /// More `cairn serve` flags for every member.
    serve_args: Vec<String>,
    /// The certificates, when the members run TLS on both ports.
    tls: Option<Arc<TestPki>>,
    /// Each member's own file system, when the run cuts power
    /// ([`Self::power_cut`]). Unmounted after the processes are killed.
    disks: Option<PowerDisks>,
}

/// The certificates of the TLS clusters this process runs, by the
/// `host:port` of each member's client URL: [`channel`] and
/// [`cli_tls_args`] take only a URL, as the workloads hand them one.
/// Entries leave with their cluster.
static TLS_ENDPOINTS: Mutex<BTreeMap<String, Arc<TestPki>>> = Mutex::new(BTreeMap::new());

fn authority(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

fn tls_of(url: &str) -> Option<Arc<TestPki>> {
    let map = TLS_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
    map.get(authority(url)).cloned()
}

/// The `cairn` client flags a member at `url` needs: the test CA and a
/// client certificate if its cluster runs TLS, else none.
pub fn cli_tls_args(url: &str) -> Vec<std::ffi::OsString> {
    tls_of(url).map(|pki| pki.cli_args()).unwrap_or_default()
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let out = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("kill -s {sig} {pid}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill -s {sig} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl ProcCluster {
    /// Starts `n` members and waits (up to `ready_timeout`) until all of
    /// them see a leader.
    /// With `net`, member `i` runs in `net`'s namespace `i` (which must
    /// exist). With `proxy_seed`, every member's peer traffic goes
    /// through a [`ProxySet`] seeded with it (on the lab's bridge address
    /// in a lab, else on 127.0.0.1). `serve_args` go to every member's
    /// `cairn serve`.
    pub fn start(
        n: usize,
        ready_timeout: Duration,
        net: Option<NetLab>,
        proxy_seed: Option<u64>,
        serve_args: Vec<String>,
    ) -> Result<ProcCluster, String> {
        ProcCluster::start_with_tls(n, ready_timeout, net, proxy_seed, serve_args, false, false)
    }

    /// [`Self::start`]; with `tls`, every member runs TLS on both ports
    /// with client and peer certificates required (certificates made for
    /// this cluster's addresses, in its directory); with `power`, each
    /// member keeps its data dir on its own file system, so that
    /// [`Self::power_cut`] can lose what it did not sync.
    pub fn start_with_tls(
        n: usize,
        ready_timeout: Duration,
        net: Option<NetLab>,
        proxy_seed: Option<u64>,
        mut serve_args: Vec<String>,
        tls: bool,
        power: bool,
    ) -> Result<ProcCluster, String> {
        let bin = cairn_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-chaos-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let disks = if power {
            Some(PowerDisks::create(dir.path(), n)?)
        } else {
            None
        };
        if let Some(lab) = &net {
            if lab.len() < n {
                return Err(format!("lab has {} namespaces, need {n}", lab.len()));
            }
        }
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let (host, netns, client_port, peer_port) = match &net {
                    Some(lab) => (
                        lab.member_addr(i),
                        Some(lab.namespace(i).to_string()),
                        LAB_CLIENT_PORT,
                        LAB_PEER_PORT,
                    ),
                    None => (Ipv4Addr::LOCALHOST, None, free_port(), free_port()),
                };
                Member {
                    data_dir: match &disks {
                        Some(d) => d.data_dir(i),
                        None => dir.path().join(&name),
                    },
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    host,
                    netns,
                    client_port,
                    peer_port,
                    generation: 0,
                    peer_proxy: None,
                    child: None,
                    paused: false,
                    started: false,
                    joins: false,
                    scheme: if tls { "https" } else { "http" },
                }
            })
            .collect();
        let mut members = members;
        let proxies = match proxy_seed {
            Some(seed) => {
                let (bind, sources) = match &net {
                    Some(lab) => (lab.gateway(), (0..n).map(|i| lab.member_addr(i)).collect()),
                    None => (Ipv4Addr::LOCALHOST, Vec::new()),
                };
                let mut set = ProxySet::new(bind, sources, seed)?;
                for (i, m) in members.iter_mut().enumerate() {
                    let port = set.add(i, (m.host, m.peer_port).into())?;
                    m.peer_proxy = Some((bind, port));
                }
                Some(set)
            }
            None => None,
        };
        let tls = if tls {
            let mut ips: Vec<std::net::IpAddr> = members.iter().map(|m| m.host.into()).collect();
            ips.extend(
                members
                    .iter()
                    .filter_map(|m| m.peer_proxy)
                    .map(|(h, _)| std::net::IpAddr::V4(h)),
            );
            let certs = dir.path().join("certs");
            std::fs::create_dir_all(&certs).map_err(|e| format!("certs dir: {e}"))?;
            let pki = Arc::new(TestPki::write_for(&certs, &ips));
            serve_args.extend(pki.serve_args());
            let mut map = TLS_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
            for m in &members {
                map.insert(authority(&m.client_url()).to_string(), pki.clone());
            }
            Some(pki)
        } else {
            None
        };
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = ProcCluster {
            dir: Some(dir),
            members,
            initial_cluster,
            bin,
            net,
            proxies,
            serve_args,
            tls,
            disks,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        c.wait_healthy(ready_timeout)?;
        Ok(c)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("dir present")
    }

    /// Do not delete the data dirs and logs on drop (for post-mortems).
    pub fn keep_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(d) => d.keep(),
            None => PathBuf::new(),
        }
    }

    /// Starts member `i` (no-op if it runs).
    pub fn spawn(&mut self, i: usize) -> Result<(), String> {
        let bin = self.bin.clone();
        let initial_cluster = self.initial_cluster.clone();
        let m = &mut self.members[i];
        if m.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("open {}: {e}", m.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("serve");
        if !m.started && m.joins {
            cmd.args(["--initial-cluster", &format!("{}={}", m.name, m.peer_url())])
                .args(["--initial-cluster-state", "existing"]);
        } else if !m.started {
            cmd.args(["--initial-cluster", &initial_cluster]);
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client", &format!("{}:{}", m.host, m.client_port)])
            .args(["--listen-peer", &format!("{}:{}", m.host, m.peer_port)])
            .args(["--advertise-peer", &m.peer_url()])
            .args([
                "--heartbeat-interval-ms",
                &HEARTBEAT_MS.to_string(),
                "--election-timeout-ms",
                &ELECTION_TIMEOUT_MS.to_string(),
            ])
            .args(&self.serve_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        m.child = Some(child);
        m.paused = false;
        m.started = true;
        Ok(())
    }

    /// SIGKILLs the members `which` at once: every signal is sent before
    /// any exit is awaited, so none of them outlives another by a reap.
    pub fn kill_all(&mut self, which: &[usize]) {
        for i in which {
            if let Some(c) = self.members[*i].child.as_mut() {
                let _ = c.kill();
            }
        }
        for i in which {
            self.kill(*i);
        }
    }

    /// SIGKILL member `i` (no shutdown path runs, as in a crash) and reap it.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        m.paused = false;
    }

    /// Cuts the power to members `which` at once (see [`crate::power`]):
    /// stops them all (SIGSTOP: the instant the power goes), cuts their
    /// disks, which loses every write they did not sync, SIGKILLs and reaps
    /// them, and powers the disks back on. They stay down until
    /// [`spawn`](Self::spawn)ed.
    pub fn power_cut(&mut self, which: &[usize]) -> Result<(), String> {
        if self.disks.is_none() {
            return Err("power cut without power disks".into());
        }
        let stopped = which.iter().try_for_each(|i| match self.members[*i].pid() {
            Some(pid) => signal(pid, "STOP"),
            None => Ok(()),
        });
        let disks = self.disks.as_ref().expect("checked above");
        let cut = stopped.and_then(|()| which.iter().try_for_each(|i| disks.cut(*i)));
        self.kill_all(which);
        cut?;
        let disks = self.disks.as_mut().expect("checked above");
        which.iter().try_for_each(|i| disks.restore(*i))
    }

    /// Makes member `i`'s disk fail under it while it runs: from now on
    /// every read, write and sync it does there fails with EIO, and what it
    /// had not synced is lost. A member must then stop by itself.
    pub fn fail_disk(&mut self, i: usize) -> Result<(), String> {
        self.disks
            .as_ref()
            .ok_or("disk failure without power disks")?
            .cut(i)
    }

    /// Gives member `i` (which must be down) a working disk again, with
    /// what it had synced before the failure.
    pub fn repair_disk(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].child.is_some() {
            return Err(format!("{} still runs", self.members[i].name));
        }
        self.disks
            .as_mut()
            .ok_or("disk repair without power disks")?
            .restore(i)
    }

    /// Replaces member `i` by a brand-new member in the same slot (same
    /// namespace and client port): kills it, wipes its data dir, and gives
    /// it a new name and peer URL (hence a new member ID). The next
    /// [`spawn`](Self::spawn) joins the existing cluster; call it after
    /// `MemberAdd` of [`Member::peer_url`].
    pub fn replace(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        let in_lab = self.net.is_some();
        let m = &mut self.members[i];
        if m.data_dir.exists() {
            std::fs::remove_dir_all(&m.data_dir)
                .map_err(|e| format!("wipe {}: {e}", m.data_dir.display()))?;
        }
        m.generation += 1;
        m.name = format!("n{}g{}", i + 1, m.generation);
        m.peer_port = if in_lab {
            LAB_PEER_PORT + m.generation as u16
        } else {
            free_port()
        };
        m.started = false;
        m.joins = true;
        if let Some(set) = self.proxies.as_mut() {
            let port = set.add(i, (m.host, m.peer_port).into())?;
            m.peer_proxy = Some((set.bind_ip(), port));
        }
        Ok(())
    }

    /// SIGSTOP member `i`.
    pub fn pause(&mut self, i: usize) -> Result<(), String> {
        let m = &mut self.members[i];
        if let Some(pid) = m.pid() {
            signal(pid, "STOP")?;
            m.paused = true;
        }
        Ok(())
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), String> {
        let m = &mut self.members[i];
        if let Some(pid) = m.pid() {
            signal(pid, "CONT")?;
        }
        m.paused = false;
        Ok(())
    }

    /// Resumes paused members and restarts dead ones; a member that exited
    /// by itself is reported (and restarted).
    pub fn heal(&mut self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.resume(i)?;
            }
            let exited = match self.members[i].child.as_mut() {
                Some(c) => c.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                notes.push(format!(
                    "{} exited by itself ({status})",
                    self.members[i].name
                ));
                self.members[i].child = None;
            }
            if self.members[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        Ok(notes)
    }

    /// Waits until member `i` exits by itself (a removed member stops):
    /// how long it took, or why not (still running after `timeout`, or a
    /// non-zero exit). A member that is not running is an error too.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Result<Duration, String> {
        let (status, took) = self.wait_exit_status(i, timeout)?;
        if status.success() {
            Ok(took)
        } else {
            Err(format!("{} exited with {status}", self.members[i].name))
        }
    }

    /// Waits until member `i` exits by itself, whatever its status: the
    /// status and how long it took, or why not (still running after
    /// `timeout`; not running at all).
    pub fn wait_exit_status(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, Duration), String> {
        let started = Instant::now();
        let m = &mut self.members[i];
        let Some(child) = m.child.as_mut() else {
            return Err(format!("{} is not running", m.name));
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    m.child = None;
                    return Ok((status, started.elapsed()));
                }
                Ok(None) if started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    return Err(format!("{} still runs {timeout:?} later", m.name));
                }
                Err(e) => return Err(format!("waiting for {}: {e}", m.name)),
            }
        }
    }

    /// Members that exited without being killed by the harness.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push(format!("{} exited ({status})", m.name));
                }
            }
        }
        out
    }

    /// Whether `m` sees a leader: `GET /health`, or with TLS (`rt` is then
    /// given) a status call.
    fn healthy(&self, m: &Member, rt: Option<&tokio::runtime::Runtime>) -> bool {
        match rt {
            None => http_health(m.host, m.client_port),
            Some(rt) => rt
                .block_on(status(&m.client_url(), Duration::from_millis(500)))
                .is_ok_and(|(_, leader, _)| leader != 0),
        }
    }

    /// Waits until every running member answers `GET /health` with 200
    /// (with TLS: reports a leader).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let rt = match &self.tls {
            Some(_) => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime for health probes: {e}"))?,
            ),
            None => None,
        };
        for m in self
            .members
            .iter()
            .filter(|m| m.state() == RunState::Running)
        {
            while !self.healthy(m, rt.as_ref()) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} not healthy after {timeout:?}\n{}",
                        m.name,
                        self.logs(40)
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every member's log.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} log (last {lines} lines) ---\n", m.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url()).collect()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        // Processes first, then their file systems (before the temp dir
        // holding them goes), their proxies and the network they lived in.
        self.disks.take();
        self.proxies.take();
        self.net.take();
        if self.tls.is_some() {
            let mut map = TLS_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner());
            for m in &self.members {
                map.remove(authority(&m.client_url()));
            }
        }
    }
}

/// A lazily connecting channel with per-request `timeout` (over TLS with
/// a client certificate when `url` is a member of a TLS cluster).
pub fn channel(url: &str, timeout: Duration) -> Channel {
    lazy_channel(url, Some(timeout))
}

/// [`channel`] without a per-request timeout, for long-lived streams.
pub fn stream_channel(url: &str) -> Channel {
    lazy_channel(url, None)
}

fn lazy_channel(url: &str, timeout: Option<Duration>) -> Channel {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .expect("valid url")
        .connect_timeout(Duration::from_millis(500));
    if let Some(timeout) = timeout {
        endpoint = endpoint.timeout(timeout);
    }
    if let Some(pki) = tls_of(url) {
        endpoint = endpoint.tls_config(pki.client_tls()).expect("TLS config");
    }
    endpoint.connect_lazy()
}

/// `(member_id, leader_id, raft_applied_index)` of the member at `url`.
pub async fn status(url: &str, timeout: Duration) -> Result<(u64, u64, u64), String> {
    let mut c = MaintenanceClient::new(channel(url, timeout));
    let r = tokio::time::timeout(timeout, c.status(pb::StatusRequest {}))
        .await
        .map_err(|_| "status timed out".to_string())?
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let me = r.header.map(|h| h.member_id).unwrap_or(0);
    Ok((me, r.leader, r.raft_applied_index))
}

/// Member ids (`ResponseHeader.member_id`) of the members at `urls`, in
/// order; retried until `timeout` passes.
pub async fn member_ids(urls: &[String], timeout: Duration) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + timeout;
    let mut ids = Vec::new();
    for u in urls {
        loop {
            match status(u, Duration::from_millis(500)).await {
                Ok((me, _, _)) if me != 0 => {
                    ids.push(me);
                    break;
                }
                r if Instant::now() > deadline => {
                    return Err(format!("no member id from {u}: {r:?}"));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(ids)
}

/// Index (into `ids`) of the leader as reported by most of the members
/// that answer `Maintenance.Status` within `timeout` (a paused leader that
/// the others still follow is reported too).
pub async fn find_leader(urls: &[String], ids: &[u64], timeout: Duration) -> Option<usize> {
    let mut votes: Vec<(u64, usize)> = Vec::new();
    for u in urls {
        if let Ok((_, l, _)) = status(u, timeout).await {
            if l != 0 {
                match votes.iter_mut().find(|(id, _)| *id == l) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((l, 1)),
                }
            }
        }
    }
    let (leader, _) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    ids.iter().position(|id| *id == leader)
}

/// Head revision of the member's store (serializable read, no barrier).
pub async fn local_revision(url: &str, timeout: Duration) -> Result<i64, String> {
    let mut c = KvClient::new(channel(url, timeout));
    let r = tokio::time::timeout(
        timeout,
        c.range(pb::RangeRequest {
            key: b"\0".to_vec(),
            serializable: true,
            count_only: true,
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| "range timed out".to_string())?
    .map_err(|e| e.message().to_string())?
    .into_inner();
    Ok(r.header.map(|h| h.revision).unwrap_or(0))
}

/// Turns auth on for a TLS cluster: a `root` user, and the user the test
/// client certificate names ([`crate::certs::CLIENT_COMMON_NAME`]), both
/// with the root role, so every client of the run goes on working, each
/// request now resolved to its user and every write checked where it is
/// applied.
pub async fn enable_auth_for_cert_user(url: &str, timeout: Duration) -> Result<(), String> {
    use pb::auth_client::AuthClient;
    let mut auth = AuthClient::new(channel(url, timeout));
    let no_password = Some(cairn_proto::authpb::UserAddOptions { no_password: true });
    for name in ["root", crate::certs::CLIENT_COMMON_NAME] {
        auth.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            options: no_password,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("user add {name}: {}", e.message()))?;
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: name.into(),
            role: "root".into(),
        })
        .await
        .map_err(|e| format!("grant root to {name}: {}", e.message()))?;
    }
    auth.auth_enable(pb::AuthEnableRequest {})
        .await
        .map_err(|e| format!("auth enable: {}", e.message()))?;
    Ok(())
}

/// The members the CORRUPT alarm names, as the member at `url` knows them.
pub async fn corrupt_alarms(url: &str, timeout: Duration) -> Result<Vec<u64>, String> {
    let mut c = MaintenanceClient::new(channel(url, timeout));
    let request = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Get as i32,
        member_id: 0,
        alarm: pb::AlarmType::Corrupt as i32,
    };
    let r = tokio::time::timeout(timeout, c.alarm(request))
        .await
        .map_err(|_| "alarm list timed out".to_string())?
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(r.alarms.iter().map(|a| a.member_id).collect())
}

/// `Maintenance.HashKV` at `revision` on the member at `url`.
pub async fn hash_kv(url: &str, revision: i64, timeout: Duration) -> Result<u32, String> {
    let mut c = MaintenanceClient::new(channel(url, timeout));
    let r = tokio::time::timeout(timeout, c.hash_kv(pb::HashKvRequest { revision }))
        .await
        .map_err(|_| "hash_kv timed out".to_string())?
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(r.hash)
}
