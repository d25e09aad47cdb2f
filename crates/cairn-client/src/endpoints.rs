//! The endpoint list: one lazily connected channel per endpoint, the
//! current choice, rotation on failure and leader redirects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::options::ClientOptions;

/// Turn a user-given endpoint into a canonical `http://host:port` or
/// `https://host:port` URL. A missing scheme means `http://`.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = endpoint.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    let url = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(invalid("the scheme must be http:// or https://"));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid("expected http://host:port or https://host:port"));
    }
    Endpoint::from_shared(url.clone()).map_err(|e| invalid(&e.to_string()))?;
    Ok(url)
}

/// The index to try after `failed` in a list of `len` endpoints.
pub(crate) fn next_index(failed: usize, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (failed + 1) % len
    }
}

#[derive(Clone)]
pub(crate) struct Slot {
    pub url: String,
    pub channel: Channel,
}

pub(crate) struct Endpoints {
    slots: RwLock<Vec<Slot>>,
    current: AtomicUsize,
    options: ClientOptions,
}

impl Endpoints {
    /// Channels are lazy: nothing connects until the first call.
    pub(crate) fn new(urls: &[String], options: &ClientOptions) -> Result<Self, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(urls.len());
        for u in urls {
            let url = normalize_endpoint(u)?;
            if slots.iter().any(|s| s.url == url) {
                continue;
            }
            slots.push(Slot {
                channel: make_channel(&url, options)?,
                url,
            });
        }
        Ok(Endpoints {
            slots: RwLock::new(slots),
            current: AtomicUsize::new(0),
            options: options.clone(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Slot>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint to use now, with its index.
    pub(crate) fn pick(&self) -> (usize, Slot) {
        let slots = self.read();
        let i = self.current.load(Ordering::Acquire) % slots.len();
        (i, slots[i].clone())
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.read().iter().map(|s| s.url.clone()).collect()
    }

    pub(crate) fn current_url(&self) -> String {
        self.pick().1.url
    }

    /// After a failure on `failed`: move to the named leader if any (adding
    /// it when unknown and there is room), else to the next endpoint. Only
    /// moves if no one else moved since `failed` was picked. Returns true
    /// when the move was a redirect to a leader.
    pub(crate) fn on_failure(&self, failed: usize, leader: Option<&str>) -> bool {
        if let Some(idx) = leader.and_then(|l| self.index_of_or_add(l)) {
            if idx != failed {
                self.current.store(idx, Ordering::Release);
                return true;
            }
        }
        let len = self.read().len();
        let _ = self.current.compare_exchange(
            failed,
            next_index(failed, len),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        false
    }

    /// A follower answered and named `leader`: use it from now on (adding
    /// it when unknown and there is room). Nothing changes when it already
    /// is the current endpoint, which is every call once moved.
    pub(crate) fn follow_leader(&self, leader: &str) {
        {
            let slots = self.read();
            let current = self.current.load(Ordering::Acquire) % slots.len();
            if slots[current].url == leader {
                return;
            }
        }
        if let Some(idx) = self.index_of_or_add(leader) {
            self.current.store(idx, Ordering::Release);
        }
    }

    fn index_of_or_add(&self, url: &str) -> Option<usize> {
        let url = normalize_endpoint(url).ok()?;
        if let Some(i) = self.read().iter().position(|s| s.url == url) {
            return Some(i);
        }
        let channel = make_channel(&url, &self.options).ok()?;
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = slots.iter().position(|s| s.url == url) {
            return Some(i);
        }
        if slots.len() >= self.options.max_endpoints {
            return None;
        }
        slots.push(Slot { url, channel });
        Some(slots.len() - 1)
    }

    /// A channel to exactly this endpoint: the kept one if it is in the
    /// list, otherwise a new lazy one (not added to the list).
    pub(crate) fn channel_for(&self, endpoint: &str) -> Result<Channel, ClientError> {
        let url = normalize_endpoint(endpoint)?;
        if let Some(s) = self.read().iter().find(|s| s.url == url) {
            return Ok(s.channel.clone());
        }
        make_channel(&url, &self.options)
    }
}

pub(crate) fn make_channel(url: &str, options: &ClientOptions) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ClientError::InvalidEndpoint {
            endpoint: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .buffer_size(1024);
    let endpoint =
        match (url.starts_with("https://"), &options.tls) {
            (true, Some(tls)) => {
                endpoint
                    .tls_config(tls.to_tonic())
                    .map_err(|e| ClientError::InvalidEndpoint {
                        endpoint: url.to_string(),
                        reason: e.to_string(),
                    })?
            }
            (true, None) => return Err(ClientError::InvalidEndpoint {
                endpoint: url.to_string(),
                reason:
                    "https:// needs a CA to check the server with (ClientOptions::tls; --cacert)"
                        .to_string(),
            }),
            (false, _) => endpoint,
        };
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint(" http://localhost:2379/ ").unwrap(),
            "http://localhost:2379"
        );
        assert!(normalize_endpoint("").is_err());
        assert_eq!(normalize_endpoint("https://x:1/").unwrap(), "https://x:1");
        assert!(normalize_endpoint("https://x:1/path").is_err());
        // https needs a CA to check the server with.
        let err = make_channel("https://x:1", &ClientOptions::default()).unwrap_err();
        assert!(err.to_string().contains("needs a CA"), "{err}");
        assert!(normalize_endpoint("unix:///tmp/s").is_err());
        assert!(normalize_endpoint("http://x:1/path").is_err());
    }

    #[test]
    fn rotation_wraps_around() {
        assert_eq!(next_index(0, 3), 1);
        assert_eq!(next_index(2, 3), 0);
        assert_eq!(next_index(0, 1), 0);
        assert_eq!(next_index(5, 0), 0);
    }

    fn urls(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn failures_rotate_and_leaders_redirect() {
        let opts = ClientOptions {
            max_endpoints: 4,
            ..ClientOptions::default()
        };
        let e = Endpoints::new(&urls(&["a:1", "b:2", "http://a:1", "c:3"]), &opts).unwrap();
        assert_eq!(e.urls(), urls(&["http://a:1", "http://b:2", "http://c:3"]));
        assert_eq!(e.pick().0, 0);
        assert!(!e.on_failure(0, None));
        assert_eq!(e.current_url(), "http://b:2");
        // A stale failure report (someone already moved on) does not move.
        assert!(!e.on_failure(0, None));
        assert_eq!(e.current_url(), "http://b:2");
        // A known leader is jumped to.
        assert!(e.on_failure(1, Some("http://a:1")));
        assert_eq!(e.current_url(), "http://a:1");
        // An unknown leader is added while there is room.
        assert!(e.on_failure(0, Some("http://d:4")));
        assert_eq!(e.current_url(), "http://d:4");
        assert_eq!(e.urls().len(), 4);
        // No room: plain rotation instead.
        assert!(!e.on_failure(3, Some("http://z:9")));
        assert_eq!(e.current_url(), "http://a:1");
        // A garbage hint is ignored.
        assert!(!e.on_failure(0, Some("not a url at all/")));
        assert_eq!(e.current_url(), "http://b:2");
        // A hint naming the failed endpoint itself rotates.
        assert!(!e.on_failure(1, Some("http://b:2")));
        assert_eq!(e.current_url(), "http://c:3");
    }

    #[tokio::test]
    async fn a_named_leader_is_followed_when_there_is_room() {
        let opts = ClientOptions {
            max_endpoints: 3,
            ..ClientOptions::default()
        };
        let e = Endpoints::new(&urls(&["a:1", "b:2"]), &opts).unwrap();
        e.follow_leader("http://b:2");
        assert_eq!(e.current_url(), "http://b:2");
        // Named as the current one: nothing moves.
        e.follow_leader("http://b:2");
        assert_eq!(e.current_url(), "http://b:2");
        // Unknown: added, then used.
        e.follow_leader("c:3");
        assert_eq!(e.current_url(), "http://c:3");
        assert_eq!(e.urls().len(), 3);
        // No room, or not a URL: stay.
        e.follow_leader("http://d:4");
        e.follow_leader("not a url at all/");
        assert_eq!(e.current_url(), "http://c:3");
        assert_eq!(e.urls().len(), 3);
    }

    #[tokio::test]
    async fn empty_lists_are_refused() {
        assert!(matches!(
            Endpoints::new(&[], &ClientOptions::default()),
            Err(ClientError::NoEndpoints)
        ));
    }
}
