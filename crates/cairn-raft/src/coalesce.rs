//! Write coalescing for gRPC connections: small HTTP/2 writes that become
//! ready in the same scheduling round leave in one `writev`.
//!
//! Why: a member answers many requests at once (one applied batch holds
//! dozens of puts), but each answer is finished by its own task, and the
//! connection task flushes after each one, so every answer cost a socket
//! write of ~70 bytes. On loopback a write runs the receiver's whole TCP
//! path too; `tcp_sendmsg` was ~14 % of all CPU at 64 clients, ~1 write
//! per put on every member.
//!
//! How: [`Coalesced`] accepts writes into a buffer. The first flush after
//! a write does not write: it wakes its task and returns `Pending`, which
//! puts the connection task at the back of the run queue, behind the tasks
//! already woken by the same batch; their answers join the buffer, and the
//! next flush sends everything. A flush is deferred at most once, so
//! nothing waits for more than one round of ready tasks, and an idle
//! runtime re-polls at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tonic::codegen::http;

/// Buffered bytes past which a write first sends what is buffered.
const MAX_BUFFERED: usize = 256 * 1024;
/// Buffer capacity kept after a flush; a larger one (after a burst) is
/// given back so idle connections stay small.
const KEPT_CAPACITY: usize = 16 * 1024;

/// An IO object whose writes are coalesced until the flush after next.
#[derive(Debug)]
pub struct Coalesced<T> {
    inner: T,
    /// Bytes accepted and not yet written, from `sent` on.
    buf: Vec<u8>,
    sent: usize,
    /// Set by a flush that deferred; the next flush writes.
    deferred: bool,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T) -> Self {
        Coalesced {
            inner,
            buf: Vec::new(),
            sent: 0,
            deferred: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > KEPT_CAPACITY {
            self.buf.shrink_to(KEPT_CAPACITY);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `false` when they are better
    /// written straight through (larger than the buffer).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len < MAX_BUFFERED))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    /// False although vectored writes work: h2 then copies DATA payloads
    /// under 1 KiB into its own 16 KiB buffer, so the frames of many
    /// streams leave together. Told "vectored", it keeps a payload of 256
    /// bytes or more aside and flushes it before taking the next frame;
    /// one event to 100 watchers cost ~20 socket writes per put across
    /// the members instead of ~8 (the watch row: 24 writes per put, 12
    /// now). The bytes are copied into `buf` here anyway.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.sent == this.buf.len() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.deferred {
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Connects outgoing gRPC channels (peers, forwarding) over TCP with
/// coalesced writes; for `Endpoint::connect_with_connector_lazy`, which
/// then no longer applies its own TCP settings, so they are given here.
/// With [`Connector::with_tls`] it also runs TLS over them: see
/// [`crate::network::dial_target`] for why tonic's own TLS is not used.
#[derive(Clone, Debug)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<DialTls>,
}

/// The TLS a [`Connector`] runs: its rustls config (suites, versions, CA
/// or verifier, the certificate to show) and the name the server's
/// certificate must carry.
#[derive(Clone, Debug)]
struct DialTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

/// What a [`Connector`] dials: coalesced TCP, or TLS over it.
pub trait DialedIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> DialedIo for T {}

impl Connector {
    /// Nagle off (writes are coalesced here instead) and TCP keepalive
    /// probes every `tcp_keepalive`, if given.
    pub fn new(tcp_keepalive: Option<std::time::Duration>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_keepalive(tcp_keepalive);
        http.enforce_http(false);
        Connector { http, tls: None }
    }

    /// Every connection runs TLS with `config`, checking that the server
    /// is `server_name`, whatever the URL's scheme (the caller gives
    /// tonic an `http://` URL so that it adds no TLS of its own).
    pub fn with_tls(mut self, config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        self.tls = Some(DialTls {
            config,
            server_name,
        });
        self
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Box<dyn DialedIo>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = Coalesced::new(connecting.await?.into_inner());
            let io: Box<dyn DialedIo> = match tls {
                None => Box::new(tcp),
                Some(DialTls {
                    config,
                    server_name,
                }) => Box::new(TlsConnector::from(config).connect(server_name, tcp).await?),
            };
            Ok(TokioIo::new(io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// Records every write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn context() -> (Arc<CountingWaker>, std::task::Waker) {
        let counter = Arc::new(CountingWaker::default());
        (counter.clone(), counter.into())
    }

    fn write(io: &mut Coalesced<Recorder>, cx: &mut Context<'_>, data: &[u8]) {
        let r = Pin::new(io).poll_write(cx, data);
        assert!(matches!(r, Poll::Ready(Ok(n)) if n == data.len()));
    }

    #[test]
    fn writes_before_a_flush_leave_together_one_round_later() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        write(&mut io, &mut cx, b"headers");
        let parts = [io::IoSlice::new(b"da"), io::IoSlice::new(b"ta")];
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &parts),
            Poll::Ready(Ok(4))
        ));
        // The first flush defers: nothing written, the task asked to run again.
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        assert!(io.get_ref().writes.is_empty());
        // What other tasks add meanwhile joins the same write.
        write(&mut io, &mut cx, b"trailers");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, [b"headersdatatrailers".to_vec()]);
        // Nothing buffered: a flush neither defers nor writes.
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes.len(), 1);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        // The next write defers once again.
        write(&mut io, &mut cx, b"next");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes[1], b"next");
    }

    #[test]
    fn a_full_buffer_is_sent_first_and_a_huge_write_goes_straight_through() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        let big = vec![7u8; MAX_BUFFERED - 10];
        write(&mut io, &mut cx, &big);
        write(&mut io, &mut cx, &[1u8; 20]);
        assert_eq!(io.get_ref().writes, std::slice::from_ref(&big));
        let huge = vec![9u8; MAX_BUFFERED];
        write(&mut io, &mut cx, &huge);
        assert_eq!(io.get_ref().writes[1], [1u8; 20]);
        assert_eq!(io.get_ref().writes[2], huge);
    }

    #[test]
    fn shutdown_sends_what_is_buffered_first() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorder::default());
        write(&mut io, &mut cx, b"goaway");
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(io.get_ref().writes, [b"goaway".to_vec()]);
        assert!(io.get_ref().shut);
    }
}

#[cfg(test)]
#[path = "coalesce_h2_tests.rs"]
mod h2_tests;
