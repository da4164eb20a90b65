//! Debezium change events from PostgreSQL, flattened into change-log rows.
//!
//! Debezium's connector writes one event per changed row: an envelope with the row `before` and
//! `after` the change, the operation (`c` insert, `u` update, `d` delete, `r` snapshot read) and
//! the source position (`lsn`, `txId`). After a delete it writes a tombstone: the same key with
//! no value, so that Kafka's log compaction can forget the row. Kafka Connect's JsonConverter
//! wraps key and value in `{"schema": ..., "payload": ...}` unless schemas are disabled.
//!
//! Each event becomes one JSON object in the change log's shape: the row's columns (the after
//! image; for a delete the before image, which under Postgres's default replica identity holds
//! only the key, overlaid with the record key), then `_cdc_op`, `_cdc_lsn`, `_cdc_txid`,
//! `_cdc_source_ts` and `_cdc_before` (the before image as JSON text). The object then goes
//! through the JSON decoder like any other record. A tombstone becomes a delete of its key with
//! no source position: on a compacted topic it may be all that is left of a deleted row.
//!
//! When the schema block is present, Debezium's logical types become real column types: dates,
//! timestamps (zoned ones in UTC), times, decimals with their scale, binary. Without it, columns
//! are inferred from the values as for plain JSON (timestamps then arrive as numbers).

use std::collections::HashMap;
use std::io::Write;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use base64::Engine as _;
use serde_json::Value;

use crate::decode::{META_COLUMNS, meta_fields, timestamp_type};

pub const CDC_OP: &str = "_cdc_op";
pub const CDC_LSN: &str = "_cdc_lsn";
pub const CDC_TXID: &str = "_cdc_txid";
pub const CDC_SOURCE_TS: &str = "_cdc_source_ts";
pub const CDC_BEFORE: &str = "_cdc_before";

/// The change-log columns every Debezium row carries, after the row's own columns.
pub fn cdc_fields() -> Vec<Field> {
    vec![
        Field::new(CDC_OP, DataType::Utf8, true),
        Field::new(CDC_LSN, DataType::Int64, true),
        Field::new(CDC_TXID, DataType::Int64, true),
        Field::new(CDC_SOURCE_TS, timestamp_type(), true),
        Field::new(CDC_BEFORE, DataType::Utf8, true),
    ]
}

/// What a Debezium pipeline learns from the events it reads.
#[derive(Debug, Default)]
pub struct DebeziumState {
    /// Column types given by the envelopes' schema blocks.
    hints: HashMap<String, DataType>,
    /// The primary-key columns, from the first record key seen.
    pub key_columns: Option<Vec<String>>,
}

impl DebeziumState {
    /// One event (key and value as read from Kafka; no value for a tombstone) as a change-log
    /// row in JSON, or why it cannot be one.
    pub fn flatten(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let Some(key) = key else {
            return Err(
                "the event has no key: Debezium sends keyless events for tables without \
                        a primary key (or REPLICA IDENTITY), and the current state needs one"
                    .into(),
            );
        };
        let key: Value = serde_json::from_slice(key)
            .map_err(|error| format!("the key is not valid JSON: {error}"))?;
        let (key_payload, key_schema) = split_envelope(key);
        let Value::Object(key_payload) = key_payload else {
            return Err("the key is not a JSON object of key columns".into());
        };
        let key_fields = schema_fields(key_schema.as_ref());
        let key_columns = ordered_names(&key_payload, key_fields);
        if key_columns.is_empty() {
            return Err("the key has no columns".into());
        }
        if self.key_columns.is_none() {
            self.key_columns = Some(key_columns.clone());
        }
        let mut key_values = Vec::new();
        for name in &key_columns {
            let raw = key_payload.get(name).cloned().unwrap_or(Value::Null);
            key_values.push((name.clone(), self.convert(name, raw, key_fields)?));
        }

        let Some(value) = value else {
            // A tombstone: the key was deleted.
            let mut row = key_values;
            row.push((CDC_OP.into(), Value::String("d".into())));
            return Ok(write_object(&row));
        };
        let value: Value = serde_json::from_slice(value)
            .map_err(|error| format!("the value is not valid JSON: {error}"))?;
        let (payload, schema) = split_envelope(value);
        let Value::Object(mut payload) = payload else {
            return Err("the value is not a Debezium envelope (a JSON object)".into());
        };
        let op = match payload.get("op") {
            Some(Value::String(op)) => op.clone(),
            _ => {
                return Err(
                    "the value is not a Debezium change event: it has no `op` (is the \
                     pipeline's format right, or does Debezium unwrap its events?)"
                        .into(),
                );
            }
        };
        let row_fields = schema
            .as_ref()
            .and_then(|schema| envelope_field(schema, "after"))
            .or_else(|| {
                schema
                    .as_ref()
                    .and_then(|schema| envelope_field(schema, "before"))
            })
            .and_then(|field| field.get("fields"))
            .and_then(Value::as_array);
        let before = payload.remove("before").unwrap_or(Value::Null);
        let after = payload.remove("after").unwrap_or(Value::Null);
        let image = match op.as_str() {
            "c" | "r" | "u" => match after {
                Value::Object(after) => after,
                _ => return Err(format!("a `{op}` event without an `after` row")),
            },
            "d" => match &before {
                Value::Object(before) => before.clone(),
                _ => serde_json::Map::new(),
            },
            "t" => {
                return Err(
                    "a truncate event: fjord does not apply truncates to the current \
                            state (Debezium skips them unless skipped.operations is changed)"
                        .into(),
                );
            }
            other => return Err(format!("unknown Debezium operation `{other}`")),
        };
        let mut row = Vec::new();
        for name in ordered_names(&image, row_fields) {
            let raw = image.get(&name).cloned().unwrap_or(Value::Null);
            let converted = self.convert(&name, raw, row_fields)?;
            row.push((name, converted));
        }
        // A delete's before image may hold only the key, or nothing: the record key decides.
        for (name, value) in key_values {
            match row.iter_mut().find(|(column, _)| *column == name) {
                Some((_, existing)) if !existing.is_null() => {}
                Some((_, existing)) => *existing = value,
                None => row.push((name, value)),
            }
        }
        let source = payload.get("source");
        let source_number = |field: &str| {
            source
                .and_then(|source| source.get(field))
                .and_then(Value::as_i64)
        };
        let source_ts = source_number("ts_us")
            .or_else(|| source_number("ts_ms").map(|ms| ms * 1000))
            .or_else(|| {
                payload
                    .get("ts_ms")
                    .and_then(Value::as_i64)
                    .map(|ms| ms * 1000)
            });
        row.push((CDC_OP.into(), Value::String(op)));
        row.push((CDC_LSN.into(), source_number("lsn").into()));
        row.push((CDC_TXID.into(), source_number("txId").into()));
        row.push((CDC_SOURCE_TS.into(), source_ts.into()));
        let before_text = match before {
            Value::Null => Value::Null,
            before => Value::String(before.to_string()),
        };
        row.push((CDC_BEFORE.into(), before_text));
        Ok(write_object(&row))
    }

    /// Converts one column value by its Connect schema (when there is one), remembering the
    /// column's type.
    fn convert(
        &mut self,
        name: &str,
        value: Value,
        fields: Option<&Vec<Value>>,
    ) -> Result<Value, String> {
        let Some(field) = fields.and_then(|fields| {
            fields
                .iter()
                .find(|field| field.get("field").and_then(Value::as_str) == Some(name))
        }) else {
            return Ok(value);
        };
        let (converted, data_type) =
            convert_value(value, field).map_err(|error| format!("column `{name}`: {error}"))?;
        if !self.hints.contains_key(name) {
            self.hints.insert(name.to_string(), data_type);
        }
        Ok(converted)
    }

    /// `field` with the type the schema blocks gave its column, if any.
    pub fn hinted(&self, field: &Field) -> Field {
        match self.hints.get(field.name()) {
            Some(data_type) => field.clone().with_data_type(data_type.clone()),
            None => field.clone(),
        }
    }

    /// A change-log table's schema from the inferred one: the row's columns retyped by the
    /// hints, then the change-log columns in their fixed types, then the Kafka metadata.
    pub fn table_schema(&self, inferred: &Schema) -> Schema {
        let cdc = cdc_fields();
        let mut fields: Vec<Field> = inferred
            .fields()
            .iter()
            .filter(|field| {
                !cdc.iter().any(|cdc| cdc.name() == field.name())
                    && !META_COLUMNS.contains(&field.name().as_str())
            })
            .map(|field| self.hinted(field))
            .collect();
        fields.extend(cdc);
        fields.extend(meta_fields());
        Schema::new(fields)
    }
}

/// `{"schema": s, "payload": p}` gives `(p, Some(s))`; anything else is its own payload.
fn split_envelope(value: Value) -> (Value, Option<Value>) {
    match value {
        Value::Object(mut object)
            if object.contains_key("payload") && object.contains_key("schema") =>
        {
            let payload = object.remove("payload").unwrap_or(Value::Null);
            let schema = object.remove("schema");
            (payload, schema)
        }
        other => (other, None),
    }
}

/// The `fields` of a struct schema.
fn schema_fields(schema: Option<&Value>) -> Option<&Vec<Value>> {
    schema?.get("fields")?.as_array()
}

/// The envelope schema's member `name` (`before` or `after`).
fn envelope_field<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema
        .get("fields")?
        .as_array()?
        .iter()
        .find(|field| field.get("field").and_then(Value::as_str) == Some(name))
}

/// Column names in the schema's order when there is one, else the object's.
fn ordered_names(
    object: &serde_json::Map<String, Value>,
    fields: Option<&Vec<Value>>,
) -> Vec<String> {
    match fields {
        Some(fields) => fields
            .iter()
            .filter_map(|field| field.get("field").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        None => object.keys().cloned().collect(),
    }
}

fn write_object(members: &[(String, Value)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * members.len());
    out.push(b'{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, value);
    }
    let _ = out.write_all(b"}");
    out
}

/// A value of a Connect field schema as the JSON the decoder reads for its Arrow type.
fn convert_value(value: Value, field: &Value) -> Result<(Value, DataType), String> {
    let connect_type = field.get("type").and_then(Value::as_str).unwrap_or("");
    let logical = field.get("name").and_then(Value::as_str).unwrap_or("");
    let parameter = |name: &str| {
        field
            .get("parameters")
            .and_then(|parameters| parameters.get(name))
            .and_then(Value::as_str)
    };
    let naive_timestamp = DataType::Timestamp(TimeUnit::Microsecond, None);
    let time = DataType::Time64(TimeUnit::Microsecond);
    let data_type = match logical {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => DataType::Date32,
        "io.debezium.time.Timestamp"
        | "io.debezium.time.MicroTimestamp"
        | "io.debezium.time.NanoTimestamp"
        | "org.apache.kafka.connect.data.Timestamp" => naive_timestamp.clone(),
        "io.debezium.time.ZonedTimestamp" => timestamp_type(),
        "io.debezium.time.Time"
        | "io.debezium.time.MicroTime"
        | "io.debezium.time.NanoTime"
        | "org.apache.kafka.connect.data.Time" => time.clone(),
        "org.apache.kafka.connect.data.Decimal" => {
            let scale: i8 = parameter("scale")
                .and_then(|scale| scale.parse().ok())
                .ok_or("a decimal without its scale")?;
            let precision: u8 = parameter("connect.decimal.precision")
                .and_then(|precision| precision.parse().ok())
                .unwrap_or(38)
                .clamp(1, 38);
            DataType::Decimal128(precision.max(scale.max(0) as u8), scale)
        }
        _ => match connect_type {
            "int8" | "int16" | "int32" => DataType::Int32,
            "int64" => DataType::Int64,
            "float32" => DataType::Float32,
            "float64" => DataType::Float64,
            "boolean" => DataType::Boolean,
            "bytes" => DataType::Binary,
            _ => DataType::Utf8,
        },
    };
    if value.is_null() {
        return Ok((Value::Null, data_type));
    }
    let number = |value: &Value| {
        value
            .as_i64()
            .ok_or_else(|| format!("expected a number for {logical}, found {value}"))
    };
    let converted = match logical {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
            let days = number(&value)?;
            let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(days)))
                .ok_or_else(|| format!("date out of range: {days}"))?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            naive_micros(number(&value)?.checked_mul(1000))?
        }
        "io.debezium.time.MicroTimestamp" => naive_micros(Some(number(&value)?))?,
        "io.debezium.time.NanoTimestamp" => naive_micros(Some(number(&value)?.div_euclid(1000)))?,
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
            time_of_day(number(&value)? * 1000)?
        }
        "io.debezium.time.MicroTime" => time_of_day(number(&value)?)?,
        "io.debezium.time.NanoTime" => time_of_day(number(&value)?.div_euclid(1000))?,
        "org.apache.kafka.connect.data.Decimal" => {
            let DataType::Decimal128(_, scale) = data_type else {
                unreachable!("decimal type above")
            };
            let text = value.as_str().ok_or("a decimal that is not base64 text")?;
            Value::String(decimal_text(text, scale)?)
        }
        "io.debezium.data.VariableScaleDecimal" => {
            let scale = value
                .get("scale")
                .and_then(Value::as_i64)
                .ok_or("a variable-scale decimal without its scale")?;
            let digits = value
                .get("value")
                .and_then(Value::as_str)
                .ok_or("a variable-scale decimal without its value")?;
            Value::String(decimal_text(digits, scale as i8)?)
        }
        _ => match (&data_type, value) {
            (DataType::Binary, Value::String(text)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|error| format!("bytes that are not base64: {error}"))?;
                let mut hex = String::with_capacity(bytes.len() * 2);
                for byte in bytes {
                    hex.push_str(&format!("{byte:02x}"));
                }
                Value::String(hex)
            }
            (DataType::Utf8, value @ (Value::Array(_) | Value::Object(_))) => {
                Value::String(value.to_string())
            }
            (_, value) => value,
        },
    };
    Ok((converted, data_type))
}

fn naive_micros(micros: Option<i64>) -> Result<Value, String> {
    let micros = micros.ok_or("timestamp out of range")?;
    let timestamp = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| format!("timestamp out of range: {micros}"))?;
    Ok(Value::String(
        timestamp
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string(),
    ))
}

fn time_of_day(micros: i64) -> Result<Value, String> {
    if !(0..=86_400_000_000).contains(&micros) {
        return Err(format!("time of day out of range: {micros} µs"));
    }
    let seconds = micros / 1_000_000;
    Ok(Value::String(format!(
        "{:02}:{:02}:{:02}.{:06}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        micros % 1_000_000
    )))
}

/// Kafka Connect's decimal: the unscaled value as big-endian two's complement, in base64.
fn decimal_text(base64_text: &str, scale: i8) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text.as_bytes())
        .map_err(|error| format!("a decimal that is not base64: {error}"))?;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes (fjord keeps at most 38 digits)",
            bytes.len()
        ));
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut unscaled: i128 = if negative { -1 } else { 0 };
    for byte in bytes {
        unscaled = (unscaled << 8) | i128::from(byte);
    }
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale <= 0 {
        let zeros = "0".repeat(scale.unsigned_abs() as usize);
        return Ok(format!("{sign}{digits}{zeros}"));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{whole}.{fraction}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(state: &mut DebeziumState, key: &str, value: Option<&str>) -> Value {
        let bytes = state
            .flatten(Some(key.as_bytes()), value.map(str::as_bytes))
            .expect("flattens");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn decimals_keep_their_scale_and_sign() {
        // 1250 unscaled = 0x04E2; -1 = 0xFF.
        assert_eq!(decimal_text("BOI=", 2).unwrap(), "12.50");
        assert_eq!(decimal_text("/w==", 2).unwrap(), "-0.01");
        assert_eq!(decimal_text("BOI=", 0).unwrap(), "1250");
    }

    #[test]
    fn an_update_without_schemas_becomes_a_row_with_its_source_position() {
        let mut state = DebeziumState::default();
        let row = flat(
            &mut state,
            r#"{"id":7}"#,
            Some(
                r#"{"before":null,"after":{"id":7,"name":"Mochi"},"source":{"lsn":123,"txId":9,"ts_ms":1000},"op":"u","ts_ms":2000}"#,
            ),
        );
        assert_eq!(row["id"], 7);
        assert_eq!(row["name"], "Mochi");
        assert_eq!(row[CDC_OP], "u");
        assert_eq!(row[CDC_LSN], 123);
        assert_eq!(row[CDC_TXID], 9);
        assert_eq!(row[CDC_SOURCE_TS], 1_000_000);
        assert_eq!(row[CDC_BEFORE], Value::Null);
        assert_eq!(state.key_columns, Some(vec!["id".to_string()]));
    }

    #[test]
    fn a_key_only_delete_and_a_tombstone_carry_the_key() {
        let mut state = DebeziumState::default();
        let key = r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}]},"payload":{"id":3}}"#;
        let delete = flat(
            &mut state,
            key,
            Some(r#"{"before":null,"after":null,"source":{"lsn":5},"op":"d"}"#),
        );
        assert_eq!(delete["id"], 3);
        assert_eq!(delete[CDC_OP], "d");
        let tombstone = flat(&mut state, key, None);
        assert_eq!(tombstone["id"], 3);
        assert_eq!(tombstone[CDC_OP], "d");
        assert!(tombstone.get(CDC_LSN).is_none());
    }

    #[test]
    fn logical_types_become_column_types() {
        let mut state = DebeziumState::default();
        let value = r#"{"schema":{"type":"struct","fields":[
            {"type":"struct","optional":true,"field":"before","fields":[]},
            {"type":"struct","optional":true,"field":"after","fields":[
              {"type":"int32","optional":false,"field":"id"},
              {"type":"int32","optional":true,"name":"io.debezium.time.Date","field":"born"},
              {"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","field":"seen"},
              {"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","field":"at"},
              {"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"8"},"field":"fee"}
            ]}]},
            "payload":{"before":null,"after":{"id":1,"born":19000,"seen":1700000000123456,"at":"2026-11-21T10:00:00Z","fee":"BOI="},"source":{"lsn":1},"op":"r"}}"#;
        let row = flat(&mut state, r#"{"id":1}"#, Some(value));
        assert_eq!(row["born"], "2022-01-08");
        assert_eq!(row["seen"], "2023-11-14T22:13:20.123456");
        assert_eq!(row["fee"], "12.50");
        let field = |name: &str| state.hinted(&Field::new(name, DataType::Utf8, true));
        assert_eq!(field("born").data_type(), &DataType::Date32);
        assert_eq!(field("fee").data_type(), &DataType::Decimal128(8, 2));
        assert_eq!(field("at").data_type(), &timestamp_type());
    }

    #[test]
    fn events_that_cannot_be_applied_say_why() {
        let mut state = DebeziumState::default();
        let keyless = state.flatten(None, Some(b"{}")).unwrap_err();
        assert!(keyless.contains("no key"), "{keyless}");
        let not_cdc = state
            .flatten(Some(br#"{"id":1}"#), Some(br#"{"id":1,"name":"x"}"#))
            .unwrap_err();
        assert!(not_cdc.contains("no `op`"), "{not_cdc}");
        let truncate = state
            .flatten(Some(br#"{"id":1}"#), Some(br#"{"op":"t","source":{}}"#))
            .unwrap_err();
        assert!(truncate.contains("truncate"), "{truncate}");
    }
}
