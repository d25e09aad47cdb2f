//! etcd's JSON gateway (`POST /v3/...`) on a real 3-member cluster, spoken
//! to over HTTP/1.1 as `curl` does: keys, txns, leases and their streams
//! through a follower, watch streams, errors with their HTTP statuses, and
//! tokens in the `Authorization` header.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::{wait_until, Cluster};

const WAIT: Duration = Duration::from_secs(10);

/// A member's client port, spoken to as etcd's gateway clients do.
struct Gateway {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Gateway {
    fn of(c: &Cluster, i: usize) -> Gateway {
        let addr = c.members[i].server.as_ref().unwrap().client_addr;
        Gateway {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    async fn send(
        &self,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let mut request = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("an answer in time")
            .expect("an HTTP answer")
    }

    /// A unary call: its HTTP status and JSON body.
    async fn call_as(&self, path: &str, body: Value, token: Option<&str>) -> (StatusCode, Value) {
        let response = self.send(path, &body.to_string(), token).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"));
        (status, json)
    }

    /// A unary call that must succeed: its JSON answer.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, json) = self.call_as(path, body, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {json}");
        json
    }

    /// A streaming call: its lines as they come.
    async fn stream(&self, path: &str, body: &str) -> Lines {
        let response = self.send(path, body, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        Lines {
            body: response.into_body(),
            buffered: Vec::new(),
        }
    }
}

/// The lines of a streaming answer, each one JSON object.
struct Lines {
    body: hyper::body::Incoming,
    buffered: Vec<u8>,
}

impl Lines {
    /// The next line, or `None` once the answer ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffered.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("a line in time")?
                .expect("the stream goes on");
            if let Ok(data) = frame.into_data() {
                self.buffered.extend_from_slice(&data);
            }
        }
    }

    /// The next line's `result`.
    async fn result(&mut self) -> Value {
        let line = self.next().await.expect("one more line");
        line.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("not a result: {line}"))
    }
}

/// Standard base64, as proto3 JSON writes bytes.
fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A 64-bit field of an answer (written as a string, as proto3 JSON does).
fn int(v: &Value) -> i64 {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string-encoded integer: {v}"))
        .parse()
        .unwrap()
}

async fn follower(c: &Cluster) -> usize {
    let leader = c.wait_leader(WAIT).await;
    (leader + 1) % 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_txns_and_leases_through_a_follower() {
    let c = Cluster::start(3, |_| {}).await;
    let f = follower(&c).await;
    let g = Gateway::of(&c, f);

    let put = g
        .ok(
            "/v3/kv/put",
            json!({"key": b64("foo"), "value": b64("bar")}),
        )
        .await;
    let rev = int(&put["header"]["revision"]);
    assert_eq!(
        support::get(c.node(f), "foo").await.as_deref(),
        Some(&b"bar"[..])
    );

    let range = g.ok("/v3/kv/range", json!({"key": b64("foo")})).await;
    assert_eq!(
        range["kvs"],
        json!([{"key": b64("foo"), "value": b64("bar"), "create_revision": rev.to_string(),
                "mod_revision": rev.to_string(), "version": "1"}])
    );
    assert_eq!(int(&range["count"]), 1);
    // etcd 3.4's deprecated prefix serves the same call.
    let beta = g.ok("/v3beta/kv/range", json!({"key": b64("foo")})).await;
    assert_eq!(beta["kvs"], range["kvs"]);
    // count_only, with camelCase names as grpc-gateway also reads.
    let counted = g
        .ok(
            "/v3/kv/range",
            json!({"key": "AA==", "rangeEnd": "AA==", "countOnly": true}),
        )
        .await;
    assert_eq!((int(&counted["count"]), counted.get("kvs")), (1, None));

    // A txn whose compare fails runs its failure branch.
    let txn = json!({
        "compare": [{"target": "VERSION", "key": b64("foo"), "version": "7"}],
        "success": [{"request_put": {"key": b64("foo"), "value": b64("won")}}],
        "failure": [{"request_put": {"key": b64("foo"), "value": b64("lost"), "prev_kv": true}}],
    });
    let answer = g.ok("/v3/kv/txn", txn).await;
    assert_eq!(answer.get("succeeded"), None, "false is left out: {answer}");
    assert_eq!(
        answer["responses"][0]["response_put"]["prev_kv"]["value"],
        json!(b64("bar"))
    );
    assert_eq!(
        support::get(c.node(f), "foo").await.as_deref(),
        Some(&b"lost"[..])
    );

    // A lease, a key on it, one keep-alive, its time to live and keys.
    let grant = g.ok("/v3/lease/grant", json!({"TTL": 60})).await;
    let id = grant["ID"].as_str().unwrap().to_string();
    assert_eq!(int(&grant["TTL"]), 60);
    g.ok(
        "/v3/kv/put",
        json!({"key": b64("leased"), "value": "", "lease": id}),
    )
    .await;
    let mut kept = g
        .stream("/v3/lease/keepalive", &json!({"ID": id}).to_string())
        .await;
    let ka = kept.result().await;
    assert_eq!(
        (ka["ID"].as_str(), int(&ka["TTL"])),
        (Some(id.as_str()), 60)
    );
    assert!(kept.next().await.is_none(), "the stream ends with the body");
    let ttl = g
        .ok("/v3/lease/timetolive", json!({"ID": id, "keys": true}))
        .await;
    assert_eq!(ttl["keys"], json!([b64("leased")]));
    let leases = g.ok("/v3/kv/lease/leases", json!({})).await;
    assert_eq!(leases["leases"], json!([{"ID": id}]));
    g.ok("/v3/kv/lease/revoke", json!({"ID": id})).await;
    assert_eq!(support::get(c.node(f), "leased").await, None);

    let deleted = g
        .ok(
            "/v3/kv/deleterange",
            json!({"key": b64("foo"), "prev_kv": true}),
        )
        .await;
    assert_eq!(int(&deleted["deleted"]), 1);
    assert_eq!(deleted["prev_kvs"][0]["value"], json!(b64("lost")));

    // Compaction, then a read below it.
    let head = int(&deleted["header"]["revision"]);
    g.ok(
        "/v3/kv/compaction",
        json!({"revision": head.to_string(), "physical": true}),
    )
    .await;
    let (status, err) = g
        .call_as(
            "/v3/kv/range",
            json!({"key": b64("foo"), "revision": "1"}),
            None,
        )
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(11)),
        "{err}"
    );
    assert_eq!(
        err["error"],
        json!("etcdserver: mvcc: required revision has been compacted")
    );

    let get = hyper::Request::get(format!("{}/version", g.base))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let version = g.client.request(get).await.unwrap();
    let version = version.into_body().collect().await.unwrap().to_bytes();
    let version: Value = serde_json::from_slice(&version).unwrap();
    assert_eq!(
        version,
        json!({"etcdserver": "3.5.0", "etcdcluster": "3.5.0"})
    );

    let members = g.ok("/v3/cluster/member/list", json!({})).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
    let status = g.ok("/v3/maintenance/status", json!({})).await;
    assert_eq!(
        status["leader"],
        json!(c.node(c.wait_leader(WAIT).await).member_id().to_string())
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_streams_every_event_as_a_line() {
    let c = Cluster::start(3, |_| {}).await;
    let f = follower(&c).await;
    let g = Gateway::of(&c, f);
    // Two watchers from one body: two JSON messages back to back.
    let body = format!(
        "{} {}",
        json!({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "watch_id": "1"}}),
        json!({"create_request": {"key": b64("w/b"), "prev_kv": true, "watch_id": "2"}}),
    );
    let mut lines = g.stream("/v3/watch", &body).await;
    let mut created = Vec::new();
    for _ in 0..2 {
        let r = lines.result().await;
        assert_eq!(r["created"], json!(true), "{r}");
        created.push(int(&r["watch_id"]));
    }
    created.sort();
    assert_eq!(created, [1, 2]);

    for (k, v) in [("w/a", "1"), ("w/b", "2"), ("w/b", "3"), ("other", "x")] {
        support::put(c.node(0), k, v).await;
    }
    // Every event of the prefix watcher, in order; the key watcher's with
    // the previous value.
    let mut prefix_events = Vec::new();
    let mut key_events = Vec::new();
    while prefix_events.len() < 3 || key_events.len() < 2 {
        let r = lines.result().await;
        for e in r["events"].as_array().expect("events") {
            assert_eq!(e.get("type"), None, "PUT is the default, left out: {e}");
            let kv = (e["kv"]["key"].clone(), e["kv"]["value"].clone());
            match int(&r["watch_id"]) {
                1 => prefix_events.push(kv),
                2 => key_events.push((kv, e.get("prev_kv").map(|p| p["value"].clone()))),
                other => panic!("watch {other}"),
            }
        }
    }
    let kv = |k: &str, v: &str| (json!(b64(k)), json!(b64(v)));
    assert_eq!(
        prefix_events,
        [kv("w/a", "1"), kv("w/b", "2"), kv("w/b", "3")]
    );
    assert_eq!(
        key_events,
        [
            (kv("w/b", "2"), None),
            (kv("w/b", "3"), Some(json!(b64("2"))))
        ]
    );

    // A delete arrives as DELETE.
    let deleted = g.ok("/v3/kv/deleterange", json!({"key": b64("w/a")})).await;
    let r = lines.result().await;
    assert_eq!(r["events"][0]["type"], json!("DELETE"), "{r}");
    assert_eq!(r["header"]["revision"], deleted["header"]["revision"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_carry_the_grpc_code_and_its_http_status() {
    let c = Cluster::start(3, |cfg| cfg.max_request_bytes = 4096).await;
    let g = Gateway::of(&c, c.wait_leader(WAIT).await);

    // A field the message lacks.
    let (status, err) = g
        .call_as("/v3/kv/range", json!({"keyz": b64("a")}), None)
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(3)),
        "{err}"
    );
    assert!(err["error"].as_str().unwrap().contains("keyz"), "{err}");
    assert_eq!(err["error"], err["message"]);

    // Not JSON; and bytes that are not base64.
    let response = g.send("/v3/kv/put", "{\"key\": ", None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, _) = g.call_as("/v3/kv/put", json!({"key": "***"}), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A lease that does not exist: NOT_FOUND.
    let (status, err) = g
        .call_as("/v3/lease/revoke", json!({"ID": "12345"}), None)
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::NOT_FOUND, Some(5)),
        "{err}"
    );
    assert_eq!(err["error"], json!("etcdserver: requested lease not found"));

    // A value over the member's request limit: etcd's "too large", both
    // when the service measures it and when the body alone is too long.
    for value_bytes in [5000, 100_000] {
        let value = b64(&"v".repeat(value_bytes));
        let put = json!({"key": b64("big"), "value": value});
        let (status, err) = g.call_as("/v3/kv/put", put, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains("request is too large"), "{err}");
    }
    assert_eq!(support::get(c.node(0), "big").await, None);

    // A watch body that turns bad: the created watcher's line, then the
    // error line, then the end.
    let body = format!(
        "{} {{\"create_request\": 5}}",
        json!({"create_request": {"key": b64("a")}})
    );
    let mut lines = g.stream("/v3/watch", &body).await;
    assert_eq!(lines.result().await["created"], json!(true));
    let last = lines.next().await.expect("an error line");
    assert_eq!(last["error"]["grpc_code"], json!(3), "{last}");
    assert_eq!(last["error"]["http_code"], json!(400), "{last}");
    assert!(lines.next().await.is_none());

    // Only POST, as etcd's gateway.
    let get = hyper::Request::get(format!("{}/v3/kv/range", g.base))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = g.client.request(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A path etcd does not have either.
    let (status, err) = g.call_as("/v3/kv/nope", json!({}), None).await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::NOT_FOUND, Some(5)),
        "{err}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_in_the_authorization_header_names_the_user() {
    let c = Cluster::start(3, |cfg| cfg.auth_password_iterations = 1000).await;
    let leader = c.wait_leader(WAIT).await;
    let addr = c.members[leader].server.as_ref().unwrap().client_addr;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // `alice` may read and write [a, b); auth is on.
    support::set_up_auth(channel, "alice", "pw").await;
    let g = Gateway::of(&c, (leader + 1) % 3);

    let (status, err) = g
        .call_as("/v3/kv/put", json!({"key": b64("a1"), "value": ""}), None)
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(3)),
        "{err}"
    );
    assert_eq!(err["error"], json!("etcdserver: user name is empty"));

    let (status, err) = g
        .call_as(
            "/v3/auth/authenticate",
            json!({"name": "alice", "password": "nope"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let login = g
        .ok(
            "/v3/auth/authenticate",
            json!({"name": "alice", "password": "pw"}),
        )
        .await;
    let token = login["token"].as_str().expect("a token").to_string();

    let put = json!({"key": b64("a1"), "value": b64("v")});
    let (status, _) = g.call_as("/v3/kv/put", put, Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = g
        .call_as("/v3/kv/range", json!({"key": b64("a1")}), Some(&token))
        .await;
    assert_eq!(
        (status, &got["kvs"][0]["value"]),
        (StatusCode::OK, &json!(b64("v")))
    );
    // Outside alice's range.
    let (status, err) = g
        .call_as(
            "/v3/kv/put",
            json!({"key": b64("z"), "value": ""}),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::FORBIDDEN, Some(7)),
        "{err}"
    );
    // grpc-gateway's other way to pass metadata: `Grpc-Metadata-Token`.
    let request = hyper::Request::post(format!("{}/v3/kv/range", g.base))
        .header("Grpc-Metadata-Token", &token)
        .body(Full::new(Bytes::from(
            json!({"key": b64("a1")}).to_string(),
        )))
        .unwrap();
    let response = g.client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A token that is not one.
    let (status, err) = g
        .call_as("/v3/kv/range", json!({"key": b64("a1")}), Some("forged"))
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(16)),
        "{err}"
    );
    wait_until("the follower to have applied the put", WAIT, || async {
        support::local_count(c.node((leader + 1) % 3), "a1") == 1
    })
    .await;
    c.shutdown().await;
}

impl Gateway {
    /// `method path` with `headers`, nothing in the body: the status and
    /// the answer's headers.
    async fn raw(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap) {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("an answer in time")
            .expect("an HTTP answer");
        (response.status(), response.headers().clone())
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// etcd's default `--cors` is `*`: any page may read the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn by_default_any_origin_may_read_the_answers() {
    let c = Cluster::start(1, |_| {}).await;
    c.wait_leader(WAIT).await;
    let g = Gateway::of(&c, 0);
    let origin = [("origin", "https://ui.example")];
    let (status, headers) = g.raw(http::Method::OPTIONS, "/v3/kv/put", &origin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let (status, headers) = g.raw(http::Method::GET, "/version", &origin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    c.shutdown().await;
}

/// `--cors` with origins: only those are told they may read an answer;
/// `--host-whitelist`: plain-HTTP requests naming another host are refused
/// (421), while gRPC calls are not concerned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listed_origins_read_answers_and_unlisted_hosts_are_refused() {
    let c = Cluster::start(1, |cfg| {
        cfg.cors = vec!["https://ui.example".into()];
        cfg.host_whitelist = vec!["localhost".into()];
    })
    .await;
    c.wait_leader(WAIT).await;
    let g = Gateway::of(&c, 0);

    let (status, headers) = g
        .raw(
            http::Method::OPTIONS,
            "/v3/kv/put",
            &[
                ("host", "localhost"),
                ("origin", "https://ui.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a preflight is answered at once");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://ui.example")
    );
    assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert!(header(&headers, "access-control-allow-headers")
        .is_some_and(|h| h.contains("authorization")));
    assert_eq!(header(&headers, "vary"), Some("origin"));

    // Another origin's request is served, but its page may not read it.
    let (status, headers) = g
        .raw(
            http::Method::GET,
            "/version",
            &[("host", "localhost"), ("origin", "https://other.example")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // DNS rebinding: a page of evil.example whose name resolves here.
    let (status, _) = g
        .raw(
            http::Method::GET,
            "/version",
            &[("host", "evil.example:2379")],
        )
        .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let (status, _) = g
        .raw(http::Method::GET, "/health", &[("host", "evil.example")])
        .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // The fixture's own requests name 127.0.0.1, which is not listed.
    let (status, _) = g.raw(http::Method::GET, "/version", &[]).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let (status, _) = g
        .raw(http::Method::GET, "/version", &[("host", "localhost:2379")])
        .await;
    assert_eq!(status, StatusCode::OK);

    // gRPC is not an HTTP endpoint for browsers: not checked, though this
    // channel names 127.0.0.1.
    let addr = c.members[0].server.as_ref().unwrap().client_addr;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(channel);
    kv.put(cairn_proto::etcdserverpb::PutRequest {
        key: b"grpc".to_vec(),
        value: b"ok".to_vec(),
        ..Default::default()
    })
    .await
    .expect("a gRPC put is not held to the host whitelist");
    c.shutdown().await;
}
