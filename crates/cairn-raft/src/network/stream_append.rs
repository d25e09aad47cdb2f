//! Pipelined replication: openraft's `stream_append` over one gRPC
//! bidirectional stream (`RaftPeer.StreamAppend`) per replication session.
//!
//! openraft's default sends one AppendEntries, waits for the reply, then
//! sends the next, so a follower's fsync and a network round trip sit between
//! every two batches. Here requests flow as openraft produces them and the
//! follower (`Raft::stream_append`) writes batch N+1 while batch N is being
//! flushed; replies come back in request order on the same stream.
//!
//! Time limits: setting the stream up gets the RPC's `soft_ttl` (at least
//! [`MIN_SETUP`]); after that, a reply that is owed must arrive within
//! [`super::NetworkConfig::append_reply_timeout`]. An idle stream (every request
//! answered) has no deadline: HTTP/2 keepalive notices a dead peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::network::RPCOption;
use openraft::raft::StreamAppendResult;
use openraft::RPCTypes;
use tonic::Streaming;

use super::{Failure, PeerClient};
use crate::types::{AppendEntriesRequest, NetworkError, RPCError, TypeConfig};
use cairn_proto::raft::v1::Payload;

/// The least time given to opening a stream: the RPC's own `soft_ttl` is a
/// fraction of the heartbeat interval, tight for a first TCP connect.
const MIN_SETUP: Duration = Duration::from_millis(500);
/// How often a waiting reader checks whether an owed reply is overdue.
const OVERDUE_CHECK: Duration = Duration::from_millis(50);
/// How long a stream that could not be opened because the peer is
/// unreachable waits before it reports so, the first time; it doubles with
/// each failure in a row, up to [`UNREACHABLE_PAUSE_MAX`]. openraft (0.10)
/// backs off inside the request stream, which a call that fails to connect
/// never polls, and it opens the next stream as soon as this one fails:
/// without a pause, a leader whose follower was down retried ~20,000 times
/// a second, a core busy and two warnings logged each time.
pub(super) const UNREACHABLE_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause: a peer that comes back waits at most this long for
/// its first append (less than the default election timeout, so it hears
/// from the leader before it would campaign), and a peer that stays away
/// costs a few connects and warnings a second.
pub(super) const UNREACHABLE_PAUSE_MAX: Duration = Duration::from_millis(500);

/// The pause after the `streak`-th unreachable attempt in a row (from 0).
fn unreachable_pause(streak: u32) -> Duration {
    UNREACHABLE_PAUSE
        .saturating_mul(1u32 << streak.min(16))
        .min(UNREACHABLE_PAUSE_MAX)
}

type Reply = Result<StreamAppendResult<TypeConfig>, RPCError>;

/// What the request side tells the reply side.
#[derive(Default)]
struct Sent {
    /// Requests handed to gRPC so far.
    count: AtomicU64,
    /// Set when a request could not be encoded; the stream then ends.
    encode_error: Mutex<Option<String>>,
}

/// The reply side's state between two items.
struct Replies {
    client: PeerClient,
    response: Streaming<Payload>,
    sent: Arc<Sent>,
    received: u64,
    reply_timeout: Duration,
}

impl PeerClient {
    pub(super) fn open_append_stream<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Reply>, RPCError>>
    where
        S: Stream<Item = AppendEntriesRequest> + Send + Unpin + 'static,
    {
        let client = self.clone();
        Box::pin(async move {
            let action = RPCTypes::AppendEntries;
            let setup = option.soft_ttl().max(MIN_SETUP);
            let sent = Arc::new(Sent::default());
            let requests = encode_requests(input, sent.clone(), client.config.commit_notice_delay);
            let started = Instant::now();
            let opened = match client.grpc() {
                Ok(mut grpc) => {
                    let call = grpc.stream_append(tonic::Request::new(requests));
                    match tokio::time::timeout(setup, call).await {
                        Err(_) => Err(client.timeout(action, setup)),
                        Ok(Err(status)) => {
                            Err(client.status_failure(action, setup, started, status))
                        }
                        Ok(Ok(response)) => Ok(response.into_inner()),
                    }
                }
                Err(failure) => Err(failure),
            };
            let streak = &client.unreachable_streak;
            let response = match opened {
                Ok(response) => {
                    let failed = streak.swap(0, Ordering::Relaxed);
                    if failed > 0 {
                        tracing::info!(
                            "member {:x} answers again (after {failed} failed attempts)",
                            client.target
                        );
                    }
                    response
                }
                Err(failure) => {
                    if let Failure::Unreachable(e) = &failure {
                        let failed = streak.fetch_add(1, Ordering::Relaxed);
                        if failed == 0 {
                            // Once, not per attempt (see `cairn serve`'s
                            // default log filter).
                            tracing::warn!(
                                "member {:x} unreachable: {e}; trying again every \
                                 {UNREACHABLE_PAUSE_MAX:?} at most",
                                client.target
                            );
                        }
                        let pause = unreachable_pause(failed);
                        tokio::time::sleep(pause.saturating_sub(started.elapsed())).await;
                    }
                    return Err(failure.into());
                }
            };
            let reply_timeout = client.config.append_reply_timeout;
            let state = Replies {
                client,
                response,
                sent,
                received: 0,
                reply_timeout,
            };
            let replies = futures::stream::unfold(Some(state), |state| async move {
                let mut state = state?;
                let (item, go_on) = state.next_reply().await?;
                Some((item, go_on.then_some(state)))
            });
            let replies: BoxStream<'s, Reply> = Box::pin(replies);
            Ok(replies)
        })
    }
}

/// Encodes requests as they come, counting them; an encoding failure is
/// recorded and ends the request stream. Commit notices wait (see
/// [`HeldCommit`]) up to `commit_notice_delay`.
fn encode_requests<S>(
    input: S,
    sent: Arc<Sent>,
    commit_notice_delay: Duration,
) -> impl Stream<Item = Payload> + Send + 'static
where
    S: Stream<Item = AppendEntriesRequest> + Send + Unpin + 'static,
{
    let held = HeldCommit::new(input, commit_notice_delay);
    futures::stream::unfold((held, sent), |(mut held, sent)| async move {
        let req = held.next().await?;
        match crate::encoding::to_vec_sized(&req) {
            Ok(data) => {
                sent.count.fetch_add(1, Ordering::Relaxed);
                Some((Payload { data }, (held, sent)))
            }
            Err(e) => {
                *sent.encode_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                None
            }
        }
    })
}

/// Holds back a replication stream's commit notices — requests without
/// entries, which openraft sends when the commit index moves and no new
/// entry is there to carry it.
///
/// Why: at one client a put is committed, answered, and the next put's
/// entries follow a few hundred microseconds later with the new commit
/// index anyway. Sending the notice at once wakes both followers to apply
/// just as the leader answers the client, and on a machine where members
/// share cores the answer waits for them (measured: ~330 µs of a ~1 ms
/// put). Held, the notice rides with the next entries, or goes out alone
/// once `delay` has passed, so a follower's state is at most that much
/// more stale than the commit (serializable reads may be stale anyway;
/// linearizable reads confirm leadership with a heartbeat, which carries
/// the commit index and is never held).
///
/// Dropping a held notice is safe: the request that replaces it carries a
/// commit index at least as new (openraft reads it when it builds each
/// request) and continues from the same log position; openraft tracks
/// replies by the log id they acknowledge, not by count. The first
/// request of a stream (a probe) and a request that ends its stream (a
/// heartbeat) are sent at once.
struct HeldCommit<S> {
    input: S,
    delay: Duration,
    /// A commit notice not yet sent, and when it must go out.
    held: Option<(AppendEntriesRequest, tokio::time::Instant)>,
    /// Whether a request was passed on yet (the first never waits).
    passed_any: bool,
    input_ended: bool,
}

impl<S> HeldCommit<S>
where
    S: Stream<Item = AppendEntriesRequest> + Unpin,
{
    fn new(input: S, delay: Duration) -> Self {
        HeldCommit {
            input,
            delay,
            held: None,
            passed_any: false,
            input_ended: false,
        }
    }

    /// The next request to send; `None` once the input has ended and
    /// nothing is held.
    async fn next(&mut self) -> Option<AppendEntriesRequest> {
        loop {
            let (next, held_due) = match self.held.take() {
                None if self.input_ended => return None,
                None => (self.input.next().await, None),
                Some((notice, due)) => {
                    tokio::select! {
                        biased;
                        next = self.input.next() => {
                            if next.is_none() {
                                self.input_ended = true;
                                return Some(self.pass(notice));
                            }
                            (next, Some(due))
                        }
                        _ = tokio::time::sleep_until(due) => return Some(self.pass(notice)),
                    }
                }
            };
            let Some(req) = next else {
                self.input_ended = true;
                return None;
            };
            let holdable = req.entries.is_empty() && self.passed_any && !self.delay.is_zero();
            if !holdable {
                return Some(self.pass(req));
            }
            // A newer notice replaces a held one but keeps its deadline.
            let due = held_due.unwrap_or_else(|| tokio::time::Instant::now() + self.delay);
            self.held = Some((req, due));
        }
    }

    fn pass(&mut self, req: AppendEntriesRequest) -> AppendEntriesRequest {
        self.passed_any = true;
        req
    }
}

impl Replies {
    /// The next item for openraft and whether the stream goes on after it;
    /// `None` when the stream ended cleanly.
    async fn next_reply(&mut self) -> Option<(Reply, bool)> {
        let action = RPCTypes::AppendEntries;
        let started = Instant::now();
        let message = match self.wait_message().await {
            Ok(m) => m,
            Err(failure) => return Some((Err(failure.into()), false)),
        };
        let payload = match message {
            Ok(Some(payload)) => payload,
            Ok(None) => {
                let encode_error = self
                    .sent
                    .encode_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let e = encode_error?;
                let err = NetworkError::from_string(format!("{action}: encode request: {e}"));
                return Some((Err(RPCError::Network(err)), false));
            }
            Err(status) => {
                let timeout = self.reply_timeout;
                let f = self.client.status_failure(action, timeout, started, status);
                return Some((Err(f.into()), false));
            }
        };
        self.received += 1;
        let decoded = self
            .client
            .decode_reply::<StreamAppendResult<TypeConfig>>(action, &payload.data);
        match decoded {
            Ok(result) => {
                let go_on = result.is_ok();
                Some((Ok(result), go_on))
            }
            Err(failure) => Some((Err(failure.into()), false)),
        }
    }

    /// Waits for the next message; fails when a reply is owed for longer
    /// than the reply timeout.
    async fn wait_message(&mut self) -> Result<Result<Option<Payload>, tonic::Status>, Failure> {
        let mut owed_since: Option<Instant> = None;
        loop {
            // `Streaming::message` keeps its state in the stream, so dropping
            // the future at a timeout loses nothing.
            match tokio::time::timeout(OVERDUE_CHECK, self.response.message()).await {
                Ok(message) => return Ok(message),
                Err(_) => {
                    if self.sent.count.load(Ordering::Relaxed) <= self.received {
                        owed_since = None;
                        continue;
                    }
                    let since = *owed_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.reply_timeout {
                        return Err(self
                            .client
                            .timeout(RPCTypes::AppendEntries, self.reply_timeout));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderId;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use crate::types::{Entry, LeaderId, LogId, Vote};

    // tokio's timer counts whole milliseconds.
    const DELAY: Duration = Duration::from_millis(5);

    fn log_id(index: u64) -> LogId {
        LogId::new(<LeaderId as RaftLeaderId>::new(1, 1).to_committed(), index)
    }

    /// A request carrying entries `first..=last` after `first - 1`.
    fn entries(first: u64, last: u64, commit: u64) -> AppendEntriesRequest {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: Some(log_id(first - 1)),
            leader_commit: Some(log_id(commit)),
            entries: (first..=last)
                .map(|i| Entry::new_blank(log_id(i)))
                .collect(),
        }
    }

    /// A request that only moves the commit index, after entry `last`.
    fn notice(last: u64, commit: u64) -> AppendEntriesRequest {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: Some(log_id(last)),
            leader_commit: Some(log_id(commit)),
            entries: vec![],
        }
    }

    /// (first entry index or none, commit index) of what was passed on.
    fn shape(req: &AppendEntriesRequest) -> (Option<u64>, u64) {
        let first = req.entries.first().map(|e| e.log_id.index);
        (first, req.leader_commit.map_or(0, |c| c.index))
    }

    fn held(
        delay: Duration,
    ) -> (
        mpsc::Sender<AppendEntriesRequest>,
        HeldCommit<ReceiverStream<AppendEntriesRequest>>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        (tx, HeldCommit::new(ReceiverStream::new(rx), delay))
    }

    #[tokio::test(start_paused = true)]
    async fn a_notice_followed_by_entries_rides_with_them() {
        let (tx, mut held) = held(DELAY);
        tx.send(entries(1, 1, 0)).await.unwrap();
        assert_eq!(shape(&held.next().await.unwrap()), (Some(1), 0));

        tx.send(notice(1, 1)).await.unwrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send(entries(2, 2, 1)).await.unwrap();
            tx
        });
        let started = tokio::time::Instant::now();
        // The notice was dropped: the next request is the entries, which
        // carry the same commit index.
        assert_eq!(shape(&held.next().await.unwrap()), (Some(2), 1));
        assert_eq!(started.elapsed(), Duration::from_millis(1));
        drop(producer.await.unwrap());
        assert!(held.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_notice_goes_out_after_the_delay() {
        let (tx, mut held) = held(DELAY);
        tx.send(entries(1, 3, 0)).await.unwrap();
        held.next().await.unwrap();
        tx.send(notice(3, 3)).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(shape(&held.next().await.unwrap()), (None, 3));
        assert_eq!(started.elapsed(), DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_notice_replaces_a_held_one_but_not_its_deadline() {
        let (tx, mut held) = held(DELAY);
        tx.send(entries(1, 3, 0)).await.unwrap();
        held.next().await.unwrap();
        tx.send(notice(3, 2)).await.unwrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send(notice(3, 3)).await.unwrap();
            tx
        });
        let started = tokio::time::Instant::now();
        assert_eq!(shape(&held.next().await.unwrap()), (None, 3));
        assert_eq!(started.elapsed(), DELAY);
        let _tx = producer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_notice_is_sent_when_the_input_ends() {
        let (tx, mut held) = held(DELAY);
        tx.send(entries(1, 1, 0)).await.unwrap();
        held.next().await.unwrap();
        tx.send(notice(1, 1)).await.unwrap();
        drop(tx);
        let started = tokio::time::Instant::now();
        assert_eq!(shape(&held.next().await.unwrap()), (None, 1));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(held.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_s_first_request_and_a_heartbeat_are_not_held() {
        // A heartbeat is a stream of one entry-less request.
        let input = futures::stream::once(async { notice(5, 5) });
        let mut held = HeldCommit::new(Box::pin(input), DELAY);
        let started = tokio::time::Instant::now();
        assert_eq!(shape(&held.next().await.unwrap()), (None, 5));
        assert!(held.next().await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn no_delay_sends_every_notice() {
        let (tx, mut held) = held(Duration::ZERO);
        for req in [
            entries(1, 1, 0),
            notice(1, 1),
            entries(2, 2, 1),
            notice(2, 2),
        ] {
            tx.send(req).await.unwrap();
        }
        drop(tx);
        let mut shapes = Vec::new();
        while let Some(req) = held.next().await {
            shapes.push(shape(&req));
        }
        assert_eq!(shapes, [(Some(1), 0), (None, 1), (Some(2), 1), (None, 2)]);
    }
}

#[cfg(test)]
mod unreachable_tests {
    use super::*;
    use crate::network::{NetworkConfig, NetworkFactory};
    use crate::types::CairnNode;
    use openraft::network::RaftNetworkFactory as _;

    /// A peer whose port refuses connections is retried at most every
    /// [`UNREACHABLE_PAUSE`], not as fast as connects fail.
    #[tokio::test]
    async fn an_unreachable_peer_is_retried_at_a_bounded_rate() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut factory = NetworkFactory::new(1, NetworkConfig::default());
        let node = CairnNode {
            peer_url: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        };
        let mut client = factory.new_client(2, &node).await;
        let window = Duration::from_millis(500);
        let started = Instant::now();
        let mut attempts = 0u32;
        while started.elapsed() < window {
            let requests = futures::stream::empty::<AppendEntriesRequest>();
            let option = RPCOption::new(Duration::from_millis(50));
            match client.open_append_stream(requests, option).await {
                Err(RPCError::Unreachable(_)) => attempts += 1,
                Err(other) => panic!("want Unreachable, got {other}"),
                Ok(_) => panic!("nothing listens on port {port}"),
            }
        }
        // 100 + 200 ms, then 400: three attempts start within 500 ms.
        assert!(
            (1..=3).contains(&attempts),
            "{attempts} attempts in {window:?}"
        );
    }

    #[test]
    fn the_pause_doubles_up_to_its_bound() {
        let pauses: Vec<u128> = (0..6).map(|n| unreachable_pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500, 500]);
        assert_eq!(unreachable_pause(u32::MAX), UNREACHABLE_PAUSE_MAX);
    }
}
