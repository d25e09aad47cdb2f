//! `cairn claims ...` as a real client process against a real `cairn serve`:
//! every status a key can show, refusals with precise errors, and leases
//! owned by the command's own session ending with it.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::*;

/// Longest any wait may take.
const WAIT: Duration = Duration::from_secs(30);

fn cairn(ep: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--endpoints={ep}"))
        .args(["--dial-timeout=2s", "--command-timeout=10s"])
        .args(args);
    run_bounded(cmd, None)
}

#[track_caller]
fn ok(ep: &str, args: &[&str]) -> String {
    let o = cairn(ep, args);
    assert!(
        o.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

/// Stderr of a command that must fail.
#[track_caller]
fn fails(ep: &str, args: &[&str]) -> String {
    let o = cairn(ep, args);
    assert!(
        !o.status.success(),
        "cairn {args:?} succeeded: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A new session (an etcd lease) of `ttl` seconds, in hex.
fn session(ep: &str, ttl: &str) -> String {
    let out = ok(ep, &["lease", "grant", ttl]);
    out.split_whitespace().nth(1).expect("lease id").to_string()
}

fn k(v: u64) -> String {
    format!("{v:#018x}")
}

#[test]
fn claims_commands_show_every_status_and_refuse_bad_input() {
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();
    assert_eq!(ok(&ep, &["claims", "create", "blocks"]), "created\n");
    assert_eq!(ok(&ep, &["claims", "create", "blocks"]), "exists\n");
    let err = fails(&ep, &["claims", "create", "blocks", "--capacity", "5"]);
    assert!(err.contains("different configuration"), "{err}");

    let a = session(&ep, "60");
    let b = session(&ep, "60");
    let sa = format!("--session={a}");
    let sb = format!("--session={b}");
    assert_eq!(
        ok(
            &ep,
            &["claims", "can-offload", "blocks", "1", "0x2", "3", &sa]
        ),
        format!("{} GRANTED\n{} GRANTED\n{} GRANTED\n", k(1), k(2), k(3))
    );
    assert_eq!(
        ok(&ep, &["claims", "can-offload", "blocks", "1", "2", &sb]),
        format!("{} LEASED\n{} LEASED\n", k(1), k(2))
    );
    // A non-holder's register is refused and changes nothing; the holder's
    // stores and releases its leases.
    assert_eq!(
        ok(&ep, &["claims", "register", "blocks", "1=s3://a", &sb]),
        format!("{} LEASED_BY_OTHER\n", k(1))
    );
    assert_eq!(
        ok(
            &ep,
            &["claims", "register", "blocks", "1=s3://a", "2=s3://b", &sa]
        ),
        format!("{} STORED\n{} STORED\n", k(1), k(2))
    );
    assert_eq!(
        ok(&ep, &["claims", "register", "blocks", "2=again", &sb]),
        format!("{} ALREADY_STORED\n", k(2))
    );
    assert_eq!(
        ok(
            &ep,
            &["claims", "can-offload", "blocks", "1", "2", "3", "4", &sb]
        ),
        format!(
            "{} ALREADY_STORED\n{} ALREADY_STORED\n{} LEASED\n{} GRANTED\n",
            k(1),
            k(2),
            k(3),
            k(4)
        )
    );
    assert_eq!(
        ok(&ep, &["claims", "match", "blocks", "1", "2", "3"]),
        format!(
            "{} STORED s3://a\n{} STORED s3://b\n{} MISSING\n",
            k(1),
            k(2),
            k(3)
        )
    );
    assert_eq!(
        ok(
            &ep,
            &["claims", "match", "blocks", "--prefix", "1", "3", "2"]
        ),
        format!(
            "{} STORED s3://a\n{} MISSING\n{} SKIPPED\n",
            k(1),
            k(3),
            k(2)
        )
    );
    assert_eq!(
        ok(&ep, &["claims", "remove", "blocks", "1", "3"]),
        "removed=1 leases_released=1\n"
    );
    let stats = ok(&ep, &["claims", "stats", "blocks"]);
    for needle in [
        "blocks entries=1 capacity=1000000 active_leases=1 granted=4 ",
        "denied=3 ",
        "converted=2 ",
        "removed=1 ",
        "match_hits=3 match_misses=3",
    ] {
        assert!(stats.contains(needle), "{needle:?} in {stats}");
    }
    assert!(ok(&ep, &["claims", "stats"]).starts_with("blocks entries=1 "));

    // Bad input: precise errors.
    let err = fails(&ep, &["claims", "can-offload", "blocks", "nine", &sa]);
    assert!(err.contains("\"nine\" is not a u64"), "{err}");
    let err = fails(&ep, &["claims", "match", "nope", "1"]);
    assert!(err.contains("not found"), "{err}");
    let err = fails(&ep, &["claims", "register", "blocks", "5", &sa]);
    assert!(err.contains("not KEY=VALUE"), "{err}");
    let err = fails(
        &ep,
        &[
            "claims",
            "can-offload",
            "blocks",
            "0x1",
            "--key-kind=u128",
            &sa,
        ],
    );
    assert!(err.contains("U128"), "{err}");

    // Byte keys, in hex.
    ok(
        &ep,
        &[
            "claims",
            "create",
            "raw",
            "--key-kind=bytes",
            "--eviction=tail",
        ],
    );
    assert_eq!(
        ok(
            &ep,
            &["claims", "can-offload", "raw", "0xdeadbeef", "00ff", &sa]
        ),
        "deadbeef GRANTED\n00ff GRANTED\n"
    );

    // Without --session the command's own session owns the lease, which
    // ends with that session's TTL.
    let own = cairn(&ep, &["claims", "can-offload", "blocks", "9", "--ttl=2"]);
    assert_eq!(text(&own), format!("{} GRANTED\n", k(9)));
    assert!(String::from_utf8_lossy(&own.stderr).contains("session="));
    assert_eq!(
        ok(&ep, &["claims", "can-offload", "blocks", "9", &sb]),
        format!("{} LEASED\n", k(9))
    );
    wait_until("the command's session ends with its leases", WAIT, || {
        ok(&ep, &["claims", "can-offload", "blocks", "9", &sb]) == format!("{} GRANTED\n", k(9))
    });
}

#[test]
fn a_held_session_keeps_its_leases_until_interrupted_then_releases_them() {
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();
    ok(&ep, &["claims", "create", "held"]);
    let other = format!("--session={}", session(&ep, "60"));
    // A 60 s session: only closing it can release the lease within the wait.
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--endpoints={ep}")).args([
        "claims",
        "can-offload",
        "held",
        "5",
        "--hold",
        "--ttl=60",
    ]);
    let mut holder = Collected::spawn(cmd);
    wait_until("the holder is granted", WAIT, || {
        holder.contains(&format!("{} GRANTED", k(5)))
    });
    assert_eq!(
        ok(&ep, &["claims", "can-offload", "held", "5", &other]),
        format!("{} LEASED\n", k(5))
    );
    let st = Command::new("kill")
        .args(["-INT", &holder.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    wait_until("the holder exits", WAIT, || holder.exited());
    wait_until("the lease is released", Duration::from_secs(20), || {
        ok(&ep, &["claims", "can-offload", "held", "5", &other]) == format!("{} GRANTED\n", k(5))
    });
    let stats = ok(&ep, &["claims", "stats", "held"]);
    assert!(stats.contains("released=1 "), "{stats}");
}
