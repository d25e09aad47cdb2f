//! etcdctl 3.4's `user`, `role` and `auth` commands against real `cairn`
//! processes, and its `--user` flag on the keyspace commands once auth is
//! on. Skips with a message only when etcdctl is not installed.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn as_user(endpoints: &str, user: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    etcdctl(endpoints, &all)
}

#[track_caller]
fn refused(o: std::process::Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {}", text(&o));
    assert!(err.contains(why), "expected {why:?} in: {err}");
}

#[test]
fn etcdctl_users_roles_and_auth() {
    if !etcdctl_available() {
        eprintln!(
            "SKIP: etcdctl not found; install Debian's etcd-client (apt-get install etcd-client)"
        );
        return;
    }
    // Members spawned below inherit it: cheap logins, many of them here.
    std::env::set_var("CAIRN_AUTH_PASSWORD_ITERATIONS", "1000");
    let c = ProcCluster::start(3);
    let ep = c.endpoints();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "r"],
        &[
            "role",
            "grant-permission",
            "--prefix",
            "r",
            "readwrite",
            "a/",
        ],
        &["user", "grant-role", "alice", "r"],
    ] {
        ok(etcdctl(&ep, args));
    }
    assert_eq!(
        ok(etcdctl(&ep, &["auth", "enable"])).trim(),
        "Authentication Enabled"
    );

    refused(etcdctl(&ep, &["get", "a/x"]), "user name is empty");
    refused(
        as_user(&ep, "alice:wrong", &["get", "a/x"]),
        "authentication failed",
    );
    let alice = "alice:alicepw";
    let root = "root:rootpw";
    assert_eq!(ok(as_user(&ep, alice, &["put", "a/x", "1"])).trim(), "OK");
    assert_eq!(ok(as_user(&ep, alice, &["get", "a/x"])), "a/x\n1\n");
    refused(as_user(&ep, alice, &["put", "b", "1"]), "permission denied");
    refused(as_user(&ep, alice, &["user", "list"]), "permission denied");
    assert_eq!(ok(as_user(&ep, root, &["user", "list"])), "alice\nroot\n");
    let role = ok(as_user(&ep, root, &["role", "get", "r"]));
    assert!(role.contains("[a/, a0) (prefix a/)"), "{role}");

    // A watch runs as its user; a lease's key needs the user's permission.
    let mut watch = Command::new("etcdctl");
    watch
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["--user", alice, "watch", "--prefix", "a/"]);
    let mut watch = Collected::spawn(watch);
    wait_until("the watch is open", Duration::from_secs(15), || {
        ok(as_user(&ep, root, &["put", "a/w", "seen"]));
        watch.contains("seen")
    });
    let lease = ok(as_user(&ep, alice, &["lease", "grant", "60"]));
    let id = lease.split_whitespace().nth(1).expect("lease <id> granted");
    ok(as_user(&ep, alice, &["put", "--lease", id, "a/l", "v"]));
    refused(
        as_user(&ep, alice, &["put", "--lease", id, "z", "v"]),
        "permission denied",
    );
    // etcdctl counts a member that refuses a user's read as healthy.
    let health = as_user(&ep, alice, &["endpoint", "health"]);
    let said = format!(
        "{}{}",
        text(&health),
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(said.matches("is healthy").count(), 3, "{said}");

    refused(
        as_user(&ep, alice, &["auth", "disable"]),
        "permission denied",
    );
    assert_eq!(
        ok(as_user(&ep, root, &["auth", "disable"])).trim(),
        "Authentication Disabled"
    );
    wait_until(
        "every member sees auth off",
        Duration::from_secs(15),
        || {
            c.members
                .iter()
                .all(|m| etcdctl(&m.client_url(), &["get", "a/x"]).status.success())
        },
    );
    assert!(!watch.exited(), "the watch stream stayed open");
}

/// etcdctl against a member started with etcd's `--auth-token jwt,...`
/// flag: the tokens it hands out are JWTs, which etcdctl passes back as
/// it passes any token.
#[test]
fn etcdctl_with_jwt_tokens() {
    if !etcdctl_available() {
        eprintln!(
            "SKIP: etcdctl not found; install Debian's etcd-client (apt-get install etcd-client)"
        );
        return;
    }
    let mut c = ProcCluster::start(1);
    c.kill(0);
    let keys =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-server/testdata/jwt");
    c.members[0].extra.extend([
        "--auth-token".to_string(),
        format!(
            "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
            keys.join("rsa.pub.pem").display(),
            keys.join("rsa.pem").display()
        ),
        "--auth-token-ttl".to_string(),
        "60".to_string(),
        "--auth-password-iterations".to_string(),
        "1000".to_string(),
    ]);
    c.spawn(0);
    c.wait_healthy(Duration::from_secs(20));
    let ep = c.endpoints();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        ok(etcdctl(&ep, args));
    }
    refused(etcdctl(&ep, &["put", "k", "v"]), "user name is empty");
    let root = "root:rootpw";
    assert_eq!(ok(as_user(&ep, root, &["put", "k", "v"])).trim(), "OK");
    assert_eq!(ok(as_user(&ep, root, &["get", "k"])), "k\nv\n");
    refused(
        as_user(&ep, "root:nope", &["get", "k"]),
        "authentication failed",
    );
}
