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
    /// `[ingest.rules.<name>]`: alert rules over the pipelines' records.
    #[serde(default)]
    pub rules: BTreeMap<String, crate::rules::RuleConfig>,
}

/// `[ingest.maintenance]`: every `interval`, the sidecar merges the small data files of its
/// tables (and their dead-letter tables) when `compact` is on, then expires snapshots older
/// than `expire_older_than`, keeping the newest `retain_last` and every snapshot its Kafka
/// offsets are read from (as `fjord maintain` does).
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
    /// Merge each partition's data files smaller than `small_file_size` (SQL catalogs only).
    #[serde(default = "default_true")]
    pub compact: bool,
    #[serde(default = "default_small_file_size")]
    pub small_file_size: String,
    /// At most this much of small files is merged per table and run.
    #[serde(default = "default_compact_max_bytes")]
    pub compact_max_bytes: String,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            interval: default_maintenance_interval(),
            expire_older_than: default_expire_older_than(),
            retain_last: default_retain_last(),
            compact: true,
            small_file_size: default_small_file_size(),
            compact_max_bytes: default_compact_max_bytes(),
        }
    }
}

impl MaintenanceConfig {
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::from_secs(600))
    }

    pub fn expire_older_than(&self) -> Duration {
        parse_duration(&self.expire_older_than).unwrap_or(Duration::from_secs(86400))
    }

    pub fn small_file_bytes(&self) -> u64 {
        crate::parse_size(&self.small_file_size).unwrap_or(32 << 20) as u64
    }

    pub fn compact_max_bytes(&self) -> u64 {
        crate::parse_size(&self.compact_max_bytes).unwrap_or(2 << 30) as u64
    }
}

fn default_small_file_size() -> String {
    "32MB".into()
}
fn default_compact_max_bytes() -> String {
    "2GB".into()
}

fn default_true() -> bool {
    true
}
fn default_maintenance_interval() -> String {
    "10m".into()
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

/// `[ingest.pipelines.<name>]`: one or more topics landing in one Iceberg table, or in many
/// when `table` routes by record fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub topics: Vec<String>,
    /// `schema.table` in the ingest catalog; created on first data when missing. The table part
    /// may hold `{field}` placeholders (`cafe.{kind}_events`, `data.{_kafka_topic}_raw`): each
    /// record then lands in the table named by its field values (see [`TableTemplate`]).
    pub table: String,
    /// For a routed `table`: the most tables the pipeline lands in. A record that would make
    /// one more goes to the dead letters, so a field with unexpected values cannot fill the
    /// catalog.
    #[serde(default = "default_max_tables")]
    pub max_tables: usize,
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

fn default_max_tables() -> usize {
    100
}

/// The placeholder that routes by a record's topic rather than a field of its value.
pub const TOPIC_PLACEHOLDER: &str = "_kafka_topic";

/// A table name routed by record fields: literal text and `{field}` placeholders, such as
/// `{interaction_type}_events`. A record's table is the template with each placeholder
/// replaced by the field's value made into a plain identifier ([`route_name_part`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTemplate {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    Field(String),
}

impl TableTemplate {
    /// Parses a table name; `Ok(None)` when it has no placeholder (a fixed table).
    pub fn parse(text: &str) -> Result<Option<TableTemplate>, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(TemplatePart::Literal(rest.to_string()));
                    break;
                }
                Some(at) if rest.as_bytes()[at] == b'}' => {
                    return Err(format!("`{text}`: `}}` without a `{{` before it"));
                }
                Some(at) => {
                    if at > 0 {
                        parts.push(TemplatePart::Literal(rest[..at].to_string()));
                    }
                    let Some(end) = rest[at..].find('}') else {
                        return Err(format!("`{text}`: `{{` without a closing `}}`"));
                    };
                    let field = rest[at + 1..at + end].trim();
                    if field.is_empty() || field.contains('{') {
                        return Err(format!(
                            "`{text}`: a placeholder names one field, such as `{{kind}}`"
                        ));
                    }
                    if matches!(parts.last(), Some(TemplatePart::Field(_))) {
                        return Err(format!(
                            "`{text}`: two placeholders need text between them, such as \
                             `{{a}}_{{b}}`, or names could be read two ways"
                        ));
                    }
                    parts.push(TemplatePart::Field(field.to_string()));
                    rest = &rest[at + end + 1..];
                }
            }
        }
        if parts
            .iter()
            .any(|part| matches!(part, TemplatePart::Field(_)))
        {
            Ok(Some(TableTemplate { parts }))
        } else {
            Ok(None)
        }
    }

    /// The fields a record's table depends on, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Field(field) => Some(field.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// The table name for one value per field (in the order of [`TableTemplate::fields`]),
    /// each made into an identifier with [`route_name_part`]. `None` when a value leaves
    /// nothing of it.
    pub fn render<S: AsRef<str>>(&self, values: &[S]) -> Option<String> {
        let mut name = String::new();
        let mut values = values.iter();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => name.push_str(text),
                TemplatePart::Field(_) => {
                    let value = route_name_part(values.next()?.as_ref());
                    if value.is_empty() {
                        return None;
                    }
                    name.push_str(&value);
                }
            }
        }
        Some(name)
    }

    /// Whether `name` is one this template can render: its literal text in place, and
    /// between it, non-empty runs of what [`route_name_part`] produces.
    pub fn matches(&self, name: &str) -> bool {
        fn matches_from(parts: &[TemplatePart], name: &str) -> bool {
            match parts.split_first() {
                None => name.is_empty(),
                Some((TemplatePart::Literal(text), rest)) => name
                    .strip_prefix(text.as_str())
                    .is_some_and(|name| matches_from(rest, name)),
                Some((TemplatePart::Field(_), rest)) => {
                    let run = name.find(|c: char| !is_route_char(c)).unwrap_or(name.len());
                    (1..=run).any(|end| matches_from(rest, &name[end..]))
                }
            }
        }
        matches_from(&self.parts, name)
    }
}

impl TableTemplate {
    /// Whether some table name fits both templates (so that two pipelines could write one
    /// table). Each template is read as a pattern of characters, a placeholder being one or
    /// more of `[a-z0-9_]`; the patterns' product is searched for a common match.
    pub fn overlaps(&self, other: &TableTemplate) -> bool {
        #[derive(Clone, Copy)]
        enum Atom {
            Char(char),
            /// One route character.
            One,
            /// Any number of route characters.
            Many,
        }
        fn atoms(template: &TableTemplate) -> Vec<Atom> {
            let mut atoms = Vec::new();
            for part in &template.parts {
                match part {
                    TemplatePart::Literal(text) => atoms.extend(text.chars().map(Atom::Char)),
                    TemplatePart::Field(_) => atoms.extend([Atom::One, Atom::Many]),
                }
            }
            atoms
        }
        fn accepts(atom: Atom, c: char) -> bool {
            match atom {
                Atom::Char(x) => x == c,
                Atom::One | Atom::Many => is_route_char(c),
            }
        }
        /// The positions reachable from `at` without reading (past `Many` atoms).
        fn closure(atoms: &[Atom], mut at: usize) -> Vec<usize> {
            let mut positions = vec![at];
            while let Some(Atom::Many) = atoms.get(at) {
                at += 1;
                positions.push(at);
            }
            positions
        }
        let (a, b) = (atoms(self), atoms(other));
        // Characters that can tell patterns apart: every literal one, and one route character
        // that no literal has (all such behave alike).
        let mut alphabet: Vec<char> = self
            .parts
            .iter()
            .chain(&other.parts)
            .filter_map(|part| match part {
                TemplatePart::Literal(text) => Some(text.chars()),
                TemplatePart::Field(_) => None,
            })
            .flatten()
            .collect();
        if let Some(fresh) = ('a'..='z')
            .chain('0'..='9')
            .chain(['_'])
            .find(|c| !alphabet.contains(c))
        {
            alphabet.push(fresh);
        }
        alphabet.sort_unstable();
        alphabet.dedup();
        let mut seen = std::collections::HashSet::new();
        let mut pending = Vec::new();
        for p in closure(&a, 0) {
            for q in closure(&b, 0) {
                pending.push((p, q));
            }
        }
        while let Some((p, q)) = pending.pop() {
            if !seen.insert((p, q)) {
                continue;
            }
            if p == a.len() && q == b.len() {
                return true;
            }
            let (Some(&x), Some(&y)) = (a.get(p), b.get(q)) else {
                continue;
            };
            for &c in &alphabet {
                if accepts(x, c) && accepts(y, c) {
                    // `Many` stays where it is after reading.
                    let next_p = if matches!(x, Atom::Many) { p } else { p + 1 };
                    let next_q = if matches!(y, Atom::Many) { q } else { q + 1 };
                    for p in closure(&a, next_p) {
                        for q in closure(&b, next_q) {
                            pending.push((p, q));
                        }
                    }
                }
            }
        }
        false
    }
}

fn is_route_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// A field value as part of a table name: lowercase ASCII letters, digits and underscores,
/// every other character (`-`, `.`, spaces, non-ASCII) becoming `_`, at most 64 characters.
/// `cat-interactions` gives `cat_interactions`, `Play Time` gives `play_time`.
pub fn route_name_part(value: &str) -> String {
    value
        .trim()
        .chars()
        .take(64)
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if is_route_char(c) { c } else { '_' }
        })
        .collect()
}

impl PipelineConfig {
    /// `(schema, table)` as configured.
    pub fn table_parts(&self) -> (&str, &str) {
        self.table.split_once('.').unwrap_or(("", &self.table))
    }

    /// The routing template of `table`, when its table part has placeholders.
    pub fn route(&self) -> Option<TableTemplate> {
        TableTemplate::parse(self.table_parts().1).ok().flatten()
    }

    /// `(schema, table)` of the table the pipeline writes: `table` itself, or for Debezium its
    /// change log `<table>_changelog`. For a routed pipeline, the table part is the template.
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

    /// A routed pipeline must not be able to make the name of a table that something else
    /// writes: a dead-letter table, or another pipeline's table (whose offsets it would move).
    fn check_route_collisions(
        &self,
        name: &str,
        pipeline: &PipelineConfig,
    ) -> Result<(), (String, String)> {
        let Some(route) = pipeline.route() else {
            return Ok(());
        };
        let schema = pipeline.table_parts().0;
        for (other_name, other) in &self.pipelines {
            let mut taken = vec![(other.dead_letter_parts(), "the dead-letter table of")];
            if other_name != name && other.route().is_none() {
                // What it writes, and for Debezium also the current-state view named `table`.
                let (other_schema, other_table) = other.table_parts();
                let named = (other_schema.to_string(), other_table.to_string());
                let landing = other.landing_parts();
                if landing != named {
                    taken.push((landing, "the table of"));
                }
                taken.push((named, "the table of"));
            }
            if other_name != name
                && let Some(other_route) = other.route()
                && other.table_parts().0 == schema
                && route.overlaps(&other_route)
            {
                return Err((
                    format!("ingest.pipelines.{name}.table"),
                    format!(
                        "`{}` and pipeline `{other_name}`'s `{}` could name the same table; \
                         give one of them another schema, or text the other's names cannot have",
                        pipeline.table, other.table
                    ),
                ));
            }
            for ((taken_schema, taken_table), what) in taken {
                if taken_schema == schema && route.matches(&taken_table) {
                    return Err((
                        format!("ingest.pipelines.{name}.table"),
                        format!(
                            "`{}` could name `{taken_schema}.{taken_table}`, {what} pipeline \
                             `{other_name}`; give that table another schema, or this template \
                             text that the name does not have",
                            pipeline.table
                        ),
                    ));
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
        for (field, value) in [
            ("small_file_size", &maintenance.small_file_size),
            ("compact_max_bytes", &maintenance.compact_max_bytes),
        ] {
            if crate::parse_size(value).is_none_or(|bytes| bytes == 0) {
                return Err((
                    format!("ingest.maintenance.{field}"),
                    format!("`{value}` is not a size such as \"32MB\""),
                ));
            }
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
            if schema.contains(['{', '}']) {
                return Err((
                    key("table"),
                    format!(
                        "`{}`: routing chooses the table, not the schema; put placeholders after the dot",
                        pipeline.table
                    ),
                ));
            }
            let route = TableTemplate::parse(table).map_err(|reason| (key("table"), reason))?;
            if let Some(route) = &route {
                if pipeline.format == ValueFormat::Debezium {
                    return Err((
                        key("table"),
                        "a Debezium pipeline lands one source table; give each its own pipeline \
                         instead of a routed table name"
                            .into(),
                    ));
                }
                if pipeline.format == ValueFormat::Avro
                    && let Some(field) = route.fields().find(|field| *field != TOPIC_PLACEHOLDER)
                {
                    return Err((
                        key("table"),
                        format!(
                            "an Avro pipeline routes by `{{{TOPIC_PLACEHOLDER}}}` only, not by the \
                             field `{field}`"
                        ),
                    ));
                }
                if pipeline.max_tables == 0 {
                    return Err((key("max_tables"), "must be at least 1".into()));
                }
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
            self.check_route_collisions(name, pipeline)?;
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
        for (name, rule) in &self.rules {
            self.validate_rule(name, rule)?;
        }
        Ok(())
    }

    fn validate_rule(
        &self,
        name: &str,
        rule: &crate::rules::RuleConfig,
    ) -> Result<(), (String, String)> {
        let key = |field: &str| format!("ingest.rules.{name}.{field}");
        if !crate::is_valid_catalog_name(name) {
            return Err((
                format!("ingest.rules.{name}"),
                "a rule name must start with a lowercase letter and contain only lowercase \
                 letters, digits and underscores"
                    .into(),
            ));
        }
        let shape = rule.shape().map_err(|reason| (key("sql"), reason))?;
        let Some(pipeline) = self.pipelines.get(&shape.source) else {
            return Err((
                key("sql"),
                format!(
                    "FROM `{}`: no such pipeline in [ingest.pipelines] (a rule reads the records \
                     of a pipeline, decoded as the pipeline decodes them)",
                    shape.source
                ),
            ));
        };
        if let Some(cooldown) = &rule.cooldown
            && parse_duration(cooldown).is_none_or(|duration| duration.is_zero())
        {
            return Err((
                key("cooldown"),
                format!("`{cooldown}` is not a duration such as \"10m\""),
            ));
        }
        if parse_duration(&rule.state_ttl).is_none_or(|duration| duration.is_zero()) {
            return Err((
                key("state_ttl"),
                format!("`{}` is not a duration such as \"1d\"", rule.state_ttl),
            ));
        }
        if let Some(url) = &rule.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err((
                key("webhook_url"),
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        if let Some(sink) = &rule.postgres
            && sink.table_parts().is_none()
        {
            return Err((
                key("postgres.table"),
                format!("`{}` is not of the form schema.table", sink.table),
            ));
        }
        if let Some(topic) = &rule.kafka_topic
            && (topic.trim().is_empty() || pipeline.topics.contains(topic))
        {
            return Err((
                key("kafka_topic"),
                format!(
                    "`{topic}`: alerts need a topic of their own, not one the rule reads \
                     (its alerts would feed it again)"
                ),
            ));
        }
        for (field, value) in [
            ("watermark_delay", &rule.watermark_delay),
            ("allowed_lateness", &rule.allowed_lateness),
        ] {
            if parse_duration(value).is_none() {
                return Err((
                    key(field),
                    format!("`{value}` is not a duration such as \"5s\""),
                ));
            }
        }
        let windowed = shape.kind == crate::RuleKind::Windowed;
        match &rule.late_events_topic {
            None if windowed => {
                return Err((
                    key("late_events_topic"),
                    "a windowed rule needs a topic for the records that arrive after their \
                     window closed (later than allowed_lateness), so that none is dropped \
                     unseen; land it in the lake with a pipeline"
                        .into(),
                ));
            }
            Some(_) if !windowed => {
                return Err((
                    key("late_events_topic"),
                    "only rules that GROUP BY a time window (TUMBLE, HOP, SESSION) have late \
                     records"
                        .into(),
                ));
            }
            Some(topic)
                if topic.trim().is_empty()
                    || pipeline.topics.contains(topic)
                    || rule.kafka_topic.as_ref() == Some(topic) =>
            {
                return Err((
                    key("late_events_topic"),
                    format!(
                        "`{topic}`: late records need a topic of their own, neither one the \
                         rule reads nor its alerts' topic"
                    ),
                ));
            }
            _ => {}
        }
        if let Some(idle) = &rule.idle_timeout {
            if !windowed {
                return Err((
                    key("idle_timeout"),
                    "only rules that GROUP BY a time window (TUMBLE, HOP, SESSION) have a \
                     watermark to move"
                        .into(),
                ));
            }
            if parse_duration(idle).is_none_or(|duration| duration.is_zero()) {
                return Err((
                    key("idle_timeout"),
                    format!("`{idle}` is not a duration such as \"30s\""),
                ));
            }
        }
        if windowed && rule.cooldown.is_some() {
            return Err((
                key("cooldown"),
                "a windowed rule gives one result per key and window, when the window closes; \
                 a cooldown has no meaning there"
                    .into(),
            ));
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

    #[test]
    fn templates_overlap_when_one_name_fits_both() {
        let template = |text: &str| TableTemplate::parse(text).unwrap().unwrap();
        let overlap = |a: &str, b: &str| {
            let (a, b) = (template(a), template(b));
            assert_eq!(a.overlaps(&b), b.overlaps(&a), "not symmetric");
            a.overlaps(&b)
        };
        // `play_events` fits both.
        assert!(overlap("{kind}_events", "play_{x}"));
        assert!(overlap("{a}_{b}", "{c}"));
        assert!(overlap("{kind}_events", "{kind}_events"));
        assert!(overlap("x{a}y", "{b}y"));
        // No name ends in both `_events` and `_raw`; `{kind}` is never empty.
        assert!(!overlap("{kind}_events", "{kind}_raw"));
        assert!(overlap("raw_{kind}", "{kind}"));
        assert!(!overlap("x-{kind}", "{kind}"));
        assert!(!overlap("a{x}", "b{x}"));
        // A placeholder never yields `-`.
        assert!(!overlap("{a}-x", "{b}_x"));
        assert!(overlap("{a}_x", "{b}_x"));
    }

    #[test]
    fn routed_table_names_render_and_match() {
        assert_eq!(TableTemplate::parse("cat_events"), Ok(None));
        let template = TableTemplate::parse("{kind}_events").unwrap().unwrap();
        assert_eq!(template.fields().collect::<Vec<_>>(), ["kind"]);
        assert_eq!(
            template.render(&["Play Time"]).as_deref(),
            Some("play_time_events")
        );
        assert_eq!(template.render(&["  "]), None);
        assert!(template.matches("play_time_events"));
        assert!(template.matches("a_events_events"));
        assert!(!template.matches("_events"));
        assert!(!template.matches("Play_events"));
        assert!(!template.matches("play_events_raw"));
        let topics = TableTemplate::parse("{_kafka_topic}_raw_{v}")
            .unwrap()
            .unwrap();
        assert_eq!(
            topics.render(&["cat-interactions", "2"]).as_deref(),
            Some("cat_interactions_raw_2")
        );
        assert!(topics.matches("cat_interactions_raw_2"));
        assert_eq!(route_name_part("Größe.x"), "gr__e_x");
        for bad in ["{kind", "kind}", "{}_x", "{a}{b}"] {
            assert!(TableTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
