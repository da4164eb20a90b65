//! Replacing data files in one snapshot: the commit behind compaction.
//!
//! iceberg 0.10.1 can only append (its `TableCommit` cannot be built outside the crate), so a
//! snapshot that removes files is built here from the crate's public parts: manifests, a
//! manifest list, a `replace` snapshot and the new table metadata. The commit itself is the SQL
//! catalog's: the table's row moves to the new metadata file only if it still names the
//! metadata file the snapshot was built on (a compare-and-swap, as the catalog's own
//! `update_table` does). REST catalogs get no such commit here; compaction refuses them.
//!
//! The snapshot also folds every data manifest into one per partition spec. A sidecar that
//! commits every two seconds adds a manifest per commit, and a query plans by reading them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;

use fjord_config::{IcebergCatalogConfig, IcebergCatalogKind};
use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary,
};
use iceberg::table::Table;
use iceberg::{Catalog, Error, ErrorKind, MetadataLocation, Result, TableIdent};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The snapshot summary property that marks a snapshot written by [`commit_rewrite`].
pub const REWRITE_PROPERTY: &str = "fjord.rewrite";

/// Commits of replacing snapshots to a SQL catalog (the embedded default).
#[derive(Debug, Clone)]
pub struct SqlCatalogCommits {
    pool: SqlitePool,
    catalog_name: String,
}

impl SqlCatalogCommits {
    /// Opens the SQL catalog database of `config`. `None` for a REST catalog, which this commit
    /// cannot reach.
    pub async fn connect(
        name: &str,
        config: &IcebergCatalogConfig,
        base_dir: &Path,
    ) -> Result<Option<Self>> {
        if config.catalog != IcebergCatalogKind::Sql {
            return Ok(None);
        }
        let uri = config.sql_uri(base_dir);
        let options = SqliteConnectOptions::from_str(&uri)
            .map_err(|error| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("catalog `{name}`: cannot read its uri: {error}"),
                )
            })?
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file: a ping before every statement would double each round trip.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|error| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("catalog `{name}`: cannot open its database: {error}"),
                )
            })?;
        Ok(Some(SqlCatalogCommits {
            pool,
            catalog_name: name.to_string(),
        }))
    }

    /// Where `ident`'s current metadata file is, as the catalog records it; `None` if the
    /// catalog has no such table.
    pub async fn metadata_location(&self, ident: &TableIdent) -> Result<Option<String>> {
        sqlx::query_scalar::<_, String>(
            "SELECT metadata_location FROM iceberg_tables
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
        )
        .bind(&self.catalog_name)
        .bind(ident.namespace().as_ref().join("."))
        .bind(ident.name())
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| {
            Error::new(
                ErrorKind::Unexpected,
                format!("{ident}: reading the catalog failed: {error}"),
            )
        })
    }

    /// Points `ident` at `new_location` if it still points at `expected`. False when another
    /// writer committed first.
    async fn swap_metadata(
        &self,
        ident: &TableIdent,
        expected: &str,
        new_location: &str,
    ) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE iceberg_tables
             SET metadata_location = ?, previous_metadata_location = ?
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)
               AND metadata_location = ?",
        )
        .bind(new_location)
        .bind(expected)
        .bind(&self.catalog_name)
        .bind(ident.namespace().as_ref().join("."))
        .bind(ident.name())
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            Error::new(
                ErrorKind::Unexpected,
                format!("{ident}: the catalog's update failed: {error}"),
            )
        })?;
        Ok(result.rows_affected() == 1)
    }
}

/// Data files to take out of a table and the files holding their rows from now on.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Paths of the data files that go. Each must be live in the current snapshot.
    pub removed: BTreeSet<String>,
    /// The files that come in, written for the table's default partition spec.
    pub added: Vec<DataFile>,
}

/// What [`commit_rewrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteOutcome {
    Committed {
        snapshot_id: i64,
        /// Data manifests of the snapshot replaced, and of the new one.
        manifests_before: usize,
        manifests_after: usize,
    },
    /// A file to remove is no longer live (another rewrite took it first): nothing committed.
    FileGone(String),
}

/// Commits `rewrite` to `ident` as one `replace` snapshot on main. Appends that land between
/// reading the table and the commit are kept: the snapshot is rebuilt on the newest state and
/// committed again. The caller deletes the added files if this fails or returns `FileGone`.
pub async fn commit_rewrite(
    commits: &SqlCatalogCommits,
    catalog: &dyn Catalog,
    ident: &TableIdent,
    rewrite: &Rewrite,
) -> Result<RewriteOutcome> {
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        let table = catalog.load_table(ident).await?;
        let expected = table.metadata_location_result()?.to_string();
        let staged = match stage(&table, rewrite).await? {
            Staged::Ready(staged) => staged,
            Staged::FileGone(path) => return Ok(RewriteOutcome::FileGone(path)),
        };
        // A new file: the current one stays as it is, for readers that are reading it, for the
        // metadata log, and for the table if another writer commits first.
        let location = MetadataLocation::from_str(&expected)?
            .with_next_version()
            .with_new_metadata(&staged.metadata);
        staged.metadata.write_to(table.file_io(), &location).await?;
        let location = location.to_string();
        if commits.swap_metadata(ident, &expected, &location).await? {
            return Ok(RewriteOutcome::Committed {
                snapshot_id: staged.snapshot_id,
                manifests_before: staged.manifests_before,
                manifests_after: staged.manifests_after,
            });
        }
        // Another writer committed first: what this attempt wrote is referenced by nothing.
        let file_io = table.file_io();
        for path in staged.written.iter().chain([&location]) {
            let _ = file_io.delete(path).await;
        }
    }
    Err(Error::new(
        ErrorKind::CatalogCommitConflicts,
        format!(
            "{ident}: other writers kept committing; the rewrite gave up after {ATTEMPTS} attempts"
        ),
    ))
}

enum Staged {
    Ready(Box<StagedSnapshot>),
    FileGone(String),
}

struct StagedSnapshot {
    metadata: iceberg::spec::TableMetadata,
    snapshot_id: i64,
    manifests_before: usize,
    manifests_after: usize,
    /// Manifests and the manifest list written for it.
    written: Vec<String>,
}

/// Running totals of live data files, for the snapshot summary.
#[derive(Default)]
struct Totals {
    files: u64,
    records: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, file: &DataFile) {
        self.files += 1;
        self.records += file.record_count();
        self.bytes += file.file_size_in_bytes();
    }
}

/// Builds (and writes the manifests of) the replacing snapshot on `table`'s current state.
async fn stage(table: &Table, rewrite: &Rewrite) -> Result<Staged> {
    let metadata = table.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::new(
            ErrorKind::FeatureUnsupported,
            format!(
                "{}: only format version 2 tables are rewritten (this one is {})",
                table.identifier(),
                metadata.format_version()
            ),
        ));
    }
    let Some(parent) = metadata.current_snapshot() else {
        return match rewrite.removed.first() {
            Some(path) => Ok(Staged::FileGone(path.clone())),
            None => Err(Error::new(
                ErrorKind::DataInvalid,
                "the table has no snapshot",
            )),
        };
    };
    let file_io = table.file_io();
    let list = manifest_list(table, parent).await?;
    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.next_sequence_number();
    let schema = metadata.current_schema().clone();
    let default_spec = metadata.default_partition_spec_id();

    let mut carried: Vec<ManifestFile> = Vec::new();
    let mut by_spec: BTreeMap<i32, Vec<ManifestFile>> = BTreeMap::new();
    for manifest in list.entries() {
        if manifest.content == ManifestContentType::Data {
            by_spec
                .entry(manifest.partition_spec_id)
                .or_default()
                .push(manifest.clone());
        } else {
            carried.push(manifest.clone());
        }
    }
    let manifests_before = by_spec.values().map(Vec::len).sum();
    by_spec.entry(default_spec).or_default();

    let mut found = BTreeSet::new();
    let mut before = Totals::default();
    let mut removed = Totals::default();
    let mut added = Totals::default();
    let mut written = Vec::new();
    let mut new_manifests = Vec::new();
    for (spec_id, manifests) in &by_spec {
        let spec = metadata.partition_spec_by_id(*spec_id).ok_or_else(|| {
            Error::new(
                ErrorKind::DataInvalid,
                format!("a manifest names partition spec {spec_id}, which the table lacks"),
            )
        })?;
        let path = format!(
            "{}/metadata/{}-m{spec_id}.avro",
            metadata.location(),
            uuid::Uuid::new_v4()
        );
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(&path)?,
            Some(snapshot_id),
            schema.clone(),
            spec.as_ref().clone(),
        )
        .build_v2_data();
        let mut entries = 0usize;
        for manifest in manifests {
            let loaded = manifest.load_manifest(file_io).await?;
            for entry in loaded.entries().iter().filter(|entry| entry.is_alive()) {
                let file = entry.data_file();
                let data_sequence = entry.sequence_number().unwrap_or(manifest.sequence_number);
                let file_sequence = entry.file_sequence_number.or(Some(data_sequence));
                before.add(file);
                if rewrite.removed.contains(file.file_path()) {
                    if !found.insert(file.file_path().to_string()) {
                        continue;
                    }
                    removed.add(file);
                    writer.add_delete_file(file.clone(), data_sequence, file_sequence)?;
                } else {
                    let added_by = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                    writer.add_existing_file(
                        file.clone(),
                        added_by,
                        data_sequence,
                        file_sequence,
                    )?;
                }
                entries += 1;
            }
        }
        if *spec_id == default_spec {
            for file in &rewrite.added {
                added.add(file);
                writer.add_file(file.clone(), sequence_number)?;
                entries += 1;
            }
        }
        if entries > 0 {
            new_manifests.push(writer.write_manifest_file().await?);
            written.push(path);
        }
    }
    if let Some(gone) = rewrite.removed.iter().find(|path| !found.contains(*path)) {
        for path in &written {
            let _ = file_io.delete(path).await;
        }
        return Ok(Staged::FileGone(gone.clone()));
    }
    let manifests_after = new_manifests.len();

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{}.avro",
        metadata.location(),
        uuid::Uuid::new_v4()
    );
    let mut list_writer = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        Some(parent.snapshot_id()),
        sequence_number,
    );
    list_writer.add_manifests(new_manifests.into_iter().chain(carried))?;
    list_writer.close().await?;
    written.push(list_path.clone());

    let after_files = before.files - removed.files + added.files;
    let after_records = before.records - removed.records + added.records;
    let after_bytes = before.bytes - removed.bytes + added.bytes;
    let mut properties = HashMap::from([
        ("added-data-files".to_string(), added.files.to_string()),
        ("deleted-data-files".to_string(), removed.files.to_string()),
        ("added-records".to_string(), added.records.to_string()),
        ("deleted-records".to_string(), removed.records.to_string()),
        ("added-files-size".to_string(), added.bytes.to_string()),
        ("removed-files-size".to_string(), removed.bytes.to_string()),
        ("total-data-files".to_string(), after_files.to_string()),
        ("total-records".to_string(), after_records.to_string()),
        ("total-files-size".to_string(), after_bytes.to_string()),
        ("total-delete-files".to_string(), "0".to_string()),
        ("total-position-deletes".to_string(), "0".to_string()),
        ("total-equality-deletes".to_string(), "0".to_string()),
    ]);
    properties.insert(
        REWRITE_PROPERTY.to_string(),
        format!(
            "{} files into {}, {manifests_before} data manifests into {manifests_after}",
            removed.files, added.files
        ),
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default();
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms.max(metadata.last_updated_ms() + 1))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Replace,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let location = table.metadata_location_result()?.to_string();
    let new_metadata = metadata
        .clone()
        .into_builder(Some(location))
        .set_branch_snapshot(snapshot, MAIN_BRANCH)?
        .build()?
        .metadata;
    Ok(Staged::Ready(Box::new(StagedSnapshot {
        metadata: new_metadata,
        snapshot_id,
        manifests_before,
        manifests_after,
        written,
    })))
}

/// A positive snapshot id no snapshot of the table has (as iceberg's own writers pick them).
fn new_snapshot_id(metadata: &iceberg::spec::TableMetadata) -> i64 {
    loop {
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((high ^ low) & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// The data files a rewrite snapshot took out of the table, read from its own manifests
/// (entries it marked deleted). Empty for any other snapshot.
pub async fn files_removed_by(table: &Table, snapshot: &Snapshot) -> Result<Vec<String>> {
    if !snapshot
        .summary()
        .additional_properties
        .contains_key(REWRITE_PROPERTY)
    {
        return Ok(Vec::new());
    }
    let file_io = table.file_io();
    let list = manifest_list(table, snapshot).await?;
    let mut removed = Vec::new();
    for manifest in list
        .entries()
        .iter()
        .filter(|manifest| manifest.added_snapshot_id == snapshot.snapshot_id())
    {
        let loaded = manifest.load_manifest(file_io).await?;
        removed.extend(
            loaded
                .entries()
                .iter()
                .filter(|entry| {
                    entry.status() == iceberg::spec::ManifestStatus::Deleted
                        && entry.snapshot_id() == Some(snapshot.snapshot_id())
                })
                .map(|entry| entry.file_path().to_string()),
        );
    }
    Ok(removed)
}

/// How many data manifests the table's current snapshot reads through.
pub async fn data_manifest_count(table: &Table) -> Result<usize> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(0);
    };
    let list = manifest_list(table, snapshot).await?;
    Ok(list
        .entries()
        .iter()
        .filter(|manifest| manifest.content == ManifestContentType::Data)
        .count())
}

/// The manifest list of `snapshot`, one of `table`'s (unencrypted: fjord writes none).
pub(crate) async fn manifest_list(table: &Table, snapshot: &Snapshot) -> Result<ManifestList> {
    let bytes = table
        .file_io()
        .new_input(snapshot.manifest_list())?
        .read()
        .await?;
    ManifestList::parse_with_version(&bytes, table.metadata().format_version())
}
