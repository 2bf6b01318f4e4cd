//! What the fuzz targets share: how an input splits into fields.
//!
//! Inputs are text lines rather than `arbitrary` structures so that seed
//! corpora can be written by hand, read in review, and so that a crash file
//! shows the request that caused it.

use std::borrow::Cow;

/// The first `count` lines of `data` (without their `\n`) and what follows
/// them. Missing lines are empty, so every input is usable.
pub fn lines(data: &[u8], count: usize) -> (Vec<Cow<'_, str>>, &[u8]) {
    let mut fields = Vec::with_capacity(count);
    let mut rest = data;
    for _ in 0..count {
        let (line, after) = match rest.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        fields.push(String::from_utf8_lossy(line));
        rest = after;
    }
    (fields, rest)
}

/// FNV-1a of the input: choices that no line spells out (an id, a position
/// to mutate) still follow the input, so a crash file replays exactly.
pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
