//! Client-port connection pre-filter: etcdctl 3.4 sends the whole endpoint
//! URL (`http://host:port`) as the HTTP/2 `:authority`, which h2 rejects
//! with PROTOCOL_ERROR. Each accepted connection is piped through a task
//! that rewrites such authorities to `host:port` before tonic sees them.
//!
//! HTTP/2 header blocks are decoded with a connection-scoped HPACK decoder
//! (tracking the client's dynamic table) and re-encoded as literals without
//! indexing, so the server-side decoder's dynamic table is never used.
//! Connections that do not start with the HTTP/2 preface pass untouched.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame payload accepted from a client before closing.
const MAX_FRAME: usize = 16 << 20;
/// Largest frame payload we emit (h2's default SETTINGS_MAX_FRAME_SIZE).
const OUT_FRAME: usize = 16_384;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The server end of a filtered connection, handed to tonic.
pub struct FilteredConn {
    io: DuplexStream,
    info: TcpConnectInfo,
}

impl Connected for FilteredConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for FilteredConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for FilteredConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accept connections on `listener` (nodelay on) and yield filtered ones.
/// The accept loop ends when the returned stream is dropped.
pub fn incoming(listener: TcpListener) -> ReceiverStream<io::Result<FilteredConn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("client accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let conn = wrap(tcp, remote);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn wrap(tcp: TcpStream, remote: SocketAddr) -> FilteredConn {
    let info = TcpConnectInfo {
        local_addr: tcp.local_addr().ok(),
        remote_addr: Some(remote),
    };
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(pipe(tcp, ours));
    FilteredConn { io: theirs, info }
}

async fn pipe(tcp: TcpStream, server: DuplexStream) {
    let (mut tcp_r, mut tcp_w) = tcp.into_split();
    let (mut srv_r, mut srv_w) = tokio::io::split(server);
    let down = async {
        let _ = tokio::io::copy(&mut srv_r, &mut tcp_w).await;
        let _ = tcp_w.shutdown().await;
    };
    let up = async {
        let _ = filter_up(&mut tcp_r, &mut srv_w).await;
        let _ = srv_w.shutdown().await;
    };
    tokio::pin!(down, up);
    // Client EOF: keep sending the server's remaining replies. Server gone:
    // stop reading from the client.
    tokio::select! {
        _ = &mut down => {}
        _ = &mut up => down.await,
    }
}

async fn filter_up<R, W>(r: &mut R, w: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(16 * 1024);
    // Decide HTTP/2 or not from the first bytes.
    loop {
        let n = PREFACE.len().min(buf.len());
        if buf[..n] != PREFACE[..n] {
            w.write_all(&buf).await?;
            tokio::io::copy(r, w).await?;
            return Ok(());
        }
        if buf.len() >= PREFACE.len() {
            break;
        }
        let mut chunk = [0u8; 64];
        let got = r.read(&mut chunk).await?;
        if got == 0 {
            w.write_all(&buf).await?;
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    let mut filter = Filter::new();
    let mut out = Vec::with_capacity(16 * 1024);
    out.extend_from_slice(PREFACE);
    buf.drain(..PREFACE.len());
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        filter.process(&mut buf, &mut out)?;
        if !out.is_empty() {
            w.write_all(&out).await?;
            out.clear();
        }
        let got = r.read(&mut chunk).await?;
        if got == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// A header block being collected across HEADERS + CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// Client→server HTTP/2 frame rewriter (after the preface).
pub struct Filter {
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<Pending>,
}

impl Default for Filter {
    fn default() -> Self {
        Self::new()
    }
}

impl Filter {
    pub fn new() -> Self {
        Filter {
            decoder: loona_hpack::Decoder::new(),
            pending: None,
        }
    }

    /// Consume whole frames from `input`, appending output bytes to `out`.
    pub fn process(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut pos = 0;
        let result = loop {
            let rest = &input[pos..];
            if rest.len() < 9 {
                break Ok(());
            }
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            if len > MAX_FRAME {
                break Err(bad("frame too large"));
            }
            if rest.len() < 9 + len {
                break Ok(());
            }
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            let payload = &rest[9..9 + len];
            if let Err(e) = self.frame(rest, kind, flags, stream, payload, out) {
                break Err(e);
            }
            pos += 9 + len;
        };
        input.drain(..pos);
        result
    }

    fn frame(
        &mut self,
        raw: &[u8],
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if let Some(p) = &mut self.pending {
            if kind != CONTINUATION || stream != p.stream {
                return Err(bad("expected CONTINUATION"));
            }
            p.block.extend_from_slice(payload);
            if p.block.len() > MAX_FRAME {
                return Err(bad("header block too large"));
            }
            if flags & END_HEADERS != 0 {
                let p = self.pending.take().expect("pending");
                self.emit(p, out)?;
            }
            return Ok(());
        }
        match kind {
            HEADERS => {
                let mut body = payload;
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    let (&n, b) = body.split_first().ok_or_else(|| bad("bad padding"))?;
                    pad = usize::from(n);
                    body = b;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if body.len() < 5 {
                        return Err(bad("bad priority"));
                    }
                    let mut p = [0u8; 5];
                    p.copy_from_slice(&body[..5]);
                    priority = Some(p);
                    body = &body[5..];
                }
                if pad > body.len() {
                    return Err(bad("bad padding"));
                }
                let body = &body[..body.len() - pad];
                let p = Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    block: body.to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    self.emit(p, out)
                } else {
                    self.pending = Some(p);
                    Ok(())
                }
            }
            _ => {
                out.extend_from_slice(&raw[..9 + payload.len()]);
                Ok(())
            }
        }
    }

    fn emit(&mut self, p: Pending, out: &mut Vec<u8>) -> io::Result<()> {
        let headers = self
            .decoder
            .decode(&p.block)
            .map_err(|e| bad(&format!("hpack: {e:?}")))?;
        let mut block = Vec::with_capacity(p.block.len() + 64);
        if let Some(pr) = &p.priority {
            block.extend_from_slice(pr);
        }
        for (name, value) in &headers {
            let value = if name.as_slice() == b":authority" {
                fix_authority(value)
            } else {
                value.as_slice()
            };
            literal(&mut block, name, value);
        }
        let mut flags = 0;
        if p.end_stream {
            flags |= END_STREAM;
        }
        if p.priority.is_some() {
            flags |= PRIORITY;
        }
        let mut kind = HEADERS;
        let mut rest = block.as_slice();
        loop {
            let n = rest.len().min(OUT_FRAME);
            let last = n == rest.len();
            let f = if last { flags | END_HEADERS } else { flags };
            frame_header(out, n, kind, f, p.stream);
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if last {
                return Ok(());
            }
            kind = CONTINUATION;
            flags = 0;
        }
    }
}

/// `scheme://host:port[/...]` → `host:port`; anything else unchanged.
fn fix_authority(v: &[u8]) -> &[u8] {
    let Some(i) = v.windows(3).position(|w| w == b"://") else {
        return v;
    };
    let rest = &v[i + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    &rest[..end]
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// HPACK integer with an `n`-bit prefix; `first` holds the high bits.
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header field without indexing, new name, no Huffman.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        frame_header(&mut f, block.len(), HEADERS, flags, stream);
        f.extend_from_slice(block);
        f
    }

    fn encode(hs: &[(&[u8], &[u8])], enc: &mut loona_hpack::Encoder<'_>) -> Vec<u8> {
        enc.encode(hs.iter().map(|(n, v)| (*n, *v)))
    }

    /// Decode the filter's output frames: list of header lists and raw
    /// non-header frames.
    type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_out(out: &[u8]) -> (Vec<HeaderList>, Vec<Vec<u8>>) {
        let mut dec = loona_hpack::Decoder::new();
        let mut lists = Vec::new();
        let mut others = Vec::new();
        let mut pos = 0;
        let mut block = Vec::new();
        while pos < out.len() {
            let len = (usize::from(out[pos]) << 16)
                | (usize::from(out[pos + 1]) << 8)
                | usize::from(out[pos + 2]);
            let (kind, flags) = (out[pos + 3], out[pos + 4]);
            let payload = &out[pos + 9..pos + 9 + len];
            assert!(len <= OUT_FRAME);
            match kind {
                HEADERS | CONTINUATION => {
                    let mut p = payload;
                    if kind == HEADERS && flags & PRIORITY != 0 {
                        p = &p[5..];
                    }
                    block.extend_from_slice(p);
                    if flags & END_HEADERS != 0 {
                        lists.push(dec.decode(&block).unwrap());
                        block.clear();
                    }
                }
                _ => others.push(out[pos..pos + 9 + len].to_vec()),
            }
            pos += 9 + len;
        }
        // Our output never uses the dynamic table.
        (lists, others)
    }

    fn run(input: &[u8]) -> Vec<u8> {
        let mut f = Filter::new();
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        f.process(&mut buf, &mut out).unwrap();
        assert!(buf.is_empty());
        out
    }

    fn req(auth: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/etcdserverpb.Maintenance/Status".to_vec()),
            (b":authority", auth.to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
        ]
    }

    fn enc_req(enc: &mut loona_hpack::Encoder<'_>, auth: &[u8]) -> Vec<u8> {
        let r = req(auth);
        let hs: Vec<(&[u8], &[u8])> = r.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        encode(&hs, enc)
    }

    #[test]
    fn url_authority_is_rewritten() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc_req(&mut enc, b"http://127.0.0.1:2379");
        let out = run(&headers_frame(1, END_HEADERS | END_STREAM, &block));
        assert_eq!(out[4], END_HEADERS | END_STREAM);
        let (lists, _) = decode_out(&out);
        let want: Vec<(Vec<u8>, Vec<u8>)> = req(b"127.0.0.1:2379")
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v))
            .collect();
        assert_eq!(lists, vec![want]);
        assert_eq!(fix_authority(b"https://h:1/x/y"), b"h:1");
        assert_eq!(fix_authority(b"h:1"), b"h:1");
    }

    #[test]
    fn normal_authority_decodes_equal_and_other_frames_pass() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc_req(&mut enc, b"127.0.0.1:2379");
        let mut input = Vec::new();
        // SETTINGS frame, empty.
        frame_header(&mut input, 0, 0x4, 0, 0);
        input.extend(headers_frame(1, END_HEADERS, &block));
        let mut data = Vec::new();
        frame_header(&mut data, 3, 0x0, END_STREAM, 1);
        data.extend_from_slice(b"abc");
        input.extend_from_slice(&data);
        let out = run(&input);
        let (lists, others) = decode_out(&out);
        let want: Vec<(Vec<u8>, Vec<u8>)> = req(b"127.0.0.1:2379")
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v))
            .collect();
        assert_eq!(lists, vec![want]);
        assert_eq!(others.len(), 2);
        assert_eq!(others[1], data);
    }

    #[test]
    fn continuation_padding_priority_and_partial_input() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc_req(&mut enc, b"http://a:1");
        let (a, b) = block.split_at(block.len() / 2);
        let mut payload = vec![2u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 3, 15]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0]);
        let mut input = Vec::new();
        frame_header(
            &mut input,
            payload.len(),
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            3,
        );
        input.extend_from_slice(&payload);
        frame_header(&mut input, b.len(), CONTINUATION, END_HEADERS, 3);
        input.extend_from_slice(b);
        // Feed byte by byte.
        let mut f = Filter::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for &byte in &input {
            buf.push(byte);
            f.process(&mut buf, &mut out).unwrap();
        }
        assert!(buf.is_empty());
        assert_eq!(out[4], END_HEADERS | END_STREAM | PRIORITY);
        assert_eq!(&out[9..14], &[0x80, 0, 0, 3, 15]);
        let (lists, _) = decode_out(&out);
        assert_eq!(lists[0][3], (b":authority".to_vec(), b"a:1".to_vec()));
    }

    #[test]
    fn dynamic_table_across_requests_and_large_blocks() {
        // Request 1: `:method POST` (static 3), `:authority` literal with
        // incremental indexing (indexed name 1). Request 2: a table size
        // update, then both from the tables (static 3, dynamic 62).
        let auth = b"http://h:2";
        let mut b1 = vec![0x83, 0x41, auth.len() as u8];
        b1.extend_from_slice(auth);
        let b2 = vec![0x3f, 0xe1, 0x1f, 0x83, 0xbe];
        let mut enc = loona_hpack::Encoder::new();
        let big = vec![b'x'; 40_000];
        let b3 = encode(
            &[(b":authority", b"http://h:3"), (b"x-big", &big)],
            &mut enc,
        );
        let mut input = headers_frame(1, END_HEADERS, &b1);
        input.extend(headers_frame(3, END_HEADERS, &b2));
        input.extend(headers_frame(5, END_HEADERS, &b3));
        let out = run(&input);
        let (lists, _) = decode_out(&out);
        assert_eq!(lists.len(), 3);
        let want = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":authority".to_vec(), b"h:2".to_vec()),
        ];
        assert_eq!(lists[0], want);
        assert_eq!(lists[1], want);
        assert_eq!(lists[2][0].1, b"h:3".to_vec());
        assert_eq!(lists[2][1].1, big);
    }

    #[test]
    fn interrupted_header_block_is_rejected() {
        let mut input = headers_frame(1, 0, &[0x83]);
        frame_header(&mut input, 0, 0x0, 0, 1);
        let mut f = Filter::new();
        assert!(f.process(&mut input, &mut Vec::new()).is_err());
    }

    #[tokio::test]
    async fn http1_passes_through() {
        let msg = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut r = msg.as_slice();
        let mut w = Vec::new();
        filter_up(&mut r, &mut w).await.unwrap();
        assert_eq!(w, msg);
        let mut r: &[u8] = b"PRI";
        let mut w = Vec::new();
        filter_up(&mut r, &mut w).await.unwrap();
        assert_eq!(w, b"PRI");
    }
}
