//! The random values requests are made of. Each client writes only under
//! its own prefix `c{client}/` (or, hostile, to keys every write refuses:
//! empty ones and the reserved prefix), and its deletes' range ends are
//! cut back to that prefix ([`Fuzzer::confine`]): no other client changes
//! its keys, so its model stays exact. Its reads, watches and txn compares
//! range anywhere: over other clients' keys while they are written, and
//! over the whole keyspace. Lease IDs it asks for are its own (granted to
//! it, or from its own range of IDs), so a revoke never ends another
//! client's lease.

use cairn_proto::etcdserverpb::compare::TargetUnion;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::{prefix_end, Fuzzer, KEY_ALPHABET, RESERVED_PREFIX};

impl Fuzzer {
    /// This client's key prefix: only it writes under it.
    pub fn own_prefix(&self) -> Vec<u8> {
        format!("c{}/", self.client).into_bytes()
    }

    fn small_key(&mut self) -> Vec<u8> {
        let len = self.rng.random_range(1..=3);
        (0..len)
            .map(|_| *KEY_ALPHABET.choose(&mut self.rng).expect("alphabet"))
            .collect()
    }

    /// A key this client may write: under its own prefix, or (hostile)
    /// one every write refuses, empty or in the reserved prefix.
    pub fn key(&mut self) -> Vec<u8> {
        let pick = self.rng.random_range(0..100);
        if self.hostile && pick < 3 {
            return Vec::new();
        }
        if self.hostile && pick < 5 {
            return [RESERVED_PREFIX, &self.small_key()].concat();
        }
        let mut key = self.own_prefix();
        match pick {
            // Not UTF-8: a lone continuation byte, an overlong lead byte.
            5..=7 => {
                key.extend(self.small_key());
                key.push(*[0x80, 0xc0, 0xff].choose(&mut self.rng).expect("bytes"));
            }
            8 => {
                key.extend(self.small_key());
                let len = self.rng.random_range(1024..=64 * 1024);
                key.resize(key.len() + len, b'k');
            }
            _ => key.extend(self.small_key()),
        }
        key
    }

    /// A key to read at: as [`Fuzzer::key`], but a quarter of those under
    /// a prefix are moved under some client's (maybe another's).
    pub fn any_key(&mut self) -> Vec<u8> {
        let mut key = self.key();
        let own = self.own_prefix();
        let client = self.rng.random_range(0..self.shared.clients);
        if key.starts_with(&own) && self.rng.random_bool(0.25) {
            key = [format!("c{client}/").as_bytes(), &key[own.len()..]].concat();
        }
        key
    }

    /// A range end for a read from `key`: none (that key alone), `\0`
    /// (every key from it on), its prefix's end, another key (maybe before
    /// it), or itself.
    pub fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=6 => Vec::new(),
            7..=9 => vec![0],
            10..=14 => prefix_end(key),
            15..=17 => self.any_key(),
            _ => key.to_vec(),
        }
    }

    /// A key and range end to read: now and then every key there is.
    fn read_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        if self.rng.random_ratio(1, 30) {
            return (vec![0], vec![0]);
        }
        let key = self.any_key();
        let end = self.range_end(&key);
        (key, end)
    }

    /// `end` cut back so that `[key, end)` stays within the prefix `key`
    /// is under: this client's, or the reserved one (where no etcd write
    /// lands). Any range end is kept with an empty key, which every write
    /// refuses.
    pub fn confine(&self, key: &[u8], end: Vec<u8>) -> Vec<u8> {
        let own = self.own_prefix();
        let bound = if key.starts_with(&own) {
            prefix_end(&own)
        } else if key.starts_with(RESERVED_PREFIX) {
            prefix_end(RESERVED_PREFIX)
        } else {
            return end;
        };
        if !end.is_empty() && (end == [0] || end > bound) {
            bound
        } else {
            end
        }
    }

    pub fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..1000) {
            0..=99 => Vec::new(),
            100..=149 => {
                let len = self.rng.random_range(1..=16);
                (0..len)
                    .map(|_| self.rng.random_range(0x80..=0xff))
                    .collect()
            }
            150..=179 => vec![b'm'; self.rng.random_range(1024..=16 * 1024)],
            // Long, but a put of it stays under the request limit.
            180..=186 => {
                let most = self.shared.limits.max_request_bytes - 8 * 1024;
                vec![b'l'; self.rng.random_range(64 * 1024..=most)]
            }
            _ => {
                let len = self.rng.random_range(1..=8);
                (0..len)
                    .map(|_| *b"xyz".choose(&mut self.rng).expect("alphabet"))
                    .collect()
            }
        }
    }

    pub fn any_i64(&mut self) -> i64 {
        match self.rng.random_range(0..6) {
            0 => -1,
            1 => 0,
            2 => self.rng.random_range(1..=10),
            3 => i64::MAX,
            4 => i64::MIN,
            _ => self.rng.random(),
        }
    }

    /// An enum's wire number: mostly one of its `count` values, else one
    /// no enum has.
    pub fn enum_int(&mut self, count: i32) -> i32 {
        if !self.hostile || self.rng.random_bool(0.7) {
            return self.rng.random_range(0..count);
        }
        *[-1, count, count + 7, i32::MAX, i32::MIN]
            .choose(&mut self.rng)
            .expect("numbers")
    }

    /// A revision to read at: the head, an older one (maybe compacted), a
    /// future one, or nonsense.
    pub fn revision(&mut self) -> i64 {
        if !self.hostile {
            return match self.rng.random_range(0..4) {
                0 | 1 => 0,
                2 => self.head,
                _ => self
                    .rng
                    .random_range(self.compacted.max(1)..=self.head.max(1)),
            };
        }
        match self.rng.random_range(0..10) {
            0 => -self.rng.random_range(1..=1000),
            1..=3 => 0,
            4..=5 => self.head,
            6..=7 => self.rng.random_range(1..=self.head.max(1)),
            8 => self.head + self.rng.random_range(1..=100),
            _ => *[i64::MAX, i64::MIN, self.compacted, self.compacted - 1]
                .choose(&mut self.rng)
                .expect("revisions"),
        }
    }

    fn limit(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0..=3 => 0,
            4..=6 => self.rng.random_range(1..=5),
            7 => -self.rng.random_range(1..=10),
            8 => i64::MAX,
            _ => self.any_i64(),
        }
    }

    /// A lease ID from this client's own range: none likely granted yet
    /// (the IDs members pick are spread over all of `i64`).
    pub fn fresh_lease_id(&mut self) -> i64 {
        ((self.client as i64 + 1) << 40) + self.rng.random_range(1..=1000)
    }

    /// A lease ID no lease can have (zero or negative), or the largest
    /// one this client may ask for (each client its own).
    pub fn odd_lease_id(&mut self) -> i64 {
        match self.rng.random_range(0..5) {
            0 => 0,
            1 => -1,
            2 => i64::MIN,
            3 => -self.rng.random_range(1..=1000),
            _ => i64::MAX - self.client as i64,
        }
    }

    /// A lease ID: one this client was granted (maybe since expired), one
    /// it revoked, or one it never had (from its own range, or odd).
    pub fn lease_id(&mut self) -> i64 {
        match self.rng.random_range(0..6) {
            0 | 1 => self.granted.choose(&mut self.rng).copied().unwrap_or(0),
            2 => self.revoked.choose(&mut self.rng).copied().unwrap_or(0),
            3 => 0,
            4 => self.fresh_lease_id(),
            _ => self.odd_lease_id(),
        }
    }

    pub fn range_request(&mut self) -> RangeRequest {
        let (key, range_end) = self.read_range();
        let filtered = self.rng.random_bool(0.25);
        let filter = |f: &mut Self| if filtered { f.revision() } else { 0 };
        RangeRequest {
            key,
            range_end,
            limit: self.limit(),
            revision: self.revision(),
            sort_order: self.enum_int(3),
            sort_target: self.enum_int(5),
            serializable: self.rng.random_bool(0.3),
            keys_only: self.rng.random_bool(0.2),
            count_only: self.rng.random_bool(0.15),
            min_mod_revision: filter(self),
            max_mod_revision: filter(self),
            min_create_revision: filter(self),
            max_create_revision: filter(self),
        }
    }

    pub fn put_request(&mut self) -> PutRequest {
        let ignore_value = self.rng.random_bool(0.1);
        let ignore_lease = self.rng.random_bool(0.1);
        // What the flags allow, or (hostile) sometimes what they forbid.
        let clash = |f: &mut Self| f.hostile && f.rng.random_bool(0.3);
        let value = if ignore_value && !clash(self) {
            Vec::new()
        } else {
            self.value()
        };
        let lease = if (ignore_lease && !clash(self)) || self.rng.random_bool(0.6) {
            0
        } else if self.hostile {
            self.lease_id()
        } else {
            self.granted.last().copied().unwrap_or(0)
        };
        PutRequest {
            key: self.key(),
            value,
            lease,
            prev_kv: self.rng.random_bool(0.3),
            ignore_value,
            ignore_lease,
        }
    }

    /// A delete of this client's keys (or of keys every write refuses):
    /// its range end is confined.
    pub fn delete_request(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        let end = self.range_end(&key);
        DeleteRangeRequest {
            range_end: self.confine(&key, end),
            key,
            prev_kv: self.rng.random_bool(0.4),
        }
    }

    fn compare(&mut self) -> Compare {
        let key = self.any_key();
        let range_end = if self.rng.random_bool(0.3) {
            self.range_end(&key)
        } else {
            Vec::new()
        };
        // The operand often matches the target, sometimes not (it then
        // reads as zero), sometimes it is missing.
        let target_union = match self.rng.random_range(0..6) {
            0 => None,
            1 => Some(TargetUnion::Version(self.any_i64())),
            2 => Some(TargetUnion::CreateRevision(self.revision())),
            3 => Some(TargetUnion::ModRevision(self.revision())),
            4 => Some(TargetUnion::Value(self.value())),
            _ => Some(TargetUnion::Lease(self.lease_id())),
        };
        Compare {
            result: self.enum_int(4),
            target: self.enum_int(5),
            key,
            range_end,
            target_union,
        }
    }

    /// One branch of a txn at `depth` (1 for the top); txns nest at most
    /// two deep.
    fn ops(&mut self, depth: usize) -> Vec<RequestOp> {
        // Over etcd's `--max-txn-ops`.
        if self.hostile && self.rng.random_ratio(1, 100) {
            let own = String::from_utf8(self.own_prefix()).expect("ASCII");
            return (0..=self.shared.limits.max_txn_ops)
                .map(|i| RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: format!("{own}many/{i}").into_bytes(),
                        ..Default::default()
                    })),
                })
                .collect();
        }
        let mut ops: Vec<RequestOp> = Vec::new();
        for _ in 0..self.rng.random_range(0..=4) {
            let request = match self.rng.random_range(0..20) {
                0..=5 => Some(Op::RequestRange(self.range_request())),
                6..=11 => Some(Op::RequestPut(self.put_request())),
                12..=14 => Some(Op::RequestDeleteRange(self.delete_request())),
                15..=17 if depth < 2 => Some(Op::RequestTxn(self.txn_request(depth + 1))),
                // etcd refuses an op with nothing in it.
                18 if self.hostile => None,
                // A second write to a key this branch writes: refused.
                19 if self.hostile => {
                    let written = ops.iter().find_map(|op| match &op.request {
                        Some(Op::RequestPut(p)) => Some(p.key.clone()),
                        _ => None,
                    });
                    let mut put = self.put_request();
                    put.key = written.unwrap_or(put.key);
                    Some(Op::RequestPut(put))
                }
                _ => Some(Op::RequestRange(self.range_request())),
            };
            ops.push(RequestOp { request });
        }
        ops
    }

    pub fn txn_request(&mut self, depth: usize) -> TxnRequest {
        let compares = self.rng.random_range(0..=4);
        TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }

    pub fn watch_request(&mut self) -> WatchRequest {
        let watch_id = |f: &mut Self| match f.rng.random_range(0..4) {
            0 | 1 => 0,
            2 => f.rng.random_range(1..=3),
            _ => f.any_i64(),
        };
        let request_union = match self.rng.random_range(0..20) {
            0..=11 => {
                let (key, range_end) = self.read_range();
                let filters = self.rng.random_range(0..=3);
                Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    range_end,
                    key,
                    start_revision: self.revision(),
                    progress_notify: self.rng.random_bool(0.3),
                    filters: (0..filters).map(|_| self.enum_int(2)).collect(),
                    prev_kv: self.rng.random_bool(0.3),
                    watch_id: watch_id(self),
                    fragment: self.rng.random_bool(0.3),
                }))
            }
            12..=15 => Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: watch_id(self),
            })),
            16..=18 => Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
            _ => None,
        };
        WatchRequest { request_union }
    }
}
