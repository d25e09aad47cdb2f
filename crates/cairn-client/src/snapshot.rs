//! Snapshot streams and their integrity check.
//!
//! The Maintenance `Snapshot` stream carries the member's data padded with
//! zeros to a multiple of 512 bytes, followed by the 32-byte SHA-256 of
//! everything before it.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use sha2::{Digest, Sha256};

use crate::error::ClientError;
use crate::types::ResponseHeader;

/// Length of the trailing checksum.
pub const SNAPSHOT_HASH_LEN: usize = 32;
/// The data before the checksum is padded to a multiple of this.
pub const SNAPSHOT_ALIGN: u64 = 512;

/// Checks the trailing SHA-256 of a snapshot fed to it in chunks of any
/// size, holding back only the last 32 bytes seen.
#[derive(Clone, Default)]
pub struct SnapshotVerifier {
    hasher: Sha256,
    /// The last (up to) 32 bytes seen: the candidate checksum.
    tail: Vec<u8>,
    total: u64,
}

/// What a verified snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Bytes before the checksum (data plus padding).
    pub data_len: u64,
    pub sha256: [u8; 32],
}

impl SnapshotVerifier {
    pub fn new() -> Self {
        SnapshotVerifier::default()
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if chunk.len() >= SNAPSHOT_HASH_LEN {
            // Everything held back, and all but the chunk's last 32 bytes,
            // is data.
            self.hasher.update(&self.tail);
            let split = chunk.len() - SNAPSHOT_HASH_LEN;
            self.hasher.update(&chunk[..split]);
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[split..]);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > SNAPSHOT_HASH_LEN {
                let excess = self.tail.len() - SNAPSHOT_HASH_LEN;
                self.hasher.update(&self.tail[..excess]);
                self.tail.drain(..excess);
            }
        }
    }

    /// Bytes fed so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Check the layout and the checksum.
    pub fn finish(self) -> Result<SnapshotInfo, ClientError> {
        if self.total < SNAPSHOT_HASH_LEN as u64 {
            return Err(ClientError::Snapshot(format!(
                "stream too short for a checksum ({} bytes)",
                self.total
            )));
        }
        let data_len = self.total - SNAPSHOT_HASH_LEN as u64;
        if !data_len.is_multiple_of(SNAPSHOT_ALIGN) {
            return Err(ClientError::Snapshot(format!(
                "data is {data_len} bytes, not a multiple of {SNAPSHOT_ALIGN}: truncated or not a snapshot"
            )));
        }
        let sha256: [u8; 32] = self.hasher.finalize().into();
        if sha256.as_slice() != self.tail.as_slice() {
            return Err(ClientError::Snapshot(
                "SHA-256 mismatch: the snapshot is corrupt".into(),
            ));
        }
        Ok(SnapshotInfo { data_len, sha256 })
    }
}

/// The chunks of a snapshot, checksum included, as the server sends them.
/// Each chunk must arrive within the request timeout.
pub struct SnapshotStream {
    pub(crate) header: ResponseHeader,
    pub(crate) inner: Pin<Box<dyn Stream<Item = Result<Vec<u8>, ClientError>> + Send>>,
}

impl SnapshotStream {
    /// The header of the first message (the member that answers).
    pub fn header(&self) -> ResponseHeader {
        self.header
    }
}

impl Stream for SnapshotStream {
    type Item = Result<Vec<u8>, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let padded = out.len().div_ceil(512) * 512;
        out.resize(padded, 0);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn feed(bytes: &[u8], chunk: usize) -> Result<SnapshotInfo, ClientError> {
        let mut v = SnapshotVerifier::new();
        for c in bytes.chunks(chunk) {
            v.update(c);
        }
        assert_eq!(v.total(), bytes.len() as u64);
        v.finish()
    }

    #[test]
    fn good_snapshots_verify_whatever_the_chunking() {
        let s = snapshot(&[7u8; 1000]);
        for chunk in [1, 5, 31, 32, 33, 100, 512, 4096] {
            let info = feed(&s, chunk).unwrap();
            assert_eq!(info.data_len, 1024, "chunk {chunk}");
        }
        // Empty data: just the hash of nothing.
        let info = feed(&snapshot(&[]), 7).unwrap();
        assert_eq!(info.data_len, 0);
    }

    #[test]
    fn corrupt_or_truncated_snapshots_fail() {
        let mut s = snapshot(b"hello world");
        s[3] ^= 1;
        assert!(feed(&s, 64).unwrap_err().to_string().contains("mismatch"));
        let s = snapshot(b"hello world");
        assert!(feed(&s[..s.len() - 1], 64)
            .unwrap_err()
            .to_string()
            .contains("multiple of 512"));
        assert!(feed(&s[..10], 64)
            .unwrap_err()
            .to_string()
            .contains("too short"));
    }
}
