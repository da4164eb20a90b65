//! Timestamps and times in text results, written as PostgreSQL writes them.
//!
//! pgwire's text encoding always prints six fractional digits (`10:00:00.500000`) and only the
//! hour of a zone offset (`+05` for `+05:30`). PostgreSQL (DateStyle ISO) prints only the
//! fractional digits needed (`10:00:00.5`, none for whole seconds) and the offset's minutes and
//! seconds when they are not zero. Clients compare and parse this text, so text-format
//! timestamp and time columns are rendered here (with the engine's renderer, which casts to text
//! inside statements use too) before the rows are encoded. Binary results and other DateStyles
//! are left to the encoder.
//!
//! Numerics wider than 28 digits are rendered here too, in any DateStyle: pgwire's encoder
//! goes through rust_decimal, which holds 28 digits, so a sum or product past that failed the
//! whole statement ("Number exceeds maximum value") where Postgres prints it.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use fjord_engine::pg_text::{is_rendered, render_column};
use pgwire::api::results::{FieldFormat, FieldInfo};

/// The most digits pgwire's numeric encoder holds.
const ENCODER_DIGITS: u8 = 28;

/// `batch` with its text-format timestamp, time and float columns rendered as PostgreSQL text,
/// and its text-format numerics too wide for the encoder.
pub(crate) fn render(batch: RecordBatch, fields: &[FieldInfo]) -> RecordBatch {
    let needs = batch
        .schema()
        .fields()
        .iter()
        .zip(fields)
        .any(|(field, info)| {
            (renders(info) && is_rendered(field.data_type()))
                || (is_text(info) && is_wide_numeric(field.data_type()))
        });
    if !needs {
        return batch;
    }
    let rendered = crate::encode::replace_columns(&batch, fields, |column, info| {
        Ok::<_, std::convert::Infallible>(if is_text(info) && is_wide_numeric(column.data_type()) {
            wide_numeric(column)
        } else if renders(info) {
            render_column(column, i32::from(info.format_options().extra_float_digits))
        } else {
            None
        })
    });
    match rendered {
        Ok(Ok(rendered)) => rendered,
        _ => batch,
    }
}

fn is_text(info: &FieldInfo) -> bool {
    info.format() == FieldFormat::Text
}

fn is_wide_numeric(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Decimal128(precision, scale) if *precision > ENCODER_DIGITS && *scale >= 0)
}

/// A numeric column as Postgres's text: the digits, and exactly `scale` of them after the
/// point (`1.50`, `0.00`, `-0.05`), which is how Arrow writes a decimal.
fn wide_numeric(column: &ArrayRef) -> Option<ArrayRef> {
    cast(column, &DataType::Utf8).ok()
}

fn renders(info: &FieldInfo) -> bool {
    is_text(info)
        && info
            .format_options()
            .date_style
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("ISO")
}
