//! Consumes a stream endpoint: prints each event, then acknowledges it.
//!
//! ```text
//! HERALD_URL=http://127.0.0.1:50051 HERALD_TOKEN=hk_… \
//!     cargo run -p herald-client --example subscribe -- ep_01J…
//! ```
//!
//! With `HERALD_WEBHOOK_SECRET` (the endpoint's `whsec_…` secret) each
//! event's signature headers are verified too. Stops with Ctrl-C.

use herald_client::Herald;
use herald_client::webhook::Webhook;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let token = std::env::var("HERALD_TOKEN").map_err(|_| "set HERALD_TOKEN to an API key")?;
    let endpoint_id = std::env::args()
        .nth(1)
        .ok_or("usage: subscribe <stream endpoint id>")?;
    let webhook = match std::env::var("HERALD_WEBHOOK_SECRET") {
        Ok(secret) => Some(Webhook::new(&secret)?),
        Err(_) => None,
    };

    let herald = Herald::connect(url).token(token).connect().await?;
    let subscriber = herald.subscriber(endpoint_id).run(|event| {
        let webhook = webhook.clone();
        async move {
            if let Some(webhook) = webhook {
                // An error here leaves the event unacknowledged: Herald
                // sends it again after the ack timeout.
                webhook.verify(&event.headers, event.payload.as_bytes())?;
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
