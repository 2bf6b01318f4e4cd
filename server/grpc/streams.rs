//! `herald.v1.Streams`: subscription streams and their acks. This module
//! checks requests and permissions and speaks protobuf; the subscriptions
//! themselves run in `crate::streams`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status};

use super::AppState;
use super::auth::Principal;
use super::convert::{duration, required, timestamp};
use crate::domain::endpoint::EndpointKind;
use crate::domain::event_type::EventTypeFilter;
use crate::domain::ids::EndpointId;
use crate::error::{Error, Result};
use crate::metrics::OpenStreamGuard;
use crate::proto;
use crate::storage::entities::endpoint;
use crate::storage::{consumers, endpoints};
use crate::streams::message::parse_ack_token;
use crate::streams::{DurableSubscription, Receiver, StreamItem, StreamMessage};

pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
pub const MIN_ACK_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_UNACKED: usize = 100;
pub const MAX_MAX_UNACKED: usize = 1000;
pub const MAX_ACK_TOKENS: usize = 1000;

pub struct StreamsService {
    state: Arc<AppState>,
}

impl StreamsService {
    pub fn new(state: Arc<AppState>) -> Self {
        StreamsService { state }
    }

    /// The STREAM endpoint `endpoint_id`, if this principal may use it.
    async fn stream_endpoint(
        &self,
        principal: &Principal,
        field: &str,
        endpoint_id: &str,
    ) -> Result<endpoint::Model> {
        let endpoint_id = required(field, endpoint_id)?;
        let endpoint = endpoints::get(&self.state.db.conn, endpoint_id)
            .await?
            .ok_or_else(|| Error::not_found("endpoint", endpoint_id))?;
        principal.ensure_consumer(&endpoint.consumer_id, "endpoint", endpoint_id)?;
        if EndpointKind::from_stored(&endpoint.kind) != EndpointKind::Stream {
            return Err(Error::FailedPrecondition(format!(
                "endpoint {endpoint_id:?} is a {} endpoint: only STREAM endpoints deliver over Subscribe",
                endpoint.kind.to_uppercase()
            )));
        }
        Ok(endpoint)
    }

    async fn open(
        &self,
        principal: &Principal,
        request: proto::SubscribeRequest,
    ) -> Result<Receiver> {
        let hub = &self.state.streams;
        if !request.endpoint_id.is_empty() {
            if !request.consumer_id.is_empty() {
                return Err(Error::invalid(
                    "consumer_id",
                    "must be empty with endpoint_id (the endpoint names its consumer)",
                ));
            }
            if !request.event_types.is_empty() {
                return Err(Error::invalid(
                    "event_types",
                    "is only for a live tail; an endpoint's own filter applies to its stream",
                ));
            }
            let ack_timeout = match &request.ack_timeout {
                None => DEFAULT_ACK_TIMEOUT,
                Some(value) => duration("ack_timeout", value)?,
            };
            if !(MIN_ACK_TIMEOUT..=MAX_ACK_TIMEOUT).contains(&ack_timeout) {
                return Err(Error::invalid("ack_timeout", "must be between 1s and 1h"));
            }
            let max_unacked = match usize::try_from(request.max_unacked).unwrap_or(usize::MAX) {
                0 => DEFAULT_MAX_UNACKED,
                n if n > MAX_MAX_UNACKED => {
                    return Err(Error::invalid(
                        "max_unacked",
                        format!("must be at most {MAX_MAX_UNACKED}"),
                    ));
                }
                n => n,
            };
            let endpoint = self
                .stream_endpoint(principal, "endpoint_id", &request.endpoint_id)
                .await?;
            if !endpoint.enabled {
                return Err(Error::FailedPrecondition(format!(
                    "endpoint {:?} is disabled{}; enable it to subscribe",
                    endpoint.id,
                    endpoint
                        .disabled_reason
                        .map(|reason| format!(" ({reason})"))
                        .unwrap_or_default()
                )));
            }
            return hub.subscribe(
                &principal.key_id,
                DurableSubscription {
                    endpoint_id: EndpointId::from_stored(endpoint.id),
                    ack_timeout,
                    max_unacked,
                },
            );
        }
        if request.consumer_id.is_empty() {
            return Err(Error::invalid(
                "endpoint_id",
                "is required (or consumer_id, for a live tail)",
            ));
        }
        if request.ack_timeout.is_some() || request.max_unacked != 0 {
            return Err(Error::invalid(
                "ack_timeout",
                "ack_timeout and max_unacked are only for an endpoint's stream; a live tail has nothing to acknowledge",
            ));
        }
        let filter = EventTypeFilter::parse("event_types", &request.event_types)?;
        let consumer = consumers::resolve(&self.state.db.conn, &request.consumer_id)
            .await?
            .ok_or_else(|| Error::not_found("consumer", &request.consumer_id))?;
        principal.ensure_consumer(&consumer.id, "consumer", &request.consumer_id)?;
        hub.tail(&principal.key_id, consumer.id, filter)
    }
}

#[tonic::async_trait]
impl proto::streams_server::Streams for StreamsService {
    type SubscribeStream = SubscriptionStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = Principal::of(&request)?;
        let receiver = self.open(&principal, request.into_inner()).await?;
        Ok(Response::new(SubscriptionStream {
            receiver,
            shutdown: Box::pin(self.state.streams.shutdown_token().cancelled_owned()),
            finished: false,
            _open: self.state.metrics.stream_opened(),
        }))
    }

    async fn ack(
        &self,
        request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        let principal = Principal::of(&request)?;
        let request = request.into_inner();
        if request.ack_tokens.len() > MAX_ACK_TOKENS {
            return Err(Error::invalid(
                "ack_tokens",
                format!("must have at most {MAX_ACK_TOKENS} entries"),
            )
            .into());
        }
        let mut delivery_ids = Vec::with_capacity(request.ack_tokens.len());
        for (index, token) in request.ack_tokens.iter().enumerate() {
            let delivery_id = parse_ack_token(
                self.state.streams.ack_key(),
                &format!("ack_tokens[{index}]"),
                token,
            )?;
            if !delivery_ids.contains(&delivery_id) {
                delivery_ids.push(delivery_id);
            }
        }
        let endpoint = self
            .stream_endpoint(&principal, "endpoint_id", &request.endpoint_id)
            .await?;
        let acknowledged = self
            .state
            .streams
            .acknowledge(&EndpointId::from_stored(endpoint.id), &delivery_ids)
            .await?;
        Ok(Response::new(proto::AckResponse { acknowledged }))
    }
}

/// The response stream of one subscription: the session's bounded channel,
/// cut short with UNAVAILABLE when the server shuts down, so that graceful
/// shutdown never waits for a subscriber.
pub struct SubscriptionStream {
    receiver: Receiver,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    finished: bool,
    _open: OpenStreamGuard,
}

fn reconnect_status() -> Status {
    Status::unavailable(
        "Herald is shutting down: reconnect to resume; unacknowledged messages will be sent again",
    )
}

impl tokio_stream::Stream for SubscriptionStream {
    type Item = Result<proto::SubscribeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.finished = true;
            return Poll::Ready(Some(Err(reconnect_status())));
        }
        match self.receiver.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(Ok(response(item)))),
            Poll::Ready(Some(Err(error))) => {
                self.finished = true;
                Poll::Ready(Some(Err(error.into())))
            }
            // The session ended without a word: only shutdown does that.
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Err(reconnect_status())))
            }
        }
    }
}

fn response(item: StreamItem) -> proto::SubscribeResponse {
    let message = match item {
        StreamItem::Event(event) => proto::subscribe_response::Message::Event(event_message(event)),
        StreamItem::Heartbeat { at } => {
            proto::subscribe_response::Message::Heartbeat(proto::Heartbeat { at: timestamp(at) })
        }
    };
    proto::SubscribeResponse {
        message: Some(message),
    }
}

fn event_message(message: StreamMessage) -> proto::StreamEvent {
    proto::StreamEvent {
        event_id: message.event_id,
        event_type: message.event_type,
        payload: message.payload,
        created_at: timestamp(message.created_at),
        headers: message.headers.into_iter().collect(),
        ack_token: message.ack_token,
        attempt: message.attempt,
    }
}
