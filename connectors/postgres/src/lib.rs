//! Live PostgreSQL databases as DataFusion catalogs.
//!
//! Schemas, tables and columns are discovered from the database's own catalog when a query
//! first names a table, and confirmed by every later scan in the round trip that reads its
//! rows (see `shape`), so tables created or altered after fjord started are seen at once.
//! Rows are read with `COPY (SELECT ...) TO STDOUT (FORMAT binary)` and decoded straight into
//! Arrow batches; projections, exactly-translatable filters and limits go into that `SELECT`.
//! Large plain tables are read in block ranges over several connections on one snapshot
//! (see `scan`).
//!
//! **Invariant:** this crate is the only one that writes SQL text for Postgres (see `sql`).

mod binary_copy;
mod error;
mod load;
mod pool;
mod pushdown;
mod scan;
mod shape;
pub mod sql;
mod types;
mod upsert;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{
    BinaryExpr, Expr, LogicalPlan, Operator, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;
use fjord_config::PostgresCatalogConfig;
use parking_lot::RwLock;

pub use binary_copy::{BinaryCopyDecoder, DecodeError};
pub use error::PostgresError;
pub use load::postgres_type_for;
pub use pushdown::{PostgresPushdown, PostgresQuery, PostgresQueryPlanner};
pub use scan::{PostgresScanExec, StatementParameters};
pub use types::{PG_TYPE_METADATA_KEY, PgColumn, PgKind};

use pool::Pool;
use shape::{ShapeCache, ShapeCheck, TABLE_SHAPE, TableShape};
use sql::{FilterTranslator, qualified_table, select_list};

/// Schemas that are never exposed: Postgres's own catalogs.
const SYSTEM_SCHEMA_FILTER: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// How long listings trust an "unavailable" verdict before asking the database again.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(10);

/// Whether the catalog could be reached the last time it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogState {
    /// Not contacted yet.
    Unknown,
    Available,
    /// The last attempt failed; the error text names the catalog and carries no secret.
    Unavailable(String),
}

#[derive(Debug, Default, Clone)]
struct Listing {
    /// schema name -> table names (tables, views, materialized views, foreign and partitioned
    /// tables; partitions are reached through their parent).
    schemas: BTreeMap<String, Vec<String>>,
}

/// One Postgres database as a DataFusion catalog.
pub struct PostgresCatalog {
    name: String,
    pool: Arc<Pool>,
    allowed_schemas: Option<Vec<String>>,
    batch_size: usize,
    listing: RwLock<Listing>,
    state: RwLock<(CatalogState, Option<Instant>)>,
    /// Table shapes already read, reused for planning and confirmed as rows are read.
    shapes: Arc<ShapeCache>,
}

impl fmt::Debug for PostgresCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresCatalog")
            .field("name", &self.name)
            .field("target", &self.pool.target())
            .finish()
    }
}

impl PostgresCatalog {
    /// Creates the catalog without connecting: an unreachable database is not a reason to
    /// refuse to start. Call [`Self::refresh`] to load the listing.
    pub fn new(name: &str, config: &PostgresCatalogConfig, batch_size: usize) -> Arc<Self> {
        let pool = Pool::new(
            name,
            config.display_target(),
            config.connection_string(),
            config.pool_size,
            Duration::from_secs(config.connect_timeout_seconds.max(1)),
        );
        Arc::new(PostgresCatalog {
            name: name.to_string(),
            pool,
            allowed_schemas: config.schemas.clone(),
            batch_size,
            listing: RwLock::new(Listing::default()),
            state: RwLock::new((CatalogState::Unknown, None)),
            shapes: Arc::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Forgets the table shapes read so far, so that the next statement reads them afresh
    /// (a statement whose planning failed may have failed on a shape that is out of date);
    /// says whether there were any.
    pub fn forget_shapes(&self) -> bool {
        self.shapes.clear()
    }

    /// Host, port and database, without secrets.
    pub fn target(&self) -> &str {
        self.pool.target()
    }

    pub fn state(&self) -> CatalogState {
        self.state.read().0.clone()
    }

    fn record<T>(&self, result: &Result<T, PostgresError>) {
        let state = match result {
            Ok(_) => CatalogState::Available,
            Err(PostgresError::Unavailable { .. }) => CatalogState::Unavailable(
                result
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            // The database answered: it is reachable even if the statement failed.
            Err(_) => CatalogState::Available,
        };
        let mut guard = self.state.write();
        if guard.0 != state {
            match &state {
                CatalogState::Available => {
                    tracing::info!(catalog = %self.name, target = %self.pool.target(), "postgres catalog available")
                }
                CatalogState::Unavailable(error) => {
                    tracing::warn!(catalog = %self.name, %error, "postgres catalog unavailable")
                }
                CatalogState::Unknown => {}
            }
        }
        *guard = (state, Some(Instant::now()));
    }

    /// Reloads the schema and table listing from the database.
    pub async fn refresh(&self) -> Result<(), PostgresError> {
        let result = self.load_listing().await;
        self.record(&result);
        let listing = result?;
        *self.listing.write() = listing;
        Ok(())
    }

    /// Like [`Self::refresh`], except that a catalog found unavailable within the last
    /// `UNAVAILABLE_RETRY` is not asked again: listings (SHOW TABLES, information_schema) should
    /// not wait for a connect timeout on every statement while a source is down. Queries that
    /// name one of its tables still try at once, so recovery is not delayed.
    pub async fn refresh_listing(&self) {
        // Catalog views describe tables from their shapes, and no scan confirms those: read
        // them afresh.
        self.shapes.clear();
        let recently_failed = matches!(
            &*self.state.read(),
            (CatalogState::Unavailable(_), Some(at)) if at.elapsed() < UNAVAILABLE_RETRY
        );
        if !recently_failed {
            let _ = self.refresh().await;
        }
    }

    async fn load_listing(&self) -> Result<Listing, PostgresError> {
        let client = self.pool.get().await?;
        let query = format!(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_namespace n \
             LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
               AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
             WHERE {SYSTEM_SCHEMA_FILTER} ORDER BY 1, 2"
        );
        let rows = client
            .client()
            .query(&query, &[])
            .await
            .map_err(|e| self.pool.error(e))?;
        let mut listing = Listing::default();
        for row in rows {
            let schema: String = row.get(0);
            if !self.schema_allowed(&schema) {
                continue;
            }
            let tables = listing.schemas.entry(schema).or_default();
            if let Some(table) = row.get::<_, Option<String>>(1) {
                tables.push(table);
            }
        }
        Ok(listing)
    }

    fn schema_allowed(&self, schema: &str) -> bool {
        self.allowed_schemas
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|s| s == schema))
    }

    /// One table as fjord will plan with it; `None` if it does not exist. A shape read for an
    /// earlier statement is reused without asking Postgres, and confirmed by the scan (see
    /// `shape`).
    async fn load_table(
        &self,
        schema: &str,
        table: &str,
    ) -> Result<Option<PostgresTable>, PostgresError> {
        let (shape, reused) = match self.shapes.get(schema, table) {
            Some(shape) => (shape, true),
            None => {
                let result = self.load_columns(schema, table).await;
                self.record(&result);
                let shape = result?.map(Arc::new);
                self.shapes.put(schema, table, shape.clone());
                let Some(shape) = shape else {
                    return Ok(None);
                };
                (shape, false)
            }
        };
        let shape_check = ShapeCheck {
            schema: schema.to_string(),
            table: table.to_string(),
            planned: shape.clone(),
            cache: self.shapes.clone(),
        };
        let check = reused.then(|| shape_check.clone());
        let TableShape {
            columns,
            unique,
            table_type,
            blocks,
            ..
        } = shape.as_ref();
        {
            let mut listing = self.listing.write();
            let tables = listing.schemas.entry(schema.to_string()).or_default();
            if !tables.iter().any(|t| t == table) {
                tables.push(table.to_string());
                tables.sort();
            }
        }
        let schema_ref = Arc::new(Schema::new(
            columns
                .iter()
                .map(PgColumn::arrow_field)
                .collect::<Vec<_>>(),
        ));
        Ok(Some(PostgresTable {
            catalog: self.name.clone(),
            pool: self.pool.clone(),
            schema_name: schema.to_string(),
            table_name: table.to_string(),
            columns: Arc::new(columns.clone()),
            unique: unique.clone(),
            schema: schema_ref,
            table_type: *table_type,
            blocks: *blocks,
            batch_size: self.batch_size,
            check,
            shape: shape_check,
        }))
    }

    async fn load_columns(
        &self,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableShape>, PostgresError> {
        let mut client = self.pool.get().await?;
        // One round trip, on a statement each connection prepares once.
        let statement = client
            .prepared(TABLE_SHAPE)
            .await
            .map_err(|e| self.pool.error(e))?;
        let rows = client
            .client()
            .query(&statement, &[&schema, &table])
            .await
            .map_err(|e| self.pool.error(e))?;
        Ok(TableShape::from_rows(&rows))
    }

    fn schema_provider(self: &Arc<Self>, name: &str) -> Arc<dyn SchemaProvider> {
        Arc::new(PostgresSchema {
            catalog: self.clone(),
            name: name.to_string(),
        })
    }
}

/// Wrapper handed to DataFusion: `CatalogProvider` needs `&self` methods on a type we own.
#[derive(Debug)]
pub struct PostgresCatalogProvider(pub Arc<PostgresCatalog>);

impl CatalogProvider for PostgresCatalogProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.0.listing.read().schemas.keys().cloned().collect()
    }

    /// Any schema name gets a provider: whether its tables exist is asked of the database when
    /// a query names one, so a schema created after the last listing still works.
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if !self.0.schema_allowed(name) {
            return None;
        }
        Some(self.0.schema_provider(name))
    }
}

#[derive(Debug)]
struct PostgresSchema {
    catalog: Arc<PostgresCatalog>,
    name: String,
}

#[async_trait]
impl SchemaProvider for PostgresSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.catalog
            .listing
            .read()
            .schemas
            .get(&self.name)
            .cloned()
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.catalog.load_table(&self.name, name).await?;
        Ok(table.map(|table| Arc::new(table) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|table| table == name)
    }
}

/// A Postgres table or view, with the columns it had when the query was planned.
#[derive(Debug)]
pub struct PostgresTable {
    catalog: String,
    pool: Arc<Pool>,
    schema_name: String,
    table_name: String,
    columns: Arc<Vec<PgColumn>>,
    /// Per column: whether it alone is a unique key.
    unique: Vec<bool>,
    schema: SchemaRef,
    table_type: TableType,
    /// Heap blocks when the table was loaded; 0 where block ranges cannot split it.
    blocks: u64,
    batch_size: usize,
    /// Set when the shape was reused from an earlier statement: the scan confirms it.
    check: Option<ShapeCheck>,
    /// The shape planned with, reused or read just then, to confirm it later.
    shape: ShapeCheck,
}

impl PostgresTable {
    pub fn columns(&self) -> &[PgColumn] {
        &self.columns
    }

    /// Postgres's estimate of the bytes `query` returns (rows times width), from its planner;
    /// `None` if it cannot be had (the read itself then reports any problem).
    async fn estimated_bytes(&self, query: &str) -> Option<u64> {
        let client = self.pool.get().await.ok()?;
        let messages = client
            .client()
            .simple_query(&format!("EXPLAIN (FORMAT JSON) {query}"))
            .await
            .ok()?;
        let text = messages.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })?;
        let plan: serde_json::Value = serde_json::from_str(&text).ok()?;
        let top = plan.get(0)?.get("Plan")?;
        let rows = top.get("Plan Rows")?.as_f64()?;
        let width = top.get("Plan Width")?.as_f64()?;
        Some((rows * width.max(1.0)) as u64)
    }
}

#[async_trait]
impl TableProvider for PostgresTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.table_type
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let translator = FilterTranslator {
            columns: &self.columns,
        };
        Ok(filters
            .iter()
            .map(|filter| match translator.translate(filter) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let selected: Vec<&PgColumn> = indices.iter().map(|&index| &self.columns[index]).collect();
        let query = format!(
            "SELECT {} FROM {}",
            select_list(&selected),
            qualified_table(&self.schema_name, &self.table_name)
        );
        let translator = FilterTranslator {
            columns: &self.columns,
        };
        let mut conditions = Vec::with_capacity(filters.len());
        for filter in filters {
            // Only filters reported Exact reach here; failing now would silently drop one.
            let condition = translator.translate(filter).ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "filter {filter} was accepted but cannot be translated"
                ))
            })?;
            conditions.push(condition);
        }
        // A LIMIT must be applied by one statement; otherwise a large table is read in block
        // ranges, one connection each.
        let mut ranges = match limit {
            Some(_) => 1,
            None => scan::range_count(
                self.blocks,
                state.config().target_partitions(),
                self.pool.size(),
            ),
        };
        let key_lookup = filters
            .iter()
            .any(|filter| is_key_lookup(filter, &self.columns, &self.unique));
        if key_lookup {
            // A key lookup reads one row: no estimate is worth a round trip.
            ranges = 1;
        }
        let parameters = conditions.iter().any(|sql| sql::has_parameters(sql));
        if parameters {
            // Postgres cannot estimate a statement whose values come with each execution;
            // statements with parameters are lookups far more often than large reads.
            ranges = 1;
        }
        if ranges > 1 && !conditions.is_empty() {
            // Filters may leave a few rows (a key lookup): ask Postgres how much it expects
            // to return before opening several connections and a snapshot for it.
            let mut filtered = query.clone();
            filtered.push_str(" WHERE ");
            filtered.push_str(&conditions.join(" AND "));
            if let Some(bytes) = self.estimated_bytes(&filtered).await {
                ranges = ranges.min(scan::range_count_for_bytes(bytes));
            }
        }
        // Split reads run on several connections: a reused shape is confirmed before them.
        // A single read confirms it in its own round trip.
        let checks: Vec<ShapeCheck> = self.check.iter().cloned().collect();
        let (checks, confirmed_now) = if ranges > 1 && !checks.is_empty() {
            let mut client = self.pool.get().await?;
            ShapeCheck::confirm_all(&checks, &self.pool, &mut client).await?;
            (Vec::new(), checks)
        } else {
            (checks, Vec::new())
        };
        let queries = scan::ctid_ranges(self.blocks, ranges)
            .into_iter()
            .map(|range| {
                let mut query = query.clone();
                let conditions: Vec<&str> = conditions
                    .iter()
                    .map(String::as_str)
                    .chain((!range.is_empty()).then_some(range.as_str()))
                    .collect();
                if !conditions.is_empty() {
                    query.push_str(" WHERE ");
                    query.push_str(&conditions.join(" AND "));
                }
                if let Some(limit) = limit {
                    query.push_str(&format!(" LIMIT {limit}"));
                }
                query
            })
            .collect();
        let schema = Arc::new(self.schema.project(&indices)?);
        let kinds = selected.iter().map(|column| column.kind.clone()).collect();
        let mut exec = PostgresScanExec::new(
            self.catalog.clone(),
            self.pool.clone(),
            queries,
            schema,
            kinds,
            selected.into_iter().cloned().collect(),
            self.batch_size,
            checks,
        )
        .with_confirmed_at_planning(&confirmed_now);
        if parameters {
            exec = exec.with_parameters(self.columns.clone());
        }
        let few_rows = key_lookup || limit.is_some_and(|limit| limit <= scan::FEW_ROWS);
        Ok(Arc::new(exec.with_few_rows(few_rows)))
    }
}

/// Whether `plan` reads a Postgres table planned with a shape reused from an earlier
/// statement. Its scans confirm the shape as they start, and fail with
/// [`PostgresError::Changed`] (before any of their rows) if it changed: the caller may then plan
/// the statement again and run it.
pub fn reads_reused_shapes(plan: &LogicalPlan) -> bool {
    !reused_shapes(plan).tables.is_empty()
}

/// The Postgres tables a plan names with shapes reused from earlier statements.
#[derive(Debug, Default)]
pub struct ReusedShapes {
    tables: Vec<(Arc<Pool>, ShapeCheck)>,
}

/// The tables `plan` (as planned from SQL, before optimization) names with reused shapes.
pub fn reused_shapes(plan: &LogicalPlan) -> ReusedShapes {
    shapes_of(plan, false)
}

/// Every Postgres table `plan` names, with the shape it was planned with, reused or read then:
/// for a plan made earlier and about to be used again.
pub fn planned_shapes(plan: &LogicalPlan) -> ReusedShapes {
    shapes_of(plan, true)
}

fn shapes_of(plan: &LogicalPlan, read_then_too: bool) -> ReusedShapes {
    let mut reused = ReusedShapes::default();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && let Some(table) = provider.as_any().downcast_ref::<PostgresTable>()
            && let Some(check) = table
                .check
                .as_ref()
                .or(read_then_too.then_some(&table.shape))
            && !reused.tables.iter().any(|(pool, known)| {
                pool.catalog() == table.catalog
                    && known.schema == check.schema
                    && known.table == check.table
            })
        {
            reused.tables.push((table.pool.clone(), check.clone()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    reused
}

impl ReusedShapes {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Confirms that every table still has the columns it was planned with (one round trip
    /// per catalog), unless Postgres confirmed them less than `age` ago (by a read's check or
    /// guard, or by reading them): [`PostgresError::Changed`] names one that changed, which is
    /// then read afresh by the next planning.
    pub async fn confirm_unless_within(&self, age: Duration) -> Result<(), PostgresError> {
        Self::confirm_tables(
            self.tables
                .iter()
                .filter(|(_, check)| !check.planned.confirmed_within(age))
                .collect(),
        )
        .await
    }

    /// Confirms the tables that no scan of `physical` confirms as it starts: those the
    /// optimizer found it need not read (`LIMIT 0`, a filter that cannot hold on the columns
    /// as planned). Their columns still decide the result's columns, or that it is empty.
    pub async fn confirm_unscanned(
        &self,
        physical: &Arc<dyn ExecutionPlan>,
    ) -> Result<(), PostgresError> {
        let mut scanned = Vec::new();
        let _ = physical.apply(|node| {
            if let Some(scan) = node.as_any().downcast_ref::<PostgresScanExec>() {
                scanned.extend(
                    scan.checked_tables()
                        .map(|(schema, table)| (scan.catalog().to_string(), schema, table)),
                );
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let unscanned = self
            .tables
            .iter()
            .filter(|(pool, check)| {
                !scanned.iter().any(|(catalog, schema, table)| {
                    catalog == pool.catalog() && *schema == check.schema && *table == check.table
                })
            })
            .collect();
        Self::confirm_tables(unscanned).await
    }

    async fn confirm_tables(tables: Vec<&(Arc<Pool>, ShapeCheck)>) -> Result<(), PostgresError> {
        let mut rest = tables;
        while let Some((pool, _)) = rest.first() {
            let pool = pool.clone();
            let (same, others): (Vec<_>, Vec<_>) = rest
                .into_iter()
                .partition(|(other, _)| other.catalog() == pool.catalog());
            let checks: Vec<ShapeCheck> =
                same.into_iter().map(|(_, check)| check.clone()).collect();
            let mut client = pool.get().await?;
            ShapeCheck::confirm_all(&checks, &pool, &mut client).await?;
            rest = others;
        }
        Ok(())
    }
}

/// Whether `filter` keeps at most one row of a table with `columns`, where `unique` says which
/// are unique keys alone: an equality between such a column and a value (`id = 42`, also with
/// the column cast, as a parameter of another integer type makes it). A lossy cast could let a
/// few rows match; that only changes how the read is split, never what it returns.
fn is_key_lookup(filter: &Expr, columns: &[PgColumn], unique: &[bool]) -> bool {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = filter
    else {
        return false;
    };
    let key = |side: &Expr| {
        let mut side = side;
        while let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) = side {
            side = expr;
        }
        match side {
            Expr::Column(column) => columns
                .iter()
                .position(|c| c.name == column.name)
                .is_some_and(|index| unique.get(index).copied().unwrap_or(false)),
            _ => false,
        }
    };
    let value = |side: &Expr| match side {
        Expr::Literal(value, _) => !value.is_null(),
        Expr::Placeholder(_) => true,
        _ => false,
    };
    (key(left) && value(right)) || (value(left) && key(right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_schema_filter_escapes_underscores() {
        // `_` is a LIKE wildcard: pg_toast must be matched literally.
        assert!(SYSTEM_SCHEMA_FILTER.contains("pg\\_toast%"));
    }

    #[test]
    fn key_lookups_are_equalities_on_a_unique_column() {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::{cast, col, lit};
        let column = |name: &str| PgColumn {
            name: name.into(),
            type_name: "integer".into(),
            kind: PgKind::Int4,
            nullable: false,
        };
        let columns = [column("id"), column("amount")];
        let unique = [true, false];
        let lookup = |filter: Expr| is_key_lookup(&filter, &columns, &unique);
        assert!(lookup(col("id").eq(lit(42))));
        assert!(lookup(lit(42).eq(col("id"))));
        assert!(lookup(cast(col("id"), DataType::Int64).eq(lit(42i64))));
        assert!(!lookup(col("amount").eq(lit(42))), "not a key");
        assert!(!lookup(col("id").gt(lit(42))), "a range");
        assert!(!lookup(col("id").eq(col("amount"))), "no value");
        let null = Expr::Literal(datafusion::common::ScalarValue::Int32(None), None);
        assert!(!lookup(col("id").eq(null)), "NULL");
    }
}
