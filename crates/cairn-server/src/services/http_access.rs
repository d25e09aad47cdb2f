//! Who may use the client port's HTTP endpoints (the JSON gateway,
//! `/version`, `/health`, `/metrics`) from a browser, as etcd's
//! `--cors` and `--host-whitelist` say. gRPC calls are not concerned: their
//! routes are not behind this middleware (`services::routes`).
//!
//! * **CORS** (`--cors`, default `*`): a browser page on another origin
//!   may read an answer only if it carries `Access-Control-Allow-Origin`.
//!   With `*` in the list every answer carries `*`; otherwise an allowed
//!   `Origin` is echoed back (with `Vary: Origin`, so a cache does not
//!   serve one origin's answer to another). A preflight (`OPTIONS`) is
//!   answered 200 at once, whatever the path, as etcd does.
//! * **Host whitelist** (`--host-whitelist`, default `*`): on a plain-HTTP
//!   port, a request whose `Host` (or HTTP/2 `:authority`) names a host not
//!   listed is refused with 421 Misdirected Request. This stops DNS
//!   rebinding: a page from `evil.example` whose name then resolves to
//!   127.0.0.1 sends `Host: evil.example` to a member on localhost. Over
//!   TLS the certificate check already does this, so etcd skips it there,
//!   and so does this.
//!
//! An empty list allows everything, as etcd's does.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};

/// What the answers of an allowed request say a browser may send.
const ALLOW_METHODS: &str = "POST, GET, OPTIONS, PUT, DELETE";
const ALLOW_HEADERS: &str = "accept, content-type, authorization";

/// The client port's HTTP access rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAccess {
    /// Origins whose pages may read answers; `*` for any.
    cors: Vec<String>,
    /// Host names requests may be addressed to (without port, any case);
    /// `*` for any.
    hosts: Vec<String>,
    /// The port speaks TLS: the host check is left to the certificate.
    tls: bool,
}

impl HttpAccess {
    pub fn new(cors: &[String], hosts: &[String], tls: bool) -> Self {
        HttpAccess {
            cors: cors.to_vec(),
            hosts: hosts.to_vec(),
            tls,
        }
    }

    fn any_origin(&self) -> bool {
        self.cors.is_empty() || self.cors.iter().any(|o| o == "*")
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin() || self.cors.iter().any(|o| o == origin)
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.tls
            || self.hosts.is_empty()
            || self.hosts.iter().any(|h| h == "*")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// Checks one `--cors` entry: `*`, or an origin (`scheme://host[:port]`).
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let uri: http::Uri = origin
        .parse()
        .map_err(|e| format!("invalid CORS origin {origin:?}: {e}"))?;
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if uri.scheme().is_none() || uri.authority().is_none() || !bare {
        return Err(format!(
            "invalid CORS origin {origin:?}: an origin is scheme://host[:port], e.g. \
             https://ui.example.com"
        ));
    }
    Ok(())
}

/// The middleware on the HTTP endpoints' routes (the gRPC services' routes
/// are not behind it): applies `access` to a request and its answer.
pub async fn guard(
    State(access): State<Arc<HttpAccess>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(host) = host_of(&request) {
        if !access.host_allowed(&host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                format!("host {host:?} is not in this member's --host-whitelist\n"),
            )
                .into_response();
        }
    }
    let allow_origin = if access.any_origin() {
        Some(HeaderValue::from_static("*"))
    } else {
        request
            .headers()
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| access.origin_allowed(o)))
            .cloned()
    };
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if !access.any_origin() {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(origin) = allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
    }
    response
}

/// The host a request is addressed to, without its port: HTTP/1.1's
/// `Host`, else HTTP/2's `:authority`. `None` when it names none (an
/// HTTP/1.0 request), which is let through, as etcd does.
fn host_of(request: &Request) -> Option<String> {
    let authority = match request.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => request.uri().authority()?.as_str().to_string(),
    };
    Some(strip_port(&authority).to_string())
}

/// `host:port` → `host`; `[::1]:2379` → `::1`.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(cors: &[&str], hosts: &[&str], tls: bool) -> HttpAccess {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        HttpAccess::new(&v(cors), &v(hosts), tls)
    }

    #[test]
    fn origins_as_etcd_allows_them() {
        assert!(access(&["*"], &[], false).origin_allowed("https://a.example"));
        assert!(access(&[], &[], false).origin_allowed("https://a.example"));
        let some = access(&["https://a.example", "http://b.example:8080"], &[], false);
        assert!(some.origin_allowed("https://a.example"));
        assert!(some.origin_allowed("http://b.example:8080"));
        assert!(!some.origin_allowed("http://b.example"));
        assert!(!some.origin_allowed("https://a.example.evil"));
    }

    #[test]
    fn hosts_are_compared_without_port_and_case_and_not_over_tls() {
        let local = access(&[], &["localhost", "127.0.0.1", "::1"], false);
        for host in ["localhost:2379", "LOCALHOST", "127.0.0.1:1", "[::1]:2379"] {
            let name = strip_port(host);
            assert!(local.host_allowed(name), "{host}");
        }
        assert!(!local.host_allowed(strip_port("evil.example:2379")));
        assert!(access(&[], &["localhost"], true).host_allowed("evil.example"));
        assert!(access(&[], &["*"], false).host_allowed("evil.example"));
        assert!(access(&[], &[], false).host_allowed("evil.example"));
    }

    #[test]
    fn a_cors_entry_is_a_star_or_an_origin() {
        check_origin("*").unwrap();
        check_origin("https://ui.example.com").unwrap();
        check_origin("http://10.0.0.1:8080").unwrap();
        for bad in [
            "ui.example.com",
            "https://ui.example.com/app",
            "not a url",
            "",
        ] {
            let e = check_origin(bad).unwrap_err();
            assert!(e.contains("CORS origin"), "{bad}: {e}");
        }
    }
}
