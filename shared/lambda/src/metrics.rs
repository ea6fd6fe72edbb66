//! Metrics in CloudWatch Embedded Metric Format (EMF): one JSON line on stdout per
//! [`MetricSet`], which CloudWatch Logs turns into metrics in the namespace
//! [`NAMESPACE`]; no API call, no extra permission.
//! Hand-written (serde_json only): `metrics_cloudwatch_embedded` is a process-global
//! `metrics` recorder, which would not let a test capture one handler's lines apart from
//! another's running in parallel, and would add the `metrics` facade and tower for what
//! is one `serde_json` object.
//!
//! The document (EMF specification): `_aws.Timestamp` in epoch milliseconds,
//! `_aws.CloudWatchMetrics` with one directive (`Namespace`, `Dimensions` with one set
//! naming every dimension of the line, `Metrics` with each `Name` and `Unit`), and the
//! dimension values (strings) and metric values (numbers) as top-level members. The
//! specification allows 30 dimensions in a set and 100 metrics in a directive.
//!
//! With the function's log format JSON (`LoggingConfig: LogFormat: JSON` in
//! infra/template.yaml), nothing about the line changes: CloudWatch Logs extracts
//! metrics from any log event whose whole message is one JSON object with `_aws` at its
//! root, and Lambda does not wrap output that is already JSON. What matters is that the
//! line is written to stdout as it is, never through `tracing`, whose JSON formatter
//! would nest it inside its own object (where `_aws` is no longer at the root, which is
//! how older EMF libraries lost metrics under the JSON log format).
//!
//! Values are counts and durations; dimension values are portal names, entity names,
//! modes and refusal codes, never a token, a webhook URL or anything from a request.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric of the product.
pub const NAMESPACE: &str = "b24sync";

/// The most dimensions one dimension set may name (EMF specification).
pub const MAX_DIMENSIONS: usize = 30;

/// The most metrics one directive may name (EMF specification).
pub const MAX_METRICS: usize = 100;

/// The longest dimension value CloudWatch takes.
const MAX_DIMENSION_VALUE: usize = 1024;

/// The units this product reports in (CloudWatch's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// Metrics that share their dimensions: one EMF line.
///
/// The rules that keep every line valid EMF: a name given twice keeps its last value; a
/// metric named like a dimension, a dimension past the 30th and a metric past the 100th
/// are left out (with a warning), and so is a metric whose value is NaN or infinite
/// (CloudWatch takes only finite numbers, and `serde_json` would write `null`). A set
/// left without metrics writes no line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricSet {
    dimensions: Vec<(&'static str, String)>,
    metrics: Vec<(&'static str, Unit, f64)>,
}

impl MetricSet {
    pub fn new() -> MetricSet {
        MetricSet::default()
    }

    /// Adds a dimension; its value is kept to what CloudWatch takes (ASCII without
    /// control characters, 1 to 1,024 characters): anything else becomes `_`.
    pub fn dimension(mut self, name: &'static str, value: &str) -> MetricSet {
        let value = dimension_value(value);
        match self.dimensions.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => self.dimensions.push((name, value)),
        }
        self
    }

    pub fn count(self, name: &'static str, value: u64) -> MetricSet {
        self.metric(name, Unit::Count, value as f64)
    }

    pub fn milliseconds(self, name: &'static str, value: f64) -> MetricSet {
        self.metric(name, Unit::Milliseconds, value)
    }

    pub fn seconds(self, name: &'static str, value: f64) -> MetricSet {
        self.metric(name, Unit::Seconds, value)
    }

    /// Several counts at once.
    pub fn counts(self, values: impl IntoIterator<Item = (&'static str, u64)>) -> MetricSet {
        values
            .into_iter()
            .fold(self, |set, (name, value)| set.count(name, value))
    }

    /// Several durations in seconds at once.
    pub fn durations(self, values: impl IntoIterator<Item = (&'static str, f64)>) -> MetricSet {
        values
            .into_iter()
            .fold(self, |set, (name, value)| set.seconds(name, value))
    }

    pub fn metric(mut self, name: &'static str, unit: Unit, value: f64) -> MetricSet {
        match self.metrics.iter_mut().find(|(n, ..)| *n == name) {
            Some(existing) => *existing = (name, unit, value),
            None => self.metrics.push((name, unit, value)),
        }
        self
    }

    /// The EMF document for `timestamp_ms` (epoch milliseconds), or `None` when no
    /// metric is left to write.
    pub fn to_document(&self, timestamp_ms: u64) -> Option<Value> {
        let mut root = Map::new();
        let mut dimension_names = Vec::new();
        for (name, value) in &self.dimensions {
            if dimension_names.len() == MAX_DIMENSIONS {
                tracing::warn!(
                    dimension = name,
                    "metric dimension left out: a set has at most {MAX_DIMENSIONS}"
                );
                continue;
            }
            dimension_names.push(*name);
            root.insert((*name).to_string(), Value::String(value.clone()));
        }
        let mut definitions = Vec::new();
        for &(name, unit, value) in &self.metrics {
            let left_out = if !value.is_finite() {
                Some("its value is not a finite number")
            } else if root.contains_key(name) {
                Some("a dimension has its name")
            } else if definitions.len() == MAX_METRICS {
                Some("a line names at most 100 metrics")
            } else {
                None
            };
            if let Some(reason) = left_out {
                tracing::warn!(metric = name, value, "metric left out: {reason}");
                continue;
            }
            definitions.push(json!({"Name": name, "Unit": unit.as_str()}));
            root.insert(name.to_string(), number(value));
        }
        if definitions.is_empty() {
            return None;
        }
        root.insert(
            "_aws".to_string(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimension_names],
                    "Metrics": definitions,
                }],
            }),
        );
        Some(Value::Object(root))
    }
}

/// A whole value as an integer (`700`, not `700.0`), anything else as it is.
fn number(value: f64) -> Value {
    // Below 2^53 every whole f64 is an exact integer.
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// Where EMF lines go: stdout in a function, a buffer in tests. Cheap to clone; every
/// clone writes to the same place, one whole line at a time.
#[derive(Clone)]
pub struct Metrics {
    sink: Arc<Mutex<dyn Write + Send>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The function's stdout, which Lambda sends to CloudWatch Logs.
    pub fn stdout() -> Metrics {
        Metrics::to_writer(std::io::stdout())
    }

    pub fn to_writer(writer: impl Write + Send + 'static) -> Metrics {
        Metrics {
            sink: Arc::new(Mutex::new(writer)),
        }
    }

    /// Writes `set` as one line stamped with the current time. Never fails the caller:
    /// a sink that cannot be written to costs the metrics, and says so in the log.
    pub fn emit(&self, set: &MetricSet) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Some(document) = set.to_document(now_ms) else {
            return;
        };
        let mut line = document.to_string();
        line.push('\n');
        // A poisoned lock only means another writer panicked mid-line; the sink is
        // still usable for whole lines.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = sink.write_all(line.as_bytes()).and_then(|()| sink.flush()) {
            tracing::warn!(%error, "could not write a metrics line");
        }
    }
}

/// A [`Metrics`] sink in memory, for tests that check what a handler reports.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// A [`Metrics`] that writes here.
    pub fn metrics(&self) -> Metrics {
        Metrics::to_writer(self.clone())
    }

    /// The lines written so far, each read back by [`check_line`].
    pub fn documents(&self) -> Result<Vec<Value>, String> {
        self.lines()
            .iter()
            .map(|line| check_line(line).map_err(|problem| format!("{problem}: {line}")))
            .collect()
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Write for MemorySink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads one line back, checking it against the EMF rules this writer keeps: one JSON
/// object, `_aws.Timestamp` a number, one directive in [`NAMESPACE`] with one dimension
/// set of at most 30 names whose values are non-blank strings of printable ASCII, and 1
/// to 100 metrics in a known unit, each with a finite number at the top level. For
/// tests, and for a local host that shows what a function reported.
pub fn check_line(line: &str) -> Result<Value, String> {
    let document: Value =
        serde_json::from_str(line).map_err(|e| format!("not one JSON object ({e})"))?;
    let aws = &document["_aws"];
    if !aws["Timestamp"].is_u64() {
        return Err("no _aws.Timestamp in epoch milliseconds".into());
    }
    let directive = match aws["CloudWatchMetrics"].as_array().map(Vec::as_slice) {
        Some([directive]) => directive,
        _ => return Err("_aws.CloudWatchMetrics is not one directive".into()),
    };
    if directive["Namespace"] != NAMESPACE {
        return Err(format!("the namespace is not {NAMESPACE}"));
    }
    let sets = directive["Dimensions"].as_array().ok_or("no Dimensions")?;
    for set in sets {
        let names = set.as_array().ok_or("a dimension set is not an array")?;
        if names.len() > MAX_DIMENSIONS {
            return Err(format!("{} dimensions in a set", names.len()));
        }
        for name in names {
            let name = name.as_str().ok_or("a dimension name is not a string")?;
            let value = document[name]
                .as_str()
                .ok_or_else(|| format!("dimension {name} has no string value"))?;
            if dimension_value(value) != value {
                return Err(format!("dimension {name} has a value CloudWatch refuses"));
            }
        }
    }
    let metrics = directive["Metrics"].as_array().ok_or("no Metrics")?;
    if metrics.is_empty() || metrics.len() > MAX_METRICS {
        return Err(format!("{} metrics in a directive", metrics.len()));
    }
    for metric in metrics {
        let name = metric["Name"].as_str().ok_or("a metric has no Name")?;
        let unit = metric["Unit"].as_str();
        if ![Unit::Count, Unit::Milliseconds, Unit::Seconds]
            .iter()
            .any(|u| Some(u.as_str()) == unit)
        {
            return Err(format!("metric {name} has no known Unit"));
        }
        if !document[name].as_f64().is_some_and(f64::is_finite) {
            return Err(format!("metric {name} has no finite number value"));
        }
    }
    Ok(document)
}

/// What CloudWatch takes as a dimension value: printable ASCII, at least one
/// character that is not a space, at most 1,024 characters.
fn dimension_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_DIMENSION_VALUE)
        .collect();
    if cleaned.trim().is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_valid_emf(line: &str) -> Value {
        check_line(line).unwrap_or_else(|problem| panic!("{problem}: {line}"))
    }

    fn written(set: &MetricSet) -> Vec<String> {
        let sink = MemorySink::new();
        sink.metrics().emit(set);
        sink.lines()
    }

    #[test]
    fn writes_one_valid_line_with_dimensions_and_values_at_the_top() {
        let set = MetricSet::new()
            .dimension("Function", "sync-scheduled")
            .dimension("Portal", "acme")
            .count("RowsRead", 700)
            .seconds("RunSeconds", 1.5)
            .milliseconds("WorkerLagMs", 42.0);
        let lines = written(&set);
        assert_eq!(lines.len(), 1);
        let document = assert_valid_emf(&lines[0]);
        assert_eq!(document["Function"], "sync-scheduled");
        assert_eq!(document["Portal"], "acme");
        // A whole number is written as one.
        assert!(lines[0].contains(r#""RowsRead":700,"#), "{}", lines[0]);
        assert_eq!(document["RowsRead"], 700.0);
        assert_eq!(document["RunSeconds"], 1.5);
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Function", "Portal"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "RowsRead", "Unit": "Count"},
                {"Name": "RunSeconds", "Unit": "Seconds"},
                {"Name": "WorkerLagMs", "Unit": "Milliseconds"},
            ])
        );
        // Stamped with the time of writing, in milliseconds.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let stamped = document["_aws"]["Timestamp"].as_u64().unwrap();
        assert!(now_ms - stamped < 60_000, "{stamped} vs {now_ms}");
    }

    #[test]
    fn leaves_out_values_that_are_not_finite_numbers() {
        let set = MetricSet::new()
            .dimension("Function", "change-worker")
            .milliseconds("WorkerLagMs", f64::NAN)
            .seconds("OperatingSeconds", f64::INFINITY)
            .count("MessagesFailed", 2);
        let document = assert_valid_emf(&written(&set)[0]);
        assert!(document.get("WorkerLagMs").is_none());
        assert!(document.get("OperatingSeconds").is_none());
        assert_eq!(
            document["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "MessagesFailed", "Unit": "Count"}])
        );
        // Nothing left to report: no line at all.
        let nothing = MetricSet::new()
            .dimension("Function", "change-worker")
            .seconds("RunSeconds", f64::NEG_INFINITY);
        assert!(written(&nothing).is_empty());
        assert!(written(&MetricSet::new()).is_empty());
    }

    #[test]
    fn keeps_to_30_dimensions_and_100_metrics() {
        // Names are `&'static str` (the code's own); a test can leak a few.
        let names: Vec<&'static str> = (0..140)
            .map(|i| &*Box::leak(format!("m{i:03}").into_boxed_str()))
            .collect();
        let mut set = MetricSet::new();
        for name in &names[..40] {
            set = set.dimension(name, "v");
        }
        for name in &names[40..] {
            set = set.count(name, 1);
        }
        let document = assert_valid_emf(&written(&set)[0]);
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"][0].as_array().unwrap().len(), 30);
        assert_eq!(directive["Metrics"].as_array().unwrap().len(), 100);
        // The first ones are kept, in order.
        assert_eq!(directive["Dimensions"][0][29], names[29]);
        assert!(document.get(names[30]).is_none());
        assert_eq!(directive["Metrics"][99]["Name"], names[139]);
    }

    #[test]
    fn a_name_given_twice_keeps_its_last_value_and_never_clashes() {
        let set = MetricSet::new()
            .dimension("Portal", "first")
            .dimension("Portal", "acme")
            .count("RowsRead", 1)
            .count("RowsRead", 2)
            .count("Portal", 3);
        let document = assert_valid_emf(&written(&set)[0]);
        assert_eq!(document["Portal"], "acme");
        assert_eq!(document["RowsRead"], 2.0);
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Portal"]]));
        assert_eq!(directive["Metrics"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn dimension_values_are_kept_to_what_cloudwatch_takes() {
        assert_eq!(dimension_value("acme"), "acme");
        assert_eq!(dimension_value("Вектор"), "______");
        assert_eq!(dimension_value("a\nb\tc"), "a_b_c");
        assert_eq!(dimension_value(""), "_");
        assert_eq!(dimension_value("   "), "_");
        assert_eq!(
            dimension_value(&"x".repeat(2000)).len(),
            MAX_DIMENSION_VALUE
        );
    }

    #[test]
    fn lines_from_clones_never_interleave() {
        let sink = MemorySink::new();
        let metrics = sink.metrics();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let metrics = metrics.clone();
                scope.spawn(move || {
                    for i in 0..50 {
                        metrics.emit(
                            &MetricSet::new()
                                .dimension("Function", "test")
                                .count("Thread", thread)
                                .count("Index", i),
                        );
                    }
                });
            }
        });
        let lines = sink.lines();
        assert_eq!(lines.len(), 200);
        for line in &lines {
            assert_valid_emf(line);
        }
    }

    #[test]
    fn check_line_refuses_what_cloudwatch_would_not_extract() {
        let good = MetricSet::new()
            .dimension("Function", "f")
            .count("RowsRead", 1)
            .to_document(1)
            .unwrap();
        assert!(check_line(&good.to_string()).is_ok());
        let broken = |edit: fn(&mut Value)| {
            let mut document = good.clone();
            edit(&mut document);
            check_line(&document.to_string()).unwrap_err()
        };
        assert!(broken(|d| d["RowsRead"] = Value::Null).contains("RowsRead"));
        assert!(broken(|d| d["Function"] = json!(3)).contains("Function"));
        assert!(broken(|d| d["Function"] = json!("tab\there")).contains("Function"));
        assert!(broken(|d| d["_aws"]["Timestamp"] = json!("now")).contains("Timestamp"));
        assert!(
            broken(|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!("x"))
                .contains("namespace")
        );
        assert!(
            broken(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Bytes"))
                .contains("Unit")
        );
        assert!(
            broken(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!([]))
                .contains("0 metrics")
        );
        assert!(
            broken(|d| {
                let names: Vec<String> = (0..31).map(|i| format!("d{i}")).collect();
                for name in &names {
                    d[name] = json!("v");
                }
                d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([names]);
            })
            .contains("31 dimensions")
        );
        assert!(check_line("prefix {}").is_err());
    }

    #[test]
    fn a_failing_sink_costs_only_the_line() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("closed"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        Metrics::to_writer(Broken).emit(&MetricSet::new().count("RowsRead", 1));
    }
}
