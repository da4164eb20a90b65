//! Apache Iceberg catalogs as DataFusion catalogs, always current and scanned on every core.
//!
//! iceberg-datafusion 0.10.1 lists namespaces and tables once, caches each table's schema, and
//! scans through a single partition. This crate wraps the Iceberg catalog itself instead:
//! every statement loads the table's current metadata (so tables and columns added by another
//! writer are seen at once), scans are planned file by file and spread over the session's target
//! partitions, and writes go through iceberg-datafusion's own append path.
//!
//! Metadata files, manifest lists and manifests never change once written, so for a SQL catalog
//! a statement asks the catalog database only where the table's metadata is now, and reuses the
//! table it loaded before (with the manifests it read, cached in it) while that is unchanged.

mod build;
mod current_state;
mod key_bitmap;
mod read;
pub mod rewrite;
mod scan;
mod single_table;
mod statistics;
mod write_input;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use iceberg::spec::{Schema, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use parking_lot::RwLock;

pub use build::build_catalog;
pub use scan::IcebergScanExec;

/// Table property of a change-log table that `fjord ingest` writes from Debezium events: the
/// primary-key columns, as a JSON array. fjord serve shows such a table `<name>_changelog` also
/// as `<name>`, the current state per key.
pub const CDC_KEY_PROPERTY: &str = "fjord.cdc.key";

/// Converts an Iceberg error for DataFusion, keeping it downcastable for classification.
pub fn to_datafusion_error(error: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

/// One Iceberg catalog (SQL or REST) as fjord sees it.
pub struct IcebergCatalog {
    name: String,
    catalog: Arc<dyn Catalog>,
    /// namespace -> tables, as of the last [`IcebergCatalog::refresh`]; only used to answer
    /// DataFusion's synchronous listing calls.
    listing: RwLock<BTreeMap<String, Vec<String>>>,
    /// For a SQL catalog: reads a table's current metadata location in one query.
    locations: Option<rewrite::SqlCatalogCommits>,
    /// Tables loaded before, each as of the metadata location it was loaded from.
    loaded: parking_lot::Mutex<HashMap<TableIdent, Table>>,
}

/// Tables kept loaded per catalog; past it the cache starts again.
const LOADED_TABLES: usize = 256;

impl fmt::Debug for IcebergCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IcebergCatalog")
            .field("name", &self.name)
            .finish()
    }
}

impl IcebergCatalog {
    pub fn new(name: &str, catalog: Arc<dyn Catalog>) -> Arc<Self> {
        Arc::new(IcebergCatalog {
            name: name.to_string(),
            catalog,
            listing: RwLock::new(BTreeMap::new()),
            locations: None,
            loaded: parking_lot::Mutex::default(),
        })
    }

    /// Like [`IcebergCatalog::new`], for a SQL catalog whose database `locations` reads: tables
    /// are then loaded again only when their metadata moved.
    pub fn with_locations(
        name: &str,
        catalog: Arc<dyn Catalog>,
        locations: rewrite::SqlCatalogCommits,
    ) -> Arc<Self> {
        Arc::new(IcebergCatalog {
            name: name.to_string(),
            catalog,
            listing: RwLock::new(BTreeMap::new()),
            locations: Some(locations),
            loaded: parking_lot::Mutex::default(),
        })
    }

    /// `ident` as its metadata is now: the table loaded before if its metadata has not moved
    /// since. `None` if the catalog has no such table.
    async fn current_table(&self, ident: &TableIdent) -> iceberg::Result<Option<Table>> {
        let Some(locations) = &self.locations else {
            return match self.catalog.load_table(ident).await {
                Ok(table) => Ok(Some(table)),
                Err(error) if is_not_found(&error) => Ok(None),
                Err(error) => Err(error),
            };
        };
        let Some(location) = locations.metadata_location(ident).await? else {
            return Ok(None);
        };
        if let Some(table) = self.loaded.lock().get(ident)
            && table.metadata_location() == Some(location.as_str())
        {
            return Ok(Some(table.clone()));
        }
        let table = match self.catalog.load_table(ident).await {
            Ok(table) => table,
            Err(error) if is_not_found(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut loaded = self.loaded.lock();
        if loaded.len() >= LOADED_TABLES {
            loaded.clear();
        }
        loaded.insert(ident.clone(), table.clone());
        Ok(Some(table))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying Iceberg catalog, for writers such as the demo builder.
    pub fn inner(&self) -> Arc<dyn Catalog> {
        self.catalog.clone()
    }

    /// Reloads the namespace and table listing.
    pub async fn refresh(&self) -> iceberg::Result<()> {
        let mut listing = BTreeMap::new();
        for namespace in self.catalog.list_namespaces(None).await? {
            let tables = self.catalog.list_tables(&namespace).await?;
            let mut names: Vec<String> = tables
                .iter()
                .map(|table| table.name().to_string())
                .collect();
            // Change logs written from Debezium events are also shown as their current state.
            for table in &tables {
                let Some(base) = table.name().strip_suffix(fjord_config::CHANGELOG_SUFFIX) else {
                    continue;
                };
                if base.is_empty() || names.iter().any(|name| name == base) {
                    continue;
                }
                let loaded = self.catalog.load_table(table).await?;
                if matches!(current_state::key_columns(&loaded), Ok(Some(_))) {
                    names.push(base.to_string());
                }
            }
            names.sort();
            listing.insert(namespace_name(&namespace), names);
        }
        *self.listing.write() = listing;
        Ok(())
    }

    /// `CREATE SCHEMA`: creates the namespace. `if_not_exists` makes an existing one fine.
    pub async fn create_schema(&self, schema: &str, if_not_exists: bool) -> iceberg::Result<()> {
        let namespace = NamespaceIdent::new(schema.to_string());
        if self.catalog.namespace_exists(&namespace).await? {
            if if_not_exists {
                return Ok(());
            }
            return Err(iceberg::Error::new(
                ErrorKind::NamespaceAlreadyExists,
                format!("schema \"{}.{schema}\" already exists", self.name),
            ));
        }
        self.catalog
            .create_namespace(&namespace, HashMap::new())
            .await?;
        self.listing.write().entry(schema.to_string()).or_default();
        Ok(())
    }

    /// Creates a table from an Arrow schema (field ids assigned here), partitioned by the given
    /// transforms of named columns (none for an unpartitioned table).
    pub async fn create_table(
        &self,
        schema: &str,
        table: &str,
        arrow_schema: &ArrowSchema,
        partition: &[(&str, Transform)],
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Table> {
        let iceberg_schema: Schema =
            iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(arrow_schema)?;
        let partition_spec = if partition.is_empty() {
            None
        } else {
            let mut builder = UnboundPartitionSpec::builder();
            for (column, transform) in partition {
                let field = iceberg_schema.field_by_name(column).ok_or_else(|| {
                    iceberg::Error::new(
                        ErrorKind::DataInvalid,
                        format!("partition column `{column}` is not a column of the table"),
                    )
                })?;
                let name = match transform {
                    Transform::Identity => column.to_string(),
                    other => format!("{column}_{}", other.to_string().to_lowercase()),
                };
                builder = builder.add_partition_field(field.id, name, *transform)?;
            }
            Some(builder.build())
        };
        let namespace = NamespaceIdent::new(schema.to_string());
        if !self.catalog.namespace_exists(&namespace).await? {
            return Err(iceberg::Error::new(
                ErrorKind::NamespaceNotFound,
                format!("schema \"{}.{schema}\" does not exist", self.name),
            ));
        }
        let creation = TableCreation::builder()
            .name(table.to_string())
            .schema(iceberg_schema)
            .properties(properties)
            .partition_spec_opt(partition_spec)
            .build();
        let created = self.catalog.create_table(&namespace, creation).await?;
        let mut listing = self.listing.write();
        let tables = listing.entry(schema.to_string()).or_default();
        tables.push(table.to_string());
        tables.sort();
        Ok(created)
    }

    /// Whether a table exists right now (asks the catalog).
    pub async fn table_exists(&self, schema: &str, table: &str) -> iceberg::Result<bool> {
        let ident = TableIdent::new(NamespaceIdent::new(schema.to_string()), table.to_string());
        self.catalog.table_exists(&ident).await
    }

    /// Whether a table exists and has committed data (a current snapshot).
    pub async fn table_has_data(&self, schema: &str, table: &str) -> iceberg::Result<bool> {
        let ident = TableIdent::new(NamespaceIdent::new(schema.to_string()), table.to_string());
        if !self.catalog.table_exists(&ident).await? {
            return Ok(false);
        }
        Ok(self
            .catalog
            .load_table(&ident)
            .await?
            .metadata()
            .current_snapshot()
            .is_some())
    }

    /// Drops a table from the catalog (its files stay, as Iceberg's drop without purge does).
    pub async fn drop_table(&self, schema: &str, table: &str) -> iceberg::Result<()> {
        let ident = TableIdent::new(NamespaceIdent::new(schema.to_string()), table.to_string());
        self.catalog.drop_table(&ident).await?;
        if let Some(tables) = self.listing.write().get_mut(schema) {
            tables.retain(|name| name != table);
        }
        Ok(())
    }

    /// `<name>` as the current state of the change log `<name>_changelog`, if that is one.
    async fn load_current_state(
        self: &Arc<Self>,
        schema: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.ends_with(fjord_config::CHANGELOG_SUFFIX) {
            return Ok(None);
        }
        let changelog_name = format!("{name}{}", fjord_config::CHANGELOG_SUFFIX);
        let Some(changelog) = self.load_table(schema, &changelog_name).await? else {
            return Ok(None);
        };
        let Some(keys) = current_state::key_columns(&changelog.table)? else {
            return Ok(None);
        };
        let view = current_state::view(changelog, keys).await?;
        let mut listing = self.listing.write();
        let tables = listing.entry(schema.to_string()).or_default();
        if !tables.iter().any(|table| table == name) {
            tables.push(name.to_string());
            tables.sort();
        }
        Ok(Some(Arc::new(view)))
    }

    async fn load_table(
        self: &Arc<Self>,
        schema: &str,
        table: &str,
    ) -> Result<Option<IcebergTable>> {
        let ident = TableIdent::new(NamespaceIdent::new(schema.to_string()), table.to_string());
        let Some(loaded) = self
            .current_table(&ident)
            .await
            .map_err(to_datafusion_error)?
        else {
            return Ok(None);
        };
        let arrow_schema =
            iceberg::arrow::schema_to_arrow_schema(loaded.metadata().current_schema())
                .map_err(to_datafusion_error)?;
        {
            let mut listing = self.listing.write();
            let tables = listing.entry(schema.to_string()).or_default();
            if !tables.iter().any(|name| name == table) {
                tables.push(table.to_string());
                tables.sort();
            }
        }
        Ok(Some(IcebergTable {
            catalog: self.catalog.clone(),
            ident,
            table: loaded,
            schema: Arc::new(read::with_string_views(&arrow_schema)),
        }))
    }
}

fn is_not_found(error: &iceberg::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound
    )
}

/// Single-level namespaces are schemas; deeper ones are shown dotted.
fn namespace_name(namespace: &NamespaceIdent) -> String {
    namespace.as_ref().join(".")
}

/// The DataFusion face of an [`IcebergCatalog`].
#[derive(Debug)]
pub struct IcebergCatalogProvider(pub Arc<IcebergCatalog>);

impl CatalogProvider for IcebergCatalogProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.0.listing.read().keys().cloned().collect()
    }

    /// Every name gets a provider; whether a table exists is asked of the catalog when a query
    /// names it, so namespaces created by other writers work without a refresh.
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(Arc::new(IcebergSchema {
            catalog: self.0.clone(),
            name: name.to_string(),
        }))
    }
}

#[derive(Debug)]
struct IcebergSchema {
    catalog: Arc<IcebergCatalog>,
    name: String,
}

#[async_trait]
impl SchemaProvider for IcebergSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.catalog
            .listing
            .read()
            .get(&self.name)
            .cloned()
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.catalog.load_table(&self.name, name).await? {
            return Ok(Some(Arc::new(table)));
        }
        self.catalog.load_current_state(&self.name, name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|table| table == name)
    }
}

/// An Iceberg table as of the moment a statement was planned.
#[derive(Debug)]
pub struct IcebergTable {
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    table: Table,
    schema: SchemaRef,
}

impl IcebergTable {
    pub fn table(&self) -> &Table {
        &self.table
    }
}

#[async_trait]
impl TableProvider for IcebergTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune files and row groups; DataFusion still applies them to the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = state.config().target_partitions().max(1);
        let batch_size = state.config().batch_size();
        let exec = IcebergScanExec::plan(
            self.table.clone(),
            self.schema.clone(),
            projection,
            filters,
            limit,
            partitions,
            batch_size,
        )
        .await?;
        Ok(Arc::new(exec))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // iceberg-datafusion's writer projects partition values, writes Parquet in parallel
        // and commits one fast append; it is reached through a catalog view of just this
        // table, so that building it costs one metadata load and not a listing of everything.
        let provider =
            single_table::writable_provider(self.catalog.clone(), self.ident.clone()).await?;
        let input = Arc::new(write_input::WriteInputExec::new(input));
        provider.insert_into(state, input, insert_op).await
    }
}
