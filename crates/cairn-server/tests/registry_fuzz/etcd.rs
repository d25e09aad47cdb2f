//! The etcd API aimed at the reserved prefix, where the registry's records
//! live: reads are served; a Put there is refused (InvalidArgument, the
//! store's `ReservedPrefix`); a DeleteRange or Txn is refused while it
//! would delete or write a registry record, and served when it would not.
//! Either way the records stay as the registry wrote them, which the
//! private registries' model and the final checks see.

use cairn_proto::etcdserverpb as etcd;
use cairn_proto::etcdserverpb::compare::TargetUnion;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::mvccpb::KeyValue;
use rand::seq::IndexedRandom;
use rand::Rng;
use tonic::Code;

use super::*;

pub const RESERVED_PREFIX: &[u8] = b"\0cairn/";
/// Records that stay for the whole run: the shared registries' modes.
pub const PERMANENT: &[&[u8]] = &[b"\0cairn/reg/u", b"\0cairn/reg/d"];

/// Whether etcd's range `[key, range_end)` holds `k`.
fn covers(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => key == k,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

/// Whether the range may hold a key of the reserved prefix.
fn overlaps_reserved(key: &[u8], range_end: &[u8]) -> bool {
    let end = prefix_end(RESERVED_PREFIX);
    match range_end {
        [] => key.starts_with(RESERVED_PREFIX),
        [0] => key < end.as_slice(),
        range_end => key < end.as_slice() && range_end > RESERVED_PREFIX,
    }
}

/// The session a record of the reserved prefix belongs to, from its
/// `/<16 hex digits>` suffix; `None` if it has no owner (a registry's
/// mode) or is not a record the registry writes.
fn record_owner(key: &[u8]) -> Option<Option<i64>> {
    let rest = key.strip_prefix(RESERVED_PREFIX)?;
    if rest.starts_with(b"reg/") {
        return Some(None);
    }
    let owned =
        rest.starts_with(b"name/") || rest.starts_with(b"lock/") || rest.starts_with(b"elect/");
    if !owned || rest.len() < 17 {
        return None;
    }
    let (_, suffix) = rest.split_at(rest.len() - 17);
    let hex = std::str::from_utf8(suffix.strip_prefix(b"/")?).ok()?;
    let session = u64::from_str_radix(hex, 16).ok()? as i64;
    Some(Some(session))
}

#[derive(Debug)]
struct ReservedOp {
    op: Op,
    /// A write the store must refuse: a put in the prefix, or a delete
    /// over a record that stays for the whole run.
    must_refuse: bool,
    /// A write the store may refuse: any delete over the prefix.
    may_refuse: bool,
}

impl Fuzzer {
    /// The reserved prefix as one member has it, every record checked to
    /// be one the registry writes (an owned one attached to its owner's
    /// lease, a mode unattached).
    pub async fn reserved_keys(&mut self) -> Vec<KeyValue> {
        let request = etcd::RangeRequest {
            key: RESERVED_PREFIX.to_vec(),
            range_end: prefix_end(RESERVED_PREFIX),
            serializable: self.rng.random_bool(0.5),
            ..Default::default()
        };
        let mut kv = self.client().kv;
        // Not counted: most of these reads are made for another request.
        let resp = match self.answer(&request, kv.range(request.clone())).await {
            Ok(resp) => resp,
            Err(status) => {
                self.judge(&request, &status, &[]);
                return Vec::new();
            }
        };
        for record in &resp.kvs {
            let fine = match record_owner(&record.key) {
                Some(None) => {
                    record.lease == 0 && (record.value == b"unique" || record.value == b"duplicate")
                }
                Some(Some(owner)) => record.lease == owner && owner != 0,
                None => false,
            };
            if !fine {
                self.fail(
                    &request,
                    format_args!("a record the registry does not write: {record:?}"),
                );
            }
        }
        for permanent in PERMANENT {
            if !resp.kvs.iter().any(|r| r.key == *permanent) {
                self.fail(&request, format_args!("the record {permanent:?} is gone"));
            }
        }
        resp.kvs
    }

    pub async fn reserved_range(&mut self) {
        self.reserved_keys().await;
        self.count("Ok");
    }

    /// A key of the reserved prefix: a record that is there, a shared
    /// registry's mode, or one shaped like a record.
    async fn reserved_key(&mut self) -> Vec<u8> {
        let records = self.reserved_keys().await;
        let session = self.session() as u64;
        match self.rng.random_range(0..6) {
            0 | 1 => records
                .choose(&mut self.rng)
                .map(|r| r.key.clone())
                .unwrap_or_else(|| PERMANENT[0].to_vec()),
            2 => PERMANENT.choose(&mut self.rng).expect("records").to_vec(),
            3 => format!("\0cairn/name/u/k0/{session:016x}").into_bytes(),
            4 => format!("\0cairn/lock/q0/{session:016x}").into_bytes(),
            _ => [RESERVED_PREFIX, b"reg/new"].concat(),
        }
    }

    fn lease_or_none(&mut self) -> i64 {
        if self.rng.random_bool(0.5) {
            0
        } else {
            self.session()
        }
    }

    pub async fn reserved_put(&mut self) {
        let ignore_value = self.rng.random_bool(0.2);
        let ignore_lease = self.rng.random_bool(0.2);
        let request = etcd::PutRequest {
            key: self.reserved_key().await,
            value: if ignore_value {
                Vec::new()
            } else {
                self.value()
            },
            lease: if ignore_lease {
                0
            } else {
                self.lease_or_none()
            },
            prev_kv: self.rng.random_bool(0.5),
            ignore_value,
            ignore_lease,
        };
        let mut kv = self.client().kv;
        if let Ok(resp) = self
            .settle(&request, &[Code::InvalidArgument], kv.put(request.clone()))
            .await
        {
            self.fail(
                &request,
                format_args!("a put in the reserved prefix was served: {resp:?}"),
            );
        }
    }

    /// A delete range over or near the reserved prefix.
    async fn reserved_delete_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.rng.random_range(0..9) {
            0 | 1 => (self.reserved_key().await, Vec::new()),
            2 => (RESERVED_PREFIX.to_vec(), prefix_end(RESERVED_PREFIX)),
            3 => (vec![0], vec![0]),
            4 => (vec![0], vec![1]),
            5 => {
                let prefix = [RESERVED_PREFIX, b"name/"].concat();
                let end = prefix_end(&prefix);
                (prefix, end)
            }
            // Next to the prefix, holding none of it: served.
            6 => (vec![0], RESERVED_PREFIX.to_vec()),
            7 => (b"\0cairn0".to_vec(), b"\0cairn1".to_vec()),
            _ => (b"z/".to_vec(), prefix_end(b"z/")),
        }
    }

    pub async fn reserved_delete(&mut self) {
        let (key, range_end) = self.reserved_delete_range().await;
        let request = etcd::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: true,
        };
        let mut kv = self.client().kv;
        let answer = self
            .settle(
                &request,
                &[Code::InvalidArgument],
                kv.delete_range(request.clone()),
            )
            .await;
        let (key, end) = (&request.key, &request.range_end);
        let must_refuse = PERMANENT.iter().any(|p| covers(key, end, p));
        match answer {
            Ok(resp) => {
                let took_records = resp
                    .prev_kvs
                    .iter()
                    .any(|kv| kv.key.starts_with(RESERVED_PREFIX));
                if must_refuse || took_records || resp.deleted != resp.prev_kvs.len() as i64 {
                    self.fail(&request, format_args!("served: {}", describe(&resp)));
                }
            }
            Err(status) if !overlaps_reserved(key, end) => self.fail(
                &request,
                format_args!("a delete outside the reserved prefix was refused: {status:?}"),
            ),
            Err(_) => {}
        }
    }

    async fn reserved_op(&mut self, at: usize) -> ReservedOp {
        match self.rng.random_range(0..6) {
            0 => ReservedOp {
                op: Op::RequestPut(etcd::PutRequest {
                    key: self.reserved_key().await,
                    value: self.value(),
                    lease: self.lease_or_none(),
                    ..Default::default()
                }),
                must_refuse: true,
                may_refuse: true,
            },
            1 => {
                let (key, range_end) = self.reserved_delete_range().await;
                let must_refuse = PERMANENT.iter().any(|p| covers(&key, &range_end, p));
                let may_refuse = overlaps_reserved(&key, &range_end);
                // Deletes of `z/` keys would clash with the puts of `z/p…`.
                let (key, range_end) = if key.starts_with(b"z/") {
                    (format!("z/d{at}").into_bytes(), Vec::new())
                } else {
                    (key, range_end)
                };
                ReservedOp {
                    op: Op::RequestDeleteRange(etcd::DeleteRangeRequest {
                        key,
                        range_end,
                        prev_kv: true,
                    }),
                    must_refuse,
                    may_refuse,
                }
            }
            2 => ReservedOp {
                op: Op::RequestRange(etcd::RangeRequest {
                    key: RESERVED_PREFIX.to_vec(),
                    range_end: prefix_end(RESERVED_PREFIX),
                    ..Default::default()
                }),
                must_refuse: false,
                may_refuse: false,
            },
            3 | 4 => ReservedOp {
                op: Op::RequestPut(etcd::PutRequest {
                    key: format!("z/p{at}").into_bytes(),
                    value: self.value(),
                    ..Default::default()
                }),
                must_refuse: false,
                may_refuse: false,
            },
            _ => ReservedOp {
                op: Op::RequestDeleteRange(etcd::DeleteRangeRequest {
                    key: format!("z/d{at}").into_bytes(),
                    ..Default::default()
                }),
                must_refuse: false,
                may_refuse: false,
            },
        }
    }

    async fn compare(&mut self) -> etcd::Compare {
        let key = self.reserved_key().await;
        let target_union = match self.rng.random_range(0..5) {
            0 => TargetUnion::Version(self.rng.random_range(0..3)),
            1 => TargetUnion::CreateRevision(self.rng.random_range(0..100)),
            2 => TargetUnion::ModRevision(self.rng.random_range(0..100)),
            3 => TargetUnion::Value(
                [b"unique".to_vec(), Vec::new(), self.value()]
                    .choose(&mut self.rng)
                    .expect("values")
                    .clone(),
            ),
            _ => TargetUnion::Lease(self.session()),
        };
        let target = match &target_union {
            TargetUnion::Version(_) => etcd::compare::CompareTarget::Version,
            TargetUnion::CreateRevision(_) => etcd::compare::CompareTarget::Create,
            TargetUnion::ModRevision(_) => etcd::compare::CompareTarget::Mod,
            TargetUnion::Value(_) => etcd::compare::CompareTarget::Value,
            TargetUnion::Lease(_) => etcd::compare::CompareTarget::Lease,
        };
        etcd::Compare {
            result: self.rng.random_range(0..4),
            target: target as i32,
            key,
            range_end: Vec::new(),
            target_union: Some(target_union),
        }
    }

    /// A txn comparing records of the reserved prefix, whose branches
    /// write there or next to it.
    pub async fn reserved_txn(&mut self) {
        let mut compare = Vec::new();
        for _ in 0..self.rng.random_range(0..=2) {
            compare.push(self.compare().await);
        }
        let mut branches: [Vec<ReservedOp>; 2] = [Vec::new(), Vec::new()];
        for branch in &mut branches {
            for at in 0..self.rng.random_range(0..=3) {
                branch.push(self.reserved_op(at).await);
            }
        }
        let ops = |b: &[ReservedOp]| -> Vec<etcd::RequestOp> {
            b.iter()
                .map(|o| etcd::RequestOp {
                    request: Some(o.op.clone()),
                })
                .collect()
        };
        let request = etcd::TxnRequest {
            compare,
            success: ops(&branches[0]),
            failure: ops(&branches[1]),
        };
        let mut kv = self.client().kv;
        let answer = self
            .settle(&request, &[Code::InvalidArgument], kv.txn(request.clone()))
            .await;
        match answer {
            Ok(resp) => {
                let taken = &branches[usize::from(!resp.succeeded)];
                if taken.iter().any(|o| o.must_refuse) || taken.len() != resp.responses.len() {
                    self.fail(&request, format_args!("served: {}", describe(&resp)));
                }
            }
            Err(status) => {
                let refusable = branches.iter().flatten().any(|o| o.may_refuse);
                if !refusable {
                    self.fail(
                        &request,
                        format_args!("a txn writing nothing reserved was refused: {status:?}"),
                    );
                }
            }
        }
    }

    /// Sessions through the etcd lease API: revoked (a session closed),
    /// asked about, or given etcd keys (deleted when it ends).
    pub async fn etcd_lease(&mut self) {
        let id = self.session();
        let mut lease = self.client().lease;
        match self.rng.random_range(0..10) {
            0..=3 => {
                let request = etcd::LeaseRevokeRequest { id };
                let answer = self
                    .settle(&request, &[Code::NotFound], lease.lease_revoke(request))
                    .await;
                if answer.is_ok() {
                    if self.dead.contains(&id) {
                        self.fail(&request, "a session that ended was revoked");
                    }
                    self.session_gone(id).await;
                }
            }
            4..=6 => {
                let request = etcd::LeaseTimeToLiveRequest { id, keys: true };
                let Ok(resp) = self
                    .settle(&request, &[], lease.lease_time_to_live(request))
                    .await
                else {
                    return;
                };
                let dead = self.dead.contains(&id);
                if resp.id != id || (dead && resp.ttl != -1) {
                    self.fail(&request, format_args!("answered {}", describe(&resp)));
                }
            }
            _ => {
                let request = etcd::PutRequest {
                    key: format!("z/s{}", self.rng.random_range(0..8)).into_bytes(),
                    value: self.value(),
                    lease: id,
                    ..Default::default()
                };
                let mut kv = self.client().kv;
                let answer = self
                    .settle(
                        &request,
                        &[Code::NotFound, Code::InvalidArgument],
                        kv.put(request.clone()),
                    )
                    .await;
                if answer.is_ok() && (self.dead.contains(&id) || id < 0) {
                    self.fail(&request, "a put was attached to a lease that is gone");
                }
            }
        }
    }

    /// A compaction just behind the head (rare: registry watches from the
    /// past then answer OutOfRange).
    pub async fn compact(&mut self) {
        let request = etcd::StatusRequest {};
        let maintenance = self.client().maintenance;
        let status = must!(self, maintenance, status, request);
        let head = status.header.map_or(1, |h| h.revision);
        let request = etcd::CompactionRequest {
            revision: (head - self.rng.random_range(5..=50)).max(1),
            physical: self.rng.random_bool(0.5),
        };
        let mut kv = self.client().kv;
        // Another client compacted past it already: OutOfRange.
        let _ = self
            .settle(&request, &[Code::OutOfRange], kv.compact(request))
            .await;
    }
}
