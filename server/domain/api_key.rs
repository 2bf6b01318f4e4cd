//! API keys: `hk_` + 32 random bytes in URL-safe base64. Only the SHA-256 of a
//! token is stored, so a leaked database does not leak working keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const TOKEN_PREFIX: &str = "hk_";
/// How much of a token is kept to recognise it in listings.
const DISPLAY_PREFIX_CHARS: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Admin,
    Publisher,
    Consumer,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Publisher => "publisher",
            Scope::Consumer => "consumer",
        }
    }

    pub fn from_stored(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Scope::Admin),
            "publisher" => Some(Scope::Publisher),
            "consumer" => Some(Scope::Consumer),
            _ => None,
        }
    }
}

/// The longest a key may be made for: beyond, a key that never expires
/// (no lifetime) says what is meant.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 24 * 3600);

/// When a key made at `now` (ms) for `lifetime` expires; none without a
/// lifetime. `field` names the request field in errors.
pub fn expiry(field: &str, now: i64, lifetime: Option<std::time::Duration>) -> Result<Option<i64>> {
    let Some(lifetime) = lifetime else {
        return Ok(None);
    };
    if lifetime < std::time::Duration::from_secs(1) {
        return Err(Error::invalid(field, "must be at least 1s"));
    }
    if lifetime > MAX_LIFETIME {
        return Err(Error::invalid(
            field,
            "must be at most 10 years (leave it unset for a key that does not expire)",
        ));
    }
    let millis = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    Ok(Some(now.saturating_add(millis)))
}

/// Whether a key that expires at `expires_at` has stopped working at `now`.
pub fn is_expired(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_some_and(|expires_at| expires_at <= now)
}

/// A freshly minted token, before it is shown once and forgotten.
pub struct NewToken {
    pub token: String,
    pub hash: String,
    pub display_prefix: String,
}

pub fn generate_token() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    from_token(token)
}

/// Accepts an operator-chosen token (`--admin-token`).
pub fn parse_token(field: &str, token: &str) -> Result<NewToken> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() < TOKEN_PREFIX.len() + 16 {
        return Err(Error::invalid(
            field,
            format!("must start with {TOKEN_PREFIX} and have at least 16 characters after it"),
        ));
    }
    Ok(from_token(token.to_owned()))
}

fn from_token(token: String) -> NewToken {
    let hash = hash_token(&token);
    let display_prefix = token.chars().take(DISPLAY_PREFIX_CHARS).collect();
    NewToken {
        token,
        hash,
        display_prefix,
    }
}

/// The stored form of a token: lowercase hex SHA-256.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lifetimes_are_bounded_and_optional() {
        assert_eq!(expiry("lifetime", 1_000, None).expect("none"), None);
        assert_eq!(
            expiry("lifetime", 1_000, Some(Duration::from_secs(60))).expect("a minute"),
            Some(61_000)
        );
        let error = expiry("lifetime", 0, Some(Duration::from_millis(999))).expect_err("too short");
        assert!(error.to_string().contains("lifetime"), "{error}");
        assert!(expiry("lifetime", 0, Some(MAX_LIFETIME)).is_ok());
        assert!(expiry("lifetime", 0, Some(MAX_LIFETIME + Duration::from_secs(1))).is_err());
    }

    #[test]
    fn a_key_stops_working_at_its_expiry() {
        assert!(!is_expired(None, i64::MAX));
        assert!(!is_expired(Some(10), 9));
        assert!(is_expired(Some(10), 10));
        assert!(is_expired(Some(10), 11));
    }

    #[test]
    fn tokens_hash_stably_and_differ() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("hk_"));
        assert_eq!(a.hash, hash_token(&a.token));
        assert_eq!(a.hash.len(), 64);
        assert!(parse_token("admin_token", "hk_short").is_err());
        assert!(parse_token("admin_token", "xx_0123456789abcdef0123").is_err());
        assert!(parse_token("admin_token", "hk_0123456789abcdef").is_ok());
    }
}
