//! `cairn role add|delete|get|list|grant-permission|revoke-permission`.

use cairn_client::{prefix_range_end, Permission, PermissionType, ResponseHeader};
use serde_json::json;

use super::output::{base64, header_json, print_done, print_json};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Subcommand)]
pub enum RoleCommand {
    /// Add a role.
    Add {
        /// The new role's name.
        role: String,
    },
    /// Delete a role.
    Delete {
        /// The role to delete.
        role: String,
    },
    /// The permissions of a role.
    Get {
        /// The role to look up.
        role: String,
    },
    /// Every role.
    List,
    /// Let a role read and/or write a key or range.
    GrantPermission {
        /// The role to grant to.
        role: String,
        /// What the role may do with the keys.
        #[arg(value_enum, ignore_case = true)]
        perm: PermArg,
        /// Which keys.
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Take back a role's permission on exactly a key or range.
    RevokePermission {
        /// The role to revoke from.
        role: String,
        /// The keys, as granted.
        #[command(flatten)]
        range: RangeArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PermArg {
    Read,
    Write,
    Readwrite,
}

impl From<PermArg> for PermissionType {
    fn from(p: PermArg) -> Self {
        match p {
            PermArg::Read => PermissionType::Read,
            PermArg::Write => PermissionType::Write,
            PermArg::Readwrite => PermissionType::ReadWrite,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    /// The key, or the start of the range.
    key: String,
    /// The end of the range (exclusive).
    range_end: Option<String>,
    /// Every key starting with KEY (every key if KEY is empty).
    #[arg(long, conflicts_with = "from_key")]
    prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    from_key: bool,
}

/// `(key, range_end)` as etcdctl's `permRange` computes them. An empty key
/// is `"\0"`, the first key there is; with `--prefix` or `--from-key` its
/// range is then every key (`"\0"` to `"\0"`, which the server reads as
/// open-ended).
fn perm_range(r: &RangeArgs) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = if r.key.is_empty() {
        vec![0]
    } else {
        r.key.clone().into_bytes()
    };
    let end = match (&r.range_end, r.prefix, r.from_key) {
        (_, true, true) => return Err("--from-key and --prefix are mutually exclusive".into()),
        (Some(_), true, _) => return Err("a range end cannot be given with --prefix".into()),
        (Some(_), _, true) => return Err("a range end cannot be given with --from-key".into()),
        (Some(end), false, false) => end.clone().into_bytes(),
        (None, true, false) if r.key.is_empty() => vec![0],
        (None, true, false) => prefix_range_end(r.key.as_bytes()),
        (None, false, true) => vec![0],
        (None, false, false) => Vec::new(),
    };
    Ok((key, end))
}

/// A permission's keys as etcdctl's `role get` shows them.
fn show_range(p: &Permission) -> String {
    let key = String::from_utf8_lossy(&p.key);
    if p.range_end.is_empty() {
        return key.into_owned();
    }
    let mut out = if p.range_end == [0] {
        format!("[{key}, <open ended>")
    } else {
        format!("[{key}, {})", String::from_utf8_lossy(&p.range_end))
    };
    if !p.key.is_empty() && prefix_range_end(&p.key) == p.range_end {
        out.push_str(&format!(" (prefix {key})"));
    }
    out
}

fn print_role(role: &str, perms: &[Permission]) {
    println!("Role {role}");
    let reads = |p: &&Permission| {
        matches!(
            p.perm_type,
            PermissionType::Read | PermissionType::ReadWrite
        )
    };
    let writes = |p: &&Permission| {
        matches!(
            p.perm_type,
            PermissionType::Write | PermissionType::ReadWrite
        )
    };
    println!("KV Read:");
    for p in perms.iter().filter(reads) {
        println!("\t{}", show_range(p));
    }
    println!("KV Write:");
    for p in perms.iter().filter(writes) {
        println!("\t{}", show_range(p));
    }
}

pub async fn run(g: &GlobalArgs, cmd: RoleCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let json = g.format(OutputFormat::Simple) == OutputFormat::Json;
    let done = |header: ResponseHeader, text: String| print_done(json, &header, &text);
    match cmd {
        RoleCommand::Add { role } => {
            let h = client.role_add(role.as_str()).await?;
            done(h, format!("Role {role} created"))
        }
        RoleCommand::Delete { role } => {
            let h = client.role_delete(role.as_str()).await?;
            done(h, format!("Role {role} deleted"))
        }
        RoleCommand::Get { role } => {
            let r = client.role_get(role.as_str()).await?;
            if json {
                let perms: Vec<_> = r
                    .permissions
                    .iter()
                    .map(|p| {
                        json!({
                            "permType": p.perm_type.to_string(),
                            "key": base64(&p.key),
                            "range_end": base64(&p.range_end),
                        })
                    })
                    .collect();
                return print_json(&json!({ "header": header_json(&r.header), "perm": perms }));
            }
            print_role(&role, &r.permissions);
            Ok(())
        }
        RoleCommand::List => {
            let r = client.role_list().await?;
            if json {
                return print_json(&json!({ "header": header_json(&r.header), "roles": r.roles }));
            }
            for role in &r.roles {
                println!("{role}");
            }
            Ok(())
        }
        RoleCommand::GrantPermission { role, perm, range } => {
            let (key, end) = perm_range(&range).map_err(anyhow::Error::msg)?;
            let h = client
                .role_grant_permission(role.as_str(), perm.into(), key, end)
                .await?;
            done(h, format!("Role {role} updated"))
        }
        RoleCommand::RevokePermission { role, range } => {
            let (key, end) = perm_range(&range).map_err(anyhow::Error::msg)?;
            let shown = String::from_utf8_lossy(&key).into_owned();
            let text = if end.is_empty() {
                format!("Permission of key {shown} is revoked from role {role}")
            } else if end == [0] {
                format!("Permission of range [{shown}, <open ended> is revoked from role {role}")
            } else {
                format!(
                    "Permission of range [{shown}, {}) is revoked from role {role}",
                    String::from_utf8_lossy(&end)
                )
            };
            let h = client
                .role_revoke_permission(role.as_str(), key, end)
                .await?;
            done(h, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> RangeArgs {
        RangeArgs {
            key: key.into(),
            range_end: end.map(Into::into),
            prefix,
            from_key,
        }
    }

    #[test]
    fn ranges_are_computed_as_etcdctl_does() {
        let ok = |r: RangeArgs| perm_range(&r).unwrap();
        assert_eq!(ok(range("a", None, false, false)), (b"a".to_vec(), vec![]));
        assert_eq!(
            ok(range("a", None, true, false)),
            (b"a".to_vec(), b"b".to_vec())
        );
        assert_eq!(ok(range("a", None, false, true)), (b"a".to_vec(), vec![0]));
        assert_eq!(
            ok(range("a", Some("c"), false, false)),
            (b"a".to_vec(), b"c".to_vec())
        );
        // The empty key: "\0", with --prefix / --from-key every key.
        assert_eq!(ok(range("", None, true, false)), (vec![0], vec![0]));
        assert_eq!(ok(range("", None, false, true)), (vec![0], vec![0]));
        assert_eq!(ok(range("", None, false, false)), (vec![0], vec![]));
        assert!(perm_range(&range("a", Some("c"), true, false)).is_err());
        assert!(perm_range(&range("a", Some("c"), false, true)).is_err());
        assert!(perm_range(&range("a", None, true, true)).is_err());
    }

    #[test]
    fn permissions_are_shown_as_etcdctl_shows_them() {
        let p = |key: &[u8], end: &[u8]| Permission {
            perm_type: PermissionType::Read,
            key: key.to_vec(),
            range_end: end.to_vec(),
        };
        assert_eq!(show_range(&p(b"k", b"")), "k");
        assert_eq!(show_range(&p(b"a", b"b")), "[a, b) (prefix a)");
        assert_eq!(show_range(&p(b"a", b"c")), "[a, c)");
        assert_eq!(show_range(&p(b"a", b"\0")), "[a, <open ended>");
    }
}
