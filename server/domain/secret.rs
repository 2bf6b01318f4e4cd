//! Signing secrets in the Standard Webhooks form: `whsec_` + base64 of the key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::error::{Error, Result};

const PREFIX: &str = "whsec_";
const GENERATED_BYTES: usize = 32;
const MIN_BYTES: usize = 24;
const MAX_BYTES: usize = 64;

/// A signing secret; its `Debug` never shows the key, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(whsec_…)")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        let mut key = [0u8; GENERATED_BYTES];
        rand::rng().fill_bytes(&mut key);
        SigningSecret(format!("{PREFIX}{}", STANDARD.encode(key)))
    }

    /// Accepts a caller-supplied secret in `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let key = decode(raw).ok_or_else(|| {
            Error::invalid(
                field,
                format!("must be whsec_ followed by base64 of {MIN_BYTES} to {MAX_BYTES} bytes"),
            )
        })?;
        if !(MIN_BYTES..=MAX_BYTES).contains(&key.len()) {
            return Err(Error::invalid(
                field,
                format!(
                    "must decode to {MIN_BYTES} to {MAX_BYTES} bytes, not {}",
                    key.len()
                ),
            ));
        }
        Ok(SigningSecret(raw.to_owned()))
    }

    /// Wraps a secret read back from storage, where it was validated on the way in.
    pub fn from_stored(raw: String) -> Self {
        SigningSecret(raw)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the decoded bytes after `whsec_`.
    pub fn key_bytes(&self) -> Vec<u8> {
        decode(&self.0).unwrap_or_default()
    }
}

fn decode(raw: &str) -> Option<Vec<u8>> {
    STANDARD.decode(raw.strip_prefix(PREFIX)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_bad_ones_do_not() {
        let secret = SigningSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(secret.key_bytes().len(), 32);
        assert!(SigningSecret::parse("secret", secret.expose()).is_ok());
        assert!(SigningSecret::parse("secret", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(SigningSecret::parse("secret", "whsec_c2hvcnQ=").is_err());
        assert!(SigningSecret::parse("secret", "nope").is_err());
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }
}
