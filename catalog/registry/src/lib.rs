//! The catalog registry: builds one DataFusion catalog per `[catalogs.<name>]` entry of the
//! configuration and hands the same set to every session.
//!
//! Catalog types map to builders in one place ([`CatalogRegistry::build_catalog`]). A catalog
//! whose source cannot be reached at start is still registered: it reports itself unavailable
//! on use (SQLSTATE 08xxx naming it) and recovers by itself when the source comes back.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use datafusion::catalog::{CatalogProvider, CatalogProviderList};
use fjord_config::{CatalogConfig, Config};
use parking_lot::RwLock;

pub use fjord_iceberg::{IcebergCatalog, IcebergScanExec};
pub use fjord_postgres::{CatalogState, PostgresCatalog, PostgresError};
pub use iceberg::spec::Transform as IcebergTransform;
pub use iceberg::{Error as IcebergError, ErrorKind as IcebergErrorKind};

/// Key of the Arrow field metadata that keeps a Postgres column's own type name.
pub fn fjord_postgres_type_key() -> &'static str {
    fjord_postgres::PG_TYPE_METADATA_KEY
}

/// A catalog fjord built from configuration, by type.
#[derive(Debug, Clone)]
pub enum CatalogHandle {
    Iceberg(Arc<IcebergCatalog>),
    Postgres(Arc<PostgresCatalog>),
    /// Registered by DataFusion itself (not from configuration).
    Other(Arc<dyn CatalogProvider>),
}

impl CatalogHandle {
    pub fn type_name(&self) -> &'static str {
        match self {
            CatalogHandle::Iceberg(_) => "iceberg",
            CatalogHandle::Postgres(_) => "postgres",
            CatalogHandle::Other(_) => "memory",
        }
    }

    fn provider(&self) -> Arc<dyn CatalogProvider> {
        match self {
            CatalogHandle::Iceberg(catalog) => {
                Arc::new(fjord_iceberg::IcebergCatalogProvider(catalog.clone()))
            }
            CatalogHandle::Postgres(catalog) => {
                Arc::new(fjord_postgres::PostgresCatalogProvider(catalog.clone()))
            }
            CatalogHandle::Other(provider) => provider.clone(),
        }
    }
}

/// Errors building or using a catalog, each naming the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog `{catalog}`: {source}")]
    Iceberg {
        catalog: String,
        source: Box<iceberg::Error>,
    },
    #[error("catalog \"{0}\" does not exist")]
    UnknownCatalog(String),
    #[error("catalog `{catalog}` is a {actual} catalog; {operation} needs an iceberg catalog")]
    WrongType {
        catalog: String,
        actual: &'static str,
        operation: &'static str,
    },
}

impl CatalogError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CatalogError::Iceberg { source, .. } => match source.kind() {
                iceberg::ErrorKind::TableNotFound => "42P01",
                iceberg::ErrorKind::NamespaceNotFound => "3F000",
                iceberg::ErrorKind::TableAlreadyExists => "42P07",
                iceberg::ErrorKind::NamespaceAlreadyExists => "42P06",
                iceberg::ErrorKind::FeatureUnsupported => "0A000",
                _ => "58000",
            },
            CatalogError::UnknownCatalog(_) => "3D000",
            CatalogError::WrongType { .. } => "0A000",
        }
    }
}

/// What a catalog is and how it is doing, for `SHOW CATALOGS`, system tables and logs.
#[derive(Debug, Clone)]
pub struct CatalogInfo {
    pub name: String,
    pub type_name: &'static str,
    /// "available", "unavailable" or "unknown" (not contacted yet).
    pub state: String,
    pub last_error: Option<String>,
    /// When this catalog (in its current settings) was built.
    pub loaded_at: SystemTime,
}

/// One registered catalog: the catalog, the settings it was built from (none for catalogs
/// registered by DataFusion itself) and when.
#[derive(Debug, Clone)]
struct Entry {
    handle: CatalogHandle,
    config: Option<CatalogConfig>,
    loaded_at: SystemTime,
}

/// What [`CatalogRegistry::apply`] changed, by catalog name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatalogChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl CatalogChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl std::fmt::Display for CatalogChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("no catalog changed");
        }
        let mut parts = Vec::new();
        for (label, names) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{label} {}", names.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// Every configured catalog, shared by all sessions. Statements look catalogs up here when
/// they are planned, so a catalog replaced or removed by [`CatalogRegistry::apply`] is gone for
/// new statements while running ones keep the one they planned with.
#[derive(Debug, Default)]
pub struct CatalogRegistry {
    catalogs: RwLock<BTreeMap<String, Entry>>,
    /// Counts changes to the set of catalogs, so that plans kept across statements can tell
    /// that a catalog they read may have been replaced.
    generation: AtomicU64,
}

impl CatalogRegistry {
    /// Builds every catalog of `config`. Only a broken Iceberg catalog (an unusable warehouse
    /// or catalog database) stops start-up; unreachable Postgres databases do not.
    pub async fn from_config(config: &Config) -> Result<Arc<Self>, CatalogError> {
        let registry = Arc::new(CatalogRegistry::default());
        registry.apply(config).await?;
        registry.refresh_all().await;
        Ok(registry)
    }

    /// Makes the registered catalogs those of `config`: catalogs with new or different
    /// settings are built, then all changes take effect at once; catalogs whose settings did
    /// not change are kept as they are (with their connections and caches). When a catalog
    /// cannot be built (an unusable Iceberg warehouse), nothing changes. An unreachable
    /// Postgres database is not an error: its catalog is registered and reports itself
    /// unavailable until the database answers.
    pub async fn apply(&self, config: &Config) -> Result<CatalogChanges, CatalogError> {
        let current: BTreeMap<String, Option<CatalogConfig>> = self
            .catalogs
            .read()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.config.clone()))
            .collect();
        let mut changes = CatalogChanges::default();
        let mut built = Vec::new();
        for (name, catalog_config) in &config.catalogs {
            match current.get(name) {
                Some(Some(old)) if old == catalog_config => continue,
                Some(_) => changes.changed.push(name.clone()),
                None => changes.added.push(name.clone()),
            }
            let handle = Self::build_catalog(name, catalog_config, config).await?;
            built.push((name.clone(), handle, catalog_config.clone()));
        }
        let now = SystemTime::now();
        let mut catalogs = self.catalogs.write();
        catalogs.retain(|name, entry| {
            let keep = entry.config.is_none() || config.catalogs.contains_key(name);
            if !keep {
                changes.removed.push(name.clone());
            }
            keep
        });
        if !changes.is_empty() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        for (name, handle, catalog_config) in built {
            catalogs.insert(
                name,
                Entry {
                    handle,
                    config: Some(catalog_config),
                    loaded_at: now,
                },
            );
        }
        Ok(changes)
    }

    /// The one place that maps a catalog type to its builder.
    pub async fn build_catalog(
        name: &str,
        catalog_config: &CatalogConfig,
        config: &Config,
    ) -> Result<CatalogHandle, CatalogError> {
        Ok(match catalog_config {
            CatalogConfig::Iceberg(iceberg_config) => {
                let client = fjord_iceberg::build_catalog(name, iceberg_config, &config.base_dir)
                    .await
                    .map_err(|source| CatalogError::Iceberg {
                        catalog: name.to_string(),
                        source: Box::new(source),
                    })?;
                // Without it every statement loads each table's metadata afresh: slower, not
                // wrong, so a database this cannot open does not stop the catalog.
                let locations = match fjord_iceberg::rewrite::SqlCatalogCommits::connect(
                    name,
                    iceberg_config,
                    &config.base_dir,
                )
                .await
                {
                    Ok(locations) => locations,
                    Err(error) => {
                        tracing::warn!(catalog = name, %error, "reading table locations directly failed; tables load in full for every statement");
                        None
                    }
                };
                CatalogHandle::Iceberg(match locations {
                    Some(locations) => IcebergCatalog::with_locations(name, client, locations),
                    None => IcebergCatalog::new(name, client),
                })
            }
            CatalogConfig::Postgres(postgres_config) => CatalogHandle::Postgres(
                PostgresCatalog::new(name, postgres_config, config.server.batch_size),
            ),
        })
    }

    /// Changes whenever a catalog may have been added, replaced or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn get(&self, name: &str) -> Option<CatalogHandle> {
        self.catalogs
            .read()
            .get(name)
            .map(|entry| entry.handle.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.catalogs.read().keys().cloned().collect()
    }

    /// The Iceberg catalog called `name`, or an error saying why there is none.
    pub fn iceberg(
        &self,
        name: &str,
        operation: &'static str,
    ) -> Result<Arc<IcebergCatalog>, CatalogError> {
        match self.get(name) {
            Some(CatalogHandle::Iceberg(catalog)) => Ok(catalog),
            Some(other) => Err(CatalogError::WrongType {
                catalog: name.to_string(),
                actual: other.type_name(),
                operation,
            }),
            None => Err(CatalogError::UnknownCatalog(name.to_string())),
        }
    }

    /// Reloads every catalog's schema and table listing (used before metadata statements, so
    /// that `SHOW TABLES` and `information_schema` see tables created by other writers).
    /// Failures are recorded in the catalog's state and logged, never raised.
    pub async fn refresh_all(&self) {
        let handles: Vec<(String, CatalogHandle)> = self
            .catalogs
            .read()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.handle.clone()))
            .collect();
        let refreshes = handles.into_iter().map(|(name, handle)| async move {
            match handle {
                CatalogHandle::Iceberg(catalog) => {
                    if let Err(error) = catalog.refresh().await {
                        tracing::warn!(catalog = %name, %error, "listing the iceberg catalog failed");
                    }
                }
                // The catalog logs its own state changes.
                CatalogHandle::Postgres(catalog) => catalog.refresh_listing().await,
                CatalogHandle::Other(_) => {}
            }
        });
        futures::future::join_all(refreshes).await;
    }

    fn postgres_catalogs(&self) -> Vec<Arc<PostgresCatalog>> {
        self.catalogs
            .read()
            .values()
            .filter_map(|entry| match &entry.handle {
                CatalogHandle::Postgres(catalog) => Some(catalog.clone()),
                _ => None,
            })
            .collect()
    }

    /// Makes every Postgres catalog read table shapes afresh; says whether any were kept.
    pub fn forget_table_shapes(&self) -> bool {
        let mut forgot = false;
        for catalog in self.postgres_catalogs() {
            forgot |= catalog.forget_shapes();
        }
        forgot
    }

    pub fn describe(&self) -> Vec<CatalogInfo> {
        self.catalogs
            .read()
            .iter()
            .map(|(name, entry)| {
                let handle = &entry.handle;
                let (state, last_error) = match handle {
                    CatalogHandle::Postgres(catalog) => match catalog.state() {
                        CatalogState::Available => ("available".to_string(), None),
                        CatalogState::Unavailable(error) => {
                            ("unavailable".to_string(), Some(error))
                        }
                        CatalogState::Unknown => ("unknown".to_string(), None),
                    },
                    _ => ("available".to_string(), None),
                };
                CatalogInfo {
                    name: name.clone(),
                    type_name: handle.type_name(),
                    state,
                    last_error,
                    loaded_at: entry.loaded_at,
                }
            })
            .collect()
    }
}

impl CatalogProviderList for CatalogRegistry {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        let entry = Entry {
            handle: CatalogHandle::Other(catalog),
            config: None,
            loaded_at: SystemTime::now(),
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.catalogs
            .write()
            .insert(name, entry)
            .map(|previous| previous.handle.provider())
    }

    fn catalog_names(&self) -> Vec<String> {
        self.names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.get(name).map(|handle| handle.provider())
    }
}
