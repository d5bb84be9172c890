//! CloudWatch Embedded Metric Format as CloudWatch Logs reads it: a record that fails one of
//! these checks is stored as a plain log line and yields no metric.

use serde_json::Value;

/// The units CloudWatch accepts (`MetricDatum.Unit`).
pub const CLOUDWATCH_UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Parses `line` as an EMF record and checks it against the specification: `_aws.Timestamp`
/// (Unix ms), `_aws.CloudWatchMetrics` directives each with a `Namespace`, `Dimensions`
/// (arrays of at most 30 names, each a top-level string member) and `Metrics` (at most 100,
/// each named by a top-level number or array of at most 100 numbers, with a valid unit).
pub fn parse_record(line: &str) -> Result<Value, String> {
    let record: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let top = record.as_object().ok_or("not a JSON object")?;
    let aws = top
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    let timestamp = aws
        .get("Timestamp")
        .and_then(Value::as_i64)
        .ok_or("_aws.Timestamp is not an integer")?;
    // Milliseconds, not seconds: later than 2001 read as ms.
    if timestamp < 1_000_000_000_000 {
        return Err(format!(
            "_aws.Timestamp {timestamp} is not Unix milliseconds"
        ));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("_aws.CloudWatchMetrics is not a non-empty array")?;
    for directive in directives {
        let namespace = directive["Namespace"]
            .as_str()
            .filter(|n| (1..=255).contains(&n.len()))
            .ok_or("a directive has no Namespace")?;
        let dimension_sets = directive["Dimensions"]
            .as_array()
            .ok_or(format!("{namespace}: Dimensions is not an array"))?;
        for set in dimension_sets {
            let names = set.as_array().filter(|s| s.len() <= 30).ok_or(format!(
                "{namespace}: a dimension set is not an array of ≤ 30"
            ))?;
            for name in names {
                let name = name.as_str().ok_or("a dimension name is not a string")?;
                if !top.get(name).is_some_and(Value::is_string) {
                    return Err(format!("dimension {name} is not a top-level string member"));
                }
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .filter(|m| m.len() <= 100)
            .ok_or(format!("{namespace}: Metrics is not an array of ≤ 100"))?;
        for metric in metrics {
            let name = metric["Name"]
                .as_str()
                .filter(|n| (1..=1024).contains(&n.len()))
                .ok_or("a metric has no Name")?;
            if let Some(unit) = metric.get("Unit") {
                let unit = unit.as_str().unwrap_or_default();
                if !CLOUDWATCH_UNITS.contains(&unit) {
                    return Err(format!("{name}: {unit:?} is not a CloudWatch unit"));
                }
            }
            let valid_value = match top.get(name) {
                Some(Value::Number(_)) => true,
                Some(Value::Array(values)) => {
                    values.len() <= 100 && values.iter().all(Value::is_number)
                }
                _ => false,
            };
            if !valid_value {
                return Err(format!(
                    "metric {name} is not a top-level number or array of ≤ 100 numbers"
                ));
            }
        }
    }
    Ok(record)
}

/// The sum of `metric` over `records` (a number, or the sum of an array of samples).
pub fn sum(records: &[Value], metric: &str) -> f64 {
    records
        .iter()
        .map(|record| match &record[metric] {
            Value::Number(n) => n.as_f64().unwrap_or_default(),
            Value::Array(values) => values.iter().filter_map(Value::as_f64).sum(),
            _ => 0.0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"_aws":{"Timestamp":1764000000000,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["Stack"]],"Metrics":[{"Name":"Polls","Unit":"Count"}]}]},"Stack":"s","Polls":3}"#;

    #[test]
    fn a_valid_record_passes_and_each_broken_one_names_its_fault() {
        assert!(parse_record(VALID).is_ok());
        for (broken, fault) in [
            (VALID.replace("1764000000000", "1764000000"), "milliseconds"),
            (VALID.replace(r#""Stack":"s","#, ""), "dimension Stack"),
            (
                VALID.replace(r#""Polls":3"#, r#""Polls":"3""#),
                "metric Polls",
            ),
            (
                VALID.replace(r#""Count""#, r#""Counts""#),
                "not a CloudWatch unit",
            ),
            (VALID.replace(r#""Namespace":"N","#, ""), "Namespace"),
        ] {
            let error = parse_record(&broken).expect_err(fault);
            assert!(error.contains(fault), "{error} for {broken}");
        }
    }
}
