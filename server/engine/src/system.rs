//! The `system` catalog, as in Trino: `system.runtime.catalogs` (every catalog and its state),
//! `system.runtime.queries` (running and recent statements) and `system.runtime.nodes` (this
//! server). Each table is read afresh whenever a statement scans it.

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{
    CatalogProvider, SchemaProvider, Session as CatalogSession, TableProvider,
};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use fjord_catalog::CatalogRegistry;
use fjord_config::Config;

use crate::queries::QueryLog;

pub(crate) const SYSTEM_CATALOG: &str = "system";
const RUNTIME: &str = "runtime";

/// What one table shows, computed when it is scanned.
type Rows = Arc<dyn Fn() -> DfResult<RecordBatch> + Send + Sync>;

#[derive(Debug)]
pub(crate) struct SystemCatalog {
    runtime: Arc<RuntimeSchema>,
}

impl SystemCatalog {
    pub(crate) fn new(
        config: &Config,
        registry: Arc<CatalogRegistry>,
        queries: Arc<QueryLog>,
    ) -> SystemCatalog {
        let nodes = nodes_table(config);
        SystemCatalog {
            runtime: Arc::new(RuntimeSchema {
                tables: vec![
                    ("catalogs", catalogs_table(registry)),
                    ("nodes", nodes),
                    ("queries", queries_table(queries)),
                ],
            }),
        }
    }
}

impl CatalogProvider for SystemCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        vec![RUNTIME.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == RUNTIME).then(|| self.runtime.clone() as Arc<dyn SchemaProvider>)
    }
}

struct RuntimeSchema {
    tables: Vec<(&'static str, Arc<SystemTable>)>,
}

impl std::fmt::Debug for RuntimeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tables.iter().map(|(name, _)| name))
            .finish()
    }
}

#[async_trait]
impl SchemaProvider for RuntimeSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .tables
            .iter()
            .find(|(table, _)| *table == name)
            .map(|(_, table)| table.clone() as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|(table, _)| *table == name)
    }
}

struct SystemTable {
    schema: SchemaRef,
    rows: Rows,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemTable")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = (self.rows)()?;
        let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

fn table(fields: Vec<Field>, rows: Rows) -> Arc<SystemTable> {
    Arc::new(SystemTable {
        schema: Arc::new(Schema::new(fields)),
        rows,
    })
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

fn text<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn timestamps(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter(values).with_timezone("UTC"))
}

fn catalogs_table(registry: Arc<CatalogRegistry>) -> Arc<SystemTable> {
    let fields = vec![
        Field::new("catalog_name", DataType::Utf8, false),
        Field::new("connector_name", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("loaded_at", timestamp_type(), false),
    ];
    let schema = Arc::new(Schema::new(fields.clone()));
    table(
        fields,
        Arc::new(move || {
            let catalogs = registry.describe();
            let columns: Vec<ArrayRef> = vec![
                text(catalogs.iter().map(|c| Some(c.name.as_str()))),
                text(catalogs.iter().map(|c| Some(c.type_name))),
                text(catalogs.iter().map(|c| Some(c.state.as_str()))),
                text(catalogs.iter().map(|c| c.last_error.as_deref())),
                timestamps(catalogs.iter().map(|c| Some(millis(c.loaded_at)))),
            ];
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        }),
    )
}

fn queries_table(queries: Arc<QueryLog>) -> Arc<SystemTable> {
    let fields = vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("backend_pid", DataType::Int32, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("created", timestamp_type(), false),
        Field::new("end", timestamp_type(), true),
        Field::new("elapsed_ms", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("catalogs", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ];
    let schema = Arc::new(Schema::new(fields.clone()));
    table(
        fields,
        Arc::new(move || {
            let now = SystemTime::now();
            let records = queries.snapshot();
            let catalogs: Vec<String> = records.iter().map(|r| r.catalogs.join(",")).collect();
            let ids: Vec<String> = records.iter().map(|r| r.id()).collect();
            let columns: Vec<ArrayRef> = vec![
                text(ids.iter().map(|id| Some(id.as_str()))),
                text(records.iter().map(|r| Some(r.state.as_str()))),
                text(records.iter().map(|r| Some(r.user.as_ref()))),
                text(records.iter().map(|r| Some(r.source.as_ref()))),
                Arc::new(Int32Array::from_iter_values(
                    records.iter().map(|r| r.backend_pid),
                )),
                text(records.iter().map(|r| Some(r.query.as_ref()))),
                timestamps(records.iter().map(|r| Some(millis(r.created)))),
                timestamps(records.iter().map(|r| r.ended.map(millis))),
                Arc::new(Int64Array::from_iter_values(records.iter().map(|r| {
                    r.ended
                        .unwrap_or(now)
                        .duration_since(r.created)
                        .map(|elapsed| elapsed.as_millis() as i64)
                        .unwrap_or_default()
                }))),
                Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.rows as i64),
                )),
                text(catalogs.iter().map(|c| Some(c.as_str()))),
                text(records.iter().map(|r| r.error.as_deref())),
            ];
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        }),
    )
}

fn nodes_table(config: &Config) -> Arc<SystemTable> {
    let fields = vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("postgres_address", DataType::Utf8, false),
        Field::new("http_address", DataType::Utf8, true),
        Field::new("node_version", DataType::Utf8, false),
        Field::new("coordinator", DataType::Boolean, false),
        Field::new("state", DataType::Utf8, false),
    ];
    let schema = Arc::new(Schema::new(fields.clone()));
    let postgres = config.server.postgres_listen.clone();
    let http = Some(config.server.http_listen.clone()).filter(|address| !address.is_empty());
    let node = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "fjord".to_string());
    table(
        fields,
        Arc::new(move || {
            let columns: Vec<ArrayRef> = vec![
                text([Some(node.as_str())]),
                text([Some(postgres.as_str())]),
                text([http.as_deref()]),
                text([Some(env!("CARGO_PKG_VERSION"))]),
                Arc::new(BooleanArray::from(vec![true])),
                text([Some("active")]),
            ];
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        }),
    )
}
