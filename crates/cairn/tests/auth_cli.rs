//! `cairn auth|user|role` and the global `--user` / `--password` flags as
//! real client processes against a real `cairn serve` with authentication
//! turned on by the CLI itself.

mod support;

use std::process::{Command, Output};

use support::*;

const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:alicepw";

/// `cairn --endpoints EP [--user USER] ARGS...`, with `env` set for it.
fn cairn(ep: &str, user: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--endpoints={ep}"))
        .args(["--dial-timeout=2s", "--command-timeout=10s"])
        // Whatever the environment running the tests says.
        .env_remove("CAIRN_USER")
        .env_remove("CAIRN_PASSWORD")
        .envs(env.iter().copied());
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    cmd.args(args);
    run_bounded(cmd, None)
}

/// Stdout of a command that must succeed.
#[track_caller]
fn ok(ep: &str, user: Option<&str>, args: &[&str]) -> String {
    let o = cairn(ep, user, &[], args);
    assert!(
        o.status.success(),
        "cairn {args:?} as {user:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

/// Asserts the command fails naming `why`.
#[track_caller]
fn refused(o: Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {}", text(&o));
    assert!(err.contains(why), "expected {why:?} in: {err}");
}

#[test]
fn users_roles_and_auth_through_the_cli() {
    // The member spawned below inherits it: cheap password hashes, as
    // this test logs in once per command. The only test of this binary,
    // so no other thread reads the environment meanwhile.
    std::env::set_var("CAIRN_AUTH_PASSWORD_ITERATIONS", "1000");
    let cluster = ProcCluster::start(1);
    let ep = cluster.endpoints();

    // Set up while auth is off: no credentials needed.
    assert_eq!(ok(&ep, None, &["user", "add", ROOT]), "User root created\n");
    assert_eq!(
        ok(&ep, None, &["user", "grant-role", "root", "root"]),
        "Role root is granted to user root\n"
    );
    assert_eq!(ok(&ep, None, &["role", "add", "r"]), "Role r created\n");
    assert_eq!(
        ok(
            &ep,
            None,
            &[
                "role",
                "grant-permission",
                "r",
                "readwrite",
                "a",
                "--prefix"
            ]
        ),
        "Role r updated\n"
    );
    assert_eq!(
        ok(&ep, None, &["user", "add", ALICE]),
        "User alice created\n"
    );
    ok(&ep, None, &["user", "grant-role", "alice", "r"]);
    // A name without a password is refused before anything is sent.
    refused(
        cairn(&ep, None, &[], &["user", "add", "bob"]),
        "no password",
    );
    let status = ok(&ep, None, &["auth", "status"]);
    assert!(
        status.starts_with("Authentication Status: false\nAuthRevision: "),
        "{status}"
    );
    assert_eq!(
        ok(&ep, None, &["auth", "enable"]),
        "Authentication Enabled\n"
    );

    // Anonymous calls are refused now.
    refused(cairn(&ep, None, &[], &["get", "a/1"]), "user name is empty");

    // alice reads and writes under her prefix only.
    assert_eq!(ok(&ep, Some(ALICE), &["put", "a/1", "v1"]), "OK\n");
    assert_eq!(ok(&ep, Some(ALICE), &["get", "a/1"]), "a/1\nv1\n");
    refused(
        cairn(&ep, Some(ALICE), &[], &["put", "b/1", "v"]),
        "permission denied",
    );
    refused(
        cairn(&ep, Some(ALICE), &[], &["get", "b/1"]),
        "permission denied",
    );
    refused(
        cairn(&ep, Some(ALICE), &[], &["user", "list"]),
        "permission denied",
    );
    // --password, and the environment, as etcdctl takes them.
    assert_eq!(
        ok(&ep, Some("alice"), &["--password", "alicepw", "get", "a/1"]),
        "a/1\nv1\n"
    );
    let o = cairn(
        &ep,
        None,
        &[("CAIRN_USER", "alice"), ("CAIRN_PASSWORD", "alicepw")],
        &["get", "a/1"],
    );
    assert_eq!(
        text(&o),
        "a/1\nv1\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Wrong or missing passwords.
    refused(
        cairn(&ep, Some("alice:wrong"), &[], &["get", "a/1"]),
        "authentication failed",
    );
    refused(
        cairn(&ep, Some("alice"), &[], &["get", "a/1"]),
        "no password",
    );

    // root manages users and roles.
    assert_eq!(ok(&ep, Some(ROOT), &["user", "list"]), "alice\nroot\n");
    assert_eq!(ok(&ep, Some(ROOT), &["role", "list"]), "r\n");
    assert_eq!(
        ok(&ep, Some(ROOT), &["user", "get", "alice"]),
        "User: alice\nRoles: r\n"
    );
    assert_eq!(
        ok(&ep, Some(ROOT), &["role", "get", "r"]),
        "Role r\nKV Read:\n\t[a, b) (prefix a)\nKV Write:\n\t[a, b) (prefix a)\n"
    );
    let status = ok(&ep, Some(ROOT), &["auth", "status"]);
    assert!(
        status.starts_with("Authentication Status: true\n"),
        "{status}"
    );

    // A new password: the old one stops working at once.
    assert_eq!(
        ok(&ep, Some(ROOT), &["user", "passwd", "alice", "newpw"]),
        "Password updated\n"
    );
    refused(
        cairn(&ep, Some(ALICE), &[], &["get", "a/1"]),
        "authentication failed",
    );
    assert_eq!(ok(&ep, Some("alice:newpw"), &["get", "a/1"]), "a/1\nv1\n");

    // Revoking the permission takes alice's access away.
    assert_eq!(
        ok(
            &ep,
            Some(ROOT),
            &["role", "revoke-permission", "r", "a", "--prefix"]
        ),
        "Permission of range [a, b) is revoked from role r\n"
    );
    refused(
        cairn(&ep, Some("alice:newpw"), &[], &["get", "a/1"]),
        "permission denied",
    );
    assert_eq!(
        ok(&ep, Some(ROOT), &["user", "revoke-role", "alice", "r"]),
        "Role r is revoked from user alice\n"
    );
    assert_eq!(
        ok(&ep, Some(ROOT), &["role", "delete", "r"]),
        "Role r deleted\n"
    );
    assert_eq!(
        ok(&ep, Some(ROOT), &["user", "delete", "alice"]),
        "User alice deleted\n"
    );
    assert_eq!(ok(&ep, Some(ROOT), &["user", "list"]), "root\n");

    // Only root turns it off; then anyone may read again.
    refused(
        cairn(&ep, None, &[], &["auth", "disable"]),
        "user name is empty",
    );
    assert_eq!(
        ok(&ep, Some(ROOT), &["auth", "disable"]),
        "Authentication Disabled\n"
    );
    assert_eq!(ok(&ep, None, &["get", "a/1"]), "a/1\nv1\n");
    // Credentials still work with auth off (the client goes on without
    // a token, as etcd's does).
    assert_eq!(ok(&ep, Some(ROOT), &["get", "a/1"]), "a/1\nv1\n");
}
