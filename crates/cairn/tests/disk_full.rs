//! A member whose disk fills up. Its Raft stops on the failed write; the
//! member must then exit with the reason (not go on with a dead Raft, a
//! healthy `/health` and requests that time out), and its data, moved to a
//! disk with room, must start again with every write it acknowledged.
//!
//! Needs root to mount a small tmpfs; without it the test says so and
//! passes (CI runs as root).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use support::*;

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(mib: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (not root?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk { _dir: dir, path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a member still running must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn put(kv: &mut KvClient<tonic::transport::Channel>, key: &str, value: &[u8]) -> bool {
    let mut req = tonic::Request::new(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(5));
    kv.put(req).await.is_ok()
}

/// Starts the member on `data_dir` and waits until it serves.
async fn start_on(mut cluster: ProcCluster, data_dir: PathBuf) -> ProcCluster {
    cluster.members[0].data_dir = data_dir;
    cluster.spawn(0);
    tokio::task::spawn_blocking(move || {
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    })
    .await
    .unwrap()
}

fn kv_client(cluster: &ProcCluster) -> KvClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(cluster.members[0].client_url())
        .unwrap()
        .connect_lazy();
    KvClient::new(ch)
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status();
    assert!(status.is_ok_and(|s| s.success()), "cp -a {from:?} {to:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_exits_and_its_data_restarts_elsewhere() {
    let disk = match SmallDisk::mount(16) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_member_whose_disk_fills_exits...: {why}");
            return;
        }
    };
    let mut cluster = tokio::task::spawn_blocking(|| ProcCluster::start(1))
        .await
        .unwrap();
    // The same member, bootstrapped afresh on the small disk.
    cluster.kill(0);
    let mut cluster = start_on(cluster, disk.path.join("n1")).await;

    // 8 KiB values under new keys until the member refuses them.
    let mut kv = kv_client(&cluster);
    let value = vec![b'x'; 8 * 1024];
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..10_000 {
        let key = format!("full/{i:05}");
        if put(&mut kv, &key, &value).await {
            acked.push(key);
        } else {
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(refused, 3, "16 MiB took 10,000 puts of 8 KiB");
    assert!(acked.len() > 100, "only {} puts landed", acked.len());

    // The member exits on its own, and says why.
    let status = cluster.wait_exit(0, Duration::from_secs(30));
    assert!(!status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&cluster.members[0].log).unwrap();
    assert!(
        log.contains("raft stopped") && log.contains("No space left on device"),
        "the reason is not in its log\n{}",
        cluster.logs()
    );

    // Moved to a disk with room, it starts and holds every acknowledged put.
    let roomy = cluster.dir.path().join("n1-moved");
    copy_dir(&disk.path.join("n1"), &roomy);
    let cluster = start_on(cluster, roomy).await;
    let mut kv = kv_client(&cluster);
    let mut end = b"full/".to_vec();
    *end.last_mut().unwrap() += 1;
    let held = kv
        .range(RangeRequest {
            key: b"full/".to_vec(),
            range_end: end,
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let held: std::collections::BTreeSet<Vec<u8>> = held.kvs.into_iter().map(|kv| kv.key).collect();
    for key in &acked {
        assert!(
            held.contains(key.as_bytes()),
            "acknowledged {key} is gone\n{}",
            cluster.logs()
        );
    }
    // And it takes writes again.
    assert!(put(&mut kv, "full/after", b"v").await);
}
