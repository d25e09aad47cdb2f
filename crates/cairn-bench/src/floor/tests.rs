use std::net::TcpListener;
use std::thread;

use super::*;

fn disk(dir: &Path, name: &str) -> Disk {
    Disk {
        path: dir.join(name),
        file_bytes: 1 << 20,
        sync: false,
    }
}

/// Starts a replica on a thread; returns its address.
fn replica(role: Role, disk: Disk) -> (String, thread::JoinHandle<anyhow::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (addr, thread::spawn(move || serve(listener, &role, &disk)))
}

#[test]
fn every_replica_keeps_every_write_and_each_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (f1, h1) = replica(Role::Follower, disk(dir.path(), "f1"));
    let (f2, h2) = replica(Role::Follower, disk(dir.path(), "f2"));
    let (leader, hl) = replica(
        Role::Leader {
            followers: vec![f1, f2],
        },
        disk(dir.path(), "leader"),
    );
    let report = drive(&leader, 50, 100, Duration::from_secs(30)).unwrap();
    assert_eq!(report.writes, 50);
    assert_eq!(report.latency.count(), 50);
    // Closing the client ends the leader, which closes its followers.
    hl.join().unwrap().unwrap();
    h1.join().unwrap().unwrap();
    h2.join().unwrap().unwrap();
    // Every replica's log begins with the warm-up's and the 50 timed
    // payloads and nothing else.
    let written = (WARM_UP_WRITES as usize + 50) * 100;
    for name in ["leader", "f1", "f2"] {
        let log = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(log.len(), 1 << 20, "{name} keeps its size");
        assert!(log[..written].iter().all(|&b| b == b'v'), "{name}");
        assert!(log[written..].iter().all(|&b| b == 0), "{name}");
    }
}

#[test]
fn writes_wrap_at_the_end_of_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::create(&Disk {
        path: dir.path().join("log"),
        file_bytes: 0,
        sync: true,
    })
    .unwrap();
    // The file is never smaller than one largest payload.
    assert_eq!(log.len, MAX_PAYLOAD_BYTES as u64);
    let payload = vec![1u8; MAX_PAYLOAD_BYTES / 2 + 1];
    log.append(&payload).unwrap();
    log.append(&payload).unwrap();
    assert_eq!(
        log.offset,
        payload.len() as u64,
        "the second write started over"
    );
}

#[test]
fn an_oversized_payload_is_refused_before_it_is_read() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut head = 1u64.to_le_bytes().to_vec();
        head.extend_from_slice(&(u64::MAX).to_le_bytes());
        stream.write_all(&head).unwrap();
    });
    let (mut stream, _) = listener.accept().unwrap();
    let err = read_message(&mut stream, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    sender.join().unwrap();
}

#[test]
fn a_cluster_of_an_even_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = ClusterOptions {
        file_mib: 1,
        sync: false,
        grpc: false,
    };
    let err = Cluster::start(Path::new("/nonexistent"), dir.path(), 2, &options)
        .err()
        .unwrap();
    assert!(err.to_string().contains("must be odd"), "{err}");
}
