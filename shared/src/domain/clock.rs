//! The one clock of the application, and the one way it writes a time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the time unit of the store, the locks and the events.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix ms as RFC 3339 UTC to the second (`2026-11-27T11:33:26Z`), as events and APIs carry
/// times.
pub fn rfc3339_utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Unix ms of an RFC 3339 time.
pub(crate) fn rfc3339_ms(text: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_and_read_as_rfc3339_utc() {
        assert_eq!(rfc3339_utc(1_764_243_206_000), "2025-11-27T11:33:26Z");
        assert_eq!(rfc3339_ms("2025-11-27T11:33:26Z"), Some(1_764_243_206_000));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}
