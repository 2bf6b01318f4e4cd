//! A tiny webhook receiver: verifies each POST's Standard Webhooks
//! signature and prints the event's body as it arrived.
//!
//! Herald refuses loopback and plain-HTTP targets unless the operator
//! allows them, so for a local try start the server with
//! `herald serve --allow-http --allow-target-cidr 127.0.0.0/8`. Then
//! register an endpoint for this receiver with an existing consumer (the
//! `publish` example creates one) with grpcurl, through the server's
//! reflection, and note the `secret` in the answer:
//!
//! ```text
//! grpcurl -plaintext -H 'authorization: Bearer hk_…' \
//!     -d '{"consumer_id": "customer-42", "url": "http://127.0.0.1:8080/webhooks"}' \
//!     127.0.0.1:50051 herald.v1.Subscriptions/CreateEndpoint
//! HERALD_WEBHOOK_SECRET=whsec_… LISTEN_ADDR=127.0.0.1:8080 \
//!     cargo run -p herald-client --example receive
//! ```
//!
//! and publish to `customer-42` (for example with the `publish` example).
//! `LISTEN_ADDR` defaults to `127.0.0.1:8080`.
//!
//! It answers 204 to a verified request and 401 otherwise, so Herald retries
//! what this receiver refused. The HTTP/1.1 handling is deliberately minimal
//! (one request per connection, `Content-Length` bodies only) to keep the
//! example free of an HTTP server dependency; use your web framework's
//! `HeaderMap` and raw body the same way.

use std::process::ExitCode;
use std::time::Duration;

use herald_client::webhook::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("HERALD_WEBHOOK_SECRET")
        .map_err(|_| "set HERALD_WEBHOOK_SECRET to the endpoint's whsec_… secret")?;
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let webhook = Webhook::new(&secret)?;
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (connection, peer) = listener.accept().await?;
        let webhook = webhook.clone();
        tokio::spawn(async move {
            let handled =
                tokio::time::timeout(Duration::from_secs(30), handle(connection, &webhook)).await;
            if let Ok(Err(error)) = handled {
                eprintln!("{peer}: {error}");
            }
        });
    }
}

async fn handle(mut connection: TcpStream, webhook: &Webhook) -> std::io::Result<()> {
    let (status, answer) = match read_request(&mut connection).await? {
        Err(problem) => ("400 Bad Request", problem),
        Ok((headers, body)) => match webhook.verify(&headers, &body) {
            Ok(event) => {
                // The body as it arrived, byte for byte (`event.payload` is
                // the same JSON parsed, which would print re-serialised).
                println!(
                    "{} at {}: {}",
                    event.id,
                    event.timestamp,
                    String::from_utf8_lossy(&body)
                );
                ("204 No Content", String::new())
            }
            Err(error) => {
                eprintln!("refused: {error}");
                ("401 Unauthorized", error.to_string())
            }
        },
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        if status.starts_with("204") {
            0
        } else {
            answer.len()
        },
    );
    connection.write_all(response.as_bytes()).await?;
    connection.shutdown().await
}

/// Reads one request: its headers and its `Content-Length` body. The inner
/// error is a reason to answer 400.
async fn read_request(
    connection: &mut TcpStream,
) -> std::io::Result<Result<(http::HeaderMap, Vec<u8>), String>> {
    let mut buffer = Vec::with_capacity(8 * 1024);
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return Ok(Err("headers too large".to_owned()));
        }
        let mut chunk = [0u8; 8 * 1024];
        let read = connection.read(&mut chunk).await?;
        if read == 0 {
            return Ok(Err("connection closed mid-request".to_owned()));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let Ok(head) = std::str::from_utf8(&buffer[..head_end]) else {
        return Ok(Err("headers are not UTF-8".to_owned()));
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    if !request_line.starts_with("POST ") {
        return Ok(Err(format!("expected a POST, got {request_line:?}")));
    }
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Ok(Err(format!("malformed header {line:?}")));
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) else {
            return Ok(Err(format!("malformed header {line:?}")));
        };
        headers.append(name, value);
    }
    let length = match headers.get(http::header::CONTENT_LENGTH) {
        None => 0,
        Some(value) => match value.to_str().ok().and_then(|text| text.parse().ok()) {
            Some(length) if length <= MAX_BODY => length,
            _ => {
                return Ok(Err(
                    "missing, invalid or too large content-length".to_owned()
                ));
            }
        },
    };
    let mut body = buffer.split_off(head_end + 4);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let read = connection.read(&mut chunk).await?;
        if read == 0 {
            return Ok(Err("connection closed mid-body".to_owned()));
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    Ok(Ok((headers, body)))
}
