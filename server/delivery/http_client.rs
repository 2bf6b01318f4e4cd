//! The one HTTP client that delivers webhooks, and what one POST came to.
//!
//! SSRF is checked at connect time: the client's resolver returns only the
//! addresses that [`TargetPolicy::permits`], so the connection goes to a
//! checked address and nothing resolves the name a second time. Literal-IP
//! URLs never reach a resolver, so they are checked before sending.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use url::{Host, Url};

use super::schedule::parse_retry_after;
use super::signing::signature_header;
use crate::domain::secret::SigningSecret;
use crate::domain::target::TargetPolicy;

/// At most this much of a response body is read; more is `response_too_large`.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;
/// At most this much of a response body is stored in the attempt.
pub const MAX_RESPONSE_EXCERPT: usize = 4 * 1024;

const USER_AGENT_VALUE: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Why an attempt got no usable HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Timeout,
    Connect,
    Dns,
    Tls,
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
}

/// The shared client: keep-alive pools, HTTP/1.1 and h2, no redirects, the
/// SSRF-checking resolver.
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    request_timeout: Duration,
}

impl WebhookClient {
    /// Needs a process-wide rustls provider (`crate::install_crypto_provider`).
    pub fn new(policy: TargetPolicy, request_timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
            }))
            .connect_timeout(request_timeout)
            .timeout(request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(WebhookClient {
            client,
            policy,
            request_timeout,
        })
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
        if let Some(address) = literal_address(&url)
            && !self.policy.permits(address)
        {
            return report(
                None,
                Some(ErrorClass::BlockedAddress),
                format!("{address} is not a permitted target"),
                None,
            );
        }

        let mut headers = HeaderMap::new();
        for (name, value) in outgoing.extra_headers {
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

        let request = self
            .client
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
                report(status, Some(class), error_text(&err), None)
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

fn literal_address(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(address) => Some(IpAddr::V4(address)),
        Host::Ipv6(address) => Some(IpAddr::V6(address)),
        Host::Domain(_) => None,
    }
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
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return ErrorClass::Tls;
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

/// Resolves with the system resolver and keeps only permitted addresses.
struct PolicyResolver {
    policy: Arc<TargetPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((host.clone(), 0)).await;
            let resolved: Vec<SocketAddr> = match lookup {
                Ok(addresses) => addresses.collect(),
                Err(err) => {
                    return Err(Box::new(DnsFailure {
                        host,
                        reason: err.to_string(),
                    }) as Box<dyn StdError + Send + Sync>);
                }
            };
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

    #[test]
    fn excerpts_are_bounded_at_character_boundaries() {
        let body = "é".repeat(5000);
        let cut = excerpt(body.as_bytes());
        assert!(cut.len() <= MAX_RESPONSE_EXCERPT);
        assert!(cut.chars().all(|c| c == 'é' || c == '\u{fffd}'));
    }
}
