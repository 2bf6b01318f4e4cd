//! An endpoint's health on its page: a small chart of the last 24 hours
//! (attempts per bucket, failed stacked on succeeded, and the average
//! latency as a line), the success rate, the current failure streak and,
//! when it is disabled, why. Drawn as inline SVG by the server: no script,
//! nothing from elsewhere; the numbers are in a table too, for screen
//! readers and for anyone who wants them exact.

use super::pages::{self, escape};
use crate::proto;

/// The chart's drawing box, in SVG user units.
const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 60.0;

/// The health section of an endpoint's page.
pub fn section(endpoint: &proto::Endpoint, health: &proto::GetEndpointHealthResponse) -> String {
    format!(
        "<section aria-labelledby=\"health\"><h2 id=\"health\">Health</h2>{status}{chart}{table}</section>",
        status = status_line(endpoint, health),
        chart = chart(health),
        table = table(health),
    )
}

/// The success rate as people read it: `97.5%`, `100%`; `-` without
/// attempts.
pub fn success_rate(succeeded: u64, attempts: u64) -> String {
    if attempts == 0 {
        return "-".to_owned();
    }
    let rate = succeeded as f64 * 100.0 / attempts as f64;
    let text = format!("{rate:.1}");
    format!("{}%", text.trim_end_matches(".0"))
}

fn status_line(endpoint: &proto::Endpoint, health: &proto::GetEndpointHealthResponse) -> String {
    let mut lines = Vec::new();
    if !endpoint.enabled {
        lines.push(format!(
            "<p class=\"error\" id=\"disabled-reason\"><strong>Disabled</strong>: {}. \
             Deliveries wait until you enable it again.</p>",
            escape(if health.disabled_reason.is_empty() {
                "no reason recorded"
            } else {
                &health.disabled_reason
            })
        ));
    }
    lines.push(format!(
        "<p id=\"success-rate\">Success rate over the last 24 hours: <strong>{rate}</strong> \
         ({succeeded} of {attempts} attempts), average {average} ms.</p>",
        rate = success_rate(health.succeeded, health.attempts),
        succeeded = health.succeeded,
        attempts = health.attempts,
        average = health.average_duration_ms,
    ));
    if health.failure_streak > 0 {
        let last = if health.last_failure_status_code != 0 {
            format!("HTTP {}", health.last_failure_status_code)
        } else {
            health.last_failure_error_class.clone()
        };
        let streak = if health.failure_streak >= 10_000 {
            "10,000 or more".to_owned()
        } else {
            health.failure_streak.to_string()
        };
        lines.push(format!(
            "<p class=\"bad\" id=\"failure-streak\">Failing: {streak} failed attempt{plural} in a row \
             since {since}; the last one got {last} at {at}.</p>",
            plural = if health.failure_streak == 1 { "" } else { "s" },
            since = pages::time(
                health
                    .failing_since
                    .as_ref()
                    .or(health.last_success_at.as_ref())
            ),
            last = escape(&last),
            at = pages::time(health.last_failure_at.as_ref()),
        ));
    } else if health.attempts > 0 || health.last_success_at.is_some() {
        lines.push(format!(
            "<p class=\"ok\" id=\"failure-streak\">No failures since the last success ({}).</p>",
            pages::time(health.last_success_at.as_ref())
        ));
    }
    lines.concat()
}

/// Bars of attempts per bucket (succeeded below, failed above) and the
/// average latency as a line over them.
fn chart(health: &proto::GetEndpointHealthResponse) -> String {
    let buckets = &health.buckets;
    if buckets.is_empty() {
        return String::new();
    }
    let slot = WIDTH / buckets.len() as f64;
    let most = buckets
        .iter()
        .map(|bucket| bucket.attempts)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slowest = buckets
        .iter()
        .map(|bucket| bucket.average_duration_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut bars = String::new();
    let mut line = Vec::new();
    for (index, bucket) in buckets.iter().enumerate() {
        let x = index as f64 * slot + slot * 0.1;
        let width = slot * 0.8;
        let ok = bucket.succeeded as f64 / most * HEIGHT;
        let bad = bucket.failed as f64 / most * HEIGHT;
        let label = format!(
            "{}: {} attempts, {} failed, average {} ms",
            pages::when(bucket.start.as_ref()),
            bucket.attempts,
            bucket.failed,
            bucket.average_duration_ms
        );
        bars.push_str(&format!(
            "<g><title>{label}</title>\
             <rect class=\"ok\" x=\"{x:.1}\" y=\"{y_ok:.1}\" width=\"{width:.1}\" height=\"{ok:.1}\"/>\
             <rect class=\"bad\" x=\"{x:.1}\" y=\"{y_bad:.1}\" width=\"{width:.1}\" height=\"{bad:.1}\"/></g>",
            label = escape(&label),
            y_ok = HEIGHT - ok,
            y_bad = HEIGHT - ok - bad,
        ));
        if bucket.attempts > 0 {
            line.push(format!(
                "{:.1},{:.1}",
                x + width / 2.0,
                HEIGHT - bucket.average_duration_ms as f64 / slowest * HEIGHT
            ));
        }
    }
    let latency = if line.len() > 1 {
        format!(
            "<polyline class=\"lat\" vector-effect=\"non-scaling-stroke\" points=\"{}\"/>",
            line.join(" ")
        )
    } else {
        String::new()
    };
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-labelledby=\"chart-title\"><title id=\"chart-title\">Attempts per hour over the \
         last 24 hours (succeeded in green, failed in red) and average latency (line; slowest \
         {slowest} ms)</title>{bars}{latency}</svg>\
         <p class=\"lead\"><small>Bars: attempts per hour, failed on top. Line: average latency \
         (top = {slowest} ms).</small></p>",
        slowest = slowest as u64,
    )
}

/// The chart's numbers, for reading exactly.
fn table(health: &proto::GetEndpointHealthResponse) -> String {
    let rows: String = health
        .buckets
        .iter()
        .filter(|bucket| bucket.attempts > 0)
        .map(|bucket| {
            format!(
                "<tr><td>{}</td><td>{}</td><td class=\"wide\">{}</td><td>{}</td><td>{} ms</td><td class=\"wide\">{} ms</td></tr>",
                pages::time(bucket.start.as_ref()),
                bucket.attempts,
                bucket.succeeded,
                bucket.failed,
                bucket.average_duration_ms,
                bucket.max_duration_ms,
            )
        })
        .collect();
    if rows.is_empty() {
        return "<p class=\"empty\">No attempts in the last 24 hours.</p>".to_owned();
    }
    format!(
        "<details><summary>The numbers</summary><div class=\"scroll\"><table><thead><tr>\
         <th scope=\"col\">From</th><th scope=\"col\">Attempts</th><th scope=\"col\" class=\"wide\">Succeeded</th>\
         <th scope=\"col\">Failed</th><th scope=\"col\">Average</th><th scope=\"col\" class=\"wide\">Longest</th>\
         </tr></thead><tbody>{rows}</tbody></table></div></details>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_plainly() {
        assert_eq!(success_rate(0, 0), "-");
        assert_eq!(success_rate(3, 3), "100%");
        assert_eq!(success_rate(39, 40), "97.5%");
        assert_eq!(success_rate(1, 3), "33.3%");
    }

    #[test]
    fn the_chart_stacks_failed_on_succeeded() {
        let bucket = |attempts, failed, average| proto::HealthBucket {
            attempts,
            succeeded: attempts - failed,
            failed,
            average_duration_ms: average,
            ..Default::default()
        };
        let health = proto::GetEndpointHealthResponse {
            buckets: vec![bucket(0, 0, 0), bucket(4, 1, 10), bucket(2, 2, 20)],
            ..Default::default()
        };
        let svg = chart(&health);
        // The busiest bucket fills the height: 3 succeeded of 4 is 45 units.
        assert!(
            svg.contains("y=\"15.0\" width=\"64.0\" height=\"45.0\""),
            "{svg}"
        );
        // Its failed one sits on top (15 units), the other's two fill half.
        assert!(
            svg.contains("y=\"0.0\" width=\"64.0\" height=\"15.0\""),
            "{svg}"
        );
        assert!(
            svg.contains("y=\"30.0\" width=\"64.0\" height=\"30.0\""),
            "{svg}"
        );
        // The latency line joins the buckets with attempts only.
        assert!(svg.contains("points=\"120.0,30.0 200.0,0.0\""), "{svg}");
    }
}
