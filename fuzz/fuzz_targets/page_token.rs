//! Paging of list calls: `page_size` and the opaque `page_token`.
//!
//! Input lines: 1 a page size, 2 a page token as a caller might send it; the
//! rest is the sort key of the last row of a page, for the round trip.
//!
//! Invariants:
//! - nothing panics, and a refusal names `page_size` or `page_token`;
//! - sizes 0 to 1000 are accepted (0 meaning the default), others refused;
//! - a token is accepted only if it is the one this server would issue for
//!   the key it decodes to: URL-safe base64 of UTF-8, spelled canonically;
//! - a full page's token reads back as its last key, and a page that is not
//!   full has no token.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::domain::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest};
use herald_fuzz::{fnv, lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (fields, rest) = lines(data, 2);
    let page_size = fields[0].trim().parse::<i32>().unwrap_or(fnv(data) as i32);
    check_any(page_size, &fields[1]);
    check_any(0, &fields[1]);

    let key = String::from_utf8_lossy(rest);
    let key = if key.is_empty() { "k" } else { key.as_ref() };
    let max = i32::try_from(MAX_PAGE_SIZE).unwrap_or(i32::MAX);
    round_trip(page_size.rem_euclid(max) + 1, key);
});

fn check_any(page_size: i32, token: &str) {
    let in_range = u64::try_from(page_size).is_ok_and(|size| size <= MAX_PAGE_SIZE);
    match PageRequest::parse(page_size, token) {
        Ok(page) => {
            assert!(in_range, "page_size {page_size} accepted");
            let expected = if page_size == 0 {
                DEFAULT_PAGE_SIZE
            } else {
                u64::from(page_size.unsigned_abs())
            };
            assert_eq!(page.size, expected);
            assert_eq!(page.fetch_limit(), expected + 1);
            match page.after {
                None => assert!(token.is_empty(), "{token:?} read as no token"),
                Some(key) => assert_eq!(URL_SAFE_NO_PAD.encode(&key), token, "read as {key:?}"),
            }
        }
        Err(error) => {
            let message = error.to_string();
            let field = if in_range {
                "page_token: "
            } else {
                "page_size: "
            };
            assert!(
                message.starts_with(field),
                "{page_size}, {token:?}: {message}"
            );
            // Nothing of the token is echoed back.
            assert!(message.len() < 128, "{message}");
        }
    }
}

fn round_trip(size: i32, key: &str) {
    let page = PageRequest::parse(size, "")
        .unwrap_or_else(|error| panic!("page_size {size} refused: {error}"));
    let fetched: Vec<u64> = (0..page.fetch_limit()).collect();
    let (rows, token) = page.finish(fetched, |_| key.to_owned());
    assert_eq!(rows.len() as u64, page.size);
    assert!(
        !token.is_empty()
            && token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
        "{token:?} is not URL-safe"
    );
    let next = PageRequest::parse(size, &token)
        .unwrap_or_else(|error| panic!("own token {token:?} refused: {error}"));
    assert_eq!(next.after.as_deref(), Some(key));

    let short: Vec<u64> = (0..page.size).collect();
    let (rows, token) = page.finish(short, |_| key.to_owned());
    assert_eq!(rows.len() as u64, page.size);
    assert_eq!(token, "", "a page that is not full has a next page");
}
