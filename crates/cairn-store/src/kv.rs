//! Plain data types of the keyspace: what a key holds at one revision and
//! the events a change produces. They mirror etcd's `mvccpb` messages but
//! carry no wire concerns.

use serde::{Deserialize, Serialize};

/// A key's value at one revision, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the put that created this key (its current generation).
    pub create_revision: i64,
    /// Revision of the last change to this key.
    pub mod_revision: i64,
    /// Number of puts since the key was created; reset by a delete.
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. Events of the same revision are delivered together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete: the key with `mod_revision` set to the deleting revision
    /// and everything else empty, as etcd does.
    pub kv: KeyValue,
    /// The key's previous value, if it existed.
    pub prev_kv: Option<KeyValue>,
}

/// A half-open key interval `[start, end)` in etcd's encoding: an empty
/// `end` means the single key `start`; `end == [0]` means "every key >= start".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeyRange {
    #[serde(with = "serde_bytes")]
    pub start: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: key.into(),
            end: Vec::new(),
        }
    }

    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: end.into(),
        }
    }

    /// Every key that starts with `prefix`; the empty prefix means every key
    /// (encoded as etcd clients do: `["\0", "\0")`).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        if start.is_empty() {
            return KeyRange {
                start: vec![0],
                end: vec![0],
            };
        }
        let end = prefix_end(&start);
        KeyRange { start, end }
    }

    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    /// True when the range reaches to the end of the keyspace.
    pub fn is_open_ended(&self) -> bool {
        self.end == [0]
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            return key == self.start.as_slice();
        }
        key >= self.start.as_slice() && (self.is_open_ended() || key < self.end.as_slice())
    }

    /// The exclusive upper bound, `None` when unbounded.
    pub fn upper(&self) -> Option<&[u8]> {
        if self.is_open_ended() {
            None
        } else {
            Some(&self.end)
        }
    }
}

/// The smallest key greater than every key with `prefix` (etcd's
/// `GetPrefixRangeEnd`); `[0]` ("to the end") when no such key exists.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_carries_over_ff() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn range_contains_follows_etcd_encoding() {
        assert!(KeyRange::single("a").contains(b"a"));
        assert!(!KeyRange::single("a").contains(b"ab"));
        assert!(KeyRange::prefix("a").contains(b"ab"));
        assert!(!KeyRange::prefix("a").contains(b"b"));
        assert!(KeyRange::new("b", vec![0]).contains(b"zzz"));
        assert!(!KeyRange::new("b", vec![0]).contains(b"a"));
    }
}
