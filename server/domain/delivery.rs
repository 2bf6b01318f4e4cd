//! The states of a delivery and the outcomes of its attempts, as types. The
//! database stores their `as_str` text; the metrics use their `label`.

/// Where a delivery stands. `Pending` is the queue; the others are final
/// until a Redeliver or Replay puts the delivery back to `Pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    /// The retry schedule ran out, or the endpoint answered 410 Gone.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
    ];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status of stored text; `None` for text Herald never writes.
    pub fn from_stored(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// How one attempt ended: the `outcome` label of `herald_deliveries_total`.
/// A webhook POST ends in any of the three; a stream message is `Succeeded`
/// when acknowledged and `Retrying` when it is sent again because its ack
/// timeout lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Succeeded,
    /// Failed, and another attempt is scheduled.
    Retrying,
    /// Failed for good: the schedule ran out, or 410 Gone.
    Failed,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 3] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Retrying,
        AttemptOutcome::Failed,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
        }
    }

    /// The delivery's status after an attempt that ended so.
    pub const fn status(self) -> DeliveryStatus {
        match self {
            AttemptOutcome::Succeeded => DeliveryStatus::Succeeded,
            AttemptOutcome::Retrying => DeliveryStatus::Pending,
            AttemptOutcome::Failed => DeliveryStatus::Failed,
        }
    }
}

/// How a delivery travels: the `via` label of `herald_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryVia {
    /// A POST to a WEBHOOK endpoint.
    Webhook,
    /// A POST to an event's own `callback_url`.
    Callback,
    /// A message on a STREAM endpoint's subscription.
    Stream,
}

impl DeliveryVia {
    pub const ALL: [DeliveryVia; 3] = [
        DeliveryVia::Webhook,
        DeliveryVia::Callback,
        DeliveryVia::Stream,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DeliveryVia::Webhook => "webhook",
            DeliveryVia::Callback => "callback",
            DeliveryVia::Stream => "stream",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_text() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::from_stored(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::from_stored("cancelled"), None);
        assert_eq!(DeliveryStatus::from_stored("PENDING"), None);
    }

    #[test]
    fn labels_are_distinct() {
        let outcomes: std::collections::HashSet<_> =
            AttemptOutcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(outcomes.len(), 3);
        let vias: std::collections::HashSet<_> =
            DeliveryVia::ALL.iter().map(|v| v.label()).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(AttemptOutcome::Retrying.status(), DeliveryStatus::Pending);
    }
}
