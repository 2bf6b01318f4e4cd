//! `herald listen`: a subscription stream forwarded to a local URL.
//!
//! Each event arrives at the local server as a POST carrying the same headers
//! and body a webhook would, so code written against webhooks runs unchanged
//! on a laptop. With `--endpoint`, a message is acknowledged only when the
//! local server answers 2xx; otherwise the server sends it again after the
//! ack timeout. The connection is retried with capped exponential backoff;
//! Ctrl-C exits with status 0.
//!
//! This is a client of Herald's public API: it uses `herald-client`'s
//! generated code, not the server's.

use std::time::{Duration, SystemTime};

use herald_client::proto::streams_client::StreamsClient;
use herald_client::proto::{self, subscribe_response};
use herald_client::webhook::Webhook;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::ListenArgs;
use crate::domain::secret::SigningSecret;
use crate::error::{Error, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until Ctrl-C (then `Ok`) or an error that retrying cannot fix.
pub async fn run(args: ListenArgs) -> Result<()> {
    crate::install_crypto_provider();
    let listener = Listener::new(args)?;
    tokio::select! {
        result = listener.run() => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("herald listen: stopped");
            Ok(())
        }
    }
}

/// The Web PKI roots, plus `--ca-cert`; `--client-cert` for mutual TLS.
fn tls_config(args: &ListenArgs) -> Result<ClientTlsConfig> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|err| Error::invalid(flag, format!("cannot read {}: {err}", path.display())))
    };
    let mut tls = ClientTlsConfig::new().with_enabled_roots();
    if let Some(path) = &args.ca_cert {
        tls = tls.ca_certificate(Certificate::from_pem(read("ca_cert", path)?));
    }
    // What OpenSSL-based tools (curl, grpcurl, Python) trust besides the
    // system's roots, so a CA that works for them works here too.
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        tls = tls.ca_certificate(Certificate::from_pem(read(
            "SSL_CERT_FILE",
            std::path::Path::new(&path),
        )?));
    }
    if let (Some(certificate), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(
            read("client_cert", certificate)?,
            read("client_key", key)?,
        ));
    }
    Ok(tls)
}

struct Listener {
    args: ListenArgs,
    endpoint: Endpoint,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    http: reqwest::Client,
    /// A live tail's signer (`--forward-secret` or one made for this run).
    tail_signer: Option<Webhook>,
}

/// How one connection ended.
enum SessionEnd {
    /// Something arrived before the stream broke: retry promptly.
    AfterProgress(tonic::Status),
    /// Nothing arrived: back off.
    WithoutProgress(tonic::Status),
}

impl Listener {
    fn new(args: ListenArgs) -> Result<Listener> {
        let server = if args.server.contains("://") {
            args.server.clone()
        } else {
            format!("http://{}", args.server)
        };
        let mut endpoint = Endpoint::from_shared(server.clone())
            .map_err(|err| Error::invalid("server", format!("{server:?}: {err}")))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20));
        if server.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tls_config(&args)?)
                .map_err(|err| Error::invalid("server", err))?;
        } else if args.ca_cert.is_some() || args.client_cert.is_some() {
            return Err(Error::invalid(
                "server",
                format!(
                    "{server:?} is not an https:// URL, but --ca-cert or --client-cert was given"
                ),
            ));
        }
        let authorization = format!("Bearer {}", args.token.trim())
            .parse()
            .map_err(|_| Error::invalid("token", "must be printable ASCII"))?;
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald-listen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::internal_from("cannot build the HTTP client", err))?;
        let tail_signer = match (&args.consumer, &args.forward_secret) {
            (None, _) => None,
            (Some(_), given) => {
                let secret = match given {
                    Some(secret) => secret.trim().to_owned(),
                    None => {
                        let secret = SigningSecret::generate().expose().to_owned();
                        eprintln!(
                            "herald listen: forwarded events are signed with {secret} (this run's; --forward-secret keeps one)"
                        );
                        secret
                    }
                };
                Some(Webhook::new(&secret).map_err(|err| {
                    Error::invalid("forward_secret", format!("must be whsec_<base64>: {err}"))
                })?)
            }
        };
        Ok(Listener {
            args,
            endpoint,
            authorization,
            http,
            tail_signer,
        })
    }

    async fn run(&self) -> Result<()> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let status = match self.session().await {
                Ok(SessionEnd::AfterProgress(status)) => {
                    backoff = FIRST_BACKOFF;
                    status
                }
                Ok(SessionEnd::WithoutProgress(status)) => status,
                Err(error) => return Err(error),
            };
            eprintln!(
                "herald listen: {}; reconnecting in {}",
                describe(&status),
                humantime::format_duration(backoff)
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn client(
        &self,
        channel: Channel,
    ) -> StreamsClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl tonic::service::Interceptor + Clone,
        >,
    > {
        let authorization = self.authorization.clone();
        StreamsClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
            Ok(request)
        })
    }

    /// One connection: subscribe, forward until the stream ends.
    async fn session(&self) -> Result<SessionEnd> {
        let channel = match self.endpoint.connect().await {
            Ok(channel) => channel,
            Err(err) => {
                return Ok(SessionEnd::WithoutProgress(tonic::Status::unavailable(
                    format!(
                        "cannot connect to {}: {}",
                        self.args.server,
                        error_chain(&err)
                    ),
                )));
            }
        };
        let mut client = self.client(channel);
        let request = match (&self.args.endpoint, &self.args.consumer) {
            (Some(endpoint_id), _) => proto::SubscribeRequest {
                endpoint_id: endpoint_id.clone(),
                ack_timeout: Some(prost_types::Duration {
                    seconds: i64::try_from(self.args.ack_timeout.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(self.args.ack_timeout.subsec_nanos()).unwrap_or(0),
                }),
                ..Default::default()
            },
            (None, consumer) => proto::SubscribeRequest {
                consumer_id: consumer.clone().unwrap_or_default(),
                event_types: self.args.event_types.clone(),
                ..Default::default()
            },
        };
        let mut stream = match client.subscribe(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if is_fatal(&status) => {
                return Err(Error::FailedPrecondition(format!(
                    "the server refused the subscription: {}",
                    describe(&status)
                )));
            }
            Err(status) => return Ok(SessionEnd::WithoutProgress(status)),
        };
        let target = match (&self.args.endpoint, &self.args.consumer) {
            (Some(endpoint_id), _) => format!("endpoint {endpoint_id}"),
            (None, consumer) => {
                format!("consumer {} (live tail)", consumer.as_deref().unwrap_or(""))
            }
        };
        eprintln!(
            "herald listen: receiving {target} from {}, forwarding to {}",
            self.args.server, self.args.forward_to
        );
        let mut progress = false;
        loop {
            match stream.message().await {
                Ok(Some(proto::SubscribeResponse {
                    message: Some(subscribe_response::Message::Event(event)),
                })) => {
                    progress = true;
                    self.forward(&mut client, event).await;
                }
                Ok(Some(_)) => progress = true,
                Ok(None) => {
                    let status = tonic::Status::unavailable("the server closed the stream");
                    return Ok(end(progress, status));
                }
                Err(status) if is_fatal(&status) => {
                    return Err(Error::FailedPrecondition(format!(
                        "the server ended the subscription: {}",
                        describe(&status)
                    )));
                }
                Err(status) => return Ok(end(progress, status)),
            }
        }
    }

    /// POSTs one event to the local URL, prints a line, and acks on 2xx.
    async fn forward<T>(&self, client: &mut StreamsClient<T>, event: proto::StreamEvent)
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<tonic::codegen::StdError>,
        T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    {
        let mut request = self
            .http
            .post(self.args.forward_to.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in &event.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if event.headers.is_empty() {
            // A live tail carries no delivery headers: give the local server
            // those a webhook would have, signed with this run's secret.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            request = request
                .header("webhook-id", event.event_id.as_str())
                .header("webhook-timestamp", now.to_string());
            if let Some(signer) = &self.tail_signer {
                request = request.header(
                    "webhook-signature",
                    signer.sign(&event.event_id, now, event.payload.as_bytes()),
                );
            }
        }
        let outcome = request.body(event.payload.clone()).send().await;
        let time = humantime::format_rfc3339_seconds(SystemTime::now());
        let local = match outcome {
            Ok(response) if response.status().is_success() => {
                let status = response.status();
                if event.ack_token.is_empty() {
                    format!("{status}")
                } else {
                    match client
                        .ack(proto::AckRequest {
                            endpoint_id: self.args.endpoint.clone().unwrap_or_default(),
                            ack_tokens: vec![event.ack_token.clone()],
                        })
                        .await
                    {
                        Ok(_) => format!("{status}, acked"),
                        Err(err) => format!(
                            "{status}, ack failed ({}): it will come again",
                            describe(&err)
                        ),
                    }
                }
            }
            Ok(response) => {
                let retry = if event.ack_token.is_empty() {
                    ""
                } else {
                    ", not acked: it will come again after the ack timeout"
                };
                format!("{}{retry}", response.status())
            }
            Err(err) => {
                let retry = if event.ack_token.is_empty() {
                    ""
                } else {
                    ", not acked: it will come again after the ack timeout"
                };
                format!("error: {}{retry}", error_chain(&err))
            }
        };
        let attempt = if event.attempt > 1 {
            format!(" (attempt {})", event.attempt)
        } else {
            String::new()
        };
        println!(
            "{time}  {}  {}{attempt}  -> {local}",
            event.event_type, event.event_id
        );
    }
}

fn end(progress: bool, status: tonic::Status) -> SessionEnd {
    if progress {
        SessionEnd::AfterProgress(status)
    } else {
        SessionEnd::WithoutProgress(status)
    }
}

/// Errors that reconnecting cannot fix: a bad key, a wrong id, a webhook or
/// disabled endpoint.
fn is_fatal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::Unimplemented
    )
}

fn describe(status: &tonic::Status) -> String {
    let hint = if status.code() == tonic::Code::Internal && status.message().contains("h2 protocol")
    {
        " (a TLS server answers a plaintext client this way: use --server https://…)"
    } else {
        ""
    };
    format!("{:?}: {}{hint}", status.code(), status.message())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
