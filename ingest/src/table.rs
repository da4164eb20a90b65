//! One Iceberg table the sidecar writes: creation, schema evolution, data files and fenced
//! commits.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema as ArrowSchema, SchemaRef};
use fjord_iceberg::IcebergCatalog;
use iceberg::arrow::{FieldMatchMode, RecordBatchPartitionSplitter};
use iceberg::spec::{DataFile, DataFileFormat, Transform};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableIdent};

use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::fence::FencedCatalog;
use crate::offsets::{Offsets, committed_offsets};

/// Where each partition of a commit must still stand in the table for the commit to be valid:
/// `(topic, partition) -> next offset recorded` (`None`: nothing recorded yet).
pub type Expected = BTreeMap<(String, i32), Option<i64>>;

/// What a fenced commit did.
#[derive(Debug)]
pub enum CommitOutcome {
    Committed {
        snapshot_id: i64,
        /// The table's whole offset map after the commit.
        offsets: Offsets,
    },
    /// Another writer committed some of these partitions first: the data must be dropped and
    /// reading must resume from the table's offsets.
    Fenced {
        topic: String,
        partition: i32,
        expected: Option<i64>,
        found: Option<i64>,
        offsets: Offsets,
    },
}

pub struct LakeTable {
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    table: Table,
    arrow_schema: SchemaRef,
}

impl LakeTable {
    /// Loads `schema.name`, or `None` when it does not exist.
    pub async fn open(
        catalog: &Arc<dyn Catalog>,
        schema: &str,
        name: &str,
    ) -> iceberg::Result<Option<LakeTable>> {
        let ident = TableIdent::new(NamespaceIdent::new(schema.to_string()), name.to_string());
        match catalog.load_table(&ident).await {
            Ok(table) => Ok(Some(LakeTable::from_table(catalog.clone(), table)?)),
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::TableNotFound | ErrorKind::NamespaceNotFound
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Creates `schema.name` (and the schema) with `arrow_schema`, partitioned by
    /// `(transform, column)` pairs. Another writer creating it first is fine: that table is
    /// loaded instead.
    pub async fn create(
        catalog: &Arc<dyn Catalog>,
        schema: &str,
        name: &str,
        arrow_schema: &ArrowSchema,
        partition: &[(String, String)],
        mut properties: HashMap<String, String>,
    ) -> iceberg::Result<LakeTable> {
        let lake = IcebergCatalog::new("ingest", catalog.clone());
        lake.create_schema(schema, true).await?;
        let transforms = partition
            .iter()
            .map(|(transform, column)| Ok((column.as_str(), Transform::from_str(transform)?)))
            .collect::<iceberg::Result<Vec<_>>>()?;
        properties.insert("fjord.created-by".to_string(), "fjord ingest".to_string());
        match lake
            .create_table(schema, name, arrow_schema, &transforms, properties)
            .await
        {
            Ok(table) => LakeTable::from_table(catalog.clone(), table),
            Err(error) if error.kind() == ErrorKind::TableAlreadyExists => {
                LakeTable::open(catalog, schema, name).await?.ok_or(error)
            }
            Err(error) => Err(error),
        }
    }

    pub(crate) fn from_table(
        catalog: Arc<dyn Catalog>,
        table: Table,
    ) -> iceberg::Result<LakeTable> {
        let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(
            table.metadata().current_schema(),
        )?);
        Ok(LakeTable {
            catalog,
            ident: table.identifier().clone(),
            table,
            arrow_schema,
        })
    }

    pub fn ident(&self) -> &TableIdent {
        &self.ident
    }

    /// The table's current columns, as Arrow.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow_schema.clone()
    }

    /// Loads the table's current metadata.
    pub async fn reload(&mut self) -> iceberg::Result<()> {
        let table = self.catalog.load_table(&self.ident).await?;
        *self = LakeTable::from_table(self.catalog.clone(), table)?;
        Ok(())
    }

    /// Offsets recorded in the table under `property`.
    pub fn offsets(&self, property: &str) -> iceberg::Result<Offsets> {
        committed_offsets(&self.table, property)
            .map_err(|reason| iceberg::Error::new(ErrorKind::DataInvalid, reason))
    }

    /// Adds optional columns (schema evolution). Columns another writer added meanwhile are
    /// skipped.
    pub async fn add_columns(&mut self, fields: &[Field]) -> iceberg::Result<()> {
        self.reload().await?;
        let missing: Vec<&Field> = fields
            .iter()
            .filter(|field| self.arrow_schema.field_with_name(field.name()).is_err())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Types (nested ones included) are converted through a schema of their own, which
        // assigns the field ids the conversion needs; the commit assigns the real ones.
        let owned: Vec<Field> = missing.iter().map(|field| (*field).clone()).collect();
        let converted =
            iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&ArrowSchema::new(owned))?;
        let tx = Transaction::new(&self.table);
        let mut action = tx.update_schema();
        for field in missing {
            let column = converted.field_by_name(field.name()).ok_or_else(|| {
                iceberg::Error::new(ErrorKind::Unexpected, "converted column is missing")
            })?;
            action = action.add_column(iceberg::transaction::AddColumn::optional(
                field.name(),
                (*column.field_type).clone(),
            ));
        }
        let tx = action.apply(tx)?;
        let table = tx.commit(self.catalog.as_ref()).await?;
        *self = LakeTable::from_table(self.catalog.clone(), table)?;
        Ok(())
    }

    /// Writes `batches` (in the table's current schema) as Parquet data files, one or more per
    /// partition, without committing them.
    pub async fn write_files(
        &self,
        batches: &[RecordBatch],
        file_prefix: &str,
    ) -> iceberg::Result<Vec<DataFile>> {
        let batches = futures::stream::iter(batches.iter().cloned().map(Ok));
        self.write_stream(batches, file_prefix).await
    }

    /// [`LakeTable::write_files`] for batches that arrive one by one: each is written before
    /// the next is taken, and files roll over at the table's target file size.
    pub async fn write_stream(
        &self,
        mut batches: impl futures::Stream<Item = iceberg::Result<RecordBatch>> + Unpin,
        file_prefix: &str,
    ) -> iceberg::Result<Vec<DataFile>> {
        use futures::StreamExt;
        let metadata = self.table.metadata();
        let properties = metadata.table_properties()?;
        let schema = metadata.current_schema().clone();
        let parquet = ParquetWriterBuilder::new_with_match_mode(
            parquet_properties(metadata.properties())
                .map_err(|message| iceberg::Error::new(ErrorKind::DataInvalid, message))?,
            schema.clone(),
            FieldMatchMode::Name,
        );
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            properties.write_target_file_size_bytes,
            self.table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            DefaultFileNameGenerator::new(
                format!("{file_prefix}-{}", uuid::Uuid::now_v7()),
                None,
                DataFileFormat::Parquet,
            ),
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec = metadata.default_partition_spec().clone();
        if spec.is_unpartitioned() {
            let mut writer = builder.build(None).await?;
            while let Some(batch) = batches.next().await {
                writer.write(batch?).await?;
            }
            writer.close().await
        } else {
            let splitter =
                RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)?;
            let mut writer = FanoutWriter::new(builder);
            while let Some(batch) = batches.next().await {
                for (key, part) in splitter.split(&batch?)? {
                    writer.write(key, part).await?;
                }
            }
            writer.close().await
        }
    }

    /// Appends `files` and records `advance` in the offset map under `property`, but only if
    /// every partition in `expected` still stands where expected in the table. Commits of other
    /// writers to other partitions are merged (validated again on the newest state).
    ///
    /// Files that did not become part of the table are deleted: when the commit is fenced, and
    /// when it fails and the table shows it did not land (its offsets are not `advance`). The
    /// records are read and written again, so the files would otherwise stay on disk in no
    /// snapshot, where snapshot expiry never looks.
    pub async fn commit_fenced(
        &mut self,
        files: Vec<DataFile>,
        expected: &Expected,
        advance: &Offsets,
        property: &str,
        extra_properties: &HashMap<String, String>,
    ) -> iceberg::Result<CommitOutcome> {
        let paths: Vec<String> = files
            .iter()
            .map(|file| file.file_path().to_string())
            .collect();
        let outcome = self
            .try_commit_fenced(files, expected, advance, property, extra_properties)
            .await;
        let landed = match &outcome {
            Ok(CommitOutcome::Committed { .. }) => true,
            Ok(CommitOutcome::Fenced { .. }) => false,
            // A failed commit may still have landed (the catalog took it, then an answer was
            // lost): the table decides. When it cannot be read, the files are kept.
            Err(_) => match self.reload().await.and_then(|()| self.offsets(property)) {
                Ok(current) => advance.0.iter().any(|(topic, partitions)| {
                    partitions
                        .iter()
                        .any(|(partition, next)| current.get(topic, *partition) == Some(*next))
                }),
                Err(_) => true,
            },
        };
        if !landed {
            self.delete_files(&paths).await;
        }
        outcome
    }

    /// Deletes data files this writer wrote that no snapshot reads. A file that cannot be
    /// deleted is logged and left.
    async fn delete_files(&self, paths: &[String]) {
        let file_io = self.table.file_io();
        for path in paths {
            if let Err(error) = file_io.delete(path).await {
                tracing::warn!(table = %self.ident, %path, %error, "cannot delete a data file that was not committed");
            }
        }
    }

    async fn try_commit_fenced(
        &mut self,
        files: Vec<DataFile>,
        expected: &Expected,
        advance: &Offsets,
        property: &str,
        extra_properties: &HashMap<String, String>,
    ) -> iceberg::Result<CommitOutcome> {
        const ATTEMPTS: usize = 20;
        for _ in 0..ATTEMPTS {
            self.reload().await?;
            let current = self.offsets(property)?;
            for ((topic, partition), expected_next) in expected {
                let found = current.get(topic, *partition);
                if found != *expected_next {
                    return Ok(CommitOutcome::Fenced {
                        topic: topic.clone(),
                        partition: *partition,
                        expected: *expected_next,
                        found,
                        offsets: current,
                    });
                }
            }
            let mut merged = current.clone();
            merged.merge(advance);
            let mut properties = extra_properties.clone();
            properties.insert(property.to_string(), merged.to_json());
            let base = self
                .table
                .metadata()
                .current_snapshot()
                .map(|snapshot| snapshot.snapshot_id());
            let fenced = FencedCatalog::new(self.catalog.clone(), base);
            let tx = Transaction::new(&self.table);
            let action = tx
                .fast_append()
                .with_check_duplicate(false)
                .add_data_files(files.clone())
                .set_snapshot_properties(properties);
            let tx = action.apply(tx)?;
            match tx.commit(&fenced).await {
                Ok(table) => {
                    let snapshot_id = table
                        .metadata()
                        .current_snapshot()
                        .map(|snapshot| snapshot.snapshot_id())
                        .unwrap_or_default();
                    *self = LakeTable::from_table(self.catalog.clone(), table)?;
                    return Ok(CommitOutcome::Committed {
                        snapshot_id,
                        offsets: merged,
                    });
                }
                Err(_) if fenced.table_moved() => continue,
                Err(error) => return Err(error),
            }
        }
        Err(iceberg::Error::new(
            ErrorKind::CatalogCommitConflicts,
            format!(
                "{}: other writers kept committing; gave up after {ATTEMPTS} attempts",
                self.ident
            ),
        ))
    }
}

/// The table property naming the data files' compression codec, as Iceberg's own writers read it.
pub const COMPRESSION_CODEC: &str = "write.parquet.compression-codec";
/// The codec's level (zstd 1-22, gzip 0-9, brotli 0-11).
pub const COMPRESSION_LEVEL: &str = "write.parquet.compression-level";

/// Parquet settings for new data files from the table's `write.parquet.compression-*`
/// properties, which iceberg 0.10.1's writer ignores (it writes uncompressed files). The codec
/// defaults to zstd, Iceberg's default, at level 1: nearly the ratio of higher levels at a
/// fraction of their cost, which matters at ingest rates.
pub fn parquet_properties(
    properties: &HashMap<String, String>,
) -> Result<WriterProperties, String> {
    let codec = properties
        .get(COMPRESSION_CODEC)
        .map(|codec| codec.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "zstd".to_string());
    let level = match properties.get(COMPRESSION_LEVEL) {
        Some(level) => Some(level.trim().parse::<i32>().map_err(|_| {
            format!("table property {COMPRESSION_LEVEL} = {level:?} is not an integer")
        })?),
        None => None,
    };
    let bad_level = |error: parquet::errors::ParquetError| {
        format!("table property {COMPRESSION_LEVEL} does not suit {codec}: {error}")
    };
    let unsigned = |level: i32| u32::try_from(level).unwrap_or(u32::MAX);
    let compression = match codec.as_str() {
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(level.unwrap_or(1)).map_err(bad_level)?),
        "gzip" => {
            Compression::GZIP(GzipLevel::try_new(level.map_or(6, unsigned)).map_err(bad_level)?)
        }
        "brotli" => {
            Compression::BROTLI(BrotliLevel::try_new(level.map_or(1, unsigned)).map_err(bad_level)?)
        }
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        "uncompressed" | "none" => Compression::UNCOMPRESSED,
        other => {
            return Err(format!(
                "table property {COMPRESSION_CODEC} = {other:?} is not a codec fjord writes: \
                 use zstd, snappy, gzip, lz4, brotli or uncompressed"
            ));
        }
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<WriterProperties, String> {
        let properties = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        parquet_properties(&properties)
    }

    fn codec(properties: &WriterProperties) -> Compression {
        properties.compression(&parquet::schema::types::ColumnPath::from("any"))
    }

    #[test]
    fn data_files_are_zstd_unless_the_table_says_otherwise() {
        let level = |n| ZstdLevel::try_new(n).unwrap();
        assert_eq!(codec(&with(&[]).unwrap()), Compression::ZSTD(level(1)));
        assert_eq!(
            codec(&with(&[(COMPRESSION_LEVEL, "9")]).unwrap()),
            Compression::ZSTD(level(9))
        );
        assert_eq!(
            codec(&with(&[(COMPRESSION_CODEC, " Snappy ")]).unwrap()),
            Compression::SNAPPY
        );
        assert_eq!(
            codec(&with(&[(COMPRESSION_CODEC, "none")]).unwrap()),
            Compression::UNCOMPRESSED
        );
    }

    #[test]
    fn a_bad_codec_or_level_names_the_property() {
        let error = with(&[(COMPRESSION_CODEC, "lzo")]).unwrap_err();
        assert!(
            error.contains("write.parquet.compression-codec = \"lzo\""),
            "{error}"
        );
        let error = with(&[(COMPRESSION_LEVEL, "high")]).unwrap_err();
        assert!(error.contains("write.parquet.compression-level"), "{error}");
        let error = with(&[(COMPRESSION_CODEC, "gzip"), (COMPRESSION_LEVEL, "12")]).unwrap_err();
        assert!(error.contains("does not suit gzip"), "{error}");
    }
}
