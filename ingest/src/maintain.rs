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

use std::collections::{BTreeMap, BTreeSet};

use fjord_iceberg::rewrite::{
    Rewrite, RewriteOutcome, SqlCatalogCommits, commit_rewrite, data_manifest_count,
    files_removed_by,
};
use iceberg::scan::FileScanTask;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};

use crate::offsets::{OFFSETS_PROPERTY, ancestry};
use crate::table::LakeTable;

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
    /// Data files deleted because compaction had replaced them and no snapshot left reads them.
    pub files_deleted: usize,
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
            files_deleted: 0,
        });
    }
    let transaction = Transaction::new(&table);
    let action = transaction
        .expire_snapshots()
        .expire_older_than_ms(policy.older_than_ms)
        .retain_last(retain);
    let transaction = action.apply(transaction)?;
    let expired_table = transaction.commit(catalog.as_ref()).await?;
    let files_deleted = if off_main == 0 {
        delete_compacted_files(&table, &expired_table).await
    } else {
        0
    };
    Ok(ExpireReport {
        table: name,
        snapshots_before: before,
        snapshots_after: expired_table.metadata().snapshots().count(),
        kept_for_offsets,
        files_deleted,
    })
}

/// Deletes the data files that compaction took out of the table and that no snapshot left
/// after an expiry can read: those removed by a compaction snapshot (kept or expired) whose
/// parent this expiry removed. Every snapshot before that parent is gone too (expiry keeps a
/// tail of main's history, and the caller checked there is no other branch), and no later
/// snapshot brings a removed file back. A file that cannot be deleted is logged and left.
async fn delete_compacted_files(before: &Table, after: &Table) -> usize {
    let mut deleted = 0;
    for snapshot in before.metadata().snapshots() {
        let Some(parent) = snapshot.parent_snapshot_id() else {
            continue;
        };
        let expired_now = before.metadata().snapshot_by_id(parent).is_some()
            && after.metadata().snapshot_by_id(parent).is_none();
        if !expired_now {
            continue;
        }
        let files = match files_removed_by(before, snapshot).await {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(table = %after.identifier(), %error, "maintenance: cannot read which files a compaction replaced");
                continue;
            }
        };
        for path in files {
            match after.file_io().delete(&path).await {
                Ok(()) => deleted += 1,
                Err(error) => {
                    tracing::warn!(table = %after.identifier(), %path, %error, "maintenance: cannot delete a replaced data file")
                }
            }
        }
    }
    deleted
}

/// Which data files compaction merges.
#[derive(Debug, Clone, Copy)]
pub struct CompactPolicy {
    /// Files under this size are merged with the other small files of their partition.
    pub small_file_bytes: u64,
    /// At most this many bytes of small files are read per table and run; the rest wait for
    /// the next run.
    pub max_input_bytes: u64,
    /// Data manifests past this many are folded into one even when no file is merged.
    pub max_manifests: usize,
    /// Report what would happen without writing anything.
    pub dry_run: bool,
}

impl Default for CompactPolicy {
    fn default() -> Self {
        CompactPolicy {
            small_file_bytes: 32 << 20,
            max_input_bytes: 2 << 30,
            max_manifests: 16,
            dry_run: false,
        }
    }
}

/// What compacting one table did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub table: String,
    /// Live data files before.
    pub files_before: usize,
    /// Small files merged, and the files written in their place.
    pub files_merged: usize,
    pub files_written: usize,
    pub bytes_merged: u64,
    pub bytes_written: u64,
    /// Partitions whose small files were merged.
    pub partitions: usize,
    pub manifests_before: usize,
    pub manifests_after: usize,
    /// Small files left for a later run (beyond `max_input_bytes`, or merged by another
    /// writer first).
    pub files_left: usize,
}

/// Merges the small data files of each partition of `ident` into files of the table's target
/// size (`write.target-file-size-bytes`) and folds its data manifests, in one `replace`
/// snapshot. Rows are read and written as they are, in the table's current schema; the row
/// count written must equal the count read or nothing is committed. Files of older partition
/// specs are left as they are.
pub async fn compact_table(
    catalog: &Arc<dyn Catalog>,
    commits: &SqlCatalogCommits,
    ident: &TableIdent,
    policy: CompactPolicy,
) -> iceberg::Result<CompactReport> {
    use futures::{StreamExt, TryStreamExt};

    let table = catalog.load_table(ident).await?;
    let mut report = CompactReport {
        table: format!("{}.{}", ident.namespace().as_ref().join("."), ident.name()),
        ..CompactReport::default()
    };
    if table.metadata().current_snapshot().is_none() {
        return Ok(report);
    }
    report.manifests_before = data_manifest_count(&table).await?;
    report.manifests_after = report.manifests_before;
    let tasks: Vec<FileScanTask> = table
        .scan()
        .select_all()
        .build()?
        .plan_files()
        .await?
        .try_collect()
        .await?;
    report.files_before = tasks.len();
    let default_spec = table.metadata().default_partition_spec_id();
    let mut groups: BTreeMap<String, Vec<FileScanTask>> = BTreeMap::new();
    for task in tasks {
        let spec = task.partition_spec.as_ref().map(|spec| spec.spec_id());
        if task.file_size_in_bytes >= policy.small_file_bytes
            || spec.unwrap_or(default_spec) != default_spec
        {
            continue;
        }
        let key = format!("{:?}", task.partition);
        groups.entry(key).or_default().push(task);
    }
    let mut chosen: Vec<FileScanTask> = Vec::new();
    let mut input_bytes = 0u64;
    for group in groups.into_values().filter(|group| group.len() > 1) {
        let bytes: u64 = group.iter().map(|task| task.file_size_in_bytes).sum();
        if !chosen.is_empty() && input_bytes + bytes > policy.max_input_bytes {
            report.files_left += group.len();
            continue;
        }
        input_bytes += bytes;
        report.partitions += 1;
        chosen.extend(group);
    }
    report.files_merged = chosen.len();
    report.bytes_merged = input_bytes;
    let fold = report.manifests_before > policy.max_manifests;
    if policy.dry_run || (chosen.is_empty() && !fold) {
        return Ok(report);
    }

    let rows_read: u64 = chosen.iter().filter_map(|task| task.record_count).sum();
    let removed: BTreeSet<String> = chosen
        .iter()
        .map(|task| task.data_file_path.clone())
        .collect();
    let added = if chosen.is_empty() {
        Vec::new()
    } else {
        let lake = LakeTable::from_table(catalog.clone(), table.clone())?;
        let batches = table
            .reader_builder()
            .build()
            .read(Box::pin(futures::stream::iter(chosen.into_iter().map(Ok))))?
            .stream()
            .boxed();
        lake.write_stream(batches, "compacted").await?
    };
    let rows_written: u64 = added.iter().map(|file| file.record_count()).sum();
    let discard = |files: &[DataFile]| {
        let file_io = table.file_io().clone();
        let paths: Vec<String> = files
            .iter()
            .map(|file| file.file_path().to_string())
            .collect();
        async move {
            for path in paths {
                let _ = file_io.delete(&path).await;
            }
        }
    };
    if rows_written != rows_read {
        discard(&added).await;
        return Err(iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            format!(
                "{}: compaction read {rows_read} rows but wrote {rows_written}; nothing committed",
                report.table
            ),
        ));
    }
    report.files_written = added.len();
    report.bytes_written = added.iter().map(|file| file.file_size_in_bytes()).sum();
    let rewrite = Rewrite {
        removed,
        added: added.clone(),
    };
    match commit_rewrite(commits, catalog.as_ref(), ident, &rewrite).await {
        Ok(RewriteOutcome::Committed {
            manifests_before,
            manifests_after,
            ..
        }) => {
            report.manifests_before = manifests_before;
            report.manifests_after = manifests_after;
            Ok(report)
        }
        Ok(RewriteOutcome::FileGone(path)) => {
            discard(&added).await;
            tracing::info!(table = %report.table, %path, "compaction: another writer merged a file first; trying again next run");
            report.files_left += report.files_merged;
            report.files_merged = 0;
            report.files_written = 0;
            report.bytes_merged = 0;
            report.bytes_written = 0;
            report.partitions = 0;
            Ok(report)
        }
        Err(error) => {
            discard(&added).await;
            Err(error)
        }
    }
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

/// What maintaining one table did: compaction (when asked for) and then snapshot expiry.
#[derive(Debug, Clone)]
pub struct MaintainReport {
    pub compacted: Option<CompactReport>,
    pub expired: ExpireReport,
}

/// Maintains `tables` (`schema.table`; every table when empty) of the Iceberg catalog `catalog`
/// of `config` (`ingest.catalog` when `None`): merges small files when `compact` is given, then
/// expires snapshots. One result per table, in order.
pub async fn maintain_catalog(
    config: &fjord_config::Config,
    catalog: Option<&str>,
    tables: &[String],
    compact: Option<CompactPolicy>,
    expire: ExpirePolicy,
) -> anyhow::Result<Vec<(String, iceberg::Result<MaintainReport>)>> {
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
    let commits = match compact {
        Some(_) => match SqlCatalogCommits::connect(&name, iceberg, &config.base_dir).await? {
            Some(commits) => Some(commits),
            None => anyhow::bail!(
                "catalog `{name}` is a REST catalog: fjord compacts only tables of SQL catalogs \
                 (use the REST catalog's own maintenance, or --no-compact to expire snapshots only)"
            ),
        },
        None => None,
    };
    if idents.is_empty() {
        idents = all_tables(&catalog).await?;
    }
    let mut results = Vec::new();
    for ident in idents {
        let label = format!("{}.{}", ident.namespace().as_ref().join("."), ident.name());
        let result = async {
            let compacted = match (&commits, compact) {
                (Some(commits), Some(policy)) => {
                    Some(compact_table(&catalog, commits, &ident, policy).await?)
                }
                _ => None,
            };
            let expired = expire_snapshots(&catalog, &ident, expire).await?;
            Ok(MaintainReport { compacted, expired })
        }
        .await;
        results.push((label, result));
    }
    Ok(results)
}

/// The sidecar's own upkeep (`[ingest.maintenance]`): every interval, merges the small files of
/// `tables` (`(schema, table)`; missing ones are skipped) when `commits` is given, then expires
/// their snapshots, until `shutdown`.
pub async fn run_periodically(
    catalog: Arc<dyn Catalog>,
    commits: Option<SqlCatalogCommits>,
    tables: Vec<(String, String)>,
    config: fjord_config::MaintenanceConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let interval = config.interval();
    let compact = CompactPolicy {
        small_file_bytes: config.small_file_bytes(),
        max_input_bytes: config.compact_max_bytes(),
        ..CompactPolicy::default()
    };
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
            if let Some(commits) = &commits {
                let started = std::time::Instant::now();
                match compact_table(&catalog, commits, &ident, compact).await {
                    Ok(report)
                        if report.files_merged > 0
                            || report.manifests_after < report.manifests_before =>
                    {
                        tracing::info!(
                            table = %report.table,
                            files_merged = report.files_merged,
                            files_written = report.files_written,
                            bytes_merged = report.bytes_merged,
                            bytes_written = report.bytes_written,
                            partitions = report.partitions,
                            manifests_before = report.manifests_before,
                            manifests_after = report.manifests_after,
                            files_left = report.files_left,
                            seconds = started.elapsed().as_secs_f64(),
                            "maintenance: small files merged"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%schema, %table, %error, "maintenance: compaction failed")
                    }
                }
            }
            match expire_snapshots(&catalog, &ident, policy).await {
                Ok(report) if report.snapshots_after < report.snapshots_before => {
                    tracing::info!(
                        table = %report.table,
                        before = report.snapshots_before,
                        after = report.snapshots_after,
                        kept_for_offsets = report.kept_for_offsets,
                        files_deleted = report.files_deleted,
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
