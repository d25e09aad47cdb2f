//! Leases, watch streams, maintenance (Status, Alarm, HashKV) and
//! MemberList.

use std::sync::atomic::Ordering;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::*;
use futures::StreamExt;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::{describe, Fuzzer, CALL_TIMEOUT, WATCH_QUIET, WATCH_READ};

impl Fuzzer {
    pub async fn lease_grant(&mut self) {
        let ttl = match self.rng.random_range(0..8) {
            0 => -self.rng.random_range(1..=100),
            1 => 0,
            2..=5 => self.rng.random_range(1..=100),
            6 => cairn_store::MAX_LEASE_TTL_SECS + self.rng.random_range(0..=1),
            _ => i64::MAX,
        };
        let id = match self.rng.random_range(0..6) {
            0..=2 => 0,
            3 => self.fresh_lease_id(),
            4 => self.granted.choose(&mut self.rng).copied().unwrap_or(0),
            _ => self.odd_lease_id(),
        };
        let request = LeaseGrantRequest { ttl, id };
        let mut lease = self.client().lease;
        let Ok(resp) = self.settle(&request, lease.lease_grant(request)).await else {
            return;
        };
        self.saw(&resp.header);
        if resp.id <= 0 || (id != 0 && resp.id != id) {
            self.fail(&request, format_args!("granted lease {}", resp.id));
        }
        self.granted.push(resp.id);
    }

    /// Only leases of this client's own: another's would end keys it
    /// wrote.
    pub async fn lease_revoke(&mut self) {
        let request = LeaseRevokeRequest {
            id: self.lease_id(),
        };
        let mut lease = self.client().lease;
        if let Ok(resp) = self.settle(&request, lease.lease_revoke(request)).await {
            self.saw(&resp.header);
            self.revoked.push(request.id);
        }
    }

    pub async fn lease_time_to_live(&mut self) {
        let request = LeaseTimeToLiveRequest {
            id: self.lease_id(),
            keys: self.rng.random_bool(0.5),
        };
        let mut lease = self.client().lease;
        if let Ok(resp) = self
            .settle(&request, lease.lease_time_to_live(request))
            .await
        {
            if resp.id != request.id || (!request.keys && !resp.keys.is_empty()) {
                self.fail(&request, format_args!("answered {}", describe(&resp)));
            }
        }
    }

    pub async fn lease_leases(&mut self) {
        let request = LeaseLeasesRequest {};
        let mut lease = self.client().lease;
        let _ = self.settle(&request, lease.lease_leases(request)).await;
    }

    /// A keep-alive stream used once: one request, one answer, dropped.
    pub async fn lease_keep_alive(&mut self) {
        let request = LeaseKeepAliveRequest {
            id: self.lease_id(),
        };
        let (tx, rx) = mpsc::channel(1);
        tx.send(request)
            .await
            .expect("the stream is not yet opened");
        let mut lease = self.client().lease;
        let Ok(mut answers) = self
            .settle(&request, lease.lease_keep_alive(ReceiverStream::new(rx)))
            .await
        else {
            return;
        };
        match tokio::time::timeout(CALL_TIMEOUT, answers.next()).await {
            Err(_) => self.fail(&request, "no keep-alive answer"),
            Ok(None) => self.fail(&request, "the keep-alive stream ended unanswered"),
            Ok(Some(Err(status))) => self.judge(&request, &status),
            Ok(Some(Ok(resp))) if resp.id != request.id => {
                self.fail(&request, format_args!("answered {resp:?}"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }

    /// A watch stream with a few random requests on it, read until it goes
    /// quiet; then dropped.
    pub async fn watch(&mut self) {
        let count = self.rng.random_range(1..=5);
        let requests: Vec<WatchRequest> = (0..count).map(|_| self.watch_request()).collect();
        let (tx, rx) = mpsc::channel(requests.len());
        for r in &requests {
            tx.send(r.clone()).await.expect("room for every request");
        }
        let mut watch = self.client().watch;
        let Ok(mut answers) = self
            .settle(&requests, watch.watch(ReceiverStream::new(rx)))
            .await
        else {
            return;
        };
        let until = Instant::now() + WATCH_READ;
        while Instant::now() < until {
            match tokio::time::timeout(WATCH_QUIET, answers.next()).await {
                Err(_) => break,
                // `tx` is still open: the member must not end the stream.
                Ok(None) => self.fail(&requests, "the watch stream ended"),
                Ok(Some(Err(status))) => {
                    self.judge(&requests, &status);
                    break;
                }
                Ok(Some(Ok(resp))) => {
                    self.saw(&resp.header);
                    self.compacted = self.compacted.max(resp.compact_revision);
                }
            }
        }
        drop(tx);
    }

    pub async fn status(&mut self) {
        let request = StatusRequest {};
        let mut maintenance = self.client().maintenance;
        if let Ok(resp) = self.settle(&request, maintenance.status(request)).await {
            self.saw(&resp.header);
        }
    }

    /// Alarm requests are made one client at a time ([`super::Shared`]'s
    /// `alarms`), so a NOSPACE alarm raised is cleared by its raiser; while
    /// it is up, other clients' writes are refused with ResourceExhausted.
    pub async fn alarm(&mut self) {
        let member_id = match self.rng.random_range(0..3) {
            0 => 0,
            1 => self.shared.nodes[self.member].member_id(),
            _ => self.rng.random(),
        };
        let mut request = AlarmRequest {
            action: self.enum_int(3),
            member_id,
            alarm: self.enum_int(3),
        };
        // A raised CORRUPT alarm stops every write by design: what it
        // would show is not a bug.
        if request.action == AlarmAction::Activate as i32
            && request.alarm == AlarmType::Corrupt as i32
        {
            request.action = AlarmAction::Get as i32;
        }
        let shared = self.shared.clone();
        let _one_at_a_time = shared.alarms.lock().await;
        let raise = request.action == AlarmAction::Activate as i32
            && request.alarm == AlarmType::Nospace as i32;
        if raise {
            shared.nospace.fetch_add(1, Ordering::SeqCst);
        }
        let mut maintenance = self.client().maintenance;
        let answer = self.settle(&request, maintenance.alarm(request)).await;
        // A raised NOSPACE alarm refuses every put: clear it at once, so
        // the rest of the run still writes.
        if answer.is_ok() && raise {
            let clear = AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: 0,
                alarm: AlarmType::Nospace as i32,
            };
            let cleared = self
                .must(&clear, false, || {
                    let mut maintenance = maintenance.clone();
                    async move { maintenance.alarm(clear).await }
                })
                .await
                .expect("not a read of the past");
            if !cleared
                .alarms
                .iter()
                .any(|a| a.member_id == member_id && a.alarm == AlarmType::Nospace as i32)
            {
                self.fail(
                    &request,
                    format_args!("the alarm raised was not cleared: {cleared:?}"),
                );
            }
        }
        if raise {
            shared.nospace.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub async fn hash_kv(&mut self) {
        let request = HashKvRequest {
            revision: self.revision(),
        };
        let mut maintenance = self.client().maintenance;
        if let Ok(resp) = self.settle(&request, maintenance.hash_kv(request)).await {
            self.saw(&resp.header);
            self.compacted = self.compacted.max(resp.compact_revision);
        }
    }

    pub async fn member_list(&mut self) {
        let request = MemberListRequest {
            linearizable: self.rng.random_bool(0.5),
        };
        let mut cluster = self.client().cluster;
        if let Ok(resp) = self.settle(&request, cluster.member_list(request)).await {
            if resp.members.len() != self.shared.members.len() {
                self.fail(&request, format_args!("lists {:?}", resp.members));
            }
        }
    }
}
