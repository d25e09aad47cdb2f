//! The etcd Watch service: one bidirectional stream carries many watchers.
//!
//! Each stream has one session. It owns a bounded channel that the node's
//! watch hub feeds for every watcher of the stream, and turns what arrives
//! there into `WatchResponse`s on the outgoing stream, in order. The
//! session is the outgoing stream itself: it runs when HTTP/2 polls the
//! response body for more, in the task that sends it, so an event costs
//! one task wake-up per watch stream, not one for a session task and one
//! more for the sender. The hub never blocks on a session: when the
//! channel is full the watcher falls behind and the hub replays it from
//! history once there is room. So a client that reads slowly slows only
//! its own stream, and its requests wait until it reads again.
//!
//! The hub knows a watcher by a token private to the session (never reused
//! within it), not by the client's watch ID, so a message still queued for
//! a cancelled watcher is dropped even if the client reuses its ID.
//!
//! Progress notifications promise that every event up to their revision
//! has been sent. The session checks that its watchers are synced after
//! the node has finished applying (and handing to the hub) the revision it
//! reports, forwards what is already queued up to that revision, and only
//! then sends the notification; see [`Session::try_progress`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::mvccpb;
use cairn_store::auth::Access;
use cairn_store::{KeyRange, StoreError};
use futures::stream::BoxStream;
use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::convert::event_to_wire;
use super::until_stopped;
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;
use crate::services::common::{header, Limits, RequestStream};
use crate::watch_hub::{WatchMessage, WatchSender, WatchSpec, WatcherKey};

/// Hub messages queued per stream (for all its watchers together).
const HUB_QUEUE: usize = 128;
/// Hub messages forwarded in a row before the session looks at anything
/// else (client requests, the node stopping, progress timers).
const HUB_STREAK: usize = 32;
/// How often a deferred progress notification is retried.
const PROGRESS_RETRY: Duration = Duration::from_millis(20);
/// Watch ID of a response about the whole stream (etcd's `InvalidWatchID`).
const STREAM_WATCH_ID: i64 = -1;
/// A create request's `watch_id` asking the server to choose one.
const AUTO_WATCH_ID: i64 = 0;
const DUPLICATE_ID_REASON: &str = "mvcc: duplicate watch ID provided on the WatchStream";

pub struct WatchService {
    node: Arc<Node>,
    limits: Limits,
    /// True once the node stopped; ends every session.
    stopped: watch::Receiver<bool>,
}

impl WatchService {
    pub fn new(node: Arc<Node>, limits: Limits, stopped: watch::Receiver<bool>) -> Self {
        WatchService {
            node,
            limits,
            stopped,
        }
    }
}

/// A watch stream's responses.
pub type WatchStream = BoxStream<'static, Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.open(request.map(StreamExt::boxed)).await
    }
}

impl WatchService {
    /// A watch stream over `request`'s stream of requests, which gRPC or
    /// the JSON gateway decoded.
    pub async fn open(
        &self,
        request: Request<RequestStream<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let leader_watch = crate::require_leader::guard(&self.node, &request)?;
        // Every watcher of the stream runs as whoever opened it.
        let caller = Caller::of(&self.node, &request).await?;
        let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
        let session = Session {
            node: self.node.clone(),
            caller,
            limits: self.limits,
            out: VecDeque::new(),
            hub_tx: WatchSender::new(hub_tx),
            watchers: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next_token: 0,
            next_auto_id: 0,
            progress_requested: false,
            periodic_due: false,
            point: None,
        };
        // How often watchers that asked for `progress_notify` and saw no
        // events get a progress notification (etcd's
        // `--experimental-watch-progress-notify-interval`).
        let every = Duration::from_millis(self.node.config.watch_progress_notify_interval_ms);
        let first_tick = tokio::time::Instant::now() + every;
        let driver = Driver {
            session,
            incoming: request.into_inner(),
            hub_rx,
            stopped: self.stopped.clone(),
            ticker: tokio::time::interval_at(first_tick, every),
            reading: true,
            hub_streak: 0,
            ended: false,
        };
        let responses = futures::stream::unfold(driver, |mut d| async move {
            let resp = d.next_response().await?;
            Some((resp, d))
        });
        Ok(Response::new(crate::require_leader::end_when_lost(
            responses.boxed(),
            leader_watch,
        )))
    }
}

struct Watcher {
    /// The ID the client knows.
    watch_id: i64,
    key: WatcherKey,
    progress_notify: bool,
    fragment: bool,
    /// Events were sent since the last periodic progress notification.
    active: bool,
}

/// A revision a progress notification may report once the node has
/// applied the Raft log up to `index`: by then the hub has been handed
/// every event up to `revision`.
struct ProgressPoint {
    revision: i64,
    index: Option<u64>,
}

impl ProgressPoint {
    fn now(node: &Node) -> Self {
        // Read the revision first: the entries that produced it are
        // committed, so the commit index read afterwards covers them.
        let revision = node.store().revision();
        let index = node
            .raft
            .metrics()
            .borrow_watched()
            .local_committed
            .as_ref()
            .map(|l| l.index());
        ProgressPoint { revision, index }
    }

    /// The state machine's apply (which hands events to the hub before it
    /// returns) has passed `index`.
    fn reached(&self, node: &Node) -> bool {
        let applied = node
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .as_ref()
            .map(|l| l.index());
        applied >= self.index
    }
}

/// What a session woke up for.
enum Wake {
    /// The hub queued events (or a compaction) for one of its watchers.
    Hub(WatchMessage),
    /// The node is stopping.
    Stopped,
    /// The client sent a request, closed its side (`None`), or broke.
    Request(Option<Result<pb::WatchRequest, Status>>),
    /// The periodic progress notification is due.
    Tick,
    /// A deferred progress notification may be sendable now.
    Retry,
}

/// What a watch stream's responses come from: the session, and what it
/// waits on between responses.
struct Driver {
    session: Session,
    incoming: RequestStream<pb::WatchRequest>,
    hub_rx: mpsc::Receiver<WatchMessage>,
    /// True once the node stopped.
    stopped: watch::Receiver<bool>,
    /// The periodic progress notification's interval.
    ticker: tokio::time::Interval,
    /// False once the client closed its sending side.
    reading: bool,
    /// Hub messages taken in a row, ahead of everything else.
    hub_streak: usize,
    /// The stream ends once `out` is drained.
    ended: bool,
}

struct Session {
    node: Arc<Node>,
    /// Who opened the stream: each watcher needs read permission on its
    /// range when created.
    caller: Caller,
    /// The member's limits: the request limit also bounds a response
    /// (fragmented above it), and the watcher bounds.
    limits: Limits,
    /// Responses made and not yet taken by the outgoing stream: what one
    /// wake produced (at most one per watcher of the stream, or the parts
    /// of one hub message).
    out: VecDeque<Result<pb::WatchResponse, Status>>,
    /// Handed to the hub for every watcher of this stream.
    hub_tx: WatchSender,
    /// By the token the hub knows.
    watchers: BTreeMap<i64, Watcher>,
    /// Client watch ID → token.
    by_id: BTreeMap<i64, i64>,
    next_token: i64,
    next_auto_id: i64,
    /// The client asked for a progress notification not yet sent.
    progress_requested: bool,
    /// The periodic progress notification is due.
    periodic_due: bool,
    point: Option<ProgressPoint>,
}

impl Driver {
    /// The stream's next response, waiting for one as long as it takes;
    /// `None` ends the stream.
    async fn next_response(&mut self) -> Option<Result<pb::WatchResponse, Status>> {
        loop {
            if let Some(resp) = self.session.out.pop_front() {
                return Some(resp);
            }
            if self.ended {
                return None;
            }
            self.step().await;
        }
    }

    /// Wait for one thing to happen and act on it.
    async fn step(&mut self) {
        let s = &mut self.session;
        let progress_pending = s.progress_requested || s.periodic_due;
        let hub_first = self.hub_streak < HUB_STREAK;
        // Events first: most wakes are for them, and each other branch
        // costs a poll (the request stream takes h2's lock). After a
        // streak of them the others are looked at first, once.
        let (hub_rx, incoming, reading) = (&mut self.hub_rx, &mut self.incoming, self.reading);
        let wake = if hub_first {
            tokio::select! {
                biased;
                Some(msg) = hub_rx.recv() => Wake::Hub(msg),
                _ = until_stopped(&mut self.stopped) => Wake::Stopped,
                next = incoming.next(), if reading => Wake::Request(next),
                _ = self.ticker.tick() => Wake::Tick,
                _ = tokio::time::sleep(PROGRESS_RETRY), if progress_pending => Wake::Retry,
            }
        } else {
            tokio::select! {
                biased;
                _ = until_stopped(&mut self.stopped) => Wake::Stopped,
                next = incoming.next(), if reading => Wake::Request(next),
                _ = self.ticker.tick() => Wake::Tick,
                _ = tokio::time::sleep(PROGRESS_RETRY), if progress_pending => Wake::Retry,
                Some(msg) = hub_rx.recv() => Wake::Hub(msg),
            }
        };
        self.hub_streak = match wake {
            Wake::Hub(_) if hub_first => self.hub_streak + 1,
            _ => 0,
        };
        let hub_rx = &mut self.hub_rx;
        match wake {
            Wake::Hub(msg) => {
                s.forward(msg);
                s.resume_lagging(hub_rx);
            }
            Wake::Stopped => {
                s.out.push_back(Err(ServerError::Stopped.into()));
                self.ended = true;
            }
            Wake::Request(Some(Ok(req))) => s.handle(req, hub_rx),
            // The client closed its sending side; keep delivering events
            // until it goes away, as etcd does.
            Wake::Request(None) => self.reading = false,
            Wake::Request(Some(Err(status))) => {
                s.out.push_back(Err(status));
                self.ended = true;
            }
            Wake::Tick => {
                s.periodic_due = s.watchers.values().any(|w| w.progress_notify);
                s.try_progress(hub_rx);
            }
            Wake::Retry => s.try_progress(hub_rx),
        }
    }
}

/// The stream ended (the client went away, or the node stopped): its
/// watchers leave the hub.
impl Drop for Session {
    fn drop(&mut self) {
        for w in self.watchers.values() {
            self.node.hub.cancel(w.key);
        }
    }
}

impl Session {
    /// A watcher fell behind when the hub found this stream's queue full;
    /// once the queue has room again it catches up at once, not at the
    /// hub's next poll.
    fn resume_lagging(&self, hub_rx: &mpsc::Receiver<WatchMessage>) {
        if hub_rx.len() <= HUB_QUEUE / 2 && self.hub_tx.take_lagging() {
            self.node.hub.wake_catch_up();
        }
    }

    /// Queue a response for the client.
    fn send(&mut self, resp: pb::WatchResponse) {
        self.out.push_back(Ok(resp));
    }

    fn response(&self, watch_id: i64, revision: Option<i64>) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(header(&self.node, revision)),
            watch_id,
            ..Default::default()
        }
    }

    fn handle(&mut self, req: pb::WatchRequest, hub_rx: &mut mpsc::Receiver<WatchMessage>) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c),
            Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                self.try_progress(hub_rx)
            }
            None => {}
        }
    }

    fn create(&mut self, c: pb::WatchCreateRequest) {
        let watch_id = if c.watch_id == AUTO_WATCH_ID {
            while self.by_id.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        } else {
            c.watch_id
        };
        if self.by_id.contains_key(&watch_id) {
            return self.refuse(watch_id, DUPLICATE_ID_REASON.into());
        }
        // Watchers cost the member memory and a client asks for them:
        // bounded per stream and per member (the member's count is read
        // without holding it, so concurrent creates may pass it by a few).
        if self.watchers.len() >= self.limits.max_watchers_per_stream {
            let reason = format!(
                "too many watchers on this stream (at most {}; cancel some or open another stream)",
                self.limits.max_watchers_per_stream
            );
            return self.refuse(watch_id, reason);
        }
        if self.node.hub.watcher_count() >= self.limits.max_watchers {
            let reason = format!(
                "too many watchers on this member (at most {})",
                self.limits.max_watchers
            );
            return self.refuse(watch_id, reason);
        }
        // An empty key means the smallest key, as in etcd.
        let start = if c.key.is_empty() { vec![0] } else { c.key };
        let spec = WatchSpec {
            range: KeyRange {
                start,
                end: c.range_end,
            },
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        if let Err(e) = self
            .caller
            .require_now(&self.node, &spec.range, Access::Read)
        {
            return self.refuse(watch_id, e.to_string());
        }
        let token = self.next_token;
        self.next_token += 1;
        // The created response reports a revision read before the watcher
        // starts: clients resume from the revision after it, so it must
        // not claim events the watcher will not deliver.
        let mut created = self.response(watch_id, None);
        created.created = true;
        let registered = self.node.hub.register(token, spec, self.hub_tx.clone());
        // The created response goes out before anything the hub queues for
        // this watcher, since this task forwards both.
        match registered {
            Ok(key) => {
                self.watchers.insert(
                    token,
                    Watcher {
                        watch_id,
                        key,
                        progress_notify: c.progress_notify,
                        fragment: c.fragment,
                        active: false,
                    },
                );
                self.by_id.insert(watch_id, token);
                self.send(created)
            }
            // etcd creates the watcher, then cancels it with the compact
            // revision; clients expect the two responses in that order.
            Err(StoreError::Compacted { compact_revision }) => {
                self.send(created);
                let mut resp = self.response(watch_id, None);
                resp.canceled = true;
                resp.compact_revision = compact_revision;
                self.send(resp)
            }
            Err(e) => {
                created.canceled = true;
                created.cancel_reason = e.to_string();
                self.send(created)
            }
        }
    }

    /// Answers a create that makes no watcher: as etcd, created and
    /// cancelled at once, with the reason.
    fn refuse(&mut self, watch_id: i64, reason: String) {
        let mut resp = self.response(watch_id, None);
        resp.created = true;
        resp.canceled = true;
        resp.cancel_reason = reason;
        self.send(resp)
    }

    fn cancel(&mut self, watch_id: i64) {
        // Like etcd, an unknown ID gets no answer.
        let Some(token) = self.by_id.remove(&watch_id) else {
            return;
        };
        if let Some(w) = self.watchers.remove(&token) {
            self.node.hub.cancel(w.key);
        }
        let mut resp = self.response(watch_id, None);
        resp.canceled = true;
        self.send(resp)
    }

    /// Turn one hub message into responses on the stream.
    fn forward(&mut self, msg: WatchMessage) {
        match msg {
            WatchMessage::Events {
                watch_id: token,
                revision,
                events,
            } => {
                // Not found: cancelled after the hub queued this.
                let Some(w) = self.watchers.get_mut(&token) else {
                    return;
                };
                w.active = true;
                let (watch_id, fragment) = (w.watch_id, w.fragment);
                let base = self.response(watch_id, Some(revision));
                let events = events.into_iter().map(event_to_wire).collect();
                for resp in event_responses(base, events, fragment, self.limits.max_request_bytes) {
                    self.send(resp);
                }
            }
            WatchMessage::Compacted {
                watch_id: token,
                compact_revision,
            } => {
                // The hub has already dropped the watcher.
                let Some(w) = self.watchers.remove(&token) else {
                    return;
                };
                self.by_id.remove(&w.watch_id);
                let mut resp = self.response(w.watch_id, None);
                resp.canceled = true;
                resp.compact_revision = compact_revision;
                self.send(resp)
            }
        }
    }

    /// Send the pending progress notifications whose promise holds now:
    /// the stream-wide one (asked for by a progress request) once every
    /// watcher of the stream is synced; the periodic ones to each synced
    /// `progress_notify` watcher that saw no events since the last round.
    /// What cannot be sent yet is retried every `PROGRESS_RETRY`.
    fn try_progress(&mut self, hub_rx: &mut mpsc::Receiver<WatchMessage>) {
        if !self.progress_requested && !self.periodic_due {
            return;
        }
        let point = self
            .point
            .take()
            .unwrap_or_else(|| ProgressPoint::now(&self.node));
        if !point.reached(&self.node) {
            self.point = Some(point);
            return;
        }
        // Synced now, after the hub was handed `point.revision`: every
        // event up to it is sent or queued in `hub_rx`.
        let hub = &self.node.hub;
        let keys: Vec<WatcherKey> = self.watchers.values().map(|w| w.key).collect();
        let stream_wide = self.progress_requested && hub.all_synced(&keys);
        let periodic: Vec<i64> = if self.periodic_due {
            self.watchers
                .values()
                .filter(|w| w.progress_notify && !w.active && hub.all_synced(&[w.key]))
                .map(|w| w.watch_id)
                .collect()
        } else {
            Vec::new()
        };
        if !stream_wide && !self.periodic_due {
            // A watcher lags; try again later, from a newer revision.
            return;
        }
        let revision = point.revision;
        // Forward what is queued up to `revision`; hold back the rest so
        // no event newer than the notification precedes it.
        let mut later = Vec::new();
        while let Ok(msg) = hub_rx.try_recv() {
            match msg {
                WatchMessage::Events {
                    watch_id,
                    revision: up_to,
                    events,
                } => {
                    let (now, after): (Vec<_>, Vec<_>) = events
                        .into_iter()
                        .partition(|e| e.kv.mod_revision <= revision);
                    if !now.is_empty() {
                        self.forward(WatchMessage::Events {
                            watch_id,
                            revision: up_to.min(revision),
                            events: now,
                        });
                    }
                    if !after.is_empty() {
                        later.push(WatchMessage::Events {
                            watch_id,
                            revision: up_to,
                            events: after,
                        });
                    }
                }
                compacted @ WatchMessage::Compacted { .. } => later.push(compacted),
            }
        }
        if stream_wide {
            self.progress_requested = false;
            let resp = self.response(STREAM_WATCH_ID, Some(revision));
            self.send(resp);
        }
        if self.periodic_due {
            self.periodic_due = false;
            for w in self.watchers.values_mut() {
                w.active = false;
            }
            for watch_id in periodic {
                let resp = self.response(watch_id, Some(revision));
                self.send(resp);
            }
        }
        for msg in later {
            self.forward(msg);
        }
        self.resume_lagging(hub_rx);
    }
}

/// Bytes an event adds to a `WatchResponse` (field tag, length, body).
fn event_wire_len(e: &mvccpb::Event) -> usize {
    let len = e.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// The responses carrying `events` to one watcher. A response that would
/// reach `limit` bytes is split: for a `fragment` watcher anywhere between
/// events, with `fragment: true` on every part but the last (as etcd
/// does); for any other watcher only between revisions, so each part is
/// still a set of whole revisions. A single event is never split. Every
/// part but the last reports the revision of its own last event, so no
/// header claims events that have not been sent yet.
fn event_responses(
    base: pb::WatchResponse,
    events: Vec<mvccpb::Event>,
    fragment: bool,
    limit: usize,
) -> Vec<pb::WatchResponse> {
    let base_len = pb::WatchResponse {
        fragment: true,
        ..base.clone()
    }
    .encoded_len();
    let costs: Vec<usize> = events.iter().map(event_wire_len).collect();
    if events.len() < 2 || base_len + costs.iter().sum::<usize>() < limit {
        return vec![pb::WatchResponse { events, ..base }];
    }
    let revision = |e: &mvccpb::Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut out = Vec::new();
    let mut part = Vec::new();
    let mut size = base_len;
    let mut last_rev = None;
    for (event, cost) in events.into_iter().zip(costs) {
        let rev = revision(&event);
        let may_split = fragment || last_rev != Some(rev);
        if !part.is_empty() && size + cost >= limit && may_split {
            let mut header = base.header;
            if let (Some(h), Some(rev)) = (header.as_mut(), last_rev) {
                h.revision = h.revision.min(rev);
            }
            out.push(pb::WatchResponse {
                header,
                events: std::mem::take(&mut part),
                fragment,
                ..base.clone()
            });
            size = base_len;
        }
        size += cost;
        last_rev = Some(rev);
        part.push(event);
    }
    out.push(pb::WatchResponse {
        events: part,
        fragment: false,
        ..base
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, rev: i64, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: key.into(),
                mod_revision: rev,
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn base() -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            watch_id: 3,
            ..Default::default()
        }
    }

    #[test]
    fn small_responses_are_not_split() {
        let events = vec![event("a", 1, 10), event("b", 2, 10)];
        let out = event_responses(base(), events.clone(), true, 10_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].events, events);
        assert!(!out[0].fragment);
    }

    #[test]
    fn fragment_watchers_get_parts_under_the_limit_marked_but_the_last() {
        // Ten events of one revision, each ~1000 bytes, limit 3000.
        let events: Vec<_> = (0..10).map(|i| event(&format!("k{i}"), 5, 1000)).collect();
        let out = event_responses(base(), events.clone(), true, 3000);
        assert!(out.len() >= 4, "{} parts", out.len());
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.fragment, i + 1 < out.len());
            assert!(r.encoded_len() < 3000 || r.events.len() == 1);
            assert_eq!(r.watch_id, 3);
        }
        let joined: Vec<_> = out.into_iter().flat_map(|r| r.events).collect();
        assert_eq!(joined, events);
    }

    #[test]
    fn other_watchers_are_split_only_between_revisions() {
        // Revision 5 has three big events, revision 6 one.
        let events = vec![
            event("a", 5, 1000),
            event("b", 5, 1000),
            event("c", 5, 1000),
            event("d", 6, 1000),
        ];
        let out = event_responses(base(), events.clone(), false, 1500);
        let headers: Vec<i64> = out.iter().map(|r| r.header.unwrap().revision).collect();
        assert_eq!(
            headers,
            [5, 9],
            "a part claims no later revision than it carries"
        );
        let revs: Vec<Vec<i64>> = out
            .iter()
            .map(|r| {
                r.events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision)
                    .collect()
            })
            .collect();
        assert_eq!(revs, vec![vec![5, 5, 5], vec![6]]);
        assert!(out.iter().all(|r| !r.fragment));
    }

    #[test]
    fn a_single_large_event_is_sent_whole() {
        let out = event_responses(base(), vec![event("a", 1, 5000)], true, 100);
        assert_eq!(out.len(), 1);
        assert!(!out[0].fragment);
    }
}
