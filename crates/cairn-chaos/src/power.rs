//! Power loss for chaos runs: each member's data dir on its own small
//! ext4 file system (a sparse image, loop-mounted), and a cut that loses
//! everything the member wrote but did not sync.
//!
//! A SIGKILL leaves the page cache alone: writes a member never synced
//! are still read back after the restart, so a kill cannot catch a
//! missing `fsync`. A cut here does, with ext4's own crash-test switch
//! (the ioctl xfstests' `godown` uses):
//!
//! 1. the member is SIGSTOPped, the instant the power goes;
//! 2. `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH` on its file
//!    system: from then on every IO fails, dirty pages are never written,
//!    and the journal is not flushed, so file data and metadata (a file
//!    created, renamed or extended) that no `fsync` made durable are lost;
//! 3. SIGKILL, unmount, mount again (the journal replays what was
//!    committed), restart.
//!
//! The disks are mounted under a shared bind mount of the run's own,
//! `cpd-<pid base 36>-<run>` in its temp dir (why: at `PowerDisks::make`);
//! [`sweep_leftovers`] unmounts those of runs whose process is gone. The
//! images are mounted with `-o loop`, so the loop device goes with the
//! unmount.
//!
//! Needs root, `mkfs.ext4` and loop devices; [`PowerDisks::create`] says
//! precisely why when it cannot work, and the run skips the power faults
//! with that message.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::netns::{effective_uid, owner_pid_after, process_alive, run_bounded, to_base36};

/// Prefix of every mount point this module creates.
pub const PREFIX: &str = "cpd-";

/// Size of each member's (sparse) image: a chaos run's member keeps a few
/// MiB; the rest is room for the WAL's segments and redb's growth.
const IMAGE_BYTES: u64 = 512 << 20;

/// How long an unmount after a kill may find the file system busy.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// `EXT4_IOC_SHUTDOWN`: `_IOR('X', 125, __u32)`.
const EXT4_IOC_SHUTDOWN: u64 = 0x8004_587D;
/// Neither the data nor the journal is flushed first: a power cut.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// One member's file system.
struct Disk {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

/// The file systems of one run's members, unmounted on drop.
pub struct PowerDisks {
    /// The shared mount the disks are mounted under (why: in `make`).
    parent: Option<PathBuf>,
    disks: Vec<Disk>,
}

impl PowerDisks {
    /// Whether power faults can run here: root, `mkfs.ext4`, and a loop
    /// mount that works (tried once per process, on a small image).
    pub fn precondition() -> Result<(), String> {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        PROBE.get_or_init(Self::probe).clone()
    }

    fn probe() -> Result<(), String> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => return Err(format!("not root (euid {uid}); loop mounts need root")),
            None => return Err("cannot read the effective uid".into()),
        }
        run_bounded("mkfs.ext4", &["-V"]).map_err(|e| format!("mkfs.ext4 not usable: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-chaos-probe-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        Self::make(dir.path(), 1, 16 << 20).map(drop)
    }

    /// Creates and mounts `members` file systems under `dir`. On error
    /// what was mounted so far is unmounted (the partial set drops).
    pub fn create(dir: &Path, members: usize) -> Result<PowerDisks, String> {
        Self::precondition()?;
        Self::make(dir, members, IMAGE_BYTES)
    }

    fn make(dir: &Path, members: usize, image_bytes: u64) -> Result<PowerDisks, String> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let swept = sweep_leftovers();
        if !swept.is_empty() {
            eprintln!("cairn-chaos: unmounted leftovers of dead runs: {swept:?}");
        }
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let tag = format!(
            "{PREFIX}{}-{}",
            to_base36(std::process::id()),
            to_base36(run % 1296)
        );
        // The disks are mounted under a shared mount of their own: a
        // member started by `ip netns exec` gets a copy of every mount in
        // a mount namespace of its own, and only under a shared parent do
        // this process's unmounts and mounts reach those copies. Else the
        // other members would keep a cut file system alive, shut down, and
        // mounting its image again would bring that back.
        let parent = dir.join(&tag);
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("create {}: {e}", parent.display()))?;
        let at = parent.to_string_lossy().into_owned();
        run_bounded("mount", &["--bind", &at, &at])?;
        let mut set = PowerDisks {
            parent: Some(parent),
            disks: Vec::new(),
        };
        run_bounded("mount", &["--make-shared", &at])?;
        for i in 0..members {
            let image = dir.join(format!("{tag}-n{i}.img"));
            let mount = dir.join(&tag).join(format!("n{i}"));
            let file = std::fs::File::create(&image)
                .map_err(|e| format!("create {}: {e}", image.display()))?;
            file.set_len(image_bytes)
                .map_err(|e| format!("size {}: {e}", image.display()))?;
            drop(file);
            let img = image.to_string_lossy().into_owned();
            run_bounded("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", &img])?;
            std::fs::create_dir_all(&mount)
                .map_err(|e| format!("create {}: {e}", mount.display()))?;
            set.disks.push(Disk {
                image,
                mount,
                mounted: false,
            });
            set.mount(i)?;
        }
        Ok(set)
    }

    /// Where member `i` keeps its data dir (on its own file system).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.disks[i].mount.join("data")
    }

    fn mount(&mut self, i: usize) -> Result<(), String> {
        let d = &mut self.disks[i];
        let img = d.image.to_string_lossy().into_owned();
        let at = d.mount.to_string_lossy().into_owned();
        run_bounded("mount", &["-t", "ext4", "-o", "loop", &img, &at])?;
        d.mounted = true;
        // A file system that came back still shut down fails every write.
        let probe = d.mount.join(".cpd-probe");
        std::fs::write(&probe, b"up")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("{at} mounted but not writable: {e}"))
    }

    fn unmount(&mut self, i: usize) -> Result<(), String> {
        let d = &mut self.disks[i];
        if !d.mounted {
            return Ok(());
        }
        let at = d.mount.to_string_lossy().into_owned();
        // A killed member's last references to the file system (its open
        // files, the mount namespace of `ip netns exec`) may be released
        // by the kernel a moment after it is reaped, so a busy file system
        // is tried again. Never lazily: the file system would live on, shut
        // down, and mounting the same image again would bring it back as
        // it is (the loop device is reused), failing every IO.
        let deadline = Instant::now() + UNMOUNT_TIMEOUT;
        loop {
            match run_bounded("umount", &[&at]) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("still busy after {UNMOUNT_TIMEOUT:?}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        d.mounted = false;
        Ok(())
    }

    /// Cuts the power to member `i`'s disk: every write not yet synced is
    /// lost, and nothing written from now on reaches the disk. The member
    /// must be stopped (SIGSTOP) first and killed after.
    pub fn cut(&self, i: usize) -> Result<(), String> {
        let d = &self.disks[i];
        let dir = std::fs::File::open(&d.mount)
            .map_err(|e| format!("open {}: {e}", d.mount.display()))?;
        let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: `dir` is an open descriptor for the duration of the
        // call, and the ioctl reads one u32 through the pointer.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                EXT4_IOC_SHUTDOWN as _,
                &flags as *const u32,
            )
        };
        if rc != 0 {
            return Err(format!(
                "EXT4_IOC_SHUTDOWN on {}: {}",
                d.mount.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Powers member `i`'s disk back on: unmounts the shut-down file
    /// system and mounts it again, which replays its journal. The member
    /// must be dead (reaped).
    pub fn restore(&mut self, i: usize) -> Result<(), String> {
        self.unmount(i)?;
        self.mount(i)
    }
}

impl Drop for PowerDisks {
    fn drop(&mut self) {
        for i in 0..self.disks.len() {
            if let Err(e) = self.unmount(i) {
                eprintln!("cairn-chaos: {e}");
            }
        }
        if let Some(parent) = self.parent.take() {
            let at = parent.to_string_lossy().into_owned();
            // Lazily: a disk that would not unmount goes with it.
            if let Err(e) = run_bounded("umount", &["-l", &at]) {
                eprintln!("cairn-chaos: {e}");
            }
        }
    }
}

/// The pid encoded in a mount point this module made (the shared parent
/// `…/cpd-<pid36>-<run>` or a disk under it).
fn owner_pid(mount: &str) -> Option<u32> {
    let name = mount.rsplit('/').take(2).find(|c| c.starts_with(PREFIX))?;
    owner_pid_after(PREFIX, name)
}

/// Unmounts (lazily) the file systems of runs whose process is gone (a
/// run that was SIGKILLed never dropped its [`PowerDisks`]). Returns the
/// mount points it unmounted.
pub fn sweep_leftovers() -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut swept = Vec::new();
    for line in mounts.lines() {
        let Some(at) = line.split_whitespace().nth(1) else {
            continue;
        };
        let Some(pid) = owner_pid(at) else { continue };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        if run_bounded("umount", &["-l", at]).is_ok() {
            swept.push(at.to_string());
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn owner_pids_are_read_from_mount_points_of_this_module_only() {
        assert_eq!(owner_pid("/tmp/cairn-chaos-x/cpd-2s-0"), Some(100));
        assert_eq!(owner_pid("/tmp/cairn-chaos-x/cpd-2s-0/n1"), Some(100));
        assert_eq!(owner_pid("/tmp/cairn-chaos-x/cch-2s-0"), None);
        assert_eq!(owner_pid("/tmp/cpd-2s-0/a/n1"), None);
        assert_eq!(owner_pid("/"), None);
    }

    /// The premise of the power faults: after a cut, what was synced is
    /// there and what was not is gone. Skipped (with a message) where
    /// loop mounts cannot be made.
    #[test]
    fn a_cut_loses_exactly_what_was_not_synced() {
        if let Err(why) = PowerDisks::precondition() {
            eprintln!("SKIPPED a_cut_loses_exactly_what_was_not_synced: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut disks = match PowerDisks::create(dir.path(), 1) {
            Ok(d) => d,
            Err(why) => {
                eprintln!("SKIPPED a_cut_loses_exactly_what_was_not_synced: {why}");
                return;
            }
        };
        let data = disks.data_dir(0);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::File::open(data.parent().unwrap())
            .unwrap()
            .sync_all()
            .unwrap();
        let mut synced = std::fs::File::create(data.join("synced")).unwrap();
        synced.write_all(&[1; 10_000]).unwrap();
        synced.sync_all().unwrap();
        std::fs::File::open(&data).unwrap().sync_all().unwrap();
        synced.write_all(&[2; 5_000]).unwrap();
        std::fs::write(data.join("unsynced"), [3; 10_000]).unwrap();
        drop(synced);
        // Another member, as `ip netns exec` starts one: a mount namespace
        // of its own holding a copy of the disk's mount, which must not
        // keep the cut file system alive past the restore.
        let other = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "sleep", "30"])
            .spawn();
        let _reap = other.ok().map(KillOnDrop);

        disks.cut(0).unwrap();
        assert!(
            std::fs::write(data.join("after"), b"x").is_err(),
            "a cut disk takes no more writes"
        );
        disks.restore(0).unwrap();

        assert_eq!(std::fs::read(data.join("synced")).unwrap(), vec![1; 10_000]);
        assert!(!data.join("unsynced").exists());
        assert!(!data.join("after").exists());
    }
}
