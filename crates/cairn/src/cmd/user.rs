//! `cairn user add|delete|get|list|passwd|grant-role|revoke-role`.

use cairn_client::{ResponseHeader, UserAddOptions};
use serde_json::json;

use super::output::{header_json, print_done, print_json};
use super::{redacted, GlobalArgs, OutputFormat, Redacted};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// `name:password`, or the name alone with `--new-user-password`
        /// or `--no-password` (there is no prompt).
        #[arg(value_parser = redacted)]
        user: Redacted,
        /// A user that cannot log in with a password (only with a TLS
        /// client certificate naming it).
        #[arg(long)]
        no_password: bool,
        /// The password, the name then taken whole.
        #[arg(long, value_parser = redacted, conflicts_with = "no_password")]
        new_user_password: Option<Redacted>,
    },
    /// Delete a user.
    Delete {
        /// The user to delete.
        name: String,
    },
    /// The roles of a user.
    Get {
        /// The user to look up.
        name: String,
    },
    /// Every user.
    List,
    /// Set a user's password.
    Passwd {
        /// The user whose password changes.
        name: String,
        /// The new password (its tokens stop working).
        #[arg(value_parser = redacted)]
        password: Redacted,
    },
    /// Give a user a role.
    GrantRole {
        /// The user to give the role to.
        user: String,
        /// The role to give.
        role: String,
    },
    /// Take a role from a user.
    RevokeRole {
        /// The user to take the role from.
        user: String,
        /// The role to take.
        role: String,
    },
}

/// The name and password of `user add`, as etcdctl reads them.
fn new_user(
    user: &str,
    no_password: bool,
    password: Option<&str>,
) -> Result<(String, String), String> {
    if no_password {
        return Ok((user.to_string(), String::new()));
    }
    if let Some(p) = password {
        return Ok((user.to_string(), p.to_string()));
    }
    match user.split_once(':') {
        Some((name, p)) => Ok((name.to_string(), p.to_string())),
        None => Err(format!(
            "user {user} has no password: give {user}:PASSWORD, --new-user-password \
             or --no-password (cairn does not prompt)"
        )),
    }
}

pub async fn run(g: &GlobalArgs, cmd: UserCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let json = g.format(OutputFormat::Simple) == OutputFormat::Json;
    let done = |header: ResponseHeader, text: String| print_done(json, &header, &text);
    match cmd {
        UserCommand::Add {
            user,
            no_password,
            new_user_password,
        } => {
            let password = new_user_password.as_ref().map(|p| p.0.as_str());
            let (name, password) =
                new_user(&user.0, no_password, password).map_err(anyhow::Error::msg)?;
            let options = UserAddOptions { no_password };
            let h = client.user_add(name.as_str(), password, options).await?;
            done(h, format!("User {name} created"))
        }
        UserCommand::Delete { name } => {
            let h = client.user_delete(name.as_str()).await?;
            done(h, format!("User {name} deleted"))
        }
        UserCommand::Get { name } => {
            let r = client.user_get(name.as_str()).await?;
            if json {
                return print_json(&json!({ "header": header_json(&r.header), "roles": r.roles }));
            }
            println!("User: {name}");
            println!(
                "Roles:{}",
                r.roles.iter().map(|r| format!(" {r}")).collect::<String>()
            );
            Ok(())
        }
        UserCommand::List => {
            let r = client.user_list().await?;
            if json {
                return print_json(&json!({ "header": header_json(&r.header), "users": r.users }));
            }
            for u in &r.users {
                println!("{u}");
            }
            Ok(())
        }
        UserCommand::Passwd { name, password } => {
            let h = client.user_change_password(name, password.0).await?;
            done(h, "Password updated".into())
        }
        UserCommand::GrantRole { user, role } => {
            let h = client.user_grant_role(user.as_str(), role.as_str()).await?;
            done(h, format!("Role {role} is granted to user {user}"))
        }
        UserCommand::RevokeRole { user, role } => {
            let h = client
                .user_revoke_role(user.as_str(), role.as_str())
                .await?;
            done(h, format!("Role {role} is revoked from user {user}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_users_are_read_as_etcdctl_reads_them() {
        let pair = |u: &str, p: &str| Ok((u.to_string(), p.to_string()));
        assert_eq!(new_user("alice:pw", false, None), pair("alice", "pw"));
        assert_eq!(new_user("alice:p:w", false, None), pair("alice", "p:w"));
        assert_eq!(new_user("a:b", false, Some("pw")), pair("a:b", "pw"));
        assert_eq!(new_user("bot", true, None), pair("bot", ""));
        let err = new_user("alice", false, None).unwrap_err();
        assert!(err.contains("no password"), "{err}");
    }
}
