//! Client-port connection pre-filter: etcdctl 3.4 sends the whole endpoint
//! URL (`http://host:port`) as the HTTP/2 `:authority`, which h2 rejects
//! with PROTOCOL_ERROR. Every accepted connection's client→server bytes go
//! through a [`Filter`] inside [`FilteredConn::poll_read`] (no task, no
//! copy through a pipe), which rewrites such authorities to `host:port`
//! before tonic sees them.
//!
//! HTTP/2 header blocks are decoded with a connection-scoped HPACK decoder
//! (tracking the client's dynamic table). A block that needs no rewrite is
//! forwarded as received, so the server's decoder stays in step with the
//! client's table. Once one has been rewritten (re-encoded as literals
//! without indexing) the two tables differ, and every later block is
//! re-encoded too.
//!
//! Clients send one authority per connection, so once the first header
//! block passed unchanged the connection switches to plain pass-through:
//! decoding every header block cost 15–20 % of a leader's CPU under load
//! (HPACK Huffman decoding), for clients that never needed it. Connections
//! that do not start with the HTTP/2 preface pass untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use cairn_raft::coalesce::Coalesced;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::tls::Accepted;

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

/// An accepted client connection, handed to tonic; filters what it reads.
pub struct FilteredConn {
    /// The client's connection (TLS already ended on it).
    conn: Accepted,
    up: Upstream,
}

/// What the client→server direction does with the bytes it reads.
enum Upstream {
    /// Reading the first bytes: is it HTTP/2 (the preface) or not?
    Sniff(Vec<u8>),
    /// Passing frames through the filter.
    Filter(Box<Filtering>),
    /// Plain pass-through; `leftover` (already read) goes first.
    Raw { leftover: Vec<u8>, delivered: usize },
}

struct Filtering {
    filter: Filter,
    /// Read from the client, not yet a whole frame.
    input: Vec<u8>,
    /// Filtered bytes not yet handed to tonic, from `delivered` on.
    out: Vec<u8>,
    delivered: usize,
}

impl FilteredConn {
    fn new(conn: Accepted) -> Self {
        FilteredConn {
            conn,
            up: Upstream::Sniff(Vec::with_capacity(PREFACE.len())),
        }
    }

    /// Reads what the client sent next into `into`; `Ok(0)` at EOF.
    fn poll_tcp(&mut self, cx: &mut Context<'_>, into: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; 16 * 1024];
        let mut rb = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.conn).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                into.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Connected for FilteredConn {
    type ConnectInfo = crate::tls::ConnInfo;
    fn connect_info(&self) -> crate::tls::ConnInfo {
        self.conn.connect_info()
    }
}

/// Copies from `from[*at..]` into `buf`; returns whether `from` is used up.
fn deliver(from: &[u8], at: &mut usize, buf: &mut ReadBuf<'_>) -> bool {
    let n = (from.len() - *at).min(buf.remaining());
    buf.put_slice(&from[*at..*at + n]);
    *at += n;
    *at == from.len()
}

impl AsyncRead for FilteredConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.up {
                Upstream::Raw {
                    leftover,
                    delivered,
                } => {
                    if *delivered < leftover.len() {
                        if deliver(leftover, delivered, buf) {
                            *leftover = Vec::new();
                            *delivered = 0;
                        }
                        return Poll::Ready(Ok(()));
                    }
                    return Pin::new(&mut this.conn).poll_read(cx, buf);
                }
                Upstream::Filter(f) => {
                    if f.delivered < f.out.len() {
                        if deliver(&f.out, &mut f.delivered, buf) {
                            f.out.clear();
                            f.delivered = 0;
                        }
                        return Poll::Ready(Ok(()));
                    }
                    if f.filter.settled() {
                        let leftover = std::mem::take(&mut f.input);
                        this.up = Upstream::Raw {
                            leftover,
                            delivered: 0,
                        };
                        continue;
                    }
                    let mut input = std::mem::take(&mut f.input);
                    let got = this.poll_tcp(cx, &mut input);
                    let Upstream::Filter(f) = &mut this.up else {
                        unreachable!("state changed while reading")
                    };
                    f.input = input;
                    match got {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        // EOF; a partial frame left in `input` is dropped.
                        Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                        Poll::Ready(Ok(_)) => {
                            let Filtering {
                                filter, input, out, ..
                            } = &mut **f;
                            filter.process(input, out)?;
                        }
                    }
                }
                Upstream::Sniff(seen) => {
                    let n = PREFACE.len().min(seen.len());
                    if seen[..n] != PREFACE[..n] {
                        let leftover = std::mem::take(seen);
                        this.up = Upstream::Raw {
                            leftover,
                            delivered: 0,
                        };
                        continue;
                    }
                    if seen.len() >= PREFACE.len() {
                        let mut input = std::mem::take(seen);
                        input.drain(..PREFACE.len());
                        let mut out = Vec::with_capacity(16 * 1024);
                        out.extend_from_slice(PREFACE);
                        let mut filter = Filter::new();
                        filter.process(&mut input, &mut out)?;
                        this.up = Upstream::Filter(Box::new(Filtering {
                            filter,
                            input,
                            out,
                            delivered: 0,
                        }));
                        continue;
                    }
                    let mut seen = std::mem::take(seen);
                    let got = this.poll_tcp(cx, &mut seen);
                    let at_eof = matches!(got, Poll::Ready(Ok(0)));
                    this.up = if at_eof {
                        // Hand over what came; the next read reports EOF.
                        Upstream::Raw {
                            leftover: seen,
                            delivered: 0,
                        }
                    } else {
                        Upstream::Sniff(seen)
                    };
                    match got {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(_)) => continue,
                    }
                }
            }
        }
    }
}

impl AsyncWrite for FilteredConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}

/// Connections accepted on the client port (after their TLS handshake
/// when `tls` is set; see [`crate::tls::incoming`]), filtered, their writes
/// coalesced. The accept loop ends when the returned stream is dropped.
pub fn incoming(
    listeners: Vec<TcpListener>,
    tls: Option<TlsAcceptor>,
    open: &crate::tls::OpenListeners,
) -> impl futures::Stream<Item = io::Result<Coalesced<FilteredConn>>> {
    use futures::StreamExt;
    crate::tls::incoming(listeners, tls, crate::tls::Port::Client, open)
        .map(|accepted| accepted.map(|conn| Coalesced::new(FilteredConn::new(conn))))
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
    /// The frames as received, forwarded as they are when nothing needs a
    /// rewrite.
    raw: Vec<u8>,
}

/// Client→server HTTP/2 frame rewriter (after the preface).
pub struct Filter {
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<Pending>,
    /// A block was rewritten: the server's HPACK table no longer matches
    /// the client's, so every block from now on is re-encoded.
    rewriting: bool,
    /// Header blocks forwarded unchanged so far.
    clean_blocks: u64,
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
            rewriting: false,
            clean_blocks: 0,
        }
    }

    /// Whether the connection can go on unfiltered: its first header block
    /// needed no rewrite and none is half-way.
    pub fn settled(&self) -> bool {
        !self.rewriting && self.clean_blocks > 0 && self.pending.is_none()
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
            p.raw.extend_from_slice(&raw[..9 + payload.len()]);
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
                    raw: raw[..9 + payload.len()].to_vec(),
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
        let needs_fix = headers
            .iter()
            .any(|(n, v)| n.as_slice() == b":authority" && fix_authority(v).len() != v.len());
        if !needs_fix && !self.rewriting {
            self.clean_blocks += 1;
            out.extend_from_slice(&p.raw);
            return Ok(());
        }
        self.rewriting = true;
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
    use tokio::net::TcpStream;

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

    #[test]
    fn a_clean_block_passes_unchanged_and_settles_the_connection() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = Vec::new();
        frame_header(&mut input, 0, 0x4, 0, 0);
        input.extend(headers_frame(1, END_HEADERS, &enc_req(&mut enc, b"h:1")));
        let mut f = Filter::new();
        assert!(!f.settled());
        let mut buf = input.clone();
        let mut out = Vec::new();
        f.process(&mut buf, &mut out).unwrap();
        assert_eq!(out, input, "forwarded byte for byte");
        assert!(f.settled());
    }

    #[test]
    fn after_a_rewrite_every_block_is_reencoded() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = headers_frame(1, END_HEADERS, &enc_req(&mut enc, b"http://h:1"));
        // Clean, but may lean on the client's dynamic table.
        input.extend(headers_frame(3, END_HEADERS, &enc_req(&mut enc, b"h:1")));
        let mut f = Filter::new();
        let mut buf = input.clone();
        let mut out = Vec::new();
        f.process(&mut buf, &mut out).unwrap();
        assert!(!f.settled());
        let (lists, _) = decode_out(&out);
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0][3].1, b"h:1".to_vec());
        assert_eq!(lists[1][3].1, b"h:1".to_vec());
    }

    /// Writes `sent` from a client socket and returns what the server side
    /// of a [`FilteredConn`] reads, until the client closes.
    async fn through_conn(sent: Vec<u8>) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // In small pieces, so every state sees partial input.
            for piece in sent.chunks(7) {
                c.write_all(piece).await.unwrap();
                c.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            c.shutdown().await.unwrap();
        });
        let (tcp, remote) = listener.accept().await.unwrap();
        let info = tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(remote),
        };
        let mut conn = FilteredConn::new(Accepted {
            stream: crate::tls::Stream::Plain(tcp),
            info: crate::tls::ConnInfo::plain(info),
        });
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        client.await.unwrap();
        got
    }

    #[tokio::test]
    async fn connections_pass_through_or_get_rewritten() {
        // Not HTTP/2: untouched, including a short one.
        let msg = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through_conn(msg.clone()).await, msg);
        assert_eq!(through_conn(b"PRI".to_vec()).await, b"PRI");

        // HTTP/2 with a clean authority: byte for byte, data after the
        // first block included (the connection has gone raw by then).
        let mut enc = loona_hpack::Encoder::new();
        let mut h2 = PREFACE.to_vec();
        frame_header(&mut h2, 0, 0x4, 0, 0);
        h2.extend(headers_frame(1, END_HEADERS, &enc_req(&mut enc, b"h:1")));
        let mut data = Vec::new();
        frame_header(&mut data, 5, 0x0, END_STREAM, 1);
        data.extend_from_slice(b"hello");
        h2.extend_from_slice(&data);
        h2.extend(headers_frame(3, END_HEADERS, &enc_req(&mut enc, b"h:1")));
        assert_eq!(through_conn(h2.clone()).await, h2);

        // etcdctl 3.4's URL authority: rewritten.
        let mut enc = loona_hpack::Encoder::new();
        let mut h2 = PREFACE.to_vec();
        h2.extend(headers_frame(
            1,
            END_HEADERS,
            &enc_req(&mut enc, b"http://127.0.0.1:2379"),
        ));
        h2.extend_from_slice(&data);
        let got = through_conn(h2).await;
        assert_eq!(&got[..PREFACE.len()], PREFACE);
        let (lists, others) = decode_out(&got[PREFACE.len()..]);
        assert_eq!(lists[0][3].1, b"127.0.0.1:2379".to_vec());
        assert_eq!(others, vec![data]);
    }
}
