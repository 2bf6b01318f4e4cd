//! Requests that do not decode, sent as raw bytes over HTTP/2: every Herald
//! service answers INVALID_ARGUMENT (tonic alone answers INTERNAL), naming
//! what did not decode.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame};
use prost::bytes::Bytes;
use tonic::{Code, Status};
use tower::ServiceExt;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer};

both_backends!(undecodable_requests_are_invalid_arguments);

/// A request body of fixed bytes, sent in one DATA frame.
struct RawBody(Option<Bytes>);

impl Body for RawBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A gRPC frame: compressed flag, big-endian length, then `message`.
fn frame(compressed: u8, length: u32, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![compressed];
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Sends `body` to `method` as it is and reads the answer's status, from
/// the headers (trailers-only) or from the trailers.
async fn send(server: &TestServer, method: &str, body: Vec<u8>) -> Status {
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let request = http::Request::post(format!("{}{method}", server.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(tonic::body::Body::new(RawBody(Some(Bytes::from(body)))))
        .expect("request");
    let response = channel.oneshot(request).await.expect("an HTTP answer");
    assert_eq!(response.status(), http::StatusCode::OK, "gRPC answers 200");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(frame) = futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.expect("the answer's body reads");
        if let Some(trailers) = frame.trailers_ref() {
            return Status::from_header_map(trailers).expect("a status in the trailers");
        }
    }
    panic!("no gRPC status in the answer to {method}");
}

async fn undecodable_requests_are_invalid_arguments(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Field 1 (a string) holding bytes that are not UTF-8.
    let not_utf8 = [0x0a, 0x02, 0xff, 0xfe];
    // A tag whose varint never ends within ten bytes.
    let bad_varint = [0xff; 11];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/herald.v1.Subscriptions/GetEndpoint",
            frame(0, 4, &not_utf8),
            "GetEndpointRequest.id",
        ),
        (
            "/herald.v1.Events/Publish",
            frame(0, 11, &bad_varint),
            "varint",
        ),
        // Server-streaming: the request is read before the stream starts.
        (
            "/herald.v1.Streams/Subscribe",
            frame(0, 4, &not_utf8),
            "SubscribeRequest",
        ),
        // A frame announcing more bytes than come before the stream ends.
        ("/herald.v1.Admin/ListApiKeys", frame(0, 10, &[0x08]), "EOF"),
        // Compressed without a grpc-encoding.
        ("/herald.v1.Events/ListEvents", frame(1, 0, &[]), "compress"),
        // No message at all.
        (
            "/herald.v1.Subscriptions/ListConsumers",
            Vec::new(),
            "Missing",
        ),
    ];
    for (method, body, needle) in cases {
        let status = send(&server, method, body).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{method}: {}",
            status.message()
        );
        assert!(
            status
                .message()
                .starts_with(&format!("request: is not a valid message for {method} (")),
            "{method}: {}",
            status.message()
        );
        assert!(
            status.message().contains(needle),
            "{method} mentions {needle:?}: {}",
            status.message()
        );
    }
    // A well-formed request is answered as before.
    let status = send(
        &server,
        "/herald.v1.Subscriptions/GetEndpoint",
        frame(0, 6, &[0x0a, 0x04, b'e', b'p', b'_', b'1']),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    server.finish().await;
}
