//! Paging of list calls: `page_size` plus an opaque `page_token` that carries
//! the sort key of the last item returned (keyset paging, so pages stay stable
//! while rows are added).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u64,
    /// The sort key after which this page starts.
    pub after: Option<String>,
}

impl PageRequest {
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            1..=1000 => page_size as u64,
            _ => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
                ));
            }
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::invalid("page_token", "is not a token this server issued"))?;
            let key = String::from_utf8(bytes)
                .map_err(|_| Error::invalid("page_token", "is not a token this server issued"))?;
            Some(key)
        };
        Ok(PageRequest { size, after })
    }

    /// Asks storage for one row more than the page holds, to learn whether a
    /// next page exists without a count query.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Cuts the fetched rows to the page and makes the token of the next one.
    /// Keys are ids and names, never empty: an empty key would make an empty
    /// token, which says there is no next page.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let page_size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() > page_size {
            rows.truncate(page_size);
            let token = rows
                .last()
                .map(|row| URL_SAFE_NO_PAD.encode(key(row)))
                .unwrap_or_default();
            (rows, token)
        } else {
            (rows, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_input_is_refused() {
        let page = PageRequest::parse(2, "").expect("valid");
        let (rows, token) = page.finish(vec!["a", "b", "c"], |row| row.to_string());
        assert_eq!(rows, vec!["a", "b"]);
        let next = PageRequest::parse(2, &token).expect("own token parses");
        assert_eq!(next.after.as_deref(), Some("b"));
        assert!(PageRequest::parse(1001, "").is_err());
        assert!(PageRequest::parse(-1, "").is_err());
        assert!(PageRequest::parse(10, "!!!").is_err());
        let (_, last) = page.finish(vec!["a"], |row| row.to_string());
        assert_eq!(last, "");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn assert_refused_as_page_token(token: &str, error: Error) {
            let message = error.to_string();
            assert!(
                matches!(error, Error::InvalidArgument(_)),
                "{token:?}: {message}"
            );
            assert!(message.starts_with("page_token: "), "{token:?}: {message}");
        }

        proptest! {
            #[test]
            fn issued_tokens_round_trip(
                key in any::<String>().prop_filter("keys are never empty", |key| !key.is_empty()),
                size in 1..=50i32,
            ) {
                let page = PageRequest::parse(size, "").expect("valid size");
                let fetched = vec![key.clone(); page.fetch_limit() as usize];
                let (rows, token) = page.finish(fetched, Clone::clone);
                prop_assert_eq!(rows.len(), size as usize);
                // URL-safe: the token survives query strings and JSON untouched.
                prop_assert!(
                    !token.is_empty()
                        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "{:?}", token
                );
                let next = PageRequest::parse(size, &token).expect("own token parses");
                prop_assert_eq!(next.after, Some(key));
                prop_assert_eq!(next.size, size as u64);
            }

            #[test]
            fn a_short_page_has_no_next_token(
                keys in proptest::collection::vec(any::<String>(), 0..=20),
                extra in 0..5i32,
            ) {
                let size = keys.len() as i32 + extra;
                prop_assume!(size >= 1);
                let page = PageRequest::parse(size, "").expect("valid size");
                let (rows, token) = page.finish(keys.clone(), Clone::clone);
                prop_assert_eq!(rows, keys);
                prop_assert_eq!(token, "");
            }

            #[test]
            fn any_token_parses_or_is_refused_naming_page_token(
                token in prop_oneof![any::<String>(), "[A-Za-z0-9_=+/-]{0,40}"],
            ) {
                match PageRequest::parse(10, &token) {
                    // Only what this server could have issued is accepted.
                    Ok(page) => match page.after {
                        None => prop_assert!(token.is_empty()),
                        Some(key) => prop_assert_eq!(URL_SAFE_NO_PAD.encode(key), token),
                    },
                    Err(error) => assert_refused_as_page_token(&token, error),
                }
            }

            #[test]
            fn tokens_of_any_bytes_parse_exactly_when_they_are_text(
                bytes in proptest::collection::vec(any::<u8>(), 1..64),
            ) {
                let token = URL_SAFE_NO_PAD.encode(&bytes);
                match (PageRequest::parse(10, &token), String::from_utf8(bytes)) {
                    (Ok(page), Ok(text)) => prop_assert_eq!(page.after, Some(text)),
                    (Err(error), Err(_)) => assert_refused_as_page_token(&token, error),
                    (parsed, text) => prop_assert!(false, "{:?} vs {:?}", parsed, text),
                }
            }

            #[test]
            fn page_sizes_outside_0_to_1000_are_refused(
                page_size in prop_oneof![any::<i32>(), -2..=2i32, 998..=1002i32],
            ) {
                match PageRequest::parse(page_size, "") {
                    Ok(page) => {
                        prop_assert!((0..=1000).contains(&page_size));
                        let expected = if page_size == 0 { DEFAULT_PAGE_SIZE } else { page_size as u64 };
                        prop_assert_eq!(page.size, expected);
                    }
                    Err(error) => {
                        prop_assert!(!(0..=1000).contains(&page_size));
                        prop_assert!(matches!(error, Error::InvalidArgument(_)));
                        prop_assert!(error.to_string().starts_with("page_size: "), "{}", error);
                    }
                }
            }
        }
    }
}
