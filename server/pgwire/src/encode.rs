//! Arrow record batches to Postgres rows, streamed: a batch is encoded only when the client is
//! ready for it, and a cancel ends the stream with SQLSTATE 57014.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::physical_plan::SendableRecordBatchStream;
use fjord_engine::EngineError;
use futures::{Stream, StreamExt};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use crate::cancel::QueryToken;
use crate::connection::QueryGuard;

/// `batch` with new values for the columns `replace` gives one for (`Ok(Some(column))`, typed
/// as the new array is) and the rest as they are: how text and binary forms that arrow-pg
/// would write differently from Postgres are put in before encoding.
pub(crate) fn replace_columns<E>(
    batch: &RecordBatch,
    fields: &[FieldInfo],
    mut replace: impl FnMut(&ArrayRef, &FieldInfo) -> Result<Option<ArrayRef>, E>,
) -> Result<Result<RecordBatch, ArrowError>, E> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut schema_fields = Vec::with_capacity(batch.num_columns());
    for ((column, field), info) in batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .zip(fields)
    {
        match replace(column, info)? {
            Some(new) => {
                schema_fields.push(Arc::new(Field::new(
                    field.name(),
                    new.data_type().clone(),
                    true,
                )));
                columns.push(new);
            }
            None => {
                schema_fields.push(field.clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(schema_fields)),
        columns,
    ))
}

/// The pgwire error for an engine error: its SQLSTATE and message, severity ERROR.
pub(crate) fn engine_error(error: EngineError) -> PgWireError {
    if error.class() == fjord_engine::ErrorClass::Internal {
        tracing::warn!(sqlstate = %error.sqlstate, message = %error.message, "internal error sent to a client");
    }
    let mut info = ErrorInfo::new("ERROR".into(), error.sqlstate, error.message);
    info.detail = error.detail;
    PgWireError::UserError(Box::new(info))
}

pub(crate) fn canceled() -> PgWireError {
    engine_error(EngineError::new(
        fjord_engine::sqlstate::QUERY_CANCELED,
        "canceling statement due to user request",
    ))
}

/// The error for a query ended by its token, worded as PostgreSQL words it.
pub(crate) fn canceled_by(token: &QueryToken) -> PgWireError {
    if token.timed_out() {
        engine_error(EngineError::new(
            fjord_engine::sqlstate::QUERY_CANCELED,
            "canceling statement due to statement timeout",
        ))
    } else {
        canceled()
    }
}

/// Row descriptions for a result schema in the requested formats.
pub(crate) fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let fields = arrow_schema_to_pg_fields(schema, format, options)?;
    let fields = crate::text_carried::describe(schema, fields);
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| {
            let size = type_size(info.datatype());
            let info = info.with_type_size(size);
            match type_modifier(field.data_type()) {
                Some(modifier) => info.with_type_modifier(modifier),
                None => info,
            }
        })
        .collect())
}

/// The row description's type size, Postgres's `pg_type.typlen`: the byte width of a
/// fixed-width type, -1 for one of variable width.
fn type_size(pg_type: &Type) -> i16 {
    match *pg_type {
        Type::BOOL | Type::CHAR => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::OID | Type::FLOAT4 | Type::DATE => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ => 8,
        Type::TIMETZ => 12,
        Type::INTERVAL | Type::UUID => 16,
        Type::NAME => 64,
        _ => -1,
    }
}

/// The row description's type modifier, as Postgres packs it: `numeric(p, s)` is
/// `(p << 16 | s) + 4`, which clients read for a column's precision and scale (JDBC's
/// `getPrecision`, psql's `\gdesc`). Precision 38, the widest decimal, is how the engine
/// carries an unconstrained `numeric` (a `sum` of bigints, a Postgres `numeric` column
/// declared without precision): that has no modifier, as in Postgres.
fn type_modifier(data_type: &DataType) -> Option<i32> {
    match data_type {
        DataType::Decimal128(precision, scale) if *scale >= 0 && *precision < 38 => {
            Some(((i32::from(*precision) << 16) | i32::from(*scale as u8)) + 4)
        }
        _ => None,
    }
}

/// `batch` with the columns whose wire form fjord writes itself (rather than arrow-pg) in
/// that form: Postgres's text for timestamps, times and floats, and Postgres's binary forms of
/// uuid, jsonb and numeric.
pub(crate) fn wire_forms(batch: RecordBatch, fields: &[FieldInfo]) -> PgWireResult<RecordBatch> {
    let batch = crate::pg_text::render(batch, fields);
    let batch = crate::text_carried::binary_forms(batch, fields)?;
    let batch = crate::datetime_binary::binary_forms(batch, fields)?;
    crate::numeric_binary::binary_forms(batch, fields)
}

/// A query response whose rows are encoded batch by batch as the client reads them.
pub(crate) fn query_response(
    stream: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    tag: &str,
    cancel: QueryToken,
    guard: QueryGuard,
) -> QueryResponse {
    let rows = rows(stream, fields.clone(), cancel, guard);
    let mut response = QueryResponse::new(fields, rows);
    response.set_command_tag(tag);
    response
}

fn rows(
    stream: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    cancel: QueryToken,
    guard: QueryGuard,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    struct State {
        stream: SendableRecordBatchStream,
        fields: Arc<Vec<FieldInfo>>,
        cancel: QueryToken,
        current: Option<Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>>,
        done: bool,
        // Counts the query as running until the last row is sent or the stream is dropped.
        _guard: QueryGuard,
    }
    let state = State {
        stream,
        fields,
        cancel,
        current: None,
        done: false,
        _guard: guard,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            if let Some(rows) = state.current.as_mut() {
                if let Some(row) = rows.next() {
                    return Some((row, state));
                }
                state.current = None;
            }
            let next = tokio::select! {
                biased;
                _ = state.cancel.cancelled() => {
                    state.done = true;
                    return Some((Err(canceled_by(&state.cancel)), state));
                }
                next = state.stream.next() => next,
            };
            match next {
                None => return None,
                Some(Ok(batch)) => {
                    if batch.num_rows() > 0 {
                        let batch = match wire_forms(batch, &state.fields) {
                            Ok(batch) => batch,
                            Err(error) => {
                                state.done = true;
                                return Some((Err(error), state));
                            }
                        };
                        state.current =
                            Some(match crate::binary_rows::data_rows(&batch, &state.fields) {
                                Some(rows) => Box::new(rows.into_iter()),
                                None => Box::new(encode_recordbatch(state.fields.clone(), batch)),
                            });
                    }
                }
                Some(Err(error)) => {
                    state.done = true;
                    return Some((Err(engine_error(EngineError::from(error))), state));
                }
            }
        }
    })
}
