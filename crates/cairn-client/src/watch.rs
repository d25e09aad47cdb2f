//! Watches: a background task per watcher owns the gRPC stream, forwards
//! responses through a bounded channel and resumes on another endpoint
//! (from the next undelivered revision) when the stream breaks.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::{Code, Status};

use crate::client::Client;
use crate::error::ClientError;
use crate::options::jitter;
use crate::retry::CallKind;
use crate::types::{ResponseHeader, WatchOptions, WatchResponse};

/// Responses buffered between the watch task and the consumer; when full,
/// the task stops reading and gRPC flow control slows the server.
const WATCH_BUFFER: usize = 64;
/// Requests (create, cancel, progress) queued towards the server.
const REQUEST_BUFFER: usize = 8;
/// Watch ID the server uses for answers to a progress request.
const PROGRESS_WATCH_ID: i64 = -1;

/// The events of one watcher, as a [`Stream`]. It ends after
/// [`cancel`](Self::cancel); an error item (e.g.
/// [`ClientError::WatchCanceled`] for a compacted start revision) is the
/// last item. Dropping it stops the watcher.
pub struct WatchStream {
    watch_id: Arc<AtomicI64>,
    responses: mpsc::Receiver<Result<WatchResponse, ClientError>>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
    request_timeout: Duration,
}

enum Control {
    Cancel(oneshot::Sender<()>),
    Progress,
}

impl WatchStream {
    /// The server's ID for this watcher (it may change when the watch is
    /// resumed on another member).
    pub fn watch_id(&self) -> i64 {
        self.watch_id.load(Ordering::Acquire)
    }

    /// Cancel the watcher and end the stream. Responses already buffered
    /// are dropped.
    pub async fn cancel(&mut self) -> Result<(), ClientError> {
        let (ack, acked) = oneshot::channel();
        if self.control.send(Control::Cancel(ack)).await.is_ok() {
            // The server confirms with a canceled response; don't wait
            // forever for it.
            let _ = tokio::time::timeout(self.request_timeout, acked).await;
        }
        self.task.abort();
        self.responses.close();
        while self.responses.try_recv().is_ok() {}
        Ok(())
    }

    /// Ask the server for a progress notification (a response without
    /// events carrying the current revision).
    pub async fn request_progress(&self) -> Result<(), ClientError> {
        self.control
            .send(Control::Progress)
            .await
            .map_err(|_| ClientError::Protocol("the watch has ended".into()))
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.responses.poll_recv(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Session {
    requests: mpsc::Sender<pb::WatchRequest>,
    inbound: Streaming<pb::WatchResponse>,
    created: pb::WatchResponse,
}

fn create_request(create: pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    }
}

impl Client {
    /// Watch a key or range (see [`WatchOptions`]) and stream its events.
    /// Returns once the server has created the watcher.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: WatchOptions,
    ) -> Result<WatchStream, ClientError> {
        let create = options.to_create(&key.into());
        let session = self.open_watch(create.clone()).await?;
        let header = ResponseHeader::from(session.created.header);
        let next_revision = if create.start_revision > 0 {
            create.start_revision
        } else {
            header.revision + 1
        };
        let watch_id = Arc::new(AtomicI64::new(session.created.watch_id));
        let (tx, responses) = mpsc::channel(WATCH_BUFFER);
        let (control, control_rx) = mpsc::channel(4);
        let task = tokio::spawn(
            WatchTask {
                client: self.clone(),
                create,
                next_revision,
                watch_id: watch_id.clone(),
                out: tx,
                control: control_rx,
            }
            .run(session),
        );
        Ok(WatchStream {
            watch_id,
            responses,
            control,
            task,
            request_timeout: self.inner.options.request_timeout,
        })
    }

    /// Open a stream, create the watcher and wait for the server's answer.
    async fn open_watch(&self, create: pb::WatchCreateRequest) -> Result<Session, ClientError> {
        let session = self
            .with_retry("watch", CallKind::Read, |ch, _| {
                let mut c = self.watch_raw(ch);
                let create = create.clone();
                async move {
                    let (requests, rx) = mpsc::channel(REQUEST_BUFFER);
                    requests
                        .send(create_request(create))
                        .await
                        .map_err(|_| Status::internal("watch request queue closed"))?;
                    let mut inbound = c.watch(ReceiverStream::new(rx)).await?.into_inner();
                    let created = inbound.message().await?.ok_or_else(|| {
                        Status::unavailable("watch stream closed before the watcher was created")
                    })?;
                    Ok(Session {
                        requests,
                        inbound,
                        created,
                    })
                }
            })
            .await?;
        let first = &session.created;
        if first.canceled {
            return Err(ClientError::WatchCanceled {
                reason: first.cancel_reason.clone(),
                compact_revision: first.compact_revision,
            });
        }
        if !first.created {
            return Err(ClientError::Protocol(
                "the first watch response did not confirm the watcher".into(),
            ));
        }
        Ok(session)
    }
}

struct WatchTask {
    client: Client,
    create: pb::WatchCreateRequest,
    /// The first revision not yet delivered.
    next_revision: i64,
    watch_id: Arc<AtomicI64>,
    out: mpsc::Sender<Result<WatchResponse, ClientError>>,
    control: mpsc::Receiver<Control>,
}

/// Stream failures after which the watch is resumed elsewhere.
fn resumable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::DataLoss
    )
}

impl WatchTask {
    async fn run(mut self, mut session: Session) {
        let mut cancel_ack: Option<oneshot::Sender<()>> = None;
        // Resumes since the last delivered response.
        let mut resumes = 0u32;
        loop {
            let msg = tokio::select! {
                ctl = self.control.recv(), if cancel_ack.is_none() => {
                    let id = self.watch_id.load(Ordering::Acquire);
                    let req = match ctl {
                        Some(Control::Cancel(ack)) => {
                            cancel_ack = Some(ack);
                            pb::watch_request::RequestUnion::CancelRequest(
                                pb::WatchCancelRequest { watch_id: id },
                            )
                        }
                        Some(Control::Progress) => {
                            pb::watch_request::RequestUnion::ProgressRequest(
                                pb::WatchProgressRequest {},
                            )
                        }
                        // The handle is gone.
                        None => return,
                    };
                    let _ = session
                        .requests
                        .send(pb::WatchRequest { request_union: Some(req) })
                        .await;
                    continue;
                }
                _ = self.out.closed() => return,
                m = session.inbound.message() => m,
            };
            let failure = match msg {
                Ok(Some(resp)) => {
                    let id = self.watch_id.load(Ordering::Acquire);
                    if resp.watch_id != id && resp.watch_id != PROGRESS_WATCH_ID {
                        continue;
                    }
                    if resp.canceled {
                        if let Some(ack) = cancel_ack.take() {
                            let _ = ack.send(());
                        } else {
                            let _ = self
                                .out
                                .send(Err(ClientError::WatchCanceled {
                                    reason: resp.cancel_reason,
                                    compact_revision: resp.compact_revision,
                                }))
                                .await;
                        }
                        return;
                    }
                    if resp.created || cancel_ack.is_some() {
                        continue;
                    }
                    let header = ResponseHeader::from(resp.header);
                    match resp.events.last().and_then(|e| e.kv.as_ref()) {
                        Some(kv) => {
                            self.next_revision = self.next_revision.max(kv.mod_revision + 1)
                        }
                        // A progress notification: everything up to the
                        // header's revision has been delivered.
                        None if resp.events.is_empty() => {
                            self.next_revision = self.next_revision.max(header.revision + 1)
                        }
                        None => {}
                    }
                    resumes = 0;
                    let r = WatchResponse {
                        header,
                        watch_id: resp.watch_id,
                        events: resp.events.into_iter().map(Into::into).collect(),
                    };
                    if self.out.send(Ok(r)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(None) => Status::unavailable("watch stream closed by the server"),
                Err(status) => status,
            };
            if let Some(ack) = cancel_ack.take() {
                let _ = ack.send(());
                return;
            }
            if !resumable(&failure) {
                let _ = self.out.send(Err(ClientError::rpc("watch", failure))).await;
                return;
            }
            let retry = &self.client.inner.options.retry;
            if resumes >= retry.max_attempts {
                let _ = self
                    .out
                    .send(Err(ClientError::Unavailable {
                        op: "watch",
                        attempts: resumes,
                        last: failure.message().to_string(),
                    }))
                    .await;
                return;
            }
            tokio::time::sleep(retry.jittered_backoff(resumes, jitter())).await;
            resumes += 1;
            tracing::debug!(
                error = failure.message(),
                from_revision = self.next_revision,
                "resuming watch"
            );
            // Move off the endpoint whose stream broke.
            let (idx, _) = self.client.inner.endpoints.pick();
            self.client.inner.endpoints.on_failure(idx, None);
            self.create.start_revision = self.next_revision;
            match self.client.open_watch(self.create.clone()).await {
                Ok(s) => {
                    self.watch_id.store(s.created.watch_id, Ordering::Release);
                    session = s;
                }
                Err(e) => {
                    let _ = self.out.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}
