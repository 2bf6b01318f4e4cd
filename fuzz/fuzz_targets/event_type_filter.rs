//! Event type names and the filters endpoints and live tails subscribe with.
//!
//! Input: line 1 is an event type name, every further line one pattern of a
//! filter.
//!
//! Invariants, each against a reference written here from the rules in the
//! documentation rather than from the code:
//! - nothing panics, and every refusal names the field (and the entry);
//! - a name is accepted exactly when it is 1 to 256 bytes of lowercase
//!   segments of `a-z 0-9 _` joined by single dots, and comes back unchanged;
//! - a filter is accepted exactly when it has at most 256 entries, each a
//!   valid name or a valid name followed by `.*`, and keeps the first of
//!   repeated entries in order; a refusal names the first bad entry;
//! - an accepted filter matches a name exactly when the reference does: an
//!   exact entry matches itself only, `x.*` matches what starts with `x.`
//!   and is longer, the empty filter everything; and it matches the same
//!   after a round trip through storage;
//! - every valid name is a filter matching itself, and its `.*` pattern
//!   matches the names below it but not the name.
#![no_main]

use herald::domain::event_type::{EventTypeFilter, MAX_FILTERS, MAX_NAME_LENGTH, parse_name};
use libfuzzer_sys::fuzz_target;

const FIELD: &str = "event_types";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut entries = text.split('\n');
    let name = entries.next().unwrap_or_default();
    let patterns: Vec<String> = entries.map(str::to_owned).collect();

    check_name(name);
    if let Some(first) = patterns.first() {
        check_name(first);
    }
    check_filter(&patterns, name);
    if is_name(name) {
        check_name_as_filter(name);
    }
});

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        })
}

fn is_pattern(pattern: &str) -> bool {
    pattern.len() <= MAX_NAME_LENGTH
        && (is_name(pattern) || pattern.strip_suffix(".*").is_some_and(is_name))
}

fn reference_matches(patterns: &[String], name: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix(".*") {
                Some(base) => name
                    .strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|below| !below.is_empty()),
                None => pattern == name,
            })
}

fn check_name(name: &str) {
    match parse_name("name", name) {
        Ok(parsed) => {
            assert!(is_name(name), "{name:?} accepted");
            assert_eq!(parsed, name);
        }
        Err(error) => {
            assert!(!is_name(name), "{name:?} refused: {error}");
            assert!(error.to_string().starts_with("name: "), "{error}");
        }
    }
}

fn check_filter(patterns: &[String], name: &str) {
    let first_bad = patterns.iter().position(|pattern| !is_pattern(pattern));
    let filter = match EventTypeFilter::parse(FIELD, patterns) {
        Ok(filter) => filter,
        Err(error) => {
            let message = error.to_string();
            if patterns.len() > MAX_FILTERS {
                assert!(message.starts_with("event_types: "), "{message}");
            } else {
                let index = first_bad.unwrap_or_else(|| panic!("{patterns:?} refused: {message}"));
                let prefix = format!("event_types[{index}]: ");
                assert!(message.starts_with(&prefix), "{patterns:?}: {message}");
            }
            return;
        }
    };
    assert!(
        patterns.len() <= MAX_FILTERS && first_bad.is_none(),
        "{patterns:?} accepted"
    );

    let mut unique: Vec<String> = Vec::new();
    for pattern in patterns {
        if !unique.contains(pattern) {
            unique.push(pattern.clone());
        }
    }
    assert_eq!(filter.patterns(), unique.as_slice());

    let stored = EventTypeFilter::from_stored(filter.patterns().to_vec());
    assert_eq!(stored, filter);

    // The names where a matcher goes wrong if it does: the patterns
    // themselves, their bases, one past the dot and just the dot.
    let mut probes = vec![name.to_owned()];
    for pattern in patterns.iter().take(16) {
        let base = pattern.strip_suffix(".*").unwrap_or(pattern);
        probes.extend([
            pattern.clone(),
            base.to_owned(),
            format!("{base}."),
            format!("{base}.x"),
            format!("{base}x"),
        ]);
    }
    for probe in &probes {
        let expected = reference_matches(patterns, probe);
        assert_eq!(
            filter.matches(probe),
            expected,
            "{patterns:?} against {probe:?}"
        );
        assert_eq!(stored.matches(probe), expected);
    }
}

fn check_name_as_filter(name: &str) {
    let exact = EventTypeFilter::parse(FIELD, &[name.to_owned()])
        .unwrap_or_else(|error| panic!("the name {name:?} is no filter: {error}"));
    assert!(exact.matches(name));
    assert!(!exact.matches(&format!("{name}.x")));

    let pattern = format!("{name}.*");
    match EventTypeFilter::parse(FIELD, std::slice::from_ref(&pattern)) {
        Ok(below) => {
            assert!(pattern.len() <= MAX_NAME_LENGTH, "{pattern:?} accepted");
            assert!(below.matches(&format!("{name}.x")), "{pattern:?}");
            assert!(!below.matches(name), "{pattern:?} matches its base");
            assert!(!below.matches(&format!("{name}.")), "{pattern:?}");
        }
        Err(error) => assert!(pattern.len() > MAX_NAME_LENGTH, "{pattern:?}: {error}"),
    }
}
