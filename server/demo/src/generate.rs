//! The seeded generator of the cat-cafe world.
//!
//! Each kind of entity draws from its own random stream (seed + a fixed offset), so the cats are
//! the same whatever the number of interactions asked for. Events cover `days` days ending at
//! [`HISTORY_END`], a fixed instant, so that a seed means the same rows on every machine and day.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fjord_config::DemoConfig;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::GeneratedTable;

/// The four raw tables, one per Kafka topic.
pub const RAW_TABLES: [&str; 4] = [
    "cat_interactions_raw",
    "cat_wellness_iot_raw",
    "visitor_checkins_raw",
    "cafe_orders_raw",
];

/// End of the generated history: 2026-11-01T00:00:00Z, in microseconds since the epoch.
pub const HISTORY_END: i64 = 1_793_491_200_000_000;

const BATCH_ROWS: usize = 65_536;
const KAFKA_PARTITIONS: i32 = 6;
const DAY_MICROS: i64 = 86_400_000_000;
/// Arrow's spelling of the UTC zone as Iceberg writes it.
const UTC: &str = "+00:00";

const CAT_NAMES: &[&str] = &[
    "Whiskers", "Luna", "Milo", "Oliver", "Leo", "Bella", "Simba", "Nala", "Chloe", "Loki",
    "Mochi", "Pumpkin", "Shadow", "Ginger", "Pepper", "Oreo", "Tiger", "Smokey", "Cleo", "Jasper",
    "Willow", "Biscuit", "Misty", "Felix",
];
const CAT_ARCHETYPES: &[&str] = &[
    "Maine Coon",
    "Siamese",
    "Tabby",
    "Persian",
    "Bengal",
    "Ragdoll",
    "Sphynx",
    "British Shorthair",
    "Scottish Fold",
    "Calico",
];
const COAT_COLORS: &[&str] = &[
    "black",
    "white",
    "orange",
    "grey",
    "cream",
    "brown",
    "tortoiseshell",
    "black and white",
];
const VISITOR_FIRST: &[&str] = &[
    "Ada", "Bjorn", "Chen", "Dana", "Emil", "Farah", "Gus", "Hana", "Ivan", "Jonas", "Kari", "Lea",
    "Mia", "Nils", "Omar", "Pia",
];
const VISITOR_LAST: &[&str] = &[
    "Berg", "Dahl", "Eriksen", "Holm", "Lund", "Moe", "Nilsen", "Strand", "Vik", "Wang",
];
const PERSONAS: &[&str] = &[
    "potential_adopter",
    "casual_visitor",
    "family",
    "cat_lover",
    "remote_worker",
];
pub(crate) const INTERACTIONS: &[(&str, u32)] = &[
    ("pet", 30),
    ("play", 20),
    ("like", 20),
    ("feed", 15),
    ("photo", 15),
];
pub(crate) const MENU: &[(&str, i128)] = &[
    ("LATTE", 450),
    ("CAPPUCCINO", 420),
    ("TEA", 300),
    ("CAT_COOKIE", 250),
    ("CAKE", 550),
    ("SANDWICH", 890),
];

/// Everything `fjord demo` writes.
pub struct DemoWorld {
    pub cats: (SchemaRef, Vec<RecordBatch>),
    pub visitors: (SchemaRef, Vec<RecordBatch>),
    pub interactions: (SchemaRef, Vec<RecordBatch>),
    pub wellness: (SchemaRef, Vec<RecordBatch>),
    pub checkins: (SchemaRef, Vec<RecordBatch>),
    pub orders: (SchemaRef, Vec<RecordBatch>),
}

impl DemoWorld {
    pub fn raw_tables(&self) -> Vec<GeneratedTable> {
        vec![
            (
                RAW_TABLES[0],
                self.interactions.0.clone(),
                self.interactions.1.clone(),
            ),
            (
                RAW_TABLES[1],
                self.wellness.0.clone(),
                self.wellness.1.clone(),
            ),
            (
                RAW_TABLES[2],
                self.checkins.0.clone(),
                self.checkins.1.clone(),
            ),
            (RAW_TABLES[3], self.orders.0.clone(), self.orders.1.clone()),
        ]
    }

    /// (table, primary key, schema, batches) for Postgres.
    pub fn postgres_tables(
        &self,
    ) -> Vec<(&'static str, &'static str, SchemaRef, Vec<RecordBatch>)> {
        vec![
            ("cats", "cat_id", self.cats.0.clone(), self.cats.1.clone()),
            (
                "visitors",
                "visitor_id",
                self.visitors.0.clone(),
                self.visitors.1.clone(),
            ),
        ]
    }
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(stream),
    )
}

fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.r#gen())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A field whose Postgres type is not the natural one for its Arrow type.
fn pg_field(name: &str, data_type: DataType, nullable: bool, pg_type: &str) -> Field {
    Field::new(name, data_type, nullable).with_metadata(HashMap::from([(
        fjord_catalog::fjord_postgres_type_key().to_string(),
        pg_type.to_string(),
    )]))
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

pub fn generate_world(options: &DemoConfig) -> DemoWorld {
    let cats = generate_cats(options);
    let visitors = generate_visitors(options);
    let cat_ids: Vec<String> = cats.1.iter().flat_map(|b| string_column(b, 0)).collect();
    let visitor_ids: Vec<String> = visitors
        .1
        .iter()
        .flat_map(|b| string_column(b, 0))
        .collect();
    let interactions = generate_interactions(options, &cat_ids, &visitor_ids);
    let wellness = generate_wellness(options, &cat_ids);
    let checkins = generate_checkins(options, &visitor_ids);
    let orders = generate_orders(options, &visitor_ids);
    DemoWorld {
        cats,
        visitors,
        interactions,
        wellness,
        checkins,
        orders,
    }
}

/// The ids of the world's cats and visitors, without generating the event history.
pub fn entity_ids(options: &DemoConfig) -> (Vec<String>, Vec<String>) {
    let cats = generate_cats(options);
    let visitors = generate_visitors(options);
    (
        cats.1.iter().flat_map(|b| string_column(b, 0)).collect(),
        visitors
            .1
            .iter()
            .flat_map(|b| string_column(b, 0))
            .collect(),
    )
}

fn string_column(batch: &RecordBatch, index: usize) -> Vec<String> {
    use datafusion::arrow::array::AsArray;
    batch
        .column(index)
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect()
}

fn generate_cats(options: &DemoConfig) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        pg_field("cat_id", DataType::Utf8, false, "uuid"),
        Field::new("name", DataType::Utf8, true),
        Field::new("age", DataType::Int32, true),
        Field::new("archetype", DataType::Utf8, true),
        Field::new("coat_color", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("arrived_on", DataType::Date32, true),
        Field::new("weight_kg", DataType::Decimal128(4, 1), true),
        pg_field("traits", DataType::Utf8, true, "jsonb"),
    ]));
    let mut rng = rng(options.seed, 1);
    let history_end_days = (HISTORY_END / DAY_MICROS) as i32;
    let mut batches = Vec::new();
    let mut remaining = options.cats;
    let mut number = 0usize;
    while remaining > 0 {
        let rows = remaining.min(BATCH_ROWS);
        remaining -= rows;
        let mut ids = StringBuilder::new();
        let mut names = StringBuilder::new();
        let mut ages = Int32Builder::new();
        let mut archetypes = StringBuilder::new();
        let mut coats = StringBuilder::new();
        let mut statuses = StringBuilder::new();
        let mut arrived = Date32Builder::new();
        let mut weights = Decimal128Builder::new()
            .with_precision_and_scale(4, 1)
            .expect("valid decimal");
        let mut traits = StringBuilder::new();
        for _ in 0..rows {
            number += 1;
            ids.append_value(uuid(&mut rng));
            names.append_value(format!(
                "{} {}",
                CAT_NAMES.choose(&mut rng).expect("names"),
                number
            ));
            ages.append_value(rng.gen_range(0..19));
            archetypes.append_value(CAT_ARCHETYPES.choose(&mut rng).expect("archetypes"));
            coats.append_value(COAT_COLORS.choose(&mut rng).expect("colors"));
            statuses.append_value(if rng.gen_bool(0.6) {
                "available"
            } else {
                "adopted"
            });
            arrived.append_value(history_end_days - rng.gen_range(1..1095));
            weights.append_value(rng.gen_range(20..=99));
            traits.append_value(format!(
                "{{\"playful\": {}, \"indoor\": {}, \"good_with_kids\": {}}}",
                rng.gen_bool(0.5),
                rng.gen_bool(0.7),
                rng.gen_bool(0.6)
            ));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(names.finish()),
            Arc::new(ages.finish()),
            Arc::new(archetypes.finish()),
            Arc::new(coats.finish()),
            Arc::new(statuses.finish()),
            Arc::new(arrived.finish()),
            Arc::new(weights.finish()),
            Arc::new(traits.finish()),
        ];
        batches
            .push(RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema"));
    }
    (schema, batches)
}

fn generate_visitors(options: &DemoConfig) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        pg_field("visitor_id", DataType::Utf8, false, "uuid"),
        Field::new("name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("archetype", DataType::Utf8, true),
        Field::new("registered_at", timestamp_type(), true),
    ]));
    let mut rng = rng(options.seed, 2);
    let mut ids = StringBuilder::new();
    let mut names = StringBuilder::new();
    let mut emails = StringBuilder::new();
    let mut personas = StringBuilder::new();
    let mut registered = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    for number in 0..options.visitors {
        let first = VISITOR_FIRST.choose(&mut rng).expect("names");
        let last = VISITOR_LAST.choose(&mut rng).expect("names");
        ids.append_value(uuid(&mut rng));
        names.append_value(format!("{first} {last}"));
        emails.append_value(format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            last.to_lowercase(),
            number
        ));
        personas.append_value(PERSONAS.choose(&mut rng).expect("personas"));
        registered.append_value(HISTORY_END - rng.gen_range(DAY_MICROS..(400 * DAY_MICROS)));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(names.finish()),
        Arc::new(emails.finish()),
        Arc::new(personas.finish()),
        Arc::new(registered.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema");
    (schema, vec![batch])
}

/// Event times, sorted, spread over the history window.
fn event_times(rng: &mut ChaCha8Rng, count: usize, days: u32) -> Vec<i64> {
    let start = HISTORY_END - days.max(1) as i64 * DAY_MICROS;
    let mut times: Vec<i64> = (0..count)
        .map(|_| rng.gen_range(start..HISTORY_END))
        .collect();
    times.sort_unstable();
    times
}

/// The Kafka metadata columns the ingest sidecar writes, filled as a 6-partition topic would
/// have them: the partition from the key, offsets counting up per partition in time order.
struct KafkaColumns {
    topic: &'static str,
    topics: StringBuilder,
    partitions: Int32Builder,
    offsets: Int64Builder,
    timestamps: TimestampMicrosecondBuilder,
    ingested: TimestampMicrosecondBuilder,
}

impl KafkaColumns {
    fn fields(topic_fields: &mut Vec<Field>) {
        topic_fields.push(Field::new("_kafka_topic", DataType::Utf8, true));
        topic_fields.push(Field::new("_kafka_partition", DataType::Int32, true));
        topic_fields.push(Field::new("_kafka_offset", DataType::Int64, true));
        topic_fields.push(Field::new("_kafka_timestamp", timestamp_type(), true));
        topic_fields.push(Field::new("_ingested_at", timestamp_type(), true));
    }

    fn new(topic: &'static str) -> Self {
        KafkaColumns {
            topic,
            topics: StringBuilder::new(),
            partitions: Int32Builder::new(),
            offsets: Int64Builder::new(),
            timestamps: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            ingested: TimestampMicrosecondBuilder::new().with_timezone(UTC),
        }
    }

    fn append(
        &mut self,
        rng: &mut ChaCha8Rng,
        key: &str,
        event_time: i64,
        next_offsets: &mut [i64],
    ) {
        let partition = (key
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % KAFKA_PARTITIONS as u32) as usize;
        let kafka_time = event_time + rng.gen_range(0..2_000_000);
        self.topics.append_value(self.topic);
        self.partitions.append_value(partition as i32);
        self.offsets.append_value(next_offsets[partition]);
        next_offsets[partition] += 1;
        self.timestamps.append_value(kafka_time);
        self.ingested
            .append_value(kafka_time + rng.gen_range(200_000..5_000_000));
    }

    fn finish(&mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.topics.finish()));
        columns.push(Arc::new(self.partitions.finish()));
        columns.push(Arc::new(self.offsets.finish()));
        columns.push(Arc::new(self.timestamps.finish()));
        columns.push(Arc::new(self.ingested.finish()));
    }
}

/// Generates `count` rows in batches: `row` appends one event's own columns and returns the
/// Kafka key; `finish` drains the builders into columns.
fn event_batches<B>(
    schema: &SchemaRef,
    topic: &'static str,
    times: &[i64],
    rng: &mut ChaCha8Rng,
    mut builders: B,
    row: impl Fn(&mut B, &mut ChaCha8Rng, i64) -> String,
    finish: impl Fn(&mut B) -> Vec<ArrayRef>,
) -> Vec<RecordBatch> {
    let mut offsets = vec![0i64; KAFKA_PARTITIONS as usize];
    let mut batches = Vec::new();
    for chunk in times.chunks(BATCH_ROWS) {
        let mut kafka = KafkaColumns::new(topic);
        for &time in chunk {
            let key = row(&mut builders, rng, time);
            kafka.append(rng, &key, time, &mut offsets);
        }
        let mut columns = finish(&mut builders);
        kafka.finish(&mut columns);
        batches
            .push(RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema"));
    }
    batches
}

pub(crate) fn weighted<'a>(rng: &mut ChaCha8Rng, choices: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
    let mut pick = rng.gen_range(0..total);
    for (choice, weight) in choices {
        if pick < *weight {
            return choice;
        }
        pick -= weight;
    }
    choices[choices.len() - 1].0
}

fn generate_interactions(
    options: &DemoConfig,
    cats: &[String],
    visitors: &[String],
) -> (SchemaRef, Vec<RecordBatch>) {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_time", timestamp_type(), true),
        Field::new("visitor_id", DataType::Utf8, true),
        Field::new("cat_id", DataType::Utf8, true),
        Field::new("interaction_type", DataType::Utf8, true),
        Field::new("duration_seconds", DataType::Int32, true),
    ];
    KafkaColumns::fields(&mut fields);
    let schema = Arc::new(Schema::new(fields));
    let mut rng = rng(options.seed, 3);
    let times = event_times(&mut rng, options.interactions, options.days);
    type Builders = (
        StringBuilder,
        TimestampMicrosecondBuilder,
        StringBuilder,
        StringBuilder,
        StringBuilder,
        Int32Builder,
    );
    let builders: Builders = (
        StringBuilder::new(),
        TimestampMicrosecondBuilder::new().with_timezone(UTC),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Int32Builder::new(),
    );
    let batches = event_batches(
        &schema,
        "cat-interactions",
        &times,
        &mut rng,
        builders,
        |b: &mut Builders, rng, time| {
            let cat = cats.choose(rng).cloned().unwrap_or_default();
            b.0.append_value(uuid(rng));
            b.1.append_value(time);
            b.2.append_value(visitors.choose(rng).map(String::as_str).unwrap_or_default());
            b.3.append_value(&cat);
            b.4.append_value(weighted(rng, INTERACTIONS));
            b.5.append_value(rng.gen_range(5..900));
            cat
        },
        |b: &mut Builders| {
            vec![
                Arc::new(b.0.finish()) as ArrayRef,
                Arc::new(b.1.finish()),
                Arc::new(b.2.finish()),
                Arc::new(b.3.finish()),
                Arc::new(b.4.finish()),
                Arc::new(b.5.finish()),
            ]
        },
    );
    (schema, batches)
}

fn generate_wellness(options: &DemoConfig, cats: &[String]) -> (SchemaRef, Vec<RecordBatch>) {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_time", timestamp_type(), true),
        Field::new("cat_id", DataType::Utf8, true),
        Field::new("activity_level", DataType::Float64, true),
        Field::new("heart_rate_bpm", DataType::Int32, true),
        Field::new("hours_since_last_drink", DataType::Float64, true),
        Field::new("body_temp_c", DataType::Float64, true),
    ];
    KafkaColumns::fields(&mut fields);
    let schema = Arc::new(Schema::new(fields));
    let mut rng = rng(options.seed, 4);
    let times = event_times(&mut rng, options.interactions / 4, options.days);
    type Builders = (
        StringBuilder,
        TimestampMicrosecondBuilder,
        StringBuilder,
        Float64Builder,
        Int32Builder,
        Float64Builder,
        Float64Builder,
    );
    let builders: Builders = (
        StringBuilder::new(),
        TimestampMicrosecondBuilder::new().with_timezone(UTC),
        StringBuilder::new(),
        Float64Builder::new(),
        Int32Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    let round = |value: f64| (value * 10.0).round() / 10.0;
    let batches = event_batches(
        &schema,
        "cat-wellness-iot",
        &times,
        &mut rng,
        builders,
        |b: &mut Builders, rng, time| {
            let cat = cats.choose(rng).cloned().unwrap_or_default();
            b.0.append_value(uuid(rng));
            b.1.append_value(time);
            b.2.append_value(&cat);
            // Mostly healthy cats; a few quiet or thirsty readings for the alert rules.
            let activity = if rng.gen_bool(0.05) {
                rng.gen_range(0.0..2.0)
            } else {
                rng.gen_range(2.0..10.0)
            };
            b.3.append_value(round(activity));
            b.4.append_value(rng.gen_range(120..221));
            let thirst = if rng.gen_bool(0.03) {
                rng.gen_range(8.0..14.0)
            } else {
                rng.gen_range(0.0..8.0)
            };
            b.5.append_value(round(thirst));
            b.6.append_value(round(rng.gen_range(37.5..39.6)));
            cat
        },
        |b: &mut Builders| {
            vec![
                Arc::new(b.0.finish()) as ArrayRef,
                Arc::new(b.1.finish()),
                Arc::new(b.2.finish()),
                Arc::new(b.3.finish()),
                Arc::new(b.4.finish()),
                Arc::new(b.5.finish()),
                Arc::new(b.6.finish()),
            ]
        },
    );
    (schema, batches)
}

fn generate_checkins(options: &DemoConfig, visitors: &[String]) -> (SchemaRef, Vec<RecordBatch>) {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_time", timestamp_type(), true),
        Field::new("visitor_id", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
    ];
    KafkaColumns::fields(&mut fields);
    let schema = Arc::new(Schema::new(fields));
    let mut rng = rng(options.seed, 5);
    let times = event_times(&mut rng, options.interactions / 10, options.days);
    type Builders = (
        StringBuilder,
        TimestampMicrosecondBuilder,
        StringBuilder,
        StringBuilder,
    );
    let builders: Builders = (
        StringBuilder::new(),
        TimestampMicrosecondBuilder::new().with_timezone(UTC),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let batches = event_batches(
        &schema,
        "visitor-checkins",
        &times,
        &mut rng,
        builders,
        |b: &mut Builders, rng, time| {
            let visitor = visitors.choose(rng).cloned().unwrap_or_default();
            b.0.append_value(uuid(rng));
            b.1.append_value(time);
            b.2.append_value(&visitor);
            b.3.append_value(if rng.gen_bool(0.5) {
                "check_in"
            } else {
                "check_out"
            });
            visitor
        },
        |b: &mut Builders| {
            vec![
                Arc::new(b.0.finish()) as ArrayRef,
                Arc::new(b.1.finish()),
                Arc::new(b.2.finish()),
                Arc::new(b.3.finish()),
            ]
        },
    );
    (schema, batches)
}

fn generate_orders(options: &DemoConfig, visitors: &[String]) -> (SchemaRef, Vec<RecordBatch>) {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_time", timestamp_type(), true),
        Field::new("order_id", DataType::Utf8, true),
        Field::new("visitor_id", DataType::Utf8, true),
        // The order lines as the topic carries them: a JSON array of {sku, qty, price}.
        Field::new("items", DataType::Utf8, true),
        Field::new("total_amount", DataType::Decimal128(10, 2), true),
    ];
    KafkaColumns::fields(&mut fields);
    let schema = Arc::new(Schema::new(fields));
    let mut rng = rng(options.seed, 6);
    let times = event_times(&mut rng, options.interactions / 20, options.days);
    type Builders = (
        StringBuilder,
        TimestampMicrosecondBuilder,
        StringBuilder,
        StringBuilder,
        StringBuilder,
        Decimal128Builder,
    );
    let builders: Builders = (
        StringBuilder::new(),
        TimestampMicrosecondBuilder::new().with_timezone(UTC),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Decimal128Builder::new()
            .with_precision_and_scale(10, 2)
            .expect("valid decimal"),
    );
    let batches = event_batches(
        &schema,
        "cafe-orders",
        &times,
        &mut rng,
        builders,
        |b: &mut Builders, rng, time| {
            let visitor = visitors.choose(rng).cloned().unwrap_or_default();
            let lines = rng.gen_range(1..4);
            let mut total: i128 = 0;
            let mut items = Vec::new();
            for _ in 0..lines {
                let (sku, price) = MENU.choose(rng).expect("menu");
                let quantity: i128 = rng.gen_range(1..3);
                total += price * quantity;
                items.push(format!(
                    "{{\"sku\": \"{sku}\", \"qty\": {quantity}, \"price\": {}.{:02}}}",
                    price / 100,
                    price % 100
                ));
            }
            b.0.append_value(uuid(rng));
            b.1.append_value(time);
            b.2.append_value(uuid(rng));
            b.3.append_value(&visitor);
            b.4.append_value(format!("[{}]", items.join(", ")));
            b.5.append_value(total);
            visitor
        },
        |b: &mut Builders| {
            vec![
                Arc::new(b.0.finish()) as ArrayRef,
                Arc::new(b.1.finish()),
                Arc::new(b.2.finish()),
                Arc::new(b.3.finish()),
                Arc::new(b.4.finish()),
                Arc::new(b.5.finish()),
            ]
        },
    );
    (schema, batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DemoConfig {
        DemoConfig {
            interactions: 1000,
            cats: 50,
            visitors: 20,
            ..DemoConfig::default()
        }
    }

    #[test]
    fn the_same_seed_builds_the_same_world() {
        let a = generate_world(&small());
        let b = generate_world(&small());
        assert_eq!(a.interactions.1, b.interactions.1);
        assert_eq!(a.cats.1, b.cats.1);
        let other = generate_world(&DemoConfig { seed: 7, ..small() });
        assert_ne!(a.cats.1, other.cats.1);
    }

    #[test]
    fn events_refer_to_generated_cats_and_stay_in_the_window() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::TimestampMicrosecondType;
        let world = generate_world(&small());
        let cats: std::collections::HashSet<String> = world
            .cats
            .1
            .iter()
            .flat_map(|b| string_column(b, 0))
            .collect();
        for batch in &world.interactions.1 {
            for cat in string_column(batch, 3) {
                assert!(cats.contains(&cat));
            }
            let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
            for time in times.iter().flatten() {
                assert!((HISTORY_END - 30 * DAY_MICROS..HISTORY_END).contains(&time));
            }
        }
        assert_eq!(
            world
                .interactions
                .1
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            1000
        );
    }
}
