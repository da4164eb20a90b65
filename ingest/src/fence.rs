//! A catalog view that refuses to let a commit be rebased.
//!
//! iceberg 0.10.1's `Transaction::commit` reloads the table and, when another writer committed
//! in the meantime, re-applies its actions on top of the new state and commits anyway. For an
//! append of Kafka data that is exactly how duplicates happen: the offsets the writer checked are
//! no longer the table's. [`FencedCatalog`] hands the transaction the table only while its main
//! branch is still at the snapshot the writer validated its offsets against; otherwise it fails
//! the commit (not retryably), and the writer validates again from the new state. The
//! `RefSnapshotIdMatch` requirement of the append, checked by the catalog with a compare-and-swap
//! on the metadata location, closes the window between that load and the update.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent,
};

#[derive(Debug)]
pub struct FencedCatalog {
    inner: Arc<dyn Catalog>,
    /// The current snapshot the writer validated against (`None`: the table had none).
    expected_snapshot: Option<i64>,
    moved: AtomicBool,
}

impl FencedCatalog {
    pub fn new(inner: Arc<dyn Catalog>, expected_snapshot: Option<i64>) -> Self {
        FencedCatalog {
            inner,
            expected_snapshot,
            moved: AtomicBool::new(false),
        }
    }

    /// Whether the commit failed because another writer moved the table on.
    pub fn table_moved(&self) -> bool {
        self.moved.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Catalog for FencedCatalog {
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        let loaded = self.inner.load_table(table).await?;
        let current = loaded
            .metadata()
            .current_snapshot()
            .map(|snapshot| snapshot.snapshot_id());
        if current != self.expected_snapshot {
            self.moved.store(true, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("{table} was committed to by another writer; validating again"),
            )
            .with_retryable(false));
        }
        Ok(loaded)
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }

    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
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
        self.inner.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
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
}
