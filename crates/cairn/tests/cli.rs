//! The `cairn` client subcommands against a real `cairn serve` process.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

/// Run `cairn --endpoints EP ARGS...` (optionally feeding stdin).
fn cairn(ep: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--endpoints={ep}"))
        .args(["--dial-timeout=2s", "--command-timeout=10s"])
        .args(args);
    run_bounded(cmd, stdin)
}

/// Stdout of a command that must succeed.
fn ok(ep: &str, args: &[&str]) -> String {
    let o = cairn(ep, args, None);
    assert!(
        o.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

fn single() -> (ProcCluster, String) {
    let c = ProcCluster::start(1);
    let ep = c.endpoints();
    (c, ep)
}

#[test]
fn keyspace_commands() {
    let (_c, ep) = single();
    assert_eq!(ok(&ep, &["put", "k1", "v1"]), "OK\n");
    assert_eq!(ok(&ep, &["put", "k2", "v2"]), "OK\n");
    let o = cairn(&ep, &["put", "k3"], Some("from stdin"));
    assert!(o.status.success());
    assert_eq!(ok(&ep, &["get", "k1"]), "k1\nv1\n");
    assert_eq!(
        ok(&ep, &["get", "k", "--prefix"]),
        "k1\nv1\nk2\nv2\nk3\nfrom stdin\n"
    );
    assert_eq!(ok(&ep, &["get", "k1", "k3"]), "k1\nv1\nk2\nv2\n");
    assert_eq!(
        ok(
            &ep,
            &[
                "get",
                "k",
                "--prefix",
                "--keys-only",
                "--order",
                "descend",
                "--limit",
                "2"
            ]
        ),
        "k3\nk2\n"
    );
    assert_eq!(ok(&ep, &["get", "", "--from-key", "--count-only"]), "3\n");
    let json = ok(&ep, &["get", "k1", "-w", "json"]);
    assert!(json.contains("\"key\":\"azE=\""), "{json}");
    assert!(json.contains("\"value\":\"djE=\""), "{json}");
    assert!(json.contains("\"revision\":"), "{json}");
    assert_eq!(ok(&ep, &["put", "k1", "v1b", "--prev-kv"]), "OK\nk1\nv1\n");
    assert_eq!(
        ok(&ep, &["del", "k", "--prefix", "--prev-kv"]),
        "3\nk1\nv1b\nk2\nv2\nk3\nfrom stdin\n"
    );
    assert_eq!(ok(&ep, &["get", "k", "--prefix"]), "");

    // Errors: one line on stderr, non-zero exit.
    let o = cairn(&ep, &["put", "x", "--ignore-value"], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("Error: etcdserver: key not found"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let o = cairn("http://127.0.0.1:1", &["get", "x"], None);
    assert!(!o.status.success());

    let rev: i64 = {
        let json = ok(&ep, &["get", "nothing", "-w", "json"]);
        let at = json.find("\"revision\":").unwrap() + "\"revision\":".len();
        json[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    assert_eq!(
        ok(&ep, &["compact", &rev.to_string()]),
        format!("compacted revision {rev}\n")
    );
}

#[test]
fn lease_commands() {
    let (_c, ep) = single();
    let granted = ok(&ep, &["lease", "grant", "60"]);
    // "lease 694d77aa9e38260f granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert!(granted.ends_with("granted with TTL(60s)\n"), "{granted}");
    ok(&ep, &["put", "leased", "v", "--lease", &id]);
    let ttl = ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("granted with TTL(60s), remaining("), "{ttl}");
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    let list = ok(&ep, &["lease", "list"]);
    assert!(
        list.starts_with("found 1 leases\n") && list.contains(&id),
        "{list}"
    );
    assert_eq!(
        ok(&ep, &["lease", "keep-alive", &id, "--once"]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(
        ok(&ep, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(&ep, &["get", "leased"]), "");
    assert_eq!(
        ok(&ep, &["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    assert!(!cairn(&ep, &["lease", "keep-alive", &id, "--once"], None)
        .status
        .success());
}

#[test]
fn cluster_and_maintenance_commands() {
    let (c, ep) = single();
    let members = ok(&ep, &["member", "list"]);
    assert!(members.contains("| started |"), "{members}");
    assert!(members.contains(&c.members[0].peer_url()), "{members}");
    let simple = ok(&ep, &["member", "list", "-w", "simple"]);
    assert!(simple.contains(", started, n1, "), "{simple}");

    let status = ok(&ep, &["status"]);
    assert!(status.contains("IS LEADER"), "{status}");
    assert!(status.contains(&ep), "{status}");
    let simple = ok(&ep, &["status", "-w", "simple"]);
    assert!(simple.contains(", true, false, "), "{simple}");
    assert!(ok(&ep, &["status", "-w", "json"]).starts_with("[{\"Endpoint\""));

    assert_eq!(ok(&ep, &["alarm", "list"]), "");

    ok(&ep, &["put", "snap", "shot"]);
    let file = c.dir.path().join("backup.db");
    let saved = ok(&ep, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(saved.starts_with("Snapshot saved at "), "{saved}");
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len > 32 && (len - 32) % 512 == 0, "{len}");
    assert!(!c.dir.path().join("backup.db.part").exists());
}

#[test]
fn watch_prints_events() {
    let (_c, ep) = single();
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--endpoints={ep}"))
        .args(["watch", "w", "--prefix"]);
    let watch = Collected::spawn(cmd);
    // The watcher may start after the first puts; keep writing until seen.
    let mut i = 0;
    wait_until("watch output", Duration::from_secs(15), || {
        i += 1;
        ok(&ep, &["put", &format!("w{i}"), "val"]);
        watch.contains("PUT\nw")
    });
    ok(&ep, &["del", "w1"]);
    wait_until("delete event", Duration::from_secs(15), || {
        watch.contains("DELETE\nw1\n")
    });
}

#[test]
fn snapshot_save_then_restore_into_a_new_member() {
    let (c, ep) = single();
    ok(&ep, &["put", "kept", "across-restore"]);
    let file = c.dir.path().join("backup.db");
    ok(&ep, &["snapshot", "save", file.to_str().unwrap()]);

    let data = c.dir.path().join("restored");
    let (client, peer) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let initial = format!("r1={peer_url}");
    let restored = ok(
        &ep,
        &[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--name",
            "r1",
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            &peer_url,
        ],
    );
    assert!(restored.starts_with("Restored snapshot"), "{restored}");

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _member = Kill(
        Command::new(cairn_bin())
            .args(["serve", "--name", "r1", "--data-dir"])
            .arg(&data)
            .args(["--listen-client", &format!("127.0.0.1:{client}")])
            .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("restored member healthy", Duration::from_secs(20), || {
        http_health(client)
    });
    let ep2 = format!("http://127.0.0.1:{client}");
    assert_eq!(ok(&ep2, &["get", "kept"]), "kept\nacross-restore\n");
}

/// A runtime size that is not a positive number stops `cairn serve` with
/// a message naming it, before it binds or writes anything.
#[test]
fn serve_refuses_a_worker_thread_count_that_is_not_a_positive_number() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |flag: Option<&str>, env: Option<&str>| {
        let mut cmd = Command::new(cairn_bin());
        cmd.arg("serve")
            .arg(format!("--data-dir={}", data.display()))
            .args(["--listen-client=127.0.0.1:0", "--listen-peer=127.0.0.1:0"])
            .args(flag)
            .env_remove("TOKIO_WORKER_THREADS")
            .env_remove("CAIRN_WORKER_THREADS")
            .stdout(Stdio::null());
        if let Some(v) = env {
            cmd.env("TOKIO_WORKER_THREADS", v);
        }
        run_bounded(cmd, None)
    };
    let o = serve(Some("--worker-threads=0"), None);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--worker-threads"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = serve(None, Some("zero"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("TOKIO_WORKER_THREADS must be a positive number, not \"zero\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!data.exists(), "nothing written");
}

/// A member configured as an etcd unit configures etcd: the same
/// settings by etcd's flags (`by_env == false`) or by its `ETCD_*`
/// variables. It serves clients on both listen addresses, and the member
/// list carries its name and both advertised client URLs.
/// How a test hands etcd's settings to `cairn serve`.
#[derive(Clone, Copy, PartialEq)]
enum EtcdSettings {
    Flags,
    Variables,
    /// etcd's YAML file, with its TLS block and a variable it must win over.
    ConfigFile,
}

fn serve_configured_as_etcd(by: EtcdSettings) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, peer) = (free_port(), free_port(), free_port());
    let (url_a, url_b) = (
        format!("http://127.0.0.1:{a}"),
        format!("http://127.0.0.1:{b}"),
    );
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data_dir = dir.path().join("infra0.etcd");
    let settings = [
        ("name", "infra0".to_string()),
        ("data-dir", data_dir.display().to_string()),
        ("listen-client-urls", format!("{url_a},{url_b}")),
        ("advertise-client-urls", format!("{url_a},{url_b}")),
        ("listen-peer-urls", peer_url.clone()),
        ("initial-advertise-peer-urls", peer_url.clone()),
        ("initial-cluster", format!("infra0={peer_url}")),
        ("initial-cluster-token", "etcd-cluster-1".to_string()),
        ("initial-cluster-state", "new".to_string()),
        ("heartbeat-interval", "50".to_string()),
        ("election-timeout", "500".to_string()),
        // etcd settings Cairn has no use for: taken, logged as ignored.
        ("enable-v2", "true".to_string()),
        ("logger", "zap".to_string()),
        ("max-wals", "5".to_string()),
    ];
    let mut cmd = Command::new(cairn_bin());
    cmd.arg("serve");
    let mut yaml = String::new();
    for (flag, value) in &settings {
        match by {
            EtcdSettings::Variables => {
                cmd.env(
                    format!("ETCD_{}", flag.to_uppercase().replace('-', "_")),
                    value,
                );
            }
            EtcdSettings::Flags => {
                cmd.arg(format!("--{flag}")).arg(value);
            }
            EtcdSettings::ConfigFile => yaml.push_str(&format!("{flag}: '{value}'\n")),
        }
    }
    if by == EtcdSettings::ConfigFile {
        // As etcd's sample file: every key listed, most of them empty.
        yaml.push_str("wal-dir:\nclient-transport-security:\n  cert-file:\n  auto-tls: false\n");
        let file = dir.path().join("etcd.conf.yml");
        std::fs::write(&file, yaml).unwrap();
        cmd.arg("--config-file").arg(&file);
        // The file wins over etcd's variable for the same setting.
        cmd.env("ETCD_NAME", "not-this-name");
    }
    let child = cmd
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(http_health(a) && http_health(b)) {
        assert!(
            std::time::Instant::now() < deadline,
            "not healthy on both addresses"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ok(&url_a, &["put", "k", "v"]), "OK\n");
    assert_eq!(ok(&url_b, &["get", "k"]), "k\nv\n");
    assert!(data_dir.exists(), "data in the named dir");
    // The member publishes its client URLs once it runs.
    let want = format!("infra0, {peer_url}, {url_a},{url_b}, false");
    loop {
        let members = ok(&url_b, &["member", "list", "-w", "simple"]);
        if members.contains(&want) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{members}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_takes_etcds_flags() {
    serve_configured_as_etcd(EtcdSettings::Flags);
}

#[test]
fn serve_takes_etcds_environment_variables() {
    serve_configured_as_etcd(EtcdSettings::Variables);
}

#[test]
fn serve_takes_etcds_config_file() {
    serve_configured_as_etcd(EtcdSettings::ConfigFile);
}

/// A file that cannot be read as etcd's settings stops the start, naming
/// the file; nothing is written.
#[test]
fn a_bad_etcd_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(&file, "name: [not, a, name\n").unwrap();
    let mut cmd = Command::new(cairn_bin());
    cmd.current_dir(dir.path())
        .args(["serve", "--data-dir", "d"])
        .env("ETCD_CONFIG_FILE", &file);
    let out = run_bounded(cmd, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--config-file") && stderr.contains("etcd.conf.yml"),
        "{stderr}"
    );
    assert!(!dir.path().join("d").exists(), "nothing written");
}
