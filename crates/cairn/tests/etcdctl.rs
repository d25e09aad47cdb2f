//! etcdctl 3.4 (Debian's etcd-client) against real `cairn` processes: every
//! command the core issue lists, behaving as against etcd. Skips with a
//! message only when etcdctl is not installed (`.ci/run` installs it).

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use support::*;

macro_rules! require_etcdctl {
    () => {
        if !etcdctl_available() {
            eprintln!("SKIP: etcdctl not found; install Debian's etcd-client (apt-get install etcd-client)");
            return;
        }
    };
}

/// A streaming etcdctl (watch, elect, lock) whose output is collected.
struct Streaming(Collected);

impl Streaming {
    fn spawn(endpoints: &str, args: &[&str]) -> Streaming {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args);
        Streaming(Collected::spawn(cmd))
    }

    fn wait_for(&self, what: &str, needle: &str) {
        wait_until(
            &format!("{what}: {needle:?} in {:?}", self.0.output()),
            Duration::from_secs(15),
            || self.0.contains(needle),
        );
    }

    fn output(&self) -> String {
        self.0.output()
    }

    fn exited(&mut self) -> bool {
        self.0.exited()
    }
}

fn revision_of(endpoints: &str) -> i64 {
    let json = ok(etcdctl(
        endpoints,
        &["get", "nonexistent-key-for-revision", "-w", "json"],
    ));
    let at = json.find("\"revision\":").expect("revision in header") + "\"revision\":".len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn etcdctl_keyspace_commands() {
    require_etcdctl!();
    let c = ProcCluster::start(3);
    let ep = c.endpoints();
    // put / get
    assert_eq!(ok(etcdctl(&ep, &["put", "foo", "bar"])).trim(), "OK");
    assert_eq!(ok(etcdctl(&ep, &["get", "foo"])), "foo\nbar\n");
    let rev_bar = revision_of(&ep);
    ok(etcdctl(&ep, &["put", "foo", "baz"]));
    assert_eq!(
        ok(etcdctl(&ep, &["get", "foo", &format!("--rev={rev_bar}")])),
        "foo\nbar\n",
        "historical read"
    );
    for (k, v) in [("p/a", "3"), ("p/b", "1"), ("p/c", "2"), ("q", "x")] {
        ok(etcdctl(&ep, &["put", k, v]));
    }
    assert_eq!(
        ok(etcdctl(&ep, &["get", "--prefix", "p/"])),
        "p/a\n3\np/b\n1\np/c\n2\n"
    );
    assert_eq!(
        ok(etcdctl(&ep, &["get", "--prefix", "p/", "--limit=2"])),
        "p/a\n3\np/b\n1\n"
    );
    assert_eq!(
        ok(etcdctl(
            &ep,
            &[
                "get",
                "--prefix",
                "p/",
                "--sort-by=VALUE",
                "--order=DESCEND"
            ]
        )),
        "p/a\n3\np/c\n2\np/b\n1\n"
    );
    assert_eq!(
        ok(etcdctl(&ep, &["get", "--prefix", "p/", "--keys-only"]))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["p/a", "p/b", "p/c"]
    );
    assert_eq!(
        ok(etcdctl(&ep, &["get", "foo", "--consistency=s"])),
        "foo\nbaz\n"
    );
    let json = ok(etcdctl(
        &ep,
        &["get", "--prefix", "p/", "--limit=1", "-w", "json"],
    ));
    assert!(
        json.contains("\"more\":true") && json.contains("\"count\":3"),
        "{json}"
    );
    // from-key: everything >= "p/c"
    assert_eq!(
        ok(etcdctl(&ep, &["get", "--from-key", "p/c", "--keys-only"]))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["p/c", "q"]
    );

    // del
    assert_eq!(ok(etcdctl(&ep, &["del", "--prev-kv", "q"])), "1\nq\nx\n");
    assert_eq!(ok(etcdctl(&ep, &["del", "--prefix", "p/"])).trim(), "3");
    assert_eq!(ok(etcdctl(&ep, &["get", "--prefix", "p/"])), "");

    // txn (stdin: compares, blank, success ops, blank, failure ops, blank)
    let out = ok(etcdctl_stdin(
        &ep,
        &["txn"],
        Some("value(\"foo\") = \"baz\"\n\nput t ok\n\nput t fail\n\n"),
    ));
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        ok(etcdctl(&ep, &["get", "t", "--print-value-only"])).trim(),
        "ok"
    );
    let out = ok(etcdctl_stdin(
        &ep,
        &["txn"],
        Some("mod(\"foo\") < \"1\"\n\nput t ok2\n\nput t failed\n\n"),
    ));
    assert!(out.starts_with("FAILURE"), "{out}");
    assert_eq!(
        ok(etcdctl(&ep, &["get", "t", "--print-value-only"])).trim(),
        "failed"
    );

    // watch: replay from a revision, prev kv, then live events
    let start = revision_of(&ep) + 1;
    ok(etcdctl(&ep, &["put", "w/1", "a"]));
    let watch = Streaming::spawn(
        &ep,
        &[
            "watch",
            "--prefix",
            "w/",
            &format!("--rev={start}"),
            "--prev-kv",
        ],
    );
    watch.wait_for("replayed event", "w/1\na");
    ok(etcdctl(&ep, &["put", "w/1", "b"]));
    watch.wait_for("live event with prev kv", "w/1\na\nw/1\nb");
    ok(etcdctl(&ep, &["del", "w/1"]));
    watch.wait_for("delete event", "DELETE");
    let text = watch.output();
    assert_eq!(
        text.matches("PUT").count(),
        2,
        "no duplicate events: {text}"
    );

    // compaction
    let now = revision_of(&ep);
    assert!(ok(etcdctl(&ep, &["compaction", &now.to_string()]))
        .contains(&format!("compacted revision {now}")));
    let out = etcdctl(&ep, &["get", "foo", &format!("--rev={rev_bar}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"));
}

fn parse_lease_id(granted: &str) -> String {
    // "lease 694d77aa9e38260f granted with TTL(60s)"
    granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string()
}

#[test]
fn etcdctl_lease_lock_elect() {
    require_etcdctl!();
    let c = ProcCluster::start(3);
    let ep = c.endpoints();
    let granted = ok(etcdctl(&ep, &["lease", "grant", "60"]));
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    let id = parse_lease_id(&granted);
    ok(etcdctl(&ep, &["put", "--lease", &id, "leased", "v"]));
    let ttl = ok(etcdctl(&ep, &["lease", "timetolive", &id, "--keys"]));
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"),
        "{ttl}"
    );
    let list = ok(etcdctl(&ep, &["lease", "list"]));
    assert!(
        list.contains("found 1 leases") && list.contains(&id),
        "{list}"
    );
    let ka = ok(etcdctl(&ep, &["lease", "keep-alive", "--once", &id]));
    assert!(ka.contains("keepalived with TTL(60)"), "{ka}");
    assert!(ok(etcdctl(&ep, &["lease", "revoke", &id])).contains("revoked"));
    assert_eq!(
        ok(etcdctl(&ep, &["get", "leased"])),
        "",
        "keys go with the lease"
    );

    // A short lease expires on its own.
    let id2 = parse_lease_id(&ok(etcdctl(&ep, &["lease", "grant", "2"])));
    ok(etcdctl(&ep, &["put", "--lease", &id2, "short", "v"]));
    wait_until(
        "key of expired lease deleted",
        Duration::from_secs(10),
        || ok(etcdctl(&ep, &["get", "short"])).is_empty(),
    );

    // lock: the second holder waits for the first.
    let first = Streaming::spawn(&ep, &["lock", "mylock"]);
    first.wait_for("first lock holder", "mylock/");
    let mut second = Streaming::spawn(&ep, &["lock", "mylock", "echo", "second-ran"]);
    std::thread::sleep(Duration::from_millis(700)); // give it a chance to (wrongly) run
    assert!(
        !second.output().contains("second-ran"),
        "second locker ran while the first held the lock"
    );
    drop(first); // kill: its lease is no longer kept alive, but etcdctl revokes on exit only if clean
    wait_until(
        "second locker ran after release",
        Duration::from_secs(90),
        || second.output().contains("second-ran"),
    );
    wait_until("second locker exited", Duration::from_secs(10), || {
        second.exited()
    });

    // elect: a campaigner becomes leader; an observer sees its value.
    let leader = Streaming::spawn(&ep, &["elect", "myelection", "v1"]);
    leader.wait_for("campaign won", "v1");
    let observer = Streaming::spawn(&ep, &["elect", "-l", "myelection"]);
    observer.wait_for("observer sees leader", "v1");
}

#[test]
fn etcdctl_cluster_and_maintenance_commands() {
    require_etcdctl!();
    let mut c = ProcCluster::start(3);
    let ep = c.endpoints();
    // Members publish their client URLs right after they start.
    wait_until(
        "every member has published its client URL",
        Duration::from_secs(20),
        || !ok(etcdctl(&ep, &["member", "list"])).contains(", , "),
    );
    let members = ok(etcdctl(&ep, &["member", "list"]));
    assert_eq!(members.lines().count(), 3, "{members}");
    for name in ["n1", "n2", "n3"] {
        assert!(members.contains(&format!(", {name}, ")), "{members}");
    }
    // etcdctl 3.4 prints health results on stderr.
    let out = etcdctl(&ep, &["endpoint", "health", "--cluster"]);
    let health = format!(
        "{}{}",
        ok(out.clone()),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    // etcdctl 3.4 dials each endpoint for status/hashkv/move-leader with the
    // whole URL as HTTP/2 `:authority`; `authority_fix` makes that work.
    let bare = &ep;
    let status = ok(etcdctl(bare, &["endpoint", "status", "-w", "table"]));
    assert_eq!(status.matches("3.5.0").count(), 3, "{status}");
    let hashes = ok(etcdctl(bare, &["endpoint", "hashkv"]));
    assert_eq!(hashes.lines().count(), 3, "{hashes}");

    // snapshot save: etcdctl checks the sha256 trailer itself.
    ok(etcdctl(&ep, &["put", "snap", "shot"]));
    let file = c.dir.path().join("backup.db");
    let out = ok(etcdctl(
        &c.members[0].client_url(),
        &["snapshot", "save", file.to_str().unwrap()],
    ));
    assert!(out.contains("Snapshot saved at"), "{out}");
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(len % 512, 32);

    // alarms: none raised
    assert_eq!(ok(etcdctl(&ep, &["alarm", "list"])).trim(), "");
    ok(etcdctl(&ep, &["alarm", "disarm"]));

    // move-leader to another member
    let json = ok(etcdctl(bare, &["endpoint", "status", "-w", "json"]));
    let leader_id = field_u64(&json, "\"leader\":");
    let ids: Vec<u64> = member_ids(&ok(etcdctl(&ep, &["member", "list", "-w", "json"])));
    let target = ids.iter().copied().find(|i| *i != leader_id).unwrap();
    let out = ok(etcdctl(bare, &["move-leader", &format!("{target:x}")]));
    assert!(out.contains("Leadership transferred"), "{out}");

    // member add (learner) → start it → promote → remove
    let (client_port, peer_port) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{peer_port}");
    let out = ok(etcdctl(
        &ep,
        &[
            "member",
            "add",
            "n4",
            &format!("--peer-urls={peer}"),
            "--learner",
        ],
    ));
    assert!(out.contains("added to cluster"), "{out}");
    let new_id = out.split_whitespace().nth(1).unwrap().to_string();
    let initial = format!("{},n4={peer}", c.initial_cluster);
    let n4 = c.joiner("n4", client_port, peer_port, initial);
    c.spawn(n4);
    c.wait_healthy(Duration::from_secs(20));
    wait_until(
        "learner listed with its name",
        Duration::from_secs(20),
        || {
            let l = ok(etcdctl(&ep, &["member", "list"]));
            l.contains(", n4, ") && l.contains("true")
        },
    );
    wait_until("learner promoted", Duration::from_secs(20), || {
        etcdctl(&ep, &["member", "promote", &new_id])
            .status
            .success()
    });
    let l = ok(etcdctl(&ep, &["member", "list"]));
    assert!(
        !l.lines()
            .any(|line| line.contains("n4") && line.trim_end().ends_with("true")),
        "{l}"
    );
    assert!(ok(etcdctl(&ep, &["member", "remove", &new_id])).contains("removed"));
    assert_eq!(ok(etcdctl(&ep, &["member", "list"])).lines().count(), 3);
    ok(etcdctl(&ep, &["put", "after-remove", "1"]));
    // Removed, n4 finds out and exits 0 by itself, as etcd's member does.
    let status = c.wait_exit(3, Duration::from_secs(20));
    assert!(status.success(), "removed n4 exited with {status}");
    let log = std::fs::read_to_string(&c.members[3].log).unwrap();
    assert!(log.contains("removed from the cluster"), "{log}");

    // Removing the leader: it hands over, the next leader removes it, and
    // it exits 0; the other two go on.
    let json = ok(etcdctl(bare, &["endpoint", "status", "-w", "json"]));
    let leader_id = format!("{:x}", field_u64(&json, "\"leader\":"));
    let list = ok(etcdctl(&ep, &["member", "list"]));
    let name = list
        .lines()
        .find(|l| l.starts_with(&format!("{leader_id},")))
        .and_then(|l| l.split(", ").nth(2))
        .unwrap_or_else(|| panic!("leader {leader_id} not in\n{list}"))
        .to_string();
    let slot = c.members.iter().position(|m| m.name == name).unwrap();
    assert!(ok(etcdctl(&ep, &["member", "remove", &leader_id])).contains("removed"));
    let status = c.wait_exit(slot, Duration::from_secs(20));
    assert!(
        status.success(),
        "removed leader {name} exited with {status}"
    );
    ok(etcdctl(&ep, &["put", "after-leader-remove", "1"]));
    assert_eq!(ok(etcdctl(&ep, &["member", "list"])).lines().count(), 2);
}

#[test]
fn etcdctl_nospace_alarm_and_disarm() {
    require_etcdctl!();
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("n.log")).unwrap();
    let child = Command::new(cairn_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client",
            &format!("127.0.0.1:{client}"),
            "--listen-peer",
            &format!("127.0.0.1:{peer}"),
        ])
        .args(["--quota-backend-bytes", "65536"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    wait_until("single node healthy", Duration::from_secs(20), || {
        http_health(client)
    });
    let ep = format!("http://127.0.0.1:{client}");
    let big = "x".repeat(8 * 1024);
    let mut refused = None;
    for i in 0..64 {
        let out = etcdctl(&ep, &["put", &format!("big/{i}"), &big]);
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let refused = refused.expect("quota was enforced");
    assert!(refused.contains("database space exceeded"), "{refused}");
    assert!(ok(etcdctl(&ep, &["alarm", "list"])).contains("alarm:NOSPACE"));
    // Reads and deletes still work; free space, compact, disarm, write again.
    ok(etcdctl(&ep, &["get", "big/0", "--keys-only"]));
    ok(etcdctl(&ep, &["del", "--prefix", "big/"]));
    let rev = revision_of(&ep);
    ok(etcdctl(&ep, &["compaction", &rev.to_string()]));
    ok(etcdctl(&ep, &["alarm", "disarm"]));
    assert_eq!(ok(etcdctl(&ep, &["alarm", "list"])).trim(), "");
    assert_eq!(ok(etcdctl(&ep, &["put", "small", "ok"])).trim(), "OK");
}

fn field_u64(json: &str, key: &str) -> u64 {
    let at = json.find(key).unwrap_or_else(|| panic!("{key} in {json}")) + key.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

fn member_ids(json: &str) -> Vec<u64> {
    json.match_indices("\"ID\":")
        .map(|(at, k)| {
            json[at + k.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .collect()
}

/// `etcdctl check datascale` reads the member's `/metrics` for
/// `process_resident_memory_bytes` before and after 10,000 puts of 1 KiB
/// (then deletes them): it needs the process collector's metric names.
#[test]
fn etcdctl_check_datascale() {
    require_etcdctl!();
    let c = ProcCluster::start(1);
    let out = ok(etcdctl(&c.endpoints(), &["check", "datascale", "--load=s"]));
    assert!(
        out.contains("PASS: Approximate system memory used"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

/// etcd's disaster-recovery runbook: two of three members are lost for
/// good (SIGKILL, their data never used again); the third, started with
/// `--force-new-cluster`, serves alone with every key, and `member add`
/// grows the cluster again.
#[test]
fn etcdctl_recovers_a_lost_quorum_with_force_new_cluster() {
    require_etcdctl!();
    let mut c = ProcCluster::start(3);
    let ep = c.endpoints();
    for i in 0..10 {
        ok(etcdctl(&ep, &["put", &format!("k{i}"), &format!("v{i}")]));
    }
    c.kill(0);
    c.kill(1);
    c.kill(2);
    let survivor = c.members[2].client_url();
    c.members[2].extra.push("--force-new-cluster".into());
    c.spawn(2);
    c.wait_healthy(Duration::from_secs(20));
    let list = ok(etcdctl(&survivor, &["member", "list"]));
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(", n3, "), "{list}");
    let keys = ok(etcdctl(&survivor, &["get", "k", "--prefix", "--keys-only"]));
    assert_eq!(keys.split_whitespace().count(), 10, "{keys}");
    ok(etcdctl(&survivor, &["put", "alone", "yes"]));

    // Without the flag from now on; a new member joins as etcd's would.
    c.kill(2);
    c.members[2].extra.retain(|a| a != "--force-new-cluster");
    c.spawn(2);
    c.wait_healthy(Duration::from_secs(20));
    let (client_port, peer_port) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{peer_port}");
    let out = ok(etcdctl(
        &survivor,
        &["member", "add", "n4", &format!("--peer-urls={peer}")],
    ));
    assert!(out.contains("added to cluster"), "{out}");
    let initial = format!("n3={},n4={peer}", c.members[2].peer_url());
    let joined = c.joiner("n4", client_port, peer_port, initial);
    c.spawn(joined);
    c.wait_healthy(Duration::from_secs(20));
    let n4 = c.members[3].client_url();
    assert_eq!(
        ok(etcdctl(&n4, &["get", "alone", "--print-value-only"])).trim(),
        "yes"
    );
    assert_eq!(
        ok(etcdctl(&n4, &["get", "k", "--prefix", "--keys-only"]))
            .split_whitespace()
            .count(),
        10
    );
    // etcd's runbook adds a voter; Cairn makes it one once it caught up.
    wait_until("n4 votes", Duration::from_secs(20), || {
        let l = ok(etcdctl(&survivor, &["member", "list"]));
        l.lines().count() == 2
            && l.lines()
                .any(|line| line.contains(", n4, ") && line.trim_end().ends_with("false"))
    });
    ok(etcdctl(&n4, &["put", "two", "voters"]));
}
