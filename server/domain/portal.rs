//! The consumer portal's rules: how long a session may last, and when its
//! one-time link may still be exchanged for it.

use std::time::Duration;

use crate::error::{Error, Result};

/// What CreatePortalSession and the portal's pages hand out: links, and
/// the address of the API.
#[derive(Debug, Clone)]
pub struct PortalLinks {
    /// Where customers reach the portal, without a trailing `/`.
    pub public_url: String,
    /// The longest session (`--portal-max-session`).
    pub max_session: Duration,
    /// Where customers reach the gRPC API (`--portal-grpc-url`), for the
    /// `herald listen` command the portal shows.
    pub grpc_url: String,
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

/// How the portal presents itself and who may frame it: the provider's
/// brand (`--portal-name`, `--portal-logo-url`, `--portal-accent`) and
/// `--portal-frame-ancestors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalLook {
    pub name: String,
    /// An `https://` (or `http://`) image URL; its origin is the one other
    /// place the Content Security Policy lets the page load from.
    pub logo_url: Option<url::Url>,
    /// A CSS colour, `#rgb` or `#rrggbb`.
    pub accent: String,
    /// Origins that may embed the portal in a frame; empty: none may.
    pub frame_ancestors: Vec<String>,
}

impl Default for PortalLook {
    fn default() -> Self {
        PortalLook {
            name: "Webhooks".to_owned(),
            logo_url: None,
            accent: "#3b5bdb".to_owned(),
            frame_ancestors: Vec::new(),
        }
    }
}

impl PortalLook {
    /// Checks the flags' values; errors name the flag and the rule. They end
    /// up in a Content-Security-Policy header and a stylesheet, so nothing
    /// beyond the strict shapes below is accepted.
    pub fn parse(
        name: &str,
        logo_url: Option<&str>,
        accent: &str,
        frame_ancestors: &[String],
    ) -> std::result::Result<PortalLook, String> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err("--portal-name must be 1 to 100 characters".to_owned());
        }
        let logo_url = match logo_url.map(str::trim).filter(|url| !url.is_empty()) {
            None => None,
            Some(raw) => {
                let url = url::Url::parse(raw)
                    .map_err(|err| format!("--portal-logo-url {raw:?} is not a URL: {err}"))?;
                if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                    return Err(format!(
                        "--portal-logo-url {raw:?} must be an https:// (or http://) URL"
                    ));
                }
                Some(url)
            }
        };
        if !is_hex_colour(accent) {
            return Err(format!(
                "--portal-accent {accent:?} must be a hex colour such as #3b5bdb"
            ));
        }
        let mut ancestors = Vec::new();
        for raw in frame_ancestors
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
        {
            ancestors.push(frame_ancestor(raw)?);
        }
        Ok(PortalLook {
            name: name.to_owned(),
            logo_url,
            accent: accent.to_ascii_lowercase(),
            frame_ancestors: ancestors,
        })
    }

    /// Whether another site's page may frame the portal (and so its cookie
    /// must be sent in a third-party context).
    pub fn embeddable(&self) -> bool {
        !self.frame_ancestors.is_empty()
    }
}

fn is_hex_colour(text: &str) -> bool {
    text.strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// One `--portal-frame-ancestors` origin: `https://host[:port]` (or
/// `http://`), nothing else (no paths, wildcards or keywords), in the form
/// a CSP source expression takes.
fn frame_ancestor(raw: &str) -> std::result::Result<String, String> {
    let refuse = || {
        format!(
            "--portal-frame-ancestors {raw:?} must be an origin such as https://dashboard.example.com"
        )
    };
    let url = url::Url::parse(raw).map_err(|_| refuse())?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || raw.contains('*')
    {
        return Err(refuse());
    }
    Ok(url.origin().ascii_serialization())
}

/// The token a session's forms carry: it proves a request came from a page
/// the portal rendered for that session (a cross-site page cannot read
/// it). Derived from the session's token, so nothing more is stored; one
/// way, so it reveals nothing of the token.
pub fn form_token(session_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("herald-portal-form:{session_token}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether a form's token is the session's (in time that does not depend
/// on where they differ).
pub fn form_token_matches(session_token: &str, presented: &str) -> bool {
    let expected = form_token(session_token);
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_look_takes_only_strict_shapes() {
        let look = PortalLook::parse(
            " Acme ",
            Some("https://cdn.acme.example/logo.svg"),
            "#FF8800",
            &["https://dash.acme.example".to_owned(), " ".to_owned()],
        )
        .expect("valid flags");
        assert_eq!(look.name, "Acme");
        assert_eq!(look.accent, "#ff8800");
        assert_eq!(look.frame_ancestors, vec!["https://dash.acme.example"]);
        assert!(look.embeddable());
        for accent in ["red", "#12345", "#ggg", "#123;}", ""] {
            let error = PortalLook::parse("x", None, accent, &[]).expect_err(accent);
            assert!(error.contains("--portal-accent"), "{error}");
        }
        for origin in [
            "*",
            "https://*.acme.example",
            "https://acme.example/path",
            "'self'",
            "javascript:alert(1)",
            "https://acme.example; script-src *",
        ] {
            let error =
                PortalLook::parse("x", None, "#fff", &[origin.to_owned()]).expect_err(origin);
            assert!(error.contains("--portal-frame-ancestors"), "{error}");
        }
        for logo in [
            "javascript:alert(1)",
            "data:image/png;base64,AA",
            "logo.png",
        ] {
            let error = PortalLook::parse("x", Some(logo), "#fff", &[]).expect_err(logo);
            assert!(error.contains("--portal-logo-url"), "{error}");
        }
        assert!(PortalLook::parse("", None, "#fff", &[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn only_the_sessions_own_form_token_matches(token in "[a-zA-Z0-9_]{10,60}", other in "[a-zA-Z0-9_]{10,60}") {
            proptest::prop_assert!(form_token_matches(&token, &form_token(&token)));
            proptest::prop_assert_eq!(form_token_matches(&token, &form_token(&other)), token == other);
            proptest::prop_assert!(!form_token_matches(&token, &token));
            proptest::prop_assert!(!form_token_matches(&token, ""));
        }
    }

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
