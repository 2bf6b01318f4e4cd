//! `herald.v1.Streams`: receiving events over an outbound connection, for
//! consumers without a public URL.
//!
//! A [`Subscriber`] keeps one `Subscribe` stream open, reconnecting with
//! exponential backoff when it breaks. Herald keeps every unacknowledged
//! delivery of a stream endpoint and sends it again on reconnect (or after
//! the ack timeout), so resuming needs no client-side cursor: whatever was
//! not acknowledged comes back. Acknowledge a message only once it is
//! handled, and delivery is at-least-once.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};

use crate::proto::streams_client::StreamsClient;
use crate::proto::subscribe_response::Message as Frame;
use crate::proto::{self, StreamEvent};
use crate::retry::Backoff;
use crate::{Code, Error, Herald, Result};

/// What a [`Subscriber::run`] handler returns when it fails: any error,
/// boxed, so that `?` works on most error types inside the handler.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

impl Herald {
    /// A subscriber to a `STREAM` endpoint (`ep_…`): every unacknowledged
    /// delivery, oldest first, then new ones live.
    ///
    /// ```no_run
    /// # async fn example(herald: herald_client::Herald) -> herald_client::Result<()> {
    /// herald
    ///     .subscriber("ep_01J…")
    ///     .run(|event| async move {
    ///         println!("{} {}", event.event_type, event.payload);
    ///         Ok(())
    ///     })
    ///     .await
    /// # }
    /// ```
    pub fn subscriber(&self, endpoint_id: impl Into<String>) -> Subscriber {
        Subscriber::new(
            self.clone(),
            proto::SubscribeRequest {
                endpoint_id: endpoint_id.into(),
                ..Default::default()
            },
        )
    }

    /// A live tail of a consumer's new events (id or uid), for development:
    /// nothing is stored for it and there is nothing to acknowledge. Narrow
    /// it with [`Subscriber::event_type`].
    pub fn tail(&self, consumer_id: impl Into<String>) -> Subscriber {
        Subscriber::new(
            self.clone(),
            proto::SubscribeRequest {
                consumer_id: consumer_id.into(),
                ..Default::default()
            },
        )
    }

    /// Settles stream messages by their ack tokens; returns how many settled
    /// a delivery (stale or repeated tokens do not count). Safe to repeat,
    /// so retried on `UNAVAILABLE`.
    pub async fn ack(
        &self,
        endpoint_id: impl Into<String>,
        ack_tokens: impl IntoIterator<Item = String>,
    ) -> Result<u32> {
        let request = proto::AckRequest {
            endpoint_id: endpoint_id.into(),
            ack_tokens: ack_tokens.into_iter().collect(),
        };
        self.unary(true, request, |channel, request| async move {
            StreamsClient::new(channel).ack(request).await
        })
        .await
        .map(|response| response.acknowledged)
    }
}

/// A `Subscribe` stream that reconnects; made by [`Herald::subscriber`] or
/// [`Herald::tail`].
///
/// Consume it with [`run`](Subscriber::run) (a handler per event,
/// acknowledged when the handler succeeds) or [`stream`](Subscriber::stream)
/// (messages you [`ack`](Message::ack) yourself).
#[derive(Debug, Clone)]
#[must_use = "a subscriber does nothing until `.run(..)` or `.stream()`"]
pub struct Subscriber {
    client: Herald,
    request: proto::SubscribeRequest,
    reconnect: Reconnect,
}

/// How a subscriber reconnects.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reconnect {
    backoff: Backoff,
    max_reconnects: Option<u32>,
    idle_timeout: Option<Duration>,
    open_timeout: Duration,
}

impl Subscriber {
    fn new(client: Herald, request: proto::SubscribeRequest) -> Subscriber {
        let open_timeout = client.request_timeout();
        Subscriber {
            client,
            request,
            reconnect: Reconnect {
                backoff: Backoff {
                    initial: Duration::from_millis(250),
                    max: Duration::from_secs(30),
                    multiplier: 2.0,
                    jitter: 0.2,
                },
                max_reconnects: None,
                idle_timeout: Some(Duration::from_secs(120)),
                open_timeout,
            },
        }
    }

    /// How long a message may stay unacknowledged before Herald sends it
    /// again (to this or another subscriber); the server's default is 30 s.
    pub fn ack_timeout(mut self, ack_timeout: Duration) -> Subscriber {
        self.request.ack_timeout = Some(crate::time::duration(ack_timeout));
        self
    }

    /// At most this many unacknowledged messages at once; the server's
    /// default is 100.
    pub fn max_unacked(mut self, max_unacked: u32) -> Subscriber {
        self.request.max_unacked = max_unacked;
        self
    }

    /// For a [`tail`](Herald::tail): only this event type (an exact name or
    /// a `prefix.*` pattern); call again for more.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Subscriber {
        self.request.event_types.push(event_type.into());
        self
    }

    /// The delays between reconnects; by default 250 ms doubling to 30 s,
    /// ±20%. The count restarts once a message arrives.
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Subscriber {
        self.reconnect.backoff = backoff;
        self
    }

    /// Gives up after this many reconnects in a row without a message (by
    /// default it never gives up on errors that may pass).
    pub fn max_reconnects(mut self, max_reconnects: u32) -> Subscriber {
        self.reconnect.max_reconnects = Some(max_reconnects);
        self
    }

    /// Reconnects when nothing, not even a heartbeat, arrives for this long
    /// (default 120 s; `None` waits forever). Catches connections that died
    /// without a word.
    pub fn idle_timeout(mut self, idle_timeout: Option<Duration>) -> Subscriber {
        self.reconnect.idle_timeout = idle_timeout;
        self
    }

    /// The events, reconnecting as needed. Yields an error (and then ends)
    /// only when reconnecting cannot help: the key is refused, the endpoint
    /// does not exist, the request is invalid, the server does not offer
    /// streams, or [`max_reconnects`](Self::max_reconnects) ran out.
    pub fn stream(self) -> impl Stream<Item = Result<Message>> + Send + 'static {
        let Subscriber {
            client,
            request,
            reconnect,
        } = self;
        let endpoint_id = request.endpoint_id.clone();
        let opener = client.clone();
        let open = move || {
            let client = opener.clone();
            let request = request.clone();
            async move {
                let call = async {
                    StreamsClient::new(client.channel.clone())
                        .subscribe(client.request(request, None))
                        .await
                };
                match tokio::time::timeout(reconnect.open_timeout, call).await {
                    Ok(Ok(response)) => Ok(Box::pin(response.into_inner()) as EventStream),
                    Ok(Err(status)) => Err(Error::from(status)),
                    Err(_elapsed) => Err(Error::Timeout(reconnect.open_timeout)),
                }
            }
        };
        reconnecting(open, reconnect).map(move |event| {
            event.map(|event| Message {
                event,
                client: client.clone(),
                endpoint_id: endpoint_id.clone(),
            })
        })
    }

    /// Calls `handler` for each event, one at a time, and acknowledges the
    /// event when the handler returns `Ok`. When it returns an error the
    /// event is left unacknowledged, and Herald sends it again (with a
    /// higher [`attempt`](StreamEvent::attempt)) after the
    /// [`ack_timeout`](Self::ack_timeout) or on the next reconnect; the
    /// error is not reported anywhere else, so log it in the handler if you
    /// want to see it. Returns only when the stream cannot go on (see
    /// [`stream`](Self::stream)).
    pub async fn run<F, Fut>(self, mut handler: F) -> Result<()>
    where
        F: FnMut(StreamEvent) -> Fut,
        Fut: Future<Output = std::result::Result<(), HandlerError>>,
    {
        let mut messages = std::pin::pin!(self.stream());
        while let Some(message) = messages.next().await {
            let message = message?;
            if handler(message.event.clone()).await.is_ok() {
                // A failed ack is not fatal: the message comes again, and
                // handlers must tolerate repeats under at-least-once anyway.
                let _ = message.ack().await;
            }
        }
        Ok(())
    }
}

/// One event received over a stream, with what it takes to acknowledge it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The event, as a webhook would carry it, with its ack token.
    pub event: StreamEvent,
    client: Herald,
    endpoint_id: String,
}

impl Message {
    /// The payload parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.event.payload)
    }

    /// Settles this message so Herald does not send it again. Does nothing
    /// for a live tail, which has nothing to settle.
    pub async fn ack(&self) -> Result<()> {
        if self.event.ack_token.is_empty() {
            return Ok(());
        }
        self.client
            .ack(self.endpoint_id.clone(), [self.event.ack_token.clone()])
            .await
            .map(drop)
    }
}

/// A `Subscribe` response stream, boxed so that tests can script one.
type EventStream = Pin<
    Box<dyn Stream<Item = std::result::Result<proto::SubscribeResponse, tonic::Status>> + Send>,
>;

/// Errors that a reconnect cannot cure.
fn is_fatal(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::Unimplemented
            | Code::AlreadyExists
            | Code::OutOfRange
    )
}

/// The reconnect engine: opens a stream with `open`, yields its events,
/// skips heartbeats, and reopens after a backoff when the stream fails,
/// ends or stays silent past the idle timeout.
fn reconnecting<O, Fut>(open: O, reconnect: Reconnect) -> impl Stream<Item = Result<StreamEvent>>
where
    O: FnMut() -> Fut,
    Fut: Future<Output = Result<EventStream>>,
{
    struct State<O> {
        open: O,
        reconnect: Reconnect,
        current: Option<EventStream>,
        /// Failures in a row since the last message.
        failures: u32,
        done: bool,
    }

    impl<O> State<O> {
        /// Records a failure; returns the error when it ends the stream.
        fn fail(&mut self, error: Error) -> Option<Error> {
            self.current = None;
            if is_fatal(error.code()) {
                return Some(error);
            }
            self.failures = self.failures.saturating_add(1);
            match self.reconnect.max_reconnects {
                Some(max) if self.failures > max => Some(error),
                _ => None,
            }
        }
    }

    let state = State {
        open,
        reconnect,
        current: None,
        failures: 0,
        done: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            let Some(current) = state.current.as_mut() else {
                if state.failures > 0 {
                    let delay = state.reconnect.backoff.delay(state.failures - 1);
                    tokio::time::sleep(delay).await;
                }
                match (state.open)().await {
                    Ok(opened) => state.current = Some(opened),
                    Err(error) => {
                        if let Some(error) = state.fail(error) {
                            state.done = true;
                            return Some((Err(error), state));
                        }
                    }
                }
                continue;
            };
            let next = match state.reconnect.idle_timeout {
                None => current.next().await,
                Some(idle) => match tokio::time::timeout(idle, current.next()).await {
                    Ok(next) => next,
                    Err(_elapsed) => Some(Err(tonic::Status::deadline_exceeded(format!(
                        "nothing received for {idle:?}"
                    )))),
                },
            };
            let error = match next {
                Some(Ok(response)) => {
                    state.failures = 0;
                    match response.message {
                        Some(Frame::Event(event)) => return Some((Ok(event), state)),
                        Some(Frame::Heartbeat(_)) | None => continue,
                    }
                }
                Some(Err(status)) => Error::from(status),
                None => Error::Rpc {
                    code: Code::Unavailable,
                    message: "the server ended the stream".to_owned(),
                },
            };
            if let Some(error) = state.fail(error) {
                state.done = true;
                return Some((Err(error), state));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn event(id: &str) -> std::result::Result<proto::SubscribeResponse, tonic::Status> {
        Ok(proto::SubscribeResponse {
            message: Some(Frame::Event(StreamEvent {
                event_id: id.to_owned(),
                ack_token: format!("ack-{id}"),
                ..Default::default()
            })),
        })
    }

    fn heartbeat() -> std::result::Result<proto::SubscribeResponse, tonic::Status> {
        Ok(proto::SubscribeResponse {
            message: Some(Frame::Heartbeat(proto::Heartbeat::default())),
        })
    }

    type Script = Result<Vec<std::result::Result<proto::SubscribeResponse, tonic::Status>>>;

    /// An opener that plays `script`, one entry per `Subscribe` call, and
    /// records when each call was made (in paused tokio time).
    type Calls = Arc<Mutex<Vec<tokio::time::Instant>>>;

    fn scripted(
        script: Vec<Script>,
    ) -> (
        impl FnMut() -> std::future::Ready<Result<EventStream>>,
        Calls,
    ) {
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let open = move || {
            recorded
                .lock()
                .expect("lock")
                .push(tokio::time::Instant::now());
            let next = script
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or_else(|| Err(Error::from(tonic::Status::permission_denied("end"))));
            std::future::ready(
                next.map(|items| Box::pin(futures_util::stream::iter(items)) as EventStream),
            )
        };
        (open, calls)
    }

    fn settings() -> Reconnect {
        Reconnect {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(4),
                multiplier: 2.0,
                jitter: 0.0,
            },
            max_reconnects: None,
            idle_timeout: Some(Duration::from_secs(60)),
            open_timeout: Duration::from_secs(5),
        }
    }

    fn unavailable() -> Error {
        Error::from(tonic::Status::unavailable("down"))
    }

    #[tokio::test(start_paused = true)]
    async fn it_reconnects_with_backoff_and_resets_after_a_message() {
        let (open, calls) = scripted(vec![
            Err(unavailable()),
            Err(unavailable()),
            Ok(vec![
                heartbeat(),
                event("1"),
                Err(tonic::Status::unavailable("reset")),
            ]),
            Err(unavailable()),
            Ok(vec![event("2")]),
            // The stream above ended cleanly; the next open is refused for good.
        ]);
        let start = tokio::time::Instant::now();
        let items: Vec<Result<StreamEvent>> = reconnecting(open, settings()).collect().await;
        let ids: Vec<_> = items
            .iter()
            .map(|item| match item {
                Ok(event) => event.event_id.clone(),
                Err(error) => format!("{:?}", error.code()),
            })
            .collect();
        assert_eq!(ids, ["1", "2", "PermissionDenied"]);
        let offsets: Vec<u64> = calls
            .lock()
            .expect("lock")
            .iter()
            .map(|call| (*call - start).as_secs())
            .collect();
        // Opens at 0; two failures wait 1 s then 2 s; the message resets the
        // count, so the break waits 1 s, the failed open 2 s, the clean end 1 s.
        assert_eq!(offsets, [0, 1, 3, 4, 6, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_after_max_reconnects() {
        let (open, calls) = scripted(vec![
            Err(unavailable()),
            Err(unavailable()),
            Err(unavailable()),
            Ok(vec![event("never")]),
        ]);
        let mut reconnect = settings();
        reconnect.max_reconnects = Some(2);
        let items: Vec<Result<StreamEvent>> = reconnecting(open, reconnect).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().err().map(Error::code),
            Some(Code::Unavailable)
        );
        assert_eq!(calls.lock().expect("lock").len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_reopened_after_the_idle_timeout() {
        let silent: EventStream = Box::pin(futures_util::stream::pending());
        let mut first = Some(silent);
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let open = move || {
            *counted.lock().expect("lock") += 1;
            std::future::ready(match first.take() {
                Some(silent) => Ok(silent),
                None => {
                    Ok(Box::pin(futures_util::stream::iter(vec![event("after")])) as EventStream)
                }
            })
        };
        let mut events = std::pin::pin!(reconnecting(open, settings()));
        let start = tokio::time::Instant::now();
        let first = events.next().await.expect("an item").expect("an event");
        assert_eq!(first.event_id, "after");
        assert_eq!(*calls.lock().expect("lock"), 2);
        assert_eq!((tokio::time::Instant::now() - start).as_secs(), 61);
    }

    #[test]
    fn only_lasting_errors_are_fatal() {
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Unimplemented,
        ] {
            assert!(is_fatal(code), "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::ResourceExhausted,
        ] {
            assert!(!is_fatal(code), "{code:?}");
        }
    }
}
