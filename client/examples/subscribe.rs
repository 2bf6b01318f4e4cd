//! Consumes a stream endpoint: prints each event, then acknowledges it.
//!
//! Create a stream endpoint for an existing consumer (the `publish`
//! example creates one) with grpcurl, through the server's reflection, and
//! note the `id` and `secret` in the answer:
//!
//! ```text
//! grpcurl -plaintext -H 'authorization: Bearer hk_…' \
//!     -d '{"consumer_id": "customer-42", "kind": "STREAM"}' \
//!     127.0.0.1:50051 herald.v1.Subscriptions/CreateEndpoint
//! HERALD_URL=http://127.0.0.1:50051 HERALD_TOKEN=hk_… HERALD_WEBHOOK_SECRET=whsec_… \
//!     cargo run -p herald-client --example subscribe -- ep_01J…
//! ```
//!
//! Events published since the endpoint was created that no subscriber
//! acknowledged yet come first, then new ones as they are published. With `HERALD_WEBHOOK_SECRET`
//! (the endpoint's `whsec_…` secret) each event's signature headers are
//! verified too; an event that fails verification is not acknowledged, so
//! Herald sends it again after the ack timeout (30 s). The subscriber
//! reconnects by itself when the server restarts. `HERALD_URL` defaults to
//! `http://127.0.0.1:50051`. Stops with Ctrl-C.

use std::process::ExitCode;

use herald_client::Herald;
use herald_client::webhook::Webhook;

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
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let token = std::env::var("HERALD_TOKEN").map_err(|_| "set HERALD_TOKEN to an API key")?;
    let endpoint_id = std::env::args()
        .nth(1)
        .ok_or("usage: subscribe <stream endpoint id>")?;
    let webhook = match std::env::var("HERALD_WEBHOOK_SECRET") {
        Ok(secret) => Some(Webhook::new(&secret)?),
        Err(_) => None,
    };

    let herald = Herald::connect(url).token(token).await?;
    let subscriber = herald.subscriber(endpoint_id).run(|event| {
        let webhook = webhook.clone();
        async move {
            if let Some(webhook) = webhook
                && let Err(error) = webhook.verify(&event.headers, event.payload.as_bytes())
            {
                eprintln!("{}: refused, left unacknowledged: {error}", event.event_id);
                return Err(error.into());
            }
            println!(
                "{} {} (attempt {}): {}",
                event.event_id, event.event_type, event.attempt, event.payload
            );
            Ok(())
        }
    });
    tokio::select! {
        outcome = subscriber => outcome?,
        _ = tokio::signal::ctrl_c() => println!("stopped"),
    }
    Ok(())
}
