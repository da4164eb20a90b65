//! `fjord demo`: builds the cat-cafe world of the scenario, so that a newcomer has real data to
//! query a minute after cloning.
//!
//! The lake gets four raw event tables in namespace `data_on_eks`, partitioned by day of
//! `event_time`, with the Kafka metadata columns the ingest sidecar writes; a reachable Postgres
//! catalog gets `public.cats` and `public.visitors`. Everything comes from one seeded generator:
//! the same seed builds the same world, and tables that already exist are left alone, so running
//! it twice changes nothing.

mod generate;
pub mod live;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use fjord_catalog::{CatalogHandle, IcebergTransform};
use fjord_config::DemoConfig;
use fjord_engine::{Engine, EngineError};

pub use generate::{DemoWorld, entity_ids, generate_world};

/// The namespace of the raw tables.
pub const NAMESPACE: &str = "data_on_eks";

/// What a demo build did, table by table.
#[derive(Debug, Default, Clone)]
pub struct DemoReport {
    /// (catalog.schema.table, rows written); tables that existed already are not listed.
    pub written: Vec<(String, usize)>,
    /// Tables that existed and were left as they were.
    pub kept: Vec<String>,
    /// Why the Postgres part was skipped, if it was.
    pub postgres_skipped: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("catalog `{0}` is not configured as an iceberg catalog")]
    NoIcebergCatalog(String),
    #[error("iceberg: {0}")]
    Iceberg(#[from] fjord_catalog::IcebergError),
}

/// Whether the lake already has every raw demo table.
pub async fn is_built(engine: &Arc<Engine>, options: &DemoConfig) -> Result<bool, DemoError> {
    let Some(CatalogHandle::Iceberg(iceberg)) = engine.registry().get(&options.iceberg_catalog)
    else {
        return Err(DemoError::NoIcebergCatalog(options.iceberg_catalog.clone()));
    };
    for table in generate::RAW_TABLES {
        if !iceberg.table_has_data(NAMESPACE, table).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Builds whatever part of the demo world is missing. `progress` receives one line per step.
pub async fn build(
    engine: &Arc<Engine>,
    options: &DemoConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DemoReport, DemoError> {
    let Some(CatalogHandle::Iceberg(iceberg)) = engine.registry().get(&options.iceberg_catalog)
    else {
        return Err(DemoError::NoIcebergCatalog(options.iceberg_catalog.clone()));
    };
    let mut report = DemoReport::default();
    progress(&format!(
        "generating the cat-cafe world: {} interactions over {} days, {} cats, {} visitors (seed {})",
        options.interactions, options.days, options.cats, options.visitors, options.seed
    ));
    let world = generate_world(options);
    iceberg.create_schema(NAMESPACE, true).await?;
    let session = engine.new_session();
    for (table, schema, batches) in world.raw_tables() {
        let full_name = format!("{}.{NAMESPACE}.{table}", options.iceberg_catalog);
        if iceberg.table_has_data(NAMESPACE, table).await? {
            progress(&format!("{full_name}: exists, kept as it is"));
            report.kept.push(full_name);
            continue;
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        progress(&format!(
            "{full_name}: writing {rows} rows, partitioned by day(event_time)"
        ));
        // A table left empty by an interrupted build is filled, not created again.
        if !iceberg.table_exists(NAMESPACE, table).await? {
            iceberg
                .create_table(
                    NAMESPACE,
                    table,
                    &schema,
                    &[("event_time", IcebergTransform::Day)],
                    Default::default(),
                )
                .await?;
        }
        let written = session
            .append_batches(
                &options.iceberg_catalog,
                NAMESPACE,
                table,
                schema.clone(),
                batches,
            )
            .await?;
        report.written.push((full_name, written));
    }
    match engine.registry().get(&options.postgres_catalog) {
        Some(CatalogHandle::Postgres(postgres)) => {
            for (table, key, schema, batches) in world.postgres_tables() {
                let full_name = format!("{}.public.{table}", options.postgres_catalog);
                match postgres.table_exists("public", table).await {
                    Ok(true) => {
                        progress(&format!("{full_name}: exists, kept as it is"));
                        report.kept.push(full_name);
                    }
                    Ok(false) => {
                        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                        progress(&format!("{full_name}: writing {rows} rows"));
                        let written = postgres
                            .create_table_from_batches(
                                "public",
                                table,
                                &schema,
                                Some(key),
                                &batches,
                            )
                            .await
                            .map_err(|error| {
                                EngineError::new(error.sqlstate(), error.to_string())
                            })?;
                        report.written.push((full_name, written as usize));
                    }
                    Err(error) => {
                        let reason = error.to_string();
                        progress(&format!("skipping the Postgres tables: {reason}"));
                        report.postgres_skipped = Some(reason);
                        break;
                    }
                }
            }
        }
        _ => {
            let reason = format!(
                "no postgres catalog named `{}` is configured",
                options.postgres_catalog
            );
            progress(&format!("skipping the Postgres tables: {reason}"));
            report.postgres_skipped = Some(reason);
        }
    }
    engine.registry().refresh_all().await;
    progress("demo world ready");
    Ok(report)
}

/// A (table, schema, batches) triple of generated rows.
pub type GeneratedTable = (&'static str, SchemaRef, Vec<RecordBatch>);
