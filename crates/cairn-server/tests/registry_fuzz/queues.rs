//! Requests to `cairn.v1.Lock` and `cairn.v1.Election`, and the model of
//! each client's private election.
//!
//! Codes a correct server gives (services/registry/queue.rs):
//! NotFound for a session that does not exist, InvalidArgument for a bad
//! name or a value over `max_request_bytes`, FailedPrecondition for a
//! waiter that lost its place (its session ended) and a proclaim without
//! the lead, OutOfRange for a message over the gRPC decode limit.

use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use futures::StreamExt;
use rand::seq::IndexedRandom;
use rand::Rng;
use tonic::Code;

use super::*;

/// How long an Observe stream may take to say who leads.
const FIRST_OBSERVATION: Duration = Duration::from_secs(5);

impl Fuzzer {
    /// Campaigns in the private election with an own session (briefly:
    /// another own session may lead); the winner is then the leader every
    /// member reports, as long as its session lives.
    pub async fn private_campaign(&mut self) {
        let Some(own) = self.own.choose(&mut self.rng).cloned() else {
            self.own_session().await;
            return;
        };
        let name = self.private_election();
        if let Some(token) = own.candidacy {
            self.check_leads(&name, own.id, token).await;
            return;
        }
        if own.abandoned {
            return;
        }
        let request = pb::CampaignRequest {
            name: name.clone(),
            session_id: own.id,
            value: self.value(),
        };
        let wait = Duration::from_millis(self.rng.random_range(200..=1000));
        let mut election = self.client().election;
        let call = election.campaign(request.clone());
        let Ok(answer) = tokio::time::timeout(wait, call).await else {
            self.count("abandoned");
            if let Some(o) = self.own.iter_mut().find(|o| o.id == own.id) {
                o.abandoned = true;
            }
            return;
        };
        let resp = match answer.map(tonic::Response::into_inner) {
            Ok(resp) => resp,
            Err(status) => {
                // Refused only for a session gone (NotFound) or one that
                // lost its place while waiting (its session ended).
                self.judge(
                    &request,
                    &status,
                    &[Code::NotFound, Code::FailedPrecondition],
                );
                if !self.confirm_gone(own.id).await {
                    self.fail(&request, "refused, but the session lives");
                }
                return;
            }
        };
        self.count("Ok");
        if resp.fencing_token <= 0 || resp.revision < resp.fencing_token {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
        if let Some(o) = self.own.iter_mut().find(|o| o.id == own.id) {
            o.candidacy = Some(resp.fencing_token);
        }
        self.check_leads(&name, own.id, resp.fencing_token).await;
    }

    /// Another member reports `session` leading with `token`, or the
    /// session is gone.
    async fn check_leads(&mut self, name: &[u8], session: i64, token: i64) {
        let request = pb::LeaderRequest {
            name: name.to_vec(),
        };
        let resp = must!(self, self.other(1).election, leader, request.clone());
        let leads = resp
            .leader
            .as_ref()
            .is_some_and(|l| l.session_id == session && l.fencing_token == token);
        if !leads && !self.confirm_gone(session).await {
            self.fail(
                &request,
                format_args!(
                    "session {session:x} won with token {token} and lives, but another member reports {resp:?}"
                ),
            );
        }
    }

    // --- Shared locks and elections --------------------------------------

    fn queue_name(&mut self) -> Vec<u8> {
        if !self.hostile || self.rng.random_bool(0.5) {
            SHARED_QUEUES.choose(&mut self.rng).expect("names").to_vec()
        } else {
            self.name_key()
        }
    }

    /// Lock or Campaign, waited on briefly: a place someone holds makes
    /// it wait, and a call abandoned while waiting leaves its place.
    async fn take_place(&mut self, election: bool) {
        let name = self.queue_name();
        let session_id = self.session();
        let mut value = self.value();
        let oversized = election && self.maybe_oversized(&mut value);
        let request = pb::CampaignRequest {
            name: name.clone(),
            session_id,
            value,
        };
        let wait = Duration::from_millis(self.rng.random_range(50..=800));
        let client = self.client();
        let call = async {
            if election {
                let mut c = client.election;
                c.campaign(request.clone())
                    .await
                    .map(|r| r.map(|c| (c.fencing_token, c.revision)))
            } else {
                let mut c = client.lock;
                let lock = pb::LockRequest {
                    name: name.clone(),
                    session_id,
                };
                c.lock(lock)
                    .await
                    .map(|r| r.map(|l| (l.fencing_token, l.revision)))
            }
        };
        let Ok(answer) = tokio::time::timeout(wait, call).await else {
            self.count("abandoned");
            return;
        };
        let allowed = if oversized { TOO_BIG } else { QUEUE_REFUSALS };
        let (token, revision) = match answer.map(tonic::Response::into_inner) {
            Ok(r) => r,
            Err(status) => {
                self.judge(&request, &status, allowed);
                return;
            }
        };
        self.count("Ok");
        if oversized || !valid_name(&name) || token <= 0 || revision < token {
            self.fail(
                &request,
                format_args!("answered token {token} at revision {revision}"),
            );
        }
        self.shared
            .places
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Place {
                election,
                name,
                session: session_id,
                token,
            });
    }

    pub async fn lock(&mut self) {
        self.take_place(false).await;
    }

    pub async fn campaign(&mut self) {
        self.take_place(true).await;
    }

    /// A place handed out, maybe with a session or token that is not its
    /// own; or a random one.
    fn place(&mut self, election: bool) -> (Place, bool) {
        let places = self.shared.places.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<&Place> = places.iter().filter(|p| p.election == election).collect();
        let Some(place) = mine.choose(&mut self.rng).map(|p| (*p).clone()) else {
            drop(places);
            let place = Place {
                election,
                name: SHARED_QUEUES[0].to_vec(),
                session: self.session(),
                token: self.rng.random_range(1..=100),
            };
            return (place, false);
        };
        drop(places);
        match self.rng.random_range(0..3) {
            0 => (place, true),
            // Another session with the holder's token: never its place.
            1 => {
                let session = self.session();
                let wrong = session != place.session;
                (Place { session, ..place }, !wrong)
            }
            // The holder with a token it was not given.
            _ => {
                let token = match self.rng.random_range(0..3) {
                    0 => place.token + 1,
                    1 => place.token - 1,
                    _ => *[0, -1, i64::MAX].choose(&mut self.rng).expect("tokens"),
                };
                (Place { token, ..place }, false)
            }
        }
    }

    /// Unlock or Resign: released only by the holder's session with its
    /// token.
    pub async fn release_place(&mut self, election: bool) {
        let (place, rightful) = self.place(election);
        let client = self.client();
        let answer = if election {
            let request = pb::ResignRequest {
                name: place.name.clone(),
                session_id: place.session,
                fencing_token: place.token,
            };
            let mut c = client.election;
            self.settle(&place, ENTRY_REFUSALS, c.resign(request))
                .await
                .map(|r| r.resigned)
        } else {
            let request = pb::UnlockRequest {
                name: place.name.clone(),
                session_id: place.session,
                fencing_token: place.token,
            };
            let mut c = client.lock;
            self.settle(&place, ENTRY_REFUSALS, c.unlock(request))
                .await
                .map(|r| r.released)
        };
        if answer.is_ok_and(|released| released && !rightful) {
            self.fail(&place, "released by a session or token not its own");
        }
    }

    pub async fn proclaim(&mut self) {
        let (place, rightful) = self.place(true);
        let mut request = pb::ProclaimRequest {
            name: place.name.clone(),
            session_id: place.session,
            fencing_token: place.token,
            value: self.value(),
        };
        let oversized = self.maybe_oversized(&mut request.value);
        let allowed = if oversized { TOO_BIG } else { QUEUE_REFUSALS };
        let mut election = self.client().election;
        let answer = self
            .settle(&request, allowed, election.proclaim(request.clone()))
            .await;
        if answer.is_ok() && (oversized || !rightful) {
            self.fail(&request, "proclaimed by a session or token not leading");
        }
    }

    pub async fn leader(&mut self) {
        let request = pb::LeaderRequest {
            name: self.queue_name(),
        };
        let mut election = self.client().election;
        let Ok(resp) = self
            .settle(&request, READS, election.leader(request.clone()))
            .await
        else {
            return;
        };
        if let Some(l) = &resp.leader {
            if l.fencing_token <= 0 || l.fencing_token > resp.revision || l.session_id == 0 {
                self.fail(&request, format_args!("answered {}", describe(&resp)));
            }
        }
    }

    /// An Observe stream says who leads at once; then it is dropped.
    pub async fn observe(&mut self) {
        let request = pb::LeaderRequest {
            name: self.queue_name(),
        };
        let mut election = self.client().election;
        let Ok(mut stream) = self
            .settle(&request, READS, election.observe(request.clone()))
            .await
        else {
            return;
        };
        match tokio::time::timeout(FIRST_OBSERVATION, stream.next()).await {
            Err(_) => self.fail(&request, "Observe said nothing"),
            Ok(None) => self.fail(&request, "the Observe stream ended"),
            Ok(Some(Err(status))) => self.judge(&request, &status, READS),
            Ok(Some(Ok(resp))) => {
                if resp.revision <= 0 || resp.leader.is_some_and(|l| l.fencing_token <= 0) {
                    self.fail(&request, "Observe answered nonsense");
                }
            }
        }
    }
}
