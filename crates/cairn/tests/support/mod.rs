//! Real `cairn` processes on 127.0.0.1 for end-to-end tests. Every child is
//! killed when the fixture drops, including when a test panics.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use cairn_chaos::certs::TestPki;
pub use cairn_chaos::ports::free_port;

/// Poll `cond` every 20 ms until it holds; panic after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct ProcMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Extra flags (e.g. `--initial-cluster-state existing`).
    pub extra: Vec<String>,
    /// Its ports serve TLS with these certificates ([`ProcCluster::start_tls`]).
    pub tls: Option<TestPki>,
}

impl ProcMember {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }

    /// Whether the member answers clients (sees a leader): `GET /health`,
    /// or with TLS a read through `cairn get` showing the client certificate.
    fn healthy(&self) -> bool {
        let Some(pki) = &self.tls else {
            return http_health(self.client_port);
        };
        let mut cmd = Command::new(cairn_bin());
        cmd.args(["--endpoints", &self.client_url(), "--dial-timeout", "500ms"])
            .args(["--command-timeout", "1s"])
            .args(pki.cli_args())
            .args(["get", "health-probe"]);
        run_bounded(cmd, None).status.success()
    }
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<ProcMember>,
    pub initial_cluster: String,
}

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

impl ProcCluster {
    pub fn start(n: usize) -> ProcCluster {
        ProcCluster::start_with(n, None)
    }

    /// `n` members with TLS on both ports, clients and peers asked for
    /// certificates from the test CA (its files under the cluster's dir).
    pub fn start_tls(n: usize) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let pki = TestPki::write(&certs);
        ProcCluster::start_in(dir, n, Some(pki))
    }

    fn start_with(n: usize, pki: Option<TestPki>) -> ProcCluster {
        ProcCluster::start_in(tempfile::tempdir().unwrap(), n, pki)
    }

    fn start_in(dir: tempfile::TempDir, n: usize, pki: Option<TestPki>) -> ProcCluster {
        let mut members: Vec<ProcMember> = (0..n)
            .map(|i| {
                let name = format!("n{}", i + 1);
                ProcMember {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                    extra: Vec::new(),
                    tls: pki.clone(),
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.extra = vec!["--initial-cluster".into(), initial_cluster.clone()];
            if let Some(pki) = &pki {
                m.extra.extend(pki.serve_args());
            }
        }
        let mut c = ProcCluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(Duration::from_secs(20));
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = Command::new(cairn_bin())
            .arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client", &format!("127.0.0.1:{}", m.client_port)])
            .args(["--listen-peer", &format!("127.0.0.1:{}", m.peer_port)])
            .args([
                "--heartbeat-interval-ms",
                "50",
                "--election-timeout-ms",
                "500",
            ])
            .args(&m.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn cairn");
        m.child = Some(child);
    }

    /// A new plain member `name` on its own ports, to join with
    /// `--initial-cluster initial` after `member add` (not started): its
    /// index, for [`ProcCluster::spawn`].
    pub fn joiner(
        &mut self,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial: String,
    ) -> usize {
        self.members.push(ProcMember {
            name: name.into(),
            client_port,
            peer_port,
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
            extra: vec![
                "--initial-cluster".into(),
                initial,
                "--initial-cluster-state".into(),
                "existing".into(),
            ],
            tls: None,
        });
        self.members.len() - 1
    }

    /// Waits up to `timeout` for member `i` to exit by itself and returns
    /// its exit status (it is then not running); panics with the logs.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.members[i].child.as_mut().expect("member running");
            if let Some(status) = child.try_wait().unwrap() {
                self.members[i].child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}\n{}",
                self.members[i].name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown path runs, as in a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Panics with every member's log as it is then (not as it was when
    /// the wait began) if one is not healthy within `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            while !m.healthy() {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {} healthy\n{}",
                    m.name,
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} log (last 40 lines) ---\n", m.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// `GET /health` answered 200 (the member sees a leader).
pub fn http_health(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
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

/// Whether `curl` runs here (`.ci/run` installs it).
pub fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run etcdctl 3.x against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    etcdctl_stdin(endpoints, args, None)
}

pub fn etcdctl_stdin(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=3s", "--command-timeout=10s"])
        .args(args);
    run_bounded(cmd, stdin)
}

/// Run `cmd` to completion (killed after 30 s), feeding `stdin` if given,
/// capturing stdout and stderr.
pub fn run_bounded(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    wait_with_timeout(child, Duration::from_secs(30))
}

/// Wait for a child, killing it after `timeout` (bounded tests).
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

pub fn data_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A long-running child (watch, lock, elect) whose stdout is collected as
/// it arrives; killed on drop.
pub struct Collected {
    pub child: Child,
    out: Arc<Mutex<String>>,
}

impl Collected {
    pub fn spawn(mut cmd: Command) -> Collected {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Collected { child, out }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.out.lock().unwrap().contains(needle)
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
