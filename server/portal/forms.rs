//! What the portal's forms send, read into API requests. The parsing rules
//! (headers as `name: value` lines, lists, numbers, times) are pure
//! functions: the API checks the values themselves, with the same rules
//! and messages as for every other client.

use std::collections::BTreeMap;

/// A submitted `application/x-www-form-urlencoded` body (or query string).
/// Names may repeat (checkboxes).
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// Larger bodies are not the portal's forms.
pub const MAX_FORM_BYTES: usize = 512 * 1024;

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form {
            pairs: url::form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.trim())
    }

    /// The first value of `name` as sent (a payload keeps its whitespace).
    pub fn raw(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }
}

/// Custom headers typed one per line as `name: value`; blank lines are
/// skipped. Names are checked by the API (reserved names, duplicates).
pub fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut headers = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "headers: line {} must be `name: value`, not {line:?}",
                number + 1
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(format!("headers: line {} has no name", number + 1));
        }
        if headers
            .insert(name.clone(), value.trim().to_owned())
            .is_some()
        {
            return Err(format!("headers: {name:?} is given twice"));
        }
    }
    Ok(headers)
}

/// Headers as the form shows them (values are always `[redacted]` when
/// read back; sending that back keeps the stored value).
pub fn headers_text(headers: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = headers.iter().collect();
    sorted
        .into_iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Event-type patterns typed as a list separated by commas, spaces or
/// lines.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A whole number the form calls `field`; empty is `0` (no limit).
pub fn parse_count(field: &str, text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Ok(0);
    }
    text.parse()
        .map_err(|_| format!("{field}: must be a whole number from 0 to 4294967295, not {text:?}"))
}

/// A time typed in a form: RFC 3339 (`2026-12-01T10:30:00Z`) or the
/// `datetime-local` input's `2026-12-01T10:30` (read as UTC, as the form
/// says); milliseconds since the epoch.
pub fn parse_time(field: &str, text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let with_zone = if text.ends_with('Z') || text.contains('+') {
        text.to_owned()
    } else if text.len() == 16 {
        format!("{text}:00Z")
    } else {
        format!("{text}Z")
    };
    let time = humantime::parse_rfc3339_weak(&with_zone).map_err(|_| {
        format!("{field}: must be a UTC time such as 2026-12-01T10:30, not {text:?}")
    })?;
    let millis = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{field}: must be after 1970"))?
        .as_millis();
    i64::try_from(millis)
        .map(Some)
        .map_err(|_| format!("{field}: is too far in the future"))
}

/// A delivery status as the forms name it: empty for any, else
/// `pending`, `succeeded` or `failed`; `None` for anything else.
pub fn delivery_status(text: &str) -> Option<crate::proto::DeliveryStatus> {
    use crate::proto::DeliveryStatus;
    Some(match text {
        "" => DeliveryStatus::Unspecified,
        "pending" => DeliveryStatus::Pending,
        "succeeded" => DeliveryStatus::Succeeded,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    })
}

/// How far back a preset period (`1h`, `24h`, `7d`, `30d`) reaches, in
/// milliseconds; `None` for anything else (all time).
pub fn period_millis(period: &str) -> Option<i64> {
    let hours = match period {
        "1h" => 1,
        "24h" => 24,
        "7d" => 24 * 7,
        "30d" => 24 * 30,
        _ => return None,
    };
    Some(hours * 3_600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_and_encoding_are_read() {
        let form = Form::parse(b"event_types=a.b&event_types=c.d&event_types=&url=https%3A%2F%2Fx.example%2Fh+1&payload=+%7B%7D+");
        assert_eq!(form.all("event_types"), vec!["a.b", "c.d"]);
        assert_eq!(form.get("url"), "https://x.example/h 1");
        assert_eq!(form.raw("payload"), " {} ");
        assert_eq!(form.get("missing"), "");
    }

    #[test]
    fn header_lines_become_a_map() {
        let headers = parse_headers("X-Api-Key: abc:def\n\n  x-team :  blue ").expect("valid");
        assert_eq!(
            headers.get("x-api-key").map(String::as_str),
            Some("abc:def")
        );
        assert_eq!(headers.get("x-team").map(String::as_str), Some("blue"));
        assert!(
            parse_headers("no colon")
                .expect_err("no colon")
                .contains("line 1")
        );
        assert!(parse_headers(": value").is_err());
        assert!(
            parse_headers("a: 1\nA: 2")
                .expect_err("twice")
                .contains("twice")
        );
        assert!(parse_headers("").expect("empty").is_empty());
    }

    #[test]
    fn shown_headers_read_back_the_same() {
        let shown: std::collections::HashMap<String, String> = [
            ("x-b".to_owned(), "[redacted]".to_owned()),
            ("x-a".to_owned(), "[redacted]".to_owned()),
        ]
        .into();
        let text = headers_text(&shown);
        assert_eq!(text, "x-a: [redacted]\nx-b: [redacted]");
        assert_eq!(parse_headers(&text).expect("round trip").len(), 2);
    }

    #[test]
    fn lists_numbers_and_times() {
        assert_eq!(
            parse_list("invoice.*, order.paid\nuser.created"),
            vec!["invoice.*", "order.paid", "user.created"]
        );
        assert_eq!(parse_count("rate_limit", "").expect("empty"), 0);
        assert_eq!(parse_count("rate_limit", "25").expect("number"), 25);
        assert!(
            parse_count("rate_limit", "-1")
                .expect_err("negative")
                .contains("rate_limit")
        );
        assert_eq!(
            parse_time("since", "1970-01-01T00:01").expect("local form"),
            Some(60_000)
        );
        assert_eq!(
            parse_time("since", "1970-01-01T00:00:01Z").expect("rfc 3339"),
            Some(1_000)
        );
        assert_eq!(parse_time("since", "").expect("empty"), None);
        assert!(
            parse_time("since", "yesterday")
                .expect_err("words")
                .contains("since")
        );
        assert_eq!(
            delivery_status("failed"),
            Some(crate::proto::DeliveryStatus::Failed)
        );
        assert_eq!(
            delivery_status(""),
            Some(crate::proto::DeliveryStatus::Unspecified)
        );
        assert_eq!(delivery_status("lost"), None);
        assert_eq!(period_millis("24h"), Some(86_400_000));
        assert_eq!(period_millis("all"), None);
    }
}
