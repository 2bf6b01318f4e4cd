//! The idempotency rule: a publish that carries a key already used for the
//! same consumer within 24 hours creates nothing and is answered with the
//! first event; the same key for a different request (event type, payload
//! or callback URL) is refused, so that a caller's bug cannot silently drop
//! an event; after 24 hours the key is free again.

/// How long a key holds.
pub const WINDOW_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// An earlier use of a key: what it was used for, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlierUse<'a> {
    /// A digest of the request it was used for.
    pub request_hash: &'a str,
    /// Epoch ms.
    pub at: i64,
}

/// What a publish with a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never used (or not within the window): a new event.
    New,
    /// Used longer ago than the window: a new event, and the old use is to
    /// be forgotten so that the key can be recorded again.
    Expired,
    /// The same request again: answer with the first event.
    Duplicate,
    /// Another request under the same key within the window: refuse.
    Conflict,
}

pub fn judge(earlier: Option<EarlierUse<'_>>, request_hash: &str, now: i64) -> Verdict {
    match earlier {
        None => Verdict::New,
        Some(earlier) if earlier.at < now.saturating_sub(WINDOW_MILLIS) => Verdict::Expired,
        Some(earlier) if earlier.request_hash == request_hash => Verdict::Duplicate,
        Some(_) => Verdict::Conflict,
    }
}

impl Verdict {
    /// Whether the publish stores a new event.
    pub fn is_new(self) -> bool {
        matches!(self, Verdict::New | Verdict::Expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rule_by_example() {
        let now = 10 * WINDOW_MILLIS;
        let recent = |hash| {
            Some(EarlierUse {
                request_hash: hash,
                at: now - 1000,
            })
        };
        assert_eq!(judge(None, "a", now), Verdict::New);
        assert_eq!(judge(recent("a"), "a", now), Verdict::Duplicate);
        assert_eq!(judge(recent("b"), "a", now), Verdict::Conflict);
        let old = Some(EarlierUse {
            request_hash: "b",
            at: now - WINDOW_MILLIS - 1,
        });
        assert_eq!(judge(old, "a", now), Verdict::Expired);
        let edge = Some(EarlierUse {
            request_hash: "a",
            at: now - WINDOW_MILLIS,
        });
        assert_eq!(
            judge(edge, "a", now),
            Verdict::Duplicate,
            "the window's last millisecond holds"
        );
    }

    proptest! {
        #[test]
        fn within_the_window_only_the_same_request_is_answered(
            age in 0i64..WINDOW_MILLIS,
            same in any::<bool>(),
            now in WINDOW_MILLIS..i64::MAX / 2,
        ) {
            let earlier = Some(EarlierUse { request_hash: "h1", at: now - age });
            let verdict = judge(earlier, if same { "h1" } else { "h2" }, now);
            prop_assert_eq!(verdict, if same { Verdict::Duplicate } else { Verdict::Conflict });
            prop_assert!(!verdict.is_new());
        }

        #[test]
        fn after_the_window_every_request_is_new(
            age in WINDOW_MILLIS + 1..WINDOW_MILLIS * 100,
            same in any::<bool>(),
            now in WINDOW_MILLIS * 100..i64::MAX / 2,
        ) {
            let earlier = Some(EarlierUse { request_hash: "h1", at: now - age });
            let verdict = judge(earlier, if same { "h1" } else { "h2" }, now);
            prop_assert_eq!(verdict, Verdict::Expired);
            prop_assert!(verdict.is_new());
        }
    }
}
