//! Conversions between storage rows and protobuf messages, and the small
//! helpers every handler uses to read requests.

use std::collections::HashMap;

use prost_types::Timestamp;

use crate::error::{Error, Result};

/// Epoch milliseconds to a protobuf timestamp.
pub fn timestamp(millis: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    })
}

pub fn optional_timestamp(millis: Option<i64>) -> Option<Timestamp> {
    millis.and_then(timestamp)
}

/// A protobuf timestamp from `field` to epoch milliseconds.
pub fn millis(field: &str, timestamp: &Timestamp) -> Result<i64> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(Error::invalid(
            field,
            "nanos must be between 0 and 999999999",
        ));
    }
    timestamp
        .seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(timestamp.nanos / 1_000_000)))
        .ok_or_else(|| Error::invalid(field, "is out of range"))
}

/// A protobuf duration from `field`, refusing negative values.
pub fn duration(field: &str, duration: &prost_types::Duration) -> Result<std::time::Duration> {
    if duration.seconds < 0 || duration.nanos < 0 {
        return Err(Error::invalid(field, "must not be negative"));
    }
    Ok(std::time::Duration::new(
        duration.seconds as u64,
        duration.nanos as u32,
    ))
}

/// Milliseconds to a protobuf duration (negative ones as zero).
pub fn duration_message(millis: i64) -> prost_types::Duration {
    let millis = millis.max(0);
    prost_types::Duration {
        seconds: millis / 1000,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    }
}

/// A JSON object of strings, as stored, to a protobuf map. Rows are written by
/// Herald, so a malformed document is a bug, reported as internal.
pub fn string_map(json: &str) -> Result<HashMap<String, String>> {
    serde_json::from_str(json)
        .map_err(|err| Error::internal_from("a stored map is not valid JSON", err))
}

pub fn string_list(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json)
        .map_err(|err| Error::internal_from("a stored list is not valid JSON", err))
}

/// A required id field.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(field, "is required"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for millis_value in [0, 1, 999, 1_649_367_553_123, -1] {
            let ts = timestamp(millis_value).expect("some");
            assert_eq!(millis("t", &ts).expect("valid"), millis_value);
        }
        assert!(
            millis(
                "t",
                &Timestamp {
                    seconds: 0,
                    nanos: -1
                }
            )
            .is_err()
        );
        assert!(
            millis(
                "t",
                &Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn durations_keep_their_milliseconds() {
        let message = duration_message(150_001);
        assert_eq!((message.seconds, message.nanos), (150, 1_000_000));
        let back = duration("d", &message).expect("not negative");
        assert_eq!(back, std::time::Duration::from_millis(150_001));
        assert_eq!(duration_message(-5), prost_types::Duration::default());
    }
}
