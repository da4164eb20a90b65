//! uuid, json and jsonb columns of Postgres catalogs, which the engine carries as text.
//!
//! Clients are told the real type (so psycopg and asyncpg return `UUID` objects and decoded
//! JSON, and BI tools show the type), and binary-format results use Postgres's binary forms:
//! 16 bytes for a uuid, a version byte before the text of a jsonb. Text results and json's
//! binary form are the text itself.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use fjord_engine::{TextCarried, text_carried_type};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

/// `fields` with the real Postgres type of text-carried columns.
pub(crate) fn describe(schema: &Schema, fields: Vec<FieldInfo>) -> Vec<FieldInfo> {
    fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| match text_carried_type(field) {
            Some(carried) => FieldInfo::new(
                info.name().to_string(),
                info.table_id(),
                info.column_id(),
                pg_type(carried),
                info.format(),
            )
            .with_format_options(info.format_options().clone()),
            None => info,
        })
        .collect()
}

fn pg_type(carried: TextCarried) -> Type {
    match carried {
        TextCarried::Uuid => Type::UUID,
        TextCarried::Json => Type::JSON,
        TextCarried::Jsonb => Type::JSONB,
    }
}

/// `batch` with its binary-format uuid and jsonb columns in Postgres's binary form (as bytes,
/// which the encoder sends unchanged).
pub(crate) fn binary_forms(batch: RecordBatch, fields: &[FieldInfo]) -> PgWireResult<RecordBatch> {
    let converts = |info: &FieldInfo| {
        info.format() == FieldFormat::Binary
            && (*info.datatype() == Type::UUID || *info.datatype() == Type::JSONB)
    };
    if !fields.iter().any(converts) {
        return Ok(batch);
    }
    crate::encode::replace_columns(&batch, fields, |column, info| {
        if converts(info) && column.data_type() == &DataType::Utf8 {
            binary_column(column, info.datatype()).map(Some)
        } else {
            Ok(None)
        }
    })?
    .map_err(|error| PgWireError::ApiError(Box::new(error)))
}

fn binary_column(column: &ArrayRef, pg_type: &Type) -> PgWireResult<ArrayRef> {
    let text = column.as_string::<i32>();
    let mut out = BinaryBuilder::with_capacity(text.len(), text.value_data().len() + text.len());
    let mut value = Vec::new();
    for index in 0..text.len() {
        if text.is_null(index) {
            out.append_null();
            continue;
        }
        let item = text.value(index);
        if *pg_type == Type::UUID {
            let uuid = uuid::Uuid::parse_str(item).map_err(|_| {
                PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "22P02".into(),
                    format!("invalid input syntax for type uuid: \"{item}\""),
                )))
            })?;
            out.append_value(uuid.as_bytes());
        } else {
            value.clear();
            value.push(1u8);
            value.extend_from_slice(item.as_bytes());
            out.append_value(&value);
        }
    }
    Ok(Arc::new(out.finish()))
}
