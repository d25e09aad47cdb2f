//! Many large writes at once: each request is under `max_request_bytes`
//! (1.5 MiB), but together they are far more than one peer message may
//! carry (64 MiB). A batch of them must still be forwarded, replicated and
//! committed, on every member.

mod support;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::*;
use support::*;
use tonic::transport::Channel;

type Result<T = ()> = anyhow::Result<T>;

const ELECTION: Duration = Duration::from_secs(10);
/// What is checked is that every put commits, not how fast: a burst of
/// ~90 MiB through a debug build on two loaded cores took more than the
/// fixtures' 5 s for some puts (a CI run).
const REQUEST_TIMEOUT_MS: u64 = 60_000;

/// One test at a time: each moves ~90 MiB through three members, and
/// side by side they only measure the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster of three for these tests; `tweak` as `Cluster::start`'s.
async fn cluster(tweak: impl Fn(&mut cairn_server::ServerConfig)) -> Cluster {
    Cluster::start(3, |cfg| {
        cfg.request_timeout_ms = REQUEST_TIMEOUT_MS;
        tweak(cfg);
    })
    .await
}
/// Puts sent at once; with [`VALUE_BYTES`] each, ~90 MiB in all.
const WRITERS: usize = 64;
/// Just under the default request limit, with room for the key and framing.
const VALUE_BYTES: usize = 1_400 * 1024;

async fn channel(c: &Cluster, i: usize) -> Result<Channel> {
    let url = c.members[i].server.as_ref().unwrap().client_url();
    Ok(Channel::from_shared(url)?.connect().await?)
}

/// `WRITERS` puts of `VALUE_BYTES` sent at once through member `via`; each
/// must be acknowledged.
async fn put_many_at_once(c: &Cluster, via: usize, prefix: &str) -> Result<i64> {
    let mut puts = Vec::new();
    for i in 0..WRITERS {
        // A connection each, so that the member gets them all at once.
        let mut kv = KvClient::new(channel(c, via).await?);
        puts.push({
            let key = format!("{prefix}/{i}");
            tokio::spawn(async move {
                kv.put(PutRequest {
                    key: key.into(),
                    value: vec![b'v'; VALUE_BYTES],
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
            })
        });
    }
    let mut newest = 0;
    for (i, put) in puts.into_iter().enumerate() {
        match put.await? {
            Ok(rev) => newest = newest.max(rev),
            Err(e) => anyhow::bail!("put {i} of {WRITERS} through member {via}: {e}"),
        }
    }
    Ok(newest)
}

/// Starts member `i` again and waits until it has applied `revision`.
async fn restart_and_catch_up(c: &mut Cluster, i: usize, revision: i64) {
    c.start_member(i).await;
    wait_until(
        &format!("the restarted member to apply revision {revision}"),
        Duration::from_secs(60),
        || async { c.node(i).store().revision() >= revision },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_large_puts_commits_through_the_leader_and_a_follower() -> Result {
    let _serial = SERIAL.lock().await;
    let c = cluster(|_| {}).await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    put_many_at_once(&c, leader, "via-leader").await?;
    let newest = put_many_at_once(&c, follower, "via-follower").await?;
    // Every member holds all of it.
    for i in 0..3 {
        wait_until(
            &format!("member {i} to apply revision {newest}"),
            Duration::from_secs(60),
            || async { c.node(i).store().revision() >= newest },
        )
        .await;
        assert_eq!(local_count(c.node(i), "via-"), 2 * WRITERS as i64);
    }
    c.shutdown().await;
    Ok(())
}

/// A follower that was down while large entries were written catches up
/// from the leader's log: more of them than one peer message can carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_catches_up_on_more_large_entries_than_one_message_holds() -> Result {
    let _serial = SERIAL.lock().await;
    let mut c = cluster(|_| {}).await;
    let leader = c.wait_leader(ELECTION).await;
    let behind = (leader + 1) % 3;
    c.stop_member(behind).await;
    let newest = put_many_at_once(&c, leader, "while-down").await?;
    restart_and_catch_up(&mut c, behind, newest).await;
    assert_eq!(local_count(c.node(behind), "while-down/"), WRITERS as i64);
    c.shutdown().await;
    Ok(())
}

/// The largest request `max-request-bytes` allows, after a replication
/// batch's worth of smaller entries, reaches a follower that catches up:
/// the catch-up reads up to 16 MiB and then the whole next entry, so one
/// message carries both (~47 MiB; a peer takes 64 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_request_allowed_replicates_after_a_full_batch() -> Result {
    let max = cairn_server::config::MAX_REQUEST_BYTES_LIMIT;
    let _serial = SERIAL.lock().await;
    let mut c = cluster(|cfg| cfg.max_request_bytes = max).await;
    let leader = c.wait_leader(ELECTION).await;
    let behind = (leader + 1) % 3;
    c.stop_member(behind).await;
    let kv = KvClient::new(channel(&c, leader).await?)
        .max_encoding_message_size(2 * max)
        .max_decoding_message_size(2 * max);
    let put = |key: String, bytes: usize| {
        let req = PutRequest {
            key: key.into(),
            value: vec![b'v'; bytes],
            ..Default::default()
        };
        let mut kv = kv.clone();
        async move { kv.put(req).await }
    };
    for i in 0..15 {
        put(format!("batch/{i}"), 1024 * 1024).await?;
    }
    let last = put("batch/largest".into(), max - 64 * 1024).await?;
    let newest = last.into_inner().header.map_or(0, |h| h.revision);
    restart_and_catch_up(&mut c, behind, newest).await;
    assert_eq!(local_count(c.node(behind), "batch/"), 16);
    c.shutdown().await;
    Ok(())
}
