//! The floor under one client's replicated put on this machine: the least
//! any three-member store can take per write, measured rather than guessed.
//!
//! Issue #6 asks for a 1-client put at p50 ≤ 0.5 ms and 2× etcd's rate,
//! and for how close each row is to its limit. The limit of that row is
//! set by the machine, not by a Raft library: a write is durable when the
//! leader and one follower have written and synced it, and each of those
//! steps wakes a thread in another process. This probe does exactly those
//! steps and nothing else — three single-threaded processes (a leader, two
//! followers), blocking sockets on loopback, one `pwrite` + `fdatasync`
//! per write into a file filled with zeros beforehand (as Cairn's and
//! etcd's logs preallocate) — so its latency is what no implementation
//! with the same topology beats by much:
//!
//! 1. the client sends a request to the leader and blocks;
//! 2. the leader sends it to both followers, then writes and syncs it;
//! 3. each follower writes and syncs it, then acknowledges;
//! 4. once its own sync is done and one acknowledgement is in (a majority
//!    of three), the leader answers the client.
//!
//! No log indexing, no terms, no apply, no encoding beyond a sequence
//! number and a length: those cost Cairn microseconds, and the probe's
//! point is what is left when they cost nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::hist::Latency;

pub mod grpc;

/// The largest write a request may carry: a bound on what a peer can make
/// a replica allocate.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Writes [`drive`] sends before it starts timing.
pub const WARM_UP_WRITES: u64 = 100;

/// What one replica process does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Writes what the leader sends and acknowledges it once synced.
    Follower,
    /// Takes client requests, replicates them to `followers` and answers
    /// once a majority has them.
    Leader { followers: Vec<String> },
}

/// How a replica stores what it receives.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The replica's log file, overwritten in place.
    pub path: PathBuf,
    /// The file's size, filled with zeros (and synced) before the first
    /// write so that a sync never has to allocate blocks.
    pub file_bytes: u64,
    /// Whether each write is synced; without, the probe measures only the
    /// wake-ups and the loopback hops.
    pub sync: bool,
}

/// A log file written in place from its start, wrapping at its end.
struct Log {
    file: File,
    /// Where the next write goes.
    offset: u64,
    /// The file's length; writes wrap here.
    len: u64,
    sync: bool,
}

impl Log {
    fn create(disk: &Disk) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk.path)?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < disk.file_bytes {
            let n = chunk.len().min((disk.file_bytes - written) as usize);
            file.write_all_at(&chunk[..n], written)?;
            written += n as u64;
        }
        file.sync_all()?;
        Ok(Self {
            file,
            offset: 0,
            len: disk.file_bytes.max(MAX_PAYLOAD_BYTES as u64),
            sync: disk.sync,
        })
    }

    fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.offset + payload.len() as u64 > self.len {
            self.offset = 0;
        }
        self.file.write_all_at(payload, self.offset)?;
        self.offset += payload.len() as u64;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// One message: a sequence number, then a length-prefixed payload.
fn write_message(stream: &mut TcpStream, seq: u64, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(16 + payload.len());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

/// Reads one message into `payload`; `None` when the peer closed cleanly.
fn read_message(stream: &mut TcpStream, payload: &mut Vec<u8>) -> io::Result<Option<u64>> {
    let mut head = [0u8; 16];
    match stream.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD_BYTES as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte payload is over the {MAX_PAYLOAD_BYTES}-byte bound"),
        ));
    }
    payload.resize(len as usize, 0);
    stream.read_exact(payload)?;
    Ok(Some(seq))
}

fn read_ack(stream: &mut TcpStream) -> io::Result<u64> {
    let mut ack = [0u8; 8];
    stream.read_exact(&mut ack)?;
    Ok(u64::from_le_bytes(ack))
}

/// Serves the first connection `listener` takes (the client, or this
/// follower's leader) until it closes, then returns: the probe runs one
/// client against one leader.
pub fn serve(listener: TcpListener, role: &Role, disk: &Disk) -> anyhow::Result<()> {
    let mut log =
        Log::create(disk).with_context(|| format!("preparing {}", disk.path.display()))?;
    let mut followers = match role {
        Role::Follower => Vec::new(),
        Role::Leader { followers } => followers
            .iter()
            .map(|addr| {
                let stream =
                    TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
                stream.set_nodelay(true)?;
                Ok(stream)
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let (mut upstream, _) = listener.accept()?;
    upstream.set_nodelay(true)?;
    let mut payload = Vec::new();
    // The highest sequence number each follower has acknowledged.
    let mut acked = vec![0u64; followers.len()];
    while let Some(seq) = read_message(&mut upstream, &mut payload)? {
        for follower in &mut followers {
            write_message(follower, seq, &payload)?;
        }
        log.append(&payload)?;
        if !followers.is_empty() {
            wait_for_majority(&mut followers, &mut acked, seq)?;
        }
        upstream.write_all(&seq.to_le_bytes())?;
    }
    // Read the acknowledgements still under way before closing: a socket
    // closed with unread data resets the connection, and the follower
    // would take the reset for an error.
    for follower in &mut followers {
        follower.shutdown(std::net::Shutdown::Write)?;
        io::copy(follower, &mut io::sink())?;
    }
    Ok(())
}

/// Blocks until enough followers to make a majority with the leader (one
/// of two) have acknowledged `seq`, reading whatever acknowledgements are in.
fn wait_for_majority(followers: &mut [TcpStream], acked: &mut [u64], seq: u64) -> io::Result<()> {
    let needed = followers.len().div_ceil(2);
    loop {
        if acked.iter().filter(|&&a| a >= seq).count() >= needed {
            return Ok(());
        }
        let mut fds: Vec<libc::pollfd> = followers
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs whose
        // descriptors stay open for the call (the streams are borrowed).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10_000) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no acknowledgement in 10 s",
            ));
        }
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents != 0 {
                acked[i] = read_ack(&mut followers[i])?;
            }
        }
    }
}

/// What one probe run measured.
#[derive(Debug)]
pub struct FloorReport {
    /// Writes done.
    pub writes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Each write's latency as the client saw it.
    pub latency: Latency,
}

impl FloorReport {
    /// Writes per second.
    pub fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `writes` payloads of `value_bytes` to the leader at `addr`, one at
/// a time, and times each until it is answered; stops early at `deadline`.
pub fn drive(
    addr: &str,
    writes: u64,
    value_bytes: usize,
    deadline: Duration,
) -> anyhow::Result<FloorReport> {
    if value_bytes > MAX_PAYLOAD_BYTES {
        bail!("--value-bytes is at most {MAX_PAYLOAD_BYTES}");
    }
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let payload = vec![b'v'; value_bytes];
    let mut write = |seq: u64| -> anyhow::Result<()> {
        write_message(&mut stream, seq, &payload)?;
        let answer = read_ack(&mut stream)?;
        if answer != seq {
            bail!("asked for write {seq}, the leader answered {answer}");
        }
        Ok(())
    };
    // Not timed: the first writes into a freshly filled file took up to
    // 0.4 s (the file system settling after the fill), which would lower
    // the floor's rate by a fifth in a 2 s run. The servers' rows run on
    // clusters that have been up for a while.
    for seq in 1..=WARM_UP_WRITES {
        write(seq)?;
    }
    let mut latency = Latency::new();
    let start = Instant::now();
    let mut done = 0;
    for seq in WARM_UP_WRITES + 1..=WARM_UP_WRITES + writes {
        if start.elapsed() >= deadline {
            break;
        }
        let sent = Instant::now();
        write(seq)?;
        latency.record(sent.elapsed());
        done += 1;
    }
    Ok(FloorReport {
        writes: done,
        elapsed: start.elapsed(),
        latency,
    })
}

/// A replica process started by [`Cluster::start`], killed when dropped.
struct Replica {
    child: Child,
    addr: String,
}

impl Replica {
    /// Starts `exe replica ...` and reads the address it listens on from
    /// its first line of output.
    fn start(exe: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .arg("replica")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("replica's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line.trim().to_string();
        if addr.is_empty() {
            let _ = child.kill();
            bail!("a replica exited before it listened");
        }
        Ok(Self { child, addr })
    }
}

impl Drop for Replica {
    /// A replica ends on its own once its upstream closes (the leader when
    /// the client goes, a follower when the leader goes); killed at once,
    /// the leader would reset its followers' connections and they would
    /// report an error. So wait a moment for that, then kill.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`Cluster::start`] sets up its replicas.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Each replica's log file size, filled with zeros first.
    pub file_mib: u64,
    /// Whether writes are synced.
    pub sync: bool,
    /// Replicas speak etcd's `KV.Put` over gRPC ([`grpc`]) instead of
    /// the bare framing of [`serve`].
    pub grpc: bool,
}

/// A leader and its followers, each its own process.
pub struct Cluster {
    /// The leader's client address.
    pub leader: String,
    /// Leader last: dropped first, followers after.
    replicas: Vec<Replica>,
}

impl Cluster {
    /// Starts `members` replicas (one leader, the rest followers) of the
    /// binary `exe`, each with its log under `dir`.
    pub fn start(
        exe: &Path,
        dir: &Path,
        members: usize,
        options: &ClusterOptions,
    ) -> anyhow::Result<Self> {
        if members == 0 || members.is_multiple_of(2) {
            bail!("--members must be odd (1, 3, 5, ...), not {members}");
        }
        let common = |name: &str| {
            let mut args = vec![
                "--log".to_string(),
                dir.join(name).display().to_string(),
                "--file-mib".to_string(),
                options.file_mib.to_string(),
            ];
            if !options.sync {
                args.push("--no-sync".to_string());
            }
            if options.grpc {
                args.push("--grpc".to_string());
            }
            args
        };
        let mut replicas = Vec::new();
        for i in 1..members {
            replicas.push(Replica::start(exe, &common(&format!("follower-{i}.log")))?);
        }
        let mut args = common("leader.log");
        for follower in &replicas {
            args.push("--follower".to_string());
            args.push(follower.addr.clone());
        }
        let leader = Replica::start(exe, &args)?;
        let addr = leader.addr.clone();
        replicas.push(leader);
        Ok(Self {
            leader: addr,
            replicas,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while self.replicas.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests;
