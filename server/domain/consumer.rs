//! Rules for consumer fields.

use std::collections::BTreeMap;

use crate::domain::ids;
use crate::error::{Error, Result};

pub const MAX_UID_LENGTH: usize = 256;
pub const MAX_NAME_LENGTH: usize = 256;
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_KEY_LENGTH: usize = 128;
pub const MAX_METADATA_VALUE_LENGTH: usize = 1024;

/// A caller-chosen uid: 1–256 characters of `A-Z a-z 0-9 . _ : -`, never in the
/// shape of a Herald consumer id, so that every `consumer_id` field can take
/// either without ambiguity.
pub fn parse_uid(field: &str, uid: &str) -> Result<String> {
    if uid.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if uid.len() > MAX_UID_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_UID_LENGTH} characters"),
        ));
    }
    if !uid
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
    {
        return Err(Error::invalid(
            field,
            "may contain only letters, digits, '.', '_', ':' and '-'",
        ));
    }
    if uid.starts_with("con_") {
        return Err(Error::invalid(
            field,
            "must not start with con_ (reserved for Herald's consumer ids)",
        ));
    }
    Ok(uid.to_owned())
}

/// Whether a `consumer_id` field holds a Herald id rather than a uid.
pub fn is_consumer_id(value: &str) -> bool {
    ids::has_prefix(value, ids::CONSUMER)
}

pub fn parse_name(field: &str, name: &str) -> Result<String> {
    if name.chars().count() > MAX_NAME_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME_LENGTH} characters"),
        ));
    }
    Ok(name.to_owned())
}

pub fn parse_metadata(
    field: &str,
    metadata: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(
            field,
            format!("must have at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_LENGTH {
            return Err(Error::invalid(
                field,
                format!("keys must have 1 to {MAX_METADATA_KEY_LENGTH} characters"),
            ));
        }
        if value.len() > MAX_METADATA_VALUE_LENGTH {
            return Err(Error::invalid(
                &format!("{field}[{key}]"),
                format!("must be at most {MAX_METADATA_VALUE_LENGTH} bytes"),
            ));
        }
    }
    Ok(metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_follow_the_rule() {
        assert!(parse_uid("uid", "customer-42:eu.main_1").is_ok());
        assert!(parse_uid("uid", "").is_err());
        assert!(parse_uid("uid", "has space").is_err());
        assert!(parse_uid("uid", "con_abc").is_err());
        assert!(parse_uid("uid", &"x".repeat(257)).is_err());
        assert!(is_consumer_id(&ids::new_id(ids::CONSUMER)));
        assert!(!is_consumer_id("customer-42"));
    }
}
