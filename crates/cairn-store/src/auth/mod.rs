//! Users, roles and key permissions: etcd's auth store, replicated.
//!
//! The state here is what every member must agree on: who exists, which
//! roles they hold, what each role may touch, whether auth is on, and the
//! key that signs tokens. What is not deterministic stays at the edge:
//! passwords are hashed (salted) there and arrive here as opaque
//! credentials, the token key is drawn there and arrives with
//! [`AuthCommand::Enable`], and tokens are issued and checked there against
//! this state.
//!
//! Every successful change raises [`AuthState::revision`], as etcd's auth
//! revision. Permission checks are pure functions of the state
//! ([`perms`]), run at the edge to refuse early and again when a command
//! is applied ([`Command::As`](crate::Command::As)), so a permission
//! revoked between the two is honoured.

pub mod perms;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::kv::KeyRange;

pub use perms::Access;

/// The user that must exist, holding [`ROOT_ROLE`], before auth is enabled;
/// it cannot be deleted or lose that role while auth is on.
pub const ROOT_USER: &str = "root";
/// The role that may do anything. It exists implicitly: granting it needs
/// no `RoleAdd`.
pub const ROOT_ROLE: &str = "root";
/// Longest user or role name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most permissions one role may hold: each check walks them.
pub const MAX_PERMISSIONS_PER_ROLE: usize = 4096;
/// Most users, and most roles: the whole auth state is written at once when
/// it changes.
pub const MAX_USERS: usize = 10_000;

/// etcd's permission types (`authpb.Permission.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermType {
    Read,
    Write,
    ReadWrite,
}

impl PermType {
    pub fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (PermType::ReadWrite, _)
                | (PermType::Read, Access::Read)
                | (PermType::Write, Access::Write)
        )
    }
}

/// A role may touch `range` (one key, or `[start, end)`; etcd's encoding,
/// so `end == [0]` is "to the end of the keyspace") with `perm_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub perm_type: PermType,
    pub range: KeyRange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Role {
    /// Sorted by range start, at most one per range (granting the same
    /// range again replaces its type, as etcd does).
    pub permissions: Vec<Permission>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct User {
    /// The salted password hash the edge made (opaque here); `None` for a
    /// user created with `no_password`, who cannot authenticate with one.
    #[serde(with = "serde_bytes")]
    pub credential: Option<Vec<u8>>,
    pub roles: BTreeSet<String>,
    /// The auth revision at which the credential was last set: a token
    /// names it, so changing the password (or deleting and re-adding the
    /// user) ends every token issued before.
    pub credential_revision: u64,
}

/// The replicated auth state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuthState {
    pub enabled: bool,
    /// Raised by every change; etcd's auth revision.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// Signs tokens; drawn at the edge when auth is enabled, so enabling
    /// again ends every token issued before.
    #[serde(with = "serde_bytes")]
    pub token_key: Vec<u8>,
}

/// A change to the auth state (etcd's `Auth` service writes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable {
        #[serde(with = "serde_bytes")]
        token_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        #[serde(with = "serde_bytes")]
        credential: Option<Vec<u8>>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        #[serde(with = "serde_bytes")]
        credential: Option<Vec<u8>>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        permission: Permission,
    },
    RoleRevokePermission {
        role: String,
        range: KeyRange,
    },
}

// Debug never shows credentials or the token key: commands and states are
// logged.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .field("roles", &self.roles)
            .field("credential_revision", &self.credential_revision)
            .finish()
    }
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("enabled", &self.enabled)
            .field("revision", &self.revision)
            .field("users", &self.users)
            .field("roles", &self.roles)
            .field("token_key", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for AuthCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthCommand::Enable { .. } => write!(f, "Enable"),
            AuthCommand::Disable => write!(f, "Disable"),
            AuthCommand::UserAdd { name, credential } => {
                write!(f, "UserAdd({name:?}, password: {})", credential.is_some())
            }
            AuthCommand::UserDelete { name } => write!(f, "UserDelete({name:?})"),
            AuthCommand::UserChangePassword { name, .. } => {
                write!(f, "UserChangePassword({name:?})")
            }
            AuthCommand::UserGrantRole { user, role } => {
                write!(f, "UserGrantRole({user:?}, {role:?})")
            }
            AuthCommand::UserRevokeRole { user, role } => {
                write!(f, "UserRevokeRole({user:?}, {role:?})")
            }
            AuthCommand::RoleAdd { name } => write!(f, "RoleAdd({name:?})"),
            AuthCommand::RoleDelete { name } => write!(f, "RoleDelete({name:?})"),
            AuthCommand::RoleGrantPermission { role, permission } => {
                write!(f, "RoleGrantPermission({role:?}, {permission:?})")
            }
            AuthCommand::RoleRevokePermission { role, range } => {
                write!(f, "RoleRevokePermission({role:?}, {range:?})")
            }
        }
    }
}

impl AuthState {
    /// A user holding the root role: may do anything.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.contains(ROOT_ROLE))
    }

    /// Apply `cmd`; on success the auth revision has moved on. A refused
    /// command changes nothing.
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<(), StoreError> {
        match cmd {
            AuthCommand::Enable { token_key } => {
                if self.enabled {
                    return Ok(());
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(StoreError::RootUserNotExist)?;
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(StoreError::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_key = token_key.clone();
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
            }
            AuthCommand::UserAdd { name, credential } => {
                check_name(name, StoreError::UserEmpty)?;
                if self.users.contains_key(name) {
                    return Err(StoreError::UserAlreadyExist);
                }
                if self.users.len() >= MAX_USERS {
                    return Err(StoreError::AuthLimit("users".into()));
                }
                let user = User {
                    credential: credential.clone(),
                    roles: BTreeSet::new(),
                    credential_revision: self.revision + 1,
                };
                self.users.insert(name.clone(), user);
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(StoreError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(StoreError::UserNotFound)?;
            }
            AuthCommand::UserChangePassword { name, credential } => {
                let next = self.revision + 1;
                let user = self.users.get_mut(name).ok_or(StoreError::UserNotFound)?;
                user.credential = credential.clone();
                user.credential_revision = next;
            }
            AuthCommand::UserGrantRole { user, role } => {
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(StoreError::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(StoreError::UserNotFound)?;
                if !u.roles.insert(role.clone()) {
                    // Granted already: etcd answers success and changes
                    // nothing.
                    return Ok(());
                }
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(StoreError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(StoreError::UserNotFound)?;
                if !u.roles.remove(role) {
                    return Err(StoreError::RoleNotGranted);
                }
            }
            AuthCommand::RoleAdd { name } => {
                check_name(name, StoreError::RoleEmpty)?;
                if self.roles.contains_key(name) {
                    return Err(StoreError::RoleAlreadyExist);
                }
                if self.roles.len() >= MAX_USERS {
                    return Err(StoreError::AuthLimit("roles".into()));
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(StoreError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(StoreError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthCommand::RoleGrantPermission { role, permission } => {
                // An empty start with an end is "from the first key"
                // (etcdctl's `--prefix ''`); an empty single key is nothing.
                if permission.range.start.is_empty() && permission.range.end.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
                let r = self.roles.get_mut(role).ok_or(StoreError::RoleNotFound)?;
                match r
                    .permissions
                    .binary_search_by(|p| p.range.cmp_bounds(&permission.range))
                {
                    Ok(i) => r.permissions[i].perm_type = permission.perm_type,
                    Err(i) => {
                        if r.permissions.len() >= MAX_PERMISSIONS_PER_ROLE {
                            return Err(StoreError::AuthLimit("permissions of a role".into()));
                        }
                        r.permissions.insert(i, permission.clone());
                    }
                }
            }
            AuthCommand::RoleRevokePermission { role, range } => {
                let r = self.roles.get_mut(role).ok_or(StoreError::RoleNotFound)?;
                let i = r
                    .permissions
                    .binary_search_by(|p| p.range.cmp_bounds(range))
                    .map_err(|_| StoreError::PermissionNotGranted)?;
                r.permissions.remove(i);
            }
        }
        self.revision += 1;
        Ok(())
    }
}

fn check_name(name: &str, empty: StoreError) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(StoreError::AuthLimit("name length".into()));
    }
    Ok(())
}

impl KeyRange {
    /// Orders ranges by start, then end: how a role keeps its permissions.
    fn cmp_bounds(&self, other: &KeyRange) -> std::cmp::Ordering {
        (&self.start, &self.end).cmp(&(&other.start, &other.end))
    }
}
