//! The connection: [`Herald`], its builder, and the one place where every
//! unary call gets its token, its timeout and its retries.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{self, Stream};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Code, Error, Result};
use crate::retry::RetryPolicy;

/// A connection to a Herald server.
///
/// Cheap to clone: clones share one HTTP/2 connection. Build one with
/// [`Herald::connect`]:
///
/// ```no_run
/// # async fn example() -> herald_client::Result<()> {
/// let herald = herald_client::Herald::connect("https://herald.internal:50051")
///     .token("hk_…")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Herald {
    pub(crate) channel: Channel,
    authorization: Option<MetadataValue<Ascii>>,
    request_timeout: Duration,
    retry: RetryPolicy,
}

/// Settings for a [`Herald`] connection; made by [`Herald::connect`].
///
/// Finish with [`connect`](HeraldBuilder::connect) (or simply `.await` the
/// builder), or with [`connect_lazy`](HeraldBuilder::connect_lazy).
#[derive(Clone)]
#[must_use = "a builder does nothing until `.connect().await`"]
pub struct HeraldBuilder {
    url: String,
    token: Option<String>,
    ca_certificates: Vec<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl Herald {
    /// Starts configuring a connection to `url` (`http://host:port`, or
    /// `https://…` for TLS checked against the Web PKI roots and any
    /// [`ca_certificate`](HeraldBuilder::ca_certificate)).
    ///
    /// Defaults: no token, 10 s connect timeout, 30 s per-request timeout,
    /// [`RetryPolicy::default`].
    pub fn connect(url: impl Into<String>) -> HeraldBuilder {
        HeraldBuilder {
            url: url.into(),
            token: None,
            ca_certificates: Vec::new(),
            identity: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// Wraps a message in a request with the bearer token and the
    /// `grpc-timeout` header.
    pub(crate) fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Makes one unary call with the per-request timeout, retrying on
    /// `UNAVAILABLE` when `idempotent`.
    ///
    /// `rpc` gets a fresh channel handle and request for every try, so the
    /// closure is usually `|channel, request| async move {
    /// SomeClient::new(channel).some_call(request).await }`.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        idempotent: bool,
        message: Req,
        mut rpc: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut attempt = 1;
        loop {
            let request = self.request(message.clone(), Some(self.request_timeout));
            let call = rpc(self.channel.clone(), request);
            let error = match tokio::time::timeout(self.request_timeout, call).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => Error::from(status),
                Err(_elapsed) => Error::Timeout(self.request_timeout),
            };
            if idempotent && error.code() == Code::Unavailable && attempt < self.retry.max_attempts
            {
                tokio::time::sleep(self.retry.backoff.delay(attempt - 1)).await;
                attempt += 1;
                continue;
            }
            return Err(error);
        }
    }

    /// The per-request timeout, for helpers that bound their own calls.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

impl HeraldBuilder {
    /// The API key (`hk_…`) sent as `authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> HeraldBuilder {
        self.token = Some(token.into());
        self
    }

    /// Also trusts this certificate authority (PEM), for a server whose
    /// certificate a private or self-signed CA issued; the Web PKI roots
    /// stay trusted. Only for `https://` URLs; call again for more.
    ///
    /// ```no_run
    /// # async fn example() -> herald_client::Result<()> {
    /// let ca = std::fs::read("herald-ca.pem").expect("the CA certificate");
    /// let herald = herald_client::Herald::connect("https://herald.internal:50051")
    ///     .ca_certificate(ca)
    ///     .token("hk_…")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> HeraldBuilder {
        self.ca_certificates.push(pem.into());
        self
    }

    /// Presents this client certificate and its private key (both PEM),
    /// for a server that requires mutual TLS (`herald serve
    /// --tls-client-ca`). Only for `https://` URLs.
    ///
    /// ```no_run
    /// # async fn example() -> herald_client::Result<()> {
    /// let read = |path: &str| std::fs::read(path).expect("a PEM file");
    /// let herald = herald_client::Herald::connect("https://herald.internal:50051")
    ///     .ca_certificate(read("herald-ca.pem"))
    ///     .identity(read("billing.pem"), read("billing.key"))
    ///     .token("hk_…")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn identity(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> HeraldBuilder {
        self.identity = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// How long to wait for the TCP (and TLS) connection; default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> HeraldBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for the answer to each unary call, per try; default
    /// 30 s. Stream subscriptions are not bounded by it.
    pub fn request_timeout(mut self, timeout: Duration) -> HeraldBuilder {
        self.request_timeout = timeout;
        self
    }

    /// When to retry calls that are safe to repeat; see [`RetryPolicy`].
    pub fn retry(mut self, retry: RetryPolicy) -> HeraldBuilder {
        self.retry = retry;
        self
    }

    /// Connects now, so that a wrong address or a dead server shows here
    /// rather than at the first call.
    pub async fn connect(self) -> Result<Herald> {
        let (endpoint, herald) = self.prepare()?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| Error::connect(&self.url, &error))?;
        Ok(Herald { channel, ..herald })
    }

    /// Returns a client at once; the connection is made (and remade after a
    /// failure) at the first call. Needs a Tokio runtime.
    pub fn connect_lazy(self) -> Result<Herald> {
        let (endpoint, herald) = self.prepare()?;
        Ok(Herald {
            channel: endpoint.connect_lazy(),
            ..herald
        })
    }

    /// Validates the settings: the endpoint to dial and a client that lacks
    /// only its channel (a lazy one, replaced by the caller).
    fn prepare(&self) -> Result<(Endpoint, Herald)> {
        let authorization = match &self.token {
            None => None,
            Some(token) => {
                let mut value = format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| {
                        Error::Config("the token is not a valid header value".to_owned())
                    })?;
                // Keeps the token out of `Debug` output and HTTP/2 header tables.
                value.set_sensitive(true);
                Some(value)
            }
        };
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|error| Error::Config(format!("invalid URL {:?}: {error}", self.url)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if self.url.starts_with("https://") {
            // tonic's TLS runs on rustls, which needs one crypto provider per
            // process. Installing ring fails harmlessly when the application
            // already installed one.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut tls = self
                .ca_certificates
                .iter()
                .fold(ClientTlsConfig::new().with_webpki_roots(), |tls, pem| {
                    tls.ca_certificate(Certificate::from_pem(pem))
                });
            if let Some((certificate, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(certificate, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| Error::Config(format!("TLS: {error}")))?;
        } else if !self.url.starts_with("http://") {
            return Err(Error::Config(format!(
                "the URL {:?} must start with http:// or https://",
                self.url
            )));
        } else if !self.ca_certificates.is_empty() {
            return Err(Error::Config(format!(
                "a CA certificate was given for {:?}, which is not an https:// URL",
                self.url
            )));
        } else if self.identity.is_some() {
            return Err(Error::Config(format!(
                "a client certificate was given for {:?}, which is not an https:// URL",
                self.url
            )));
        }
        let herald = Herald {
            channel: endpoint.connect_lazy(),
            authorization,
            request_timeout: self.request_timeout,
            retry: self.retry,
        };
        Ok((endpoint, herald))
    }
}

impl std::fmt::Debug for HeraldBuilder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HeraldBuilder")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_certificates", &self.ca_certificates.len())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl IntoFuture for HeraldBuilder {
    type Output = Result<Herald>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Herald>> + Send>>;

    /// `Herald::connect(url).token(t).await` is `….connect().await`.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.connect())
    }
}

/// One page of a list call.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass to the list call's `page_token` for the next page; `None` on the
    /// last page.
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    pub(crate) fn new(items: Vec<T>, next_page_token: String) -> Page<T> {
        Page {
            items,
            next_page_token: (!next_page_token.is_empty()).then_some(next_page_token),
        }
    }
}

/// Turns a page fetcher into a stream of items: it fetches the page for a
/// token (`""` first), yields its items, and follows `next_page_token` until
/// the last page. An error is yielded once and ends the stream.
pub(crate) fn paginate<T, F, Fut>(first_token: String, fetch: F) -> impl Stream<Item = Result<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    struct State<T, F> {
        fetch: F,
        buffered: std::vec::IntoIter<T>,
        next: Option<String>,
    }
    let state = State {
        fetch,
        buffered: Vec::new().into_iter(),
        next: Some(first_token),
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.buffered.next() {
                return Some((Ok(item), state));
            }
            let token = state.next.take()?;
            match (state.fetch)(token).await {
                Ok(page) => {
                    state.buffered = page.items.into_iter();
                    state.next = page.next_page_token;
                }
                Err(error) => return Some((Err(error), state)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn pages_are_followed_to_the_end() {
        let pages = |token: String| async move {
            Ok(match token.as_str() {
                "" => Page::new(vec![1, 2], "a".into()),
                "a" => Page::new(vec![], "b".into()),
                "b" => Page::new(vec![3], String::new()),
                other => panic!("unexpected token {other}"),
            })
        };
        let items: Vec<i32> = paginate(String::new(), pages)
            .map(|item| item.expect("no error"))
            .collect()
            .await;
        assert_eq!(items, [1, 2, 3]);
    }

    #[tokio::test]
    async fn an_error_ends_the_stream() {
        let pages = |token: String| async move {
            match token.as_str() {
                "" => Ok(Page::new(vec![1], "a".into())),
                _ => Err(Error::from(tonic::Status::unavailable("down"))),
            }
        };
        let items: Vec<Result<i32>> = paginate(String::new(), pages).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().ok(), Some(&1));
        assert_eq!(
            items[1].as_ref().err().map(Error::code),
            Some(Code::Unavailable)
        );
    }

    #[tokio::test]
    async fn bad_urls_and_tokens_are_refused_before_connecting() {
        let error = Herald::connect("localhost:50051")
            .connect_lazy()
            .expect_err("no scheme");
        assert_eq!(error.code(), Code::InvalidArgument);
        let error = Herald::connect("http://localhost:50051")
            .token("bad\ntoken")
            .connect_lazy()
            .expect_err("newline in token");
        assert!(matches!(error, Error::Config(_)), "{error}");
        let error = Herald::connect("http://localhost:50051")
            .ca_certificate("-----BEGIN CERTIFICATE-----")
            .connect_lazy()
            .expect_err("a CA without TLS");
        assert!(error.to_string().contains("https://"), "{error}");
        let error = Herald::connect("http://localhost:50051")
            .identity("-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----")
            .connect_lazy()
            .expect_err("a client certificate without TLS");
        assert!(error.to_string().contains("client certificate"), "{error}");
    }

    #[tokio::test]
    async fn the_token_never_shows_in_debug_output() {
        let builder = Herald::connect("http://localhost:50051").token("hk_secret_token");
        assert!(!format!("{builder:?}").contains("hk_secret"), "{builder:?}");
        let herald = builder.connect_lazy().expect("valid settings");
        assert!(!format!("{herald:?}").contains("hk_secret"), "{herald:?}");
        let builder = Herald::connect("https://localhost:50051")
            .identity("CERTIFICATE", "PRIVATE KEY secret");
        assert!(!format!("{builder:?}").contains("secret"), "{builder:?}");
    }

    #[tokio::test]
    async fn https_urls_get_tls() {
        // Builds the rustls configuration (and installs the crypto provider)
        // without dialling anything.
        Herald::connect("https://herald.example:443")
            .connect_lazy()
            .expect("TLS settings are accepted");
    }

    #[tokio::test]
    async fn a_dead_server_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = Herald::connect(format!("http://{addr}"))
            .connect_timeout(Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert_eq!(error.code(), Code::Unavailable);
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}

#[cfg(test)]
mod retry_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::retry::Backoff;

    /// A client whose calls never touch the network: `unary` is driven
    /// with scripted closures.
    fn offline(retry: RetryPolicy) -> Herald {
        Herald::connect("http://127.0.0.1:9")
            .request_timeout(Duration::from_secs(1))
            .retry(retry)
            .connect_lazy()
            .expect("valid settings")
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                multiplier: 2.0,
                jitter: 0.0,
            },
        }
    }

    /// Runs `unary` with a call that fails with `code` the first `failures`
    /// times; returns the outcome and the number of tries.
    async fn call(idempotent: bool, failures: u32, code: Code) -> (Result<u32>, u32) {
        let herald = offline(policy());
        let tries = Arc::new(AtomicU32::new(0));
        let counted = tries.clone();
        let outcome = herald
            .unary(idempotent, (), move |_channel, _request| {
                let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if attempt <= failures {
                        Err(tonic::Status::new(code, "scripted"))
                    } else {
                        Ok(tonic::Response::new(attempt))
                    }
                }
            })
            .await;
        (outcome, tries.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_are_retried_on_unavailable() {
        let start = tokio::time::Instant::now();
        let (outcome, tries) = call(true, 2, Code::Unavailable).await;
        assert_eq!(outcome.expect("third try succeeds"), 3);
        assert_eq!(tries, 3);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(300),
            "100 ms + 200 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts() {
        let (outcome, tries) = call(true, 10, Code::Unavailable).await;
        assert_eq!(outcome.expect_err("gives up").code(), Code::Unavailable);
        assert_eq!(tries, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn other_calls_and_other_codes_are_not_retried() {
        let (outcome, tries) = call(false, 1, Code::Unavailable).await;
        assert_eq!(outcome.expect_err("no retry").code(), Code::Unavailable);
        assert_eq!(tries, 1);
        let (outcome, tries) = call(true, 1, Code::Internal).await;
        assert_eq!(outcome.expect_err("no retry").code(), Code::Internal);
        assert_eq!(tries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_times_out() {
        let herald = offline(RetryPolicy::none());
        let outcome: Result<()> = herald
            .unary(true, (), |_channel, _request| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(tonic::Response::new(()))
            })
            .await;
        let error = outcome.expect_err("times out");
        assert!(matches!(error, Error::Timeout(_)), "{error}");
        assert_eq!(error.code(), Code::DeadlineExceeded);
    }
}
