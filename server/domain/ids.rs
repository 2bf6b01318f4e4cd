//! Resource ids: a type prefix and a ULID (`evt_01J…`).
//!
//! ULIDs come from one monotonic generator per process, so ids minted in the
//! same millisecond still sort in creation order: list pages and ordered
//! endpoints rely on "sorted by id" meaning "sorted by creation".

use std::sync::{Mutex, PoisonError};

use ulid::{Generator, Ulid};

static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

pub const CONSUMER: &str = "con";
pub const ENDPOINT: &str = "ep";
pub const SECRET: &str = "sec";
pub const EVENT: &str = "evt";
pub const DELIVERY: &str = "dlv";
pub const ATTEMPT: &str = "atm";
pub const API_KEY: &str = "key";
pub const NODE: &str = "node";
pub const SUBSCRIPTION: &str = "sub";
/// A row of the operational events' outbox (`ops_changes`).
pub const OPS_CHANGE: &str = "opc";

/// A fresh id with the given type prefix.
pub fn new_id(prefix: &str) -> String {
    let ulid = GENERATOR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .generate()
        // The generator only fails when 2^80 ids are asked for within one
        // millisecond; a random ULID is then still unique.
        .unwrap_or_else(|_| Ulid::new());
    format!("{prefix}_{ulid}")
}

/// Whether `id` has the shape of an id of this type (used to tell a consumer id
/// from a consumer uid, and to answer NOT_FOUND early for ids of another type).
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.len() == prefix.len() + 27
        && id.starts_with(prefix)
        && id.as_bytes()[prefix.len()] == b'_'
        && Ulid::from_string(&id[prefix.len() + 1..]).is_ok()
}

/// An id type of its own, for ids that cross module boundaries: a delivery
/// id can then never be passed where an endpoint id is expected. Built by
/// `generate` (a fresh id) or `from_stored` (an id read back from the
/// database, or one the caller has already checked with [`has_prefix`]).
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn generate() -> Self {
                $name(new_id($prefix))
            }

            pub fn from_stored(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

typed_id!(
    /// An event (`evt_…`): also the `webhook-id` of its deliveries.
    EventId,
    EVENT
);
typed_id!(
    /// An endpoint (`ep_…`).
    EndpointId,
    ENDPOINT
);
typed_id!(
    /// One (event, endpoint or callback URL) pair on its way (`dlv_…`).
    DeliveryId,
    DELIVERY
);
typed_id!(
    /// Who holds a delivery's lease: a node's delivery engine (`node_…`) or
    /// one stream subscription (`sub_…`).
    LeaseOwner,
    NODE
);

impl LeaseOwner {
    /// A fresh identity for one subscription stream.
    pub fn subscription() -> Self {
        LeaseOwner(new_id(SUBSCRIPTION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id(EVENT)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(has_prefix(&ids[0], EVENT));
        assert!(!has_prefix(&ids[0], CONSUMER));
        assert!(!has_prefix("evt_notaulid", EVENT));
    }
}
