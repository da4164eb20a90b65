//! Per-pipeline counters and gauges, rendered in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// What one pipeline reports. Counters only grow; gauges hold the latest value.
#[derive(Default)]
pub struct PipelineMetrics {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub dead_letters: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub fenced: AtomicU64,
    pub files: AtomicU64,
    pub file_bytes: AtomicU64,
    pub committed_records: AtomicU64,
    /// Seeks back after a broker skipped records following a seek.
    pub rereads: AtomicU64,
    /// Nanoseconds spent in each phase of landing records: decoding values into Arrow,
    /// writing data files, committing snapshots (with their fences).
    pub decode_nanos: AtomicU64,
    pub write_nanos: AtomicU64,
    pub commit_nanos: AtomicU64,
    /// Sum of commit latencies in microseconds (with `commits`, the mean).
    pub commit_micros: AtomicU64,
    pub state: Mutex<PipelineState>,
}

/// Gauges and the health of a pipeline.
#[derive(Debug, Clone, Default)]
pub struct PipelineState {
    pub running: bool,
    /// Partitions assigned to this sidecar, with the lag behind the high watermark.
    pub lag: BTreeMap<(String, i32), i64>,
    pub records_per_second: f64,
    pub bytes_per_second: f64,
    pub last_commit_seconds: f64,
    /// Age of the oldest record (by its Kafka timestamp) when its commit became visible.
    pub last_freshness_seconds: f64,
    pub last_commit_files: u64,
    pub last_commit_file_bytes: u64,
    /// Unix seconds of the last successful commit.
    pub last_commit_at: Option<f64>,
    /// The last error, cleared by the next successful commit.
    pub last_error: Option<String>,
    /// Set while the consumer has waited for its group's assignment much longer than a
    /// rebalance takes, or has been given nothing while nobody lands the topics; cleared when
    /// partitions are assigned or the table's offsets move.
    pub waiting_for_group: Option<String>,
}

impl PipelineState {
    /// Running, with no error and not stuck outside its consumer group.
    pub fn healthy(&self) -> bool {
        self.running && self.last_error.is_none() && self.waiting_for_group.is_none()
    }

    /// What is wrong, when something is.
    pub fn problem(&self) -> Option<&str> {
        self.last_error
            .as_deref()
            .or(self.waiting_for_group.as_deref())
    }
}

/// Adds the time since `started` to a phase counter (`PipelineMetrics::*_nanos`).
pub fn add_elapsed(counter: &AtomicU64, started: std::time::Instant) {
    counter.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// All pipelines of a sidecar, by name.
#[derive(Default, Clone)]
pub struct Registry {
    pipelines: Arc<Mutex<BTreeMap<String, Arc<PipelineMetrics>>>>,
    rules: Arc<Mutex<BTreeMap<String, Arc<crate::rules::RuleMetrics>>>>,
}

/// A metric's name, help text and how to read it from a pipeline's state.
type Metric<T, V> = (&'static str, &'static str, fn(&T) -> V);

impl Registry {
    pub fn pipeline(&self, name: &str) -> Arc<PipelineMetrics> {
        self.pipelines
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn rule(&self, name: &str) -> Arc<crate::rules::RuleMetrics> {
        self.rules
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn rules(&self) -> Vec<(String, Arc<crate::rules::RuleMetrics>)> {
        self.rules
            .lock()
            .iter()
            .map(|(name, metrics)| (name.clone(), metrics.clone()))
            .collect()
    }

    pub fn snapshot(&self) -> Vec<(String, Arc<PipelineMetrics>)> {
        self.pipelines
            .lock()
            .iter()
            .map(|(name, metrics)| (name.clone(), metrics.clone()))
            .collect()
    }

    /// The Prometheus text exposition of every pipeline.
    pub fn render(&self) -> String {
        let pipelines = self.snapshot();
        let mut out = String::new();
        let counters: [Metric<PipelineMetrics, u64>; 10] = [
            (
                "fjord_ingest_records_total",
                "Records read from Kafka.",
                |m| m.records.load(Ordering::Relaxed),
            ),
            (
                "fjord_ingest_bytes_total",
                "Bytes of record values read.",
                |m| m.bytes.load(Ordering::Relaxed),
            ),
            (
                "fjord_ingest_committed_records_total",
                "Records committed to the table.",
                |m| m.committed_records.load(Ordering::Relaxed),
            ),
            (
                "fjord_ingest_dead_letters_total",
                "Records sent to the dead letters.",
                |m| m.dead_letters.load(Ordering::Relaxed),
            ),
            ("fjord_ingest_commits_total", "Successful commits.", |m| {
                m.commits.load(Ordering::Relaxed)
            }),
            (
                "fjord_ingest_commit_failures_total",
                "Commits that failed and will be retried.",
                |m| m.commit_failures.load(Ordering::Relaxed),
            ),
            (
                "fjord_ingest_fenced_total",
                "Commits refused because another writer had committed the same partitions.",
                |m| m.fenced.load(Ordering::Relaxed),
            ),
            ("fjord_ingest_files_total", "Data files committed.", |m| {
                m.files.load(Ordering::Relaxed)
            }),
            (
                "fjord_ingest_file_bytes_total",
                "Bytes of data files committed.",
                |m| m.file_bytes.load(Ordering::Relaxed),
            ),
            (
                "fjord_ingest_rereads_total",
                "Seeks back to an earlier offset after the broker skipped records following a seek.",
                |m| m.rereads.load(Ordering::Relaxed),
            ),
        ];
        write_counters(&mut out, "pipeline", &counters, &pipelines);
        let _ = writeln!(
            out,
            "# HELP fjord_ingest_commit_seconds Time spent writing files and committing.\n\
             # TYPE fjord_ingest_commit_seconds summary"
        );
        for (pipeline, metrics) in &pipelines {
            let _ = writeln!(
                out,
                "fjord_ingest_commit_seconds_sum{{pipeline=\"{pipeline}\"}} {}\n\
                 fjord_ingest_commit_seconds_count{{pipeline=\"{pipeline}\"}} {}",
                metrics.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
                metrics.commits.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fjord_ingest_phase_seconds_total Time spent decoding records, writing data \
             files and committing snapshots.\n# TYPE fjord_ingest_phase_seconds_total counter"
        );
        for (pipeline, metrics) in &pipelines {
            for (phase, nanos) in [
                ("decode", &metrics.decode_nanos),
                ("write", &metrics.write_nanos),
                ("commit", &metrics.commit_nanos),
            ] {
                let _ = writeln!(
                    out,
                    "fjord_ingest_phase_seconds_total{{pipeline=\"{pipeline}\",phase=\"{phase}\"}} {}",
                    nanos.load(Ordering::Relaxed) as f64 / 1e9
                );
            }
        }
        let gauges: [Metric<PipelineState, f64>; 7] = [
            (
                "fjord_ingest_records_per_second",
                "Records read per second over the last few seconds.",
                |s| s.records_per_second,
            ),
            (
                "fjord_ingest_bytes_per_second",
                "Bytes read per second over the last few seconds.",
                |s| s.bytes_per_second,
            ),
            (
                "fjord_ingest_last_commit_seconds",
                "Duration of the last commit.",
                |s| s.last_commit_seconds,
            ),
            (
                "fjord_ingest_freshness_seconds",
                "Age of the oldest record of the last commit (Kafka timestamp to visible).",
                |s| s.last_freshness_seconds,
            ),
            (
                "fjord_ingest_last_commit_files",
                "Data files in the last commit.",
                |s| s.last_commit_files as f64,
            ),
            (
                "fjord_ingest_last_commit_file_bytes",
                "Bytes of data files in the last commit.",
                |s| s.last_commit_file_bytes as f64,
            ),
            (
                "fjord_ingest_up",
                "1 while the pipeline runs, its last commit succeeded and it is in its consumer group.",
                |s| f64::from(u8::from(s.healthy())),
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (pipeline, metrics) in &pipelines {
                let state = metrics.state.lock();
                let _ = writeln!(out, "{name}{{pipeline=\"{pipeline}\"}} {}", get(&state));
            }
        }
        let _ = writeln!(
            out,
            "# HELP fjord_ingest_consumer_lag Records between the pipeline's position and the \
             partition's high watermark.\n# TYPE fjord_ingest_consumer_lag gauge"
        );
        for (pipeline, metrics) in &pipelines {
            let state = metrics.state.lock();
            for ((topic, partition), lag) in &state.lag {
                let _ = writeln!(
                    out,
                    "fjord_ingest_consumer_lag{{pipeline=\"{pipeline}\",topic=\"{topic}\",\
                     partition=\"{partition}\"}} {lag}"
                );
            }
        }
        let rules = self.rules();
        if !rules.is_empty() {
            let rule_metrics: [Metric<crate::rules::RuleMetrics, u64>; 2] = [
                (
                    "fjord_rule_records_total",
                    "Records an alert rule evaluated.",
                    |m| m.records.load(Ordering::Relaxed),
                ),
                (
                    "fjord_rule_alerts_total",
                    "Alerts a rule fired and delivered.",
                    |m| m.alerts.load(Ordering::Relaxed),
                ),
            ];
            write_counters(&mut out, "rule", &rule_metrics, &rules);
            let _ = writeln!(
                out,
                "# HELP fjord_rule_keys Keys a grouped rule holds state for.\n# TYPE fjord_rule_keys gauge"
            );
            for (rule, metrics) in &rules {
                let _ = writeln!(
                    out,
                    "fjord_rule_keys{{rule=\"{rule}\"}} {}",
                    metrics.state.lock().keys
                );
            }
        }
        out
    }
}

/// Counters in Prometheus' text format, one series per item, labelled `label="<name>"`.
fn write_counters<T>(
    out: &mut String,
    label: &str,
    counters: &[Metric<T, u64>],
    items: &[(String, Arc<T>)],
) {
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (item, metrics) in items {
            let _ = writeln!(out, "{name}{{{label}=\"{item}\"}} {}", get(metrics));
        }
    }
}
