//! `cairn snapshot save FILE` and `cairn snapshot restore FILE ...`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cairn_client::SnapshotVerifier;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Stream a backup from a member into FILE (written atomically, its
    /// checksum verified).
    Save { file: PathBuf },
    /// Create a new member's data dir from a backup (offline).
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    pub file: PathBuf,
    /// Data dir to create; must not hold data yet.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This member's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// `name=peer_url,...` of the restored cluster's members (default: just
    /// this one).
    #[arg(long, default_value = "")]
    pub initial_cluster: String,
    /// This member's peer URL.
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
}

pub async fn run(g: &GlobalArgs, cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save { file } => save(g, &file).await,
        SnapshotCommand::Restore(args) => restore(args),
    }
}

/// `FILE.part` beside FILE.
fn part_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

async fn save(g: &GlobalArgs, file: &Path) -> anyhow::Result<()> {
    if file.file_name().is_none() {
        anyhow::bail!("{} is not a file name", file.display());
    }
    let client = g.client().await?;
    let tmp = part_path(file);
    let result = write_snapshot(&client, &tmp).await;
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&tmp, file)
        .await
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable (best effort).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    println!("Snapshot saved at {} ({size} bytes)", file.display());
    Ok(())
}

/// Stream the snapshot into `tmp`, verify it, fsync; returns its size.
async fn write_snapshot(client: &cairn_client::Client, tmp: &Path) -> anyhow::Result<u64> {
    let mut stream = client.snapshot().await?;
    let mut out = tokio::fs::File::create(tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut verifier = SnapshotVerifier::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        verifier.update(&chunk);
        out.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    out.flush().await?;
    out.sync_all().await?;
    let size = verifier.total();
    verifier.finish()?;
    Ok(size)
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let mut config = cairn_server::ServerConfig {
        name: args.name,
        data_dir: args.data_dir,
        initial_cluster: args.initial_cluster,
        advertise_peer: args.initial_advertise_peer_urls,
        ..cairn_server::ServerConfig::default()
    };
    if let Some(token) = args.initial_cluster_token {
        config.initial_cluster_token = token;
    }
    config.validate_for_restore()?;
    cairn_server::restore::restore_snapshot(&args.file, &config)
        .with_context(|| format!("restoring {}", args.file.display()))?;
    println!(
        "Restored snapshot {} into {}",
        args.file.display(),
        config.data_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_sits_beside_the_target() {
        assert_eq!(
            part_path(Path::new("/a/b/snap.db")),
            PathBuf::from("/a/b/snap.db.part")
        );
        assert_eq!(
            part_path(Path::new("snap.db")),
            PathBuf::from("snap.db.part")
        );
    }
}
