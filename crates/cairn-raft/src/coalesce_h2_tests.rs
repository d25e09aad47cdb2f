//! `Coalesced` under the real HTTP/2 stack: how many socket writes the
//! frames of many streams cost when they become ready together, as a watch
//! event does for every watcher of a connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::Coalesced;

/// Streams that each get one response at once.
const STREAMS: usize = 20;
/// A watch event's message size: above the 256 bytes where h2 keeps a
/// payload aside when told the IO is vectored.
const PAYLOAD_BYTES: usize = 330;

/// A socket that counts the writes reaching it.
struct CountingIo {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn responses_ready_together_on_many_streams_leave_in_a_few_writes() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let server_io = Coalesced::new(CountingIo {
        inner: server_io,
        writes: writes.clone(),
    });

    let (mut requests, client_conn) = h2::client::handshake(client_io).await.unwrap();
    tokio::spawn(client_conn);
    let server = tokio::spawn(async move {
        let mut conn = h2::server::handshake(server_io).await.unwrap();
        let mut pending = Vec::new();
        for _ in 0..STREAMS {
            let (_, respond) = conn.accept().await.unwrap().unwrap();
            pending.push(respond);
        }
        (conn, pending)
    });
    let mut responses = Vec::new();
    for _ in 0..STREAMS {
        requests = requests.ready().await.unwrap();
        let (response, _) = requests.send_request(http::Request::new(()), true).unwrap();
        responses.push(response);
    }
    let (mut conn, pending) = server.await.unwrap();

    // Every stream's headers and data become ready before the connection
    // runs again, as when one applied batch reaches every watcher.
    let before = writes.load(Ordering::Relaxed);
    let mut streams = Vec::new();
    for mut respond in pending {
        let mut stream = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        stream
            .send_data(Bytes::from(vec![7u8; PAYLOAD_BYTES]), false)
            .unwrap();
        streams.push(stream);
    }
    let driver = tokio::spawn(async move { while conn.accept().await.is_some() {} });
    for response in responses {
        let mut body = response.await.unwrap().into_body();
        let chunk = body.data().await.unwrap().unwrap();
        assert_eq!(chunk.len(), PAYLOAD_BYTES);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let writes = writes.load(Ordering::Relaxed) - before;
    // ~7 KiB in all: one write, or two if a window update slipped in.
    // Told the IO was vectored, h2 flushed after each payload: 10 writes
    // (each one deferred flush late, so two payloads apiece).
    assert!(
        writes <= 3,
        "{writes} socket writes for {STREAMS} responses"
    );
    driver.abort();
    drop(streams);
}
