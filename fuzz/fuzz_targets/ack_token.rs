//! Ack tokens: what settles a stream delivery, so what must not be forged.
//!
//! Input lines: 1 the deployment's ack key, 2 a token as a subscriber might
//! send it, 3 an attempt number. The delivery id of the round trip and the
//! mutation made to its token are derived from the whole input.
//!
//! Invariants:
//! - nothing panics, and a refusal names the field and echoes a bounded
//!   part of the token;
//! - a token is accepted only if it is exactly the token the key issues for
//!   the delivery and attempt it names: no second spelling of a token;
//! - a token issued for an attempt of 1 or more reads back as its delivery
//!   id; one changed byte, one byte more or less, or another key, and it is
//!   refused.
#![no_main]

use herald::domain::ids::DeliveryId;
use herald::streams::message::{AckKey, ack_token, parse_ack_token};
use herald_fuzz::{fnv, lines};
use libfuzzer_sys::fuzz_target;
use ulid::Ulid;

const FIELD: &str = "ack_tokens[0]";

/// The refusal quotes at most 80 characters of the token, each escaped in at
/// most 10 bytes (`\u{10ffff}`), after the field and before the reason.
const MAX_REFUSAL_BYTES: usize = 80 * 10 + 128;

fuzz_target!(|data: &[u8]| {
    let (fields, _) = lines(data, 3);
    let key_bytes = fields[0].as_bytes().to_vec();
    let key = AckKey::new(key_bytes.clone());

    check_any(&key, &fields[1]);

    let hash = fnv(data);
    let ulid = Ulid::from((u128::from(hash) << 64) | u128::from(fnv(&key_bytes)));
    let delivery_id = DeliveryId::from_stored(format!("dlv_{ulid}"));
    let attempt = fields[2]
        .trim()
        .parse::<u32>()
        .unwrap_or((hash % 7) as u32 + 1);
    let token = ack_token(&key, &delivery_id, attempt);
    check_any(&key, &token);
    match parse_ack_token(&key, FIELD, &token) {
        Ok(parsed) => {
            assert!(attempt >= 1, "the token of attempt 0 was accepted");
            assert_eq!(parsed, delivery_id);
        }
        Err(error) => {
            assert_eq!(attempt, 0, "{token:?} refused: {error}");
            return;
        }
    }

    let position = (hash >> 8) as usize % token.len();
    let byte = data.last().copied().unwrap_or(b'A');
    let mut changed = token.clone().into_bytes();
    changed[position] = byte & 0x7f;
    if let Ok(changed) = String::from_utf8(changed)
        && changed != token
    {
        refused(&key, &changed, "a changed byte");
    }
    let mut longer = token.clone();
    longer.insert(position, char::from(byte & 0x7f));
    refused(&key, &longer, "an inserted byte");
    let mut shorter = token.clone();
    shorter.remove(position);
    refused(&key, &shorter, "a removed byte");

    // Keys shorter than a block are zero-padded by HMAC, so flipping a bit of
    // the first byte is what makes another key, not appending a zero.
    let mut other = key_bytes;
    match other.first_mut() {
        Some(first) => *first ^= 0x80,
        None => other.push(1),
    }
    refused(&AckKey::new(other), &token, "another key");
});

fn check_any(key: &AckKey, token: &str) {
    match parse_ack_token(key, FIELD, token) {
        Ok(delivery_id) => {
            let attempt = token
                .split(':')
                .nth(1)
                .and_then(|attempt| attempt.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("{token:?} accepted without an attempt"));
            assert_eq!(
                ack_token(key, &delivery_id, attempt),
                token,
                "accepted, yet not as issued"
            );
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("ack_tokens[0]: "), "{message}");
            assert!(
                message.len() <= MAX_REFUSAL_BYTES,
                "{} bytes",
                message.len()
            );
        }
    }
}

fn refused(key: &AckKey, token: &str, change: &str) {
    if let Ok(delivery_id) = parse_ack_token(key, FIELD, token) {
        panic!("{token:?} ({change}) accepted for {delivery_id}");
    }
}
