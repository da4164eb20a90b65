//! Timestamps and times in text results, written as PostgreSQL writes them.
//!
//! pgwire's text encoding always prints six fractional digits (`10:00:00.500000`) and only the
//! hour of a zone offset (`+05` for `+05:30`). PostgreSQL (DateStyle ISO) prints only the
//! fractional digits needed (`10:00:00.5`, none for whole seconds) and the offset's minutes and
//! seconds when they are not zero. Clients compare and parse this text, so text-format
//! timestamp and time columns are rendered here before the rows are encoded. Binary results and
//! other DateStyles are left to the encoder.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Schema, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDateTime, Offset, TimeZone};
use pgwire::api::results::{FieldFormat, FieldInfo};

/// `batch` with its text-format timestamp and time columns rendered as PostgreSQL text.
pub(crate) fn render(batch: RecordBatch, fields: &[FieldInfo]) -> RecordBatch {
    let needs = batch
        .schema()
        .fields()
        .iter()
        .zip(fields)
        .any(|(field, info)| renders(info) && is_temporal(field.data_type()));
    if !needs {
        return batch;
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut schema_fields: Vec<Field> = Vec::with_capacity(batch.num_columns());
    for ((column, field), info) in batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .zip(fields)
    {
        let rendered = if renders(info) {
            render_column(column)
        } else {
            None
        };
        match rendered {
            Some(text) => {
                schema_fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(text);
            }
            None => {
                schema_fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).unwrap_or(batch)
}

fn renders(info: &FieldInfo) -> bool {
    info.format() == FieldFormat::Text
        && info
            .format_options()
            .date_style
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("ISO")
}

fn is_temporal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _) | DataType::Time32(_) | DataType::Time64(_)
    )
}

fn render_column(column: &ArrayRef) -> Option<ArrayRef> {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 26);
    match column.data_type() {
        DataType::Timestamp(_, zone) => {
            let zone = match zone {
                Some(zone) => Some(Tz::from_str(zone).ok()?),
                None => None,
            };
            let micros = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()?;
            let micros = micros.as_primitive::<TimestampMicrosecondType>();
            for value in micros.iter() {
                match value {
                    None => out.append_null(),
                    Some(value) => {
                        let utc = DateTime::from_timestamp_micros(value)?.naive_utc();
                        match &zone {
                            None => out.append_value(timestamp_text(&utc, None)),
                            Some(zone) => {
                                let offset = zone.offset_from_utc_datetime(&utc).fix();
                                let local = utc + offset;
                                out.append_value(timestamp_text(
                                    &local,
                                    Some(offset.local_minus_utc()),
                                ));
                            }
                        }
                    }
                }
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros = cast(column, &DataType::Time64(TimeUnit::Microsecond)).ok()?;
            for value in micros.as_primitive::<Time64MicrosecondType>().iter() {
                match value {
                    None => out.append_null(),
                    Some(value) => out.append_value(time_text(value)),
                }
            }
        }
        _ => return None,
    }
    Some(Arc::new(out.finish()))
}

/// `2026-11-21 10:00:00.5` (and `+01` or `+05:30` after it when `offset_seconds` is given).
fn timestamp_text(local: &NaiveDateTime, offset_seconds: Option<i32>) -> String {
    let mut text = local.format("%Y-%m-%d %H:%M:%S").to_string();
    push_fraction(&mut text, local.and_utc().timestamp_subsec_micros());
    if let Some(seconds) = offset_seconds {
        let sign = if seconds < 0 { '-' } else { '+' };
        let seconds = seconds.unsigned_abs();
        text.push_str(&format!("{sign}{:02}", seconds / 3600));
        let (minutes, rest) = (seconds / 60 % 60, seconds % 60);
        if minutes != 0 || rest != 0 {
            text.push_str(&format!(":{minutes:02}"));
        }
        if rest != 0 {
            text.push_str(&format!(":{rest:02}"));
        }
    }
    text
}

/// `10:00:00.25` from microseconds since midnight.
fn time_text(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    push_fraction(&mut text, micros.rem_euclid(1_000_000) as u32);
    text
}

/// `.5` for 500000 µs, nothing for 0.
fn push_fraction(text: &mut String, micros: u32) {
    if micros == 0 {
        return;
    }
    let digits = format!("{micros:06}");
    text.push('.');
    text.push_str(digits.trim_end_matches('0'));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn fractions_and_offsets_are_written_as_postgres_writes_them() {
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00"), None),
            "2026-01-01 10:00:00"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00.5"), Some(0)),
            "2026-01-01 10:00:00.5+00"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00.12348"), Some(3600)),
            "2026-01-01 10:00:00.12348+01"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00.000001"), Some(19800)),
            "2026-01-01 10:00:00.000001+05:30"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00"), Some(-12600)),
            "2026-01-01 10:00:00-03:30"
        );
        assert_eq!(time_text(36_000_250_000), "10:00:00.25");
        assert_eq!(time_text(0), "00:00:00");
    }
}
