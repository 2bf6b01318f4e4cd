//! The rules of a publish request, checked in the caller's task (so that many
//! requests are checked in parallel) before the event reaches the committer.
//!
//! Two lookups would otherwise cost a database round trip per event: the
//! consumer reference (id or uid) and the event type's catalogue entry. Both
//! are cached briefly. A stale consumer entry is harmless because the
//! committer checks, inside its transaction, that every consumer still exists.
//! A stale event type entry may let an event through for up to
//! [`EVENT_TYPE_TTL`] after its type was archived or its schema changed on
//! another node; the node that made the change forgets its entry
//! ([`Validator::forget_event_type`]), so there the change applies at once.
//! Compiled schemas are reused only while the stored schema text is
//! unchanged, so a refreshed entry never validates against an old schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{EventInput, PublisherConfig};
use crate::domain::event_type;
use crate::domain::ids::EndpointId;
use crate::error::{Error, Result};
use crate::storage::{Database, consumers, event_types};

pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 256;
/// How deep a payload may nest arrays and objects. JSON parsers that
/// recurse (serde_json's `Value`, which schema checks use, stops at 128;
/// Ruby's at 100) would fail or overflow their stack on deeper input, at
/// Herald or at a receiver; 64 leaves room below all of them and above any
/// real event.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// How long a resolved consumer reference is trusted.
const CONSUMER_TTL: Duration = Duration::from_secs(10);
/// How long an event type's catalogue entry is trusted.
pub const EVENT_TYPE_TTL: Duration = Duration::from_secs(1);
/// Caches are cleared when they reach this many entries, which bounds memory
/// whatever names callers send.
const CACHE_LIMIT: usize = 10_000;

/// A request that passed every check, ready to be committed.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where the request sits in a PublishBatch, to name its fields in errors.
    pub index: Option<usize>,
    /// The consumer as the caller named it (id or uid), for error messages.
    pub consumer_reference: String,
    pub consumer_id: String,
    pub event_type: String,
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    /// Hex SHA-256 of type, payload and callback URL: what "the same request"
    /// means for an idempotency key.
    pub request_hash: String,
    /// See [`EventInput::only_endpoint`].
    pub only_endpoint: Option<EndpointId>,
    /// See [`EventInput::broadcast`].
    pub broadcast: bool,
    /// See [`EventInput::trace_parent`].
    pub trace_parent: Option<String>,
}

impl Prepared {
    /// The name of one of this request's fields, as the caller knows it.
    pub fn field(&self, name: &str) -> String {
        field_name(self.index, name)
    }
}

fn field_name(index: Option<usize>, name: &str) -> String {
    match index {
        Some(index) => format!("events[{index}].{name}"),
        None => name.to_owned(),
    }
}

/// What publishing needs to know about a registered event type.
struct EventTypeInfo {
    archived: bool,
    /// The stored schema text, to tell whether `schema` may be reused.
    schema_text: Option<String>,
    /// The compiled schema, or why the stored schema does not compile.
    schema: Option<std::result::Result<Arc<jsonschema::Validator>, String>>,
}

struct CachedType {
    fetched: Instant,
    /// None: the type is not registered (unregistered types are allowed).
    info: Option<Arc<EventTypeInfo>>,
}

#[derive(Default)]
struct EventTypeCache {
    entries: HashMap<String, CachedType>,
    /// Counts forgets. A lookup caches what it read only if no forget happened
    /// while it read: its row may predate the change that caused the forget,
    /// and caching it would undo the forget for a whole TTL.
    forgets: u64,
}

pub struct Validator {
    db: Database,
    config: PublisherConfig,
    consumers: Mutex<HashMap<String, (String, Instant)>>,
    event_types: Mutex<EventTypeCache>,
}

impl Validator {
    pub fn new(db: Database, config: PublisherConfig) -> Self {
        Validator {
            db,
            config,
            consumers: Mutex::new(HashMap::new()),
            event_types: Mutex::new(EventTypeCache::default()),
        }
    }

    /// Checks one request; `index` is its place in a batch.
    pub async fn prepare(&self, index: Option<usize>, input: EventInput) -> Result<Prepared> {
        let field = |name: &str| field_name(index, name);
        if input.consumer_id.is_empty() {
            return Err(Error::invalid(&field("consumer_id"), "is required"));
        }
        let event_type = event_type::parse_name(&field("event_type"), &input.event_type)?;
        check_payload_size(
            &field("payload"),
            &input.payload,
            self.config.max_payload_bytes,
        )?;
        check_payload_depth(&field("payload"), &input.payload)?;
        let idempotency_key = match input.idempotency_key.as_str() {
            "" => None,
            key if key.chars().count() > IDEMPOTENCY_KEY_MAX_CHARS => {
                return Err(Error::invalid(
                    &field("idempotency_key"),
                    format!("must be at most {IDEMPOTENCY_KEY_MAX_CHARS} characters"),
                ));
            }
            key => Some(key.to_owned()),
        };
        let callback_url = match input.callback_url.as_str() {
            "" => None,
            raw => Some(
                self.config
                    .target_policy
                    .parse_url(&field("callback_url"), raw)?
                    .to_string(),
            ),
        };
        if input.only_endpoint.is_some() && (idempotency_key.is_some() || callback_url.is_some()) {
            // A key's "same request" does not cover the target, and a
            // callback would be a second delivery: neither fits one.
            return Err(Error::internal(
                "an event for one endpoint came with an idempotency key or a callback URL",
            ));
        }
        let type_info = self.event_type(&event_type).await?;
        match type_info.as_deref() {
            Some(info) if info.archived => {
                return Err(Error::invalid(
                    &field("event_type"),
                    format!("{event_type:?} is archived and accepts no new events"),
                ));
            }
            Some(EventTypeInfo {
                schema: Some(schema),
                ..
            }) => {
                let schema = schema.as_ref().map_err(|reason| {
                    Error::FailedPrecondition(format!(
                        "the JSON Schema of event type {event_type:?} does not compile: {reason}"
                    ))
                })?;
                check_against_schema(&field("payload"), &input.payload, &event_type, schema)?;
            }
            _ => check_json(&field("payload"), &input.payload)?,
        }
        let consumer_id = if input.broadcast {
            if callback_url.is_some() || input.only_endpoint.is_some() {
                return Err(Error::internal(
                    "a broadcast came with a callback URL or for one endpoint",
                ));
            }
            crate::domain::broadcast::OWNER_ID.to_owned()
        } else {
            self.resolve_consumer(&input.consumer_id).await?
        };
        let request_hash = request_hash(&event_type, &input.payload, callback_url.as_deref());
        Ok(Prepared {
            index,
            consumer_reference: input.consumer_id,
            consumer_id,
            event_type,
            payload: input.payload,
            idempotency_key,
            callback_url,
            request_hash,
            only_endpoint: input.only_endpoint,
            broadcast: input.broadcast,
            trace_parent: input.trace_parent,
        })
    }

    async fn resolve_consumer(&self, reference: &str) -> Result<String> {
        if let Some((id, fetched)) = lock(&self.consumers).get(reference)
            && fetched.elapsed() < CONSUMER_TTL
        {
            return Ok(id.clone());
        }
        let consumer = consumers::resolve(&self.db.conn, reference)
            .await?
            .ok_or_else(|| Error::not_found("consumer", reference))?;
        let mut cache = lock(&self.consumers);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(reference.to_owned(), (consumer.id.clone(), Instant::now()));
        Ok(consumer.id)
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// Forgets a consumer reference (the committer found it gone).
    pub fn forget_consumer(&self, reference: &str) {
        lock(&self.consumers).remove(reference);
    }

    /// Forgets an event type; call it after the catalogue entry changed
    /// (committed), so the next publish of the type reads the new entry.
    pub fn forget_event_type(&self, name: &str) {
        let mut cache = lock(&self.event_types);
        cache.entries.remove(name);
        cache.forgets = cache.forgets.wrapping_add(1);
    }

    async fn event_type(&self, name: &str) -> Result<Option<Arc<EventTypeInfo>>> {
        let (previous, forgets) = {
            let cache = lock(&self.event_types);
            match cache.entries.get(name) {
                Some(cached) if cached.fetched.elapsed() < EVENT_TYPE_TTL => {
                    return Ok(cached.info.clone());
                }
                Some(cached) => (cached.info.clone(), cache.forgets),
                None => (None, cache.forgets),
            }
        };
        let row = event_types::get(&self.db.conn, name).await?;
        let info = row.map(|row| {
            let schema = match previous {
                // The same text compiles to the same validator.
                Some(previous) if previous.schema_text == row.schema => previous.schema.clone(),
                _ => row
                    .schema
                    .as_deref()
                    .map(|text| event_type::compile_schema(text).map(Arc::new)),
            };
            Arc::new(EventTypeInfo {
                archived: row.archived,
                schema_text: row.schema,
                schema,
            })
        });
        let mut cache = lock(&self.event_types);
        if cache.forgets == forgets {
            if cache.entries.len() >= CACHE_LIMIT {
                cache.entries.clear();
            }
            cache.entries.insert(
                name.to_owned(),
                CachedType {
                    fetched: Instant::now(),
                    info: info.clone(),
                },
            );
        }
        Ok(info)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PublisherConfig {
    /// `MAX_PAYLOAD_DEPTH`, reachable from outside the crate (`validate` is
    /// private) so that the fuzz targets hold accepted payloads to the same
    /// bound publishing does.
    pub const MAX_PAYLOAD_DEPTH: usize = MAX_PAYLOAD_DEPTH;

    /// The payload rules that need no database, in the order
    /// `Validator::prepare` applies them to an event type without a schema:
    /// size, nesting depth, JSON. Public so that the fuzz targets exercise the
    /// very checks that guard publishing; `prepare` keeps its own sequence
    /// because a schema replaces the JSON check.
    pub fn check_payload(&self, field: &str, payload: &str) -> Result<()> {
        check_payload_size(field, payload, self.max_payload_bytes)?;
        check_payload_depth(field, payload)?;
        check_json(field, payload)
    }
}

fn check_payload_size(field: &str, payload: &str, limit: usize) -> Result<()> {
    if payload.is_empty() {
        return Err(Error::invalid(field, "is required (JSON text)"));
    }
    if payload.len() > limit {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes, over the limit of {limit} bytes",
                payload.len()
            ),
        ));
    }
    Ok(())
}

/// Refuses a payload nesting arrays and objects deeper than
/// [`MAX_PAYLOAD_DEPTH`], before anything parses it. One pass over the bytes,
/// no recursion and no allocation, so hostile input costs no more than its
/// length: brackets are counted outside strings. Malformed JSON is left to
/// the parser that runs next, which names what is wrong with it.
fn check_payload_depth(field: &str, payload: &str) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in payload.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_PAYLOAD_DEPTH {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "nests arrays and objects more than {MAX_PAYLOAD_DEPTH} levels deep, the limit"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks that `payload` is one JSON value, without building it.
/// The payload is JSON that every JSON parser reads as a value: the grammar
/// alone (what `IgnoredAny` checks) lets through numbers beyond a double
/// (`1e400`) and unpaired UTF-16 surrogate escapes (`"\ud800"`), which a
/// schema check, the client crate's verifier and most receivers refuse.
/// Checked without building the value (payloads are up to megabytes); the
/// depth limit, checked before, bounds the recursion.
fn check_json(field: &str, payload: &str) -> Result<()> {
    serde_json::from_str::<Readable>(payload)
        .map(|_| ())
        .map_err(|err| Error::invalid(field, format!("is not valid JSON ({err})")))
}

/// A JSON value read the way a `serde_json::Value` is (numbers as numbers,
/// strings unescaped), then dropped.
struct Readable;

impl<'de> serde::Deserialize<'de> for Readable {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ReadableVisitor)
    }
}

struct ReadableVisitor;

impl<'de> serde::de::Visitor<'de> for ReadableVisitor {
    type Value = Readable;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_i64<E>(self, _: i64) -> std::result::Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_u64<E>(self, _: u64) -> std::result::Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_unit<E>(self) -> std::result::Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

fn check_against_schema(
    field: &str,
    payload: &str,
    event_type: &str,
    schema: &jsonschema::Validator,
) -> Result<()> {
    let value: serde_json::Value = serde_json::from_str(payload)
        .map_err(|err| Error::invalid(field, format!("is not valid JSON ({err})")))?;
    match first_violation(&value, schema) {
        None => Ok(()),
        Some(violation) => Err(Error::invalid(
            field,
            format!("does not match the schema of {event_type:?}: {violation}"),
        )),
    }
}

/// The first way `value` breaks `schema`, with where (`at /amount: …`).
fn first_violation(value: &serde_json::Value, schema: &jsonschema::Validator) -> Option<String> {
    schema.validate(value).err().map(|violation| {
        let path = violation.instance_path().to_string();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        format!("at {path}: {violation}")
    })
}

/// What a create or update of an event type leaves it with, for
/// [`PublisherConfig::check_example`]: the values after the call, and which
/// of them the call changes.
#[derive(Debug, Clone, Copy)]
pub struct ExampleCheck<'a> {
    pub event_type: &'a str,
    /// The JSON Schema the type has after the call (already checked to
    /// compile by `domain::event_type::parse_schema`, or stored).
    pub schema: Option<&'a str>,
    pub schema_changed: bool,
    /// The example the type has after the call.
    pub example: Option<&'a str>,
    pub example_changed: bool,
}

impl PublisherConfig {
    /// Holds an event type's example to what a publish of the type would
    /// accept, so that an example shown to consumers is never one Herald
    /// would refuse, and a test event sending it never fails on it.
    ///
    /// A new example gets every payload rule (size, nesting depth, JSON,
    /// the schema after the call); a refusal names `example`. A new schema
    /// with the stored example kept is refused, naming `schema`, when the
    /// example does not satisfy it: the schema is what the call changed,
    /// and a schema that makes the catalogue's own example wrong is more
    /// likely a mistake than the example is. The caller fixes it by setting
    /// a matching example (or removing it, `example: ""`) in the same call.
    /// The size and depth of a kept example are not checked again: they
    /// were checked when it was stored.
    pub fn check_example(&self, check: ExampleCheck<'_>) -> Result<()> {
        let Some(example) = check.example else {
            return Ok(());
        };
        if !check.example_changed && !check.schema_changed {
            return Ok(());
        }
        let schema = match check.schema {
            Some(text) => Some(event_type::compile_schema(text).map_err(|reason| {
                Error::FailedPrecondition(format!(
                    "the JSON Schema of event type {:?} does not compile: {reason}",
                    check.event_type
                ))
            })?),
            None => None,
        };
        if check.example_changed {
            check_payload_size("example", example, self.max_payload_bytes)?;
            check_payload_depth("example", example)?;
            return match &schema {
                Some(schema) => check_against_schema("example", example, check.event_type, schema),
                None => check_json("example", example),
            };
        }
        let Some(schema) = schema else {
            return Ok(());
        };
        let value: serde_json::Value = serde_json::from_str(example).map_err(|err| {
            Error::internal_from(
                format!(
                    "the stored example of event type {:?} is not JSON",
                    check.event_type
                ),
                err,
            )
        })?;
        match first_violation(&value, &schema) {
            None => Ok(()),
            Some(violation) => Err(Error::invalid(
                "schema",
                format!(
                    "the stored example of {:?} does not satisfy it ({violation}); set a matching example in the same call, or remove it with an empty example",
                    check.event_type
                ),
            )),
        }
    }
}

/// What makes two requests with one idempotency key "the same": type,
/// payload and callback URL, each length-prefixed so no two different
/// requests hash alike by shifting bytes between fields.
pub fn request_hash(event_type: &str, payload: &str, callback_url: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for part in [event_type, payload, callback_url.unwrap_or("")] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_must_be_json_within_the_limit() {
        assert!(check_payload_size("payload", "{}", 10).is_ok());
        let err = check_payload_size("payload", &"1".repeat(11), 10).expect_err("too large");
        assert!(err.to_string().starts_with("payload: "), "{err}");
        assert!(err.to_string().contains("10 bytes"), "{err}");
        assert!(check_payload_size("payload", "", 10).is_err());
        assert!(check_json("payload", r#" {"b": 1, "a": [1, 2]} "#).is_ok());
        assert!(check_json("payload", "\"text\"").is_ok());
        for bad in ["{", "{} {}", "nope", "{'a': 1}"] {
            let err = check_json("events[2].payload", bad).expect_err(bad);
            assert!(err.to_string().starts_with("events[2].payload: "), "{err}");
        }
        // Grammatical, but no JSON value: what a schema check or a receiver
        // parsing the body would refuse (found by the payload fuzz target).
        for unreadable in [
            "1e400",
            r#"{"a": -1e400}"#,
            r#""\ud800""#,
            r#"["\ud800x"]"#,
            r#"{"\udc00": 1}"#,
        ] {
            let err = check_json("payload", unreadable).expect_err(unreadable);
            assert!(err.to_string().contains("not valid JSON"), "{err}");
        }
        for readable in [
            "1e300",
            "-0",
            "18446744073709551615",
            "-9223372036854775808",
            r#""\ud83d\ude00""#,
            r#"{"a": [null, true, 1.5, "x"]}"#,
        ] {
            assert!(check_json("payload", readable).is_ok(), "{readable}");
            assert!(serde_json::from_str::<serde_json::Value>(readable).is_ok());
        }
    }

    #[test]
    fn payload_depth_is_limited_without_recursion() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(check_payload_depth("payload", &nested(MAX_PAYLOAD_DEPTH)).is_ok());
        let err = check_payload_depth("events[1].payload", &nested(MAX_PAYLOAD_DEPTH + 1))
            .expect_err("too deep");
        let message = err.to_string();
        assert!(message.starts_with("events[1].payload: "), "{message}");
        assert!(message.contains("64 levels"), "{message}");
        // Hostile depth costs one pass, not a stack per level.
        assert!(check_payload_depth("payload", &nested(1_000_000)).is_err());
        let objects = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert!(check_payload_depth("payload", &objects).is_err());
        // Brackets in strings, escaped quotes included, are text.
        let text = format!(r#"{{"a": "{}\"[[[", "b": [1]}}"#, "[".repeat(500));
        assert!(check_payload_depth("payload", &text).is_ok(), "{text}");
        // Siblings do not add up.
        let wide = format!("[{}]", vec![nested(60); 100].join(","));
        assert!(check_payload_depth("payload", &wide).is_ok());
    }

    #[test]
    fn schemas_report_the_first_violation_with_its_path() {
        let schema = event_type::compile_schema(
            r#"{"type":"object","required":["amount"],"properties":{"amount":{"type":"integer"}}}"#,
        )
        .expect("schema compiles");
        assert!(
            check_against_schema("payload", r#"{"amount": 3}"#, "invoice.paid", &schema).is_ok()
        );
        let err = check_against_schema("payload", r#"{"amount": "x"}"#, "invoice.paid", &schema)
            .expect_err("violates");
        let message = err.to_string();
        assert!(message.starts_with("payload: "), "{message}");
        assert!(message.contains("/amount"), "{message}");
    }

    fn publisher_config(max_payload_bytes: usize) -> PublisherConfig {
        PublisherConfig {
            max_payload_bytes,
            target_policy: Default::default(),
            max_pending_fan_outs: 1,
            max_test_events_per_minute: 10,
        }
    }

    const AMOUNT_SCHEMA: &str = r#"{"type":"object","required":["amount"]}"#;

    fn example_check<'a>(
        schema: Option<&'a str>,
        schema_changed: bool,
        example: Option<&'a str>,
        example_changed: bool,
    ) -> ExampleCheck<'a> {
        ExampleCheck {
            event_type: "invoice.paid",
            schema,
            schema_changed,
            example,
            example_changed,
        }
    }

    #[test]
    fn a_new_example_follows_the_payload_rules_and_the_schema() {
        let config = publisher_config(32);
        let refused = |check: ExampleCheck<'_>| config.check_example(check).expect_err("refused");
        for (example, needle) in [
            ("{", "example: is not valid JSON"),
            ("1e400", "example: is not valid JSON"),
            (
                r#"{"pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
                "example: is 43 bytes, over the limit of 32",
            ),
        ] {
            let message = refused(example_check(None, false, Some(example), true)).to_string();
            assert!(message.starts_with(needle), "{example}: {message}");
        }
        let deep = "[".repeat(65);
        let message = publisher_config(1024)
            .check_example(example_check(None, false, Some(&deep), true))
            .expect_err("too deep")
            .to_string();
        assert!(message.starts_with("example: nests arrays"), "{message}");
        let message =
            refused(example_check(Some(AMOUNT_SCHEMA), false, Some("{}"), true)).to_string();
        assert!(
            message.starts_with("example: does not match the schema"),
            "{message}"
        );
        // Against the schema the call leaves, new or stored alike.
        let message =
            refused(example_check(Some(AMOUNT_SCHEMA), true, Some("{}"), true)).to_string();
        assert!(message.starts_with("example: "), "{message}");
        assert!(
            config
                .check_example(example_check(
                    Some(AMOUNT_SCHEMA),
                    false,
                    Some(r#"{"amount":1}"#),
                    true
                ))
                .is_ok()
        );
        assert!(
            config
                .check_example(example_check(None, false, Some("[1]"), true))
                .is_ok()
        );
        assert!(
            config
                .check_example(example_check(Some(AMOUNT_SCHEMA), true, None, true))
                .is_ok(),
            "no example"
        );
    }

    #[test]
    fn a_new_schema_must_fit_the_kept_example() {
        let config = publisher_config(32);
        let err = config
            .check_example(example_check(Some(AMOUNT_SCHEMA), true, Some("{}"), false))
            .expect_err("the kept example breaks the new schema");
        assert!(matches!(err, Error::InvalidArgument(_)));
        let message = err.to_string();
        assert!(
            message.starts_with("schema: the stored example"),
            "{message}"
        );
        assert!(message.contains("amount"), "{message}");
        assert!(
            config
                .check_example(example_check(
                    Some(AMOUNT_SCHEMA),
                    true,
                    Some(r#"{"amount":1}"#),
                    false
                ))
                .is_ok()
        );
        // A kept example is not held again to a limit lowered since it was
        // stored, and nothing is checked when neither changes.
        let stored = r#"{"amount": 1, "note": "longer than thirty-two bytes"}"#;
        assert!(
            config
                .check_example(example_check(
                    Some(AMOUNT_SCHEMA),
                    true,
                    Some(stored),
                    false
                ))
                .is_ok()
        );
        assert!(
            config
                .check_example(example_check(Some(AMOUNT_SCHEMA), false, Some("{}"), false))
                .is_ok()
        );
        assert!(
            config
                .check_example(example_check(None, true, Some("{}"), false))
                .is_ok(),
            "schema removed"
        );
    }

    #[test]
    fn request_hashes_distinguish_fields() {
        let a = request_hash("a.b", "{}", None);
        assert_eq!(a, request_hash("a.b", "{}", None));
        assert_ne!(a, request_hash("a.b", "{} ", None));
        assert_ne!(a, request_hash("a.b", "{}", Some("https://x.example/")));
        assert_ne!(
            request_hash("a", "b{}", None),
            request_hash("ab", "{}", None)
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn batch_fields_are_named_by_index() {
        assert_eq!(field_name(Some(3), "payload"), "events[3].payload");
        assert_eq!(field_name(None, "payload"), "payload");
    }
}
