//! The one HTTP client that delivers webhooks, and what one POST came to.
//!
//! SSRF is checked at connect time: the client's resolver returns only the
//! addresses that [`TargetPolicy::permits`], so the connection goes to a
//! checked address and nothing resolves the name a second time (a name that
//! answers a public address to a check and a private one to the connect,
//! DNS rebinding, gains nothing). The URL itself (scheme, literal-IP host,
//! which never reaches a resolver) is checked against the current policy
//! before every POST, not only when it was accepted: a URL stored under an
//! earlier, wider policy is refused once the operator narrows it.
//!
//! An endpoint with TLS settings (pins, a private CA) is sent through a
//! client of its own, built by `super::tls` and kept in a bounded map keyed
//! by the settings themselves, so that a change of settings gets a new
//! client (and new connections) at once. Every client, shared or not,
//! presents the node's client certificate when one is configured; callback
//! deliveries, which belong to no endpoint, use the shared client.
//!
//! What a refusal tells the caller is generic (`blocked_address`, no
//! addresses): the resolved addresses would show any key holder the
//! operator's internal DNS. The detail goes to the server's log.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use url::Url;

use super::schedule::parse_retry_after;
use super::signing::signature_header;
use super::tls::{ClientIdentity, PinMismatch, client_config, is_pin_mismatch};
use crate::domain::endpoint::header_rule;
use crate::domain::endpoint_tls::EndpointTls;
use crate::domain::secret::SigningSecret;
use crate::domain::target::TargetPolicy;

/// At most this much of a response body is read; more is `response_too_large`.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;
/// At most this much of a response body is stored in the attempt.
pub const MAX_RESPONSE_EXCERPT: usize = 4 * 1024;

/// At most this many clients for endpoints with TLS settings are kept; a
/// full map is emptied (connections of the dropped clients close once
/// their requests end) and refills as deliveries need.
pub const MAX_ENDPOINT_CLIENTS: usize = 1024;

const USER_AGENT_VALUE: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// What an attempt refused by the SSRF policy at connect time records: the
/// resolved addresses stay in the server's log.
pub const BLOCKED_ADDRESS_TEXT: &str = "the host resolves only to addresses this server's target policy refuses (see --allow-target-cidr)";

/// Why an attempt got no usable HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Timeout,
    Connect,
    Dns,
    Tls,
    /// The endpoint pins public keys and none is in the receiver's chain:
    /// the handshake was abandoned before anything was sent.
    TlsPinMismatch,
    /// The target policy refused the URL (its scheme or literal address,
    /// checked before each POST) or every address its host resolves to.
    BlockedAddress,
    ResponseTooLarge,
    Redirect,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Dns => "dns",
            ErrorClass::Tls => "tls",
            ErrorClass::TlsPinMismatch => "tls_pin_mismatch",
            ErrorClass::BlockedAddress => "blocked_address",
            ErrorClass::ResponseTooLarge => "response_too_large",
            ErrorClass::Redirect => "redirect",
        }
    }
}

/// Everything about one POST that is worth recording or deciding on.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub attempted_at_millis: i64,
    pub duration: Duration,
    pub status: Option<u16>,
    pub error_class: Option<ErrorClass>,
    /// The first bytes of the response body, or the error's text.
    pub excerpt: String,
    pub retry_after: Option<Duration>,
}

/// What to POST where.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub extra_headers: &'a [(HeaderName, HeaderValue)],
    pub secrets: &'a [SigningSecret],
    pub message_id: &'a str,
    pub payload: &'a str,
    /// The endpoint's TLS settings; `None` for the defaults (and callbacks).
    pub tls: Option<&'a EndpointTls>,
    /// The W3C trace context the receiver gets (crate::telemetry).
    pub traceparent: Option<&'a str>,
}

/// Where host names are looked up: the system resolver, or in tests one
/// that answers what the test says (to show that only checked addresses are
/// connected to when a name's answers change).
pub trait Lookup: Send + Sync + 'static {
    /// Every address `host` resolves to, or why it does not resolve.
    fn lookup(&self, host: &str) -> LookupFuture;
}

pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// The operating system's resolver (`getaddrinfo`, through tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host, 0)).await?;
            Ok(addresses.map(|address| address.ip()).collect())
        })
    }
}

/// The shared client: keep-alive pools, HTTP/1.1 and h2, no redirects, the
/// SSRF-checking resolver; and the clients of endpoints with TLS settings,
/// built the same way.
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    lookup: Arc<dyn Lookup>,
    request_timeout: Duration,
    identity: Option<Arc<ClientIdentity>>,
    endpoint_clients: Arc<Mutex<HashMap<EndpointTls, reqwest::Client>>>,
}

impl WebhookClient {
    /// Needs a process-wide rustls provider (`crate::install_crypto_provider`).
    pub fn new(policy: TargetPolicy, request_timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_lookup(policy, request_timeout, Arc::new(SystemLookup))
    }

    /// A client whose host names are looked up by `lookup` (and then checked
    /// against `policy`, as always).
    pub fn with_lookup(
        policy: TargetPolicy,
        request_timeout: Duration,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = build_client(&policy, &lookup, request_timeout, None, None)?;
        Ok(WebhookClient {
            client,
            policy,
            lookup,
            request_timeout,
            identity: None,
            endpoint_clients: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// This client, presenting `identity` to every receiver that asks for a
    /// client certificate (`--delivery-client-cert`).
    pub fn with_identity(self, identity: ClientIdentity) -> Result<Self, reqwest::Error> {
        let client = build_client(
            &self.policy,
            &self.lookup,
            self.request_timeout,
            None,
            Some(&identity),
        )?;
        Ok(WebhookClient {
            client,
            identity: Some(Arc::new(identity)),
            endpoint_clients: Arc::new(Mutex::new(HashMap::new())),
            ..self
        })
    }

    /// The client for an endpoint's TLS settings, built on first use.
    fn endpoint_client(&self, settings: &EndpointTls) -> Result<reqwest::Client, String> {
        let mut clients = self
            .endpoint_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(settings) {
            return Ok(client.clone());
        }
        let config = client_config(Some(settings), self.identity.as_deref())
            .map_err(|err| format!("cannot set up TLS for this endpoint: {err}"))?;
        let client = build_client(
            &self.policy,
            &self.lookup,
            self.request_timeout,
            Some(config),
            None,
        )
        .map_err(|err| format!("cannot set up TLS for this endpoint: {}", error_text(&err)))?;
        if clients.len() >= MAX_ENDPOINT_CLIENTS {
            clients.clear();
        }
        clients.insert(settings.clone(), client.clone());
        Ok(client)
    }

    /// POSTs once and reports what happened; never fails, never hangs past
    /// the request timeout.
    pub async fn post(&self, outgoing: &Outgoing<'_>) -> AttemptReport {
        let started = Instant::now();
        let attempted_at = SystemTime::now();
        let attempted_at_millis = crate::domain::time::now_millis();
        let timestamp = attempted_at
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() as i64)
            .unwrap_or(0);
        let report = |status, error_class, excerpt: String, retry_after| AttemptReport {
            attempted_at_millis,
            duration: started.elapsed(),
            status,
            error_class,
            excerpt,
            retry_after,
        };

        let url = match Url::parse(outgoing.url) {
            Ok(url) => url,
            Err(err) => {
                return report(
                    None,
                    Some(ErrorClass::Connect),
                    format!("invalid URL: {err}"),
                    None,
                );
            }
        };
        if let Err(refusal) = self.policy.check_url("url", &url) {
            // The URL was accepted under the policy of its time; this one
            // refuses it. The rule names only what the URL itself says.
            let rule = refusal.to_string();
            let rule = rule.strip_prefix("url: ").unwrap_or(&rule);
            // The attempt records all there is to say; the log only counts.
            tracing::debug!(host = url.host_str().unwrap_or_default(), %rule, "delivery refused: the target policy refuses the URL");
            return report(
                None,
                Some(ErrorClass::BlockedAddress),
                format!("this server's target policy refuses the URL: it {rule}"),
                None,
            );
        }

        let mut headers = HeaderMap::new();
        for (name, value) in outgoing.extra_headers {
            // Endpoints stored before a header name was refused may still
            // carry it; a hop-by-hop header would break every POST.
            if header_rule(name.as_str()).is_some() {
                continue;
            }
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let signature = signature_header(
            outgoing.secrets,
            outgoing.message_id,
            timestamp,
            outgoing.payload.as_bytes(),
        );
        for (name, value) in [
            ("webhook-id", outgoing.message_id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }

        if let Some(value) = outgoing
            .traceparent
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }

        let client = match outgoing.tls {
            None => self.client.clone(),
            Some(settings) => match self.endpoint_client(settings) {
                Ok(client) => client,
                Err(text) => return report(None, Some(ErrorClass::Tls), text, None),
            },
        };
        let request = client
            .post(url)
            .headers(headers)
            .body(outgoing.payload.to_owned());
        let exchange = async {
            let mut response = request.send().await.map_err(|err| (None, err))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, attempted_at));
            let mut body = Vec::new();
            let mut too_large = false;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if body.len() + chunk.len() > MAX_RESPONSE_READ {
                            too_large = true;
                            break;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(err) => return Err((Some(status), err)),
                }
            }
            Ok((status, retry_after, body, too_large))
        };
        // The client's own timeout covers the body too; this outer bound is a
        // belt for any path that might not honour it.
        match tokio::time::timeout(self.request_timeout + Duration::from_millis(250), exchange)
            .await
        {
            Err(_) => report(
                None,
                Some(ErrorClass::Timeout),
                format!("no complete answer within {:?}", self.request_timeout),
                None,
            ),
            Ok(Err((status, err))) => {
                let class = classify(&err);
                let text = if class == ErrorClass::BlockedAddress {
                    // The addresses are the operator's business, not the caller's.
                    tracing::info!(
                        host = outgoing_host(&err),
                        detail = %error_text(&err),
                        "delivery refused: the target resolves only to non-permitted addresses"
                    );
                    BLOCKED_ADDRESS_TEXT.to_owned()
                } else if class == ErrorClass::TlsPinMismatch {
                    // rustls shows its custom errors by their Debug form.
                    PinMismatch.to_string()
                } else {
                    error_text(&err)
                };
                report(status, Some(class), text, None)
            }
            Ok(Ok((status, retry_after, body, too_large))) => {
                let excerpt = excerpt(&body);
                let class = if too_large {
                    Some(ErrorClass::ResponseTooLarge)
                } else if (300..400).contains(&status) {
                    Some(ErrorClass::Redirect)
                } else {
                    None
                };
                report(Some(status), class, excerpt, retry_after)
            }
        }
    }
}

/// One reqwest client with the SSRF-checking resolver: with reqwest's own
/// TLS setup (public roots) unless `tls` is given, presenting `identity`
/// (with reqwest's setup; a given `tls` carries its own).
fn build_client(
    policy: &Arc<TargetPolicy>,
    lookup: &Arc<dyn Lookup>,
    request_timeout: Duration,
    tls: Option<rustls::ClientConfig>,
    identity: Option<&ClientIdentity>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
            lookup: lookup.clone(),
        }))
        .connect_timeout(request_timeout)
        .timeout(request_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64);
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls);
    }
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity.pem())?);
    }
    builder.build()
}

/// The host a failed request was for, for the log.
fn outgoing_host(err: &reqwest::Error) -> String {
    err.url()
        .and_then(Url::host_str)
        .unwrap_or_default()
        .to_owned()
}

/// The first [`MAX_RESPONSE_EXCERPT`] bytes, cut at a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_RESPONSE_EXCERPT)]);
    let mut text = text.into_owned();
    while text.len() > MAX_RESPONSE_EXCERPT {
        text.pop();
    }
    text
}

fn error_text(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    excerpt(text.as_bytes())
}

fn classify(err: &reqwest::Error) -> ErrorClass {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause.downcast_ref::<BlockedAddress>().is_some() {
            return ErrorClass::BlockedAddress;
        }
        if cause.downcast_ref::<DnsFailure>().is_some() {
            return ErrorClass::Dns;
        }
        if let Some(tls) = rustls_error(cause) {
            return tls_class(tls);
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return ErrorClass::Timeout;
    }
    let text = error_text(err).to_ascii_lowercase();
    if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        ErrorClass::Tls
    } else {
        ErrorClass::Connect
    }
}

/// The rustls error `cause` is or wraps. The connector hands it over
/// inside an `io::Error`, itself boxed; both hide it from `source()`
/// (`io::Error::source` skips the error it wraps, a box is transparent).
fn rustls_error<'a>(mut cause: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    // A few layers at most; bounded all the same.
    for _ in 0..8 {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => cause = inner,
            None => return None,
        }
    }
    None
}

/// What a handshake's failure is: a pin refusal, or any other TLS failure.
fn tls_class(error: &rustls::Error) -> ErrorClass {
    if is_pin_mismatch(error) {
        ErrorClass::TlsPinMismatch
    } else {
        ErrorClass::Tls
    }
}

/// Every address of the name was refused by the SSRF policy.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to non-permitted addresses ({addresses})")]
struct BlockedAddress {
    host: String,
    addresses: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
struct DnsFailure {
    host: String,
    reason: String,
}

/// Looks a name up once and keeps only permitted addresses: what it returns
/// is all the connection may use.
struct PolicyResolver {
    policy: Arc<TargetPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        let lookup = self.lookup.lookup(&host);
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = match lookup.await {
                // The connector sets the URL's port.
                Ok(addresses) => addresses
                    .into_iter()
                    .map(|address| SocketAddr::new(address, 0))
                    .collect(),
                Err(err) => {
                    return Err(Box::new(DnsFailure {
                        host,
                        reason: err.to_string(),
                    }) as Box<dyn StdError + Send + Sync>);
                }
            };
            if resolved.is_empty() {
                return Err(Box::new(DnsFailure {
                    host,
                    reason: "no addresses".to_owned(),
                }) as Box<dyn StdError + Send + Sync>);
            }
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|address| policy.permits(address.ip()))
                .collect();
            if permitted.is_empty() {
                let addresses = resolved
                    .iter()
                    .map(|address| address.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(
                    Box::new(BlockedAddress { host, addresses }) as Box<dyn StdError + Send + Sync>
                );
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn client(allowed: &[&str]) -> WebhookClient {
        crate::install_crypto_provider();
        WebhookClient::new(
            TargetPolicy {
                allow_http: true,
                allowed: allowed
                    .iter()
                    .map(|range| range.parse().expect("range"))
                    .collect(),
            },
            Duration::from_secs(2),
        )
        .expect("client builds")
    }

    fn outgoing(url: &str) -> Outgoing<'_> {
        Outgoing {
            url,
            extra_headers: &[],
            secrets: &[],
            message_id: "evt_test",
            payload: "{}",
            tls: None,
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn blocked_literal_and_resolved_addresses() {
        let client = client(&[]);
        let report = client.post(&outgoing("http://127.0.0.1:9/hook")).await;
        assert_eq!(report.error_class, Some(ErrorClass::BlockedAddress));
        let report = client.post(&outgoing("http://[::1]:9/hook")).await;
        assert_eq!(report.error_class, Some(ErrorClass::BlockedAddress));
        let report = client.post(&outgoing("http://localhost:9/hook")).await;
        assert_eq!(
            report.error_class,
            Some(ErrorClass::BlockedAddress),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn unresolvable_names_and_refused_connections() {
        let client = client(&["127.0.0.0/8"]);
        let report = client
            .post(&outgoing("http://no-such-host.invalid/hook"))
            .await;
        assert_eq!(report.error_class, Some(ErrorClass::Dns), "{report:?}");
        // Bind and drop to find a port that refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let report = client.post(&outgoing(&url)).await;
        assert_eq!(report.error_class, Some(ErrorClass::Connect), "{report:?}");
    }

    /// Answers `answers[n]` to the n-th lookup (the last one from then on).
    struct Scripted {
        answers: Vec<Vec<IpAddr>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(answers: &[&[&str]]) -> Arc<Scripted> {
            Arc::new(Scripted {
                answers: answers
                    .iter()
                    .map(|answer| {
                        answer
                            .iter()
                            .map(|address| address.parse().expect("test address"))
                            .collect()
                    })
                    .collect(),
                calls: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Lookup for Scripted {
        fn lookup(&self, _host: &str) -> LookupFuture {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers[call.min(self.answers.len() - 1)].clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    fn client_with(policy: TargetPolicy, lookup: Arc<dyn Lookup>) -> WebhookClient {
        crate::install_crypto_provider();
        WebhookClient::with_lookup(policy, Duration::from_secs(2), lookup).expect("client builds")
    }

    fn allowing(allow_http: bool, ranges: &[&str]) -> TargetPolicy {
        TargetPolicy {
            allow_http,
            allowed: ranges
                .iter()
                .map(|range| range.parse().expect("range"))
                .collect(),
        }
    }

    /// What a test receiver got: each request's head and body, as text.
    #[derive(Clone, Default)]
    struct Received(Arc<std::sync::Mutex<Vec<String>>>);

    impl Received {
        fn count(&self) -> usize {
            self.requests().len()
        }

        fn requests(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    /// A plain HTTP/1.1 receiver that answers 204 and closes each
    /// connection (so the next POST connects, and resolves, anew); keeps
    /// the requests it got.
    async fn receiver(listener: tokio::net::TcpListener) -> Received {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let hits = Received::default();
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // Headers, then the two-byte `{}` body.
                    while !request.windows(4).any(|window| window == b"\r\n\r\n")
                        || !request.ends_with(b"{}")
                    {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    counted
                        .0
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(String::from_utf8_lossy(&request).into_owned());
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                        )
                        .await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        hits
    }

    /// A listener on 127.0.0.1 and one on 127.0.0.2, on one port.
    async fn two_loopback_listeners() -> (u16, tokio::net::TcpListener, tokio::net::TcpListener) {
        for _ in 0..50 {
            let first = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1");
            let port = first.local_addr().expect("local address").port();
            if let Ok(second) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await {
                return (port, first, second);
            }
        }
        panic!("no port free on both 127.0.0.1 and 127.0.0.2");
    }

    #[tokio::test]
    async fn only_the_checked_answer_is_ever_connected_to() {
        let (port, permitted, refused) = two_loopback_listeners().await;
        let permitted_hits = receiver(permitted).await;
        let refused_hits = receiver(refused).await;
        // Rebinding: a permitted answer first, a refused one on the next
        // lookup, then both mixed.
        let lookup = Scripted::new(&[&["127.0.0.1"], &["127.0.0.2"], &["127.0.0.2", "127.0.0.1"]]);
        let client = client_with(allowing(true, &["127.0.0.1/32"]), lookup.clone());
        let url = format!("http://rebind.test:{port}/hook");

        let report = client.post(&outgoing(&url)).await;
        assert_eq!(report.status, Some(204), "{report:?}");
        assert_eq!(
            lookup.calls(),
            1,
            "one lookup serves the check and the connect"
        );

        let report = client.post(&outgoing(&url)).await;
        assert_eq!(
            report.error_class,
            Some(ErrorClass::BlockedAddress),
            "{report:?}"
        );
        assert_eq!(lookup.calls(), 2);

        let report = client.post(&outgoing(&url)).await;
        assert_eq!(report.status, Some(204), "{report:?}");
        assert_eq!(lookup.calls(), 3);

        assert_eq!(permitted_hits.count(), 2);
        assert_eq!(
            refused_hits.count(),
            0,
            "the refused address is never connected to"
        );
    }

    #[tokio::test]
    async fn refusals_after_resolution_do_not_show_the_addresses() {
        for internal in [
            "169.254.169.254",
            "10.20.30.40",
            "192.0.2.7",
            "64:ff9b:1::a00:1",
        ] {
            let client = client_with(allowing(true, &[]), Scripted::new(&[&[internal]]));
            let report = client
                .post(&outgoing("https://metadata.internal.example/hook"))
                .await;
            assert_eq!(
                report.error_class,
                Some(ErrorClass::BlockedAddress),
                "{report:?}"
            );
            assert_eq!(report.excerpt, BLOCKED_ADDRESS_TEXT);
            assert!(!report.excerpt.contains(internal), "{report:?}");
        }
    }

    /// A receiver on 127.0.0.1 answering 204: its `/hook` URL and its hits.
    async fn local_receiver() -> (String, Received) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local address").port();
        (
            format!("http://127.0.0.1:{port}/hook"),
            receiver(listener).await,
        )
    }

    #[tokio::test]
    async fn urls_are_checked_against_the_current_policy_before_each_post() {
        let (url, hits) = local_receiver().await;
        // Accepted while http:// was allowed; this policy no longer allows it.
        let client = client_with(allowing(false, &["127.0.0.0/8"]), Arc::new(SystemLookup));
        let report = client.post(&outgoing(&url)).await;
        assert_eq!(
            report.error_class,
            Some(ErrorClass::BlockedAddress),
            "{report:?}"
        );
        assert!(report.excerpt.contains("https://"), "{report:?}");
        // Nor a literal address outside the allowed ranges.
        let client = client_with(allowing(true, &[]), Arc::new(SystemLookup));
        let report = client.post(&outgoing(&url)).await;
        assert_eq!(report.error_class, Some(ErrorClass::BlockedAddress));
        assert!(report.excerpt.contains("127.0.0.1"), "the URL's own host");
        assert_eq!(hits.count(), 0, "nothing was sent");
        // The same URL under a policy that allows it is delivered.
        let client = client_with(allowing(true, &["127.0.0.0/8"]), Arc::new(SystemLookup));
        assert_eq!(client.post(&outgoing(&url)).await.status, Some(204));
        assert_eq!(hits.count(), 1);
    }

    #[tokio::test]
    async fn stored_transport_headers_are_not_sent() {
        let (url, hits) = local_receiver().await;
        let client = client_with(allowing(true, &["127.0.0.0/8"]), Arc::new(SystemLookup));
        // As an endpoint stored before these names were refused holds them.
        let extra_headers = [
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("x-team", "payments"),
        ]
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        });
        let report = client
            .post(&Outgoing {
                extra_headers: &extra_headers,
                ..outgoing(&url)
            })
            .await;
        assert_eq!(report.status, Some(204), "{report:?}");
        let request = hits.requests().join("").to_ascii_lowercase();
        assert!(request.contains("x-team: payments"), "{request}");
        for refused in ["upgrade:", "websocket", "sec-websocket-key"] {
            assert!(!request.contains(refused), "{refused} in {request}");
        }
    }

    #[test]
    fn pin_refusals_are_their_own_class() {
        let mismatch = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch)),
        ));
        assert_eq!(tls_class(&mismatch), ErrorClass::TlsPinMismatch);
        assert_eq!(ErrorClass::TlsPinMismatch.as_str(), "tls_pin_mismatch");
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(tls_class(&expired), ErrorClass::Tls);
    }

    #[test]
    fn pin_refusals_are_found_inside_nested_io_errors() {
        // As the connector reports them: an io::Error in an io::Error.
        let mismatch = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch)),
        ));
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            mismatch,
        ));
        let found = rustls_error(&nested).expect("the rustls error is found");
        assert_eq!(tls_class(found), ErrorClass::TlsPinMismatch);
        assert!(rustls_error(&std::io::Error::other("no TLS here")).is_none());
    }

    #[test]
    fn excerpts_are_bounded_at_character_boundaries() {
        let body = "é".repeat(5000);
        let cut = excerpt(body.as_bytes());
        assert!(cut.len() <= MAX_RESPONSE_EXCERPT);
        assert!(cut.chars().all(|c| c == 'é' || c == '\u{fffd}'));
    }
}
