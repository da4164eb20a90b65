//! Column statistics for planning, from what Iceberg manifests record per data file: lower and
//! upper bounds and null counts. DataFusion uses them to estimate how many rows a filter keeps
//! and a join produces, which decides join order and which side of a hash join is built.
//! Without them the product of two big tables could be estimated as small and collected into
//! one hash table (TPC-H q07 did exactly that).
//!
//! Every value is `Inexact`: bounds of long strings are truncated, and files may hold deleted
//! rows. Nothing here changes a result, only how a plan is shaped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::ColumnStatistics;
use datafusion::common::ScalarValue;
use datafusion::common::stats::Precision;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;
use iceberg::spec::{Datum, ManifestContentType, ManifestFile, PrimitiveLiteral, PrimitiveType};
use iceberg::table::Table;
use parking_lot::Mutex;

/// What one manifest records about each live data file it lists, by file path.
type ManifestStats = HashMap<String, FileStats>;

#[derive(Debug, Default)]
struct FileStats {
    lower: HashMap<i32, Datum>,
    upper: HashMap<i32, Datum>,
    nulls: HashMap<i32, u64>,
}

/// Manifests never change once written, so what they say is kept by path, for every table of
/// the process; the cache starts over when it holds this many.
const CACHED_MANIFESTS: usize = 4096;
/// Manifests read at once.
const CONCURRENT_READS: usize = 8;

static CACHE: LazyLock<Mutex<HashMap<String, Arc<ManifestStats>>>> = LazyLock::new(Mutex::default);

/// A snapshot's manifests, by its manifest list's path (as immutable as the manifests), so
/// that planning a scan of an unchanged table reads no file at all; starts over at this many.
const CACHED_SNAPSHOTS: usize = 256;

/// Every data manifest's statistics of one snapshot.
type SnapshotStats = Arc<Vec<Arc<ManifestStats>>>;

static SNAPSHOTS: LazyLock<Mutex<HashMap<String, SnapshotStats>>> = LazyLock::new(Mutex::default);

/// Statistics for each field of `schema` (top-level columns of `table`, by name) over the data
/// files of `tasks`; unknown for a column some file has no bounds for, and for all columns
/// when the manifests cannot be read (planning goes on without them).
pub(crate) async fn column_statistics(
    table: &Table,
    schema: &Schema,
    tasks: &[&FileScanTask],
) -> Vec<ColumnStatistics> {
    let unknown = || vec![ColumnStatistics::new_unknown(); schema.fields().len()];
    if tasks.is_empty() {
        return unknown();
    }
    let manifests = match file_stats(table).await {
        Ok(manifests) => manifests,
        Err(error) => {
            tracing::debug!(table = %table.identifier(), %error, "no column statistics: the manifests cannot be read");
            return unknown();
        }
    };
    let wanted: HashSet<&str> = tasks
        .iter()
        .map(|task| task.data_file_path.as_str())
        .collect();
    let files: Vec<&FileStats> = manifests
        .iter()
        .flat_map(|manifest| manifest.iter())
        .filter(|(path, _)| wanted.contains(path.as_str()))
        .map(|(_, stats)| stats)
        .collect();
    if files.len() != wanted.len() {
        // A file the manifests do not list (the snapshot moved on meanwhile): guess nothing.
        return unknown();
    }
    let iceberg_schema = table.metadata().current_schema();
    schema
        .fields()
        .iter()
        .map(|field| match iceberg_schema.field_by_name(field.name()) {
            Some(column) => column_of(&files, column.id, field.data_type()),
            None => ColumnStatistics::new_unknown(),
        })
        .collect()
}

/// One column's statistics over `files`.
fn column_of(files: &[&FileStats], id: i32, data_type: &DataType) -> ColumnStatistics {
    let mut statistics = ColumnStatistics::new_unknown();
    let bound = |pick: fn(&FileStats) -> &HashMap<i32, Datum>, keep_less: bool| {
        let mut best: Option<ScalarValue> = None;
        for file in files {
            let value = scalar(pick(file).get(&id)?, data_type)?;
            let better = match &best {
                None => true,
                Some(best) => match value.partial_cmp(best)? {
                    std::cmp::Ordering::Less => keep_less,
                    std::cmp::Ordering::Greater => !keep_less,
                    std::cmp::Ordering::Equal => false,
                },
            };
            if better {
                best = Some(value);
            }
        }
        best
    };
    if let Some(min) = bound(|file| &file.lower, true) {
        statistics.min_value = Precision::Inexact(min);
    }
    if let Some(max) = bound(|file| &file.upper, false) {
        statistics.max_value = Precision::Inexact(max);
    }
    let nulls: Option<u64> = files.iter().map(|file| file.nulls.get(&id).copied()).sum();
    if let Some(nulls) = nulls {
        statistics.null_count = Precision::Inexact(nulls as usize);
    }
    statistics
}

/// A bound as a value of the column's Arrow type; `None` for types planning gains nothing from
/// (or that the bound's own type does not match).
fn scalar(datum: &Datum, data_type: &DataType) -> Option<ScalarValue> {
    use PrimitiveLiteral as L;
    let primitive = datum.data_type();
    Some(match (datum.literal(), data_type) {
        (L::Boolean(value), DataType::Boolean) => ScalarValue::Boolean(Some(*value)),
        (L::Int(value), DataType::Int32) => ScalarValue::Int32(Some(*value)),
        (L::Int(value), DataType::Int64) => ScalarValue::Int64(Some(i64::from(*value))),
        (L::Long(value), DataType::Int64) => ScalarValue::Int64(Some(*value)),
        (L::Float(value), DataType::Float32) if !value.is_nan() => {
            ScalarValue::Float32(Some(value.0))
        }
        (L::Float(value), DataType::Float64) if !value.is_nan() => {
            ScalarValue::Float64(Some(f64::from(value.0)))
        }
        (L::Double(value), DataType::Float64) if !value.is_nan() => {
            ScalarValue::Float64(Some(value.0))
        }
        (L::Int(value), DataType::Date32) => ScalarValue::Date32(Some(*value)),
        (L::Long(value), DataType::Time64(TimeUnit::Microsecond))
            if *primitive == PrimitiveType::Time =>
        {
            ScalarValue::Time64Microsecond(Some(*value))
        }
        (L::Long(value), DataType::Timestamp(TimeUnit::Microsecond, zone))
            if matches!(
                primitive,
                PrimitiveType::Timestamp | PrimitiveType::Timestamptz
            ) =>
        {
            ScalarValue::TimestampMicrosecond(Some(*value), zone.clone())
        }
        (L::Long(value), DataType::Timestamp(TimeUnit::Nanosecond, zone))
            if matches!(
                primitive,
                PrimitiveType::TimestampNs | PrimitiveType::TimestamptzNs
            ) =>
        {
            ScalarValue::TimestampNanosecond(Some(*value), zone.clone())
        }
        (L::String(value), DataType::Utf8) => ScalarValue::Utf8(Some(value.clone())),
        (L::String(value), DataType::LargeUtf8) => ScalarValue::LargeUtf8(Some(value.clone())),
        (L::String(value), DataType::Utf8View) => ScalarValue::Utf8View(Some(value.clone())),
        (L::Int128(value), DataType::Decimal128(precision, scale)) if matches!(primitive, PrimitiveType::Decimal { scale: s, .. } if *s as i8 == *scale) => {
            ScalarValue::Decimal128(Some(*value), *precision, *scale)
        }
        _ => return None,
    })
}

/// What every data manifest of the table's current snapshot records about its files.
async fn file_stats(table: &Table) -> iceberg::Result<SnapshotStats> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Arc::default());
    };
    if let Some(manifests) = SNAPSHOTS.lock().get(snapshot.manifest_list()) {
        return Ok(manifests.clone());
    }
    if snapshot.encryption_key_id().is_some() {
        return Err(iceberg::Error::new(
            iceberg::ErrorKind::FeatureUnsupported,
            "encrypted manifest lists are not read for statistics",
        ));
    }
    let file_io = table.file_io().clone();
    let list = crate::rewrite::manifest_list(table, snapshot).await?;
    let manifests: Vec<ManifestFile> = list
        .entries()
        .iter()
        .filter(|manifest| manifest.content == ManifestContentType::Data)
        .cloned()
        .collect();
    let stats: SnapshotStats = Arc::new(
        futures::stream::iter(manifests)
            .map(|manifest| manifest_stats(file_io.clone(), manifest))
            .buffer_unordered(CONCURRENT_READS)
            .try_collect()
            .await?,
    );
    let mut snapshots = SNAPSHOTS.lock();
    if snapshots.len() >= CACHED_SNAPSHOTS {
        snapshots.clear();
    }
    snapshots.insert(snapshot.manifest_list().to_string(), stats.clone());
    Ok(stats)
}

async fn manifest_stats(
    file_io: FileIO,
    manifest: ManifestFile,
) -> iceberg::Result<Arc<ManifestStats>> {
    if let Some(stats) = CACHE.lock().get(&manifest.manifest_path) {
        return Ok(stats.clone());
    }
    let loaded = manifest.load_manifest(&file_io).await?;
    let stats: ManifestStats = loaded
        .entries()
        .iter()
        .filter(|entry| entry.is_alive())
        .map(|entry| {
            let file = entry.data_file();
            (
                file.file_path().to_string(),
                FileStats {
                    lower: file.lower_bounds().clone(),
                    upper: file.upper_bounds().clone(),
                    nulls: file.null_value_counts().clone(),
                },
            )
        })
        .collect();
    let stats = Arc::new(stats);
    let mut cache = CACHE.lock();
    if cache.len() >= CACHED_MANIFESTS {
        cache.clear();
    }
    cache.insert(manifest.manifest_path.clone(), stats.clone());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_become_values_of_the_columns_type() {
        assert_eq!(
            scalar(&Datum::int(7), &DataType::Int64),
            Some(ScalarValue::Int64(Some(7)))
        );
        assert_eq!(
            scalar(&Datum::date(9000), &DataType::Date32),
            Some(ScalarValue::Date32(Some(9000)))
        );
        let zone: Option<Arc<str>> = Some("+00:00".into());
        assert_eq!(
            scalar(
                &Datum::timestamptz_micros(5),
                &DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
            ),
            Some(ScalarValue::TimestampMicrosecond(Some(5), zone))
        );
        assert_eq!(
            scalar(&Datum::string("FRANCE"), &DataType::Utf8View),
            Some(ScalarValue::Utf8View(Some("FRANCE".into())))
        );
        assert_eq!(scalar(&Datum::double(f64::NAN), &DataType::Float64), None);
        assert_eq!(scalar(&Datum::string("x"), &DataType::Int32), None);
    }

    #[test]
    fn a_column_is_bounded_by_every_files_bounds_or_not_at_all() {
        let file = |low: i32, high: Option<i32>, nulls: u64| FileStats {
            lower: HashMap::from([(1, Datum::int(low))]),
            upper: high
                .map(|high| HashMap::from([(1, Datum::int(high))]))
                .unwrap_or_default(),
            nulls: HashMap::from([(1, nulls)]),
        };
        let (a, b) = (file(5, Some(10), 1), file(1, Some(7), 2));
        let column = column_of(&[&a, &b], 1, &DataType::Int32);
        assert_eq!(
            column.min_value,
            Precision::Inexact(ScalarValue::Int32(Some(1)))
        );
        assert_eq!(
            column.max_value,
            Precision::Inexact(ScalarValue::Int32(Some(10)))
        );
        assert_eq!(column.null_count, Precision::Inexact(3));
        let c = file(0, None, 0);
        let column = column_of(&[&a, &c], 1, &DataType::Int32);
        assert_eq!(
            column.min_value,
            Precision::Inexact(ScalarValue::Int32(Some(0)))
        );
        assert_eq!(column.max_value, Precision::Absent);
        assert_eq!(
            column_of(&[&a], 2, &DataType::Int32),
            ColumnStatistics::new_unknown()
        );
    }
}
