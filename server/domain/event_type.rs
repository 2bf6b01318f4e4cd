//! Event type names (`invoice.paid`) and the filters endpoints subscribe with
//! (`invoice.paid`, `invoice.*`, or nothing for everything).

use crate::error::{Error, Result};

pub const MAX_NAME_LENGTH: usize = 256;
pub const MAX_FILTERS: usize = 256;

/// Checks `name`: segments of `a-z 0-9 _` joined by single dots.
pub fn parse_name(field: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME_LENGTH} characters"),
        ));
    }
    if !is_valid_name(name) {
        return Err(Error::invalid(
            field,
            format!(
                "{name:?} is not a valid event type: use lowercase segments of a-z, 0-9 and _ joined by dots, like invoice.paid"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn is_valid_name(name: &str) -> bool {
    name.split('.').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    })
}

pub const MAX_DESCRIPTION_LENGTH: usize = 1024;
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

pub fn parse_description(field: &str, description: &str) -> Result<String> {
    if description.chars().count() > MAX_DESCRIPTION_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION_LENGTH} characters"),
        ));
    }
    Ok(description.to_owned())
}

/// An optional JSON Schema: empty means none. The schema is compiled here, so
/// that a document that is not a usable schema (a `type` of 12, a `$ref` to
/// nowhere) is refused when it is stored instead of making every later
/// publish of the type fail.
pub fn parse_schema(field: &str, schema: &str) -> Result<Option<String>> {
    if schema.trim().is_empty() {
        return Ok(None);
    }
    if schema.len() > MAX_SCHEMA_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_SCHEMA_BYTES} bytes"),
        ));
    }
    let document: serde_json::Value = serde_json::from_str(schema)
        .map_err(|err| Error::invalid(field, format!("is not valid JSON ({err})")))?;
    if !document.is_object() {
        return Err(Error::invalid(
            field,
            "must be a JSON object (a JSON Schema)",
        ));
    }
    compile_document(&document).map_err(|reason| {
        Error::invalid(
            field,
            format!("is not a JSON Schema that compiles: {reason}"),
        )
    })?;
    Ok(Some(schema.to_owned()))
}

/// Compiles stored schema text. Publishing uses this and the catalogue uses
/// [`parse_schema`], which compiles the same way, so a schema accepted at
/// create or update also compiles at publish. The error says why it does not
/// compile, without naming a field (a stored schema is no request's field).
pub fn compile_schema(text: &str) -> std::result::Result<jsonschema::Validator, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("not valid JSON ({err})"))?;
    compile_document(&document)
}

/// jsonschema 0.61 resolves every `$ref` reachable from the root while it
/// compiles, so an unresolvable one is an error here and not a surprise at
/// publish; a `$ref` nothing reaches (say, in an unused `$defs` entry) is
/// never resolved and never matters.
fn compile_document(
    document: &serde_json::Value,
) -> std::result::Result<jsonschema::Validator, String> {
    jsonschema::validator_for(document).map_err(|err| {
        use jsonschema::ReferencingError;
        use jsonschema::error::ValidationErrorKind;
        match err.kind() {
            ValidationErrorKind::Referencing(
                ReferencingError::UnknownSpecification { .. }
                | ReferencingError::CircularMetaschema { .. },
            ) => format!("$schema: {err}"),
            ValidationErrorKind::Referencing(_) => format!("a $ref cannot be resolved: {err}"),
            // Not a schema by its meta-schema: the path is inside the schema.
            _ => match err.instance_path().to_string() {
                path if path.is_empty() => err.to_string(),
                path => format!("at {path}: {err}"),
            },
        }
    })
}

/// An endpoint's (or a live tail's) choice of event types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventTypeFilter {
    patterns: Vec<String>,
}

impl EventTypeFilter {
    /// Checks each entry: an exact name, or a name prefix followed by `.*`.
    pub fn parse(field: &str, patterns: &[String]) -> Result<Self> {
        if patterns.len() > MAX_FILTERS {
            return Err(Error::invalid(
                field,
                format!("must have at most {MAX_FILTERS} entries"),
            ));
        }
        let mut checked: Vec<String> = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            let valid = match pattern.strip_suffix(".*") {
                Some(prefix) => is_valid_name(prefix),
                None => is_valid_name(pattern),
            };
            if !valid || pattern.len() > MAX_NAME_LENGTH {
                return Err(Error::invalid(
                    &format!("{field}[{index}]"),
                    format!(
                        "{pattern:?} is neither an event type (invoice.paid) nor a prefix pattern ending in .* (invoice.*)"
                    ),
                ));
            }
            if !checked.contains(pattern) {
                checked.push(pattern.clone());
            }
        }
        Ok(EventTypeFilter { patterns: checked })
    }

    /// Wraps patterns read back from storage.
    pub fn from_stored(patterns: Vec<String>) -> Self {
        EventTypeFilter { patterns }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether an event of type `name` passes. `invoice.*` matches
    /// `invoice.paid` and `invoice.line.added` but not `invoice` itself (nor
    /// `invoice.`, which is no event type but may be stored by other means).
    /// Matching is byte for byte: ListEvents's SQL (`storage::events::list`)
    /// must select exactly these names.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
                    None => pattern == name,
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> EventTypeFilter {
        let owned: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        EventTypeFilter::parse("event_types", &owned).expect("valid filter")
    }

    #[test]
    fn names_follow_the_rule() {
        for good in ["invoice", "invoice.paid", "a_b.c1.d_2"] {
            assert!(parse_name("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Invoice",
            "invoice.",
            ".paid",
            "invoice..paid",
            "invoice-paid",
            "invoice.*",
            "in voice",
        ] {
            assert!(parse_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schemas_must_be_json_objects() {
        assert_eq!(parse_schema("schema", "").expect("empty is none"), None);
        assert!(
            parse_schema("schema", r#"{"type":"object"}"#)
                .expect("valid")
                .is_some()
        );
        for bad in ["{", "[]", "42", "\"text\"", "null"] {
            let err = parse_schema("schema", bad).expect_err(bad);
            assert!(err.to_string().starts_with("schema: "), "{bad}: {err}");
        }
    }

    #[test]
    fn schemas_must_compile() {
        for (bad, needle) in [
            (r#"{"type": 12}"#, "at /type: "),
            (
                r#"{"properties": {"a": {"minimum": "low"}}}"#,
                "at /properties/a/minimum: ",
            ),
            (r#"{"pattern": "("}"#, "at /pattern: "),
            (
                r##"{"$ref": "#/nope"}"##,
                "a $ref cannot be resolved: Pointer '/nope'",
            ),
            (
                r##"{"properties": {"a": {"$ref": "#/$defs/missing"}}}"##,
                "a $ref cannot be resolved: Pointer '/$defs/missing'",
            ),
            (
                r##"{"anyOf": [{"type": "string"}, {"$ref": "#/nope"}]}"##,
                "a $ref cannot be resolved",
            ),
            (
                r##"{"$ref": "#no_such_anchor"}"##,
                "a $ref cannot be resolved",
            ),
            // Remote documents are never fetched: the schema must be whole.
            (
                r#"{"$ref": "https://schemas.example.com/invoice.json"}"#,
                "a $ref cannot be resolved",
            ),
            (
                r#"{"$schema": "https://example.com/my-draft"}"#,
                "$schema: ",
            ),
        ] {
            let err = parse_schema("schema", bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
            let message = err.to_string();
            assert!(
                message.starts_with("schema: is not a JSON Schema that compiles: "),
                "{bad}: {message}"
            );
            assert!(message.contains(needle), "{bad}: {message}");
            assert!(compile_schema(bad).is_err(), "publishing agrees: {bad}");
        }
        for good in [
            r#"{"type": "object", "required": ["amount"]}"#,
            r##"{"$defs": {"amount": {"type": "integer"}}, "properties": {"amount": {"$ref": "#/$defs/amount"}}}"##,
            r##"{"$defs": {"node": {"items": {"$ref": "#/$defs/node"}}}, "$ref": "#/$defs/node"}"##,
            r##"{"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"a": {}}, "$ref": "#/definitions/a"}"##,
        ] {
            assert!(
                parse_schema("schema", good).expect(good).is_some(),
                "{good}"
            );
            assert!(compile_schema(good).is_ok(), "publishing agrees: {good}");
        }
        assert!(compile_schema("{not json").is_err());
    }

    #[test]
    fn filters_match_exact_names_and_prefixes() {
        let all = filter(&[]);
        assert!(all.matches("anything.at_all"));
        let some = filter(&["invoice.*", "user.created"]);
        assert!(some.matches("invoice.paid"));
        assert!(some.matches("invoice.line.added"));
        assert!(!some.matches("invoice"));
        assert!(!some.matches("invoice."), "the bare prefix is not under it");
        assert!(!some.matches("invoices.paid"));
        assert!(some.matches("user.created"));
        assert!(!some.matches("user.deleted"));
        let err = EventTypeFilter::parse("event_types", &["ok".into(), "bad*".into()])
            .expect_err("invalid");
        assert!(err.to_string().starts_with("event_types[1]: "), "{err}");
        assert!(EventTypeFilter::parse("event_types", &["*".into()]).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Valid names over a tiny alphabet, so that generated names and
        /// patterns often share prefixes.
        fn small_name() -> impl Strategy<Value = String> {
            "[ab_1]{1,3}(\\.[ab_1]{1,3}){0,2}"
        }

        /// Names as they might be stored: valid ones, near misses (upper
        /// case, trailing or doubled dots, LIKE wildcards) and anything.
        fn stored_name() -> impl Strategy<Value = String> {
            prop_oneof![small_name(), "[aAbB_%.\\\\1]{0,8}", any::<String>(),]
        }

        proptest! {
            #[test]
            fn parsing_never_panics_and_names_the_entry(
                patterns in proptest::collection::vec(
                    prop_oneof![
                        any::<String>(),
                        "[ab.*_A%]{0,6}",
                        small_name().prop_map(|name| format!("{name}.*")),
                    ],
                    0..8,
                ),
            ) {
                match EventTypeFilter::parse("event_types", &patterns) {
                    Ok(filter) => {
                        for pattern in filter.patterns() {
                            prop_assert!(patterns.contains(pattern));
                            let name = pattern.strip_suffix(".*").unwrap_or(pattern);
                            prop_assert!(parse_name("name", name).is_ok(), "{:?}", pattern);
                        }
                    }
                    Err(error) => {
                        let message = error.to_string();
                        prop_assert!(matches!(error, Error::InvalidArgument(_)));
                        prop_assert!(message.starts_with("event_types["), "{}", message);
                    }
                }
            }

            #[test]
            fn the_empty_filter_matches_everything(name in stored_name()) {
                prop_assert!(EventTypeFilter::default().matches(&name));
                prop_assert!(EventTypeFilter::parse("event_types", &[]).expect("empty").matches(&name));
            }

            #[test]
            fn an_exact_pattern_matches_only_itself(
                pattern in small_name(),
                name in prop_oneof![stored_name(), small_name()],
            ) {
                let filter = EventTypeFilter::parse("event_types", std::slice::from_ref(&pattern))
                    .expect("a valid name is a valid pattern");
                prop_assert!(filter.matches(&pattern));
                prop_assert_eq!(filter.matches(&name), name == pattern);
            }

            #[test]
            fn a_prefix_pattern_matches_longer_names_under_the_prefix(
                prefix in small_name(),
                name in prop_oneof![stored_name(), small_name(), small_name().prop_map(|n| format!("{n}."))],
            ) {
                let filter = EventTypeFilter::parse("event_types", &[format!("{prefix}.*")])
                    .expect("a valid prefix pattern");
                let under = format!("{prefix}.");
                prop_assert_eq!(
                    filter.matches(&name),
                    name.starts_with(&under) && name.len() > under.len(),
                    "{:?} against {:?}", name, prefix
                );
                prop_assert!(!filter.matches(&prefix));
                prop_assert!(!filter.matches(&under));
                let below = format!("{under}x");
                prop_assert!(filter.matches(&below));
            }

            #[test]
            fn a_filter_matches_what_any_of_its_patterns_matches(
                patterns in proptest::collection::vec(
                    prop_oneof![small_name(), small_name().prop_map(|n| format!("{n}.*"))],
                    1..5,
                ),
                name in prop_oneof![stored_name(), small_name()],
            ) {
                let filter = EventTypeFilter::parse("event_types", &patterns).expect("valid patterns");
                let any_one = patterns.iter().any(|pattern| {
                    EventTypeFilter::parse("event_types", std::slice::from_ref(pattern))
                        .expect("valid pattern")
                        .matches(&name)
                });
                prop_assert_eq!(filter.matches(&name), any_one);
            }
        }
    }
}
