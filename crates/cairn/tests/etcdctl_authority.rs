//! etcdctl 3.4 dials each endpoint for `endpoint status`, `endpoint hashkv`
//! and `move-leader` with the HTTP/2 `:authority` set to the whole URL
//! (`http://host:port`). The client port's pre-filter rewrites it, so
//! `http://` endpoints work as against etcd. Skips with a message only when
//! etcdctl is not installed.

mod support;

use std::time::Duration;

use support::*;

/// Every unsigned number following `key` in etcdctl's JSON output.
fn numbers_after(json: &str, key: &str) -> Vec<u64> {
    json.match_indices(key)
        .map(|(i, _)| {
            let rest = json[i + key.len()..].trim_start();
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("number after {key} in {json}"))
        })
        .collect()
}

#[test]
fn url_endpoints_for_status_hashkv_and_move_leader() {
    if !etcdctl_available() {
        eprintln!(
            "SKIP: etcdctl not found; install Debian's etcd-client (apt-get install etcd-client)"
        );
        return;
    }
    let c = ProcCluster::start(3);
    c.wait_healthy(Duration::from_secs(30));
    let ep = c.endpoints();
    assert!(ep.starts_with("http://"), "{ep}");
    wait_until(
        "members publish client URLs",
        Duration::from_secs(20),
        || !ok(etcdctl(&ep, &["member", "list"])).contains(", , "),
    );

    let status = ok(etcdctl(
        &ep,
        &["endpoint", "status", "--cluster", "-w", "table"],
    ));
    for m in &c.members {
        assert!(status.contains(&m.client_url()), "{status}");
    }
    let single = ok(etcdctl(&c.members[0].client_url(), &["endpoint", "status"]));
    assert_eq!(single.lines().count(), 1, "{single}");

    let hashes = ok(etcdctl(&ep, &["endpoint", "hashkv", "--cluster"]));
    assert_eq!(hashes.lines().count(), 3, "{hashes}");

    let json = ok(etcdctl(&ep, &["endpoint", "status", "-w", "json"]));
    let leader = numbers_after(&json, "\"leader\":")[0];
    let ids = numbers_after(&json, "\"member_id\":");
    assert_eq!(ids.len(), 3, "{json}");
    let target = ids.iter().copied().find(|i| *i != leader).unwrap();
    // move-leader asks every endpoint for its status and sends the request
    // to the leader's.
    let out = ok(etcdctl(&ep, &["move-leader", &format!("{target:x}")]));
    assert!(out.contains("Leadership transferred"), "{out}");
}
