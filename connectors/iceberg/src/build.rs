//! Building an Iceberg catalog client from its `config.toml` entry.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fjord_config::{IcebergCatalogConfig, IcebergCatalogKind};
use iceberg::io::{
    S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
    S3_SESSION_TOKEN,
};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::SqlCatalogBuilder;
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

/// Connects to (and for SQLite, creates) the catalog described by `config`. Relative paths are
/// resolved against `base_dir`. Local warehouses are created if missing.
pub async fn build_catalog(
    name: &str,
    config: &IcebergCatalogConfig,
    base_dir: &Path,
) -> iceberg::Result<Arc<dyn Catalog>> {
    let mut properties: HashMap<String, String> = config
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let warehouse = config.warehouse_location(base_dir);
    let warehouse = if warehouse.contains("://") {
        warehouse
    } else {
        std::fs::create_dir_all(&warehouse).map_err(|error| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("cannot create the warehouse directory {warehouse}: {error}"),
            )
        })?;
        format!("file://{warehouse}")
    };
    if let Some(s3) = &config.s3 {
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                properties.insert(key.to_string(), value);
            }
        };
        put(S3_ENDPOINT, s3.endpoint.clone());
        put(S3_REGION, s3.region.clone());
        put(
            S3_ACCESS_KEY_ID,
            s3.access_key_id.as_ref().map(|s| s.expose().to_string()),
        );
        put(
            S3_SECRET_ACCESS_KEY,
            s3.secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string()),
        );
        put(
            S3_SESSION_TOKEN,
            s3.session_token.as_ref().map(|s| s.expose().to_string()),
        );
        put(S3_PATH_STYLE_ACCESS, Some(s3.path_style.to_string()));
    }
    let storage = Arc::new(OpenDalResolvingStorageFactory::new());
    match config.catalog {
        IcebergCatalogKind::Sql => {
            let uri = config.sql_uri(base_dir);
            if let Some(path) = uri.strip_prefix("sqlite://") {
                let path = path.split('?').next().unwrap_or(path);
                if let Some(parent) = Path::new(path).parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
            }
            properties.insert("uri".into(), uri);
            properties.insert("warehouse".into(), warehouse);
            let catalog = SqlCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name, properties)
                .await?;
            Ok(Arc::new(catalog))
        }
        IcebergCatalogKind::Rest => {
            properties.insert("uri".into(), config.uri.clone().unwrap_or_default());
            properties.insert("warehouse".into(), warehouse);
            let catalog = RestCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(name, properties)
                .await?;
            Ok(Arc::new(catalog))
        }
    }
}
