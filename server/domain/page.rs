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
}
