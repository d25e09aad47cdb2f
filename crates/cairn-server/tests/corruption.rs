//! The online corruption check on a real 3-member cluster: members that
//! agree are left alone; a member whose keyspace is changed behind Raft's
//! back is named by the CORRUPT alarm, and the cluster stops serving
//! clients until the alarm is disarmed. A member restarted with the
//! initial check refuses to start on data unlike the majority's.

mod support;

use std::time::Duration;

use cairn_server::node::StartError;
use cairn_store::{AlarmKind, Command, PutRequest, StoreError};
use support::{put, wait_until, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_unlike_the_majority_is_alarmed_and_the_cluster_stops() {
    let c = Cluster::start(3, |cfg| cfg.corrupt_check_interval_ms = 100).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;

    // Healthy: rounds run while writes flow, and find nothing.
    let first = cairn_server::corruption::checks_run();
    let mut i = 0;
    while cairn_server::corruption::checks_run() < first + 5 {
        assert!(i < 20_000, "five check rounds did not run");
        put(c.node(leader), &format!("k{}", i % 50), "v").await;
        i += 1;
    }
    for m in 0..3 {
        assert!(
            c.node(m).store().alarms().is_empty(),
            "a false alarm on member {m}"
        );
    }

    // A follower's keyspace changed behind Raft's back, once it has
    // applied everything (the harder case, below).
    let f = (leader + 1) % 3;
    let f_id = c.node(f).member_id();
    wait_until(
        "the follower applied every write",
        Duration::from_secs(10),
        || {
            let caught_up = c.node(f).store().revision() == c.node(leader).store().revision();
            async move { caught_up }
        },
    )
    .await;
    c.node(f)
        .store
        .write()
        .unwrap()
        .apply(&Command::Put(PutRequest {
            key: b"k1".to_vec(),
            value: b"not what the others hold".to_vec(),
            ..Default::default()
        }));
    // The tampered write took the follower's next revision. If the
    // follower had applied everything, that revision is past the leader's,
    // whose hash (at its own revision) would never see it: one more write
    // through Raft gives the leader that revision, with other content.
    // (Refused if a round already raised the alarm; either is fine.)
    let _ = c
        .node(leader)
        .write(Command::Put(PutRequest {
            key: b"after-the-tampering".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .await;
    wait_until(
        "the CORRUPT alarm names the follower",
        Duration::from_secs(20),
        || {
            let raised = c
                .node(leader)
                .store()
                .alarms()
                .contains(&(f_id, AlarmKind::Corrupt));
            async move { raised }
        },
    )
    .await;
    assert_eq!(
        c.node(leader).store().alarms(),
        &[(f_id, AlarmKind::Corrupt)],
        "only the odd one out"
    );
    // Writes are refused everywhere, with etcd's error.
    let refused = c
        .node(leader)
        .write(Command::Put(PutRequest {
            key: b"k2".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        refused,
        Err(cairn_server::ServerError::Store(StoreError::Corrupt))
    );
    // Reads too, as etcd's "corrupt cluster" (DataLoss).
    let addr = c.members[leader].server.as_ref().unwrap().client_addr;
    let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let read = kv
        .range(cairn_proto::etcdserverpb::RangeRequest {
            key: b"k1".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("reads refused");
    assert_eq!(read.code(), tonic::Code::DataLoss, "{read:?}");
    assert_eq!(read.message(), "etcdserver: corrupt cluster");
    let mut text = String::new();
    cairn_server::corruption::render_metrics(&mut text);
    assert!(
        !text.contains("cairn_corruption_detected_total 0"),
        "{text}"
    );
    c.shutdown().await;
}

/// Puts `key` = `value` on `member`'s store directly, behind Raft's back;
/// the state machine persists it with the next batch it applies.
fn put_behind_raft(c: &Cluster, member: usize, key: &str, value: &str) {
    let applied = c
        .node(member)
        .store
        .write()
        .unwrap()
        .apply(&Command::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }));
    assert!(
        !matches!(applied.result, cairn_store::CommandResult::Error(_)),
        "{applied:?}"
    );
}

/// Waits until every running member of `c` is at revision `head`.
async fn applied_everywhere(c: &Cluster, head: i64) {
    wait_until("every member at the head", Duration::from_secs(10), || {
        let done = c
            .running()
            .iter()
            .all(|m| c.node(*m).store().revision() == head);
        async move { done }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_member_unlike_the_majority_refuses_to_start() {
    // New members hold no data of their own: they start unchecked.
    let mut c = Cluster::start(3, |cfg| cfg.initial_corrupt_check = true).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut head = 0;
    for i in 0..20 {
        head = put(c.node(leader), &format!("k{i}"), "v").await;
    }
    applied_everywhere(&c, head).await;
    // Every member writes one revision behind Raft's back, the same on
    // two of them, another on the third, then one write through Raft
    // persists it on all.
    let f = (leader + 1) % 3;
    let f_id = c.node(f).member_id();
    for m in 0..3 {
        let value = if m == f { "what the others lack" } else { "v2" };
        put_behind_raft(&c, m, "k1", value);
    }
    let head = put(c.node(leader), "k2", "v2").await;
    applied_everywhere(&c, head).await;

    // A healthy member restarts: the check passes.
    let healthy = (leader + 2) % 3;
    c.stop_member(healthy).await;
    c.start_member(healthy).await;
    assert!(c.node(healthy).held_data);

    // The odd one restarts: refused.
    c.stop_member(f).await;
    let refused = cairn_server::serve::start(c.members[f].config.clone()).await;
    match refused {
        Err(StartError::Corrupt {
            member_id,
            revision,
            hash,
            majority_hash,
        }) => {
            assert_eq!(member_id, f_id);
            assert!(revision >= head, "at its head, caught up: {revision}");
            assert_ne!(hash, majority_hash);
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a member unlike the majority started"),
    }
    // The others serve on.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    put(c.node(leader), "k3", "v").await;
    c.shutdown().await;
}
