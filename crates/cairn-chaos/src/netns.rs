//! A private network for one chaos run: one Linux bridge, one network
//! namespace per member with a veth pair to the bridge, addresses in a
//! private /24 picked per run. Faults: partitions (per-pair blackhole
//! routes inside the member namespaces, iproute2 only) and, where the
//! kernel has `sch_netem`, packet delay and loss.
//!
//! ```text
//!  root namespace: bridge cch-<pid>-<run>-b  10.213.X.1/24  (test clients)
//!    ├─ veth cch-…-v0 ── eth0 10.213.X.2 in netns cch-…-n0 (member 0)
//!    ├─ veth cch-…-v1 ── eth0 10.213.X.3 in netns cch-…-n1 (member 1)
//!    └─ …
//! ```
//!
//! Everything this module creates is named `cch-<pid base 36>-<run>-…`
//! ([`PREFIX`]), and only such objects are ever removed:
//!
//! * [`NetLab`] removes its namespaces (which removes their veth pairs) and
//!   its bridge on drop, also when a test panics;
//! * [`sweep_leftovers`] (run before each new lab) removes objects with the
//!   prefix whose creating process no longer exists (a run that was
//!   SIGKILLed), killing the processes still inside those namespaces.
//!
//! Needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN) and the `ip` tool;
//! [`NetLab::create`] says precisely why when it cannot work, and the
//! caller skips the partition faults with that message.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every bridge, veth and namespace name this module creates.
pub const PREFIX: &str = "cch-";

/// Bound on any single `ip` / `tc` invocation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `program args` with a time bound; `Ok(stdout)` on success,
/// `Err(command: stderr)` otherwise.
pub fn run_bounded(program: &str, args: &[&str]) -> Result<String, String> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: timed out after {COMMAND_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run_bounded("ip", args)
}

/// Effective uid of this process (from `/proc/self/status`).
pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub(crate) fn to_base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// `cch-<pid base 36>`: the start of every name a process with `pid`
/// creates.
pub fn stem_for_pid(pid: u32) -> String {
    format!("{PREFIX}{}", to_base36(pid))
}

/// The pid encoded in a name this module made (`cch-<pid36>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    owner_pid_after(PREFIX, name)
}

/// The pid encoded in `name` as `<prefix><pid36>-...` (how the harness
/// names what it creates, so that leftovers of dead runs are found).
pub(crate) fn owner_pid_after(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let pid36 = rest.split('-').next()?;
    u32::from_str_radix(pid36, 36).ok()
}

pub(crate) fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Names from `ip netns list` ("name" or "name (id: 3)").
fn list_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Link names from `ip -o link show` ("5: name@if4: <...>").
fn list_links() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_string())
        })
        .collect()
}

/// Removes namespaces and links named with [`PREFIX`] whose creating
/// process is gone (after SIGKILLing the processes left inside those
/// namespaces). Objects of live processes, and anything without the
/// prefix, are never touched. Returns what was removed.
pub fn sweep_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    let stale = |name: &str| owner_pid(name).is_some_and(|pid| !process_alive(pid));
    for ns in list_namespaces().into_iter().filter(|n| stale(n)) {
        for pid in ip(&["netns", "pids", &ns])
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = run_bounded("kill", &["-s", "KILL", pid]);
        }
        if ip(&["netns", "del", &ns]).is_ok() {
            removed.push(format!("netns {ns}"));
        }
    }
    for link in list_links().into_iter().filter(|n| stale(n)) {
        if ip(&["link", "del", &link]).is_ok() {
            removed.push(format!("link {link}"));
        }
    }
    removed
}

/// One run's private network (see the module docs). Dropping it removes
/// everything it created.
pub struct NetLab {
    /// `cch-<pid36>-<run36>`: the unique stem of every name below.
    tag: String,
    bridge: Option<String>,
    /// Namespaces created so far, member index order.
    namespaces: Vec<String>,
    /// First three octets of the /24 (`.1` is the bridge, `.2+i` member i).
    subnet: [u8; 3],
    /// Why `tc netem` cannot be used here, if it cannot.
    netem_unavailable: Option<String>,
    /// Blackholed (from member, to member) pairs currently in place.
    blocked: BTreeSet<(usize, usize)>,
    /// Members with a netem qdisc currently installed.
    degraded: BTreeSet<usize>,
}

impl std::fmt::Debug for NetLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetLab")
            .field("tag", &self.tag)
            .field("subnet", &self.subnet)
            .finish()
    }
}

/// Picks a 10.213.X.0/24 that no local address or route mentions.
fn pick_subnet(seed: u32) -> Result<[u8; 3], String> {
    let used = format!(
        "{}\n{}",
        ip(&["-4", "-o", "addr", "show"])?,
        ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default()
    );
    (0..256u32)
        .map(|k| ((seed.wrapping_mul(2_654_435_761) >> 8).wrapping_add(k) % 254 + 1) as u8)
        .find(|x| !used.contains(&format!("10.213.{x}.")))
        .map(|x| [10, 213, x])
        .ok_or_else(|| "no free 10.213.X.0/24".to_string())
}

impl NetLab {
    /// Whether this process may even try (root and `ip` present); the
    /// reason when not.
    pub fn precondition() -> Result<(), String> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => {
                return Err(format!(
                    "not root (euid {uid}); network namespaces need root"
                ))
            }
            None => return Err("cannot read the effective uid".into()),
        }
        ip(&["-V"]).map_err(|e| format!("iproute2 `ip` not usable: {e}"))?;
        Ok(())
    }

    /// Creates the bridge and `members` namespaces. On error everything
    /// created so far is removed (the partial lab drops).
    pub fn create(members: usize) -> Result<NetLab, String> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        Self::precondition()?;
        if members + 2 > 254 {
            return Err(format!("{members} members do not fit a /24"));
        }
        let swept = sweep_leftovers();
        if !swept.is_empty() {
            eprintln!("cairn-chaos: removed leftovers of dead runs: {swept:?}");
        }
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}-{}", stem_for_pid(pid), to_base36(run % 1296));
        let mut lab = NetLab {
            bridge: None,
            namespaces: Vec::new(),
            subnet: pick_subnet(pid ^ (run << 20))?,
            netem_unavailable: None,
            blocked: BTreeSet::new(),
            degraded: BTreeSet::new(),
            tag,
        };
        let bridge = format!("{}-b", lab.tag);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        lab.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.gateway()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..members {
            lab.add_namespace(i, &bridge)?;
        }
        lab.netem_unavailable = lab.probe_netem().err();
        Ok(lab)
    }

    fn add_namespace(&mut self, i: usize, bridge: &str) -> Result<(), String> {
        let ns = format!("{}-n{i}", self.tag);
        let veth = format!("{}-v{i}", self.tag);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", bridge])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let addr = format!("{}/24", self.member_addr(i));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Installs and removes a netem qdisc once, to learn whether the kernel
    /// has `sch_netem`.
    fn probe_netem(&self) -> Result<(), String> {
        let ns = self.namespaces.first().ok_or("no namespace")?;
        run_bounded(
            "ip",
            &[
                "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
                "1ms",
            ],
        )?;
        let _ = run_bounded(
            "ip",
            &[
                "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ],
        );
        Ok(())
    }

    /// Why delay/loss faults cannot run here (`None`: they can).
    pub fn netem_unavailable(&self) -> Option<&str> {
        self.netem_unavailable.as_deref()
    }

    /// The bridge's address: the test process's source address.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Member `i`'s address (inside its namespace).
    pub fn member_addr(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 2 + i as u8)
    }

    /// Member `i`'s namespace name.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    fn route(&self, verb: &str, from: usize, to: usize) -> Result<(), String> {
        let dst = format!("{}/32", self.member_addr(to));
        ip(&[
            "-n",
            &self.namespaces[from],
            "route",
            verb,
            "blackhole",
            &dst,
        ])
        .map(|_| ())
    }

    /// Cuts the link between members `a` and `b` in both directions
    /// (idempotent).
    pub fn cut(&mut self, a: usize, b: usize) -> Result<(), String> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Drops what member `from` sends to `to` (a blackhole route in
    /// `from`'s namespace); `to`'s packets still reach `from`.
    pub fn cut_one_way(&mut self, from: usize, to: usize) -> Result<(), String> {
        if from != to && !self.blocked.contains(&(from, to)) {
            self.route("add", from, to)?;
            self.blocked.insert((from, to));
        }
        Ok(())
    }

    /// Cuts every link between a member of `left` and one of `right`.
    pub fn split(&mut self, left: &[usize], right: &[usize]) -> Result<(), String> {
        for &a in left {
            for &b in right {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Pairs currently cut (each once, smaller index first).
    pub fn cut_pairs(&self) -> Vec<(usize, usize)> {
        self.blocked
            .iter()
            .copied()
            .filter(|(a, b)| a < b)
            .collect()
    }

    /// Removes every blackhole route and netem qdisc this lab installed.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_err = None;
        for (from, to) in std::mem::take(&mut self.blocked) {
            if let Err(e) = self.route("del", from, to) {
                first_err.get_or_insert(e);
            }
        }
        for i in std::mem::take(&mut self.degraded) {
            if let Err(e) = self.tc(i, &["qdisc", "del", "dev", "eth0", "root"]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn tc(&self, i: usize, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["netns", "exec", &self.namespaces[i], "tc"];
        full.extend_from_slice(args);
        run_bounded("ip", &full).map(|_| ())
    }

    /// Delays (and jitters) every packet member `i` sends, and drops
    /// `loss_percent` of them. Errors when netem is unavailable.
    pub fn degrade(
        &mut self,
        i: usize,
        delay_ms: u64,
        jitter_ms: u64,
        loss_percent: u32,
    ) -> Result<(), String> {
        if let Some(why) = &self.netem_unavailable {
            return Err(format!("netem unavailable: {why}"));
        }
        let verb = if self.degraded.contains(&i) {
            "change"
        } else {
            "add"
        };
        let (d, j, l) = (
            format!("{delay_ms}ms"),
            format!("{jitter_ms}ms"),
            format!("{loss_percent}%"),
        );
        self.tc(
            i,
            &[
                "qdisc", verb, "dev", "eth0", "root", "netem", "delay", &d, &j, "loss", &l,
            ],
        )?;
        self.degraded.insert(i);
        Ok(())
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with
        // it the pair. Processes still inside are the caller's to kill
        // first (ProcCluster does); any left are killed here.
        for ns in std::mem::take(&mut self.namespaces) {
            for pid in ip(&["netns", "pids", &ns])
                .unwrap_or_default()
                .split_whitespace()
            {
                let _ = run_bounded("kill", &["-s", "KILL", pid]);
            }
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("cairn-chaos: could not remove {ns}: {e}");
            }
        }
        if let Some(b) = self.bridge.take() {
            if let Err(e) = ip(&["link", "del", &b]) {
                eprintln!("cairn-chaos: could not remove {b}: {e}");
            }
        }
        // A veth whose namespace could not be created still has its host
        // end; remove those of this lab only.
        let stem = format!("{}-v", self.tag);
        for link in list_links().into_iter().filter(|l| l.starts_with(&stem)) {
            let _ = ip(&["link", "del", &link]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_the_owner_pid() {
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(4_194_304), "2hwcg");
        let name = format!("{PREFIX}{}-3-n0", to_base36(123_456));
        assert_eq!(owner_pid(&name), Some(123_456));
        assert_eq!(owner_pid("veth0"), None);
        assert_eq!(
            owner_pid("cch-zzzzzzzzzzzz-1"),
            None,
            "overflow is not a pid"
        );
        // Longest interface name must fit IFNAMSIZ - 1 = 15.
        let longest = format!(
            "{PREFIX}{}-{}-v9",
            to_base36(u32::MAX >> 10),
            to_base36(1295)
        );
        assert!(longest.len() <= 15, "{longest}");
    }
}
