//! Reading the data files of a scan, with strings as views.
//!
//! iceberg 0.10.1's Arrow reader casts every batch to the table's Arrow schema, where strings
//! are `Utf8`: each value is copied out of its Parquet page (dictionary pages included) into one
//! contiguous buffer. DataFusion reads strings as `Utf8View`, which points into the decoded page
//! and compares and groups short strings without touching their bytes. On TPC-H, the copy made
//! the string-heavy queries 1.1–1.35x slower than DataFusion on the same files (q19, q01, q16,
//! q12).
//!
//! So the lake's tables show top-level strings as `Utf8View`, and a data file is read here,
//! straight through parquet's async reader over the table's FileIO, when that is a plain read:
//! every projected column is a top-level primitive found in the file by its field id, in a type
//! that reads as the table's (or casts to it: `int` promoted to `long`, a time zone spelled
//! differently), and the file has no deletes, no INT96 timestamps and is read whole. Anything
//! else (deletes, files without field ids, columns added after the file was written, nested
//! columns, no columns at all) goes through iceberg's reader, whose `Utf8` columns are then
//! cast to views.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DataFusionError, Result};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::{
    PARQUET_FIELD_ID_META_KEY, ParquetRecordBatchStreamBuilder, ProjectionMask,
};
use datafusion::parquet::basic::Type as PhysicalType;
use datafusion::physical_plan::metrics::Count;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::arrow::{ArrowFileReader, ArrowReader};
use iceberg::io::{FileIO, FileMetadata};
use iceberg::scan::FileScanTask;

use crate::to_datafusion_error;

/// `schema` with its top-level strings as `Utf8View`: the Arrow schema the lake's tables show.
pub(crate) fn with_string_views(schema: &Schema) -> Schema {
    map_top_level_types(schema, |data_type| match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        other => other.clone(),
    })
}

/// `schema` with views as their plain types (`Utf8`, `Binary`): what iceberg's writer takes.
pub(crate) fn without_views(schema: &Schema) -> Schema {
    map_top_level_types(schema, |data_type| match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    })
}

fn map_top_level_types(schema: &Schema, map: impl Fn(&DataType) -> DataType) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            field
                .as_ref()
                .clone()
                .with_data_type(map(field.data_type()))
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// One data file's batches, in `target`'s schema. `fallback` is iceberg's reader, for files
/// that are not a plain read; `fallbacks` counts them.
pub(crate) async fn read_file(
    task: FileScanTask,
    file_io: &FileIO,
    fallback: &ArrowReader,
    fallbacks: &Count,
    target: &SchemaRef,
    batch_size: usize,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    if let Some(batches) = read_plain(&task, file_io, target, batch_size).await? {
        return Ok(batches);
    }
    fallbacks.add(1);
    let batches = fallback
        .clone()
        .read(futures::stream::iter([Ok(task)]).boxed())
        .map_err(to_datafusion_error)?
        .stream();
    let target = target.clone();
    Ok(batches
        .map(move |batch| {
            let batch = batch.map_err(to_datafusion_error)?;
            conform(batch.columns().to_vec(), batch.num_rows(), &target)
        })
        .boxed())
}

/// The file read directly, or `None` if it needs iceberg's reader.
async fn read_plain(
    task: &FileScanTask,
    file_io: &FileIO,
    target: &SchemaRef,
    batch_size: usize,
) -> Result<Option<BoxStream<'static, Result<RecordBatch>>>> {
    let whole_file =
        task.start == 0 && (task.length == 0 || task.length >= task.file_size_in_bytes);
    if !task.deletes.is_empty()
        || task.predicate.is_some()
        || !whole_file
        || target.fields().is_empty()
    {
        return Ok(None);
    }
    // The field id of each column asked for; nested columns go through iceberg's reader.
    let mut wanted = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        if field.data_type().is_nested() {
            return Ok(None);
        }
        match field_id(field) {
            Some(id) => wanted.push(id),
            None => return Ok(None),
        }
    }

    let input = file_io
        .new_input(&task.data_file_path)
        .map_err(to_datafusion_error)?;
    let file = input.reader().await.map_err(to_datafusion_error)?;
    let mut reader = ArrowFileReader::new(
        FileMetadata {
            size: task.file_size_in_bytes,
        },
        file,
    );
    let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
        .await
        .map_err(parquet_error(&task.data_file_path))?;
    let file_schema = metadata.schema().clone();
    let roots: HashMap<i32, usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(index, field)| field_id(field).map(|id| (id, index)))
        .collect();
    let mut projected = Vec::with_capacity(wanted.len());
    for (id, field) in wanted.iter().zip(target.fields()) {
        let Some(&root) = roots.get(id) else {
            return Ok(None);
        };
        let found = file_schema.field(root).data_type();
        let reads_as = match found {
            DataType::Utf8 | DataType::LargeUtf8 => &DataType::Utf8View,
            other => other,
        };
        if found.is_nested() || !can_cast_types(reads_as, field.data_type()) {
            return Ok(None);
        }
        projected.push(root);
    }
    let parquet_schema = metadata.parquet_schema();
    let has_int96 = parquet_schema
        .columns()
        .iter()
        .enumerate()
        .any(|(leaf, column)| {
            column.physical_type() == PhysicalType::INT96
                && projected.contains(&parquet_schema.get_column_root_idx(leaf))
        });
    if has_int96 {
        return Ok(None);
    }

    let views = with_string_views(&file_schema);
    let metadata = if views == *file_schema {
        metadata
    } else {
        ArrowReaderMetadata::try_new(
            metadata.metadata().clone(),
            ArrowReaderOptions::new().with_schema(Arc::new(views)),
        )
        .map_err(parquet_error(&task.data_file_path))?
    };
    let mask = ProjectionMask::roots(metadata.parquet_schema(), projected.iter().copied());
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_projection(mask)
        .with_batch_size(batch_size)
        .build()
        .map_err(parquet_error(&task.data_file_path))?;
    // The reader yields the projected columns in file order; the scan's order is `target`'s.
    let mut in_file_order = projected.clone();
    in_file_order.sort_unstable();
    let order: Vec<usize> = projected
        .iter()
        .map(|root| in_file_order.binary_search(root).expect("projected"))
        .collect();
    let target = target.clone();
    let path = task.data_file_path.clone();
    Ok(Some(
        stream
            .map(move |batch| {
                let batch = batch.map_err(parquet_error(&path))?;
                let columns = order
                    .iter()
                    .map(|&index| batch.column(index).clone())
                    .collect();
                conform(columns, batch.num_rows(), &target)
            })
            .boxed(),
    ))
}

/// `columns` as a batch of `schema`, each cast where its type differs.
pub(crate) fn conform(
    columns: Vec<ArrayRef>,
    rows: usize,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column)
            } else {
                cast(&column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| DataFusionError::ArrowError(Box::new(error), None))?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|error| DataFusionError::ArrowError(Box::new(error), None))
}

fn field_id(field: &Field) -> Option<i32> {
    field
        .metadata()
        .get(PARQUET_FIELD_ID_META_KEY)?
        .parse()
        .ok()
}

fn parquet_error(
    path: &str,
) -> impl Fn(datafusion::parquet::errors::ParquetError) -> DataFusionError + use<> {
    let path = path.to_string();
    move |error| DataFusionError::External(format!("reading {path}: {error}").into())
}
