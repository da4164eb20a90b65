//! Dates and microsecond timestamps in binary format, written as Postgres's `date_send` and
//! `timestamp_send` write them: days (an `int4`) or microseconds (an `int8`) since 2000-01-01,
//! in UTC for `timestamptz`.
//!
//! arrow-pg goes through chrono for each value, and for a timestamp with a time zone parses
//! the zone's name again for every row; a binary COPY or a binary result of a large table
//! spent more time there than in reading the rows. Arrow's values are already days and
//! microseconds since 1970 (in UTC for a zoned timestamp), so each is one subtraction here
//! (saturating: values that far out are beyond Postgres's range in any case).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, TimeUnit, TimestampMicrosecondType};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};

/// Days from 1970-01-01 to 2000-01-01, Postgres's epoch.
const EPOCH_DAYS: i32 = 10_957;
/// The same in microseconds.
const EPOCH_MICROS: i64 = EPOCH_DAYS as i64 * 86_400_000_000;

/// `batch` with its binary-format date and microsecond timestamp columns in Postgres's binary
/// form (as bytes, which the encoder sends unchanged).
pub(crate) fn binary_forms(batch: RecordBatch, fields: &[FieldInfo]) -> PgWireResult<RecordBatch> {
    let converts = |info: &FieldInfo| {
        info.format() == FieldFormat::Binary
            && [Type::DATE, Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(info.datatype())
    };
    if !fields.iter().any(converts) {
        return Ok(batch);
    }
    crate::encode::replace_columns(&batch, fields, |column, info| {
        Ok::<_, PgWireError>(match column.data_type() {
            DataType::Date32 if converts(info) => {
                Some(binary_column(column.as_primitive::<Date32Type>(), |days| {
                    days.saturating_sub(EPOCH_DAYS).to_be_bytes()
                }))
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) if converts(info) => Some(binary_column(
                column.as_primitive::<TimestampMicrosecondType>(),
                |micros| micros.saturating_sub(EPOCH_MICROS).to_be_bytes(),
            )),
            _ => None,
        })
    })?
    .map_err(|error| PgWireError::ApiError(Box::new(error)))
}

fn binary_column<T, const N: usize>(
    values: &arrow::array::PrimitiveArray<T>,
    encode: impl Fn(T::Native) -> [u8; N],
) -> ArrayRef
where
    T: arrow::datatypes::ArrowPrimitiveType,
{
    let mut out = BinaryBuilder::with_capacity(values.len(), values.len() * N);
    for index in 0..values.len() {
        if values.is_null(index) {
            out.append_null();
        } else {
            out.append_value(encode(values.value(index)));
        }
    }
    Arc::new(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn dates_and_timestamps_count_from_2000_as_postgres_sends_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("kept", DataType::Date32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(vec![Some(EPOCH_DAYS + 1), Some(0), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(EPOCH_MICROS + 1), Some(-1), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(Date32Array::from(vec![Some(1), Some(2), Some(3)])),
            ],
        )
        .unwrap();
        let field = |name: &str, pg_type: Type, format: FieldFormat| {
            FieldInfo::new(name.into(), None, None, pg_type, format)
        };
        let fields = [
            field("d", Type::DATE, FieldFormat::Binary),
            field("t", Type::TIMESTAMPTZ, FieldFormat::Binary),
            field("kept", Type::DATE, FieldFormat::Text),
        ];
        let forms = binary_forms(batch, &fields).unwrap();
        let bytes = |column: usize, row: usize| {
            let column = forms.column(column).as_binary::<i32>();
            (!column.is_null(row)).then(|| column.value(row).to_vec())
        };
        assert_eq!(bytes(0, 0), Some(1i32.to_be_bytes().to_vec()));
        assert_eq!(bytes(0, 1), Some((-EPOCH_DAYS).to_be_bytes().to_vec()));
        assert_eq!(bytes(0, 2), None);
        assert_eq!(bytes(1, 0), Some(1i64.to_be_bytes().to_vec()));
        assert_eq!(
            bytes(1, 1),
            Some((-EPOCH_MICROS - 1).to_be_bytes().to_vec())
        );
        assert_eq!(bytes(1, 2), None);
        // A text-format column is left to the text encoder.
        assert_eq!(forms.column(2).data_type(), &DataType::Date32);
    }
}
