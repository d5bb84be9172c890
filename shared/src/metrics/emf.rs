//! CloudWatch Embedded Metric Format: JSON log lines on stdout from which CloudWatch Logs
//! extracts metrics (no API call, no extra permission). Every Lambda function prints one at
//! the end of a scheduled run, or after an HTTP request that changed a figure.
//!
//! Namespace `AvatarTwitchOAuth`, one dimension set `["Stack"]` (the `STACK_NAME` the
//! template gives every function: its alarms select on it). Per function would multiply the
//! custom metrics CloudWatch bills by seven; the top-level `Function` property (no dimension)
//! still tells the records apart in Logs Insights.
//!
//! Counters are sent as the difference since the previous record of the process: CloudWatch
//! sums them (`Sum` over a period is what happened in it). The writer's batch sizes and
//! commit times go out as arrays of samples, at most [`MAX_VALUES`] per metric and record.
//!
//! The realtime bridge (a long-lived process, not a function) prints one
//! [`realtime_record`] a minute: its counters as differences, its gauges (shards, sockets)
//! as values, so with one record per bridge and minute `Sum` over a minute is the total of
//! every bridge and `Maximum` of `PushToEventMsP95` the worst bridge's.

use serde_json::{Map, Value, json};

use super::{Counts, RealtimeStats};

pub(crate) const NAMESPACE: &str = "AvatarTwitchOAuth";

/// EMF takes at most this many values of one metric in one record.
pub const MAX_VALUES: usize = 100;

/// What a record is about.
#[derive(Debug, Clone, Copy)]
pub struct EmfContext<'a> {
    /// The `Stack` dimension's value.
    pub stack: &'a str,
    /// The function's name (a property, not a dimension).
    pub function: &'a str,
    /// Unix ms.
    pub timestamp_ms: i64,
}

/// The metrics a record carries: name, CloudWatch unit, value.
fn counters(delta: &Counts) -> [(&'static str, &'static str, u64); 10] {
    [
        ("Polls", "Count", delta.polls),
        ("PollsSkippedLocked", "Count", delta.polls_skipped_locked),
        ("Donations", "Count", delta.donations),
        ("PollErrors", "Count", delta.poll_errors),
        ("ProviderErrors", "Count", delta.provider_errors),
        ("RateLimitWaits", "Count", delta.rate_limit_waits),
        ("TokenRefreshes", "Count", delta.token_refreshes),
        ("TokenValidations", "Count", delta.token_validations),
        ("TokensRevoked", "Count", delta.tokens_revoked),
        ("NeedReauth", "Count", delta.need_reauth),
    ]
}

/// The record(s) for `delta` and the writer's `samples` (batch size, commit ms): the first
/// carries the counters; a further one per [`MAX_VALUES`] samples beyond the first hundred.
pub fn records(context: &EmfContext<'_>, delta: &Counts, samples: &[(u64, f64)]) -> Vec<String> {
    let mut chunks = samples.chunks(MAX_VALUES);
    let mut lines = Vec::new();
    let mut first = Record::new(context);
    for (name, unit, value) in counters(delta) {
        first.metric(name, unit, json!(value));
    }
    if let Some(chunk) = chunks.next() {
        first.writer_samples(chunk);
    }
    lines.push(first.line());
    for chunk in chunks {
        let mut more = Record::new(context);
        more.writer_samples(chunk);
        lines.push(more.line());
    }
    lines
}

/// One EMF record of a realtime bridge's figures: `RealtimeReconnects`, `RealtimePushes`
/// and `RealtimeStaleFences` since the previous record from the same `stats` (the first:
/// since the start), `RealtimeShardsHeld`, `RealtimeSocketsConnected` and
/// `RealtimeSocketsSubscribed` as they are now, and `PushToEventMsP95` once a push has
/// been measured. Meant to be printed on stdout once a minute, `context.function` naming
/// the process (`realtime`).
pub fn realtime_record(context: &EmfContext<'_>, stats: &RealtimeStats) -> String {
    use std::sync::atomic::Ordering;
    let delta = stats.counts_since_last_record();
    let mut record = Record::new(context);
    let gauges = [
        ("RealtimeShardsHeld", &stats.shards_held),
        ("RealtimeSocketsConnected", &stats.connected),
        ("RealtimeSocketsSubscribed", &stats.subscribed),
    ];
    for (name, gauge) in gauges {
        record.metric(name, "Count", json!(gauge.load(Ordering::Relaxed)));
    }
    record.metric("RealtimeReconnects", "Count", json!(delta.reconnects));
    record.metric("RealtimePushes", "Count", json!(delta.pushes));
    record.metric("RealtimeStaleFences", "Count", json!(delta.stale_fences));
    if let Some(p95) = stats.push_to_event_p95_ms() {
        record.metric("PushToEventMsP95", "Milliseconds", json!(p95));
    }
    record.line()
}

struct Record {
    timestamp_ms: i64,
    definitions: Vec<Value>,
    body: Map<String, Value>,
}

impl Record {
    fn new(context: &EmfContext<'_>) -> Self {
        let mut body = Map::new();
        body.insert("Stack".into(), json!(context.stack));
        body.insert("Function".into(), json!(context.function));
        Self {
            timestamp_ms: context.timestamp_ms,
            definitions: Vec::new(),
            body,
        }
    }

    fn metric(&mut self, name: &str, unit: &str, value: Value) {
        self.definitions.push(json!({"Name": name, "Unit": unit}));
        self.body.insert(name.to_owned(), value);
    }

    fn writer_samples(&mut self, samples: &[(u64, f64)]) {
        let sizes: Vec<u64> = samples.iter().map(|(size, _)| *size).collect();
        // Whole microseconds: CloudWatch keeps no more precision than that anyway.
        let commit_ms: Vec<f64> = samples
            .iter()
            .map(|(_, ms)| (ms * 1000.0).round() / 1000.0)
            .collect();
        self.metric("WriterBatchSize", "Count", json!(sizes));
        self.metric("WriterCommitMs", "Milliseconds", json!(commit_ms));
    }

    fn line(mut self) -> String {
        self.body.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Stack"]],
                    "Metrics": self.definitions,
                }],
            }),
        );
        Value::Object(self.body).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: EmfContext<'static> = EmfContext {
        stack: "avatar-prod",
        function: "da-poll",
        timestamp_ms: 1_764_000_000_000,
    };

    #[test]
    fn a_record_declares_each_metric_it_carries_under_the_stack_dimension() {
        let delta = Counts {
            polls: 7,
            poll_errors: 2,
            ..Counts::default()
        };

        let lines = records(&CONTEXT, &delta, &[(3, 1.25)]);

        assert_eq!(lines.len(), 1);
        let record: Value = serde_json::from_str(&lines[0]).unwrap();
        let directive = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(record["_aws"]["Timestamp"], 1_764_000_000_000i64);
        assert_eq!(directive["Namespace"], "AvatarTwitchOAuth");
        assert_eq!(directive["Dimensions"], json!([["Stack"]]));
        assert_eq!(record["Stack"], "avatar-prod");
        assert_eq!(record["Function"], "da-poll");
        assert_eq!(record["Polls"], 7);
        assert_eq!(record["PollErrors"], 2);
        assert_eq!(record["NeedReauth"], 0);
        assert_eq!(record["WriterBatchSize"], json!([3]));
        assert_eq!(record["WriterCommitMs"], json!([1.25]));
        let declared: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(declared.len(), 12, "{declared:?}");
    }

    #[test]
    fn a_realtime_record_carries_counter_differences_and_gauge_values() {
        use std::sync::atomic::Ordering;
        let stats = RealtimeStats::default();
        let context = EmfContext {
            function: "realtime",
            ..CONTEXT
        };
        stats.shards_held.store(16, Ordering::Relaxed);
        stats.connected.store(40, Ordering::Relaxed);
        stats.subscribed.store(38, Ordering::Relaxed);
        stats.reconnects.store(5, Ordering::Relaxed);
        stats.pushes.store(9, Ordering::Relaxed);

        let first: Value = serde_json::from_str(&realtime_record(&context, &stats)).unwrap();
        stats.pushes.fetch_add(3, Ordering::Relaxed);
        stats.stale_fences.fetch_add(1, Ordering::Relaxed);
        stats.note_push_to_event(std::time::Duration::from_millis(80));
        let second: Value = serde_json::from_str(&realtime_record(&context, &stats)).unwrap();

        let directive = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "AvatarTwitchOAuth");
        assert_eq!(directive["Dimensions"], json!([["Stack"]]));
        assert_eq!(first["Stack"], "avatar-prod");
        assert_eq!(first["Function"], "realtime");
        assert_eq!(first["RealtimeShardsHeld"], 16);
        assert_eq!(first["RealtimeSocketsConnected"], 40);
        assert_eq!(first["RealtimeSocketsSubscribed"], 38);
        assert_eq!(first["RealtimeReconnects"], 5);
        assert_eq!(first["RealtimePushes"], 9);
        assert_eq!(first["RealtimeStaleFences"], 0);
        assert!(
            first.get("PushToEventMsP95").is_none(),
            "nothing measured yet"
        );
        assert_eq!(directive["Metrics"].as_array().unwrap().len(), 6);
        assert_eq!(second["RealtimePushes"], 3, "the difference");
        assert_eq!(second["RealtimeReconnects"], 0);
        assert_eq!(second["RealtimeStaleFences"], 1);
        assert_eq!(
            second["RealtimeSocketsSubscribed"], 38,
            "a gauge, not a difference"
        );
        assert_eq!(second["PushToEventMsP95"], 80.0);
        let declared = second["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == "PushToEventMsP95")
            .cloned();
        assert_eq!(declared.unwrap()["Unit"], "Milliseconds");
    }

    #[test]
    fn more_samples_than_one_record_takes_go_into_further_records() {
        let samples: Vec<(u64, f64)> = (0..250).map(|i| (i, 0.5)).collect();

        let lines = records(&CONTEXT, &Counts::default(), &samples);

        let records: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let lengths: Vec<usize> = records
            .iter()
            .map(|r| r["WriterBatchSize"].as_array().unwrap().len())
            .collect();
        assert_eq!(lengths, [100, 100, 50]);
        assert!(records[0].get("Polls").is_some());
        assert!(records[1].get("Polls").is_none(), "counters go out once");
    }
}
