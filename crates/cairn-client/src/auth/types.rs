//! Plain Rust types of the Auth service (no prost types).

use cairn_proto::authpb;
use cairn_proto::etcdserverpb as pb;

use crate::types::ResponseHeader;

/// What a permission allows on its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermissionType {
    Read,
    Write,
    ReadWrite,
    /// A value this client does not know.
    Other(i32),
}

impl PermissionType {
    pub(crate) fn from_wire(v: i32) -> Self {
        match authpb::permission::Type::try_from(v) {
            Ok(authpb::permission::Type::Read) => PermissionType::Read,
            Ok(authpb::permission::Type::Write) => PermissionType::Write,
            Ok(authpb::permission::Type::Readwrite) => PermissionType::ReadWrite,
            Err(_) => PermissionType::Other(v),
        }
    }

    pub(crate) fn to_wire(self) -> i32 {
        match self {
            PermissionType::Read => authpb::permission::Type::Read as i32,
            PermissionType::Write => authpb::permission::Type::Write as i32,
            PermissionType::ReadWrite => authpb::permission::Type::Readwrite as i32,
            PermissionType::Other(v) => v,
        }
    }
}

impl std::fmt::Display for PermissionType {
    /// As etcdctl prints them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PermissionType::Read => f.write_str("READ"),
            PermissionType::Write => f.write_str("WRITE"),
            PermissionType::ReadWrite => f.write_str("READWRITE"),
            PermissionType::Other(v) => write!(f, "PERMISSION({v})"),
        }
    }
}

/// Access to a key, or to the keys `[key, range_end)`, as etcd expresses
/// it: an empty `range_end` is the single key; `range_end` `"\0"` is every
/// key from `key` on (and key `"\0"` with it, every key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    /// Reading, writing or both.
    pub perm_type: PermissionType,
    /// The key, or the first key of the range.
    pub key: Vec<u8>,
    /// The end of the range (exclusive); empty for the key alone.
    pub range_end: Vec<u8>,
}

impl From<authpb::Permission> for Permission {
    fn from(p: authpb::Permission) -> Self {
        Permission {
            perm_type: PermissionType::from_wire(p.perm_type),
            key: p.key,
            range_end: p.range_end,
        }
    }
}

/// Whether authentication is on, and the auth state's revision (raised by
/// every user, role or permission change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthStatusResponse {
    pub header: ResponseHeader,
    /// Whether calls must name their user.
    pub enabled: bool,
    /// Tells whether the auth state changed between two looks.
    pub auth_revision: u64,
}

impl From<pb::AuthStatusResponse> for AuthStatusResponse {
    fn from(r: pb::AuthStatusResponse) -> Self {
        AuthStatusResponse {
            header: r.header.into(),
            enabled: r.enabled,
            auth_revision: r.auth_revision,
        }
    }
}

/// Options of [`Client::user_add`](crate::Client::user_add).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserAddOptions {
    /// A user without a password: it cannot log in with `Authenticate`
    /// (only with a TLS client certificate naming it). The password given
    /// is then ignored.
    pub no_password: bool,
}

/// The roles a user holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserGetResponse {
    pub header: ResponseHeader,
    /// The roles granted to the user, by name.
    pub roles: Vec<String>,
}

/// Every user's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserListResponse {
    pub header: ResponseHeader,
    /// Every user's name, in order.
    pub users: Vec<String>,
}

/// The permissions a role grants (none listed for `root`, which may do
/// anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleGetResponse {
    pub header: ResponseHeader,
    /// What the role's holders may read and write.
    pub permissions: Vec<Permission>,
}

/// Every role's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleListResponse {
    pub header: ResponseHeader,
    /// Every role's name, in order (`root` only once added).
    pub roles: Vec<String>,
}
