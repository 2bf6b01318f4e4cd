//! Conversions between `std::time` and the protobuf well-known types.

use std::time::{Duration, SystemTime};

/// A protobuf `Duration`; saturates at the largest one for absurd inputs.
pub(crate) fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    })
}

/// A protobuf `Timestamp`.
pub(crate) fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}
