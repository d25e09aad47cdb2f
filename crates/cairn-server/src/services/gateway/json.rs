//! The gateway's HTTP side: JSON request bodies in, JSON answers out, and
//! gRPC statuses as etcd's gateway reports them.
//!
//! etcd's gateway (grpc-gateway) reads a request body as one JSON message
//! (an empty body is the default message), or for a streaming call as a
//! sequence of them. It answers a unary call with the message, and a
//! streaming call with one `{"result": …}` object per message, each on its
//! own line, flushed as it comes. A failed unary call gets the HTTP status
//! for its gRPC code and `{"error", "code", "message"}`; a stream that
//! fails mid-way ends with `{"error": {"grpc_code", "http_code",
//! "message", "http_status"}}`.

use std::collections::VecDeque;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use crate::services::common::RequestStream;

const JSON: &str = "application/json";

/// The whole body as one message of type `T`; an empty body is `T`'s
/// default. A body is refused as soon as it passes `limit_bytes`.
pub async fn read_message<T>(body: Body, limit_bytes: usize) -> Result<T, Status>
where
    T: DeserializeOwned + Default,
{
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(body_error)?;
        if bytes.len() + chunk.len() > limit_bytes {
            return Err(too_large(limit_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(bad_json)
}

/// The body as a stream of messages of type `T`, each decoded as soon as
/// its last byte arrives. A message over `limit_bytes` ends the stream with
/// an error, as does malformed JSON.
pub fn read_messages<T>(body: Body, limit_bytes: usize) -> RequestStream<T>
where
    T: DeserializeOwned + Send + 'static,
{
    let reader = MessageReader {
        chunks: body.into_data_stream().boxed(),
        buffered: Vec::new(),
        decoded: VecDeque::new(),
        limit_bytes,
        needs_bytes: true,
        failure: None,
        done: false,
    };
    futures::stream::unfold(reader, |mut r| async move {
        let next = r.next().await?;
        Some((next, r))
    })
    .boxed()
}

/// Messages decoded ahead of the service taking them: a body of many tiny
/// messages is decoded as they are taken, not all at once.
const DECODED_AHEAD: usize = 16;

/// What [`read_messages`] keeps between messages.
struct MessageReader<T> {
    chunks: BoxStream<'static, Result<Bytes, axum::Error>>,
    /// Bytes received and not yet decoded: the start of the next message.
    buffered: Vec<u8>,
    /// Messages decoded and not yet taken (at most [`DECODED_AHEAD`]).
    decoded: VecDeque<T>,
    limit_bytes: usize,
    /// `buffered` holds no whole message: read before decoding again.
    needs_bytes: bool,
    /// Why the stream ends, once the messages before it are taken.
    failure: Option<Status>,
    /// Nothing more is read from the body.
    done: bool,
}

impl<T: DeserializeOwned> MessageReader<T> {
    async fn next(&mut self) -> Option<Result<T, Status>> {
        loop {
            if let Some(message) = self.decoded.pop_front() {
                return Some(Ok(message));
            }
            if !self.needs_bytes {
                self.decode_buffered();
                continue;
            }
            if let Some(status) = self.failure.take() {
                return Some(Err(status));
            }
            if self.done {
                return None;
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) if self.buffered.len() + chunk.len() > self.limit_bytes => {
                    self.fail(too_large(self.limit_bytes));
                }
                Some(Ok(chunk)) => {
                    self.buffered.extend_from_slice(&chunk);
                    // Every message is an object, so one can only have
                    // ended in a chunk holding a `}`: a long message
                    // arriving in many chunks is not parsed again each
                    // time.
                    self.needs_bytes = !chunk.contains(&b'}');
                }
                Some(Err(e)) => self.fail(body_error(e)),
                None => {
                    self.done = true;
                    if !self.buffered.iter().all(u8::is_ascii_whitespace) {
                        self.fail(Status::invalid_argument(
                            "the request body ends inside a JSON message",
                        ));
                    }
                }
            }
        }
    }

    /// Ends the stream with `status`, after the messages decoded before.
    fn fail(&mut self, status: Status) {
        self.failure = Some(status);
        self.done = true;
        self.needs_bytes = true;
    }

    /// Moves up to [`DECODED_AHEAD`] whole messages from `buffered` to
    /// `decoded`.
    fn decode_buffered(&mut self) {
        let mut messages = serde_json::Deserializer::from_slice(&self.buffered).into_iter::<T>();
        let mut consumed = 0;
        let mut failure = None;
        // Whether what is left of `buffered` may hold another message.
        let mut more = false;
        while self.decoded.len() < DECODED_AHEAD {
            match messages.next() {
                Some(Ok(message)) => {
                    consumed = messages.byte_offset();
                    self.decoded.push_back(message);
                    more = true;
                }
                // The rest has not arrived yet.
                Some(Err(e)) if e.is_eof() => {
                    more = false;
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(bad_json(e));
                    break;
                }
                None => {
                    consumed = self.buffered.len();
                    more = false;
                    break;
                }
            }
        }
        self.buffered.drain(..consumed);
        self.needs_bytes = !more;
        if let Some(status) = failure {
            self.fail(status);
        }
    }
}

/// A unary call's answer: `message` as JSON, or the error etcd's gateway
/// gives for `result`'s status.
pub fn answer<T: Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(response) => match serde_json::to_vec(response.get_ref()) {
            Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
            Err(e) => error(&Status::internal(format!("cannot encode the answer: {e}"))),
        },
        Err(status) => error(&status),
    }
}

/// A streaming call's answer: one `{"result": …}` line per message, the
/// stream's error (if any) as the last line.
pub fn answer_stream<T, S>(result: Result<tonic::Response<S>, Status>) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let messages = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return error(&status),
    };
    // Every service stream ends after an error; `scan` makes sure
    // nothing follows the error line anyway.
    let lines = messages.scan(false, |ended, item| {
        if *ended {
            return futures::future::ready(None);
        }
        let mut line = match item {
            Ok(message) => {
                serde_json::to_vec(&StreamItem { result: &message }).unwrap_or_else(|e| {
                    *ended = true;
                    stream_error_line(&Status::internal(format!("cannot encode the answer: {e}")))
                })
            }
            Err(status) => {
                *ended = true;
                stream_error_line(&status)
            }
        };
        line.push(b'\n');
        futures::future::ready(Some(Ok::<_, std::convert::Infallible>(Bytes::from(line))))
    });
    ([(header::CONTENT_TYPE, JSON)], Body::from_stream(lines)).into_response()
}

/// One message of a streaming answer.
#[derive(Serialize)]
struct StreamItem<'a, T> {
    result: &'a T,
}

/// `{"error": {"grpc_code", "http_code", "message", "http_status"}}`
fn stream_error_line(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let body = serde_json::json!({
        "error": {
            "grpc_code": status.code() as i32,
            "http_code": http.as_u16(),
            "message": status.message(),
            "http_status": http.canonical_reason().unwrap_or(""),
        }
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A failed call's answer: the HTTP status for its gRPC code and
/// `{"error", "code", "message"}`.
pub fn error(status: &Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    });
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, JSON)],
        body.to_string(),
    )
        .into_response()
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn bad_json(e: serde_json::Error) -> Status {
    Status::invalid_argument(format!("the request body is not a valid message: {e}"))
}

fn too_large(limit_bytes: usize) -> Status {
    Status::invalid_argument(format!(
        "etcdserver: request is too large (the gateway reads at most {limit_bytes} bytes)"
    ))
}

fn body_error(e: axum::Error) -> Status {
    Status::invalid_argument(format!("cannot read the request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::LeaseKeepAliveRequest;

    /// What [`read_messages`] makes of a body arriving in `chunks`: the IDs
    /// decoded, then the error's message if it ended in one.
    async fn ids(chunks: &[&str], limit_bytes: usize) -> (Vec<i64>, Option<String>) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let mut messages = read_messages::<LeaseKeepAliveRequest>(body, limit_bytes);
        let mut ids = Vec::new();
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) => ids.push(m.id),
                Err(status) => {
                    assert!(messages.next().await.is_none(), "nothing after an error");
                    return (ids, Some(status.message().to_string()));
                }
            }
        }
        (ids, None)
    }

    #[tokio::test]
    async fn messages_are_decoded_across_and_within_chunks() {
        let cases: &[(&[&str], &[i64])] = &[
            (&[], &[]),
            (&["  \n"], &[]),
            (&[r#"{"ID": 1}"#], &[1]),
            (&[r#"{"ID""#, r#": "2"#, r#"2"}"#], &[22]),
            (
                &[r#"{"ID": 1}{"ID": 2} {"#, r#""ID": 3}"#, "\n"],
                &[1, 2, 3],
            ),
            (&["{}", "{}"], &[0, 0]),
        ];
        for (chunks, want) in cases {
            assert_eq!(ids(chunks, 1024).await, (want.to_vec(), None), "{chunks:?}");
        }
        // More messages in one chunk than are decoded ahead.
        let many = r#"{"ID": 7}"#.repeat(DECODED_AHEAD * 3 + 1);
        assert_eq!(
            ids(&[&many], 1 << 20).await,
            (vec![7; DECODED_AHEAD * 3 + 1], None)
        );
    }

    #[tokio::test]
    async fn a_bad_message_ends_the_stream_after_the_good_ones() {
        let (got, err) = ids(&[r#"{"ID": 1} {"ID": "x"} {"ID": 3}"#], 1024).await;
        assert_eq!(got, [1]);
        assert!(err.unwrap().contains("not a valid message"));

        let (got, err) = ids(&[r#"{"ID": 1} {"ID""#], 1024).await;
        assert_eq!(got, [1]);
        assert_eq!(err.unwrap(), "the request body ends inside a JSON message");

        let (got, err) = ids(&[r#"{"ID": 1}"#, r#"{"ID": "123456789"#], 16).await;
        assert_eq!(got, [1]);
        assert!(err.unwrap().contains("request is too large"));
    }

    #[tokio::test]
    async fn a_whole_body_is_one_message_or_the_default() {
        let body = |s: &str| Body::from(s.to_string());
        let m: LeaseKeepAliveRequest = read_message(body(r#"{"ID": "9"}"#), 64).await.unwrap();
        assert_eq!(m.id, 9);
        let m: LeaseKeepAliveRequest = read_message(body(" "), 64).await.unwrap();
        assert_eq!(m.id, 0);
        let e = read_message::<LeaseKeepAliveRequest>(body(r#"{"ID": 1}{"ID": 2}"#), 64)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = read_message::<LeaseKeepAliveRequest>(body(&" ".repeat(65)), 64)
            .await
            .unwrap_err();
        assert!(e.message().contains("request is too large"), "{e:?}");
    }

    #[test]
    fn codes_map_to_grpc_gateways_http_statuses() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::OutOfRange, 400),
            (Code::FailedPrecondition, 400),
            (Code::NotFound, 404),
            (Code::PermissionDenied, 403),
            (Code::Unauthenticated, 401),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unimplemented, 501),
            (Code::DataLoss, 500),
        ];
        for (code, http) in cases {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
