//! `[ingest]`: the sidecar that lands Kafka topics in Iceberg (`fjord ingest`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;

/// `[ingest]`: where the sidecar reads, where it writes, and its pipelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address of the HTTP listener with `/health` and `/metrics`.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// The Iceberg catalog (a name under `[catalogs]`) that tables land in.
    #[serde(default = "default_ingest_catalog")]
    pub catalog: String,
    pub kafka: KafkaConfig,
    /// `[ingest.schema_registry]`: where Avro pipelines find their writers' schemas.
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// `[ingest.pipelines.<name>]`: topics to tables.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// `[ingest.maintenance]`: snapshot expiry the sidecar runs by itself.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
}

/// `[ingest.maintenance]`: every `interval`, the sidecar expires the snapshots of its tables
/// (and their dead-letter tables) older than `expire_older_than`, keeping the newest
/// `retain_last` and every snapshot its Kafka offsets are read from (as `fjord maintain` does).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_maintenance_interval")]
    pub interval: String,
    #[serde(default = "default_expire_older_than")]
    pub expire_older_than: String,
    #[serde(default = "default_retain_last")]
    pub retain_last: usize,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            interval: default_maintenance_interval(),
            expire_older_than: default_expire_older_than(),
            retain_last: default_retain_last(),
        }
    }
}

impl MaintenanceConfig {
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::from_secs(3600))
    }

    pub fn expire_older_than(&self) -> Duration {
        parse_duration(&self.expire_older_than).unwrap_or(Duration::from_secs(86400))
    }
}

fn default_true() -> bool {
    true
}
fn default_maintenance_interval() -> String {
    "1h".into()
}
fn default_expire_older_than() -> String {
    "1d".into()
}
fn default_retain_last() -> usize {
    100
}

fn default_http_listen() -> String {
    "127.0.0.1:8788".into()
}
fn default_ingest_catalog() -> String {
    "iceberg".into()
}

/// `[ingest.kafka]`: the connection to the brokers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Consumer group of the sidecars: sidecars in one group share a topic's partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Static group membership (`group.instance.id`, suffixed with the pipeline's name): a
    /// sidecar restarted under the same id takes its partitions back at once instead of waiting
    /// for its old session to time out. Give each sidecar its own stable id (a pod name, say).
    pub instance_id: Option<String>,
    /// Milliseconds without a heartbeat before a sidecar's partitions go to the others.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism (`PLAIN` for Confluent Cloud; `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<Secret>,
    pub sasl_password: Option<Secret>,
    /// PEM file of the certificate authorities that sign the brokers' certificates; the
    /// system's store when absent.
    pub ssl_ca_location: Option<String>,
    /// librdkafka properties handed to the client as they are (for example
    /// `"fetch.max.bytes" = "52428800"`). They cannot override the properties fjord's guarantees
    /// rest on (`enable.auto.commit`, `enable.auto.offset.store`, `isolation.level`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_group_id() -> String {
    "fjord-ingest".into()
}
fn default_session_timeout_ms() -> u32 {
    10_000
}

/// `security.protocol` of librdkafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `[ingest.schema_registry]`: a Confluent-compatible schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL, such as `http://127.0.0.1:8081` or Confluent Cloud's `https://psrc-....`.
    pub url: String,
    /// Basic-auth user (Confluent Cloud's API key).
    pub username: Option<Secret>,
    pub password: Option<Secret>,
}

/// The encoding of record values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro body), with the
    /// writer's schema from `[ingest.schema_registry]`.
    Avro,
    /// Debezium change events from PostgreSQL, as Kafka Connect's JsonConverter writes them
    /// (with or without the schema block). They land in a change-log table
    /// `<table>_changelog`; `table` itself is the current state per primary key.
    Debezium,
}

/// What a Debezium pipeline appends to its table's name for the change log it writes.
pub const CHANGELOG_SUFFIX: &str = "_changelog";

/// `[ingest.pipelines.<name>]`: one or more topics landing in one Iceberg table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub topics: Vec<String>,
    /// `schema.table` in the ingest catalog; created on first data when missing.
    pub table: String,
    #[serde(default)]
    pub format: ValueFormat,
    /// Field holding the event's time (RFC 3339 text); stored as
    /// `timestamptz` and used by the default partitioning.
    pub event_time: Option<String>,
    /// Partition spec of a table fjord creates: `day(field)`, `hour(field)` or a field name
    /// (identity). Default: `day(<event_time>)` when `event_time` is set, else unpartitioned.
    pub partition_by: Option<Vec<String>>,
    /// Records whose value is larger than this go to the dead letters.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: String,
    /// `schema.table` that records which cannot be landed go to; default `<schema>.dead_letters`
    /// beside `table`.
    pub dead_letter_table: Option<String>,
    /// A Kafka topic that also receives dead letters (raw key and value, the error in a header).
    pub dead_letter_topic: Option<String>,
    #[serde(default)]
    pub commit: CommitPolicy,
}

fn default_max_record_bytes() -> String {
    "1MiB".into()
}

impl PipelineConfig {
    /// `(schema, table)` as configured.
    pub fn table_parts(&self) -> (&str, &str) {
        self.table.split_once('.').unwrap_or(("", &self.table))
    }

    /// `(schema, table)` of the table the pipeline writes: `table` itself, or for Debezium its
    /// change log `<table>_changelog`.
    pub fn landing_parts(&self) -> (String, String) {
        let (schema, table) = self.table_parts();
        match self.format {
            ValueFormat::Debezium => (schema.to_string(), format!("{table}{CHANGELOG_SUFFIX}")),
            _ => (schema.to_string(), table.to_string()),
        }
    }

    /// `schema.table` of the table the pipeline writes.
    pub fn landing_table(&self) -> String {
        let (schema, table) = self.landing_parts();
        format!("{schema}.{table}")
    }

    /// `(schema, table)` of the dead-letter table.
    pub fn dead_letter_parts(&self) -> (String, String) {
        match &self.dead_letter_table {
            Some(name) => {
                let (schema, table) = name.split_once('.').unwrap_or(("", name));
                (schema.to_string(), table.to_string())
            }
            None => (self.table_parts().0.to_string(), "dead_letters".to_string()),
        }
    }

    pub fn max_record_bytes(&self) -> usize {
        crate::parse_size(&self.max_record_bytes).unwrap_or(1 << 20)
    }

    /// The partition spec as `(transform, column)` pairs, `transform` one of `identity`, `day`,
    /// `hour`.
    pub fn partition_fields(&self) -> Result<Vec<(String, String)>, String> {
        let specs: Vec<String> = match (&self.partition_by, &self.event_time) {
            (Some(specs), _) => specs.clone(),
            (None, Some(field)) => vec![format!("day({field})")],
            (None, None) => Vec::new(),
        };
        specs
            .iter()
            .map(|spec| parse_partition_field(spec))
            .collect()
    }
}

fn parse_partition_field(spec: &str) -> Result<(String, String), String> {
    let spec = spec.trim();
    if let Some((transform, rest)) = spec.split_once('(') {
        let column = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("`{spec}`: missing `)`"))?
            .trim();
        let transform = transform.trim().to_ascii_lowercase();
        if !matches!(transform.as_str(), "day" | "hour" | "month" | "year") {
            return Err(format!(
                "`{spec}`: unknown transform `{transform}` (use day, hour, month, year or a bare \
                 column for identity)"
            ));
        }
        if column.is_empty() {
            return Err(format!("`{spec}`: no column"));
        }
        Ok((transform, column.to_string()))
    } else if spec.is_empty() {
        Err("empty partition field".into())
    } else {
        Ok(("identity".into(), spec.to_string()))
    }
}

/// `[ingest.pipelines.<name>.commit]`: a commit happens at whichever limit comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitPolicy {
    /// Records buffered before a commit.
    pub max_records: usize,
    /// Bytes of record values buffered before a commit.
    pub max_bytes: String,
    /// Time since the first buffered record before a commit ("2s", "500ms", "1m").
    pub interval: String,
    /// Commit early when no record has arrived for this long.
    pub idle: String,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            max_records: 2_000_000,
            max_bytes: "256MiB".into(),
            interval: "2s".into(),
            idle: "500ms".into(),
        }
    }
}

impl CommitPolicy {
    pub fn max_bytes(&self) -> usize {
        crate::parse_size(&self.max_bytes).unwrap_or(256 << 20)
    }
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::from_secs(2))
    }
    pub fn idle(&self) -> Duration {
        parse_duration(&self.idle).unwrap_or(Duration::from_millis(500))
    }
}

/// A duration such as `500ms`, `2s`, `1.5s`, `5m` or `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = crate::split_number_unit(text)?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    (seconds >= 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
}

impl IngestConfig {
    pub(crate) fn resolve_secrets(&mut self) -> Result<(), (String, String)> {
        for (field, secret) in [
            ("sasl_username", &mut self.kafka.sasl_username),
            ("sasl_password", &mut self.kafka.sasl_password),
        ] {
            if let Some(secret) = secret {
                secret
                    .resolve()
                    .map_err(|reason| (format!("ingest.kafka.{field}"), reason))?;
            }
        }
        if let Some(registry) = &mut self.schema_registry {
            for (field, secret) in [
                ("username", &mut registry.username),
                ("password", &mut registry.password),
            ] {
                if let Some(secret) = secret {
                    secret
                        .resolve()
                        .map_err(|reason| (format!("ingest.schema_registry.{field}"), reason))?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn validate(&self, iceberg_catalogs: &[&str]) -> Result<(), (String, String)> {
        if !iceberg_catalogs.contains(&self.catalog.as_str()) {
            return Err((
                "ingest.catalog".into(),
                format!("no Iceberg catalog named `{}` is configured", self.catalog),
            ));
        }
        if let Some(registry) = &self.schema_registry
            && !(registry.url.starts_with("http://") || registry.url.starts_with("https://"))
        {
            return Err((
                "ingest.schema_registry.url".into(),
                "must start with http:// or https://".into(),
            ));
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err((
                "ingest.kafka.bootstrap_servers".into(),
                "must not be empty".into(),
            ));
        }
        if !(6_000..=300_000).contains(&self.kafka.session_timeout_ms) {
            return Err((
                "ingest.kafka.session_timeout_ms".into(),
                "must be between 6000 and 300000 (the brokers' default bounds)".into(),
            ));
        }
        if self.kafka.security_protocol.uses_sasl() {
            for (field, value) in [
                ("sasl_username", self.kafka.sasl_username.is_some()),
                ("sasl_password", self.kafka.sasl_password.is_some()),
            ] {
                if !value {
                    return Err((
                        format!("ingest.kafka.{field}"),
                        format!(
                            "missing: security_protocol `{}` needs `{field}`",
                            self.kafka.security_protocol.as_librdkafka()
                        ),
                    ));
                }
            }
        }
        for key in self.kafka.properties.keys() {
            if matches!(
                key.as_str(),
                "enable.auto.commit"
                    | "enable.auto.offset.store"
                    | "isolation.level"
                    | "group.id"
                    | "bootstrap.servers"
                    | "partition.assignment.strategy"
                    | "group.instance.id"
                    | "session.timeout.ms"
            ) {
                return Err((
                    format!("ingest.kafka.properties.{key}"),
                    "fjord sets this property itself (from its own keys, or because exactly-once \
                     depends on it)"
                        .into(),
                ));
            }
        }
        let maintenance = &self.maintenance;
        if parse_duration(&maintenance.interval).is_none_or(|interval| interval.is_zero()) {
            return Err((
                "ingest.maintenance.interval".into(),
                format!(
                    "`{}` is not a duration such as \"1h\"",
                    maintenance.interval
                ),
            ));
        }
        if parse_duration(&maintenance.expire_older_than).is_none() {
            return Err((
                "ingest.maintenance.expire_older_than".into(),
                format!(
                    "`{}` is not a duration such as \"1d\"",
                    maintenance.expire_older_than
                ),
            ));
        }
        if maintenance.retain_last == 0 {
            return Err((
                "ingest.maintenance.retain_last".into(),
                "must be at least 1: the current snapshot always stays".into(),
            ));
        }
        let mut tables: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, pipeline) in &self.pipelines {
            let key = |field: &str| format!("ingest.pipelines.{name}.{field}");
            if !crate::is_valid_catalog_name(name) {
                return Err((
                    format!("ingest.pipelines.{name}"),
                    "a pipeline name must start with a lowercase letter and contain only \
                     lowercase letters, digits and underscores"
                        .into(),
                ));
            }
            if pipeline.format == ValueFormat::Avro && self.schema_registry.is_none() {
                return Err((
                    key("format"),
                    "format \"avro\" needs [ingest.schema_registry] (where the writers' schemas are)"
                        .into(),
                ));
            }
            if pipeline.topics.is_empty() {
                return Err((key("topics"), "needs at least one topic".into()));
            }
            let (schema, table) = pipeline.table_parts();
            if schema.is_empty() || table.is_empty() || table.contains('.') {
                return Err((
                    key("table"),
                    format!("`{}` is not of the form schema.table", pipeline.table),
                ));
            }
            if pipeline.format == ValueFormat::Debezium && table.ends_with(CHANGELOG_SUFFIX) {
                return Err((
                    key("table"),
                    format!(
                        "name the current-state table; fjord writes the change log to `{}{CHANGELOG_SUFFIX}` itself",
                        pipeline.table
                    ),
                ));
            }
            if let Some(other) = tables.insert(&pipeline.table, name) {
                return Err((
                    key("table"),
                    format!(
                        "pipeline `{other}` already writes `{}`: a table has one pipeline",
                        pipeline.table
                    ),
                ));
            }
            let (dl_schema, dl_table) = pipeline.dead_letter_parts();
            if dl_schema.is_empty() || dl_table.is_empty() {
                return Err((
                    key("dead_letter_table"),
                    "is not of the form schema.table".into(),
                ));
            }
            if format!("{dl_schema}.{dl_table}") == pipeline.table {
                return Err((
                    key("dead_letter_table"),
                    "must differ from the pipeline's table".into(),
                ));
            }
            pipeline
                .partition_fields()
                .map_err(|reason| (key("partition_by"), reason))?;
            if crate::parse_size(&pipeline.max_record_bytes).is_none_or(|bytes| bytes == 0) {
                return Err((
                    key("max_record_bytes"),
                    format!(
                        "`{}` is not a size such as \"1MiB\"",
                        pipeline.max_record_bytes
                    ),
                ));
            }
            let commit = &pipeline.commit;
            if commit.max_records == 0 {
                return Err((key("commit.max_records"), "must be at least 1".into()));
            }
            if crate::parse_size(&commit.max_bytes).is_none_or(|bytes| bytes == 0) {
                return Err((
                    key("commit.max_bytes"),
                    format!("`{}` is not a size such as \"256MiB\"", commit.max_bytes),
                ));
            }
            for (field, value) in [("interval", &commit.interval), ("idle", &commit.idle)] {
                match parse_duration(value) {
                    Some(duration) if !duration.is_zero() => {}
                    _ => {
                        return Err((
                            key(&format!("commit.{field}")),
                            format!("`{value}` is not a duration such as \"2s\" or \"500ms\""),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5"), None);
    }

    #[test]
    fn partition_fields_parse() {
        assert_eq!(
            parse_partition_field("day(event_time)"),
            Ok(("day".into(), "event_time".into()))
        );
        assert_eq!(
            parse_partition_field("cat_id"),
            Ok(("identity".into(), "cat_id".into()))
        );
        assert!(parse_partition_field("week(event_time)").is_err());
    }
}
