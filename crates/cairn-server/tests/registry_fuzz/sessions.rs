//! Requests to `cairn.v1.Session`, and what a session that ended must
//! have left behind: nothing.
//!
//! Codes a correct server gives (services/registry/session.rs):
//! InvalidArgument for a TTL of 0 or less, OutOfRange for one over the
//! most a lease takes (the store's `LeaseTtlTooLarge`), NotFound for
//! closing a session that does not exist; a keepalive of one answers
//! `lost`, SessionInfo `found: false`.

use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use futures::StreamExt;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::*;

impl Fuzzer {
    // --- Sessions --------------------------------------------------------

    pub async fn create_session(&mut self) {
        let ttl = self.ttl();
        self.create_session_with(ttl).await;
    }

    /// Creates a session of `ttl` seconds; its ID if it was created.
    async fn create_session_with(&mut self, ttl: i64) -> Option<i64> {
        let request = pb::CreateSessionRequest { ttl_secs: ttl };
        let allowed = match ttl {
            t if t <= 0 => INVALID,
            t if t > cairn_store::MAX_LEASE_TTL_SECS => &[Code::OutOfRange][..],
            _ => READS,
        };
        let sent = Instant::now();
        let mut session = self.client().session;
        let resp = self
            .settle(&request, allowed, session.create_session(request))
            .await
            .ok()?;
        if !allowed.is_empty() {
            self.fail(&request, format_args!("accepted: {resp:?}"));
        }
        let granted = ttl.max(cairn_store::MIN_LEASE_TTL_SECS);
        if resp.session_id <= 0 || resp.ttl_secs != granted || resp.revision <= 0 {
            self.fail(
                &request,
                format_args!("answered {resp:?}, expected a TTL of {granted}"),
            );
        }
        self.shared.record_session(resp.session_id);
        self.created.insert(resp.session_id);
        self.own.push(Own {
            id: resp.session_id,
            names: Default::default(),
            candidacy: None,
            abandoned: false,
        });
        // Another member knows it at once (linearizable read), unless its
        // TTL ran out since it was asked for (half a second of slack for
        // the leader's clock).
        let info = pb::SessionInfoRequest {
            session_id: resp.session_id,
        };
        let found = must!(self, self.other(1).session, session_info, info);
        let young =
            sent.elapsed() + Duration::from_millis(500) < Duration::from_secs(granted as u64);
        if young && (!found.found || found.granted_ttl_secs != granted) {
            self.fail(
                &request,
                format_args!("created {resp:?}, but another member answers {found:?}"),
            );
        }
        Some(resp.session_id)
    }

    /// One of this client's live sessions, made if it has none.
    pub async fn own_session(&mut self) -> Option<i64> {
        if self.own.is_empty() || self.rng.random_ratio(1, 10) {
            let ttl = self.rng.random_range(2..=6);
            return self.create_session_with(ttl).await;
        }
        self.own.choose(&mut self.rng).map(|o| o.id)
    }

    /// Whether an own session is gone (a linearizable read on another
    /// member); if so it is checked to have left nothing behind.
    pub async fn confirm_gone(&mut self, id: i64) -> bool {
        let request = pb::SessionInfoRequest { session_id: id };
        let info = must!(self, self.other(2).session, session_info, request);
        if !info.found {
            self.session_gone(id).await;
        }
        !info.found
    }

    /// A session that ended left nothing in the private registry and
    /// election: its owner's records go with it, in one revision.
    pub async fn check_gone(&mut self, own: &Own) {
        let registry = self.private_registry();
        for key in &own.names {
            let request = pb::LookupRequest {
                registry: registry.clone(),
                key: key.clone(),
            };
            let resp = must!(self, self.other(1).registry, lookup, request.clone());
            if resp.entries.iter().any(|e| e.owner == own.id) {
                self.fail(
                    &request,
                    format_args!(
                        "session {:x} ended, but its name is still there: {resp:?}",
                        own.id
                    ),
                );
            }
        }
        let request = pb::LeaderRequest {
            name: self.private_election(),
        };
        let resp = must!(self, self.other(2).election, leader, request.clone());
        if resp.leader.as_ref().is_some_and(|l| l.session_id == own.id) {
            self.fail(
                &request,
                format_args!("session {:x} ended, but still leads: {resp:?}", own.id),
            );
        }
        let request = pb::SessionInfoRequest { session_id: own.id };
        let info = must!(self, self.other(1).session, session_info, request);
        if info.found {
            self.fail(
                &request,
                format_args!("session {:x} ended, then was found: {info:?}", own.id),
            );
        }
    }

    /// A keepalive stream with a few requests on it, one answer each.
    pub async fn keep_alive(&mut self) {
        let count = self.rng.random_range(1..=3);
        let ids: Vec<i64> = (0..count).map(|_| self.session()).collect();
        let (tx, rx) = mpsc::channel(ids.len());
        for id in &ids {
            tx.send(pb::KeepAliveRequest { session_id: *id })
                .await
                .expect("room for every request");
        }
        let mut session = self.client().session;
        let Ok(mut answers) = self
            .settle(&ids, READS, session.keep_alive(ReceiverStream::new(rx)))
            .await
        else {
            return;
        };
        for id in &ids {
            let resp = match tokio::time::timeout(CALL_TIMEOUT, answers.next()).await {
                Err(_) => self.fail(&ids, "no keepalive answer"),
                Ok(None) => self.fail(&ids, "the keepalive stream ended unanswered"),
                Ok(Some(Err(status))) => {
                    // An error ends the stream.
                    self.judge(&ids, &status, READS);
                    return;
                }
                Ok(Some(Ok(resp))) => resp,
            };
            if resp.session_id != *id || (!resp.lost && resp.ttl_secs <= 0) {
                self.fail(&ids, format_args!("answered {resp:?} for session {id:x}"));
            }
            if !resp.lost && self.dead.contains(id) {
                self.fail(
                    &ids,
                    format_args!("session {id:x} ended, then was kept alive"),
                );
            }
            if resp.lost && self.own.iter().any(|o| o.id == *id) {
                // Lost is final: the session is gone for every member.
                self.session_gone(*id).await;
            }
        }
        drop(tx);
    }

    pub async fn close_session(&mut self) {
        let request = pb::CloseSessionRequest {
            session_id: self.session(),
        };
        let mut session = self.client().session;
        let answer = self
            .settle(&request, NOT_FOUND, session.close_session(request))
            .await;
        let id = request.session_id;
        match answer {
            Ok(resp) => {
                if resp.revision <= 0 || self.dead.contains(&id) {
                    self.fail(&request, format_args!("closed: {resp:?}"));
                }
                self.session_gone(id).await;
            }
            Err(s) if s.code() == Code::NotFound && self.own.iter().any(|o| o.id == id) => {
                if !self.confirm_gone(id).await {
                    self.fail(&request, "refused NotFound, but the session is there");
                }
            }
            Err(_) => {}
        }
    }

    pub async fn session_info(&mut self) {
        let request = pb::SessionInfoRequest {
            session_id: self.session(),
        };
        let mut session = self.client().session;
        let Ok(resp) = self
            .settle(&request, READS, session.session_info(request))
            .await
        else {
            return;
        };
        let id = request.session_id;
        let bad = if resp.found {
            resp.granted_ttl_secs < cairn_store::MIN_LEASE_TTL_SECS
                || resp.remaining_ms < 0
                || resp.remaining_ms > resp.granted_ttl_secs.saturating_mul(1000)
                || self.dead.contains(&id)
        } else {
            resp.granted_ttl_secs != 0 || resp.remaining_ms != 0
        };
        if bad || resp.revision <= 0 {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
        if !resp.found && self.own.iter().any(|o| o.id == id) {
            self.session_gone(id).await;
        }
    }
}
