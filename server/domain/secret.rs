//! Signing secrets in the Standard Webhooks form: `whsec_` + base64 of the key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use std::time::Duration;

use crate::error::{Error, Result};

const PREFIX: &str = "whsec_";
const GENERATED_BYTES: usize = 32;
const MIN_BYTES: usize = 24;
const MAX_BYTES: usize = 64;

/// How long a rotated-out secret keeps signing when the caller does not say.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest a rotated-out secret may keep signing: a rotation must end.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

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

/// The grace period of a rotation in `field`: absent means the default, and
/// more than [`MAX_ROTATION_GRACE`] is refused. Zero ends the old secret now.
pub fn parse_rotation_grace(field: &str, grace: Option<Duration>) -> Result<Duration> {
    let grace = grace.unwrap_or(DEFAULT_ROTATION_GRACE);
    if grace > MAX_ROTATION_GRACE {
        return Err(Error::invalid(field, "must be at most 7 days"));
    }
    Ok(grace)
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

    #[test]
    fn rotation_grace_defaults_and_is_bounded() {
        assert_eq!(
            parse_rotation_grace("grace_period", None).expect("default"),
            DEFAULT_ROTATION_GRACE
        );
        assert_eq!(
            parse_rotation_grace("grace_period", Some(Duration::ZERO)).expect("zero"),
            Duration::ZERO
        );
        assert!(parse_rotation_grace("grace_period", Some(MAX_ROTATION_GRACE)).is_ok());
        let err = parse_rotation_grace(
            "grace_period",
            Some(MAX_ROTATION_GRACE + Duration::from_secs(1)),
        )
        .expect_err("too long");
        assert!(err.to_string().starts_with("grace_period: "), "{err}");
    }
}
