//! Logging: JSON lines in Lambda (CloudWatch parses them), readable lines locally; the
//! filter comes from `RUST_LOG`. Initialised once per process.
//!
//! A Lambda line is one flat JSON object: `timestamp`, `level`, `target`, `message`, the
//! event's fields, and the fields of every span it happened in: `function` (the function's
//! span), `requestId` (the runtime's span of each invocation), `streamer` where one is
//! concerned (a poll, a token refresh). Flat, so Logs Insights filters on them directly
//! (`filter requestId = "…"`). Secrets never reach a field: they are [`crate::secret::Secret`]s,
//! which print `[redacted]`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One flat JSON object a line (Lambda: CloudWatch parses them).
    Json,
    /// Readable lines (a terminal, a developer's machine).
    Text,
}

/// Starts logging with `filter` (`RUST_LOG`'s syntax; INFO when it does not parse).
pub fn init(filter: &str, format: LogFormat) {
    // `Targets` (levels per target) rather than `EnvFilter`: the latter's span and field
    // filters bring a regex engine into every function's binary.
    let filter: Targets = filter
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    // The builder's own level (INFO unless set) would cut below the filter: let it pass all.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(std::io::stderr);
    // `try_init` fails only if a subscriber is already set (tests): keep that one.
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(filter)
            .try_init(),
    };
}

/// An error and its causes on one line, the one way every warning and error log writes an
/// error (`error = %error_chain(&e)`). A cause whose text its parent already ends with is
/// not repeated. reqwest errors carry no query strings or bodies here: tokens travel in
/// headers and form bodies, never in URLs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The Lambda line format (see the module's documentation).
struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        if let Some(scope) = ctx.event_scope() {
            // Outermost first, so an inner span's field wins over an outer one of that name.
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut FieldsInto(&mut line));
        let metadata = event.metadata();
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        line.insert("target".into(), Value::from(metadata.target()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields as JSON values.
struct FieldsInto<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsInto<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn a_lambda_line_is_flat_json_with_the_fields_of_its_spans_and_event() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();

        tracing::subscriber::with_default(subscriber, || {
            let function = tracing::info_span!("function", function = "da-poll");
            let _function = function.enter();
            let invocation = tracing::info_span!("Lambda runtime invoke", requestId = "r-1");
            let _invocation = invocation.enter();
            let poll = tracing::info_span!("poll.streamer", streamer = 42);
            let _poll = poll.enter();
            tracing::warn!(new = 3, reason = ?Some("x"), "donations recorded");
        });

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "donations recorded");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["function"], "da-poll");
        assert_eq!(line["requestId"], "r-1");
        assert_eq!(line["streamer"], 42);
        assert_eq!(line["new"], 3);
        assert_eq!(line["reason"], "Some(\"x\")");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}
