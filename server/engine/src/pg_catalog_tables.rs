//! fjord's own `pg_namespace`, `pg_class` and `pg_attribute`, built from one catalog at query
//! time. OIDs are derived from names, so they are the same in every scan, every session and
//! every process: a query that joins the three (as drivers' column listings do) always matches.
//! Column types carry PostgreSQL's OIDs and modifiers (`uuid`, `jsonb`, `numeric(4,1)`,
//! `timestamptz`), so clients show the types users expect.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int16Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProvider, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::{MemTable, TableType};

/// The owner every object reports (PostgreSQL's bootstrap superuser).
const OWNER: i32 = 10;

/// A stable OID for a named object: FNV-1a of its path, above PostgreSQL's reserved range.
pub(crate) fn stable_oid(parts: &[&str]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= byte as u32;
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    16384 + (hash % (i32::MAX as u32 - 16384)) as i32
}

enum Value {
    Int(i32),
    Small(i16),
    Float(f64),
    Bool(bool),
    Text(Option<String>),
}

fn text(value: &str) -> Value {
    Value::Text(Some(value.to_string()))
}

fn batch(fields: Vec<Field>, rows: Vec<Vec<Value>>) -> Result<Arc<dyn TableProvider>> {
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let values = rows.iter().map(|row| &row[index]);
        let array: ArrayRef = match field.data_type() {
            DataType::Int32 => Arc::new(Int32Array::from_iter_values(values.map(|v| match v {
                Value::Int(i) => *i,
                _ => 0,
            }))),
            DataType::Int16 => Arc::new(Int16Array::from_iter_values(values.map(|v| match v {
                Value::Small(i) => *i,
                _ => 0,
            }))),
            DataType::Float64 => {
                Arc::new(Float64Array::from_iter_values(values.map(|v| match v {
                    Value::Float(f) => *f,
                    _ => 0.0,
                })))
            }
            DataType::Boolean => Arc::new(BooleanArray::from_iter(values.map(|v| match v {
                Value::Bool(b) => Some(*b),
                _ => Some(false),
            }))),
            DataType::Utf8 => Arc::new(StringArray::from_iter(values.map(|v| match v {
                Value::Text(t) => t.clone(),
                _ => None,
            }))),
            other => datafusion::arrow::array::new_null_array(other, rows.len()),
        };
        columns.push(array);
    }
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// PostgreSQL's `text[]` (and `aclitem[]`), as clients concatenate and unnest them.
fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// `pg_namespace` for one catalog.
pub(crate) fn pg_namespace(
    catalog_name: &str,
    catalog: &dyn CatalogProvider,
) -> Result<Arc<dyn TableProvider>> {
    let fields = vec![
        Field::new("oid", DataType::Int32, false),
        Field::new("nspname", DataType::Utf8, false),
        Field::new("nspowner", DataType::Int32, false),
        Field::new("nspacl", DataType::Utf8, true),
        Field::new("options", DataType::Utf8, true),
    ];
    let mut rows = Vec::new();
    let mut schemas = catalog.schema_names();
    schemas.extend(["pg_catalog".to_string(), "information_schema".to_string()]);
    schemas.sort();
    schemas.dedup();
    for schema in schemas {
        let oid = match schema.as_str() {
            // PostgreSQL's own OIDs, which the built-in pg_type and pg_proc rows refer to.
            "pg_catalog" => 11,
            _ => stable_oid(&[catalog_name, &schema]),
        };
        rows.push(vec![
            Value::Int(oid),
            text(&schema),
            Value::Int(OWNER),
            Value::Text(None),
            Value::Text(None),
        ]);
    }
    batch(fields, rows)
}

/// `pg_database` with one row per catalog, in the column layout `schema` gives.
pub(crate) fn pg_database(
    schema: &SchemaRef,
    catalogs: &[String],
) -> Result<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect();
    let rows = catalogs
        .iter()
        .map(|catalog| {
            fields
                .iter()
                .map(|field| match (field.name().as_str(), field.data_type()) {
                    ("oid", _) => Value::Int(stable_oid(&[catalog])),
                    ("datname", _) => text(catalog),
                    ("datdba", _) => Value::Int(OWNER),
                    ("encoding", _) => Value::Int(6),
                    ("datlocprovider", _) => text("c"),
                    ("datcollate" | "datctype", _) => text("C"),
                    ("datallowconn", _) => Value::Bool(true),
                    ("datconnlimit", _) => Value::Int(-1),
                    (_, DataType::Utf8) if !field.is_nullable() => text(""),
                    _ => Value::Text(None),
                })
                .collect()
        })
        .collect();
    batch(fields, rows)
}

/// `pg_settings` with the server's fixed settings, which drivers read there (pgJDBC asks for
/// `max_index_keys` before listing foreign keys). Settings a session can change are read with
/// `SHOW` or `current_setting()`.
pub(crate) fn pg_settings(schema: &SchemaRef) -> Result<Arc<dyn TableProvider>> {
    const FIXED: &[&str] = &[
        "block_size",
        "integer_datetimes",
        "lc_collate",
        "lc_ctype",
        "max_function_args",
        "max_identifier_length",
        "max_index_keys",
        "server_encoding",
        "server_version",
        "server_version_num",
        "standard_conforming_strings",
    ];
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect();
    let rows = FIXED
        .iter()
        .map(|name| {
            let setting = match *name {
                "block_size" => "8192",
                "max_function_args" => "100",
                "max_index_keys" => "32",
                other => crate::session_vars::default_value(other).unwrap_or(""),
            };
            fields
                .iter()
                .map(|field| match field.name().as_str() {
                    "name" => text(name),
                    "setting" | "reset_val" | "boot_val" => text(setting),
                    "context" => text("internal"),
                    "source" => text("default"),
                    "category" => text("Preset Options"),
                    "vartype" => text(match setting {
                        "on" | "off" => "bool",
                        _ if setting.parse::<i64>().is_ok() => "integer",
                        _ => "string",
                    }),
                    "pending_restart" => Value::Bool(false),
                    _ => Value::Text(None),
                })
                .collect()
        })
        .collect();
    batch(fields, rows)
}

/// One table of the catalog as `pg_class` and `pg_attribute` describe it.
pub(crate) struct Relation {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) view: bool,
    pub(crate) columns: SchemaRef,
}

/// Every table and view of a catalog, with their columns (asked of the catalog now).
pub(crate) async fn relations(catalog: &dyn CatalogProvider) -> Vec<Relation> {
    let mut relations = Vec::new();
    for schema_name in catalog.schema_names() {
        let Some(schema) = catalog.schema(&schema_name) else {
            continue;
        };
        for table_name in schema.table_names() {
            // A table that cannot be loaded now (its source is down) is left out.
            if let Ok(Some(table)) = schema.table(&table_name).await {
                relations.push(Relation {
                    schema: schema_name.clone(),
                    name: table_name,
                    view: table.table_type() == TableType::View,
                    columns: table.schema(),
                });
            }
        }
    }
    relations
}

pub(crate) fn pg_class(
    catalog_name: &str,
    relations: &[Relation],
) -> Result<Arc<dyn TableProvider>> {
    let int = |name: &str| Field::new(name, DataType::Int32, false);
    let boolean = |name: &str| Field::new(name, DataType::Boolean, false);
    let fields = vec![
        int("oid"),
        Field::new("relname", DataType::Utf8, false),
        int("relnamespace"),
        int("reltype"),
        int("reloftype"),
        int("relowner"),
        int("relam"),
        int("relfilenode"),
        int("reltablespace"),
        int("relpages"),
        Field::new("reltuples", DataType::Float64, false),
        int("relallvisible"),
        int("reltoastrelid"),
        boolean("relhasindex"),
        boolean("relisshared"),
        Field::new("relpersistence", DataType::Utf8, false),
        Field::new("relkind", DataType::Utf8, false),
        Field::new("relnatts", DataType::Int16, false),
        Field::new("relchecks", DataType::Int16, false),
        boolean("relhasrules"),
        boolean("relhastriggers"),
        boolean("relhassubclass"),
        boolean("relrowsecurity"),
        boolean("relforcerowsecurity"),
        boolean("relispopulated"),
        Field::new("relreplident", DataType::Utf8, false),
        boolean("relispartition"),
        int("relrewrite"),
        int("relfrozenxid"),
        int("relminmxid"),
        Field::new("relacl", text_array(), true),
        Field::new("reloptions", text_array(), true),
        Field::new("relpartbound", DataType::Utf8, true),
    ];
    let rows = relations
        .iter()
        .map(|relation| {
            let oid = stable_oid(&[catalog_name, &relation.schema, &relation.name]);
            vec![
                Value::Int(oid),
                text(&relation.name),
                Value::Int(stable_oid(&[catalog_name, &relation.schema])),
                Value::Int(0),
                Value::Int(0),
                Value::Int(OWNER),
                Value::Int(if relation.view { 0 } else { 2 }),
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
                Value::Float(-1.0),
                Value::Int(0),
                Value::Int(0),
                Value::Bool(false),
                Value::Bool(false),
                text("p"),
                text(if relation.view { "v" } else { "r" }),
                Value::Small(relation.columns.fields().len() as i16),
                Value::Small(0),
                Value::Bool(relation.view),
                Value::Bool(false),
                Value::Bool(false),
                Value::Bool(false),
                Value::Bool(false),
                Value::Bool(true),
                text("d"),
                Value::Bool(false),
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
                Value::Text(None),
                Value::Text(None),
                Value::Text(None),
            ]
        })
        .collect();
    batch(fields, rows)
}

pub(crate) fn pg_attribute(
    catalog_name: &str,
    relations: &[Relation],
    pg_type_key: &str,
) -> Result<Arc<dyn TableProvider>> {
    let fields = vec![
        Field::new("attrelid", DataType::Int32, false),
        Field::new("attname", DataType::Utf8, false),
        Field::new("atttypid", DataType::Int32, false),
        Field::new("attstattarget", DataType::Int32, false),
        Field::new("attlen", DataType::Int16, false),
        Field::new("attnum", DataType::Int16, false),
        Field::new("attndims", DataType::Int32, false),
        Field::new("attcacheoff", DataType::Int32, false),
        Field::new("atttypmod", DataType::Int32, false),
        Field::new("attbyval", DataType::Boolean, false),
        Field::new("attalign", DataType::Utf8, false),
        Field::new("attstorage", DataType::Utf8, false),
        Field::new("attcompression", DataType::Utf8, true),
        Field::new("attnotnull", DataType::Boolean, false),
        Field::new("atthasdef", DataType::Boolean, false),
        Field::new("atthasmissing", DataType::Boolean, false),
        Field::new("attidentity", DataType::Utf8, false),
        Field::new("attgenerated", DataType::Utf8, false),
        Field::new("attisdropped", DataType::Boolean, false),
        Field::new("attislocal", DataType::Boolean, false),
        Field::new("attinhcount", DataType::Int32, false),
        Field::new("attcollation", DataType::Int32, false),
        Field::new("attacl", DataType::Utf8, true),
        Field::new("attoptions", DataType::Utf8, true),
        Field::new("attfdwoptions", DataType::Utf8, true),
        Field::new("attmissingval", DataType::Utf8, true),
    ];
    let mut rows = Vec::new();
    for relation in relations {
        let relid = stable_oid(&[catalog_name, &relation.schema, &relation.name]);
        for (index, field) in relation.columns.fields().iter().enumerate() {
            let (type_oid, typmod, length) = postgres_type(field, pg_type_key);
            rows.push(vec![
                Value::Int(relid),
                text(field.name()),
                Value::Int(type_oid),
                Value::Int(-1),
                Value::Small(length),
                Value::Small(index as i16 + 1),
                Value::Int(if matches!(field.data_type(), DataType::List(_)) {
                    1
                } else {
                    0
                }),
                Value::Int(-1),
                Value::Int(typmod),
                Value::Bool(length > 0),
                text("i"),
                text(if length > 0 { "p" } else { "x" }),
                Value::Text(None),
                Value::Bool(!field.is_nullable()),
                Value::Bool(false),
                Value::Bool(false),
                text(""),
                text(""),
                Value::Bool(false),
                Value::Bool(true),
                Value::Int(0),
                Value::Int(
                    if matches!(
                        field.data_type(),
                        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                    ) {
                        100
                    } else {
                        0
                    },
                ),
                Value::Text(None),
                Value::Text(None),
                Value::Text(None),
                Value::Text(None),
            ]);
        }
    }
    batch(fields, rows)
}

/// PostgreSQL's type OID, type modifier and length for a column: a Postgres column's own type
/// when fjord knows it (from the field's metadata), otherwise the Arrow type's counterpart.
pub(crate) fn postgres_type(field: &Field, pg_type_key: &str) -> (i32, i32, i16) {
    if let Some(name) = field.metadata().get(pg_type_key) {
        let lowered = name.to_ascii_lowercase();
        let known = match lowered.as_str() {
            "uuid" => Some((2950, -1, 16)),
            "jsonb" => Some((3802, -1, -1)),
            "json" => Some((114, -1, -1)),
            "money" => Some((790, -1, 8)),
            "inet" => Some((869, -1, -1)),
            "interval" => Some((1186, -1, 16)),
            _ if lowered.starts_with("character varying") => Some((1043, -1, -1)),
            _ if lowered.starts_with("character(") => Some((1042, -1, -1)),
            _ => None,
        };
        if let Some(known) = known {
            return known;
        }
    }
    arrow_type(field.data_type())
}

fn arrow_type(data_type: &DataType) -> (i32, i32, i16) {
    match data_type {
        DataType::Boolean => (16, -1, 1),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (21, -1, 2),
        DataType::Int32 | DataType::UInt16 => (23, -1, 4),
        DataType::Int64 | DataType::UInt32 => (20, -1, 8),
        DataType::UInt64 => (1700, -1, -1),
        DataType::Float16 | DataType::Float32 => (700, -1, 4),
        DataType::Float64 => (701, -1, 8),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => (25, -1, -1),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => (17, -1, -1),
        DataType::Date32 | DataType::Date64 => (1082, -1, 4),
        DataType::Time32(_) | DataType::Time64(_) => (1083, -1, 8),
        DataType::Timestamp(_, None) => (1114, -1, 8),
        DataType::Timestamp(_, Some(_)) => (1184, -1, 8),
        DataType::Interval(_) | DataType::Duration(_) => (1186, -1, 16),
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) => (
            1700,
            ((*precision as i32) << 16 | (*scale as i32 & 0xffff)) + 4,
            -1,
        ),
        DataType::List(inner) | DataType::LargeList(inner) => {
            let element = match inner.data_type() {
                DataType::Boolean => 1000,
                DataType::Int16 => 1005,
                DataType::Int32 => 1007,
                DataType::Int64 => 1016,
                DataType::Float32 => 1021,
                DataType::Float64 => 1022,
                DataType::Date32 => 1182,
                DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => 1185,
                DataType::Timestamp(_, _) => 1115,
                DataType::Decimal128(_, _) => 1231,
                _ => 1009,
            };
            (element, -1, -1)
        }
        _ => (25, -1, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_stable_and_above_the_reserved_range() {
        let a = stable_oid(&["iceberg", "data_on_eks", "cats"]);
        assert_eq!(a, stable_oid(&["iceberg", "data_on_eks", "cats"]));
        assert_ne!(a, stable_oid(&["iceberg", "data_on_eks", "cat"]));
        assert_ne!(stable_oid(&["ab", "c"]), stable_oid(&["a", "bc"]));
        assert!(a >= 16384);
    }

    #[test]
    fn numeric_typmod_encodes_precision_and_scale() {
        assert_eq!(
            arrow_type(&DataType::Decimal128(4, 1)),
            (1700, (4 << 16 | 1) + 4, -1)
        );
    }
}
