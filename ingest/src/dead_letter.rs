//! Records that cannot be landed, kept with the reason in a table of their own.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::decode::timestamp_type;

/// One record that could not be landed.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub error: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Columns of a dead-letter table.
pub fn dead_letter_schema() -> Schema {
    Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, true),
        Field::new("topic", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
        Field::new("kafka_timestamp", timestamp_type(), true),
        Field::new("error", DataType::Utf8, true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("failed_at", timestamp_type(), true),
    ])
}

/// The letters as a batch of `table_schema` (a dead-letter table's columns, as Arrow).
pub fn dead_letter_batch(
    pipeline: &str,
    letters: &[&DeadLetter],
    table_schema: &SchemaRef,
    failed_at_micros: i64,
) -> Result<RecordBatch, String> {
    let rows = letters.len();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in table_schema.fields() {
        let column: ArrayRef = match field.name().as_str() {
            "pipeline" => Arc::new(StringArray::from(vec![pipeline; rows])),
            "topic" => Arc::new(StringArray::from_iter_values(
                letters.iter().map(|l| l.topic.as_str()),
            )),
            "partition" => Arc::new(Int32Array::from_iter_values(
                letters.iter().map(|l| l.partition),
            )),
            "offset" => Arc::new(Int64Array::from_iter_values(
                letters.iter().map(|l| l.offset),
            )),
            "kafka_timestamp" => Arc::new(TimestampMicrosecondArray::from(
                letters
                    .iter()
                    .map(|l| l.timestamp_ms.map(|ms| ms * 1000))
                    .collect::<Vec<_>>(),
            )),
            "error" => Arc::new(StringArray::from_iter_values(
                letters.iter().map(|l| l.error.as_str()),
            )),
            "key" => Arc::new(BinaryArray::from_iter(
                letters.iter().map(|l| l.key.as_deref()),
            )),
            "value" => Arc::new(BinaryArray::from_iter(
                letters.iter().map(|l| l.value.as_deref()),
            )),
            "failed_at" => Arc::new(TimestampMicrosecondArray::from(vec![
                failed_at_micros;
                rows
            ])),
            _ => arrow::array::new_null_array(field.data_type(), rows),
        };
        // The table's types rule (timestamps carry its zone, binary may be large).
        let column = if column.data_type() == field.data_type() {
            column
        } else {
            cast(&column, field.data_type())
                .map_err(|error| format!("dead-letter column `{}`: {error}", field.name()))?
        };
        columns.push(column);
    }
    RecordBatch::try_new(table_schema.clone(), columns).map_err(|error| error.to_string())
}
