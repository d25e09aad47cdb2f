use super::*;
use crate::command::*;
use crate::store::Store;

fn add_user(name: &str) -> AuthCommand {
    AuthCommand::UserAdd {
        name: name.into(),
        credential: Some(b"hash".to_vec()),
    }
}

fn grant_role(user: &str, role: &str) -> AuthCommand {
    AuthCommand::UserGrantRole {
        user: user.into(),
        role: role.into(),
    }
}

fn grant(role: &str, perm_type: PermType, start: &str, end: &[u8]) -> AuthCommand {
    AuthCommand::RoleGrantPermission {
        role: role.into(),
        permission: Permission {
            perm_type,
            range: KeyRange::new(start, end),
        },
    }
}

fn enable() -> AuthCommand {
    AuthCommand::Enable {
        token_key: vec![7; 32],
    }
}

/// Root (admin) plus `alice` holding role `r`.
fn alice_set_up() -> [AuthCommand; 5] {
    [
        add_user(ROOT_USER),
        grant_role(ROOT_USER, ROOT_ROLE),
        add_user("alice"),
        AuthCommand::RoleAdd { name: "r".into() },
        grant_role("alice", "r"),
    ]
}

/// [`alice_set_up`], then `grants`; auth not yet on.
fn with_alice(grants: &[AuthCommand]) -> AuthState {
    let mut auth = AuthState::default();
    for c in alice_set_up().iter().chain(grants) {
        auth.apply(c).unwrap();
    }
    auth
}

#[test]
fn enabling_needs_a_root_user_with_the_root_role() {
    let mut auth = AuthState::default();
    assert_eq!(auth.apply(&enable()), Err(StoreError::RootUserNotExist));
    auth.apply(&add_user(ROOT_USER)).unwrap();
    assert_eq!(auth.apply(&enable()), Err(StoreError::RootRoleNotExist));
    // The root role exists without being added.
    auth.apply(&grant_role(ROOT_USER, ROOT_ROLE)).unwrap();
    let before = auth.revision;
    auth.apply(&enable()).unwrap();
    assert!(auth.enabled);
    assert_eq!(auth.revision, before + 1);
    assert_eq!(auth.token_key, vec![7; 32]);
}

#[test]
fn management_errors_follow_etcd_and_change_nothing() {
    let mut auth = with_alice(&[]);
    auth.apply(&enable()).unwrap();
    let cases: Vec<(AuthCommand, StoreError)> = vec![
        (add_user(""), StoreError::UserEmpty),
        (add_user("alice"), StoreError::UserAlreadyExist),
        (
            AuthCommand::UserDelete { name: "bob".into() },
            StoreError::UserNotFound,
        ),
        (
            AuthCommand::UserDelete {
                name: ROOT_USER.into(),
            },
            StoreError::InvalidAuthMgmt,
        ),
        (
            AuthCommand::UserRevokeRole {
                user: ROOT_USER.into(),
                role: ROOT_ROLE.into(),
            },
            StoreError::InvalidAuthMgmt,
        ),
        (
            AuthCommand::UserRevokeRole {
                user: "alice".into(),
                role: "other".into(),
            },
            StoreError::RoleNotGranted,
        ),
        (grant_role("alice", "nope"), StoreError::RoleNotFound),
        (grant_role("bob", "r"), StoreError::UserNotFound),
        (
            AuthCommand::RoleAdd { name: "".into() },
            StoreError::RoleEmpty,
        ),
        (
            AuthCommand::RoleAdd { name: "r".into() },
            StoreError::RoleAlreadyExist,
        ),
        (
            AuthCommand::RoleDelete {
                name: ROOT_ROLE.into(),
            },
            StoreError::InvalidAuthMgmt,
        ),
        (
            AuthCommand::RoleDelete { name: "x".into() },
            StoreError::RoleNotFound,
        ),
        (
            grant("x", PermType::Read, "a", b""),
            StoreError::RoleNotFound,
        ),
        (grant("r", PermType::Read, "", b""), StoreError::EmptyKey),
        (
            AuthCommand::RoleRevokePermission {
                role: "r".into(),
                range: KeyRange::single("a"),
            },
            StoreError::PermissionNotGranted,
        ),
        (
            add_user(&"u".repeat(MAX_NAME_BYTES + 1)),
            StoreError::AuthLimit("name length".into()),
        ),
    ];
    for (cmd, want) in cases {
        let before = auth.clone();
        assert_eq!(auth.apply(&cmd), Err(want), "{cmd:?}");
        assert_eq!(auth, before, "{cmd:?} changed the state");
    }
}

#[test]
fn deleting_a_role_takes_it_from_its_users_and_regrant_replaces_the_type() {
    let mut auth = with_alice(&[grant("r", PermType::Read, "a", b"")]);
    auth.apply(&grant("r", PermType::ReadWrite, "a", b""))
        .unwrap();
    assert_eq!(auth.roles["r"].permissions.len(), 1);
    assert_eq!(
        auth.roles["r"].permissions[0].perm_type,
        PermType::ReadWrite
    );
    // Granted twice: success, no change.
    let rev = auth.revision;
    auth.apply(&grant_role("alice", "r")).unwrap();
    assert_eq!(auth.revision, rev);
    auth.apply(&AuthCommand::RoleDelete { name: "r".into() })
        .unwrap();
    assert!(auth.users["alice"].roles.is_empty());
}

#[test]
fn a_password_change_moves_the_credential_revision() {
    let mut auth = with_alice(&[]);
    let before = auth.users["alice"].credential_revision;
    auth.apply(&AuthCommand::UserChangePassword {
        name: "alice".into(),
        credential: Some(b"new".to_vec()),
    })
    .unwrap();
    assert!(auth.users["alice"].credential_revision > before);
    assert_eq!(auth.users["alice"].credential.as_deref(), Some(&b"new"[..]));
}

/// (grants of role `r`, request range, access, permitted?)
#[test]
fn ranges_are_permitted_when_the_union_of_grants_covers_them() {
    use Access::{Read, Write};
    let ab = || grant("r", PermType::ReadWrite, "a", b"b");
    let bc = || grant("r", PermType::Read, "b", b"c");
    let from_m = || grant("r", PermType::Write, "m", &[0]);
    let key_x = || grant("r", PermType::Read, "x", b"");
    let everything = || grant("r", PermType::Read, "", &[0]);
    let cases: Vec<(Vec<AuthCommand>, KeyRange, Access, bool)> = vec![
        (vec![ab()], KeyRange::single("a"), Read, true),
        (vec![ab()], KeyRange::single("azz"), Write, true),
        (vec![ab()], KeyRange::single("b"), Read, false),
        (vec![ab()], KeyRange::new("a", "b"), Read, true),
        (vec![ab()], KeyRange::new("a", "b\0"), Read, false),
        // Two grants meet at "b": together they cover [a, c) for reads.
        (vec![ab(), bc()], KeyRange::new("a", "c"), Read, true),
        (vec![ab(), bc()], KeyRange::new("a", "c"), Write, false),
        (vec![ab(), bc()], KeyRange::new("a", "c\0"), Read, false),
        // Open-ended grants and requests.
        (vec![from_m()], KeyRange::new("n", vec![0]), Write, true),
        (vec![from_m()], KeyRange::new("l", vec![0]), Write, false),
        (vec![from_m()], KeyRange::new("n", vec![0]), Read, false),
        (vec![ab()], KeyRange::new("a", vec![0]), Read, false),
        // A single-key grant covers that key only.
        (vec![key_x()], KeyRange::single("x"), Read, true),
        (vec![key_x()], KeyRange::single("xy"), Read, false),
        (vec![key_x()], KeyRange::prefix("x"), Read, false),
        // etcdctl's `--prefix ''`: every key.
        (vec![everything()], KeyRange::prefix(""), Read, true),
        (
            vec![everything()],
            KeyRange::single("\0cairn/x"),
            Read,
            true,
        ),
        (vec![], KeyRange::single("a"), Read, false),
    ];
    for (grants, range, access, want) in cases {
        let auth = with_alice(&grants);
        assert_eq!(
            auth.permits("alice", &range, access),
            want,
            "{grants:?} {range:?} {access:?}"
        );
        assert!(
            auth.permits(ROOT_USER, &range, access),
            "root may do anything"
        );
        assert!(!auth.permits("nobody", &range, access));
    }
}

fn as_user(user: &str, command: Command) -> Command {
    Command::As {
        user: user.into(),
        command: Box::new(command),
    }
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

/// A store with `alice` granted read-write on `[a, b)`, auth on.
fn store_with_auth() -> Store {
    let mut store = Store::new();
    let then = [grant("r", PermType::ReadWrite, "a", b"b"), enable()];
    for c in alice_set_up().into_iter().chain(then) {
        let applied = store.apply(&Command::Auth(c));
        assert!(matches!(applied.result, CommandResult::Auth { .. }));
    }
    store
}

fn error_of(store: &mut Store, cmd: &Command) -> Option<StoreError> {
    match store.apply(cmd).result {
        CommandResult::Error(e) => Some(e),
        _ => None,
    }
}

#[test]
fn with_auth_on_commands_apply_only_for_a_user_who_may() {
    let mut store = store_with_auth();
    assert!(store.take_changes().auth);
    assert_eq!(error_of(&mut store, &as_user("alice", put("a1"))), None);
    let rev = store.revision();
    let cases: Vec<(Command, StoreError)> = vec![
        (as_user("alice", put("b1")), StoreError::PermissionDenied),
        (as_user("mallory", put("a2")), StoreError::PermissionDenied),
        // Without a user: an edge that had not seen auth go on.
        (put("a2"), StoreError::UserEmpty),
        (Command::Auth(add_user("eve")), StoreError::UserEmpty),
        (
            as_user("alice", Command::Auth(add_user("eve"))),
            StoreError::PermissionDenied,
        ),
        (
            as_user(
                "alice",
                Command::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![RequestOp::Put(PutRequest {
                        key: b"a3".to_vec(),
                        ..Default::default()
                    })],
                    // The branch not taken is checked too.
                    failure: vec![RequestOp::Range(RangeRequest {
                        range: KeyRange::single("z"),
                        ..Default::default()
                    })],
                }),
            ),
            StoreError::PermissionDenied,
        ),
        (
            as_user("alice", as_user("root", put("z"))),
            StoreError::PermissionDenied,
        ),
        (
            as_user(
                "alice",
                Command::Tick {
                    now_ms: 1,
                    max_expiries: 1,
                },
            ),
            StoreError::PermissionDenied,
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(error_of(&mut store, &cmd), Some(want), "{cmd:?}");
        assert_eq!(store.revision(), rev, "{cmd:?} wrote");
    }
    // Root may, and may manage users.
    assert_eq!(error_of(&mut store, &as_user("root", put("z"))), None);
    assert_eq!(
        error_of(&mut store, &as_user("root", Command::Auth(add_user("eve")))),
        None
    );
    assert!(store.auth().users.contains_key("eve"));
}

#[test]
fn a_permission_revoked_after_the_edge_checked_is_honoured_at_apply() {
    let mut store = store_with_auth();
    let proposed = as_user("alice", put("a1"));
    // The edge checked against this state and proposed; a revoke lands first.
    assert!(store
        .auth()
        .permits("alice", &KeyRange::single("a1"), Access::Write));
    store.apply(&as_user(
        "root",
        Command::Auth(AuthCommand::RoleRevokePermission {
            role: "r".into(),
            range: KeyRange::new("a", "b"),
        }),
    ));
    assert_eq!(
        error_of(&mut store, &proposed),
        Some(StoreError::PermissionDenied)
    );
}

#[test]
fn revoking_a_lease_needs_write_permission_on_its_keys() {
    let mut store = store_with_auth();
    let grant_lease = as_user(
        "alice",
        Command::LeaseGrant {
            id: 5,
            ttl_secs: 60,
            now_ms: 0,
        },
    );
    assert_eq!(error_of(&mut store, &grant_lease), None);
    let put_on_lease = |key: &str| {
        Command::Put(PutRequest {
            key: key.into(),
            lease: 5,
            ..Default::default()
        })
    };
    assert_eq!(
        error_of(&mut store, &as_user("alice", put_on_lease("a1"))),
        None
    );
    assert_eq!(
        error_of(&mut store, &as_user("root", put_on_lease("z1"))),
        None
    );
    let revoke = |user: &str| as_user(user, Command::LeaseRevoke { id: 5 });
    assert_eq!(
        error_of(&mut store, &revoke("alice")),
        Some(StoreError::PermissionDenied)
    );
    assert_eq!(error_of(&mut store, &revoke("root")), None);
}

#[test]
fn with_auth_off_as_applies_its_command_and_the_node_s_own_commands_pass() {
    let mut store = Store::new();
    assert_eq!(error_of(&mut store, &as_user("anyone", put("k"))), None);
    let mut on = store_with_auth();
    let tick = Command::Tick {
        now_ms: 10,
        max_expiries: 10,
    };
    assert_eq!(error_of(&mut on, &tick), None);
    assert_eq!(error_of(&mut on, &as_user("root", put("k"))), None);
    assert_eq!(error_of(&mut on, &Command::Compact { revision: 1 }), None);
}

#[test]
fn the_auth_state_travels_in_snapshots() {
    let store = store_with_auth();
    let snap = store.snapshot().unwrap();
    let back = Store::from_snapshot(snap.clone());
    assert_eq!(back.auth(), store.auth());
    let bytes = postcard::to_allocvec(&snap).unwrap();
    let decoded: crate::StoreSnapshot = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.auth, *store.auth());
}

#[test]
fn debug_output_never_shows_credentials_or_the_token_key() {
    let mut auth = with_alice(&[]);
    auth.apply(&enable()).unwrap();
    let secret = AuthCommand::UserAdd {
        name: "bob".into(),
        credential: Some(b"SECRET-HASH".to_vec()),
    };
    for text in [
        format!("{auth:?}"),
        format!("{secret:?}"),
        format!("{:?}", enable()),
        format!("{:?}", Command::Auth(secret.clone())),
    ] {
        assert!(
            !text.contains("SECRET") && !text.contains("104, 97, 115, 104"),
            "{text}"
        );
        assert!(!text.contains("7, 7, 7"), "token key in {text}");
    }
}
