//! etcd's authentication on a real 3-member cluster, driven over gRPC with
//! the generated etcd clients: tokens issued by one member and used on
//! another, permissions on writes forwarded to the leader, watches, leases,
//! admin-only calls, the `cairn.v1` services, and the auth state carried by
//! restarts and snapshot installs.

mod support;

use std::time::Duration;

use cairn_proto::authpb::{permission::Type as PermType, Permission};
use cairn_proto::cairn::v1 as cpb;
use cairn_proto::cairn::v1::session_client::SessionClient;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use futures::StreamExt;
use support::{wait_until, Cluster};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ELECTION: Duration = Duration::from_secs(10);

/// Cheap hashing: these tests log in often.
fn cheap(cfg: &mut cairn_server::ServerConfig) {
    cfg.auth_password_iterations = 1000;
}

async fn channel(c: &Cluster, i: usize) -> Channel {
    let addr = c.members[i].server.as_ref().unwrap().client_addr;
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `msg` carrying `token` the way etcd clients send it.
fn as_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("token", token.parse().unwrap());
    r
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, text: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(text), "{status:?}");
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

async fn login(ch: Channel, name: &str, password: &str) -> Result<String, Status> {
    Ok(AuthClient::new(ch)
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .token)
}

/// Changes alice's password to `new` as `root`, then waits until `kv`'s
/// member refuses her `old_token` as invalid. An old token may pass a
/// member that has not applied the change yet (an approval is not
/// re-checked against the leader); soon none does.
async fn new_password_ends_token(
    auth: &mut AuthClient<Channel>,
    root: &str,
    kv: &KvClient<Channel>,
    old_token: &str,
) {
    auth.user_change_password(as_token(
        AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "new".into(),
            ..Default::default()
        },
        root,
    ))
    .await
    .unwrap();
    wait_until("the password change reaches the member", ELECTION, || {
        let mut kv = kv.clone();
        async move {
            matches!(kv.put(as_token(put("a5", "v"), old_token)).await,
                     Err(s) if s.code() == Code::Unauthenticated
                        && s.message().contains("invalid auth token"))
        }
    })
    .await;
}

/// Root and alice (role `r`: read-write on `[a, b)`), then auth on.
async fn set_up_users(ch: Channel) {
    support::set_up_auth(ch, "alice", "alicepw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_roles_and_tokens_across_members() {
    let c = Cluster::start(3, cheap).await;
    let leader = c.wait_leader(ELECTION).await;
    let (f, g) = ((leader + 1) % 3, (leader + 2) % 3);
    set_up_users(channel(&c, leader).await).await;

    // Without a token nothing goes; a wrong password gets no token.
    let mut kv_g = KvClient::new(channel(&c, g).await);
    assert_refused(
        kv_g.put(put("a1", "v")).await,
        Code::InvalidArgument,
        "user name is empty",
    );
    assert_refused(
        login(channel(&c, f).await, "alice", "nope").await,
        Code::InvalidArgument,
        "authentication failed",
    );
    assert_refused(
        login(channel(&c, f).await, "mallory", "x").await,
        Code::InvalidArgument,
        "authentication failed",
    );

    // A token from one member works on another, for writes forwarded to
    // the leader and for reads, inside alice's range only.
    let alice = login(channel(&c, f).await, "alice", "alicepw")
        .await
        .unwrap();
    let root = login(channel(&c, g).await, "root", "rootpw").await.unwrap();
    kv_g.put(as_token(put("a1", "v1"), &alice)).await.unwrap();
    let got = KvClient::new(channel(&c, leader).await)
        .range(as_token(
            RangeRequest {
                key: b"a1".to_vec(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kvs[0].value, b"v1");
    assert_refused(
        kv_g.put(as_token(put("b1", "v"), &alice)).await,
        Code::PermissionDenied,
        "permission denied",
    );
    assert_refused(
        kv_g.range(as_token(
            RangeRequest {
                key: b"a".to_vec(),
                range_end: b"c".to_vec(),
                ..Default::default()
            },
            &alice,
        ))
        .await,
        Code::PermissionDenied,
        "permission denied",
    );
    // A txn is checked in both branches.
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("a2", "v"))),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("z", "v"))),
        }],
        ..Default::default()
    };
    assert_refused(
        kv_g.txn(as_token(txn, &alice)).await,
        Code::PermissionDenied,
        "permission denied",
    );
    kv_g.put(as_token(put("z", "root's"), &root)).await.unwrap();

    // Watches: created on a permitted range they deliver; elsewhere they
    // are created and cancelled with the reason.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut events = WatchClient::new(channel(&c, g).await)
        .watch(as_token(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    let create = |key: &[u8], end: &[u8], id| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            watch_id: id,
            ..Default::default()
        })),
    };
    tx.send(create(b"z", b"", 1)).await.unwrap();
    let refused = events.next().await.unwrap().unwrap();
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert!(refused.cancel_reason.contains("permission denied"));
    tx.send(create(b"a", b"b", 2)).await.unwrap();
    let created = events.next().await.unwrap().unwrap();
    assert!(created.created && !created.canceled, "{created:?}");
    kv_g.put(as_token(put("a3", "seen"), &alice)).await.unwrap();
    let event = events.next().await.unwrap().unwrap();
    assert_eq!(event.events[0].kv.as_ref().unwrap().key, b"a3");

    // Revoking a lease deletes its keys: it takes write permission on all.
    let mut lease = LeaseClient::new(channel(&c, f).await);
    let id = lease
        .lease_grant(as_token(LeaseGrantRequest { ttl: 60, id: 0 }, &alice))
        .await
        .unwrap()
        .into_inner()
        .id;
    for (key, token) in [("a4", &alice), ("z4", &root)] {
        let mut p = put(key, "leased");
        p.lease = id;
        kv_g.put(as_token(p, token)).await.unwrap();
    }
    // Listing a lease's keys takes read permission on each; its TTL none.
    let ttl = |keys| LeaseTimeToLiveRequest { id, keys };
    assert_refused(
        lease.lease_time_to_live(as_token(ttl(true), &alice)).await,
        Code::PermissionDenied,
        "permission denied",
    );
    assert!(
        lease
            .lease_time_to_live(as_token(ttl(false), &alice))
            .await
            .unwrap()
            .into_inner()
            .ttl
            > 0
    );
    let listed = lease
        .lease_time_to_live(as_token(ttl(true), &root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys, vec![b"a4".to_vec(), b"z4".to_vec()]);
    assert_refused(
        lease
            .lease_revoke(as_token(LeaseRevokeRequest { id }, &alice))
            .await,
        Code::PermissionDenied,
        "permission denied",
    );
    lease
        .lease_revoke(as_token(LeaseRevokeRequest { id }, &root))
        .await
        .unwrap();

    // Admin-only calls.
    let mut auth_f = AuthClient::new(channel(&c, f).await);
    assert_refused(
        auth_f
            .user_list(as_token(AuthUserListRequest {}, &alice))
            .await,
        Code::PermissionDenied,
        "permission denied",
    );
    let me = auth_f
        .user_get(as_token(
            AuthUserGetRequest {
                name: "alice".into(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        me.roles,
        vec!["r".to_string()],
        "users may look themselves up"
    );
    assert_refused(
        ClusterClient::new(channel(&c, f).await)
            .member_add(as_token(
                MemberAddRequest {
                    peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                    is_learner: true,
                },
                &alice,
            ))
            .await,
        Code::PermissionDenied,
        "permission denied",
    );
    assert_refused(
        MaintenanceClient::new(channel(&c, f).await)
            .hash_kv(as_token(HashKvRequest { revision: 0 }, &alice))
            .await,
        Code::PermissionDenied,
        "permission denied",
    );
    // Cairn's own services need the reserved prefix: root has it.
    let mut sessions = SessionClient::new(channel(&c, g).await);
    let session = cpb::CreateSessionRequest { ttl_secs: 10 };
    assert_refused(
        sessions.create_session(as_token(session, &alice)).await,
        Code::PermissionDenied,
        "permission denied",
    );
    sessions
        .create_session(as_token(session, &root))
        .await
        .unwrap();

    // A new password ends the tokens issued before, on every member.
    new_password_ends_token(&mut auth_f, &root, &kv_g, &alice).await;
    let alice = login(channel(&c, g).await, "alice", "new").await.unwrap();
    kv_g.put(as_token(put("a5", "v"), &alice)).await.unwrap();

    let status = auth_f
        .auth_status(AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.enabled && status.auth_revision >= 7, "{status:?}");
    // Only root may turn auth off; then anyone may write again.
    assert_refused(
        auth_f
            .auth_disable(as_token(AuthDisableRequest {}, &alice))
            .await,
        Code::PermissionDenied,
        "permission denied",
    );
    auth_f
        .auth_disable(as_token(AuthDisableRequest {}, &root))
        .await
        .unwrap();
    kv_g.put(put("z", "anyone")).await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_auth_state_survives_restarts_and_reaches_a_member_by_snapshot() {
    let mut c = Cluster::start(3, |cfg| {
        cheap(cfg);
        cfg.snapshot_entries = 40;
    })
    .await;
    let leader = c.wait_leader(ELECTION).await;
    set_up_users(channel(&c, leader).await).await;
    let lagging = (leader + 1) % 3;
    c.stop_member(lagging).await;
    let root = login(channel(&c, leader).await, "root", "rootpw")
        .await
        .unwrap();
    let mut kv = KvClient::new(channel(&c, leader).await);
    for i in 0..200 {
        kv.put(as_token(put(&format!("bulk/{i:04}"), "x"), &root))
            .await
            .unwrap();
    }
    // Purge what the stopped member lacks, auth changes included.
    c.snapshot_and_purge(ELECTION).await;
    c.start_member(lagging).await;
    wait_until("the member installed the snapshot", ELECTION, || {
        let node = c.node(lagging);
        let ok = support::local_count(node, "bulk/") == 200 && node.store().auth().enabled;
        async move { ok }
    })
    .await;
    // Its copy of the auth state checks alice: her token is honoured, her
    // reach is not widened.
    let alice = login(channel(&c, lagging).await, "alice", "alicepw")
        .await
        .unwrap();
    let mut kv_lagging = KvClient::new(channel(&c, lagging).await);
    kv_lagging
        .put(as_token(put("a1", "v"), &alice))
        .await
        .unwrap();
    assert_refused(
        kv_lagging.put(as_token(put("b1", "v"), &alice)).await,
        Code::PermissionDenied,
        "permission denied",
    );

    // Every member restarted: auth is still on, tokens still verify.
    for i in 0..3 {
        c.stop_member(i).await;
    }
    for i in 0..3 {
        c.start_member(i).await;
    }
    c.wait_leader(ELECTION).await;
    for i in 0..3 {
        let mut kv = KvClient::new(channel(&c, i).await);
        assert_refused(
            kv.put(put("a9", "v")).await,
            Code::InvalidArgument,
            "user name is empty",
        );
        wait_until(
            "a write with a token from before the restart",
            ELECTION,
            || {
                let mut kv = kv.clone();
                let alice = alice.clone();
                async move { kv.put(as_token(put("a9", "v"), &alice)).await.is_ok() }
            },
        )
        .await;
    }
    c.shutdown().await;
}

/// A member answers by the auth state of every change acknowledged before
/// the request, not by its own copy that may trail: right after each
/// change made through the leader, a follower agrees at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_answers_by_every_auth_change_acknowledged_before() {
    let c = Cluster::start(3, cheap).await;
    let leader = c.wait_leader(ELECTION).await;
    set_up_users(channel(&c, leader).await).await;
    let root = login(channel(&c, leader).await, "root", "rootpw")
        .await
        .unwrap();
    let alice = login(channel(&c, leader).await, "alice", "alicepw")
        .await
        .unwrap();
    let mut auth = AuthClient::new(channel(&c, leader).await);
    let read_b = || RangeRequest {
        key: b"b".to_vec(),
        ..Default::default()
    };
    for round in 0..5 {
        for f in [(leader + 1) % 3, (leader + 2) % 3] {
            // Granted through the leader: the follower's next read sees it.
            auth.role_grant_permission(as_token(
                AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(Permission {
                        perm_type: PermType::Read as i32,
                        key: b"b".to_vec(),
                        range_end: Vec::new(),
                    }),
                },
                &root,
            ))
            .await
            .unwrap();
            let mut kv = KvClient::new(channel(&c, f).await);
            kv.range(as_token(read_b(), &alice))
                .await
                .unwrap_or_else(|e| panic!("round {round}, member {f}: grant not seen: {e:?}"));
            // Revoked through the leader: the next linearizable read is refused.
            auth.role_revoke_permission(as_token(
                AuthRoleRevokePermissionRequest {
                    role: "r".into(),
                    key: b"b".to_vec(),
                    range_end: Vec::new(),
                },
                &root,
            ))
            .await
            .unwrap();
            assert_refused(
                kv.range(as_token(read_b(), &alice)).await,
                Code::PermissionDenied,
                "permission denied",
            );
        }
    }
    // Auth off through the leader: a follower serves anyone at once.
    auth.auth_disable(as_token(AuthDisableRequest {}, &root))
        .await
        .unwrap();
    let f = (leader + 1) % 3;
    KvClient::new(channel(&c, f).await)
        .put(put("z", "anyone"))
        .await
        .expect("a follower serves anyone once auth off is acknowledged");
    c.shutdown().await;
}

/// `--auth-token jwt,...` as etcd configures it: n1 and n2 sign with the
/// ES256 key, n3 has only the public key. A token from a signing member
/// works on every member, n3 cannot issue any, and a token ends at its
/// `ttl=` and when its user's password changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_tokens_from_the_signing_members_work_on_every_member() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/jwt");
    let (private, public) = (keys.join("ec256.sec1.pem"), keys.join("ec256.pub.pem"));
    let c = Cluster::start(3, |cfg| {
        cheap(cfg);
        cfg.auth_token = if cfg.name == "n3" {
            format!("jwt,sign-method=ES256,pub-key={}", public.display())
        } else {
            format!(
                "jwt,sign-method=ES256,priv-key={},pub-key={},ttl=3s",
                private.display(),
                public.display()
            )
        };
    })
    .await;
    c.wait_leader(ELECTION).await;
    set_up_users(channel(&c, 0).await).await;

    let alice = login(channel(&c, 0).await, "alice", "alicepw")
        .await
        .unwrap();
    assert_eq!(alice.split('.').count(), 3, "a JWT: {alice}");
    let mut kv_n3 = KvClient::new(channel(&c, 2).await);
    kv_n3.put(as_token(put("a1", "v1"), &alice)).await.unwrap();
    assert_refused(
        kv_n3.put(as_token(put("b1", "v"), &alice)).await,
        Code::PermissionDenied,
        "permission denied",
    );
    assert_refused(
        login(channel(&c, 2).await, "alice", "alicepw").await,
        Code::FailedPrecondition,
        "verify-only key",
    );
    assert_refused(
        login(channel(&c, 1).await, "alice", "wrong").await,
        Code::InvalidArgument,
        "authentication failed",
    );

    // The token's `ttl=3s` runs out on every member.
    wait_until("alice's token expires", Duration::from_secs(10), || {
        let mut kv = kv_n3.clone();
        let alice = alice.clone();
        async move {
            kv.put(as_token(put("a2", "v"), &alice))
                .await
                .is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;

    // A new password ends a token issued before.
    let alice = login(channel(&c, 1).await, "alice", "alicepw")
        .await
        .unwrap();
    kv_n3.put(as_token(put("a3", "v"), &alice)).await.unwrap();
    let root = login(channel(&c, 1).await, "root", "rootpw").await.unwrap();
    new_password_ends_token(
        &mut AuthClient::new(channel(&c, 0).await),
        &root,
        &kv_n3,
        &alice,
    )
    .await;
    let alice = login(channel(&c, 0).await, "alice", "new").await.unwrap();
    kv_n3.put(as_token(put("a5", "v"), &alice)).await.unwrap();
}

/// A JWT setting that cannot work fails the start, naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_jwt_setting_fails_the_start() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/jwt");
    let rsa = keys.join("rsa.pem");
    for (value, says) in [
        (
            format!("jwt,sign-method=ES256,priv-key={}", rsa.display()),
            "rsa.pem",
        ),
        (
            "jwt,sign-method=RS256,priv-key=/nonexistent/k.pem".to_string(),
            "/nonexistent/k.pem",
        ),
        (
            "jwt,sign-method=XS256,priv-key=k".to_string(),
            "unknown sign-method",
        ),
        ("bearer".to_string(), "unknown token type"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = support::test_config("n1", dir.path().join("n1"), 0, 0);
        config.auth_token = value.clone();
        let err = match cairn_server::serve::start(config).await {
            Ok(_) => panic!("started with --auth-token {value}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("auth-token") && err.contains(says),
            "{value}: {err}"
        );
    }
}

/// `Authenticate` on a follower right after auth was enabled through the
/// leader sees auth on: it checks after a read barrier, as it checks the
/// password (before, a follower that had not applied the enable yet
/// answered "authentication is not enabled").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_follows_an_auth_enable_acknowledged_elsewhere() {
    let c = Cluster::start(3, cheap).await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    set_up_users(channel(&c, leader).await).await;
    let mut auth_leader = AuthClient::new(channel(&c, leader).await);
    for _ in 0..10 {
        // The login through the follower is what is checked.
        disable_and_enable_auth(&c, follower, &mut auth_leader).await;
    }
}

/// As root (logged in through member `login_via`), turns auth off and on
/// again through `auth`.
async fn disable_and_enable_auth(c: &Cluster, login_via: usize, auth: &mut AuthClient<Channel>) {
    let root = login(channel(c, login_via).await, "root", "rootpw")
        .await
        .expect("auth is on");
    auth.auth_disable(as_token(AuthDisableRequest {}, &root))
        .await
        .unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
}

/// A request with a token sent to a follower right after `auth enable` was
/// acknowledged through the leader: the follower may not have applied the
/// enable yet, and must not send the request on without its user (it was
/// refused where applied, "user name is empty"; seen once in CI, in
/// `jwt_tokens_from_the_signing_members_work_on_every_member`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_write_follows_an_auth_enable_acknowledged_elsewhere() {
    let c = Cluster::start(3, cheap).await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    set_up_users(channel(&c, leader).await).await;
    let mut auth_leader = AuthClient::new(channel(&c, leader).await);
    let mut kv_follower = KvClient::new(channel(&c, follower).await);
    for i in 0..20 {
        disable_and_enable_auth(&c, leader, &mut auth_leader).await;
        let alice = login(channel(&c, leader).await, "alice", "alicepw")
            .await
            .unwrap();
        kv_follower
            .put(as_token(put("a1", &format!("v{i}")), &alice))
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
    }
}
