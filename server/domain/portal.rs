//! The consumer portal's rules: how long a session may last, and when its
//! one-time link may still be exchanged for it.

use std::time::Duration;

use crate::error::{Error, Result};

/// What CreatePortalSession needs of the portal's configuration.
#[derive(Debug, Clone)]
pub struct PortalLinks {
    /// Where customers reach the portal, without a trailing `/`.
    pub public_url: String,
    /// The longest session (`--portal-max-session`).
    pub max_session: Duration,
}

/// A session lasts this long unless the provider asks otherwise.
pub const DEFAULT_SESSION: Duration = Duration::from_secs(3600);
/// Shorter sessions would expire while the link is still being opened.
pub const MIN_SESSION: Duration = Duration::from_secs(60);

/// The lifetime of a new session: `requested` (or the default) within
/// [`MIN_SESSION`] and `max`; `field` names the request field in errors.
pub fn session_lifetime(
    field: &str,
    requested: Option<Duration>,
    max: Duration,
) -> Result<Duration> {
    let lifetime = requested.unwrap_or(DEFAULT_SESSION.min(max));
    if lifetime < MIN_SESSION {
        return Err(Error::invalid(field, "must be at least 1m"));
    }
    if lifetime > max {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {} (--portal-max-session)",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(lifetime)
}

/// A link's secret: 32 random bytes, URL-safe base64. Only its hash is
/// stored (`api_key::hash_token`).
pub fn new_link_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a link does not open its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Links work once.
    Used,
    Revoked,
    Expired,
}

impl Refusal {
    /// What the person holding the link is told.
    pub fn explain(self) -> &'static str {
        match self {
            Refusal::Used => "This link was already used: each link opens the portal once.",
            Refusal::Revoked => "This session was ended by the provider.",
            Refusal::Expired => "This link has expired.",
        }
    }
}

/// Whether a link (used at `used_at`, if ever) to a session revoked at
/// `revoked_at` and expiring at `expires_at` may be exchanged at `now`.
pub fn may_exchange(
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    now: i64,
) -> std::result::Result<(), Refusal> {
    if revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    if crate::domain::api_key::is_expired(expires_at, now) {
        return Err(Refusal::Expired);
    }
    if used_at.is_some() {
        return Err(Refusal::Used);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_last_an_hour_unless_asked_within_bounds() {
        let max = Duration::from_secs(12 * 3600);
        assert_eq!(
            session_lifetime("lifetime", None, max).expect("default"),
            DEFAULT_SESSION
        );
        assert_eq!(
            session_lifetime("lifetime", None, Duration::from_secs(600)).expect("a short maximum"),
            Duration::from_secs(600)
        );
        assert!(session_lifetime("lifetime", Some(Duration::from_secs(59)), max).is_err());
        assert!(session_lifetime("lifetime", Some(max), max).is_ok());
        let error = session_lifetime("lifetime", Some(max + Duration::from_secs(1)), max)
            .expect_err("beyond the maximum");
        assert!(
            error.to_string().contains("--portal-max-session"),
            "{error}"
        );
    }

    #[test]
    fn a_link_opens_its_session_once_while_it_lives() {
        assert_eq!(may_exchange(None, None, Some(100), 99), Ok(()));
        assert_eq!(
            may_exchange(Some(50), None, Some(100), 99),
            Err(Refusal::Used)
        );
        assert_eq!(
            may_exchange(None, Some(50), Some(100), 99),
            Err(Refusal::Revoked)
        );
        assert_eq!(
            may_exchange(None, None, Some(100), 100),
            Err(Refusal::Expired)
        );
    }
}
