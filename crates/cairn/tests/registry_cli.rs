//! `cairn name|lock|elect|fenced-put` as real client processes against a
//! real `cairn serve`: SIGKILLed clients lose what they own within their
//! TTL, and a SIGSTOPped lock holder is fenced off after it resumes.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// Longest any wait may take.
const WAIT: Duration = Duration::from_secs(30);

fn cairn_cmd(ep: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--endpoints={ep}"))
        .args(["--dial-timeout=2s", "--command-timeout=10s"])
        .args(args);
    cmd
}

fn cairn(ep: &str, args: &[&str]) -> Output {
    run_bounded(cairn_cmd(ep, args), None)
}

fn ok(ep: &str, args: &[&str]) -> String {
    let o = cairn(ep, args);
    assert!(
        o.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

/// A client process in its own process group, so a signal reaches it and
/// the command it runs.
fn spawn_client(ep: &str, args: &[&str]) -> Collected {
    let mut cmd = cairn_cmd(ep, args);
    cmd.process_group(0);
    Collected::spawn(cmd)
}

/// Send `signal` (e.g. "KILL") to process group `pgid` (or, with a
/// positive `pid` and `group == false`, to one process).
fn signal(signal: &str, pid: u32, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let st = Command::new("kill")
        .args([&format!("-{signal}"), "--", &target])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{signal} {target}");
}

#[test]
fn a_sigkilled_client_loses_its_names_locks_and_candidacies_within_its_ttl() {
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();
    let ttl = Duration::from_secs(2);
    ok(&ep, &["name", "create", "svc", "--mode", "duplicate"]);

    // The doomed client: a name, a lock (running a command) and a candidacy.
    let name_a = spawn_client(
        &ep,
        &[
            "name", "register", "svc", "shared", "a", "--hold", "--ttl", "2",
        ],
    );
    let lock_a = spawn_client(
        &ep,
        &[
            "lock",
            "L",
            "--ttl",
            "2",
            "--",
            "sh",
            "-c",
            "echo holding; exec sleep 60",
        ],
    );
    let elect_a = spawn_client(&ep, &["elect", "E", "a", "--ttl", "2"]);
    // Another client's entry, which must stay.
    let _name_b = spawn_client(
        &ep,
        &[
            "name", "register", "svc", "shared", "b", "--hold", "--ttl", "30",
        ],
    );
    for (what, c, needle) in [
        ("a's name", &name_a, "registered"),
        ("a's lock", &lock_a, "holding"),
        ("a's candidacy", &elect_a, "E a token="),
    ] {
        wait_until(what, WAIT, || c.contains(needle));
    }
    wait_until("both entries", WAIT, || {
        ok(&ep, &["name", "count", "svc", "shared"]).trim() == "2"
    });
    let waiter = spawn_client(
        &ep,
        &["lock", "L", "--ttl", "10", "--", "echo", "waiter-got-it"],
    );
    let observer = spawn_client(&ep, &["elect", "E", "--listen"]);
    wait_until("observer sees a", WAIT, || observer.contains("E a token="));
    assert!(!waiter.contains("waiter-got-it"), "the lock is held by a");

    let killed = Instant::now();
    for c in [&name_a, &lock_a, &elect_a] {
        signal("KILL", c.child.id(), true);
    }
    wait_until("a's name gone", WAIT, || {
        ok(&ep, &["name", "count", "svc", "shared"]).trim() == "1"
    });
    wait_until("the waiter gets the lock", WAIT, || {
        waiter.contains("waiter-got-it")
    });
    wait_until("no leader", WAIT, || observer.contains("E (no leader)"));
    let took = killed.elapsed();
    eprintln!("SIGKILL to names, lock and candidacy gone: {took:?} (TTL {ttl:?})");
    // Within the TTL plus tick and scheduling slack; never a fresh TTL.
    assert!(took < ttl + Duration::from_secs(4), "took {took:?}");
    let lookup = ok(&ep, &["name", "lookup", "svc", "shared"]);
    assert!(lookup.trim().ends_with(" b"), "b's entry stays: {lookup}");
}

#[test]
fn a_sigstopped_lock_holder_is_fenced_off_after_resuming() {
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();
    let go = cluster.dir.path().join("go");
    let made = Command::new("mkfifo").arg(&go).status().expect("mkfifo");
    assert!(made.success());
    let bin = cairn_bin();
    // The holder's critical section: report its token and pid, wait for
    // the go signal (a shell builtin reading a FIFO: no child process that
    // would stay stopped), then write through the guarded resource.
    let script = format!(
        "echo token=$CAIRN_LOCK_TOKEN pid=$$; \
         read go < {go}; \
         {bin} --endpoints={ep} fenced-put res/fence $CAIRN_LOCK_TOKEN res/data from-a; \
         echo write-exit=$?",
        go = go.display()
    );
    let mut holder = spawn_client(
        &ep,
        &["lock", "res", "--ttl", "2", "--", "sh", "-c", &script],
    );
    wait_until("holder has the lock", WAIT, || holder.contains("pid="));
    let out = holder.output();
    let field = |name: &str| -> String {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let token_a: i64 = field("token=").parse().unwrap();
    let shell_pid: u32 = field("pid=").parse().unwrap();

    // Pause the holder (the lock process and its command) past its TTL.
    signal("STOP", holder.child.id(), true);
    // Another client takes the lock once the paused session expired, and
    // writes with its newer token.
    let b = cairn(
        &ep,
        &[
            "lock", "res", "--ttl", "10", "--", "sh", "-c",
            &format!("{bin} --endpoints={ep} fenced-put res/fence $CAIRN_LOCK_TOKEN res/data from-b && echo token-b=$CAIRN_LOCK_TOKEN"),
        ],
    );
    let b_out = text(&b);
    assert!(
        b.status.success(),
        "b: {b_out} {}",
        String::from_utf8_lossy(&b.stderr)
    );
    let token_b: i64 = b_out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("token-b="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(token_b > token_a);

    // The holder's command resumes first and writes with its stale token.
    signal("CONT", shell_pid, false);
    std::fs::write(&go, b"go\n").unwrap();
    wait_until("the paused holder tried to write", WAIT, || {
        holder.contains("write-exit=")
    });
    assert!(
        holder.contains("write-exit=4"),
        "refused: {}",
        holder.output()
    );
    let data = ok(&ep, &["get", "res/data"]);
    assert!(
        data.contains("from-b") && !data.contains("from-a"),
        "{data}"
    );
    // The lock process resumes, finds its session lost and fails.
    signal("CONT", holder.child.id(), true);
    wait_until("the holder exits", WAIT, || holder.exited());
    let status = holder.child.wait().unwrap();
    assert!(!status.success(), "a holder that lost its lock must fail");
}

/// Index of the member that reports itself leader (`cairn status`).
fn leader_index(cluster: &ProcCluster) -> Option<usize> {
    (0..cluster.members.len())
        .filter(|i| cluster.members[*i].child.is_some())
        .find(|i| {
            let url = cluster.members[*i].client_url();
            let o = cairn(&url, &["status", "-w", "simple"]);
            text(&o).split(", ").nth(4) == Some("true")
        })
}

#[test]
fn names_survive_a_sigkilled_leader_and_go_when_their_client_dies() {
    let mut cluster = ProcCluster::start(3);
    let ep = cluster.endpoints();
    let ttl = Duration::from_secs(3);
    ok(&ep, &["name", "create", "svc", "--mode", "unique"]);
    let holder = spawn_client(
        &ep,
        &[
            "name", "register", "svc", "db", "primary", "--hold", "--ttl", "3",
        ],
    );
    wait_until("registered", WAIT, || holder.contains("registered"));

    let mut leader = None;
    wait_until("a leader", WAIT, || {
        leader = leader_index(&cluster);
        leader.is_some()
    });
    cluster.kill(leader.unwrap());
    let survivors = cluster.endpoints();
    // For two TTLs after the leader died, the name is there on every read:
    // the holder's session is kept alive through the new leader.
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        let lookup = cairn(&survivors, &["name", "lookup", "svc", "db"]);
        if lookup.status.success() {
            assert!(
                text(&lookup).contains("primary"),
                "name lost: {}",
                text(&lookup)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ok(&survivors, &["name", "lookup", "svc", "db"]).contains("primary"),
        "the name survives the leader's death"
    );
    let mut holder = holder;
    assert!(!holder.exited(), "the holder's session was never lost");

    // Now the client dies: its name goes within its TTL.
    let killed = Instant::now();
    signal("KILL", holder.child.id(), true);
    wait_until("the name is gone", WAIT, || {
        ok(&survivors, &["name", "count", "svc", "db"]).trim() == "0"
    });
    let took = killed.elapsed();
    eprintln!("SIGKILL to name gone after failover: {took:?} (TTL {ttl:?})");
    assert!(took < ttl + Duration::from_secs(4), "took {took:?}");
}

#[test]
fn name_subcommands_register_list_watch_and_unregister() {
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();
    assert_eq!(
        ok(&ep, &["name", "create", "pool", "--mode", "duplicate"]).trim(),
        "created"
    );
    assert_eq!(
        ok(&ep, &["name", "create", "pool", "--mode", "duplicate"]).trim(),
        "exists"
    );
    // From revision 1: the whole history, however late the watch starts.
    let watch = spawn_client(&ep, &["name", "watch", "pool", "--rev", "1"]);
    // A session made elsewhere (any lease works) and kept for the test.
    let granted = ok(&ep, &["lease", "grant", "60"]);
    let session = granted.split_whitespace().nth(1).unwrap().to_string();
    let session_short = format!("{:x}", u64::from_str_radix(&session, 16).unwrap());
    let reg = ok(
        &ep,
        &[
            "name",
            "register",
            "pool",
            "w/1",
            "v1",
            "--session",
            &session,
        ],
    );
    assert!(reg.contains(&format!("session={session_short}")), "{reg}");
    ok(
        &ep,
        &[
            "name",
            "register",
            "pool",
            "w/2",
            "v2",
            "--session",
            &session,
        ],
    );
    assert_eq!(
        ok(&ep, &["name", "keys", "pool", "--session", &session]),
        "w/1\nw/2\n"
    );
    assert_eq!(
        ok(&ep, &["name", "lookup", "pool", "w/1"]),
        format!("{session_short} v1\n")
    );
    assert_eq!(
        ok(
            &ep,
            &["name", "unregister", "pool", "w/1", "--session", &session]
        )
        .trim(),
        "unregistered"
    );
    // Unregistering again fails: nothing of this session is there.
    assert!(!cairn(
        &ep,
        &["name", "unregister", "pool", "w/1", "--session", &session]
    )
    .status
    .success());
    assert_eq!(ok(&ep, &["name", "count", "pool", "w/1"]).trim(), "0");
    wait_until("watch events", WAIT, || watch.contains("UNREGISTERED w/1"));
    let events = watch.output();
    let kinds: Vec<&str> = events
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["REGISTERED", "REGISTERED", "UNREGISTERED"],
        "{events}"
    );
}

/// SIGTERM (what a service manager sends) ends a holder the way Ctrl-C
/// does: its session is closed and the name goes at once, not after its
/// TTL. It used to kill the process, leaving the name for the whole TTL.
#[test]
fn a_sigtermed_holder_releases_its_name_at_once() {
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();
    ok(&ep, &["name", "create", "term-svc"]);
    let holder = spawn_client(
        &ep,
        &[
            "name", "register", "term-svc", "only", "a", "--hold", "--ttl", "60",
        ],
    );
    wait_until("registered", WAIT, || holder.contains("registered"));
    let sent = Instant::now();
    signal("TERM", holder.child.id(), true);
    wait_until("the name gone", WAIT, || {
        ok(&ep, &["name", "count", "term-svc", "only"]).trim() == "0"
    });
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "released after {:?}, not at once",
        sent.elapsed()
    );
}
