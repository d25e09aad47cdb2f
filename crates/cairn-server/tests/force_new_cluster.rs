//! `--force-new-cluster`: a member that outlived its cluster's quorum
//! starts alone on its own data, keeps every entry it holds, and grows the
//! cluster again with `member add`. Also what a member makes of the data
//! dir it restarts on: a promotion it owes, a format it cannot read.

mod support;

use std::time::Duration;

use cairn_server::node::forward::{ForwardRequest, ForwardResponse};
use cairn_server::serve::PeerApi;
use support::*;

const ELECTION: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_survivor_forced_alone_keeps_its_data_and_grows_again() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.wait_leader(ELECTION).await;
    let survivor = (leader + 1) % 3;
    let stale = (leader + 2) % 3;
    put(c.node(leader), "before", "all three").await;
    wait_until("every member applied `before`", ELECTION, || {
        let ok = (0..3).all(|i| local_count(c.node(i), "before") == 1);
        async move { ok }
    })
    .await;

    // With one member down, the leader and the survivor acknowledge these
    // alone: the survivor holds each entry, though it may not yet know the
    // last ones are committed.
    c.stop_member(stale).await;
    for i in 0..20 {
        put(c.node(leader), &format!("k{i:02}"), &format!("v{i}")).await;
    }
    c.stop_member(leader).await;
    c.stop_member(survivor).await;

    // Alone on its data the survivor cannot elect itself; forced, it leads.
    let survivor_id = {
        c.members[survivor].config.force_new_cluster = true;
        c.start_member(survivor).await;
        c.node(survivor).member_id()
    };
    assert_eq!(c.wait_leader(ELECTION).await, survivor);
    let members = c.node(survivor).members();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].id, survivor_id);
    assert!(!members[0].is_learner);
    for i in 0..20 {
        assert_eq!(
            get(c.node(survivor), &format!("k{i:02}")).await,
            Some(format!("v{i}").into_bytes()),
            "k{i:02}"
        );
    }
    assert_eq!(local_count(c.node(survivor), "before"), 1);
    put(c.node(survivor), "after", "alone").await;

    // Started again with the flag still set, a member already alone is
    // left as it is.
    c.stop_member(survivor).await;
    c.start_member(survivor).await;
    assert_eq!(c.wait_leader(ELECTION).await, survivor);
    assert_eq!(c.node(survivor).members().len(), 1);
    assert_eq!(
        get(c.node(survivor), "after").await.as_deref(),
        Some(&b"alone"[..])
    );

    // A dropped member that comes back with its old data learns it is out
    // and stops, rather than campaigning against the survivor.
    c.start_member(stale).await;
    stops_as_removed(c.node(stale)).await;
    c.stop_member(stale).await;

    // The cluster grows again: a new member catches up and votes.
    c.members[survivor].config.force_new_cluster = false;
    let (joiner, joiner_id) = c.add_learner(survivor, |_| {}).await;
    wait_until("the new member caught up", ELECTION, || {
        let ok = local_count(c.node(joiner), "k") == 20;
        async move { ok }
    })
    .await;
    c.node(survivor)
        .membership_request(ForwardRequest::PromoteMember { id: joiner_id })
        .await
        .expect("promote");
    wait_until("the new member votes", ELECTION, || {
        let ok = c
            .node(joiner)
            .members()
            .iter()
            .any(|m| m.id == joiner_id && !m.is_learner);
        async move { ok }
    })
    .await;
    put(c.node(joiner), "grown", "two voters").await;
    assert_eq!(
        get(c.node(survivor), "grown").await.as_deref(),
        Some(&b"two voters"[..])
    );
    assert_eq!(c.node(joiner).leader_id(), Some(survivor_id));
    c.shutdown().await;
}

/// On an empty data dir the flag has nothing to force: the member
/// bootstraps from `--initial-cluster` as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_flag_is_ignored_on_an_empty_data_dir() {
    let c = Cluster::start(1, |cfg| cfg.force_new_cluster = true).await;
    c.wait_leader(ELECTION).await;
    put(c.node(0), "k", "v").await;
    assert_eq!(c.node(0).members().len(), 1);
    c.shutdown().await;
}

/// A voter added to a cluster of one joins as a learner and is promoted
/// once caught up (openraft needs its vote to commit the change that adds
/// it). That promise survives a restart of the one voter before the new
/// member even starts: it is kept on disk, not only in a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_added_to_a_cluster_of_one_is_promoted_after_the_leader_restarts() {
    let mut c = Cluster::start(1, |_| {}).await;
    c.wait_leader(ELECTION).await;
    put(c.node(0), "before", "one voter").await;
    let (joiner, peer_url) = c.new_joiner(|_| {});
    let joiner_id = add_voter(&c, peer_url).await;
    let learner = |c: &Cluster| {
        c.node(0)
            .members()
            .iter()
            .find(|m| m.id == joiner_id)
            .map(|m| m.is_learner)
    };
    assert_eq!(learner(&c), Some(true), "joins as a learner first");

    c.stop_member(0).await;
    c.start_member(0).await;
    c.wait_leader(ELECTION).await;
    assert_eq!(learner(&c), Some(true), "not started yet, so not caught up");

    c.start_member(joiner).await;
    wait_until("the new member votes", ELECTION, || {
        let votes = learner(&c) == Some(false);
        async move { votes }
    })
    .await;
    put(c.node(joiner), "after", "two voters").await;
    assert_eq!(
        get(c.node(0), "after").await.as_deref(),
        Some(&b"two voters"[..])
    );
    let dir = c.members[0].config.data_dir.clone();
    wait_until("the promise is dropped once kept", ELECTION, || {
        let left = pending_voters(&dir);
        async move { left.is_empty() }
    })
    .await;
    c.shutdown().await;
}

/// A member added as a voter and removed before it started is no longer
/// to be promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_voter_removed_before_it_starts_is_forgotten() {
    let mut c = Cluster::start(1, |_| {}).await;
    c.wait_leader(ELECTION).await;
    let (_, peer_url) = c.new_joiner(|_| {});
    let id = add_voter(&c, peer_url).await;
    let dir = c.members[0].config.data_dir.clone();
    assert_eq!(pending_voters(&dir), vec![format!("{id:x}")]);
    c.node(0)
        .membership_request(ForwardRequest::RemoveMember { id })
        .await
        .expect("member remove");
    wait_until("the removed member is forgotten", ELECTION, || {
        let left = pending_voters(&dir);
        async move { left.is_empty() }
    })
    .await;
    c.shutdown().await;
}

/// `member add` of a voter at `peer_url` through member 0: its ID.
async fn add_voter(c: &Cluster, peer_url: String) -> u64 {
    let added = c
        .node(0)
        .membership_request(ForwardRequest::AddMember {
            peer_url,
            is_learner: false,
        })
        .await
        .expect("member add");
    let ForwardResponse::Member(id) = added else {
        panic!("member add answered {added:?}")
    };
    id
}

/// The member IDs (hex) a data dir's member still has to promote.
fn pending_voters(data_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join("pending_voters"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A data dir written in a newer data format (a downgrade) is refused at
/// start, naming the format, and left as it was: the older build starts on
/// it again once the marker says a format it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_dir_in_a_newer_format_is_refused_and_left_alone() {
    use redb::{ReadableDatabase, TableDefinition};
    const FORMAT: TableDefinition<&str, u32> = TableDefinition::new("data_format");
    // A stopped member's threads may hold the file a moment longer.
    let open = |path: &std::path::Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match redb::Database::open(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(25))
                }
                opened => return opened.expect("open the data file"),
            }
        }
    };
    let set_format = |path: &std::path::Path, version: u32| {
        let db = open(path);
        let txn = db.begin_write().unwrap();
        txn.open_table(FORMAT)
            .unwrap()
            .insert("version", version)
            .unwrap();
        txn.commit().unwrap();
    };
    let mut c = Cluster::start(1, |_| {}).await;
    c.wait_leader(ELECTION).await;
    put(c.node(0), "kept", "yes").await;
    c.stop_member(0).await;
    let file = c.members[0].config.data_dir.join("cairn.redb");
    {
        let db = open(&file);
        let txn = db.begin_read().unwrap();
        let version = txn.open_table(FORMAT).unwrap().get("version").unwrap();
        assert_eq!(
            version.map(|v| v.value()),
            Some(cairn_server::node::data_format::CURRENT),
            "a new data dir records its format"
        );
    }
    let newer = cairn_server::node::data_format::CURRENT + 1;
    set_format(&file, newer);
    let refused = cairn_server::serve::start_with(c.members[0].config.clone(), PeerApi::Current)
        .await
        .err()
        .expect("a newer format is refused");
    let says = refused.to_string();
    assert!(
        says.contains(&format!("data format {newer}")) && says.contains("cairn.redb"),
        "{says}"
    );
    set_format(&file, cairn_server::node::data_format::CURRENT);
    c.start_member(0).await;
    c.wait_leader(ELECTION).await;
    assert_eq!(get(c.node(0), "kept").await.as_deref(), Some(&b"yes"[..]));
    c.shutdown().await;
}
