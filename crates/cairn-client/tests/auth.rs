//! The client against real in-process members with etcd authentication on
//! and tokens that live one second: it logs in, sends its token on every
//! kind of call and stream, shares it across members, and logs in again
//! when a member refuses an expired one.

#[path = "../../cairn-server/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use cairn_client::proto::etcdserverpb::RangeRequest;
use cairn_client::registry::{Mode, Registered, Session};
use cairn_client::tonic::Code;
use cairn_client::{
    Client, ClientError, ClientOptions, Credentials, EventType, GetOptions, KeepAliveState,
    Permission, PermissionType, PutOptions, RetryPolicy, SnapshotVerifier, UserAddOptions,
    WatchOptions, WatchStream,
};
use futures::StreamExt;
use support::Cluster;
use tokio::time::Instant;

/// Longest any single wait may take.
const WAIT: Duration = Duration::from_secs(15);

/// Three members with a leader, tokens that live one second and cheap
/// logins (the test logs in often), and their client URLs.
async fn three_members() -> (Cluster, Vec<String>) {
    let c = Cluster::start(3, |cfg| {
        cfg.auth_token_ttl_secs = 1;
        cfg.auth_password_iterations = 1000;
    })
    .await;
    c.wait_leader(WAIT).await;
    let urls = (0..3)
        .map(|i| c.members[i].server.as_ref().unwrap().client_url())
        .collect();
    (c, urls)
}

async fn client(urls: &[String], credentials: Option<(&str, &str)>) -> Client {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
        },
        credentials: credentials.map(|(u, p)| Credentials::new(u, p)),
        ..ClientOptions::default()
    };
    Client::connect(urls.to_vec(), options).await.unwrap()
}

/// Waits until every member has applied the same auth state. Each member
/// judges tokens and permissions by its own applied copy, so right after
/// an acknowledged change a follower may still judge by the old one.
async fn wait_auth_applied(c: &Cluster) {
    let deadline = Instant::now() + WAIT;
    loop {
        let revisions: Vec<u64> = (0..3).map(|i| c.node(i).store().auth().revision).collect();
        if revisions.iter().all(|r| *r == revisions[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "auth states differ: {revisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A watch on every key under `prefix`.
async fn watch_prefix(client: &Client, prefix: &str) -> WatchStream {
    let options = WatchOptions {
        prefix: true,
        ..Default::default()
    };
    client.watch(prefix, options).await.unwrap()
}

#[track_caller]
fn assert_refused(e: ClientError, code: Code, text: &str) {
    assert_eq!(e.code(), Some(code), "{e:?}");
    assert!(e.to_string().contains(text), "{e}");
}

/// Waits until a member refuses the token `c` holds as expired: the raw
/// clients send it but never log in again.
async fn wait_token_expired(c: &Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let req = RangeRequest {
            key: b"a/1".to_vec(),
            ..Default::default()
        };
        match c.kv_client().range(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::Unauthenticated => {
                assert!(s.message().contains("invalid auth token"), "{s:?}");
                return;
            }
            Err(s) => panic!("unexpected refusal {s:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "token still valid after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event of `w`: (type, key, value).
async fn next_event(w: &mut WatchStream) -> (EventType, Vec<u8>, Vec<u8>) {
    let r = tokio::time::timeout(WAIT, w.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .expect("no watch error");
    let e = &r.events[0];
    (e.event_type, e.kv.key.clone(), e.kv.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_sent_everywhere_and_renewed_when_refused() {
    let (c, urls) = three_members().await;

    // root logs in before auth is on: the cluster says it is off, and
    // root's calls go without a token.
    let root = client(&urls, Some(("root", "rootpw"))).await;
    root.put("a/0", "before", PutOptions::default())
        .await
        .unwrap();
    root.user_add("root", "rootpw", UserAddOptions::default())
        .await
        .unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.user_add("alice", "alicepw", UserAddOptions::default())
        .await
        .unwrap();
    root.role_add("r").await.unwrap();
    root.role_grant_permission("r", PermissionType::ReadWrite, "a", "b")
        .await
        .unwrap();
    root.user_grant_role("alice", "r").await.unwrap();
    // A user without a password cannot log in.
    root.user_add("bot", "", UserAddOptions { no_password: true })
        .await
        .unwrap();
    assert!(!root.auth_status().await.unwrap().enabled);
    root.auth_enable().await.unwrap();
    wait_auth_applied(&c).await;

    // root's next call is refused for lacking a token; it logs in and the
    // call goes through.
    assert_eq!(
        root.user_list().await.unwrap().users,
        vec!["alice", "bot", "root"]
    );
    let status = root.auth_status().await.unwrap();
    assert!(status.enabled);
    assert!(status.auth_revision > 0);
    assert_eq!(root.role_list().await.unwrap().roles, vec!["r"]);
    assert_eq!(root.user_get("alice").await.unwrap().roles, vec!["r"]);
    assert_eq!(
        root.role_get("r").await.unwrap().permissions,
        vec![Permission {
            perm_type: PermissionType::ReadWrite,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }]
    );

    // Without a token, or with a wrong password: refused, with etcd's
    // messages.
    let anonymous = client(&urls, None).await;
    let e = anonymous
        .get("a/0", GetOptions::default())
        .await
        .unwrap_err();
    assert_refused(e, Code::InvalidArgument, "user name is empty");
    let e = Session::create(&anonymous, 10).await.unwrap_err();
    assert_refused(e, Code::InvalidArgument, "user name is empty");
    let wrong = client(&urls, Some(("alice", "wrong"))).await;
    let e = wrong.get("a/0", GetOptions::default()).await.unwrap_err();
    assert_refused(e, Code::InvalidArgument, "authentication failed");
    assert!(wrong.authenticate().await.is_err());
    let bot = client(&urls, Some(("bot", ""))).await;
    let e = bot.get("a/0", GetOptions::default()).await.unwrap_err();
    assert_refused(e, Code::InvalidArgument, "authentication failed");

    // alice, within her permissions only. Her first calls come at once
    // from many tasks: they share one login.
    let alice = client(&urls, Some(("alice", "alicepw"))).await;
    let reads = (0..16).map(|_| alice.get("a/0", GetOptions::default()));
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.unwrap().kvs[0].value, b"before");
    }
    alice.put("a/1", "v1", PutOptions::default()).await.unwrap();
    let e = alice
        .put("b/1", "v", PutOptions::default())
        .await
        .unwrap_err();
    assert_refused(e, Code::PermissionDenied, "permission denied");
    let e = alice.user_list().await.unwrap_err();
    assert_refused(e, Code::PermissionDenied, "permission denied");
    // Users may look themselves up.
    assert_eq!(alice.user_get("alice").await.unwrap().roles, vec!["r"]);

    // A watch opened with her token delivers events.
    let mut early = watch_prefix(&alice, "a/").await;
    alice.put("a/2", "v2", PutOptions::default()).await.unwrap();
    assert_eq!(
        next_event(&mut early).await,
        (EventType::Put, b"a/2".to_vec(), b"v2".to_vec())
    );
    // A lease kept alive over one stream, opened with her token.
    let lease = alice.lease_grant(2, 0).await.unwrap();
    let mut kept = alice.lease_keep_alive(lease.id).await.unwrap();

    // Her token expires; her next call is refused once, she logs in again
    // and the call succeeds.
    wait_token_expired(&alice).await;
    let r = alice.get("a/1", GetOptions::default()).await.unwrap();
    assert_eq!(r.kvs[0].value, b"v1");
    // The new token is what the raw clients now send too.
    let req = RangeRequest {
        key: b"a/1".to_vec(),
        ..Default::default()
    };
    alice.kv_client().range(req).await.unwrap();
    // Writes are repeated after a new login as well.
    wait_token_expired(&alice).await;
    alice.put("a/3", "v3", PutOptions::default()).await.unwrap();
    // The watch opened before goes on.
    assert_eq!(
        next_event(&mut early).await,
        (EventType::Put, b"a/3".to_vec(), b"v3".to_vec())
    );
    // A watch opened with an expired token held: logs in again, then
    // delivers.
    wait_token_expired(&alice).await;
    let mut late = watch_prefix(&alice, "a/").await;
    alice.put("a/4", "v4", PutOptions::default()).await.unwrap();
    assert_eq!(
        next_event(&mut late).await,
        (EventType::Put, b"a/4".to_vec(), b"v4".to_vec())
    );
    assert_eq!(next_event(&mut early).await.1, b"a/4".to_vec());
    // The lease lived on through the expiries (renewals every 2/3 s).
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let state = tokio::time::timeout(WAIT, kept.changed()).await.unwrap();
        assert!(
            matches!(state, Some(KeepAliveState::Alive { .. })),
            "{state:?}"
        );
    }
    let ttl = alice.lease_time_to_live(lease.id, false).await.unwrap();
    assert!(ttl.ttl > 0, "{ttl:?}");

    // root: one token for every member (each asked directly), the
    // snapshot stream, and the cairn.v1 services.
    wait_token_expired(&root).await;
    for url in &urls {
        let r = root.hash_kv_at(url, 0).await.unwrap();
        assert!(r.hash_revision > 0, "{url}: {r:?}");
    }
    let mut snap = root.snapshot().await.unwrap();
    let mut verifier = SnapshotVerifier::new();
    while let Some(chunk) = snap.next().await {
        verifier.update(&chunk.unwrap());
    }
    assert!(verifier.finish().unwrap().data_len > 0);
    let e = alice.snapshot().await.err().expect("snapshot refused");
    assert_refused(e, Code::PermissionDenied, "permission denied");

    let session = Session::create(&root, 10).await.unwrap();
    assert!(root.create_registry("svc", Mode::Unique).await.unwrap());
    wait_token_expired(&root).await;
    assert!(matches!(
        root.register(session.id(), "svc", "db", "10.0.0.7")
            .await
            .unwrap(),
        Registered::Registered { .. }
    ));
    wait_token_expired(&root).await;
    let guard = root.lock("l", session.id()).await.unwrap();
    assert!(guard.fencing_token() > 0);
    assert!(guard.unlock().await.unwrap());
    session.close().await.unwrap();

    // Turned off by root: anyone again, and credentials still work.
    root.auth_disable().await.unwrap();
    wait_auth_applied(&c).await;
    let r = anonymous.get("a/1", GetOptions::default()).await.unwrap();
    assert_eq!(r.kvs[0].value, b"v1");
    alice.put("b/1", "v", PutOptions::default()).await.unwrap();

    c.shutdown().await;
}

/// A change of password ends the tokens issued before it: the client's
/// login with the old password then fails, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_ends_the_session_with_a_clear_error() {
    let (c, urls) = three_members().await;
    let admin = client(&urls, None).await;
    for (user, pw) in [("root", "rootpw"), ("carol", "carolpw")] {
        admin
            .user_add(user, pw, UserAddOptions::default())
            .await
            .unwrap();
    }
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    wait_auth_applied(&c).await;
    let carol = client(&urls, Some(("carol", "carolpw"))).await;
    carol.authenticate().await.unwrap();
    assert!(carol.user_get("carol").await.unwrap().roles.is_empty());

    let root = client(&urls, Some(("root", "rootpw"))).await;
    root.user_change_password("carol", "newpw").await.unwrap();
    wait_auth_applied(&c).await;
    let e = carol.user_get("carol").await.unwrap_err();
    assert_refused(e, Code::InvalidArgument, "authentication failed");
    let e = client(&urls, None).await.authenticate().await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e:?}");

    root.user_delete("carol").await.unwrap();
    assert_eq!(root.user_list().await.unwrap().users, vec!["root"]);
    c.shutdown().await;
}
