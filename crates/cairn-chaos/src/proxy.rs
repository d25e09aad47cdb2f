//! Userspace delay/loss (and, in a lab, partitions) for members' peer
//! traffic, for kernels without `sch_netem`.
//!
//! Every member gets a TCP proxy in the harness process; the proxy's URL
//! is the member's advertised peer URL (`--advertise-peer`, and its entry
//! in `--initial-cluster` / `MemberAdd`), so every other member reaches it
//! through the proxy, which forwards to the member's real peer port.
//!
//! **Degrade** (member `t`): every chunk *sent by* `t` is held back by
//! `delay ± jitter` (pipelined, order kept, like netem's delay without
//! reordering), and with probability `loss` a chunk is additionally
//! stalled 200–600 ms — what a lost segment costs TCP (a retransmission
//! timeout); TCP itself cannot lose single bytes, so "loss" here is
//! modelled as stalls, never as corrupted or reset streams. The sender of
//! a chunk is known for the member behind the proxy (its answers); for the
//! connecting side it is known from the source address in a [`NetLab`]
//! (each member has its own address). On 127.0.0.1 every connection comes
//! from 127.0.0.1, so there chunks in *both* directions of connections
//! into `t`'s proxy are degraded (the links into `t`; `t`'s own
//! connections into others' proxies are not).
//!
//! **Partitions** (in a lab only, where the source is known): a chunk
//! from a member on one side to a member on the other is held (not
//! dropped) until the heal, as a blackhole route plus TCP retransmission
//! would deliver it late; reads stop while a chunk is held, so TCP
//! backpressure bounds what piles up.
//!
//! Random draws come from an RNG seeded from the campaign seed. Bounds:
//! [`MAX_CONNECTIONS`] per proxy, chunks of at most [`CHUNK_BYTES`],
//! [`PIPELINE_CHUNKS`] chunks in flight per direction. Dropping the
//! [`ProxySet`] shuts its runtime down, which closes every listener and
//! connection.
//!
//! [`NetLab`]: crate::netns::NetLab

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Connections one proxy accepts at once (peers keep a few long-lived
/// HTTP/2 connections each).
pub const MAX_CONNECTIONS: usize = 64;
/// Largest chunk read and forwarded at once.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks read but not yet written, per direction of a connection.
pub const PIPELINE_CHUNKS: usize = 64;
/// How often a held chunk re-checks whether its partition was healed.
const HELD_POLL: Duration = Duration::from_millis(20);
/// Connecting to the member behind the proxy.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Delay and loss applied to what one member sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degrade {
    /// The member slot whose sent chunks are delayed.
    pub target: usize,
    /// Base delay of every chunk.
    pub delay_ms: u64,
    /// Uniform ± spread around `delay_ms`.
    pub jitter_ms: u64,
    /// Chance (percent) that a chunk is stalled as if a segment was lost.
    pub loss_percent: u32,
}

/// Fault state shared by every proxy of a set.
struct Faults {
    degrade: Option<Degrade>,
    /// Blocked (from slot, to slot) pairs.
    blocked: BTreeSet<(usize, usize)>,
    /// Seeded from the campaign seed.
    rng: StdRng,
    /// Chunks delayed and stalled so far (for reports and tests).
    delayed_chunks: u64,
    stalled_chunks: u64,
}

/// What one proxy forwards, and to whom.
#[derive(Debug, Clone, Copy)]
struct Route {
    /// The member slot behind the proxy.
    slot: usize,
    upstream: SocketAddr,
}

/// The proxies of one cluster (see the module docs).
pub struct ProxySet {
    rt: Option<Runtime>,
    bind_ip: Ipv4Addr,
    /// Source address of each member slot (`None` on 127.0.0.1, where the
    /// source cannot be told apart).
    sources: Arc<Vec<Ipv4Addr>>,
    faults: Arc<Mutex<Faults>>,
    /// Listening port of every proxy started, with its slot.
    ports: Vec<(usize, u16)>,
}

impl std::fmt::Debug for ProxySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySet")
            .field("bind_ip", &self.bind_ip)
            .field("ports", &self.ports)
            .finish()
    }
}

impl ProxySet {
    /// A set listening on `bind_ip`; `sources[i]` is member `i`'s address
    /// when members have distinct addresses (a lab), else empty.
    pub fn new(bind_ip: Ipv4Addr, sources: Vec<Ipv4Addr>, seed: u64) -> Result<ProxySet, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()
            .map_err(|e| format!("proxy runtime: {e}"))?;
        Ok(ProxySet {
            rt: Some(rt),
            bind_ip,
            sources: Arc::new(sources),
            faults: Arc::new(Mutex::new(Faults {
                degrade: None,
                blocked: BTreeSet::new(),
                rng: StdRng::seed_from_u64(seed ^ 0x9E0C_5EED),
                delayed_chunks: 0,
                stalled_chunks: 0,
            })),
            ports: Vec::new(),
        })
    }

    /// Starts a proxy for member `slot` forwarding to `upstream`; returns
    /// the port it listens on (on the set's `bind_ip`).
    pub fn add(&mut self, slot: usize, upstream: SocketAddr) -> Result<u16, String> {
        let rt = self.rt.as_ref().ok_or("proxy set shut down")?;
        let bind = SocketAddr::new(IpAddr::V4(self.bind_ip), 0);
        let listener = rt
            .block_on(TcpListener::bind(bind))
            .map_err(|e| format!("proxy bind {bind}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let route = Route { slot, upstream };
        rt.spawn(accept_loop(
            listener,
            route,
            self.sources.clone(),
            self.faults.clone(),
        ));
        self.ports.push((slot, port));
        Ok(port)
    }

    pub fn bind_ip(&self) -> Ipv4Addr {
        self.bind_ip
    }

    /// Whether partitions can be enforced (the source of a connection is
    /// known).
    pub fn knows_sources(&self) -> bool {
        !self.sources.is_empty()
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts degrading what `d.target` sends (replaces any earlier one).
    pub fn degrade(&self, d: Degrade) {
        self.faults().degrade = Some(d);
    }

    /// Holds chunks between the two sides (both directions). Needs
    /// [`knows_sources`](Self::knows_sources).
    pub fn split(&self, left: &[usize], right: &[usize]) -> Result<(), String> {
        if !self.knows_sources() {
            return Err("proxy partitions need distinct member addresses".into());
        }
        let mut f = self.faults();
        for a in left {
            for b in right {
                f.blocked.insert((*a, *b));
                f.blocked.insert((*b, *a));
            }
        }
        Ok(())
    }

    /// Holds what member `from` sends to `to`, on connections either
    /// opened; what `to` sends to `from` flows. Needs
    /// [`knows_sources`](Self::knows_sources).
    pub fn cut_one_way(&self, from: usize, to: usize) -> Result<(), String> {
        if !self.knows_sources() {
            return Err("proxy partitions need distinct member addresses".into());
        }
        self.faults().blocked.insert((from, to));
        Ok(())
    }

    /// Removes every degrade and partition.
    pub fn heal(&self) {
        let mut f = self.faults();
        f.degrade = None;
        f.blocked.clear();
    }

    /// `(delayed, stalled)` chunks so far.
    pub fn counters(&self) -> (u64, u64) {
        let f = self.faults();
        (f.delayed_chunks, f.stalled_chunks)
    }
}

impl Drop for ProxySet {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Aborts every task: listeners and connections close.
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    route: Route,
    sources: Arc<Vec<Ipv4Addr>>,
    faults: Arc<Mutex<Faults>>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (down, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let source = match peer.ip() {
            IpAddr::V4(ip) => sources.iter().position(|s| *s == ip),
            IpAddr::V6(_) => None,
        };
        let faults = faults.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let up = match tokio::time::timeout(
                UPSTREAM_CONNECT_TIMEOUT,
                TcpStream::connect(route.upstream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                // The member is down: close, as a refused connection would.
                _ => return,
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            // Towards the member: sent by the connecting side.
            let to_member = Direction {
                from: source,
                to: Some(route.slot),
                proxy_slot: route.slot,
            };
            // Back: sent by the member behind the proxy.
            let from_member = Direction {
                from: Some(route.slot),
                to: source,
                proxy_slot: route.slot,
            };
            tokio::select! {
                _ = pump(down_r, up_w, to_member, faults.clone()) => {}
                _ = pump(up_r, down_w, from_member, faults) => {}
            }
        });
    }
}

/// Who sends and receives the chunks of one direction.
#[derive(Debug, Clone, Copy)]
struct Direction {
    from: Option<usize>,
    to: Option<usize>,
    /// The slot of the proxy the connection goes through.
    proxy_slot: usize,
}

impl Direction {
    fn degraded_by(&self, d: &Degrade) -> bool {
        match self.from {
            Some(from) if self.to.is_some() => from == d.target,
            // Source unknown (127.0.0.1): the links into the target.
            _ => self.proxy_slot == d.target,
        }
    }
}

/// Extra hold of one chunk under the current faults.
fn chunk_delay(dir: &Direction, faults: &Mutex<Faults>) -> Duration {
    let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
    let Some(d) = f.degrade.filter(|d| dir.degraded_by(d)) else {
        return Duration::ZERO;
    };
    let jitter = f.rng.random_range(0..=2 * d.jitter_ms);
    let mut ms = (d.delay_ms + jitter).saturating_sub(d.jitter_ms);
    f.delayed_chunks += 1;
    if f.rng.random_range(0..100) < d.loss_percent {
        ms += f.rng.random_range(200..=600);
        f.stalled_chunks += 1;
    }
    Duration::from_millis(ms)
}

fn blocked(dir: &Direction, faults: &Mutex<Faults>) -> bool {
    let (Some(a), Some(b)) = (dir.from, dir.to) else {
        return false;
    };
    let f = faults.lock().unwrap_or_else(|e| e.into_inner());
    f.blocked.contains(&(a, b))
}

/// Forwards `r` to `w`: a reader stamps each chunk with its due time, a
/// writer sends it then (in order); chunks are held while the direction
/// is partitioned.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    dir: Direction,
    faults: Arc<Mutex<Faults>>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(PIPELINE_CHUNKS);
    let reader_faults = faults.clone();
    let reader = async move {
        let faults = reader_faults;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = Instant::now() + chunk_delay(&dir, &faults);
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        let mut not_before = Instant::now();
        while let Some((due, chunk)) = rx.recv().await {
            not_before = not_before.max(due);
            tokio::time::sleep_until(not_before).await;
            while blocked(&dir, &faults) {
                tokio::time::sleep(HELD_POLL).await;
            }
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    // The reader owns `tx`: at EOF it drops it, and the writer finishes
    // what was queued before.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on 127.0.0.1 (std threads), returns its address.
    fn echo_server() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(8) {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(port: u16, payload: &[u8]) -> (Vec<u8>, Duration) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t0 = std::time::Instant::now();
        s.write_all(payload).unwrap();
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).unwrap();
        (got, t0.elapsed())
    }

    #[test]
    fn forwards_bytes_intact_and_delays_when_degraded() {
        let mut set = ProxySet::new(Ipv4Addr::LOCALHOST, Vec::new(), 7).unwrap();
        let port = set.add(0, echo_server()).unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let (got, _) = round_trip(port, &payload);
        assert_eq!(got, payload, "bytes intact without faults");
        assert_eq!(set.counters(), (0, 0));

        set.degrade(Degrade {
            target: 0,
            delay_ms: 150,
            jitter_ms: 10,
            loss_percent: 0,
        });
        let (got, took) = round_trip(port, b"ping");
        assert_eq!(got, b"ping");
        // 127.0.0.1: both directions of the target's links are delayed,
        // each by at least delay - jitter.
        assert!(took >= Duration::from_millis(280), "took {took:?}");
        let (delayed, stalled) = set.counters();
        assert!(delayed >= 2 && stalled == 0, "{delayed} {stalled}");

        // Loss 100%: every chunk is stalled too, bytes still intact.
        set.degrade(Degrade {
            target: 0,
            delay_ms: 20,
            jitter_ms: 0,
            loss_percent: 100,
        });
        let (got, took) = round_trip(port, &payload[..1000]);
        assert_eq!(got, &payload[..1000]);
        assert!(took >= Duration::from_millis(400), "took {took:?}");
        assert!(set.counters().1 >= 2);

        // Another member's degrade does not touch this proxy.
        set.degrade(Degrade {
            target: 1,
            delay_ms: 500,
            jitter_ms: 0,
            loss_percent: 0,
        });
        let before = set.counters().0;
        let (got, _) = round_trip(port, b"x");
        assert_eq!(got, b"x");
        assert_eq!(set.counters().0, before);
        set.heal();
    }

    #[test]
    fn partitions_hold_chunks_until_healed() {
        // Member 0 (the client side here) at 127.0.0.1, member 1 behind
        // the proxy: sources known.
        let mut set = ProxySet::new(
            Ipv4Addr::LOCALHOST,
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 2)],
            1,
        )
        .unwrap();
        let port = set.add(1, echo_server()).unwrap();
        set.split(&[0], &[1]).unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.write_all(b"held").unwrap();
        let mut got = [0u8; 4];
        assert!(s.read_exact(&mut got).is_err(), "nothing passes the cut");
        set.heal();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held", "delivered late after the heal");
    }

    #[test]
    fn dropping_the_set_closes_listeners_and_connections() {
        let mut set = ProxySet::new(Ipv4Addr::LOCALHOST, Vec::new(), 3).unwrap();
        let port = set.add(0, echo_server()).unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"a").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        drop(set);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The open connection is closed (EOF or reset)...
        let closed = matches!(s.read(&mut one), Ok(0) | Err(_));
        assert!(closed, "connection still open after shutdown");
        // ...and nothing listens any more.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "listener still open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_connection_to_a_dead_member_is_closed() {
        let mut set = ProxySet::new(Ipv4Addr::LOCALHOST, Vec::new(), 3).unwrap();
        // A port nothing listens on.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let port = set.add(0, dead).unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut one = [0u8; 1];
        assert!(matches!(s.read(&mut one), Ok(0) | Err(_)));
    }
}
