//! One pipeline: a Kafka consumer on a thread of its own, landing its topics in one table.
//!
//! The thread polls librdkafka's consumer, keeps record values in a [`Chunk`], decodes chunks to
//! Arrow, and commits at the first limit of the commit policy. Every commit carries the offsets
//! it covers in the snapshot summary and is fenced (see [`LakeTable::commit_fenced`]): a commit
//! is refused when another writer has committed any of its partitions since this one last
//! looked. Where reading starts is always the table's record, set in the rebalance callback when
//! partitions are assigned, so a restart, a crash or a rebalance resumes exactly after the last
//! committed record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::RecordBatch;
use fjord_config::{KafkaConfig, PipelineConfig, TableTemplate};
use iceberg::Catalog;
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{DeadLetter, dead_letter_batch, dead_letter_schema};
use crate::debezium::DebeziumState;
use crate::decode::{Chunk, DecodeState, Decoded, decode_json, infer_table_schema};
use crate::metrics::{PipelineMetrics, add_elapsed};
use crate::offsets::{OFFSETS_PROPERTY, Offsets, PIPELINE_PROPERTY, WRITER_PROPERTY};
use crate::route::route_record;
use crate::table::{CommitOutcome, Expected, LakeTable};

/// Records decoded at once.
const CHUNK_RECORDS: usize = 16_384;
/// Longest a poll waits, so that time-based commits and shutdown are noticed.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

type Key = (String, i32);

pub struct PipelineSpec {
    pub name: String,
    pub config: PipelineConfig,
    pub kafka: KafkaConfig,
    /// `[ingest.schema_registry]`, for Avro pipelines.
    pub registry: Option<fjord_config::SchemaRegistryConfig>,
    pub catalog: Arc<dyn Catalog>,
    pub metrics: Arc<PipelineMetrics>,
    /// Identifies this sidecar process in snapshot summaries and file names.
    pub writer_id: String,
}

/// Runs the pipeline on the calling thread until `shutdown`, committing what it holds before it
/// returns. Call from a thread outside the Tokio runtime that `handle` belongs to.
pub fn run_pipeline(
    spec: PipelineSpec,
    handle: Handle,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let topics: Vec<String> = spec.config.topics.clone();
    let worker = Arc::new(Mutex::new(Worker::new(spec, handle)));
    let context = {
        let locked = worker.lock();
        IngestContext {
            worker: worker.clone(),
            pipeline: locked.spec.name.clone(),
            metrics: locked.metrics.clone(),
        }
    };
    let consumer: BaseConsumer<IngestContext> = {
        let worker = worker.lock();
        let config = client_config(&worker.spec.kafka, Some(&worker.spec.name));
        drop(worker);
        config
            .create_with_context(context)
            .map_err(|error| format!("cannot create the Kafka consumer: {error}"))?
    };
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|error| format!("cannot subscribe to {topics:?}: {error}"))?;
    {
        let worker = worker.lock();
        worker.metrics.state.lock().running = true;
        tracing::info!(pipeline = %worker.spec.name, topics = ?topics, table = %worker.spec.config.landing_table(), "pipeline started");
    }
    // The worker is locked only between polls: librdkafka runs the rebalance and statistics
    // callbacks inside `poll`, and they lock it too.
    let mut last_rates = (Instant::now(), 0u64, 0u64);
    while !shutdown.is_cancelled() {
        let mut timeout = POLL_INTERVAL;
        for _ in 0..CHUNK_RECORDS {
            let polled = consumer.poll(timeout);
            timeout = Duration::ZERO;
            let mut worker = worker.lock();
            match polled {
                Some(Ok(message)) => worker.accept(&consumer, &message),
                Some(Err(error)) => {
                    tracing::warn!(pipeline = %worker.spec.name, %error, "Kafka consumer error");
                    break;
                }
                None => break,
            }
            if worker.paused() {
                break;
            }
        }
        let mut worker = worker.lock();
        worker.tick(&consumer);
        worker.watch_group(&consumer, &topic_refs);
        if last_rates.0.elapsed() >= Duration::from_secs(1) {
            last_rates = worker.update_rates(last_rates);
        }
    }
    {
        let mut worker = worker.lock();
        if let Err(error) = worker.commit(&consumer) {
            tracing::error!(pipeline = %worker.spec.name, %error, "final commit failed; the records will be read again");
        }
        worker.shutting_down = true;
        worker.metrics.state.lock().running = false;
    }
    consumer.unsubscribe();
    drop(consumer);
    tracing::info!(pipeline = %worker.lock().spec.name, "pipeline stopped");
    Ok(())
}

/// librdkafka settings: the user's connection settings, plus, for the consumer of `pipeline`
/// (`Some`), the ones exactly-once relies on.
pub fn client_config(kafka: &KafkaConfig, consumer: Option<&str>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    config.set("security.protocol", kafka.security_protocol.as_librdkafka());
    if let Some(mechanism) = &kafka.sasl_mechanism {
        config.set("sasl.mechanism", mechanism);
    } else if kafka.security_protocol.uses_sasl() {
        config.set("sasl.mechanism", "PLAIN");
    }
    if let Some(user) = &kafka.sasl_username {
        config.set("sasl.username", user.expose());
    }
    if let Some(password) = &kafka.sasl_password {
        config.set("sasl.password", password.expose());
    }
    if let Some(ca) = &kafka.ssl_ca_location {
        config.set("ssl.ca.location", ca);
    }
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    if let Some(pipeline) = consumer {
        config.set("group.id", &kafka.group_id);
        if let Some(instance) = &kafka.instance_id {
            config.set("group.instance.id", format!("{instance}-{pipeline}"));
        }
        config.set("session.timeout.ms", kafka.session_timeout_ms.to_string());
        config.set(
            "heartbeat.interval.ms",
            (kafka.session_timeout_ms / 3).max(1000).to_string(),
        );
        // Offsets live in the table, never in the group.
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        config.set("auto.offset.reset", "earliest");
        // Records of aborted producer transactions are never landed.
        config.set("isolation.level", "read_committed");
        config.set("partition.assignment.strategy", "range");
        config.set("statistics.interval.ms", "1000");
    }
    config
}

struct IngestContext {
    worker: Arc<Mutex<Worker>>,
    pipeline: String,
    metrics: Arc<PipelineMetrics>,
}

impl ClientContext for IngestContext {
    /// Client errors librdkafka recovers from by itself are logged; the ones that mean the
    /// pipeline cannot read (wrong credentials, TLS failures, no broker reachable) also show on
    /// /health until the next successful commit.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        tracing::error!(pipeline = %self.pipeline, %error, reason, "Kafka client error");
        let code = error.rdkafka_error_code();
        let specific = matches!(
            code,
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
                    | RDKafkaErrorCode::Fatal
            )
        );
        let mut state = self.metrics.state.lock();
        // "All brokers are down" follows a failed login too: it must not hide the reason.
        let unreachable =
            code == Some(RDKafkaErrorCode::AllBrokersDown) && state.last_error.is_none();
        if specific || unreachable {
            state.last_error = Some(format!("Kafka: {reason}"));
        }
    }

    fn stats(&self, statistics: Statistics) {
        let mut worker = self.worker.lock();
        for (topic, stats) in statistics.topics {
            for (partition, stats) in stats.partitions {
                // The last stable offset (what read_committed can read); brokers that do not
                // report it give the high watermark.
                let end = if stats.ls_offset >= 0 {
                    stats.ls_offset
                } else {
                    stats.hi_offset
                };
                if partition >= 0 && end >= 0 {
                    worker
                        .high_watermarks
                        .insert((topic.clone(), partition), end);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut worker = self.worker.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => worker.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => worker.on_revoke(consumer),
            other => {
                tracing::error!(pipeline = %worker.spec.name, error = ?other, "rebalance failed");
                worker.clear();
                worker.waiting_since = Some(Instant::now());
                let _ = consumer.unassign();
            }
        }
    }
}

/// A record rejected before decoding, with its raw key and value (at most 1 MiB of it).
fn dead_letter_of(message: &BorrowedMessage<'_>, error: String) -> DeadLetter {
    DeadLetter {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        error,
        key: message.key().map(<[u8]>::to_vec),
        value: message
            .payload()
            .map(|value| value[..value.len().min(1 << 20)].to_vec()),
    }
}

/// Sends dead letters to the pipeline's dead-letter topic: raw key and value, the error and the
/// source position in headers.
fn send_dead_letters(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    letters: &[&DeadLetter],
) -> Result<(), String> {
    for letter in letters {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "fjord.error",
                value: Some(letter.error.as_bytes()),
            })
            .insert(Header {
                key: "fjord.source",
                value: Some(
                    format!("{}/{}/{}", letter.topic, letter.partition, letter.offset).as_bytes(),
                ),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &letter.value {
            record = record.payload(value.as_slice());
        }
        if let Err((error, _)) = producer.send(record) {
            return Err(format!("cannot send a dead letter to {topic}: {error}"));
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|error| format!("cannot flush dead letters to {topic}: {error}"))
}

/// Where each partition of `advance` must still stand for a commit: the offsets the table
/// recorded when this sidecar last read or committed them.
fn expected_positions(positions: &BTreeMap<Key, Option<i64>>, advance: &Offsets) -> Expected {
    advance
        .0
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions
                .keys()
                .map(move |partition| (topic.clone(), *partition))
        })
        .map(|key| {
            let position = positions.get(&key).copied().flatten();
            (key, position)
        })
        .collect()
}

/// What writing and committing one table's rows did.
struct Landed {
    outcome: CommitOutcome,
    rows: usize,
    files: u64,
    bytes: u64,
}

/// Writes `batches` as data files of `table` (named `label` in errors) and appends them with
/// the offsets `advance`, fenced on `expected`; the time of both phases goes to `metrics`.
fn land(
    handle: &Handle,
    metrics: &PipelineMetrics,
    writer_id: &str,
    (table, label): (&mut LakeTable, &str),
    batches: &[RecordBatch],
    (expected, advance): (&Expected, &Offsets),
    properties: &HashMap<String, String>,
) -> Result<Landed, String> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let writing = Instant::now();
    let files = handle
        .block_on(table.write_files(batches, writer_id))
        .map_err(|error| format!("cannot write data files of {label}: {error}"))?;
    add_elapsed(&metrics.write_nanos, writing);
    let file_count = files.len() as u64;
    let bytes = files.iter().map(|file| file.file_size_in_bytes()).sum();
    let committing = Instant::now();
    let outcome = handle
        .block_on(table.commit_fenced(files, expected, advance, OFFSETS_PROPERTY, properties))
        .map_err(|error| format!("commit to {label} failed: {error}"))?;
    add_elapsed(&metrics.commit_nanos, committing);
    Ok(Landed {
        outcome,
        rows,
        files: file_count,
        bytes,
    })
}

/// Record `row` of `chunk` as a dead letter.
fn dead_letter_in(chunk: &Chunk, row: usize, error: String) -> DeadLetter {
    DeadLetter {
        topic: chunk.topics[row].to_string(),
        partition: chunk.partitions[row],
        offset: chunk.offsets[row],
        timestamp_ms: chunk.timestamps[row],
        error,
        key: chunk.key(row).map(<[u8]>::to_vec),
        value: chunk.original(row).map(<[u8]>::to_vec),
    }
}

/// `batch` in the table's newer `schema`: columns added since are null, columns whose type was
/// promoted since (int to long, say, by another writer) are cast.
fn widen(batch: &RecordBatch, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => arrow::compute::cast(column, field.data_type())
                .map_err(|error| format!("column {}: {error}", field.name())),
            None => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|error| error.to_string())
}

/// After positioning a partition at the table's offset `expected`: how far reading has stepped
/// back so far to find a batch boundary at or below it (0: not yet; `None`: at the start).
struct GapCheck {
    expected: i64,
    step_back: Option<i64>,
}

/// The first step back when a broker skipped records after a seek; each further one is four
/// times longer, so a partition of any length is never read again from its start unless its
/// batches are that long.
const FIRST_STEP_BACK: i64 = 8192;

/// Checks for records skipped by the broker after positioning at the table's offsets.
fn gap_checks_for(positions: &BTreeMap<Key, Option<i64>>) -> BTreeMap<Key, GapCheck> {
    positions
        .iter()
        .filter_map(|(key, position)| {
            position.map(|expected| {
                (
                    key.clone(),
                    GapCheck {
                        expected,
                        step_back: Some(0),
                    },
                )
            })
        })
        .collect()
}

/// One table the pipeline lands in, with the records on their way to it.
struct Target {
    schema: String,
    name: String,
    /// `None` until the table exists (it is created from its first records).
    table: Option<LakeTable>,
    /// For a routed pipeline: the offsets this table records. Records below them are in the
    /// table already, and its commits are fenced on them.
    recorded: Offsets,
    /// For a routed pipeline: the partitions this table has buffered records from.
    touched: Offsets,
    chunk: Chunk,
    decode_state: DecodeState,
    batches: Vec<RecordBatch>,
}

impl Target {
    fn new(schema: String, name: String) -> Self {
        Target {
            schema,
            name,
            table: None,
            recorded: Offsets::default(),
            touched: Offsets::default(),
            chunk: Chunk::default(),
            decode_state: DecodeState::default(),
            batches: Vec::new(),
        }
    }

    fn label(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Loads the table if it exists (it may not until the first records arrive). A table made
    /// by someone else gets the metadata columns added.
    fn load(&mut self, catalog: &Arc<dyn Catalog>, handle: &Handle) -> Result<(), String> {
        if self.table.is_some() {
            return Ok(());
        }
        let mut table = handle
            .block_on(LakeTable::open(catalog, &self.schema, &self.name))
            .map_err(|error| format!("cannot load {}: {error}", self.label()))?;
        if let Some(table) = &mut table {
            let missing: Vec<_> = crate::decode::meta_fields()
                .into_iter()
                .filter(|field| table.arrow_schema().field_with_name(field.name()).is_err())
                .collect();
            if !missing.is_empty() {
                handle
                    .block_on(table.add_columns(&missing))
                    .map_err(|error| {
                        format!(
                            "cannot add the Kafka metadata columns to {}: {error}",
                            self.label()
                        )
                    })?;
            }
        }
        self.table = table;
        Ok(())
    }
}

/// The snapshot summary property, in the dead-letter table, that records how far a routed
/// pipeline has landed every record in every table (see [`Worker::commit_routed`]).
fn routed_offsets_property(pipeline: &str) -> String {
    format!("{OFFSETS_PROPERTY}.{pipeline}.read")
}

struct Worker {
    spec: PipelineSpec,
    metrics: Arc<PipelineMetrics>,
    handle: Handle,
    /// For a routed `table`: its template. `None`: one fixed table, `targets`' only entry.
    route: Option<TableTemplate>,
    /// The tables records are buffered for, by table name (without the schema).
    targets: BTreeMap<String, Target>,
    /// For a routed pipeline: the tables it has made or found, counted against `max_tables`
    /// (read from the catalog on first use).
    known_tables: Option<std::collections::BTreeSet<String>>,
    dead_table: Option<LakeTable>,
    dead_topic: Option<ThreadedProducer<DefaultProducerContext>>,
    /// For each assigned partition, the next offset the table records (`None`: nothing yet);
    /// for a routed pipeline, the offset up to which every table has its records. A commit is
    /// valid only while the table still says this.
    positions: BTreeMap<Key, Option<i64>>,
    /// Next offset expected per partition after what is buffered.
    read: BTreeMap<Key, i64>,
    /// Partitions just positioned at an offset the table records, until their first record
    /// shows the broker started there (see `accept`).
    gap_checks: BTreeMap<Key, GapCheck>,
    /// Set when positions could not be read from the table at assignment: partitions are
    /// paused until they are.
    positions_unknown: bool,
    /// For `format = "avro"`: the registry client and the schemas seen.
    avro: Option<crate::avro::AvroDecoder>,
    /// For `format = "debezium"`: key columns and column types learnt from the events.
    debezium: Option<DebeziumState>,
    /// Offsets covered by the targets' chunks.
    chunk_advance: Offsets,
    rejected: Vec<DeadLetter>,
    /// Offsets covered by the targets' `batches` and `rejected`.
    advance: Offsets,
    buffered_records: usize,
    buffered_bytes: usize,
    first_buffered: Option<Instant>,
    last_record: Instant,
    oldest_timestamp_ms: Option<i64>,
    retry_at: Option<Instant>,
    failures: u32,
    high_watermarks: BTreeMap<Key, i64>,
    topic_names: HashMap<String, Arc<str>>,
    shutting_down: bool,
    /// Since when the consumer has been outside its group's assignment (subscribed, waiting
    /// for a rebalance to finish); `None` once partitions (possibly none) are assigned.
    waiting_since: Option<Instant>,
    /// While the group has given this sidecar no partitions: since when, and the table's
    /// offsets then. Another member should be landing the topics meanwhile.
    idle_since: Option<(Instant, Offsets)>,
}

impl Worker {
    fn new(spec: PipelineSpec, handle: Handle) -> Self {
        let dead_topic = spec.config.dead_letter_topic.as_ref().and_then(|_| {
            client_config(&spec.kafka, None)
                .create::<ThreadedProducer<DefaultProducerContext>>()
                .map_err(|error| {
                    tracing::error!(pipeline = %spec.name, %error, "cannot create the dead-letter producer");
                })
                .ok()
        });
        let avro = match spec.config.format {
            fjord_config::ValueFormat::Avro => {
                spec.registry.clone().map(crate::avro::AvroDecoder::new)
            }
            fjord_config::ValueFormat::Json | fjord_config::ValueFormat::Debezium => None,
        };
        let debezium = (spec.config.format == fjord_config::ValueFormat::Debezium)
            .then(DebeziumState::default);
        let route = spec.config.route();
        let mut targets = BTreeMap::new();
        if route.is_none() {
            let (schema, name) = spec.config.landing_parts();
            targets.insert(name.clone(), Target::new(schema, name));
        }
        Worker {
            metrics: spec.metrics.clone(),
            spec,
            handle,
            route,
            targets,
            known_tables: None,
            dead_table: None,
            dead_topic,
            positions: BTreeMap::new(),
            read: BTreeMap::new(),
            gap_checks: BTreeMap::new(),
            positions_unknown: false,
            avro,
            debezium,
            chunk_advance: Offsets::default(),
            rejected: Vec::new(),
            advance: Offsets::default(),
            buffered_records: 0,
            buffered_bytes: 0,
            first_buffered: None,
            last_record: Instant::now(),
            oldest_timestamp_ms: None,
            retry_at: None,
            failures: 0,
            high_watermarks: BTreeMap::new(),
            topic_names: HashMap::new(),
            shutting_down: false,
            waiting_since: Some(Instant::now()),
            idle_since: None,
        }
    }

    /// Watches this member's place in its group. A broker can keep a rebalance open for a
    /// member that died, or hand partitions to one and never rebalance again (tansu 0.6 does
    /// both after a kill in the middle of a rebalance). When this member has waited for an
    /// assignment much longer than a rebalance takes, or was given nothing while the table's
    /// offsets stood still and records wait in the topics, it says so on /health, then leaves
    /// the group and joins again as a new member. Safe at any time: where reading starts comes
    /// from the table, and commits are fenced.
    fn watch_group(&mut self, consumer: &BaseConsumer<IngestContext>, topics: &[&str]) {
        let patience = Duration::from_millis(u64::from(self.spec.kafka.session_timeout_ms) * 3)
            .max(Duration::from_secs(30));
        let problem = match self.waiting_since {
            Some(since) if since.elapsed() < patience => return,
            Some(since) => format!(
                "no partitions assigned for {} s: consumer group `{}` has not finished a rebalance; joining it again",
                since.elapsed().as_secs(),
                self.spec.kafka.group_id
            ),
            None if self.positions.is_empty() => {
                match self.unlanded_while_idle(consumer, topics, patience) {
                    Some(problem) => problem,
                    None => return,
                }
            }
            None => return,
        };
        tracing::warn!(pipeline = %self.spec.name, "{problem}");
        self.metrics.state.lock().waiting_for_group = Some(problem);
        consumer.unsubscribe();
        if let Err(error) = consumer.subscribe(topics) {
            tracing::error!(pipeline = %self.spec.name, %error, "cannot subscribe again");
        }
        self.waiting_since = Some(Instant::now());
        self.idle_since = None;
    }

    /// For a member given no partitions, once per `patience`: the problem to report when the
    /// table's offsets stood still for the whole period while records wait in the topics.
    fn unlanded_while_idle(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        topics: &[&str],
        patience: Duration,
    ) -> Option<String> {
        let waited = match &self.idle_since {
            Some((since, _)) if since.elapsed() < patience => return None,
            Some((since, _)) => Some(since.elapsed()),
            None => None,
        };
        let now = match self.table_positions() {
            Ok(now) => now,
            Err(error) => {
                // No verdict this period; the catalog is asked again next period, not next poll.
                tracing::debug!(pipeline = %self.spec.name, %error, "cannot read the table's offsets");
                let kept = self.idle_since.take().map(|(_, offsets)| offsets);
                self.idle_since = Some((Instant::now(), kept.unwrap_or_default()));
                return None;
            }
        };
        let before = self
            .idle_since
            .replace((Instant::now(), now.clone()))
            .map(|(_, offsets)| offsets);
        let waited = waited?;
        let unlanded = if before.as_ref() == Some(&now) {
            unlanded_partitions(consumer, topics, &now)
        } else {
            Vec::new()
        };
        if unlanded.is_empty() {
            // Another member lands the topics (or they are idle): all is well.
            self.metrics.state.lock().waiting_for_group = None;
            return None;
        }
        Some(format!(
            "this sidecar has no partitions, and nobody in consumer group `{}` landed {} in {} s although records wait there; joining the group again",
            self.spec.kafka.group_id,
            unlanded.join(", "),
            waited.as_secs()
        ))
    }

    fn paused(&self) -> bool {
        self.retry_at.is_some() || self.positions_unknown
    }

    /// The table of a pipeline that does not route.
    fn fixed(&mut self) -> &mut Target {
        self.targets
            .values_mut()
            .next()
            .expect("a pipeline without routing has its table")
    }

    /// Where reading resumes: the offsets the fixed table records, or for a routed pipeline the
    /// offsets its dead-letter table records for all of its tables.
    fn table_positions(&mut self) -> Result<Offsets, String> {
        let handle = self.handle.clone();
        if self.route.is_some() {
            let property = routed_offsets_property(&self.spec.name);
            return match self.dead_letter_table(false)? {
                None => Ok(Offsets::default()),
                Some(dead) => {
                    handle
                        .block_on(dead.reload())
                        .map_err(|error| format!("cannot load the dead-letter table: {error}"))?;
                    dead.offsets(&property).map_err(|error| error.to_string())
                }
            };
        }
        let catalog = self.spec.catalog.clone();
        let target = self.fixed();
        target.load(&catalog, &handle)?;
        let label = target.label();
        match &mut target.table {
            None => Ok(Offsets::default()),
            Some(table) => {
                handle
                    .block_on(table.reload())
                    .map_err(|error| format!("cannot load {label}: {error}"))?;
                table
                    .offsets(OFFSETS_PROPERTY)
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// The dead-letter table, opened once (and created when `create` and missing).
    fn dead_letter_table(&mut self, create: bool) -> Result<Option<&mut LakeTable>, String> {
        if self.dead_table.is_none() {
            let (schema, name) = self.spec.config.dead_letter_parts();
            let catalog = self.spec.catalog.clone();
            let table = self
                .handle
                .block_on(async {
                    match LakeTable::open(&catalog, &schema, &name).await? {
                        Some(table) => Ok(Some(table)),
                        None if create => LakeTable::create(
                            &catalog,
                            &schema,
                            &name,
                            &dead_letter_schema(),
                            &[],
                            HashMap::new(),
                        )
                        .await
                        .map(Some),
                        None => Ok(None),
                    }
                })
                .map_err(|error| {
                    format!("cannot open the dead-letter table {schema}.{name}: {error}")
                })?;
            self.dead_table = table;
        }
        Ok(self.dead_table.as_mut())
    }

    /// For a routed pipeline, starts buffering for table `name`: loads it and the offsets it
    /// records. `Ok(false)`: the table would be one more than `max_tables`.
    fn add_target(&mut self, name: &str) -> Result<bool, String> {
        let schema = self.spec.config.table_parts().0.to_string();
        if self.known_tables.is_none() {
            let template = self.route.as_ref().expect("a routed pipeline");
            let namespace = iceberg::NamespaceIdent::new(schema.clone());
            let listed = match self
                .handle
                .block_on(self.spec.catalog.list_tables(&namespace))
            {
                Ok(tables) => tables,
                Err(error) if error.kind() == iceberg::ErrorKind::NamespaceNotFound => Vec::new(),
                Err(error) => return Err(format!("cannot list the tables of {schema}: {error}")),
            };
            self.known_tables = Some(
                listed
                    .iter()
                    .map(|ident| ident.name().to_string())
                    .filter(|table| template.matches(table))
                    .collect(),
            );
        }
        let known = self.known_tables.as_ref().expect("listed above");
        if !known.contains(name) && known.len() >= self.spec.config.max_tables {
            return Ok(false);
        }
        let mut target = Target::new(schema, name.to_string());
        target.load(&self.spec.catalog, &self.handle)?;
        if let Some(table) = &target.table {
            target.recorded = table
                .offsets(OFFSETS_PROPERTY)
                .map_err(|error| error.to_string())?;
        }
        if let Some(known) = &mut self.known_tables {
            known.insert(name.to_string());
        }
        self.targets.insert(name.to_string(), target);
        Ok(true)
    }

    /// A routed pipeline's tables are loaded again (with the offsets they record) after any
    /// reset; a fixed table stays.
    fn forget_targets(&mut self) {
        if self.route.is_some() {
            self.targets.clear();
        }
    }

    fn on_assign(&mut self, consumer: &BaseConsumer<IngestContext>, tpl: &mut TopicPartitionList) {
        self.clear();
        self.waiting_since = None;
        self.idle_since = None;
        let keys: Vec<Key> = tpl
            .elements()
            .iter()
            .map(|element| (element.topic().to_string(), element.partition()))
            .collect();
        if !keys.is_empty() {
            // An empty assignment keeps a report of partitions nobody lands (see watch_group).
            self.metrics.state.lock().waiting_for_group = None;
        }
        match self.table_positions() {
            Ok(offsets) => {
                for (topic, partition) in &keys {
                    let next = offsets.get(topic, *partition);
                    let offset = next.map(Offset::Offset).unwrap_or(Offset::Beginning);
                    let _ = tpl.set_partition_offset(topic, *partition, offset);
                    self.positions.insert((topic.clone(), *partition), next);
                }
                self.positions_unknown = false;
                self.gap_checks = gap_checks_for(&self.positions);
                tracing::info!(pipeline = %self.spec.name, partitions = ?self.positions, "partitions assigned; reading from the table's offsets");
            }
            Err(error) => {
                tracing::error!(pipeline = %self.spec.name, %error, "cannot read offsets from the table; partitions stay paused until it can");
                for key in &keys {
                    self.positions.insert(key.clone(), None);
                }
                self.positions_unknown = true;
            }
        }
        if let Err(error) = consumer.assign(tpl) {
            tracing::error!(pipeline = %self.spec.name, %error, "cannot assign partitions");
        }
        if self.positions_unknown {
            let _ = consumer.pause(tpl);
        }
    }

    fn on_revoke(&mut self, consumer: &BaseConsumer<IngestContext>) {
        if !self.shutting_down && !self.positions_unknown {
            // Whatever is buffered is committed now, while these partitions are still ours; a
            // new owner that already started is protected by the fence.
            if let Err(error) = self.commit(consumer) {
                tracing::warn!(pipeline = %self.spec.name, %error, "commit at revocation failed; the new owner reads these records again");
            }
        }
        self.clear();
        self.waiting_since = Some(Instant::now());
        let _ = consumer.unassign();
        tracing::info!(pipeline = %self.spec.name, "partitions revoked");
    }

    /// Forgets assignment and buffers.
    fn clear(&mut self) {
        self.gap_checks.clear();
        self.positions.clear();
        self.read.clear();
        self.discard_buffers();
        self.forget_targets();
        self.retry_at = None;
        self.positions_unknown = false;
    }

    fn discard_buffers(&mut self) {
        for target in self.targets.values_mut() {
            target.chunk = Chunk::default();
            target.batches.clear();
            target.touched = Offsets::default();
        }
        self.chunk_advance = Offsets::default();
        self.rejected.clear();
        self.advance = Offsets::default();
        self.buffered_records = 0;
        self.buffered_bytes = 0;
        self.first_buffered = None;
        self.oldest_timestamp_ms = None;
    }

    fn accept(&mut self, consumer: &BaseConsumer<IngestContext>, message: &BorrowedMessage<'_>) {
        let topic = message.topic();
        let partition = message.partition();
        let offset = message.offset();
        let key = (topic.to_string(), partition);
        let Some(position) = self.positions.get(&key).copied() else {
            // Not (or no longer) ours.
            return;
        };
        let next = self.read.get(&key).copied().or(position);
        if next.is_some_and(|next| offset < next) {
            // Already in the table or in the buffer: a redelivery.
            return;
        }
        if let Some(check) = self.gap_checks.get_mut(&key) {
            // The first record after a seek to `expected`. A broker that answers a fetch from
            // the middle of a record batch with the next batch (tansu 0.6 does) would make the
            // commit cover records never read: step back to an earlier offset (a longer step
            // each time) until the broker serves a batch that starts at or before `expected`;
            // the records below it are dropped above as redeliveries. A gap still there when
            // reading from the partition's start is real (compaction, transaction markers).
            if offset > check.expected
                && let Some(step) = check.step_back
            {
                let step = if step == 0 { FIRST_STEP_BACK } else { step * 4 };
                let target = check.expected - step;
                let (seek_to, next_step) = if target > 0 {
                    (Offset::Offset(target), Some(step))
                } else {
                    (Offset::Beginning, None)
                };
                tracing::warn!(pipeline = %self.spec.name, topic, partition, expected = check.expected, offset, from = ?seek_to, "the broker skipped records after a seek; reading again from an earlier offset");
                check.step_back = next_step;
                self.metrics
                    .rereads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(error) =
                    consumer.seek(topic, partition, seek_to, Duration::from_secs(10))
                {
                    // Nothing past `expected` is taken until a seek back succeeds.
                    tracing::error!(pipeline = %self.spec.name, topic, partition, %error, "cannot seek back; trying again at the next record");
                    check.step_back = Some(step);
                }
                return;
            }
            if offset > check.expected {
                tracing::warn!(pipeline = %self.spec.name, topic, partition, expected = check.expected, offset, "offsets missing from the partition itself (compacted or transactional); going on");
            }
            self.gap_checks.remove(&key);
        }
        self.read.insert(key, offset + 1);
        let topic_name = self
            .topic_names
            .entry(topic.to_string())
            .or_insert_with(|| Arc::from(topic))
            .clone();
        let timestamp = message.timestamp().to_millis();
        let value = message.payload().unwrap_or_default();
        self.metrics
            .records
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .bytes
            .fetch_add(value.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if self.first_buffered.is_none() {
            self.first_buffered = Some(Instant::now());
        }
        self.last_record = Instant::now();
        if let Some(ts) = timestamp {
            self.oldest_timestamp_ms = Some(self.oldest_timestamp_ms.map_or(ts, |o| o.min(ts)));
        }
        self.buffered_records += 1;
        self.buffered_bytes += value.len();
        let problem = if message.payload().is_none() && self.debezium.is_none() {
            Some("the record has no value (a tombstone)".to_string())
        } else if value.len() > self.spec.config.max_record_bytes() {
            Some(format!(
                "the value is {} bytes, more than max_record_bytes ({})",
                value.len(),
                self.spec.config.max_record_bytes
            ))
        } else {
            None
        };
        if let Some(error) = problem {
            self.rejected.push(dead_letter_of(message, error));
            self.chunk_advance.set(topic, partition, offset + 1);
            return;
        }
        let routed = match &self.route {
            None => None,
            Some(template) => match route_record(template, topic, value) {
                Ok(name) => Some(name),
                Err(error) => {
                    self.rejected.push(dead_letter_of(message, error));
                    self.chunk_advance.set(topic, partition, offset + 1);
                    return;
                }
            },
        };
        if let Some(name) = &routed
            && !self.targets.contains_key(name)
        {
            match self.add_target(name) {
                Ok(true) => {}
                Ok(false) => {
                    let error = format!(
                        "the record routes to `{name}`, one table more than max_tables ({}) allows",
                        self.spec.config.max_tables
                    );
                    self.rejected.push(dead_letter_of(message, error));
                    self.chunk_advance.set(topic, partition, offset + 1);
                    return;
                }
                Err(error) => {
                    // Without the table's offsets this record cannot be taken: read again from
                    // the last commit once the table can be loaded.
                    self.rewind(consumer);
                    self.schedule_retry(consumer, error);
                    return;
                }
            }
        }
        let target = match &routed {
            None => self
                .targets
                .values_mut()
                .next()
                .expect("a pipeline without routing has its table"),
            Some(name) => self.targets.get_mut(name).expect("added above"),
        };
        if routed.is_some() {
            if target
                .recorded
                .get(topic, partition)
                .is_some_and(|next| offset < next)
            {
                // The table has this record already: its commit got further than the
                // pipeline's offsets did before a crash.
                self.chunk_advance.set(topic, partition, offset + 1);
                return;
            }
            target.touched.set(topic, partition, offset + 1);
        }
        if let Err(error) = target
            .chunk
            .push_record(self.debezium.as_mut(), topic_name, message)
        {
            self.rejected.push(dead_letter_of(message, error));
        }
        let full = target.chunk.len() >= CHUNK_RECORDS;
        self.chunk_advance.set(topic, partition, offset + 1);
        if full {
            self.decode_chunk(consumer);
        }
    }

    /// Decodes every table's pending chunk into its batches (and `rejected`), adding columns
    /// first when records bring new fields. What the chunks covered joins `advance` once all
    /// of them are decoded.
    fn decode_chunk(&mut self, consumer: &BaseConsumer<IngestContext>) {
        let names: Vec<String> = self
            .targets
            .iter()
            .filter(|(_, target)| !target.chunk.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        let started = Instant::now();
        for name in &names {
            let mut target = self.targets.remove(name).expect("listed above");
            if self.avro.is_some() {
                self.decode_chunk_avro(consumer, &mut target);
            } else {
                self.decode_chunk_json(consumer, &mut target);
            }
            let decoded = target.chunk.is_empty();
            self.targets.insert(name.clone(), target);
            if !decoded {
                // A retry is scheduled; the chunks left are decoded then.
                add_elapsed(&self.metrics.decode_nanos, started);
                return;
            }
        }
        if !names.is_empty() {
            add_elapsed(&self.metrics.decode_nanos, started);
        }
        let chunk_advance = std::mem::take(&mut self.chunk_advance);
        self.advance.merge(&chunk_advance);
    }

    fn decode_chunk_json(&mut self, consumer: &BaseConsumer<IngestContext>, target: &mut Target) {
        for _ in 0..8 {
            if let Err(error) = self.ensure_table(target, None) {
                tracing::error!(pipeline = %self.spec.name, %error, "cannot create the table; retrying");
                self.schedule_retry(consumer, error);
                return;
            }
            let table = target.table.as_ref().expect("ensured above");
            let decoded = decode_json(
                &target.chunk,
                &table.arrow_schema(),
                self.spec.config.event_time.as_deref(),
                now_micros(),
                &mut target.decode_state,
            );
            match decoded {
                Ok(Decoded::Rows { batch, rejected }) => {
                    target.batches.extend(batch);
                    for rejected in rejected {
                        let letter = dead_letter_in(&target.chunk, rejected.row, rejected.error);
                        self.rejected.push(letter);
                    }
                    target.chunk = Chunk::default();
                    return;
                }
                Ok(Decoded::NeedsColumns(mut fields)) => {
                    if let Some(debezium) = &self.debezium {
                        fields = fields.iter().map(|field| debezium.hinted(field)).collect();
                    }
                    if let Err(error) = self.add_columns(target, &fields) {
                        self.schedule_retry(consumer, error);
                        return;
                    }
                }
                Err(error) => {
                    self.schedule_retry(consumer, format!("decoding failed: {error}"));
                    return;
                }
            }
        }
        self.schedule_retry(
            consumer,
            "the table's columns kept changing while decoding".into(),
        );
    }

    /// Avro: decode with the writers' schemas, then shape each batch as the table (creating it
    /// from the first writer schema, adding columns for new fields). Nothing is kept unless the
    /// whole chunk went through, so a retry never doubles rows.
    fn decode_chunk_avro(&mut self, consumer: &BaseConsumer<IngestContext>, target: &mut Target) {
        let avro = self.avro.as_mut().expect("an Avro pipeline");
        let decoded = self.handle.block_on(avro.decode(&target.chunk));
        let (batches, rejected) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                self.schedule_retry(consumer, error);
                return;
            }
        };
        let mut shaped = Vec::new();
        let mut conflicts: Vec<(usize, String)> = Vec::new();
        let mut attempts = 0;
        'shape: loop {
            attempts += 1;
            if attempts > 8 {
                self.schedule_retry(consumer, "the table's columns kept changing".into());
                return;
            }
            shaped.clear();
            conflicts.clear();
            for (batch, rows) in &batches {
                if let Err(error) = self.ensure_table(target, Some(batch.schema().as_ref())) {
                    self.schedule_retry(consumer, error);
                    return;
                }
                let table_schema = target.table.as_ref().expect("ensured").arrow_schema();
                match crate::avro::conform(batch, rows, &target.chunk, &table_schema, now_micros())
                {
                    Ok(Decoded::Rows { batch, .. }) => shaped.extend(batch),
                    Ok(Decoded::NeedsColumns(fields)) => {
                        if let Err(error) = self.add_columns(target, &fields) {
                            self.schedule_retry(consumer, error);
                            return;
                        }
                        continue 'shape;
                    }
                    Err(error) => conflicts.extend(rows.iter().map(|row| (*row, error.clone()))),
                }
            }
            break;
        }
        target.batches.extend(shaped);
        let letters = rejected
            .into_iter()
            .map(|rejected| (rejected.row, rejected.error))
            .chain(conflicts);
        for (row, error) in letters {
            let letter = dead_letter_in(&target.chunk, row, error);
            self.rejected.push(letter);
        }
        target.chunk = Chunk::default();
    }

    /// Schema evolution: adds `fields` to the table, and the new columns (as nulls) to the
    /// batches decoded before them.
    fn add_columns(
        &mut self,
        target: &mut Target,
        fields: &[arrow::datatypes::Field],
    ) -> Result<(), String> {
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        let label = target.label();
        tracing::info!(pipeline = %self.spec.name, table = %label, columns = ?names, "records bring new fields; adding columns");
        let table = target
            .table
            .as_mut()
            .expect("a table exists once records decode");
        self.handle
            .block_on(table.add_columns(fields))
            .map_err(|error| format!("cannot add columns {names:?} to {label}: {error}"))?;
        let schema = table.arrow_schema();
        for batch in &mut target.batches {
            *batch = widen(batch, &schema).map_err(|error| {
                format!("cannot add columns {names:?} to buffered rows of {label}: {error}")
            })?;
        }
        Ok(())
    }

    fn ensure_table(
        &mut self,
        target: &mut Target,
        writer_schema: Option<&arrow::datatypes::Schema>,
    ) -> Result<(), String> {
        target.load(&self.spec.catalog, &self.handle)?;
        if target.table.is_some() {
            return Ok(());
        }
        let mut schema = match writer_schema {
            Some(writer) => crate::avro::table_schema_for(writer),
            None => infer_table_schema(&target.chunk, self.spec.config.event_time.as_deref()),
        };
        let mut properties = HashMap::new();
        if let Some(debezium) = &self.debezium {
            schema = debezium.table_schema(&schema);
            let keys = debezium
                .key_columns
                .as_ref()
                .ok_or("no Debezium event with a key has been read yet")?;
            properties.insert(
                fjord_iceberg::CDC_KEY_PROPERTY.to_string(),
                serde_json::to_string(keys).map_err(|error| error.to_string())?,
            );
        }
        let partition = self.spec.config.partition_fields()?;
        let table = self
            .handle
            .block_on(LakeTable::create(
                &self.spec.catalog,
                &target.schema,
                &target.name,
                &schema,
                &partition,
                properties,
            ))
            .map_err(|error| format!("cannot create {}: {error}", target.label()))?;
        tracing::info!(pipeline = %self.spec.name, table = %target.label(), columns = table.arrow_schema().fields().len(), "table created from the first records");
        target.table = Some(table);
        Ok(())
    }

    fn schedule_retry(&mut self, consumer: &BaseConsumer<IngestContext>, error: String) {
        self.failures += 1;
        let backoff = Duration::from_millis(250 * 2u64.pow(self.failures.min(7)));
        self.retry_at = Some(Instant::now() + backoff.min(Duration::from_secs(30)));
        self.metrics
            .commit_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.state.lock().last_error = Some(error.clone());
        tracing::error!(pipeline = %self.spec.name, %error, retry_in = ?backoff, "pipeline paused");
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
    }

    /// Per poll: retries after failures, commits when the policy says so.
    fn tick(&mut self, consumer: &BaseConsumer<IngestContext>) {
        if self.positions_unknown {
            self.retry_positions(consumer);
            return;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
            match self.commit(consumer) {
                Ok(()) => {
                    if self.retry_at.is_none() {
                        self.failures = 0;
                        if let Ok(assignment) = consumer.assignment() {
                            let _ = consumer.resume(&assignment);
                        }
                        tracing::info!(pipeline = %self.spec.name, "pipeline resumed");
                    }
                }
                Err(error) => self.schedule_retry(consumer, error),
            }
            return;
        }
        if self.buffered_records == 0 {
            self.update_lag();
            return;
        }
        let policy = &self.spec.config.commit;
        let due = self.buffered_records >= policy.max_records
            || self.buffered_bytes >= policy.max_bytes()
            || self
                .first_buffered
                .is_some_and(|first| first.elapsed() >= policy.interval())
            || self.last_record.elapsed() >= policy.idle();
        if due && let Err(error) = self.commit(consumer) {
            self.schedule_retry(consumer, error);
        }
        self.update_lag();
    }

    fn retry_positions(&mut self, consumer: &BaseConsumer<IngestContext>) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match self.table_positions() {
            Ok(offsets) => {
                self.forget_targets();
                let mut tpl = TopicPartitionList::new();
                for ((topic, partition), position) in self.positions.iter_mut() {
                    *position = offsets.get(topic, *partition);
                    let offset = position.map(Offset::Offset).unwrap_or(Offset::Beginning);
                    let _ = tpl.add_partition_offset(topic, *partition, offset);
                }
                self.positions_unknown = false;
                self.retry_at = None;
                self.gap_checks = gap_checks_for(&self.positions);
                let _ = consumer.assign(&tpl);
                let _ = consumer.resume(&tpl);
                tracing::info!(pipeline = %self.spec.name, "offsets read from the table; pipeline resumed");
            }
            Err(error) => {
                self.retry_at = Some(Instant::now() + Duration::from_secs(2));
                self.metrics.state.lock().last_error = Some(error);
            }
        }
    }

    /// Decodes what is pending and commits everything buffered.
    fn commit(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), String> {
        self.decode_chunk(consumer);
        if self.retry_at.is_some() {
            return Err(self
                .metrics
                .state
                .lock()
                .last_error
                .clone()
                .unwrap_or_else(|| "decoding failed".into()));
        }
        self.commit_decoded(consumer)
    }

    /// Commits the decoded rows, `rejected` and `advance`. A fixed table: dead letters first
    /// (deduplicated by their own offsets), then the table, fenced. A routed pipeline: see
    /// [`Worker::commit_routed`].
    fn commit_decoded(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), String> {
        if self.route.is_some() {
            return self.commit_routed(consumer);
        }
        if self.fixed().batches.is_empty() && self.rejected.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        if !self.rejected.is_empty() {
            self.commit_dead_letters()?;
        }
        let properties = self.snapshot_properties();
        let target = self
            .targets
            .values_mut()
            .next()
            .expect("a pipeline without routing has its table");
        let label = target.label();
        let Some(table) = target.table.as_mut() else {
            // Only dead letters so far and no table to record offsets in: they stay pending
            // and are recorded with the first commit that has a table. The dead-letter table's
            // own offsets keep them from being stored twice.
            self.rejected.clear();
            return Ok(());
        };
        let expected = expected_positions(&self.positions, &self.advance);
        let landed = land(
            &self.handle,
            &self.metrics,
            &self.spec.writer_id,
            (table, &label),
            &target.batches,
            (&expected, &self.advance),
            &properties,
        )?;
        match landed.outcome {
            CommitOutcome::Committed { snapshot_id, .. } => {
                tracing::info!(
                    pipeline = %self.spec.name,
                    table = %label,
                    snapshot_id,
                    rows = landed.rows,
                    files = landed.files,
                    bytes = landed.bytes,
                    millis = started.elapsed().as_millis() as u64,
                    offsets = %self.advance.to_json(),
                    "committed"
                );
                self.committed(started, landed.rows, landed.files, landed.bytes);
                Ok(())
            }
            CommitOutcome::Fenced {
                topic,
                partition,
                expected,
                found,
                offsets,
            } => {
                self.fenced(&label, &topic, partition, expected, found);
                self.reset_to(consumer, &offsets);
                Ok(())
            }
        }
    }

    /// A routed pipeline's commit. Dead letters first (deduplicated by their own offsets); then
    /// each table with rows, with the offsets of the partitions its rows came from, fenced on
    /// the offsets it records itself; then the offsets of everything read, to the dead-letter
    /// table, fenced on the pipeline's offsets ([`routed_offsets_property`]). Reading resumes
    /// from those, which move only once every table has its records: after a crash between two
    /// tables' commits, the records are read again and each table drops those below its own
    /// offsets.
    fn commit_routed(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), String> {
        if self.advance.0.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // Dead letters go first, kept from being stored twice by their own offsets, as for a
        // fixed table: a table's offsets may pass a record that decoding rejected, and once
        // they do, reading again never brings that record back.
        if !self.rejected.is_empty() {
            self.commit_dead_letters()?;
        }
        let names: Vec<String> = self
            .targets
            .iter()
            .filter(|(_, target)| !target.batches.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        let (mut rows, mut files, mut bytes) = (0, 0, 0);
        for name in names {
            let mut target = self.targets.remove(&name).expect("listed above");
            let outcome = self.commit_target(&mut target);
            self.targets.insert(name, target);
            match outcome? {
                Some((target_rows, target_files, target_bytes)) => {
                    rows += target_rows;
                    files += target_files;
                    bytes += target_bytes;
                }
                None => {
                    self.restart_from_table(consumer);
                    return Ok(());
                }
            }
        }
        let committing = Instant::now();
        let outcome = self.commit_routed_offsets()?;
        add_elapsed(&self.metrics.commit_nanos, committing);
        match outcome {
            CommitOutcome::Committed { snapshot_id, .. } => {
                tracing::info!(
                    pipeline = %self.spec.name,
                    snapshot_id,
                    rows,
                    files,
                    bytes,
                    dead_letters = self.rejected.len(),
                    millis = started.elapsed().as_millis() as u64,
                    offsets = %self.advance.to_json(),
                    "committed the pipeline's offsets"
                );
                self.committed(started, rows, files, bytes);
                Ok(())
            }
            CommitOutcome::Fenced {
                topic,
                partition,
                expected,
                found,
                ..
            } => {
                let (schema, name) = self.spec.config.dead_letter_parts();
                self.fenced(
                    &format!("{schema}.{name}"),
                    &topic,
                    partition,
                    expected,
                    found,
                );
                self.restart_from_table(consumer);
                Ok(())
            }
        }
    }

    /// Writes and commits one routed table's rows. `None`: fenced by another writer.
    fn commit_target(&mut self, target: &mut Target) -> Result<Option<(usize, u64, u64)>, String> {
        let label = target.label();
        let table = target
            .table
            .as_mut()
            .expect("a table exists once records decode");
        let mut advance = Offsets::default();
        let mut expected = Expected::new();
        for (topic, partitions) in &target.touched.0 {
            for (partition, next) in partitions {
                let next = self.advance.get(topic, *partition).unwrap_or(*next);
                advance.set(topic, *partition, next);
                expected.insert(
                    (topic.clone(), *partition),
                    target.recorded.get(topic, *partition),
                );
            }
        }
        let landed = land(
            &self.handle,
            &self.metrics,
            &self.spec.writer_id,
            (table, &label),
            &target.batches,
            (&expected, &advance),
            &self.snapshot_properties(),
        )?;
        match landed.outcome {
            CommitOutcome::Committed { snapshot_id, .. } => {
                tracing::info!(
                    pipeline = %self.spec.name,
                    table = %label,
                    snapshot_id,
                    rows = landed.rows,
                    files = landed.files,
                    bytes = landed.bytes,
                    offsets = %advance.to_json(),
                    "committed"
                );
                target.recorded.merge(&advance);
                target.batches.clear();
                target.touched = Offsets::default();
                Ok(Some((landed.rows, landed.files, landed.bytes)))
            }
            CommitOutcome::Fenced {
                topic,
                partition,
                expected,
                found,
                ..
            } => {
                self.fenced(&label, &topic, partition, expected, found);
                Ok(None)
            }
        }
    }

    /// A routed pipeline's offsets, in a commit to its dead-letter table without data files.
    fn commit_routed_offsets(&mut self) -> Result<CommitOutcome, String> {
        let property = routed_offsets_property(&self.spec.name);
        let properties = self.snapshot_properties();
        self.dead_letter_table(true)?;
        let dead = self.dead_table.as_mut().expect("opened above");
        let expected = expected_positions(&self.positions, &self.advance);
        let outcome = self
            .handle
            .block_on(dead.commit_fenced(
                Vec::new(),
                &expected,
                &self.advance,
                &property,
                &properties,
            ))
            .map_err(|error| format!("cannot commit the pipeline's offsets: {error}"))?;
        Ok(outcome)
    }

    /// Snapshot summary properties naming the pipeline and this sidecar.
    fn snapshot_properties(&self) -> HashMap<String, String> {
        HashMap::from([
            (PIPELINE_PROPERTY.to_string(), self.spec.name.clone()),
            (WRITER_PROPERTY.to_string(), self.spec.writer_id.clone()),
        ])
    }

    /// After a commit point: reading positions move to `advance`, the buffers go, and the
    /// metrics count the commit.
    fn committed(&mut self, started: Instant, rows: usize, files: u64, bytes: u64) {
        let elapsed = started.elapsed();
        for (topic, partitions) in &self.advance.0 {
            for (partition, next) in partitions {
                self.positions
                    .insert((topic.clone(), *partition), Some(*next));
            }
        }
        let freshness = self
            .oldest_timestamp_ms
            .map(|ts| (now_micros() / 1000 - ts) as f64 / 1000.0)
            .unwrap_or(0.0);
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.commits.fetch_add(1, Relaxed);
        self.metrics.files.fetch_add(files, Relaxed);
        self.metrics.file_bytes.fetch_add(bytes, Relaxed);
        self.metrics
            .committed_records
            .fetch_add(rows as u64, Relaxed);
        self.metrics
            .commit_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        {
            let mut state = self.metrics.state.lock();
            state.last_commit_seconds = elapsed.as_secs_f64();
            state.last_freshness_seconds = freshness.max(0.0);
            state.last_commit_files = files;
            state.last_commit_file_bytes = bytes;
            state.last_commit_at = Some(now_micros() as f64 / 1e6);
            state.last_error = None;
        }
        self.discard_buffers();
    }

    fn fenced(
        &self,
        table: &str,
        topic: &str,
        partition: i32,
        expected: Option<i64>,
        found: Option<i64>,
    ) {
        self.metrics
            .fenced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            pipeline = %self.spec.name,
            %table, %topic, partition, ?expected, ?found,
            "another writer committed these partitions first; dropping the buffer and reading again from the table's offsets"
        );
    }

    /// Drops buffers and rewinds every assigned partition to the table's offsets.
    fn reset_to(&mut self, consumer: &BaseConsumer<IngestContext>, offsets: &Offsets) {
        for ((topic, partition), position) in self.positions.iter_mut() {
            *position = offsets.get(topic, *partition);
        }
        self.rewind(consumer);
    }

    /// Drops buffers and rewinds every assigned partition to where the last commit left it.
    fn rewind(&mut self, consumer: &BaseConsumer<IngestContext>) {
        self.discard_buffers();
        self.forget_targets();
        self.read.clear();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), position) in &self.positions {
            let offset = position.map(Offset::Offset).unwrap_or(Offset::Beginning);
            let _ = tpl.add_partition_offset(topic, *partition, offset);
        }
        self.gap_checks = gap_checks_for(&self.positions);
        if !self.shutting_down
            && tpl.count() > 0
            && let Err(error) = consumer.assign(&tpl)
        {
            tracing::error!(pipeline = %self.spec.name, %error, "cannot rewind partitions");
        }
    }

    /// After a fence: reads the offsets again (they moved) and rewinds to them.
    fn restart_from_table(&mut self, consumer: &BaseConsumer<IngestContext>) {
        match self.table_positions() {
            Ok(offsets) => self.reset_to(consumer, &offsets),
            Err(error) => {
                self.rewind(consumer);
                self.positions_unknown = true;
                self.retry_at = Some(Instant::now() + Duration::from_secs(2));
                self.metrics.state.lock().last_error = Some(error);
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.pause(&assignment);
                }
            }
        }
    }

    fn commit_dead_letters(&mut self) -> Result<(), String> {
        let property = format!("{OFFSETS_PROPERTY}.{}", self.spec.name);
        let properties = self.snapshot_properties();
        self.dead_letter_table(true)?;
        let pipeline = self.spec.name.clone();
        let dead = self.dead_table.as_mut().expect("opened above");
        for _ in 0..10 {
            self.handle
                .block_on(dead.reload())
                .map_err(|error| format!("cannot load the dead-letter table: {error}"))?;
            let recorded = dead.offsets(&property).map_err(|error| error.to_string())?;
            let fresh: Vec<&DeadLetter> = self
                .rejected
                .iter()
                .filter(|letter| {
                    recorded
                        .get(&letter.topic, letter.partition)
                        .is_none_or(|next| letter.offset >= next)
                })
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            if let (Some(producer), Some(topic)) =
                (&self.dead_topic, &self.spec.config.dead_letter_topic)
            {
                send_dead_letters(producer, topic, &fresh)?;
            }
            let batch = dead_letter_batch(&pipeline, &fresh, &dead.arrow_schema(), now_micros())?;
            let files = self
                .handle
                .block_on(dead.write_files(&[batch], &self.spec.writer_id))
                .map_err(|error| format!("cannot write dead letters: {error}"))?;
            let mut advance = Offsets::default();
            let mut expected = Expected::new();
            for letter in &fresh {
                let next = advance
                    .get(&letter.topic, letter.partition)
                    .unwrap_or(0)
                    .max(letter.offset + 1);
                advance.set(&letter.topic, letter.partition, next);
                expected.insert(
                    (letter.topic.clone(), letter.partition),
                    recorded.get(&letter.topic, letter.partition),
                );
            }
            let count = fresh.len() as u64;
            let outcome = self
                .handle
                .block_on(dead.commit_fenced(files, &expected, &advance, &property, &properties))
                .map_err(|error| format!("cannot commit dead letters: {error}"))?;
            if let CommitOutcome::Committed { .. } = outcome {
                self.metrics
                    .dead_letters
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(pipeline = %pipeline, count, "records sent to the dead letters");
                return Ok(());
            }
        }
        Err("the dead-letter table kept changing under this writer".into())
    }

    fn update_lag(&mut self) {
        let mut lag = BTreeMap::new();
        for (key, position) in &self.positions {
            if let Some(high) = self.high_watermarks.get(key) {
                lag.insert(key.clone(), (high - position.unwrap_or(0)).max(0));
            }
        }
        self.metrics.state.lock().lag = lag;
    }

    fn update_rates(&self, last: (Instant, u64, u64)) -> (Instant, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Instant::now();
        let records = self.metrics.records.load(Relaxed);
        let bytes = self.metrics.bytes.load(Relaxed);
        let seconds = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let mut state = self.metrics.state.lock();
        state.records_per_second = (records - last.1) as f64 / seconds;
        state.bytes_per_second = (bytes - last.2) as f64 / seconds;
        (now, records, bytes)
    }
}

/// `topic[partition]` for the partitions of `topics` whose records go beyond what `table`
/// records: the broker's high watermark is more than one past the table's next offset (one is
/// allowed for the commit marker that ends a producer transaction).
fn unlanded_partitions(
    consumer: &BaseConsumer<IngestContext>,
    topics: &[&str],
    table: &Offsets,
) -> Vec<String> {
    let timeout = Duration::from_secs(5);
    let mut unlanded = Vec::new();
    for topic in topics {
        let metadata = match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::debug!(topic, %error, "cannot read the topic's partitions");
                continue;
            }
        };
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let id = partition.id();
            match consumer.fetch_watermarks(topic, id, timeout) {
                Ok((low, high)) => {
                    let landed = table.get(topic, id).unwrap_or(low);
                    tracing::debug!(
                        topic,
                        partition = id,
                        low,
                        high,
                        landed,
                        "unassigned partition"
                    );
                    if high - landed > 1 {
                        unlanded.push(format!("{topic}[{id}]"));
                    }
                }
                Err(error) => {
                    tracing::debug!(topic, partition = id, %error, "cannot read watermarks")
                }
            }
        }
    }
    unlanded
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Checks that the brokers answer, for `fjord ingest --check` and start-up logs.
pub fn probe_brokers(kafka: &KafkaConfig, timeout: Duration) -> KafkaResult<usize> {
    let consumer: BaseConsumer = client_config(kafka, None).create()?;
    let metadata = consumer.fetch_metadata(None, timeout)?;
    Ok(metadata.brokers().len())
}
