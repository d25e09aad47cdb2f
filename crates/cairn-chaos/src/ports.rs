//! Ports for servers that tests start later.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out: below it are well-known and registered services.
const LOW: u32 = 20_000;
/// Ports handed out: `LOW..LOW + SPAN`, all below Linux's ephemeral range.
const SPAN: u32 = 12_000;

/// A port on 127.0.0.1 that nothing listens on, for a server started later
/// (members must know each other's peer URLs before any starts, so binding
/// port 0 in the server does not do).
///
/// Not one the kernel hands out for port 0: those come from the ephemeral
/// range (32768–60999 on Linux), which is also where every outgoing
/// connection of every test running beside this one takes its source
/// port, so between this call and the server's bind the port could be
/// taken (CI once saw a member never come up). Ports below that range are
/// only ever taken by a bind. Each process walks them from an offset of its
/// own, so test binaries run one after another do not start on the ports
/// the last one left lingering, and threads of one process never get the
/// same port twice.
///
/// The offset is spread over the whole span by a hash of the process ID:
/// processes started together have consecutive IDs, and offsets a few
/// ports apart made test processes run side by side (looped tests, a
/// runner with a process per test) hand out each other's ports. Members
/// of two test clusters, which share the cluster token and so member IDs,
/// then took each other's Raft messages.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset =
        (u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports
            .iter()
            .all(|p| (LOW..LOW + SPAN).contains(&u32::from(*p))));
        // Free when handed out.
        assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
    }
}
