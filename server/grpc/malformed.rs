//! Requests that do not decode answer INVALID_ARGUMENT, not INTERNAL.
//!
//! tonic (with tonic-prost 0.14) answers a request it cannot read as a
//! message (invalid UTF-8 in a string field, a bad varint, a truncated frame,
//! a compressed-flag without an encoding, no message at all) with INTERNAL:
//! the code gRPC prescribes for a client that cannot parse a *response*. For
//! a server the fault is the caller's, and INTERNAL would send them looking
//! for a bug in Herald (and count against its error rate). Codec errors
//! cannot be told apart inside tonic, so this tower layer, around every
//! service, rewrites the answer instead: Herald's own INTERNAL answers always
//! carry [`INTERNAL_MESSAGE`], so a trailers-only INTERNAL with any other
//! message was written by tonic before the handler ran, that is, while it
//! read the request. Herald's methods are unary or server-streaming, whose
//! request is read before the response starts, so such an answer is always
//! trailers-only.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::error::{INTERNAL_MESSAGE, bounded};

/// Puts a [`MalformedRequest`] in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct MalformedRequestLayer;

impl<S> Layer<S> for MalformedRequestLayer {
    type Service = MalformedRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MalformedRequest { inner }
    }
}

/// Rewrites tonic's INTERNAL answer to an undecodable request as
/// INVALID_ARGUMENT, keeping tonic's description of what did not decode.
#[derive(Debug, Clone)]
pub struct MalformedRequest<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for MalformedRequest<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let answer = self.inner.call(request);
        Box::pin(async move { Ok(rewrite(&path, answer.await?)) })
    }
}

/// The answer, or INVALID_ARGUMENT if it is tonic's INTERNAL for a request
/// it could not decode.
fn rewrite(
    path: &str,
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    // Trailers-only: the status is in the headers, and there is no body.
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::Internal || status.message() == INTERNAL_MESSAGE {
        return response;
    }
    tracing::debug!(%path, reason = %status.message(), "undecodable request answered as INVALID_ARGUMENT");
    Status::invalid_argument(bounded(format!(
        "request: is not a valid message for {path} ({})",
        status.message()
    )))
    .into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Status) -> http::Response<tonic::body::Body> {
        status.into_http()
    }

    #[test]
    fn only_tonics_decode_failures_are_rewritten() {
        let decode = Status::internal(
            "failed to decode Protobuf message: GetEndpointRequest.id: invalid string value: data is not UTF-8 encoded",
        );
        let rewritten = rewrite("/herald.v1.Subscriptions/GetEndpoint", answer(decode));
        let status = Status::from_header_map(rewritten.headers()).expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(
                "request: is not a valid message for /herald.v1.Subscriptions/GetEndpoint ("
            ),
            "{}",
            status.message()
        );
        assert!(status.message().contains("GetEndpointRequest.id"));

        // Herald's own INTERNAL, and every other code, pass untouched.
        for kept in [
            Status::internal(INTERNAL_MESSAGE),
            Status::not_found("endpoint \"ep_1\" not found"),
            Status::unavailable("shutting down"),
        ] {
            let code = kept.code();
            let message = kept.message().to_owned();
            let passed = rewrite("/herald.v1.Events/Publish", answer(kept));
            let status = Status::from_header_map(passed.headers()).expect("a status");
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }

        // A response with a body (status in trailers) is not touched.
        let ok = http::Response::new(tonic::body::Body::empty());
        let passed = rewrite("/herald.v1.Events/Publish", ok);
        assert!(Status::from_header_map(passed.headers()).is_none());
    }
}
