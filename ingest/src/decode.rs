//! JSON record values straight into Arrow batches in the table's schema.
//!
//! The fast path hands a whole chunk of values to arrow-json's decoder in strict mode. When that
//! fails, the slow path looks at each record on its own: records with fields the table lacks ask
//! for new columns (schema evolution), records that cannot be decoded become dead letters with
//! the reason, and the rest are decoded again. A bad record never stops the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_json::ReaderBuilder;

/// Columns the sidecar adds to every row, after the record's own fields.
pub const META_TOPIC: &str = "_kafka_topic";
pub const META_PARTITION: &str = "_kafka_partition";
pub const META_OFFSET: &str = "_kafka_offset";
pub const META_TIMESTAMP: &str = "_kafka_timestamp";
pub const META_INGESTED_AT: &str = "_ingested_at";
pub const META_COLUMNS: [&str; 5] = [
    META_TOPIC,
    META_PARTITION,
    META_OFFSET,
    META_TIMESTAMP,
    META_INGESTED_AT,
];

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

/// The metadata columns as Arrow fields.
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new(META_TOPIC, DataType::Utf8, true),
        Field::new(META_PARTITION, DataType::Int32, true),
        Field::new(META_OFFSET, DataType::Int64, true),
        Field::new(META_TIMESTAMP, timestamp_type(), true),
        Field::new(META_INGESTED_AT, timestamp_type(), true),
    ]
}

/// Records read from Kafka and not yet decoded, kept in flat buffers.
#[derive(Default)]
pub struct Chunk {
    values: Vec<u8>,
    value_ends: Vec<usize>,
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    has_key: Vec<bool>,
    pub topics: Vec<Arc<str>>,
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
    /// Kafka timestamps, milliseconds since the epoch.
    pub timestamps: Vec<Option<i64>>,
    /// The values as read from Kafka, for records whose `value` was rewritten before decoding
    /// (Debezium events); dead letters keep these. `None` inside: the record had no value.
    originals: Vec<Option<Box<[u8]>>>,
}

impl Chunk {
    pub fn push(
        &mut self,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: &[u8],
    ) {
        self.values.extend_from_slice(value);
        self.values.push(b'\n');
        self.value_ends.push(self.values.len());
        if let Some(key) = key {
            self.keys.extend_from_slice(key);
        }
        self.has_key.push(key.is_some());
        self.key_ends.push(self.keys.len());
        self.topics.push(topic);
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
    }

    /// Pushes one Kafka record as it is, or with `debezium` as its change-log row (the event
    /// kept beside it). Err: why the record is not a change event; nothing is pushed then.
    pub fn push_record(
        &mut self,
        debezium: Option<&mut crate::debezium::DebeziumState>,
        topic: Arc<str>,
        message: &impl rdkafka::Message,
    ) -> Result<(), String> {
        let (partition, offset) = (message.partition(), message.offset());
        let timestamp = message.timestamp().to_millis();
        match debezium {
            Some(debezium) => {
                let row = debezium.flatten(message.key(), message.payload())?;
                self.push_rewritten(
                    topic,
                    partition,
                    offset,
                    timestamp,
                    message.key(),
                    &row,
                    message.payload(),
                );
            }
            None => self.push(
                topic,
                partition,
                offset,
                timestamp,
                message.key(),
                message.payload().unwrap_or_default(),
            ),
        }
        Ok(())
    }

    /// Like [`Chunk::push`] for a record whose value was rewritten: `original` is what Kafka
    /// held. A chunk takes either only this or only `push`.
    #[allow(clippy::too_many_arguments)]
    pub fn push_rewritten(
        &mut self,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: &[u8],
        original: Option<&[u8]>,
    ) {
        self.push(topic, partition, offset, timestamp, key, value);
        self.originals.push(original.map(Box::from));
    }

    /// Record `i`'s value as Kafka held it (`None`: no value).
    pub fn original(&self, i: usize) -> Option<&[u8]> {
        match self.originals.get(i) {
            Some(original) => original.as_deref(),
            None => Some(self.value(i)),
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Bytes of values held.
    pub fn value_bytes(&self) -> usize {
        self.values.len()
    }

    /// Record `i`'s value, without the separator.
    pub fn value(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.value_ends[i - 1] };
        &self.values[start..self.value_ends[i] - 1]
    }

    pub fn key(&self, i: usize) -> Option<&[u8]> {
        if !self.has_key[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        Some(&self.keys[start..self.key_ends[i]])
    }

    /// A chunk of the records at `rows`, in order.
    pub fn select(&self, rows: &[usize]) -> Chunk {
        let mut out = Chunk::default();
        for &i in rows {
            out.push(
                self.topics[i].clone(),
                self.partitions[i],
                self.offsets[i],
                self.timestamps[i],
                self.key(i),
                self.value(i),
            );
            if let Some(original) = self.originals.get(i) {
                out.originals.push(original.clone());
            }
        }
        out
    }
}

/// A record that cannot be landed, with the reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub row: usize,
    pub error: String,
}

/// What decoding a chunk gave.
pub enum Decoded {
    /// Rows in the table's schema (possibly none), plus the records rejected.
    Rows {
        batch: Option<RecordBatch>,
        rejected: Vec<Rejected>,
    },
    /// Some records carry fields the table does not have: add these columns, then decode again.
    NeedsColumns(Vec<Field>),
}

/// Per-pipeline decoding state carried from chunk to chunk.
#[derive(Debug, Default)]
pub struct DecodeState {
    /// Records need normalizing before arrow-json sees them (a text column receives objects,
    /// arrays, numbers or booleans, which are stored as their JSON text): skip the fast path.
    pub normalize: bool,
}

/// Decodes `chunk` into a batch of `table_schema` (record fields plus the metadata columns).
/// `event_time` names the field that new tables and new columns type as a timestamp.
pub fn decode_json(
    chunk: &Chunk,
    table_schema: &SchemaRef,
    event_time: Option<&str>,
    ingested_at_micros: i64,
    state: &mut DecodeState,
) -> Result<Decoded, String> {
    let data_schema = data_schema(table_schema);
    if chunk.is_empty() {
        return Ok(Decoded::Rows {
            batch: None,
            rejected: Vec::new(),
        });
    }
    if !state.normalize
        && let Ok(batch) = decode_all(&chunk.values, chunk.len(), &data_schema)
    {
        let full = with_meta(&batch, chunk, table_schema, ingested_at_micros)?;
        return Ok(Decoded::Rows {
            batch: Some(full),
            rejected: Vec::new(),
        });
    }

    // Slow path: look at each record. Invalid ones are rejected, unknown fields collected,
    // values for text columns that are not text turned into their JSON text.
    let mut rejected = Vec::new();
    let mut candidates: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut new_fields: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for row in 0..chunk.len() {
        let value = chunk.value(row);
        let parsed: serde_json::Value = match serde_json::from_slice(value) {
            Ok(parsed) => parsed,
            Err(error) => {
                rejected.push(Rejected {
                    row,
                    error: format!("not valid JSON: {error}"),
                });
                continue;
            }
        };
        let serde_json::Value::Object(mut object) = parsed else {
            rejected.push(Rejected {
                row,
                error: format!("the value is a JSON {}, not an object", json_kind(&parsed)),
            });
            continue;
        };
        let mut unknown = false;
        let mut changed = false;
        for (name, field_value) in object.iter_mut() {
            match data_schema.field_with_name(name) {
                Ok(field) => {
                    if field.data_type() == &DataType::Utf8
                        && !matches!(
                            field_value,
                            serde_json::Value::String(_) | serde_json::Value::Null
                        )
                    {
                        *field_value = serde_json::Value::String(field_value.to_string());
                        changed = true;
                    }
                }
                Err(_) if META_COLUMNS.contains(&name.as_str()) => {}
                Err(_) => {
                    unknown = true;
                    new_fields
                        .entry(name.clone())
                        .or_default()
                        .push(field_value.clone());
                }
            }
        }
        if unknown {
            continue;
        }
        if changed {
            state.normalize = true;
            let bytes = serde_json::to_vec(&serde_json::Value::Object(object))
                .map_err(|error| error.to_string())?;
            candidates.push((row, bytes));
        } else {
            candidates.push((row, value.to_vec()));
        }
    }
    if !new_fields.is_empty() {
        return Ok(Decoded::NeedsColumns(infer_fields(new_fields, event_time)));
    }
    if candidates.is_empty() {
        return Ok(Decoded::Rows {
            batch: None,
            rejected,
        });
    }
    let joined = |rows: &[(usize, Vec<u8>)]| {
        let mut buffer = Vec::new();
        for (_, bytes) in rows {
            buffer.extend_from_slice(bytes);
            buffer.push(b'\n');
        }
        buffer
    };
    // Together first; one by one only when some record does not fit the columns.
    let good: Vec<(usize, Vec<u8>)> =
        if decode_all(&joined(&candidates), candidates.len(), &data_schema).is_ok() {
            candidates
        } else {
            let mut good = Vec::new();
            for (row, bytes) in candidates {
                match decode_all(&bytes, 1, &data_schema) {
                    Ok(_) => good.push((row, bytes)),
                    Err(error) => rejected.push(Rejected {
                        row,
                        error: clean_arrow_error(&error),
                    }),
                }
            }
            good
        };
    rejected.sort_by_key(|rejected| rejected.row);
    if good.is_empty() {
        return Ok(Decoded::Rows {
            batch: None,
            rejected,
        });
    }
    let rows: Vec<usize> = good.iter().map(|(row, _)| *row).collect();
    let subset = chunk.select(&rows);
    let batch = decode_all(&joined(&good), good.len(), &data_schema)
        .map_err(|error| format!("records that decoded alone failed together: {error}"))?;
    Ok(Decoded::Rows {
        batch: Some(with_meta(
            &batch,
            &subset,
            table_schema,
            ingested_at_micros,
        )?),
        rejected,
    })
}

fn decode_all(values: &[u8], rows: usize, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_strict_mode(true)
        .with_batch_size(rows.max(1))
        .build_decoder()
        .map_err(|error| error.to_string())?;
    let consumed = decoder.decode(values).map_err(|error| error.to_string())?;
    if consumed != values.len() {
        return Err("the decoder stopped early".into());
    }
    let batch = decoder
        .flush()
        .map_err(|error| error.to_string())?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    if batch.num_rows() != rows {
        return Err(format!(
            "{} rows decoded from {rows} records",
            batch.num_rows()
        ));
    }
    Ok(batch)
}

/// The table's schema without the metadata columns: what record values decode into.
pub(crate) fn data_schema(table_schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        table_schema
            .fields()
            .iter()
            .filter(|field| !META_COLUMNS.contains(&field.name().as_str()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// Assembles the decoded record columns and the metadata columns in the table's column order.
pub(crate) fn with_meta(
    data: &RecordBatch,
    chunk: &Chunk,
    table_schema: &SchemaRef,
    ingested_at_micros: i64,
) -> Result<RecordBatch, String> {
    let rows = chunk.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table_schema.fields().len());
    for field in table_schema.fields() {
        let tz = match field.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let column: ArrayRef = match field.name().as_str() {
            META_TOPIC => Arc::new(StringArray::from_iter_values(
                chunk.topics.iter().map(|topic| topic.as_ref()),
            )),
            META_PARTITION => Arc::new(Int32Array::from(chunk.partitions.clone())),
            META_OFFSET => Arc::new(Int64Array::from(chunk.offsets.clone())),
            META_TIMESTAMP => Arc::new(
                TimestampMicrosecondArray::from(
                    chunk
                        .timestamps
                        .iter()
                        .map(|ms| ms.map(|ms| ms * 1000))
                        .collect::<Vec<_>>(),
                )
                .with_timezone_opt(tz),
            ),
            META_INGESTED_AT => Arc::new(
                TimestampMicrosecondArray::from(vec![ingested_at_micros; rows])
                    .with_timezone_opt(tz),
            ),
            name => data
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| format!("decoded records lack column `{name}`"))?,
        };
        columns.push(column);
    }
    RecordBatch::try_new(table_schema.clone(), columns).map_err(|error| error.to_string())
}

/// Arrow types for fields first seen in records, by the kind most of the samples have (a few
/// odd records must not decide a column's type: they become dead letters instead). Integers
/// become bigint, other numbers double (integers mixed with fractions too), objects and arrays
/// stay nested; the event-time field is a timestamp; fields only ever null become text.
pub fn infer_fields(
    samples: BTreeMap<String, Vec<serde_json::Value>>,
    event_time: Option<&str>,
) -> Vec<Field> {
    let mut fields = Vec::new();
    for (name, values) in samples {
        let data_type = if Some(name.as_str()) == event_time {
            timestamp_type()
        } else {
            infer_type(&name, values)
        };
        fields.push(Field::new(name, data_type, true));
    }
    fields
}

fn infer_type(name: &str, values: Vec<serde_json::Value>) -> DataType {
    use serde_json::Value;
    let kind = |value: &Value| match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    let mut counts = [0usize; 6];
    for value in &values {
        counts[kind(value)] += 1;
    }
    let Some(winner) = (1..6).filter(|k| counts[*k] > 0).max_by_key(|k| counts[*k]) else {
        return DataType::Utf8;
    };
    match winner {
        1 => DataType::Boolean,
        2 => {
            let fractional = values
                .iter()
                .any(|value| matches!(value, Value::Number(n) if !n.is_i64() && !n.is_u64()));
            if fractional {
                DataType::Float64
            } else {
                DataType::Int64
            }
        }
        3 => DataType::Utf8,
        _ => {
            let objects = values
                .into_iter()
                .filter(|value| kind(value) == winner)
                .map(|value| {
                    let mut object = serde_json::Map::new();
                    object.insert(name.to_string(), value);
                    Ok::<_, arrow::error::ArrowError>(Value::Object(object))
                });
            arrow_json::reader::infer_json_schema_from_iterator(objects)
                .ok()
                .and_then(|schema| schema.field_with_name(name).ok().cloned())
                .map(|field| replace_null(field.data_type()))
                .unwrap_or(DataType::Utf8)
        }
    }
}

/// Infers the columns of a new table from the records of `chunk`, followed by the metadata
/// columns. Records that are not JSON objects are ignored here (they become dead letters).
pub fn infer_table_schema(chunk: &Chunk, event_time: Option<&str>) -> Schema {
    let mut samples: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for row in 0..chunk.len() {
        if let Ok(OrderedObject(object)) = serde_json::from_slice::<OrderedObject>(chunk.value(row))
        {
            for (name, value) in object {
                if META_COLUMNS.contains(&name.as_str()) {
                    continue;
                }
                if !samples.contains_key(&name) {
                    order.push(name.clone());
                }
                samples.entry(name).or_default().push(value);
            }
        }
    }
    let inferred = infer_fields(samples, event_time);
    let mut fields: Vec<Field> = order
        .iter()
        .filter_map(|name| inferred.iter().find(|field| field.name() == name).cloned())
        .collect();
    fields.extend(meta_fields());
    Schema::new(fields)
}

/// A JSON object's members in the order they were written (serde_json's own map sorts them).
struct OrderedObject(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedObject, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    members.push((name, value));
                }
                Ok(OrderedObject(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn replace_null(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Null => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(
            item.as_ref()
                .clone()
                .with_data_type(replace_null(item.data_type())),
        )),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|field| {
                    Arc::new(
                        field
                            .as_ref()
                            .clone()
                            .with_data_type(replace_null(field.data_type())),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn clean_arrow_error(message: &str) -> String {
    message
        .strip_prefix("Json error: ")
        .unwrap_or(message)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_of(values: &[&str]) -> Chunk {
        let mut chunk = Chunk::default();
        let topic: Arc<str> = Arc::from("t");
        for (offset, value) in values.iter().enumerate() {
            chunk.push(
                topic.clone(),
                0,
                offset as i64,
                Some(1_700_000_000_000),
                Some(b"k"),
                value.as_bytes(),
            );
        }
        chunk
    }

    fn table_schema() -> SchemaRef {
        let mut fields = vec![
            Field::new("id", DataType::Int64, true),
            Field::new("event_time", timestamp_type(), true),
            Field::new("kind", DataType::Utf8, true),
        ];
        fields.extend(meta_fields());
        Arc::new(Schema::new(fields))
    }

    #[test]
    fn good_records_decode_with_metadata() {
        let chunk = chunk_of(&[
            r#"{"id": 1, "event_time": "2026-11-01T10:00:00Z", "kind": "pet"}"#,
            r#"{"id": 2, "event_time": "2026-11-01T10:00:01.5+01:00"}"#,
        ]);
        let Decoded::Rows { batch, rejected } = decode_json(
            &chunk,
            &table_schema(),
            Some("event_time"),
            5,
            &mut DecodeState::default(),
        )
        .unwrap() else {
            panic!("no new columns expected")
        };
        assert!(rejected.is_empty());
        let batch = batch.unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), table_schema());
        let offsets = batch
            .column_by_name(META_OFFSET)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(offsets.values(), &[0, 1]);
    }

    #[test]
    fn a_poison_record_is_rejected_and_the_rest_land() {
        let chunk = chunk_of(&[
            r#"{"id": 1, "kind": "pet"}"#,
            r#"{"id": "#,
            r#"{"id": "not a number"}"#,
            r#"[1, 2]"#,
            r#"{"id": 5}"#,
        ]);
        let Decoded::Rows { batch, rejected } = decode_json(
            &chunk,
            &table_schema(),
            None,
            5,
            &mut DecodeState::default(),
        )
        .unwrap() else {
            panic!("no new columns expected")
        };
        assert_eq!(batch.unwrap().num_rows(), 2);
        let rows: Vec<usize> = rejected.iter().map(|r| r.row).collect();
        assert_eq!(rows, vec![1, 2, 3]);
        assert!(rejected[0].error.contains("not valid JSON"), "{rejected:?}");
        assert!(rejected[2].error.contains("array"), "{rejected:?}");
    }

    #[test]
    fn nested_values_for_text_columns_are_stored_as_json_text() {
        let chunk = chunk_of(&[
            r#"{"id": 1, "kind": {"sku": "LATTE", "qty": 2}}"#,
            r#"{"id": 2, "kind": [1, 2]}"#,
            r#"{"id": 3, "kind": "plain"}"#,
        ]);
        let mut state = DecodeState::default();
        let Decoded::Rows { batch, rejected } =
            decode_json(&chunk, &table_schema(), None, 5, &mut state).unwrap()
        else {
            panic!("no new columns expected")
        };
        assert!(rejected.is_empty(), "{rejected:?}");
        assert!(state.normalize);
        let batch = batch.unwrap();
        let kinds = batch
            .column_by_name("kind")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(kinds.value(0), r#"{"qty":2,"sku":"LATTE"}"#);
        assert_eq!(kinds.value(1), "[1,2]");
        assert_eq!(kinds.value(2), "plain");
    }

    #[test]
    fn new_fields_ask_for_columns() {
        let chunk = chunk_of(&[r#"{"id": 1, "mood": "happy", "score": 2.5, "tags": ["a"]}"#]);
        let Decoded::NeedsColumns(fields) = decode_json(
            &chunk,
            &table_schema(),
            None,
            5,
            &mut DecodeState::default(),
        )
        .unwrap() else {
            panic!("new columns expected")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["mood", "score", "tags"]);
        assert_eq!(fields[1].data_type(), &DataType::Float64);
        assert!(matches!(fields[2].data_type(), DataType::List(_)));
    }

    #[test]
    fn a_few_odd_records_do_not_decide_a_column_type() {
        let chunk = chunk_of(&[
            r#"{"n": 1, "f": 1}"#,
            r#"{"n": 2, "f": 2.5}"#,
            r#"{"n": "lots", "f": 3}"#,
        ]);
        let schema = infer_table_schema(&chunk, None);
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    }

    #[test]
    fn table_schema_is_inferred_in_record_order() {
        let chunk = chunk_of(&[
            r#"{"event_time": "2026-11-01T10:00:00Z", "x": null, "event_id": "e1", "n": 3}"#,
        ]);
        let schema = infer_table_schema(&chunk, Some("event_time"));
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            vec![
                "event_time",
                "x",
                "event_id",
                "n",
                META_TOPIC,
                META_PARTITION,
                META_OFFSET,
                META_TIMESTAMP,
                META_INGESTED_AT
            ]
        );
        assert_eq!(schema.field(0).data_type(), &timestamp_type());
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(3).data_type(), &DataType::Int64);
    }
}
