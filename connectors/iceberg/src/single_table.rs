//! A view of an Iceberg catalog that contains exactly one table.
//!
//! iceberg-datafusion builds its writable table provider only through its catalog provider,
//! which lists every namespace and loads every table. Handing it this view makes that cost one
//! table load, while commits still go to the real catalog.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, TableProvider};
use datafusion::common::{DataFusionError, Result as DataFusionResult};
use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};
use iceberg_datafusion::IcebergCatalogProvider;

use crate::to_datafusion_error;

#[derive(Debug)]
struct SingleTableCatalog {
    inner: Arc<dyn Catalog>,
    ident: TableIdent,
}

/// iceberg-datafusion's table provider for one table, with insert support.
pub(crate) async fn writable_provider(
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
) -> DataFusionResult<Arc<dyn TableProvider>> {
    let view = Arc::new(SingleTableCatalog {
        inner: catalog,
        ident: ident.clone(),
    });
    let provider = IcebergCatalogProvider::try_new(view)
        .await
        .map_err(to_datafusion_error)?;
    let schema_name = ident.namespace().as_ref().join(".");
    let schema = provider.schema(&schema_name).ok_or_else(|| {
        DataFusionError::Internal(format!("schema {schema_name} vanished while writing"))
    })?;
    schema.table(ident.name()).await?.ok_or_else(|| {
        DataFusionError::Internal(format!("table {} vanished while writing", ident.name()))
    })
}

#[async_trait]
impl Catalog for SingleTableCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        Ok(match parent {
            None => vec![self.ident.namespace().clone()],
            Some(_) => Vec::new(),
        })
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        Ok(if namespace == self.ident.namespace() {
            vec![self.ident.clone()]
        } else {
            Vec::new()
        })
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        self.inner.load_table(table).await
    }

    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
}
