//! Timestamps and times in text results, written as PostgreSQL writes them.
//!
//! pgwire's text encoding always prints six fractional digits (`10:00:00.500000`) and only the
//! hour of a zone offset (`+05` for `+05:30`). PostgreSQL (DateStyle ISO) prints only the
//! fractional digits needed (`10:00:00.5`, none for whole seconds) and the offset's minutes and
//! seconds when they are not zero. Clients compare and parse this text, so text-format
//! timestamp and time columns are rendered here (with the engine's renderer, which casts to text
//! inside statements use too) before the rows are encoded. Binary results and other DateStyles
//! are left to the encoder.

use arrow::array::RecordBatch;
use fjord_engine::pg_text::{is_rendered, render_column};
use pgwire::api::results::{FieldFormat, FieldInfo};

/// `batch` with its text-format timestamp, time and float columns rendered as PostgreSQL text.
pub(crate) fn render(batch: RecordBatch, fields: &[FieldInfo]) -> RecordBatch {
    let needs = batch
        .schema()
        .fields()
        .iter()
        .zip(fields)
        .any(|(field, info)| renders(info) && is_rendered(field.data_type()));
    if !needs {
        return batch;
    }
    let rendered = crate::encode::replace_columns(&batch, fields, |column, info| {
        Ok::<_, std::convert::Infallible>(if renders(info) {
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

fn renders(info: &FieldInfo) -> bool {
    info.format() == FieldFormat::Text
        && info
            .format_options()
            .date_style
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("ISO")
}
