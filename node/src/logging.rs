//! Logging: tracing to stderr, as text or as one JSON object per line (`veil --log-format json`, or the
//! `VEIL_LOG_FORMAT=json` environment variable, which the processes a command starts inherit). Nothing
//! logged anywhere in this crate contains a share, a key, an input or an output value: logs name jobs,
//! parties, keys' public halves and sizes only.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that selects the log format (`json`; anything else: text).
pub const FORMAT_VAR: &str = "VEIL_LOG_FORMAT";

/// Installs a stderr subscriber at `level` (overridden by the `VEIL_LOG` environment variable), in the
/// format `VEIL_LOG_FORMAT` names. Does nothing if a subscriber is already installed.
pub fn init(level: &str) {
    let level = std::env::var("VEIL_LOG").unwrap_or_else(|_| level.to_string());
    let filter = level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = if std::env::var(FORMAT_VAR).is_ok_and(|f| f == "json") {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.try_init()
    };
}

/// Formats each event as one JSON object: `timestamp_ms`, `level`, `target`, `message`, `fields` (the
/// event's other fields) and `spans` (the names of the spans it is in, outermost first).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        event.record(&mut Collect(&mut fields));
        let meta = event.metadata();
        let mut line = Map::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        line.insert("timestamp_ms".into(), now_ms.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or(Value::Null),
        );
        line.insert("fields".into(), Value::Object(fields));
        let spans: Vec<Value> = ctx
            .event_scope()
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| Value::from(span.name()))
                    .collect()
            })
            .unwrap_or_default();
        line.insert("spans".into(), Value::Array(spans));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields as JSON values.
struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
