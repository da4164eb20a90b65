//! `fjord maintain`: table upkeep that iceberg 0.10.1 can commit safely.
//!
//! Every commit of the sidecar adds a snapshot, so a busy table gathers thousands of them. Old
//! snapshots are expired here, with one rule the sidecar's exactly-once depends on: a table's
//! Kafka offsets are read by walking back from the current snapshot to the newest one that
//! records them (`fjord.kafka.offsets`, or `fjord.kafka.offsets.<pipeline>` in a dead-letter
//! table), so that snapshot and every snapshot between it and the current one are always kept.
//!
//! Expiring rewrites metadata only. The data files stay: with append-only commits the current
//! snapshot still references every data file an expired snapshot had. Merging small files into
//! large ones needs a replace commit, which iceberg 0.10.1 cannot make; see docs/ingest.md.

use std::sync::Arc;

use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};

use crate::offsets::{OFFSETS_PROPERTY, ancestry};

/// Which snapshots may go.
#[derive(Debug, Clone, Copy)]
pub struct ExpirePolicy {
    /// Snapshots older than this (milliseconds since the epoch) may be expired.
    pub older_than_ms: i64,
    /// The newest snapshots always kept, at least 1.
    pub retain_last: usize,
    /// Report what would happen without committing.
    pub dry_run: bool,
}

impl ExpirePolicy {
    /// Snapshots older than `age` (from now) may go.
    pub fn older_than(age: std::time::Duration, retain_last: usize, dry_run: bool) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or_default();
        ExpirePolicy {
            older_than_ms: now_ms - age.as_millis() as i64,
            retain_last,
            dry_run,
        }
    }
}

/// What expiring one table did (or would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireReport {
    pub table: String,
    pub snapshots_before: usize,
    pub snapshots_after: usize,
    /// Newest snapshots kept so that the Kafka offsets stay readable.
    pub kept_for_offsets: usize,
}

/// How many snapshots, counted from the current one back along its ancestry, must stay so that
/// every Kafka offset property recorded in the table is still found by the sidecar's walk.
pub fn snapshots_needed_for_offsets(table: &Table) -> usize {
    let mut needed = 0;
    let mut seen: Vec<&String> = Vec::new();
    let path = ancestry(table);
    for (depth, snapshot) in path.iter().enumerate() {
        for key in snapshot.summary().additional_properties.keys() {
            if key.starts_with(OFFSETS_PROPERTY) && !seen.contains(&key) {
                seen.push(key);
                needed = depth + 1;
            }
        }
    }
    needed
}

/// Expires the snapshots of `ident` that `policy` allows, keeping what the offsets need.
pub async fn expire_snapshots(
    catalog: &Arc<dyn Catalog>,
    ident: &TableIdent,
    policy: ExpirePolicy,
) -> iceberg::Result<ExpireReport> {
    let table = catalog.load_table(ident).await?;
    let before = table.metadata().snapshots().count();
    let kept_for_offsets = snapshots_needed_for_offsets(&table);
    let retain = policy.retain_last.max(kept_for_offsets).max(1);
    let name = format!("{}.{}", ident.namespace().as_ref().join("."), ident.name());
    // Which snapshots go: older than the cutoff and not among the `retain` newest of main's
    // ancestry (iceberg's own selection, computed here as well to report a dry run).
    let path = ancestry(&table);
    let survivors = path
        .iter()
        .enumerate()
        .filter(|(depth, snapshot)| {
            *depth < retain || snapshot.timestamp_ms() >= policy.older_than_ms
        })
        .count();
    let off_main = before - path.len();
    if policy.dry_run || survivors + off_main == before {
        return Ok(ExpireReport {
            table: name,
            snapshots_before: before,
            snapshots_after: survivors + off_main,
            kept_for_offsets,
        });
    }
    let transaction = Transaction::new(&table);
    let action = transaction
        .expire_snapshots()
        .expire_older_than_ms(policy.older_than_ms)
        .retain_last(retain);
    let transaction = action.apply(transaction)?;
    let table = transaction.commit(catalog.as_ref()).await?;
    Ok(ExpireReport {
        table: name,
        snapshots_before: before,
        snapshots_after: table.metadata().snapshots().count(),
        kept_for_offsets,
    })
}

/// Every table of every namespace of `catalog`, for maintaining them all.
pub async fn all_tables(catalog: &Arc<dyn Catalog>) -> iceberg::Result<Vec<TableIdent>> {
    let mut tables = Vec::new();
    for namespace in catalog.list_namespaces(None).await? {
        tables.extend(catalog.list_tables(&namespace).await?);
    }
    tables.sort_by(|a, b| {
        (a.namespace().as_ref(), a.name()).cmp(&(b.namespace().as_ref(), b.name()))
    });
    Ok(tables)
}

/// Expires snapshots in `tables` (`schema.table`; every table when empty) of the Iceberg catalog
/// `catalog` of `config` (`ingest.catalog` when `None`). One result per table, in order.
pub async fn expire_in_catalog(
    config: &fjord_config::Config,
    catalog: Option<&str>,
    tables: &[String],
    policy: ExpirePolicy,
) -> anyhow::Result<Vec<(String, iceberg::Result<ExpireReport>)>> {
    let name = match (catalog, &config.ingest) {
        (Some(name), _) => name.to_string(),
        (None, Some(ingest)) => ingest.catalog.clone(),
        (None, None) => {
            anyhow::bail!("no catalog given and the configuration has no [ingest] section")
        }
    };
    let Some(fjord_config::CatalogConfig::Iceberg(iceberg)) = config.catalogs.get(&name) else {
        anyhow::bail!("`{name}` is not an Iceberg catalog of the configuration");
    };
    let mut idents = Vec::new();
    for table in tables {
        let Some((schema, table_name)) = table.split_once('.') else {
            anyhow::bail!("table `{table}` is not of the form schema.table");
        };
        idents.push(TableIdent::new(
            iceberg::NamespaceIdent::new(schema.to_string()),
            table_name.to_string(),
        ));
    }
    let catalog = fjord_iceberg::build_catalog(&name, iceberg, &config.base_dir).await?;
    if idents.is_empty() {
        idents = all_tables(&catalog).await?;
    }
    let mut results = Vec::new();
    for ident in idents {
        let label = format!("{}.{}", ident.namespace().as_ref().join("."), ident.name());
        results.push((label, expire_snapshots(&catalog, &ident, policy).await));
    }
    Ok(results)
}

/// The sidecar's own upkeep (`[ingest.maintenance]`): every interval, expires the snapshots of
/// `tables` (`(schema, table)`; missing ones are skipped) until `shutdown`.
pub async fn run_periodically(
    catalog: Arc<dyn Catalog>,
    tables: Vec<(String, String)>,
    config: fjord_config::MaintenanceConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let interval = config.interval();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let policy =
            ExpirePolicy::older_than(config.expire_older_than(), config.retain_last, false);
        let mut idents = Vec::new();
        for (schema, table) in &tables {
            match tables_named(&catalog, schema, table).await {
                Ok(found) => idents.extend(found),
                Err(error) => {
                    tracing::warn!(%schema, %table, %error, "maintenance: cannot look the table up")
                }
            }
        }
        for ident in idents {
            if shutdown.is_cancelled() {
                return;
            }
            let (schema, table) = (ident.namespace().to_url_string(), ident.name().to_string());
            match expire_snapshots(&catalog, &ident, policy).await {
                Ok(report) if report.snapshots_after < report.snapshots_before => {
                    tracing::info!(
                        table = %report.table,
                        before = report.snapshots_before,
                        after = report.snapshots_after,
                        kept_for_offsets = report.kept_for_offsets,
                        "maintenance: snapshots expired"
                    );
                }
                Ok(_) => {}
                // A commit racing the pipeline's is retried at the next interval.
                Err(error) => {
                    tracing::warn!(%schema, %table, %error, "maintenance: snapshot expiry failed")
                }
            }
        }
    }
}

/// The existing tables of `schema` that `table` names: the table itself, or for a routed
/// pipeline's template (`{kind}_events`) every table the template matches.
async fn tables_named(
    catalog: &Arc<dyn Catalog>,
    schema: &str,
    table: &str,
) -> iceberg::Result<Vec<TableIdent>> {
    let namespace = iceberg::NamespaceIdent::new(schema.to_string());
    let Ok(Some(template)) = fjord_config::TableTemplate::parse(table) else {
        let ident = TableIdent::new(namespace, table.to_string());
        return Ok(if catalog.table_exists(&ident).await? {
            vec![ident]
        } else {
            Vec::new()
        });
    };
    match catalog.list_tables(&namespace).await {
        Ok(idents) => Ok(idents
            .into_iter()
            .filter(|ident| template.matches(ident.name()))
            .collect()),
        Err(error) if error.kind() == iceberg::ErrorKind::NamespaceNotFound => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}
