//! Publishes one event, creating its consumer first if needed.
//!
//! Against a server started with `herald serve` (it prints an admin key on
//! its first start):
//!
//! ```text
//! HERALD_URL=http://127.0.0.1:50051 HERALD_TOKEN=hk_… \
//!     cargo run -p herald-client --example publish -- customer-42 invoice.paid '{"invoice":"in_1"}'
//! ```
//!
//! The arguments are the consumer's uid, the event type and the JSON
//! payload; they default to `example-customer`, `example.created` and
//! `{"hello":"world"}`. `HERALD_URL` defaults to `http://127.0.0.1:50051`.
//! The idempotency key is derived from the arguments, so running the
//! example twice with the same ones publishes once: the second run prints
//! the first event, marked as a duplicate.

use std::process::ExitCode;

use herald_client::Herald;

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
    let mut args = std::env::args().skip(1);
    let consumer = args.next().unwrap_or_else(|| "example-customer".to_owned());
    let event_type = args.next().unwrap_or_else(|| "example.created".to_owned());
    let payload = args
        .next()
        .unwrap_or_else(|| r#"{"hello":"world"}"#.to_owned());

    let herald = Herald::connect(url).token(token).await?;

    match herald.create_consumer(&consumer).send().await {
        Ok(created) => println!(
            "created consumer {consumer} ({})",
            created.consumer.unwrap_or_default().id
        ),
        Err(error) if error.is_already_exists() => {}
        Err(error) => return Err(error.into()),
    }

    let idempotency_key = format!("example:{consumer}:{event_type}:{payload}");
    let published = herald
        .publish(&consumer, &event_type, payload)
        .idempotency_key(idempotency_key)
        .send()
        .await?;
    let event = published.event.unwrap_or_default();
    println!(
        "{} {} for {consumer}: {} {}{}",
        event.id,
        event.event_type,
        published.deliveries,
        if published.deliveries == 1 {
            "delivery"
        } else {
            "deliveries"
        },
        if published.duplicate {
            " (a duplicate: the earlier event is returned)"
        } else {
            ""
        }
    );
    Ok(())
}
