//! Broadcast events: who receives one. A broadcast is stored once, owned by
//! a reserved consumer row ([`OWNER_ID`], made by the migration that brought
//! broadcasts), and its deliveries are written afterwards, a slice of
//! endpoints at a time (`crate::queue::fanout`). [`receives`] is the rule
//! each endpoint of a slice is judged by.

use crate::domain::event_type::EventTypeFilter;

/// The consumer that owns every broadcast event: its idempotency keys are the
/// broadcasts' namespace, and its pending fan-outs their back-pressure. No
/// caller can name it (`storage::consumers` reads as if it did not exist)
/// and it has no endpoints.
pub const OWNER_ID: &str = "con_00000000000000000000000000";

/// Whether an event's owner is the broadcasts' (the event is a broadcast).
pub fn is_broadcast(consumer_id: &str) -> bool {
    consumer_id == OWNER_ID
}

/// An endpoint as the rule sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub enabled: bool,
    pub receive_broadcasts: bool,
    /// Epoch ms.
    pub created_at: i64,
    pub filter: &'a EventTypeFilter,
}

/// Whether a broadcast of `event_type`, published (committed and answered)
/// at `published_at`, goes to this endpoint: enabled, not opted out, its
/// filter matching the type, and made no later than the broadcast. The
/// Broadcast call answers only once the clock has passed `published_at`,
/// so an endpoint made after the answer (on the same clock) is always
/// later; one made in the same millisecond before it is included.
pub fn receives(candidate: &Candidate<'_>, event_type: &str, published_at: i64) -> bool {
    candidate.enabled
        && candidate.receive_broadcasts
        && candidate.created_at <= published_at
        && candidate.filter.matches(event_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filter(patterns: &[&str]) -> EventTypeFilter {
        EventTypeFilter::from_stored(patterns.iter().map(|p| (*p).to_owned()).collect())
    }

    fn candidate(filter: &EventTypeFilter) -> Candidate<'_> {
        Candidate {
            enabled: true,
            receive_broadcasts: true,
            created_at: 1_000,
            filter,
        }
    }

    #[test]
    fn an_enabled_matching_endpoint_made_before_receives() {
        let all = filter(&[]);
        assert!(receives(&candidate(&all), "price.changed", 1_000));
        assert!(receives(&candidate(&all), "price.changed", 2_000));
        let prices = filter(&["price.*"]);
        assert!(receives(&candidate(&prices), "price.changed", 2_000));
        assert!(!receives(&candidate(&prices), "status.changed", 2_000));
    }

    #[test]
    fn opted_out_disabled_or_later_endpoints_do_not() {
        let all = filter(&[]);
        let opted_out = Candidate {
            receive_broadcasts: false,
            ..candidate(&all)
        };
        assert!(!receives(&opted_out, "price.changed", 2_000));
        let disabled = Candidate {
            enabled: false,
            ..candidate(&all)
        };
        assert!(!receives(&disabled, "price.changed", 2_000));
        assert!(!receives(&candidate(&all), "price.changed", 999));
    }

    #[test]
    fn only_the_reserved_owner_is_a_broadcast() {
        assert!(is_broadcast(OWNER_ID));
        assert!(!is_broadcast("con_01J0000000000000000000000A"));
        assert!(crate::domain::ids::has_prefix(
            OWNER_ID,
            crate::domain::ids::CONSUMER
        ));
    }

    proptest! {
        /// The rule is the conjunction of its four conditions: none of them
        /// can be outweighed by the others.
        #[test]
        fn receives_exactly_when_every_condition_holds(
            enabled: bool,
            receive_broadcasts: bool,
            created_at in 0i64..10_000,
            published_at in 0i64..10_000,
            prefix_filter: bool,
            of_prices: bool,
        ) {
            let f = if prefix_filter { filter(&["price.*"]) } else { filter(&["status.changed"]) };
            let event_type = if of_prices { "price.changed" } else { "status.changed" };
            let c = Candidate { enabled, receive_broadcasts, created_at, filter: &f };
            let matches = if prefix_filter { of_prices } else { !of_prices };
            prop_assert_eq!(
                receives(&c, event_type, published_at),
                enabled && receive_broadcasts && created_at <= published_at && matches
            );
        }
    }
}
