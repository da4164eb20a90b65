//! SQL names for Arrow types (what `DESCRIBE` shows) and the Arrow types Iceberg can store.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use fjord_catalog::fjord_postgres_type_key;

use crate::error::{EngineError, sqlstate};

/// The SQL type of a column: Postgres's own spelling for Postgres columns, otherwise the
/// standard name of the Arrow type.
pub(crate) fn sql_type_name(field: &Field) -> String {
    if let Some(name) = field.metadata().get(fjord_postgres_type_key()) {
        return name.clone();
    }
    data_type_name(field.data_type())
}

/// A Postgres type whose values fjord carries as text (a Postgres catalog's uuid, json and jsonb
/// columns): clients are told the real type, so drivers decode the values as that type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCarried {
    Uuid,
    Json,
    Jsonb,
}

/// The type a text column really holds, when it is one of [`TextCarried`]. The type travels in
/// field metadata, so a column passed through unchanged keeps it; an expression over it is text.
pub fn text_carried_type(field: &Field) -> Option<TextCarried> {
    if !matches!(field.data_type(), DataType::Utf8) {
        return None;
    }
    match field.metadata().get(fjord_postgres_type_key())?.as_str() {
        "uuid" => Some(TextCarried::Uuid),
        "json" => Some(TextCarried::Json),
        "jsonb" => Some(TextCarried::Jsonb),
        _ => None,
    }
}

fn data_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "unknown".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("decimal({p},{s})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::List(inner)
        | DataType::LargeList(inner)
        | DataType::FixedSizeList(inner, _)
        | DataType::ListView(inner)
        | DataType::LargeListView(inner) => {
            format!("array({})", data_type_name(inner.data_type()))
        }
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), data_type_name(f.data_type())))
                .collect();
            format!("row({})", inner.join(", "))
        }
        DataType::Map(_, _) => "map".into(),
        DataType::Dictionary(_, value) => data_type_name(value),
        other => other.to_string().to_lowercase(),
    }
}

/// The schema an Iceberg table gets for rows of `schema`, with types Iceberg cannot store mapped
/// to the nearest ones it can. Top-level columns are optional unless `keep_not_null` is set and
/// the input's column cannot hold a null: `CREATE TABLE AS` makes every column optional (as
/// Postgres and Trino do), while loading Parquet files keeps their required columns, which lets
/// the planner treat `NOT IN` over them as a plain anti join.
pub(crate) fn iceberg_compatible_schema(
    schema: &Schema,
    keep_not_null: bool,
) -> Result<Schema, EngineError> {
    let fields = schema
        .fields()
        .iter()
        .map(|field| {
            let nullable = !keep_not_null || field.is_nullable();
            iceberg_field(field, nullable).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schema::new(fields))
}

fn iceberg_field(field: &Field, nullable: bool) -> Result<Field, EngineError> {
    Ok(Field::new(
        field.name(),
        iceberg_type(field.name(), field.data_type())?,
        nullable,
    ))
}

fn iceberg_type(name: &str, data_type: &DataType) -> Result<DataType, EngineError> {
    use DataType as T;
    Ok(match data_type {
        T::Boolean
        | T::Int32
        | T::Int64
        | T::Float32
        | T::Float64
        | T::Date32
        | T::Utf8
        | T::Binary => data_type.clone(),
        T::Null | T::Utf8View | T::LargeUtf8 => T::Utf8,
        T::Int8 | T::Int16 | T::UInt8 | T::UInt16 => T::Int32,
        T::UInt32 | T::UInt64 => T::Int64,
        T::Float16 => T::Float32,
        T::Date64 => T::Date32,
        T::BinaryView | T::LargeBinary | T::FixedSizeBinary(_) => T::Binary,
        T::Time32(_) | T::Time64(_) => T::Time64(TimeUnit::Microsecond),
        T::Timestamp(_, None) => T::Timestamp(TimeUnit::Microsecond, None),
        T::Timestamp(_, Some(_)) => T::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        T::Decimal128(p, s) if *p <= 38 => T::Decimal128(*p, *s),
        T::Decimal32(p, s) | T::Decimal64(p, s) => T::Decimal128(*p, *s),
        T::Dictionary(_, value) => iceberg_type(name, value)?,
        T::List(inner)
        | T::LargeList(inner)
        | T::ListView(inner)
        | T::LargeListView(inner)
        | T::FixedSizeList(inner, _) => T::List(Arc::new(iceberg_field(inner, true)?)),
        T::Struct(fields) => {
            let fields: Fields = fields
                .iter()
                .map(|f| iceberg_field(f, true).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?
                .into();
            T::Struct(fields)
        }
        other => {
            return Err(EngineError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "column \"{name}\" has type {other}, which an Iceberg table cannot store; cast it first"
                ),
            ));
        }
    })
}

/// Rejects a TimeZone that timestamps could not be shown in.
pub(crate) fn check_time_zone(zone: &str) -> Result<(), EngineError> {
    use std::str::FromStr;
    datafusion::arrow::array::timezone::Tz::from_str(zone)
        .map(|_| ())
        .map_err(|_| {
            EngineError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid value for parameter \"TimeZone\": \"{zone}\""),
            )
        })
}

/// The rows of `stream` with every timestamp-with-zone column shown in `zone` (the instants are
/// unchanged; only the zone they are written in).
/// `schema` with its timestamps with a zone in `zone`; `None` if it has none.
pub(crate) fn zoned_schema(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    zone: &str,
) -> Option<datafusion::arrow::datatypes::SchemaRef> {
    if !schema
        .fields()
        .iter()
        .any(|field| matches!(field.data_type(), DataType::Timestamp(_, Some(_))))
    {
        return None;
    }
    let zone: Arc<str> = Arc::from(zone);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Timestamp(unit, Some(_)) => field
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(*unit, Some(zone.clone()))),
            _ => field.as_ref().clone(),
        })
        .collect();
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

pub(crate) fn in_time_zone(
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    zone: &str,
) -> datafusion::physical_plan::SendableRecordBatchStream {
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;
    let schema = stream.schema();
    let Some(converted) = zoned_schema(&schema, zone) else {
        return stream;
    };
    let target = converted.clone();
    let batches = stream.map(move |batch| {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    datafusion::arrow::compute::cast(column, field.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(target.clone(), columns)?)
    });
    Box::pin(RecordBatchStreamAdapter::new(converted, batches))
}
