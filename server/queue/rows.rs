//! The queue's row types: a delivery as the queue hands it out, an attempt's
//! outcome as the writer records it, and one column list per row type from
//! which every statement that reads or writes those rows is built.

use serde::Serialize;

use crate::domain::delivery::DeliveryStatus;
use crate::domain::ids::{DeliveryId, EndpointId, EventId, LeaseOwner};
use crate::error::{Error, Result};
use crate::storage::entities::delivery;
use crate::storage::sql::Column;

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A WEBHOOK or STREAM endpoint.
    Endpoint(EndpointId),
    /// The event's own `callback_url`.
    Callback(String),
}

impl Target {
    pub fn endpoint_id(&self) -> Option<&EndpointId> {
        match self {
            Target::Endpoint(id) => Some(id),
            Target::Callback(_) => None,
        }
    }
}

/// A claim on a delivery: nobody else attempts it before `expires_at`
/// (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: LeaseOwner,
    pub expires_at: i64,
}

/// One row of the `deliveries` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub target: Target,
    pub status: DeliveryStatus,
    /// Attempts made so far (stream: messages sent).
    pub attempt_count: u32,
    /// When it is due next; `None` once settled.
    pub next_attempt_at: Option<i64>,
    pub lease: Option<Lease>,
    pub last_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Delivery {
    pub fn endpoint_id(&self) -> Option<&EndpointId> {
        self.target.endpoint_id()
    }

    pub fn is_leased_to(&self, owner: &LeaseOwner) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| &lease.owner == owner)
    }
}

/// Every column of `deliveries`, in one order: inserts, RETURNING lists and
/// the JSON rows of [`DeliveryRow`] are all built from it.
pub const DELIVERY_COLUMNS: [Column; 12] = [
    column("id", "text"),
    column("event_id", "text"),
    column("endpoint_id", "text"),
    column("url", "text"),
    column("status", "text"),
    column("attempt_count", "integer"),
    column("next_attempt_at", "bigint"),
    column("lease_owner", "text"),
    column("lease_expires_at", "bigint"),
    column("last_attempt_at", "bigint"),
    column("created_at", "bigint"),
    column("updated_at", "bigint"),
];

const fn column(name: &'static str, postgres_type: &'static str) -> Column {
    Column {
        name,
        postgres_type,
    }
}

/// A delivery as one JSON object of [`DELIVERY_COLUMNS`].
#[derive(Serialize)]
pub struct DeliveryRow<'a> {
    id: &'a str,
    event_id: &'a str,
    endpoint_id: Option<&'a str>,
    url: Option<&'a str>,
    status: &'static str,
    attempt_count: u32,
    next_attempt_at: Option<i64>,
    lease_owner: Option<&'a str>,
    lease_expires_at: Option<i64>,
    last_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl<'a> From<&'a Delivery> for DeliveryRow<'a> {
    fn from(delivery: &'a Delivery) -> Self {
        let (endpoint_id, url) = match &delivery.target {
            Target::Endpoint(id) => (Some(id.as_str()), None),
            Target::Callback(url) => (None, Some(url.as_str())),
        };
        DeliveryRow {
            id: delivery.id.as_str(),
            event_id: delivery.event_id.as_str(),
            endpoint_id,
            url,
            status: delivery.status.as_str(),
            attempt_count: delivery.attempt_count,
            next_attempt_at: delivery.next_attempt_at,
            lease_owner: delivery.lease.as_ref().map(|lease| lease.owner.as_str()),
            lease_expires_at: delivery.lease.as_ref().map(|lease| lease.expires_at),
            last_attempt_at: delivery.last_attempt_at,
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
        }
    }
}

impl TryFrom<delivery::Model> for Delivery {
    type Error = Error;

    fn try_from(row: delivery::Model) -> Result<Delivery> {
        let status = DeliveryStatus::from_stored(&row.status).ok_or_else(|| {
            Error::internal(format!(
                "delivery {} has an unknown status {:?}",
                row.id, row.status
            ))
        })?;
        let target = match (row.endpoint_id, row.url) {
            (Some(endpoint_id), _) => Target::Endpoint(EndpointId::from_stored(endpoint_id)),
            (None, Some(url)) => Target::Callback(url),
            (None, None) => {
                return Err(Error::internal(format!(
                    "delivery {} has neither an endpoint nor a URL",
                    row.id
                )));
            }
        };
        let lease = match (row.lease_owner, row.lease_expires_at) {
            (Some(owner), Some(expires_at)) => Some(Lease {
                owner: LeaseOwner::from_stored(owner),
                expires_at,
            }),
            _ => None,
        };
        Ok(Delivery {
            id: DeliveryId::from_stored(row.id),
            event_id: EventId::from_stored(row.event_id),
            target,
            status,
            attempt_count: u32::try_from(row.attempt_count).unwrap_or(0),
            next_attempt_at: row.next_attempt_at,
            lease,
            last_attempt_at: row.last_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Deliveries read back, in the order given.
pub fn deliveries(rows: Vec<delivery::Model>) -> Result<Vec<Delivery>> {
    rows.into_iter().map(Delivery::try_from).collect()
}

/// One HTTP attempt, as the `attempts` table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: String,
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: Option<EndpointId>,
    pub url: String,
    pub attempted_at: i64,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error_class: Option<&'static str>,
    pub response_body: String,
    pub succeeded: bool,
}

/// The columns of `attempts`, in the order of [`AttemptRow`].
pub const ATTEMPT_COLUMNS: [Column; 11] = [
    column("id", "text"),
    column("delivery_id", "text"),
    column("event_id", "text"),
    column("endpoint_id", "text"),
    column("url", "text"),
    column("attempted_at", "bigint"),
    column("duration_ms", "integer"),
    column("status_code", "integer"),
    column("error_class", "text"),
    column("response_body", "text"),
    column("succeeded", "boolean"),
];

/// An attempt as one JSON object of [`ATTEMPT_COLUMNS`].
#[derive(Serialize)]
pub struct AttemptRow<'a> {
    id: &'a str,
    delivery_id: &'a str,
    event_id: &'a str,
    endpoint_id: Option<&'a str>,
    url: &'a str,
    attempted_at: i64,
    duration_ms: i32,
    status_code: Option<i32>,
    error_class: Option<&'a str>,
    response_body: &'a str,
    succeeded: bool,
}

impl<'a> From<&'a AttemptRecord> for AttemptRow<'a> {
    fn from(record: &'a AttemptRecord) -> Self {
        AttemptRow {
            id: &record.id,
            delivery_id: record.delivery_id.as_str(),
            event_id: record.event_id.as_str(),
            endpoint_id: record.endpoint_id.as_ref().map(EndpointId::as_str),
            url: &record.url,
            attempted_at: record.attempted_at,
            duration_ms: record.duration_ms,
            status_code: record.status_code,
            error_class: record.error_class,
            response_body: &record.response_body,
            succeeded: record.succeeded,
        }
    }
}

/// A finished attempt and the delivery's new state, for the writer.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attempt: AttemptRecord,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<i64>,
    /// Kept for an in-memory retry, given up otherwise.
    pub lease: Option<Lease>,
    /// What the attempt says about its endpoint's health (`None`: a
    /// callback URL, which has no endpoint).
    pub effect: Option<super::health::Effect>,
    /// The delivery as the attempt found it: the outcome is written only if
    /// the row is still so, so that a Redeliver or Replay that reset it
    /// meanwhile wins.
    pub attempted_as: AttemptedAs,
}

/// A delivery's `attempt_count` and `next_attempt_at` when an attempt began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptedAs {
    pub attempt_count: u32,
    pub next_attempt_at: Option<i64>,
}

/// The columns of [`OutcomeRow`]: a delivery's new state and how the
/// attempt found it.
pub const OUTCOME_COLUMNS: [Column; 8] = [
    column("id", "text"),
    column("status", "text"),
    column("attempted_at", "bigint"),
    column("next_attempt_at", "bigint"),
    column("lease_owner", "text"),
    column("lease_expires_at", "bigint"),
    column("attempted_count", "integer"),
    column("attempted_next_attempt_at", "bigint"),
];

/// An outcome as one JSON object of [`OUTCOME_COLUMNS`].
#[derive(Serialize)]
pub struct OutcomeRow<'a> {
    id: &'a str,
    status: &'static str,
    attempted_at: i64,
    next_attempt_at: Option<i64>,
    lease_owner: Option<&'a str>,
    lease_expires_at: Option<i64>,
    attempted_count: u32,
    /// `next_attempt_at` as found, -1 for none (compared with COALESCE).
    attempted_next_attempt_at: i64,
}

impl<'a> From<&'a Outcome> for OutcomeRow<'a> {
    fn from(outcome: &'a Outcome) -> Self {
        OutcomeRow {
            id: outcome.attempt.delivery_id.as_str(),
            status: outcome.status.as_str(),
            attempted_at: outcome.attempt.attempted_at,
            next_attempt_at: outcome.next_attempt_at,
            lease_owner: outcome.lease.as_ref().map(|lease| lease.owner.as_str()),
            lease_expires_at: outcome.lease.as_ref().map(|lease| lease.expires_at),
            attempted_count: outcome.attempted_as.attempt_count,
            attempted_next_attempt_at: outcome.attempted_as.next_attempt_at.unwrap_or(-1),
        }
    }
}

/// An outcome and its attempt as one JSON object (PostgreSQL's one-statement
/// write of a batch without failures): the outcome's columns, then the
/// attempt's under names that do not clash with them.
#[derive(Serialize)]
pub struct OutcomeWithAttemptRow<'a> {
    #[serde(flatten)]
    outcome: OutcomeRow<'a>,
    attempt_id: &'a str,
    event_id: &'a str,
    endpoint_id: Option<&'a str>,
    url: &'a str,
    duration_ms: i32,
    status_code: Option<i32>,
    error_class: Option<&'a str>,
    response_body: &'a str,
    succeeded: bool,
}

/// The columns of [`OutcomeWithAttemptRow`].
pub const OUTCOME_WITH_ATTEMPT_COLUMNS: [Column; 17] = [
    OUTCOME_COLUMNS[0],
    OUTCOME_COLUMNS[1],
    OUTCOME_COLUMNS[2],
    OUTCOME_COLUMNS[3],
    OUTCOME_COLUMNS[4],
    OUTCOME_COLUMNS[5],
    OUTCOME_COLUMNS[6],
    OUTCOME_COLUMNS[7],
    column("attempt_id", "text"),
    column("event_id", "text"),
    column("endpoint_id", "text"),
    column("url", "text"),
    column("duration_ms", "integer"),
    column("status_code", "integer"),
    column("error_class", "text"),
    column("response_body", "text"),
    column("succeeded", "boolean"),
];

impl<'a> From<&'a Outcome> for OutcomeWithAttemptRow<'a> {
    fn from(outcome: &'a Outcome) -> Self {
        let attempt = &outcome.attempt;
        OutcomeWithAttemptRow {
            outcome: OutcomeRow::from(outcome),
            attempt_id: &attempt.id,
            event_id: attempt.event_id.as_str(),
            endpoint_id: attempt.endpoint_id.as_ref().map(EndpointId::as_str),
            url: &attempt.url,
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            error_class: attempt.error_class,
            response_body: &attempt.response_body,
            succeeded: attempt.succeeded,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::sql::json_text;

    pub fn sample_outcome() -> Outcome {
        Outcome {
            attempt: AttemptRecord {
                id: "atm_1".into(),
                delivery_id: DeliveryId::from_stored("dlv_1"),
                event_id: EventId::from_stored("evt_1"),
                endpoint_id: Some(EndpointId::from_stored("ep_1")),
                url: "https://example.com/".into(),
                attempted_at: 5,
                duration_ms: 7,
                status_code: Some(204),
                error_class: None,
                response_body: String::new(),
                succeeded: true,
            },
            status: DeliveryStatus::Succeeded,
            next_attempt_at: None,
            lease: None,
            effect: Some(super::super::health::Effect::Succeeded),
            attempted_as: AttemptedAs {
                attempt_count: 0,
                next_attempt_at: Some(3),
            },
        }
    }

    fn keys(json: &str) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        let serde_json::Value::Object(map) = value else {
            panic!("not an object: {json}");
        };
        let mut keys: Vec<String> = map.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn column_names(columns: &[Column]) -> Vec<String> {
        let mut names: Vec<String> = columns.iter().map(|c| c.name.to_owned()).collect();
        names.sort();
        names
    }

    /// The JSON rows and the column lists the statements use must name the
    /// same fields, or a column would silently arrive as NULL.
    #[test]
    fn every_row_type_serialises_exactly_its_column_list() {
        let outcome = sample_outcome();
        let delivery = Delivery {
            id: DeliveryId::from_stored("dlv_1"),
            event_id: EventId::from_stored("evt_1"),
            target: Target::Endpoint(EndpointId::from_stored("ep_1")),
            status: DeliveryStatus::Pending,
            attempt_count: 0,
            next_attempt_at: Some(1),
            lease: None,
            last_attempt_at: None,
            created_at: 1,
            updated_at: 1,
        };
        let text = |value: &dyn erased::Row| value.json();
        assert_eq!(
            keys(&text(&DeliveryRow::from(&delivery))),
            column_names(&DELIVERY_COLUMNS)
        );
        assert_eq!(
            keys(&text(&AttemptRow::from(&outcome.attempt))),
            column_names(&ATTEMPT_COLUMNS)
        );
        assert_eq!(
            keys(&text(&OutcomeRow::from(&outcome))),
            column_names(&OUTCOME_COLUMNS)
        );
        assert_eq!(
            keys(&text(&OutcomeWithAttemptRow::from(&outcome))),
            column_names(&OUTCOME_WITH_ATTEMPT_COLUMNS)
        );
        let row: serde_json::Value =
            serde_json::from_str(&text(&OutcomeWithAttemptRow::from(&outcome))).expect("json");
        assert_eq!(row["id"], "dlv_1", "id is the delivery's");
        assert_eq!(row["attempt_id"], "atm_1");
        assert_eq!(row["attempted_next_attempt_at"], 3);
    }

    #[test]
    fn stored_rows_become_typed_deliveries() {
        let row = delivery::Model {
            id: "dlv_1".into(),
            event_id: "evt_1".into(),
            endpoint_id: None,
            url: Some("https://cb.example/".into()),
            status: "pending".into(),
            attempt_count: 2,
            next_attempt_at: Some(9),
            lease_owner: Some("node_1".into()),
            lease_expires_at: Some(99),
            last_attempt_at: None,
            created_at: 1,
            updated_at: 2,
        };
        let delivery = Delivery::try_from(row.clone()).expect("valid");
        assert_eq!(
            delivery.target,
            Target::Callback("https://cb.example/".into())
        );
        assert!(delivery.is_leased_to(&LeaseOwner::from_stored("node_1")));
        assert_eq!(delivery.attempt_count, 2);
        let unknown = delivery::Model {
            status: "cancelled".into(),
            ..row
        };
        assert!(Delivery::try_from(unknown).is_err());
    }

    /// Serialising any row type to JSON, for the test above.
    mod erased {
        pub trait Row {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Row for T {
            fn json(&self) -> String {
                super::json_text(self).expect("serialises")
            }
        }
    }
}
