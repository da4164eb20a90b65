//! The current state of a change-log table, as a view.
//!
//! iceberg 0.10.1 commits appends only, so `fjord ingest` lands Debezium events in a change log
//! `<name>_changelog` (one row per change, in the row's columns plus `_cdc_*` and `_kafka_*`
//! columns) and cannot update rows in place. fjord serve shows `<name>` beside it: for every
//! primary key (the table property [`crate::CDC_KEY_PROPERTY`]), the latest change, unless that
//! change is a delete. "Latest" is the highest source LSN, then the highest Kafka offset
//! (tombstones carry no LSN and always follow their delete in the key's partition).
//! Text and binary columns skip Debezium's placeholder for unchanged out-of-line values.
//!
//! The view is planned on every statement from the change log's current snapshot, so it is as
//! fresh as the change log; its cost grows with the change log, not with the state.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::view::ViewTable;
use datafusion::common::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use crate::{CDC_KEY_PROPERTY, IcebergTable};

const OP: &str = "_cdc_op";
const LSN: &str = "_cdc_lsn";
const OFFSET: &str = "_kafka_offset";
const RANK: &str = "__fjord_change_rank";
/// What Debezium sends for a TOASTed value an update did not change.
const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// Columns of a change log that describe the change, not the row.
fn is_change_column(name: &str) -> bool {
    name.starts_with("_cdc_") || name.starts_with("_kafka_") || name == "_ingested_at"
}

/// The key columns a change-log table records, or `None` for any other table.
pub(crate) fn key_columns(table: &iceberg::table::Table) -> Result<Option<Vec<String>>> {
    let Some(keys) = table.metadata().properties().get(CDC_KEY_PROPERTY) else {
        return Ok(None);
    };
    let keys: Vec<String> = serde_json::from_str(keys).map_err(|error| {
        DataFusionError::Plan(format!(
            "table property {CDC_KEY_PROPERTY} of {} is not a JSON array of column names: {error}",
            table.identifier()
        ))
    })?;
    Ok(Some(keys))
}

/// The current-state view over `changelog`, whose key columns are `keys`.
///
/// Text and binary columns that Postgres stores out of line (TOAST) are not in the WAL when an
/// update leaves them unchanged, and Debezium sends the placeholder [`UNAVAILABLE`] instead.
/// For those columns the view takes the key's latest value that is not the placeholder (a real
/// NULL counts as a value: it is wrapped in a struct so that `IGNORE NULLS` skips only the
/// placeholder). A key whose every change has the placeholder (a primary-key change moved the
/// row while the value was out of line) shows the placeholder.
pub(crate) async fn view(changelog: IcebergTable, keys: Vec<String>) -> Result<ViewTable> {
    let schema = changelog.schema.clone();
    let name = changelog.ident.name().to_string();
    for column in keys.iter().map(String::as_str).chain([OP, LSN, OFFSET]) {
        if schema.field_with_name(column).is_err() {
            return Err(DataFusionError::Plan(format!(
                "change log {name} lacks column {column}, so its current state cannot be shown"
            )));
        }
    }
    let window = format!(
        "PARTITION BY {} ORDER BY {} DESC NULLS LAST, {} DESC NULLS LAST \
         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING",
        keys.iter()
            .map(|key| quote(key))
            .collect::<Vec<_>>()
            .join(", "),
        quote(LSN),
        quote(OFFSET)
    );
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    for field in schema.fields() {
        let column = field.name().as_str();
        if is_change_column(column) {
            continue;
        }
        let quoted = quote(column);
        outer.push(quoted.clone());
        let placeholder = match field.data_type() {
            _ if keys.iter().any(|key| key == column) => None,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Some(format!("'{UNAVAILABLE}'"))
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let hex: String = UNAVAILABLE.bytes().map(|b| format!("{b:02x}")).collect();
                Some(format!("X'{hex}'"))
            }
            _ => None,
        };
        inner.push(match placeholder {
            None => quoted,
            Some(placeholder) => {
                let latest = format!(
                    "first_value(CASE WHEN {quoted} = {placeholder} THEN NULL \
                     ELSE named_struct('v', {quoted}) END) IGNORE NULLS OVER ({window})"
                );
                // No change of the key has the value (its primary key was changed while the
                // value was out of line): the placeholder stays visible rather than a NULL.
                format!(
                    "CASE WHEN {latest} IS NULL THEN {quoted} ELSE get_field({latest}, 'v') END \
                     AS {quoted}"
                )
            }
        });
    }
    let sql = format!(
        "SELECT {} FROM (SELECT {}, {}, row_number() OVER ({window}) AS {RANK} FROM changelog) \
         WHERE {RANK} = 1 AND {} <> 'd'",
        outer.join(", "),
        inner.join(", "),
        quote(OP),
        quote(OP)
    );
    let context = SessionContext::new();
    context.register_table("changelog", Arc::new(changelog))?;
    let plan = context.sql(&sql).await?.into_optimized_plan()?;
    let definition = format!(
        "-- current state of {name}: per ({}), the latest change unless it is a delete",
        keys.join(", ")
    );
    Ok(ViewTable::new(plan, Some(definition)))
}

/// A SQL identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
