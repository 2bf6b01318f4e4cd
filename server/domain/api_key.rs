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
