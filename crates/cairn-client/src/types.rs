//! Plain Rust request options and responses (no prost types).

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;

use crate::range::{resolve, RangeSpec};

/// Sent with every response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    /// The member that answered.
    pub member_id: u64,
    /// Store revision when the request was served.
    pub revision: i64,
    pub raft_term: u64,
}

impl From<Option<pb::ResponseHeader>> for ResponseHeader {
    fn from(h: Option<pb::ResponseHeader>) -> Self {
        let h = h.unwrap_or_default();
        ResponseHeader {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

/// One key at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the key's last creation.
    pub create_revision: i64,
    /// Revision of the key's last modification.
    pub mod_revision: i64,
    /// Modifications since creation.
    pub version: i64,
    /// Attached lease, 0 for none.
    pub lease: i64,
}

impl KeyValue {
    /// The key as text (invalid UTF-8 replaced).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text (invalid UTF-8 replaced).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

impl From<mvccpb::KeyValue> for KeyValue {
    fn from(kv: mvccpb::KeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// What to sort a range by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Server order (by key).
    #[default]
    None,
    Ascend,
    Descend,
}

/// Options of [`Client::get`](crate::Client::get). `prefix` and
/// `from_key` change the meaning of the key (see etcd's `WithPrefix` and
/// `WithFromKey`); `range_end` is used when neither is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub prefix: bool,
    pub from_key: bool,
    pub range_end: Option<Vec<u8>>,
    /// Most keys to return; 0 for no limit.
    pub limit: i64,
    /// Read at this revision; 0 for the newest.
    pub revision: i64,
    pub sort: Option<(SortTarget, SortOrder)>,
    pub keys_only: bool,
    pub count_only: bool,
    /// Local (possibly stale) read from the member asked, no consensus.
    pub serializable: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl GetOptions {
    /// Every key starting with the given key.
    pub fn prefix() -> Self {
        GetOptions {
            prefix: true,
            ..Default::default()
        }
    }

    pub(crate) fn to_request(&self, key: &[u8]) -> pb::RangeRequest {
        let (key, range_end) = resolve(
            key,
            &RangeSpec {
                prefix: self.prefix,
                from_key: self.from_key,
                range_end: self.range_end.as_deref(),
            },
        );
        let (target, order) = self.sort.unwrap_or_default();
        pb::RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            sort_order: match order {
                SortOrder::None => pb::range_request::SortOrder::None,
                SortOrder::Ascend => pb::range_request::SortOrder::Ascend,
                SortOrder::Descend => pb::range_request::SortOrder::Descend,
            } as i32,
            sort_target: match target {
                SortTarget::Key => pb::range_request::SortTarget::Key,
                SortTarget::Version => pb::range_request::SortTarget::Version,
                SortTarget::Create => pb::range_request::SortTarget::Create,
                SortTarget::Mod => pb::range_request::SortTarget::Mod,
                SortTarget::Value => pb::range_request::SortTarget::Value,
            } as i32,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetResponse {
    pub header: ResponseHeader,
    /// Same as `header.revision`.
    pub header_revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Keys in the range.
    pub count: i64,
}

impl From<pb::RangeResponse> for GetResponse {
    fn from(r: pb::RangeResponse) -> Self {
        let header = ResponseHeader::from(r.header);
        GetResponse {
            header,
            header_revision: header.revision,
            kvs: r.kvs.into_iter().map(Into::into).collect(),
            more: r.more,
            count: r.count,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Lease to attach; 0 for none.
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutOptions {
    pub(crate) fn to_request(&self, key: Vec<u8>, value: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub header: ResponseHeader,
    /// Set when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl From<pb::PutResponse> for PutResponse {
    fn from(r: pb::PutResponse) -> Self {
        PutResponse {
            header: r.header.into(),
            prev_kv: r.prev_kv.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub prefix: bool,
    pub from_key: bool,
    pub range_end: Option<Vec<u8>>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteOptions {
    /// Every key starting with the given key.
    pub fn prefix() -> Self {
        DeleteOptions {
            prefix: true,
            ..Default::default()
        }
    }

    pub(crate) fn to_request(&self, key: &[u8]) -> pb::DeleteRangeRequest {
        let (key, range_end) = resolve(
            key,
            &RangeSpec {
                prefix: self.prefix,
                from_key: self.from_key,
                range_end: self.range_end.as_deref(),
            },
        );
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

impl From<pb::DeleteRangeResponse> for DeleteResponse {
    fn from(r: pb::DeleteRangeResponse) -> Self {
        DeleteResponse {
            header: r.header.into(),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactResponse {
    pub header: ResponseHeader,
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub header: ResponseHeader,
    pub id: i64,
    /// TTL chosen by the server, in seconds.
    pub ttl: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    pub header: ResponseHeader,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveResponse {
    pub header: ResponseHeader,
    pub id: i64,
    /// Remaining seconds; -1 when the lease is gone.
    pub ttl: i64,
    /// TTL granted at creation or last renewal.
    pub granted_ttl: i64,
    /// Attached keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

impl From<pb::LeaseTimeToLiveResponse> for LeaseTimeToLiveResponse {
    fn from(r: pb::LeaseTimeToLiveResponse) -> Self {
        LeaseTimeToLiveResponse {
            header: r.header.into(),
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseLeasesResponse {
    pub header: ResponseHeader,
    /// IDs of the live leases.
    pub leases: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveResponse {
    pub header: ResponseHeader,
    pub id: i64,
    /// The renewed TTL in seconds.
    pub ttl: i64,
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Self {
        Member {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

/// The members after a list or a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersResponse {
    pub header: ResponseHeader,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberAddResponse {
    pub header: ResponseHeader,
    /// The member just added.
    pub member: Member,
    /// Every member after the change.
    pub members: Vec<Member>,
}

// ---------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusResponse {
    pub header: ResponseHeader,
    pub version: String,
    /// Physical backend size in bytes.
    pub db_size: i64,
    /// Backend bytes in use.
    pub db_size_in_use: i64,
    /// Member ID of the leader, 0 if none.
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    /// Active alarms and other errors.
    pub errors: Vec<String>,
    pub is_learner: bool,
    pub storage_version: String,
    pub db_size_quota: i64,
}

impl StatusResponse {
    /// The answering member is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.header.member_id
    }
}

impl From<pb::StatusResponse> for StatusResponse {
    fn from(r: pb::StatusResponse) -> Self {
        StatusResponse {
            header: r.header.into(),
            version: r.version,
            db_size: r.db_size,
            db_size_in_use: r.db_size_in_use,
            leader: r.leader,
            raft_index: r.raft_index,
            raft_term: r.raft_term,
            raft_applied_index: r.raft_applied_index,
            errors: r.errors,
            is_learner: r.is_learner,
            storage_version: r.storage_version,
            db_size_quota: r.db_size_quota,
        }
    }
}

/// Kinds of alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmType {
    /// Matches every alarm in a query.
    None,
    /// Storage quota used up.
    NoSpace,
    /// Data corruption detected.
    Corrupt,
    /// A value this client does not know.
    Other(i32),
}

impl AlarmType {
    pub(crate) fn from_wire(v: i32) -> Self {
        match pb::AlarmType::try_from(v) {
            Ok(pb::AlarmType::None) => AlarmType::None,
            Ok(pb::AlarmType::Nospace) => AlarmType::NoSpace,
            Ok(pb::AlarmType::Corrupt) => AlarmType::Corrupt,
            Err(_) => AlarmType::Other(v),
        }
    }

    pub(crate) fn to_wire(self) -> i32 {
        match self {
            AlarmType::None => pb::AlarmType::None as i32,
            AlarmType::NoSpace => pb::AlarmType::Nospace as i32,
            AlarmType::Corrupt => pb::AlarmType::Corrupt as i32,
            AlarmType::Other(v) => v,
        }
    }
}

impl std::fmt::Display for AlarmType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlarmType::None => f.write_str("NONE"),
            AlarmType::NoSpace => f.write_str("NOSPACE"),
            AlarmType::Corrupt => f.write_str("CORRUPT"),
            AlarmType::Other(v) => write!(f, "ALARM({v})"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmResponse {
    pub header: ResponseHeader,
    pub alarms: Vec<AlarmMember>,
}

impl From<pb::AlarmResponse> for AlarmResponse {
    fn from(r: pb::AlarmResponse) -> Self {
        AlarmResponse {
            header: r.header.into(),
            alarms: r
                .alarms
                .into_iter()
                .map(|a| AlarmMember {
                    member_id: a.member_id,
                    alarm: AlarmType::from_wire(a.alarm),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashKvResponse {
    pub header: ResponseHeader,
    pub hash: u32,
    pub compact_revision: i64,
    pub hash_revision: i64,
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

/// Options of [`Client::watch`](crate::Client::watch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    pub prefix: bool,
    pub range_end: Option<Vec<u8>>,
    /// First revision to deliver; 0 for "from now on".
    pub start_revision: i64,
    /// Include the previous key-value with each event.
    pub prev_kv: bool,
    /// Leave out put events.
    pub no_put: bool,
    /// Leave out delete events.
    pub no_delete: bool,
    /// Ask for periodic empty responses carrying the current revision.
    pub progress_notify: bool,
}

impl WatchOptions {
    pub(crate) fn to_create(&self, key: &[u8]) -> pb::WatchCreateRequest {
        let (key, range_end) = resolve(
            key,
            &RangeSpec {
                prefix: self.prefix,
                from_key: false,
                range_end: self.range_end.as_deref(),
            },
        );
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(pb::watch_create_request::FilterType::Noput as i32);
        }
        if self.no_delete {
            filters.push(pb::watch_create_request::FilterType::Nodelete as i32);
        }
        pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: self.start_revision,
            progress_notify: self.progress_notify,
            filters,
            prev_kv: self.prev_kv,
            watch_id: 0,
            fragment: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Put,
    Delete,
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventType::Put => "PUT",
            EventType::Delete => "DELETE",
        })
    }
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_type: EventType,
    /// For a put the new key-value; for a delete the key, with
    /// `mod_revision` the deletion revision.
    pub kv: KeyValue,
    /// The key-value before the event, when asked for.
    pub prev_kv: Option<KeyValue>,
}

impl From<mvccpb::Event> for Event {
    fn from(e: mvccpb::Event) -> Self {
        Event {
            event_type: if e.r#type == mvccpb::event::EventType::Delete as i32 {
                EventType::Delete
            } else {
                EventType::Put
            },
            kv: e.kv.map(Into::into).unwrap_or_default(),
            prev_kv: e.prev_kv.map(Into::into),
        }
    }
}

/// Events of one revision (or a progress notification: no events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchResponse {
    pub header: ResponseHeader,
    pub watch_id: i64,
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// No events: the server only reports how far the watcher got.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_options_build_range_requests() {
        let r = GetOptions {
            limit: 3,
            sort: Some((SortTarget::Mod, SortOrder::Descend)),
            ..GetOptions::prefix()
        }
        .to_request(b"a");
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice()),
            (&b"a"[..], &b"b"[..])
        );
        assert_eq!(r.limit, 3);
        assert_eq!(r.sort_target, pb::range_request::SortTarget::Mod as i32);
        assert_eq!(r.sort_order, pb::range_request::SortOrder::Descend as i32);
        let r = GetOptions::default().to_request(b"k");
        assert!(r.range_end.is_empty());
    }

    #[test]
    fn watch_filters_map_to_wire() {
        let c = WatchOptions {
            no_put: true,
            no_delete: true,
            prefix: true,
            ..Default::default()
        }
        .to_create(b"");
        assert_eq!(c.filters, vec![0, 1]);
        assert_eq!((c.key, c.range_end), (vec![0], vec![0]));
    }

    #[test]
    fn status_knows_who_leads() {
        let mut s = StatusResponse {
            leader: 7,
            ..Default::default()
        };
        s.header.member_id = 7;
        assert!(s.is_leader());
        s.header.member_id = 8;
        assert!(!s.is_leader());
    }

    #[test]
    fn alarm_types_round_trip() {
        for a in [
            AlarmType::None,
            AlarmType::NoSpace,
            AlarmType::Corrupt,
            AlarmType::Other(9),
        ] {
            assert_eq!(AlarmType::from_wire(a.to_wire()), a);
        }
        assert_eq!(AlarmType::NoSpace.to_string(), "NOSPACE");
    }
}
