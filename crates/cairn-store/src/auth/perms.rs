//! Whether a user may do something: key ranges covered by the permissions
//! of the user's roles, and what each command needs.
//!
//! As in etcd, a request on a range is permitted when the union of the
//! ranges the user's roles grant (for the access wanted) covers it, even if
//! no single permission does.

use super::{AuthState, ROOT_ROLE};
use crate::command::{Command, PutRequest, RequestOp, TxnRequest};
use crate::error::StoreError;
use crate::kv::KeyRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// `[start, end)` with `None` for "to the end of the keyspace".
type Interval<'a> = (&'a [u8], Option<Vec<u8>>);

/// A range as a half-open interval: one key `k` is `[k, k\0)`.
fn interval(range: &KeyRange) -> Interval<'_> {
    let end = if range.is_single() {
        let mut end = range.start.clone();
        end.push(0);
        Some(end)
    } else {
        range.upper().map(<[u8]>::to_vec)
    };
    (&range.start, end)
}

impl AuthState {
    /// Whether `user` may read or write every key of `range`. An unknown
    /// user may do nothing; an admin anything.
    pub fn permits(&self, user: &str, range: &KeyRange, access: Access) -> bool {
        if range.is_single() {
            // One key is covered when some grant holds it: no key lies
            // between `k` and `k\0` for a union to fill.
            return self.permits_key(user, &range.start, access);
        }
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.roles.contains(ROOT_ROLE) {
            return true;
        }
        let mut granted: Vec<Interval<'_>> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.permissions)
            .filter(|p| p.perm_type.allows(access))
            .map(|p| interval(&p.range))
            .collect();
        granted.sort_by(|a, b| a.0.cmp(b.0));
        let (start, end) = interval(range);
        covers(&granted, start, end.as_deref())
    }

    fn require(&self, user: &str, range: &KeyRange, access: Access) -> Result<(), StoreError> {
        if self.permits(user, range, access) {
            Ok(())
        } else {
            Err(StoreError::PermissionDenied)
        }
    }

    pub fn require_admin(&self, user: &str) -> Result<(), StoreError> {
        if self.is_admin(user) {
            Ok(())
        } else {
            Err(StoreError::PermissionDenied)
        }
    }

    /// Whether `user` may have `cmd` applied. `lease_keys` names the keys
    /// attached to a lease: revoking it deletes them, which needs write
    /// permission on each (as in etcd).
    pub fn check_command(
        &self,
        user: &str,
        cmd: &Command,
        lease_keys: impl Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if !self.users.contains_key(user) {
            // Deleted since its token was issued.
            return Err(StoreError::PermissionDenied);
        }
        if self.is_admin(user) {
            return Ok(());
        }
        match cmd {
            Command::Put(p) => self.check_put(user, p),
            Command::DeleteRange(d) => {
                self.require(user, &d.range, Access::Write)?;
                if d.prev_kv {
                    self.require(user, &d.range, Access::Read)?;
                }
                Ok(())
            }
            Command::Txn(t) => self.check_txn(user, t),
            // Any authenticated user, as in etcd.
            Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseKeepAlive { .. } => Ok(()),
            Command::LeaseRevoke { id } => {
                if lease_keys(*id)
                    .iter()
                    .all(|k| self.permits_key(user, k, Access::Write))
                {
                    Ok(())
                } else {
                    Err(StoreError::PermissionDenied)
                }
            }
            // Registry records and claims live under the reserved prefix:
            // using them takes read and write permission over all of it.
            Command::Registry(_) | Command::Claims(_) => {
                let reserved = KeyRange::prefix(crate::registry::RESERVED_PREFIX);
                self.require(user, &reserved, Access::Read)?;
                self.require(user, &reserved, Access::Write)
            }
            // Cluster-wide operations.
            Command::Alarm { .. } | Command::Auth(_) => Err(StoreError::PermissionDenied),
            // Never sent on a user's behalf.
            Command::Tick { .. } | Command::As { .. } => Err(StoreError::PermissionDenied),
        }
    }

    fn check_put(&self, user: &str, p: &PutRequest) -> Result<(), StoreError> {
        let permits = |access| self.permits_key(user, &p.key, access);
        if permits(Access::Write) && (!p.prev_kv || permits(Access::Read)) {
            Ok(())
        } else {
            Err(StoreError::PermissionDenied)
        }
    }

    /// [`AuthState::permits`] for one key, without building a range.
    pub fn permits_key(&self, user: &str, key: &[u8], access: Access) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        u.roles.contains(ROOT_ROLE)
            || u.roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flat_map(|r| &r.permissions)
                .any(|p| p.perm_type.allows(access) && p.range.contains(key))
    }

    /// Every compare and read of a txn needs read permission, every write
    /// write permission, in both branches (which runs is not known until
    /// the compares are decided).
    fn check_txn(&self, user: &str, t: &TxnRequest) -> Result<(), StoreError> {
        for c in &t.compare {
            self.require(user, &c.range, Access::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => self.require(user, &r.range, Access::Read)?,
                RequestOp::Put(p) => self.check_put(user, p)?,
                RequestOp::DeleteRange(d) => {
                    self.require(user, &d.range, Access::Write)?;
                    if d.prev_kv {
                        self.require(user, &d.range, Access::Read)?;
                    }
                }
                RequestOp::Txn(nested) => self.check_txn(user, nested)?,
            }
        }
        Ok(())
    }
}

/// Whether the intervals in `granted` (sorted by start) cover
/// `[start, end)`.
fn covers(granted: &[Interval<'_>], start: &[u8], end: Option<&[u8]>) -> bool {
    // `reached`: everything from `start` up to it is covered so far.
    let mut reached: Vec<u8> = start.to_vec();
    for (g_start, g_end) in granted {
        if *g_start > reached.as_slice() {
            // A gap before this grant (and every later one).
            break;
        }
        match g_end {
            None => return true,
            Some(g_end) if g_end.as_slice() > reached.as_slice() => reached = g_end.clone(),
            Some(_) => {}
        }
        if end.is_some_and(|e| reached.as_slice() >= e) {
            return true;
        }
    }
    end.is_some_and(|e| reached.as_slice() >= e)
}
