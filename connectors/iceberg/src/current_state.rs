//! The current state of a change-log table, as a view.
//!
//! iceberg 0.10.1 commits appends only, so `fjord ingest` lands Debezium events in a change log
//! `<name>_changelog` (one row per change, in the row's columns plus `_cdc_*` and `_kafka_*`
//! columns) and cannot update rows in place. fjord serve shows `<name>` beside it: for every
//! primary key (the table property [`crate::CDC_KEY_PROPERTY`]), the latest change, unless that
//! change is a delete. "Latest" is the highest source LSN, then the highest Kafka offset
//! (tombstones carry no LSN and always follow their delete in the key's partition).
//!
//! The view is planned on every statement from the change log's current snapshot, so it is as
//! fresh as the change log; its cost grows with the change log, not with the state.

use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::provider_as_source;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, LogicalPlanBuilder};
use datafusion::prelude::{ident, lit};

use crate::{CDC_KEY_PROPERTY, IcebergTable};

const OP: &str = "_cdc_op";
const LSN: &str = "_cdc_lsn";
const OFFSET: &str = "_kafka_offset";
const RANK: &str = "__fjord_change_rank";

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
pub(crate) fn view(changelog: IcebergTable, keys: Vec<String>) -> Result<ViewTable> {
    let schema = changelog.schema.clone();
    let name = changelog.ident.name().to_string();
    for column in keys.iter().map(String::as_str).chain([OP, LSN, OFFSET]) {
        if schema.field_with_name(column).is_err() {
            return Err(DataFusionError::Plan(format!(
                "change log {name} lacks column {column}, so its current state cannot be shown"
            )));
        }
    }
    let rank = row_number()
        .partition_by(keys.iter().map(|key| ident(key.as_str())).collect())
        .order_by(vec![
            ident(LSN).sort(false, false),
            ident(OFFSET).sort(false, false),
        ])
        .build()?
        .alias(RANK);
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|field| field.name().as_str())
        .filter(|name| !is_change_column(name))
        .map(ident)
        .collect();
    let plan =
        LogicalPlanBuilder::scan(name.clone(), provider_as_source(Arc::new(changelog)), None)?
            .window(vec![rank])?
            .filter(ident(RANK).eq(lit(1u64)).and(ident(OP).not_eq(lit("d"))))?
            .project(columns)?
            .build()?;
    let definition = format!(
        "-- current state of {name}: per ({}), the latest change unless it is a delete",
        keys.join(", ")
    );
    Ok(ViewTable::new(plan, Some(definition)))
}
