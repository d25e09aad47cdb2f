//! Power cuts of a single `cairn serve` (the default embedded deployment):
//! its own disk is the only copy, so every write it acknowledged must be
//! read back after the power comes back, and no revision it handed out may
//! be handed out again. Root and loop mounts only (see
//! `cairn_chaos::power`); skips with a message otherwise.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_chaos::harness::{channel, ProcCluster};
use cairn_chaos::power::PowerDisks;
use cairn_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;

const WRITERS: usize = 4;
const PUTS_PER_WRITER: usize = 5_000;

/// What the writers of a round were told: key → (value, revision).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

async fn write_until_refused(
    url: String,
    round: usize,
    writer: usize,
    value_bytes: usize,
    acked: Acked,
    count: Arc<AtomicUsize>,
) {
    let mut kv = KvClient::new(channel(&url, Duration::from_secs(2)));
    for i in 0..PUTS_PER_WRITER {
        let key = format!("power/r{round}/w{writer}/{i}");
        let mut value = format!("v{round}-{writer}-{i}-");
        value.extend(std::iter::repeat_n(
            'x',
            value_bytes.saturating_sub(value.len()),
        ));
        let put = pb::PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..Default::default()
        };
        match kv.put(put).await {
            Ok(r) => {
                let revision = r.into_inner().header.map_or(0, |h| h.revision);
                acked.lock().unwrap().insert(key, (value, revision));
                count.fetch_add(1, Ordering::Relaxed);
            }
            // The power is out: what was acknowledged is what counts.
            Err(_) => return,
        }
    }
}

/// `rounds` times: writers put `value_bytes` values until the power is
/// cut, which happens once `cut_when(round, data dir, acknowledged puts of
/// the round)` holds (waited for at most 60 s); then every acknowledged
/// put is read back after the restart.
fn power_cut_rounds(
    test: &str,
    rounds: usize,
    value_bytes: usize,
    cut_when: impl Fn(usize, &std::path::Path, usize) -> bool,
) {
    if let Err(why) = PowerDisks::precondition() {
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let mut cluster = ProcCluster::start_with_tls(
        1,
        Duration::from_secs(30),
        None,
        None,
        Vec::new(),
        false,
        true,
    )
    .expect("start one member on its own disk");
    let url = cluster.client_urls()[0].clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Acked = Arc::default();
    for round in 0..rounds {
        let count = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                rt.spawn(write_until_refused(
                    url.clone(),
                    round,
                    w,
                    value_bytes,
                    acked.clone(),
                    count.clone(),
                ))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let data_dir = cluster.members[0].data_dir.clone();
        while !cut_when(round, &data_dir, count.load(Ordering::Relaxed)) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the cut's condition never held ({} puts acknowledged)",
                count.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        cluster.power_cut(&[0]).expect("power cut");
        for w in writers {
            rt.block_on(w).unwrap();
        }
        cluster.spawn(0).expect("restart");
        cluster
            .wait_healthy(Duration::from_secs(30))
            .expect("healthy again");

        let acked = acked.lock().unwrap().clone();
        let newest = acked.values().map(|(_, rev)| *rev).max().unwrap_or(0);
        let (revision, found) = rt.block_on(read_all(&url, "power/")).expect("read back");
        assert!(
            revision >= newest,
            "round {round}: revision {revision} after the cut, but {newest} was acknowledged"
        );
        let lost: Vec<&String> = acked
            .iter()
            .filter(|(k, (v, _))| found.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged puts lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        eprintln!(
            "round {round}: {} acknowledged puts all read back after the cut ({} keys held)",
            acked.len(),
            found.len()
        );
    }
}

/// Every key under `prefix` with its value, a page at a time (the values
/// may be large), and the revision read at.
async fn read_all(
    url: &str,
    prefix: &str,
) -> Result<(i64, BTreeMap<String, String>), tonic::Status> {
    let mut kv =
        KvClient::new(channel(url, Duration::from_secs(10))).max_decoding_message_size(64 << 20);
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut found = BTreeMap::new();
    loop {
        let page = kv
            .range(pb::RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: 64,
                // Every page at the revision of the first.
                revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        if revision == 0 {
            revision = page.header.map_or(0, |h| h.revision);
        }
        let Some(last) = page.kvs.last() else { break };
        from = last.key.clone();
        from.push(0);
        let more = page.more;
        for kv in page.kvs {
            found.insert(
                String::from_utf8(kv.key).expect("utf-8 key"),
                String::from_utf8(kv.value).expect("utf-8 value"),
            );
        }
        if !more {
            break;
        }
    }
    Ok((revision, found))
}

#[test]
fn a_single_member_keeps_every_acknowledged_write_through_power_cuts() {
    power_cut_rounds(
        "a_single_member_keeps_every_acknowledged_write_through_power_cuts",
        3,
        16,
        |_, _, acked| acked >= 200,
    );
}

/// The same across the Raft log's segment files: a cut right after the log
/// rolled to a new segment (64 MiB) must keep that segment's acknowledged
/// entries, and the file itself.
#[test]
fn a_single_member_keeps_writes_in_a_new_log_segment_through_power_cuts() {
    let segments = |data_dir: &std::path::Path| {
        std::fs::read_dir(data_dir.join("raft-wal")).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
    };
    // Per round: the segments at its start, and the puts acknowledged
    // when one more appeared.
    let seen: Mutex<BTreeMap<usize, (usize, Option<usize>)>> = Mutex::default();
    power_cut_rounds(
        "a_single_member_keeps_writes_in_a_new_log_segment_through_power_cuts",
        2,
        64 << 10,
        |round, data_dir, acked| {
            let now = segments(data_dir);
            let mut seen = seen.lock().unwrap();
            let (start, rolled_at) = seen.entry(round).or_insert((now, None));
            if now > *start && rolled_at.is_none() {
                *rolled_at = Some(acked);
            }
            rolled_at.is_some_and(|at| acked >= at + 20)
        },
    );
}
