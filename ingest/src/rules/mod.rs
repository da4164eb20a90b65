//! Alert rules: SQL from `[ingest.rules.<name>]` evaluated continuously over a pipeline's
//! records ([`eval`]), and the alerts delivered to a Kafka topic and to the sidecar's live feed.
//!
//! Each rule runs on a thread of its own with its own consumer, reading every partition of its
//! pipeline's topics (assigned, not shared through a group, because a rule's keys are not the
//! topics' keys), decoded as the pipeline decodes them. Records are taken in micro-batches:
//! what the consumer holds when the first record arrives, up to [`BATCH_WAIT`] or
//! [`BATCH_RECORDS`] while more keep coming; a batch's alerts are delivered before its offsets are committed
//! under the rule's own consumer group (`<group_id>-rule-<name>`).
//!
//! After a restart (a kill -9 included) a rule picks up where it was, without repeating or
//! missing an alert:
//! - a grouped rule rebuilds its per-key state by reading its topics again from the start
//!   (the state TTL bounds what matters), and a per-record rule starts at its committed
//!   offsets;
//! - alerts raised by records before the committed offsets were delivered before that commit,
//!   so they are not sent again;
//! - alerts delivered after the last commit, before the crash, are found in the rule's Kafka
//!   topic (read once at start, by alert id) and not sent again; the same read tells a
//!   per-record rule when each key last fired, so its cooldowns hold across the restart. A
//!   windowed rule's late records are found in their topic the same way.

pub mod eval;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arrow::datatypes::{Schema, SchemaRef};
use fjord_config::{KafkaConfig, PipelineConfig, RuleConfig, RuleKind, RuleShape};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::debezium::DebeziumState;
use crate::decode::{Chunk, DecodeState, Decoded, META_COLUMNS, decode_json, infer_table_schema};
use eval::{Alert, LateRecord, RuleEngine, RuleSettings, WindowSettings};

/// Longest a record waits before its batch is evaluated, while more keep coming.
pub const BATCH_WAIT: Duration = Duration::from_millis(100);
/// librdkafka's `fetch.wait.max.ms` for rule consumers, unless `[ingest.kafka.properties]`
/// sets it.
const RULE_FETCH_WAIT_MS: &str = "10";
/// How often a quiet rule lets time pass (windowed rules with an idle timeout).
const TICK: Duration = Duration::from_secs(1);
/// Most records evaluated in one batch.
const BATCH_RECORDS: usize = 10_000;
/// Alerts the live feed keeps for pages that open later.
const FEED_RECENT: usize = 500;

/// What one rule reports.
#[derive(Default)]
pub struct RuleMetrics {
    pub records: AtomicU64,
    pub alerts: AtomicU64,
    pub state: Mutex<RuleState>,
}

#[derive(Debug, Clone, Default)]
pub struct RuleState {
    pub running: bool,
    /// Keys with state (grouped rules).
    pub keys: u64,
    /// The last error, cleared by the next batch delivered.
    pub last_error: Option<String>,
}

/// An alert on the feed: its rule, and the alert as JSON text (its columns in SELECT order).
#[derive(Debug)]
pub struct FeedAlert {
    pub rule: Arc<str>,
    pub json: String,
}

/// Alerts as they fire, for the live page: the newest [`FEED_RECENT`] and a channel to follow.
#[derive(Clone)]
pub struct AlertFeed {
    recent: Arc<Mutex<VecDeque<Arc<FeedAlert>>>>,
    sender: broadcast::Sender<Arc<FeedAlert>>,
}

impl Default for AlertFeed {
    fn default() -> Self {
        AlertFeed {
            recent: Arc::default(),
            sender: broadcast::channel(1024).0,
        }
    }
}

impl AlertFeed {
    pub fn publish(&self, alert: &Alert) {
        let alert = Arc::new(FeedAlert {
            rule: alert.rule.clone(),
            json: alert.to_json_text(),
        });
        let mut recent = self.recent.lock();
        if recent.len() == FEED_RECENT {
            recent.pop_front();
        }
        recent.push_back(alert.clone());
        let _ = self.sender.send(alert);
    }

    /// The kept alerts, newest first.
    pub fn recent(&self) -> Vec<Arc<FeedAlert>> {
        self.recent.lock().iter().rev().cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedAlert>> {
        self.sender.subscribe()
    }
}

/// The sinks that took the batch being delivered.
#[derive(Default)]
struct Delivered {
    late: bool,
    kafka: bool,
    postgres: bool,
}

/// Everything a rule's thread needs.
pub struct RuleSpec {
    pub name: String,
    pub config: RuleConfig,
    /// What the config check learned of the rule's SQL.
    pub shape: RuleShape,
    pub pipeline: PipelineConfig,
    pub kafka: KafkaConfig,
    pub metrics: Arc<RuleMetrics>,
    pub feed: AlertFeed,
    /// The Postgres table alerts are upserted into.
    pub postgres: Option<PostgresSink>,
    /// The schema registry, for a rule over an Avro pipeline.
    pub registry: Option<fjord_config::SchemaRegistryConfig>,
}

/// A Postgres table that receives a rule's alerts by upsert on `key`.
pub struct PostgresSink {
    pub catalog: Arc<fjord_postgres::PostgresCatalog>,
    pub schema: String,
    pub table: String,
    pub key: Vec<String>,
}

/// Runs a rule until `shutdown`; an error stops it (a rule that cannot be planned against its
/// stream's columns).
pub fn run_rule(spec: RuleSpec, handle: Handle, shutdown: CancellationToken) -> Result<(), String> {
    spec.metrics.state.lock().running = true;
    let result = Runner::new(&spec, handle).and_then(|mut runner| runner.run(&shutdown));
    let mut state = spec.metrics.state.lock();
    state.running = false;
    if let Err(error) = &result {
        tracing::error!(rule = %spec.name, %error, "the rule stopped");
        state.last_error = Some(error.clone());
    }
    result
}

struct Runner<'a> {
    spec: &'a RuleSpec,
    handle: Handle,
    consumer: BaseConsumer,
    producer: Option<FutureProducer>,
    webhook: reqwest::Client,
    schema: Option<SchemaRef>,
    engine: Option<RuleEngine>,
    decode_state: DecodeState,
    /// For a Debezium pipeline: column types and keys learnt from the change events.
    debezium: Option<DebeziumState>,
    /// For an Avro pipeline: the decoder with the writers' schemas from the registry.
    avro: Option<crate::avro::AvroDecoder>,
    chunk: Chunk,
    /// Next offset per partition after the records in `chunk`.
    next: BTreeMap<(Arc<str>, i32), i64>,
    topics: BTreeMap<String, Arc<str>>,
    /// The rule's committed offsets when it started: alerts from records before them were
    /// delivered by an earlier run.
    committed: HashMap<(String, i32), i64>,
    /// Ids of this rule's alerts already in its Kafka topic when it started.
    delivered: HashSet<String>,
    /// When each key last fired, from those alerts: a per-record rule's cooldowns.
    firings: HashMap<String, SystemTime>,
    /// Partitions a grouped rule still reads again up to its committed offset, to rebuild
    /// its state; records past that wait in `held` meanwhile.
    replay_until: HashMap<(String, i32), i64>,
    held: Chunk,
}

impl<'a> Runner<'a> {
    fn new(spec: &'a RuleSpec, handle: Handle) -> Result<Runner<'a>, String> {
        let mut config = crate::pipeline::client_config(&spec.kafka, None);
        config
            .set(
                "group.id",
                format!("{}-rule-{}", spec.kafka.group_id, spec.name),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", spec.config.start_from.as_librdkafka())
            .set("isolation.level", "read_committed");
        // A broker may hold a fetch this long even when it has records (tansu does): short,
        // for alerts within milliseconds, unless the operator chose otherwise.
        if !spec.kafka.properties.contains_key("fetch.wait.max.ms") {
            config.set("fetch.wait.max.ms", RULE_FETCH_WAIT_MS);
        }
        let consumer: BaseConsumer = config
            .create()
            .map_err(|error| format!("cannot create the rule's consumer: {error}"))?;
        let producer = match spec
            .config
            .kafka_topic
            .as_ref()
            .or(spec.config.late_events_topic.as_ref())
        {
            Some(_) => Some(
                // A batch's alerts are produced together and then awaited: waiting for more
                // to join them would only delay them.
                crate::pipeline::client_config(&spec.kafka, None)
                    .set("acks", "all")
                    .set("linger.ms", "0")
                    .create::<FutureProducer>()
                    .map_err(|error| format!("cannot create the alerts' producer: {error}"))?,
            ),
            None => None,
        };
        Ok(Runner {
            spec,
            handle,
            consumer,
            producer,
            webhook: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|error| format!("cannot make the webhook client: {error}"))?,
            schema: None,
            engine: None,
            decode_state: DecodeState::default(),
            debezium: (spec.pipeline.format == fjord_config::ValueFormat::Debezium)
                .then(DebeziumState::default),
            avro: match spec.pipeline.format {
                fjord_config::ValueFormat::Avro => Some(crate::avro::AvroDecoder::new(
                    spec.registry
                        .clone()
                        .ok_or("an Avro pipeline needs [ingest.schema_registry]")?,
                )),
                _ => None,
            },
            chunk: Chunk::default(),
            next: BTreeMap::new(),
            topics: BTreeMap::new(),
            committed: HashMap::new(),
            delivered: HashSet::new(),
            firings: HashMap::new(),
            replay_until: HashMap::new(),
            held: Chunk::default(),
        })
    }

    fn run(&mut self, shutdown: &CancellationToken) -> Result<(), String> {
        self.assign(shutdown)?;
        if let Some(topic) = self.spec.config.kafka_topic.clone() {
            self.load_delivered(&topic, "alert_id")?;
        }
        if let Some(topic) = self.spec.config.late_events_topic.clone() {
            self.load_delivered(&topic, "late_id")?;
        }
        let mut first_at: Option<Instant> = None;
        let mut last_tick = Instant::now();
        while !shutdown.is_cancelled() {
            // With records in hand, only what the consumer already holds joins them: a batch
            // is evaluated as soon as the consumer has nothing more at once.
            let wait = if self.chunk.is_empty() {
                BATCH_WAIT
            } else {
                Duration::ZERO
            };
            let mut drained = false;
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let topic = self
                        .topics
                        .entry(message.topic().to_string())
                        .or_insert_with(|| Arc::from(message.topic()))
                        .clone();
                    let (partition, offset) = (message.partition(), message.offset());
                    // While a grouped rule rebuilds its state, records its last run had not
                    // evaluated wait until every partition caught up, so that the state they
                    // meet is the state they met before.
                    let mut replayed = false;
                    let replaying = !self.replay_until.is_empty();
                    if replaying {
                        let position = (topic.to_string(), partition);
                        if let Some(end) = self.replay_until.get(&position).copied() {
                            replayed = offset < end;
                            if offset + 1 >= end {
                                self.replay_until.remove(&position);
                            }
                        }
                    }
                    let target = if replayed || !replaying {
                        &mut self.chunk
                    } else {
                        &mut self.held
                    };
                    // A Debezium event becomes its change-log row, as the pipeline lands it.
                    if let Err(error) = target.push_record(self.debezium.as_mut(), topic, &message)
                    {
                        tracing::debug!(rule = %self.spec.name, %error, "a record that is not a change event is skipped (the pipeline sends it to its dead letters)");
                    }
                    first_at.get_or_insert_with(Instant::now);
                    if replaying && self.replay_until.is_empty() {
                        // Caught up: the replayed records first, then the held ones.
                        tracing::info!(rule = %self.spec.name, "state rebuilt from the topics");
                        self.evaluate_until_delivered(shutdown)?;
                        self.chunk = std::mem::take(&mut self.held);
                        first_at = (!self.chunk.is_empty()).then(Instant::now);
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(rule = %self.spec.name, %error, "reading the rule's topics");
                }
                None => drained = true,
            }
            if drained
                && self.chunk.is_empty()
                && self.replay_until.is_empty()
                && last_tick.elapsed() >= TICK
            {
                last_tick = Instant::now();
                self.tick(shutdown)?;
            }
            let due = (drained && !self.chunk.is_empty())
                || first_at.is_some_and(|first| first.elapsed() >= BATCH_WAIT)
                || self.chunk.len() >= BATCH_RECORDS;
            if due {
                self.evaluate_until_delivered(shutdown)?;
                first_at = None;
            }
        }
        Ok(())
    }

    /// Assigns every partition of the pipeline's topics, at the rule's committed offsets
    /// (`start_from` for partitions it has none for). Waits for topics that do not exist yet.
    fn assign(&mut self, shutdown: &CancellationToken) -> Result<(), String> {
        let mut reported = false;
        loop {
            let mut list = TopicPartitionList::new();
            let mut missing = Vec::new();
            for topic in &self.spec.pipeline.topics {
                match partition_count(&self.consumer, topic) {
                    Ok(partitions) => {
                        if partitions == 0 {
                            missing.push(topic.clone());
                        }
                        for partition in 0..partitions {
                            list.add_partition(topic, partition as i32);
                        }
                    }
                    Err(error) => missing.push(format!("{topic} ({error})")),
                }
            }
            if missing.is_empty() {
                let committed = self
                    .consumer
                    .committed_offsets(list.clone(), Duration::from_secs(10))
                    .map_err(|error| {
                        format!("cannot read the rule's committed offsets: {error}")
                    })?;
                let start = match self.spec.config.start_from {
                    fjord_config::StartFrom::Earliest => Offset::Beginning,
                    fjord_config::StartFrom::Latest => Offset::End,
                };
                for element in committed.elements() {
                    if let Offset::Offset(offset) = element.offset()
                        && offset >= 0
                    {
                        self.committed
                            .insert((element.topic().to_string(), element.partition()), offset);
                    }
                }
                // A grouped rule reads everything again to rebuild its state; a first run
                // told to start at the end has no state to rebuild.
                let replay = self.spec.shape.kind != RuleKind::PerRecord
                    && (!self.committed.is_empty()
                        || self.spec.config.start_from == fjord_config::StartFrom::Earliest);
                if replay {
                    for (position, end) in &self.committed {
                        let (low, _) = self
                            .consumer
                            .fetch_watermarks(&position.0, position.1, Duration::from_secs(10))
                            .map_err(|error| format!("cannot read the rule's topics: {error}"))?;
                        if *end > low {
                            self.replay_until.insert(position.clone(), *end);
                        }
                    }
                }
                let mut assignment = TopicPartitionList::new();
                for element in committed.elements() {
                    let offset = match element.offset() {
                        _ if replay => Offset::Beginning,
                        Offset::Offset(offset) if offset >= 0 => Offset::Offset(offset),
                        _ => start,
                    };
                    assignment
                        .add_partition_offset(element.topic(), element.partition(), offset)
                        .map_err(|error| error.to_string())?;
                }
                self.consumer
                    .assign(&assignment)
                    .map_err(|error| format!("cannot assign the rule's partitions: {error}"))?;
                tracing::info!(rule = %self.spec.name, partitions = assignment.count(), "rule started");
                self.spec.metrics.state.lock().last_error = None;
                return Ok(());
            }
            if !reported {
                tracing::warn!(rule = %self.spec.name, topics = ?missing, "waiting for the rule's topics to exist");
                self.spec.metrics.state.lock().last_error =
                    Some(format!("waiting for topics {}", missing.join(", ")));
                reported = true;
            }
            if self
                .handle
                .block_on(tokio::time::timeout(
                    Duration::from_secs(1),
                    shutdown.cancelled(),
                ))
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Evaluates the buffered records and delivers their alerts, retrying delivery until it
    /// succeeds (or shutdown); then commits the records' offsets.
    fn evaluate_until_delivered(&mut self, shutdown: &CancellationToken) -> Result<(), String> {
        for i in 0..self.chunk.len() {
            let position = (self.chunk.topics[i].clone(), self.chunk.partitions[i]);
            let next = self.chunk.offsets[i] + 1;
            let entry = self.next.entry(position).or_insert(next);
            *entry = (*entry).max(next);
        }
        let mut alerts = self.evaluate()?;
        let raised = alerts.len();
        alerts.retain(|alert| !self.sent_before(alert));
        if alerts.len() < raised {
            tracing::debug!(rule = %self.spec.name, skipped = raised - alerts.len(), "alerts delivered by an earlier run");
        }
        let mut late = self
            .engine
            .as_mut()
            .map(RuleEngine::take_late)
            .unwrap_or_default();
        // Late records before the committed offsets, or found in their topic at start, went
        // there in an earlier run.
        late.retain(|record| {
            !self.committed_before(&record.source) && !self.delivered.contains(&record.id)
        });
        if self.deliver_until_done(&alerts, &late, shutdown) {
            self.commit();
        }
        Ok(())
    }

    /// Lets a windowed rule with an idle timeout close the windows the clock carries its
    /// watermark past while no record comes, and delivers their alerts.
    fn tick(&mut self, shutdown: &CancellationToken) -> Result<(), String> {
        let Some(engine) = &mut self.engine else {
            return Ok(());
        };
        let mut alerts = engine.tick(SystemTime::now())?;
        alerts.retain(|alert| !self.sent_before(alert));
        if !alerts.is_empty() {
            self.deliver_until_done(&alerts, &[], shutdown);
        }
        Ok(())
    }

    /// Delivers to every sink, retrying until it succeeds; then to the live feed. False when
    /// shutdown came first (nothing may be committed then).
    fn deliver_until_done(
        &mut self,
        alerts: &[Alert],
        late: &[LateRecord],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(200);
        let mut done = Delivered::default();
        loop {
            match self
                .deliver_late(late, &mut done)
                .and_then(|()| self.deliver(alerts, &mut done))
            {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(rule = %self.spec.name, %error, "cannot deliver alerts; retrying");
                    self.spec.metrics.state.lock().last_error = Some(error);
                    let cancelled = self
                        .handle
                        .block_on(tokio::time::timeout(backoff, shutdown.cancelled()))
                        .is_ok();
                    if cancelled {
                        // Not committed: the records are read again next time.
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        for alert in alerts {
            self.spec.feed.publish(alert);
        }
        let metrics = &self.spec.metrics;
        metrics
            .alerts
            .fetch_add(alerts.len() as u64, Ordering::Relaxed);
        {
            let mut state = metrics.state.lock();
            state.last_error = None;
            state.keys = self.engine.as_ref().map_or(0, |e| e.keys_held() as u64);
        }
        true
    }

    /// Whether an earlier run of the rule delivered `alert`.
    fn sent_before(&self, alert: &Alert) -> bool {
        self.committed_before(&alert.source) || self.delivered.contains(&alert.id)
    }

    /// Whether an earlier run committed past `position` (after delivering all it raised).
    fn committed_before(&self, (topic, partition, offset): &eval::Position) -> bool {
        self.committed
            .get(&(topic.to_string(), *partition))
            .is_some_and(|committed| offset < committed)
    }

    /// Reads the ids (`id_field`) of this rule's alerts or late records in `topic` (all of it,
    /// once, at start).
    fn load_delivered(&mut self, topic: &str, id_field: &str) -> Result<(), String> {
        let reader: BaseConsumer = crate::pipeline::client_config(&self.spec.kafka, None)
            .set(
                "group.id",
                format!(
                    "{}-rule-{}-reader",
                    self.spec.kafka.group_id, self.spec.name
                ),
            )
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|error| format!("cannot read the alerts' topic `{topic}`: {error}"))?;
        let partitions = partition_count(&reader, topic)
            .map_err(|error| format!("cannot read the alerts' topic `{topic}`: {error}"))?;
        let mut list = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for partition in 0..partitions as i32 {
            let (low, high) = reader
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(|error| format!("cannot read the alerts' topic `{topic}`: {error}"))?;
            if high > low {
                ends.insert(partition, high);
                list.add_partition_offset(topic, partition, Offset::Beginning)
                    .map_err(|error| error.to_string())?;
            }
        }
        if ends.is_empty() {
            return Ok(());
        }
        reader
            .assign(&list)
            .map_err(|error| format!("cannot read the alerts' topic `{topic}`: {error}"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut read = 0u64;
        loop {
            match reader.poll(Duration::from_millis(500)) {
                Some(Ok(message)) => {
                    read += 1;
                    if let Some(alert) = message.payload().and_then(|payload| {
                        serde_json::from_slice::<serde_json::Value>(payload).ok()
                    }) && alert["rule"].as_str() == Some(self.spec.name.as_str())
                        && let Some(id) = alert[id_field].as_str()
                    {
                        self.delivered.insert(id.to_string());
                        if let (Some(key), Some(fired_at)) =
                            (alert["key"].as_str(), alert["fired_at"].as_str())
                            && let Ok(at) = chrono::DateTime::parse_from_rfc3339(fired_at)
                        {
                            let at = SystemTime::from(at);
                            let last = self.firings.entry(key.to_string()).or_insert(at);
                            *last = (*last).max(at);
                        }
                    }
                    if ends
                        .get(&message.partition())
                        .is_some_and(|end| message.offset() + 1 >= *end)
                    {
                        ends.remove(&message.partition());
                    }
                }
                Some(Err(error)) => {
                    return Err(format!("cannot read the alerts' topic `{topic}`: {error}"));
                }
                // Quiet after every partition reached its end as it was at start.
                None if ends.is_empty() => break,
                None => {}
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "reading the alerts' topic `{topic}` to its end took over 2 minutes"
                ));
            }
        }
        tracing::info!(rule = %self.spec.name, topic, read, delivered = self.delivered.len(), "read the alerts delivered by earlier runs");
        Ok(())
    }

    fn commit(&mut self) {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &self.next {
            if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                tracing::warn!(rule = %self.spec.name, %error, "cannot note an offset");
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Sync) {
            // Not fatal: after a restart the rule reads these records again, and their
            // alerts carry the same ids.
            tracing::warn!(rule = %self.spec.name, %error, "cannot commit the rule's offsets");
        }
    }

    /// Decodes and evaluates the buffered records.
    fn evaluate(&mut self) -> Result<Vec<Alert>, String> {
        let chunk = std::mem::take(&mut self.chunk);
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        self.spec
            .metrics
            .records
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if self.avro.is_some() {
            return self.evaluate_avro(&chunk);
        }
        let event_time = self.spec.pipeline.event_time.as_deref();
        if self.schema.is_none() {
            let inferred = infer_table_schema(&chunk, event_time);
            self.schema = Some(Arc::new(match &self.debezium {
                Some(debezium) => debezium.table_schema(&inferred),
                None => inferred,
            }));
        }
        for _ in 0..8 {
            let schema = self.schema.clone().expect("set above");
            let decoded = decode_json(
                &chunk,
                &schema,
                event_time,
                now_micros(),
                &mut self.decode_state,
            )?;
            match decoded {
                Decoded::Rows { batch, rejected } => {
                    if !rejected.is_empty() {
                        tracing::warn!(rule = %self.spec.name, records = rejected.len(), first = %rejected[0].error, "records the rule cannot decode are skipped (the pipeline sends them to its dead letters)");
                    }
                    let Some(batch) = batch else {
                        return Ok(Vec::new());
                    };
                    return self.engine(&schema)?.process(&batch, SystemTime::now());
                }
                Decoded::NeedsColumns(fields) => self.widen(&schema, fields)?,
            }
        }
        Err("the stream's columns kept changing while decoding".into())
    }

    /// Avro: each record decoded on its writer's schema (from the registry), then shaped as
    /// the rule's columns, as the pipeline shapes them for its table.
    fn evaluate_avro(&mut self, chunk: &Chunk) -> Result<Vec<Alert>, String> {
        let avro = self.avro.as_mut().expect("an Avro pipeline");
        let (batches, rejected) = self.handle.block_on(avro.decode(chunk))?;
        if !rejected.is_empty() {
            tracing::warn!(rule = %self.spec.name, records = rejected.len(), first = %rejected[0].error, "records the rule cannot decode are skipped (the pipeline sends them to its dead letters)");
        }
        let mut alerts = Vec::new();
        for (batch, rows) in &batches {
            if self.schema.is_none() {
                self.schema = Some(Arc::new(crate::avro::table_schema_for(&batch.schema())));
            }
            let mut shaped = None;
            for _ in 0..8 {
                let schema = self.schema.clone().expect("set above");
                match crate::avro::conform(batch, rows, chunk, &schema, now_micros()) {
                    Ok(Decoded::Rows { batch, .. }) => {
                        shaped = Some(batch);
                        break;
                    }
                    Ok(Decoded::NeedsColumns(fields)) => self.widen(&schema, fields)?,
                    Err(error) => {
                        tracing::warn!(rule = %self.spec.name, records = rows.len(), %error, "records that do not fit the rule's columns are skipped");
                        shaped = Some(None);
                        break;
                    }
                }
            }
            let Some(shaped) = shaped else {
                return Err("the stream's columns kept changing while decoding".into());
            };
            if let Some(shaped) = shaped {
                let schema = self.schema.clone().expect("set above");
                alerts.extend(self.engine(&schema)?.process(&shaped, SystemTime::now())?);
            }
        }
        Ok(alerts)
    }

    /// The rule's engine, planned against `schema` the first time.
    fn engine(&mut self, schema: &SchemaRef) -> Result<&mut RuleEngine, String> {
        if self.engine.is_none() {
            let config = &self.spec.config;
            let settings = RuleSettings {
                name: self.spec.name.as_str().into(),
                source: self.spec.shape.source.clone(),
                sql: self.spec.shape.sql.clone(),
                key: config.key.clone(),
                cooldown: config.cooldown(),
                state_ttl: config.state_ttl(),
                window: self.spec.shape.window.clone().map(|window| WindowSettings {
                    window,
                    watermark_delay: config.watermark_delay(),
                    allowed_lateness: config.allowed_lateness(),
                    idle_timeout: config.idle_timeout(),
                }),
            };
            let mut engine = self
                .handle
                .block_on(RuleEngine::new(settings, schema.clone()))
                .map_err(|error| {
                    format!(
                        "rule `{}` cannot be evaluated over pipeline `{}`: {error}",
                        self.spec.name, self.spec.shape.source
                    )
                })?;
            engine.remember_firings(std::mem::take(&mut self.firings));
            self.engine = Some(engine);
        }
        Ok(self.engine.as_mut().expect("planned above"))
    }

    /// Widens the rule's columns with `fields` that records brought, and plans it again.
    fn widen(
        &mut self,
        schema: &SchemaRef,
        fields: Vec<arrow::datatypes::Field>,
    ) -> Result<(), String> {
        let mut all: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| !META_COLUMNS.contains(&f.name().as_str()))
            .map(|f| f.as_ref().clone())
            .collect();
        all.extend(fields.iter().map(|field| match &self.debezium {
            Some(debezium) => debezium.hinted(field),
            None => field.clone(),
        }));
        all.extend(crate::decode::meta_fields());
        let widened = Arc::new(Schema::new(all));
        self.schema = Some(widened.clone());
        if let Some(engine) = &mut self.engine {
            self.handle.block_on(engine.replan(widened))?;
        }
        Ok(())
    }

    /// Delivers to every sink: Kafka, then Postgres, then the webhook. A failure is retried
    /// from the sink that failed (`done` holds the ones that took the batch), so a sink sees a
    /// batch again only when its own delivery was in doubt (with the same alert ids; the
    /// Postgres upsert is idempotent).
    fn deliver(&self, alerts: &[Alert], done: &mut Delivered) -> Result<(), String> {
        if alerts.is_empty() {
            return Ok(());
        }
        if !done.kafka {
            self.deliver_to_kafka(alerts)?;
            done.kafka = true;
        }
        if let Some(sink) = &self.spec.postgres
            && !done.postgres
        {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = alerts
                .iter()
                .filter_map(|alert| match alert.to_json() {
                    serde_json::Value::Object(row) => Some(row),
                    _ => None,
                })
                .collect();
            self.handle
                .block_on(
                    sink.catalog
                        .upsert_json(&sink.schema, &sink.table, &sink.key, &rows),
                )
                .map_err(|error| {
                    format!(
                        "cannot upsert alerts into {}.{}: {error}",
                        sink.schema, sink.table
                    )
                })?;
            done.postgres = true;
        }
        if let Some(url) = &self.spec.config.webhook_url {
            let body = format!(
                "[{}]",
                alerts
                    .iter()
                    .map(Alert::to_json_text)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            self.handle.block_on(async {
                let response = self
                    .webhook
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| format!("the webhook {url} failed: {error}"))?;
                if !response.status().is_success() {
                    return Err(format!("the webhook {url} answered {}", response.status()));
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Sends a windowed rule's late records to its late-events topic, keyed by rule.
    fn deliver_late(&self, late: &[LateRecord], done: &mut Delivered) -> Result<(), String> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.spec.config.late_events_topic)
        else {
            return Ok(());
        };
        if late.is_empty() || done.late {
            return Ok(());
        }
        let payloads: Vec<(String, String)> = late
            .iter()
            .map(|record| (record.rule.to_string(), record.to_json_text()))
            .collect();
        produce_all(&self.handle, producer, topic, &payloads)?;
        done.late = true;
        Ok(())
    }

    fn deliver_to_kafka(&self, alerts: &[Alert]) -> Result<(), String> {
        let (Some(producer), Some(topic)) = (&self.producer, &self.spec.config.kafka_topic) else {
            return Ok(());
        };
        let payloads: Vec<(String, String)> = alerts
            .iter()
            .map(|alert| (alert.key.clone(), alert.to_json_text()))
            .collect();
        produce_all(&self.handle, producer, topic, &payloads)
    }
}

/// Sends `payloads` (key, value) to `topic` and waits until the broker has them all.
fn produce_all(
    handle: &Handle,
    producer: &FutureProducer,
    topic: &str,
    payloads: &[(String, String)],
) -> Result<(), String> {
    handle.block_on(async {
        let mut pending = Vec::with_capacity(payloads.len());
        for (key, value) in payloads {
            let record = FutureRecord::to(topic).key(key).payload(value);
            let delivery = producer
                .send_result(record)
                .map_err(|(error, _)| format!("cannot send an alert to `{topic}`: {error}"))?;
            pending.push(delivery);
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Err(format!("an alert was not delivered to `{topic}`: {error}"));
                }
                Err(_) => return Err(format!("the producer for `{topic}` went away")),
            }
        }
        Ok(())
    })
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Partitions of `topic` (0 when it does not exist).
fn partition_count(consumer: &BaseConsumer, topic: &str) -> rdkafka::error::KafkaResult<usize> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}
