//! Range, Put, DeleteRange, Txn and Compact, and the model's checks of
//! them: a put is read back on another member, a single-key delete leaves
//! the key gone, and at the end the client's keys hold what it last put
//! or deleted (exact: only this client writes its prefix); a count-only
//! range counts what a plain range returns (at the revision it was read
//! at, so other clients' writes do not matter); a txn answers each op of
//! the branch it took, and what that branch wrote (nested txns followed
//! into the branch each took) enters the model at the txn's revision.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::*;
use rand::Rng;
use tonic::transport::Channel;
use tonic::Code;

use super::{describe, prefix_end, Fuzzer, AFTER_THE_RUN, DECODE_SLACK, RESERVED_PREFIX};

/// `key` is in the range of a request with `start` and `end`: `start`
/// alone when `end` is empty, every key from `start` on when it is `\0`,
/// else `[start, end)` (empty if `end` is not after `start`).
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

/// Where the ops (in either branch, nested too) may write: each put's
/// key, each delete's range (key and range end).
fn writes(ops: &[RequestOp], out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    for op in ops {
        match &op.request {
            Some(Op::RequestPut(p)) => out.push((p.key.clone(), Vec::new())),
            Some(Op::RequestDeleteRange(d)) => out.push((d.key.clone(), d.range_end.clone())),
            Some(Op::RequestTxn(t)) => {
                writes(&t.success, out);
                writes(&t.failure, out);
            }
            Some(Op::RequestRange(_)) | None => {}
        }
    }
}

/// What the branch a txn took wrote, nested txns followed into the branch
/// each took, in op order: `(key, Some(value))` for a put the model can
/// know (no lease, a value of its own), `(key, None)` for a put it cannot,
/// and `(key, end)` ranges deleted.
fn taken_writes(ops: &[RequestOp], answers: &[ResponseOp], out: &mut Vec<TakenWrite>) {
    for (op, answer) in ops.iter().zip(answers) {
        match (&op.request, &answer.response) {
            (Some(Op::RequestPut(p)), _) => {
                let knowable = p.lease == 0 && !p.ignore_lease && !p.ignore_value;
                out.push(TakenWrite::Put {
                    key: p.key.clone(),
                    value: knowable.then(|| p.value.clone()),
                });
            }
            (Some(Op::RequestDeleteRange(d)), _) => out.push(TakenWrite::Delete {
                key: d.key.clone(),
                end: d.range_end.clone(),
            }),
            (Some(Op::RequestTxn(t)), Some(OpResponse::ResponseTxn(r))) => {
                let branch = if r.succeeded { &t.success } else { &t.failure };
                taken_writes(branch, &r.responses, out);
            }
            _ => {}
        }
    }
}

/// One write of a txn's taken branch (see [`taken_writes`]).
enum TakenWrite {
    Put {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Delete {
        key: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Fuzzer {
    /// A range the model needs answered, on `kv` (see [`Fuzzer::must`]).
    async fn must_range(
        &self,
        kv: KvClient<Channel>,
        request: &RangeRequest,
        past: bool,
    ) -> Option<RangeResponse> {
        self.must(request, past, || {
            let (mut kv, request) = (kv.clone(), request.clone());
            async move { kv.range(request).await }
        })
        .await
    }

    pub async fn range(&mut self) {
        let request = self.range_request();
        let mut kv = self.client().kv;
        let Ok(resp) = self.settle(&request, kv.range(request.clone())).await else {
            return;
        };
        self.saw(&resp.header);
        self.check_range(&request, &resp).await;
    }

    /// What a range answer must be whatever the keyspace holds.
    async fn check_range(&mut self, request: &RangeRequest, resp: &RangeResponse) {
        if request.count_only && !resp.kvs.is_empty() {
            self.fail(request, "count_only answered with key-values");
        }
        if request.limit > 0 && resp.kvs.len() as u64 > request.limit as u64 {
            self.fail(
                request,
                format_args!("{} kvs over the limit", resp.kvs.len()),
            );
        }
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        if request.limit != 0 || filtered || request.count_only {
            return;
        }
        if resp.more || resp.count != resp.kvs.len() as i64 {
            self.fail(
                request,
                format_args!(
                    "unlimited range: count {} more {} with {} kvs",
                    resp.count,
                    resp.more,
                    resp.kvs.len()
                ),
            );
        }
        // The same range counted at the revision it was read at, on the
        // same member (serializable: that revision is applied there).
        // Other clients write meanwhile, and may compact it away.
        let at = match (request.revision, &resp.header) {
            (r, _) if r > 0 => r,
            (_, Some(h)) => h.revision,
            (_, None) => self.fail(request, "no header"),
        };
        let count_request = RangeRequest {
            key: request.key.clone(),
            range_end: request.range_end.clone(),
            revision: at,
            serializable: true,
            count_only: true,
            ..Default::default()
        };
        let counted = self
            .must_range(self.client().kv, &count_request, true)
            .await;
        let Some(counted) = counted else {
            return;
        };
        if counted.count != resp.kvs.len() as i64 {
            self.fail(
                request,
                format_args!(
                    "count_only at {at} counts {}, the plain range returned {} kvs",
                    counted.count,
                    resp.kvs.len()
                ),
            );
        }
    }

    /// The model no longer knows what the keys in `[key, end)` hold: a
    /// write to them was sent.
    fn forget(&mut self, key: &[u8], end: &[u8]) {
        self.known.retain(|k, _| !in_range(k, key, end));
    }

    pub async fn put(&mut self) {
        let mut request = self.put_request();
        self.forget(&request.key, &[]);
        let too_large = self.shared.limits.max_request_bytes;
        let undecodable = too_large + DECODE_SLACK;
        // A few over the request limit; fewer past the gRPC decode limit
        // too, which tonic refuses before the service sees them.
        let refusal: Option<&[Code]> = match self.rng.random_range(0..1000) {
            0..=9 => {
                request.value = vec![b'o'; too_large + self.rng.random_range(1..=1024)];
                Some(&[Code::InvalidArgument])
            }
            10..=14 => {
                request.value = vec![b'o'; undecodable + self.rng.random_range(1..=4096)];
                Some(&[Code::OutOfRange, Code::InvalidArgument])
            }
            _ if request.key.is_empty() || request.key.starts_with(RESERVED_PREFIX) => {
                Some(&[Code::InvalidArgument])
            }
            _ => None,
        };
        let mut kv = self.client().kv;
        let answer = self.settle(&request, kv.put(request.clone())).await;
        let resp = match (answer, refusal) {
            (Ok(_), Some(codes)) => self.fail(
                &request,
                format_args!("accepted, expected one of {codes:?}"),
            ),
            (Err(status), Some(codes))
                if !codes.contains(&status.code()) && !self.no_space_during_request(&status) =>
            {
                self.fail(
                    &request,
                    format_args!("refused with {status:?}, expected one of {codes:?}"),
                )
            }
            (Err(_), _) => return,
            (Ok(resp), None) => resp,
        };
        self.saw(&resp.header);
        if !request.prev_kv && resp.prev_kv.is_some() {
            self.fail(&request, "prev_kv returned unasked");
        }
        // Only a key with no lease is sure to outlive the read.
        if request.lease == 0 && !request.ignore_lease {
            let written = resp.header.as_ref().map_or(0, |h| h.revision);
            let kv = self.read_back(&request.key).await;
            let ok = kv.as_ref().is_some_and(|kv| {
                kv.mod_revision == written
                    && kv.lease == 0
                    && (request.ignore_value || kv.value == request.value)
            });
            if !ok {
                self.fail(
                    &request,
                    format_args!(
                        "put at {written} then read on another member: {}",
                        describe(&kv)
                    ),
                );
            }
            let value = kv.map(|kv| kv.value).expect("read back");
            self.known.insert(request.key, Some((written, value)));
        }
    }

    /// A linearizable read of exactly `key` (one of this client's) on
    /// another member.
    async fn read_back(&mut self, key: &[u8]) -> Option<cairn_proto::mvccpb::KeyValue> {
        let request = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let resp = self
            .must_range(self.other_client().kv, &request, false)
            .await
            .expect("a read at the head");
        if resp.kvs.len() > 1 {
            self.fail(&request, "a single-key range found several keys");
        }
        resp.kvs.into_iter().next()
    }

    pub async fn delete_range(&mut self) {
        let request = self.delete_request();
        let mut kv = self.client().kv;
        let answer = self
            .settle(&request, kv.delete_range(request.clone()))
            .await;
        let resp = match answer {
            Ok(_) if request.key.is_empty() => self.fail(&request, "accepted an empty key"),
            Ok(resp) => resp,
            Err(_) => return self.forget(&request.key, &request.range_end),
        };
        // Every key of the range is gone, those the model knew too.
        for (key, known) in &mut self.known {
            if in_range(key, &request.key, &request.range_end) {
                *known = None;
            }
        }
        self.saw(&resp.header);
        let prev = resp.prev_kvs.len() as i64;
        if (request.prev_kv && prev != resp.deleted) || (!request.prev_kv && prev != 0) {
            self.fail(
                &request,
                format_args!("deleted {} with {prev} prev_kvs", resp.deleted),
            );
        }
        if request.range_end.is_empty() {
            if let Some(kv) = self.read_back(&request.key).await {
                self.fail(&request, format_args!("deleted key still reads {kv:?}"));
            }
            self.known.insert(request.key, None);
        }
    }

    pub async fn txn(&mut self) {
        let request = self.txn_request(1);
        let mut written = Vec::new();
        writes(&request.success, &mut written);
        writes(&request.failure, &mut written);
        for (key, end) in written {
            self.forget(&key, &end);
        }
        let mut kv = self.client().kv;
        let Ok(resp) = self.settle(&request, kv.txn(request.clone())).await else {
            return;
        };
        self.saw(&resp.header);
        let branch = if resp.succeeded {
            &request.success
        } else {
            &request.failure
        };
        let answered_each_op = branch.len() == resp.responses.len()
            && branch.iter().zip(&resp.responses).all(|(op, r)| {
                matches!(
                    (&op.request, &r.response),
                    (
                        Some(Op::RequestRange(_)),
                        Some(OpResponse::ResponseRange(_))
                    ) | (Some(Op::RequestPut(_)), Some(OpResponse::ResponsePut(_)))
                        | (
                            Some(Op::RequestDeleteRange(_)),
                            Some(OpResponse::ResponseDeleteRange(_))
                        )
                        | (Some(Op::RequestTxn(_)), Some(OpResponse::ResponseTxn(_)))
                )
            });
        if !answered_each_op {
            self.fail(
                &request,
                format_args!("the answers do not match the branch: {}", describe(&resp)),
            );
        }
        // The branch taken is known now: what it wrote is, at the txn's
        // revision (every write of a txn shares it). Only this client's
        // own keys enter the model.
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        let own = self.own_prefix();
        let mut taken = Vec::new();
        taken_writes(branch, &resp.responses, &mut taken);
        for write in taken {
            match write {
                TakenWrite::Put {
                    key,
                    value: Some(value),
                } if key.starts_with(&own) => {
                    self.known.insert(key, Some((revision, value)));
                }
                TakenWrite::Put { .. } => {}
                TakenWrite::Delete { key, end } => {
                    for (k, known) in &mut self.known {
                        if in_range(k, &key, &end) {
                            *known = None;
                        }
                    }
                    if end.is_empty() && key.starts_with(&own) {
                        self.known.insert(key, None);
                    }
                }
            }
        }
    }

    /// A compaction changes no key's current value, so it breaks no
    /// client's model; other clients' reads of the past it removes answer
    /// `OutOfRange`, which their checks expect.
    pub async fn compact(&mut self) {
        let revision = match self.rng.random_range(0..6) {
            0 => -self.rng.random_range(0..=10),
            1 => self.rng.random_range(1..=self.head.max(1)),
            // Close behind the head, so reads of the recent past still work.
            2 | 3 => (self.head - self.rng.random_range(0..=20)).max(1),
            4 => self.head + self.rng.random_range(1..=10),
            _ => self.compacted,
        };
        let request = CompactionRequest {
            revision,
            physical: self.rng.random_bool(0.5),
        };
        let mut kv = self.client().kv;
        if let Ok(resp) = self.settle(&request, kv.compact(request)).await {
            self.saw(&resp.header);
            self.compacted = self.compacted.max(revision);
        }
    }
}

impl Fuzzer {
    /// After every client's requests: this client's keys hold what it
    /// last put or deleted, on a linearizable read of its whole prefix.
    /// Another client's write there would show here.
    pub async fn check_own_keys(&mut self) -> usize {
        self.index = AFTER_THE_RUN;
        let own = self.own_prefix();
        let request = RangeRequest {
            range_end: prefix_end(&own),
            key: own,
            ..Default::default()
        };
        let resp = self
            .must_range(self.client().kv, &request, false)
            .await
            .expect("a read at the head");
        let found: std::collections::BTreeMap<_, _> =
            resp.kvs.iter().map(|kv| (kv.key.as_slice(), kv)).collect();
        for (key, expected) in &self.known {
            let kv = found.get(key.as_slice());
            let holds = match (expected, kv) {
                (None, None) => true,
                (Some((revision, value)), Some(kv)) => {
                    kv.mod_revision == *revision && kv.value == *value && kv.lease == 0
                }
                _ => false,
            };
            if !holds {
                self.fail(
                    &request,
                    format_args!(
                        "key {} should hold (mod revision, value) {}, holds {}",
                        describe(key),
                        describe(expected),
                        describe(&kv)
                    ),
                );
            }
        }
        self.known.len()
    }
}
