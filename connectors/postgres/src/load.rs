//! Writing Arrow batches into a new Postgres table: `CREATE TABLE` from the Arrow schema, then
//! `COPY ... FROM STDIN` in text format. Used by `fjord demo` and by tests that copy lake rows
//! into Postgres to check a federated join against Postgres's own answer.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::SinkExt;

use crate::PostgresCatalog;
use crate::error::PostgresError;
use crate::sql::{qualified_table, quote_identifier};
use crate::types::PG_TYPE_METADATA_KEY;

/// The Postgres type for a column: the field's `fjord.postgres_type` metadata if present
/// (for uuid, jsonb or numeric(p,s)), otherwise the natural type of its Arrow type.
pub fn postgres_type_for(field: &Field) -> Option<String> {
    if let Some(name) = field.metadata().get(PG_TYPE_METADATA_KEY) {
        return Some(name.clone());
    }
    Some(match field.data_type() {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time64(_) | DataType::Time32(_) => "time".into(),
        DataType::Timestamp(
            TimeUnit::Second | TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
            None,
        ) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        _ => return None,
    })
}

impl PostgresCatalog {
    /// Creates `schema.table` with the columns of `arrow_schema` (and `primary_key` if given)
    /// and loads `batches` into it in one transaction. Fails if the table exists.
    pub async fn create_table_from_batches(
        &self,
        schema: &str,
        table: &str,
        arrow_schema: &SchemaRef,
        primary_key: Option<&str>,
        batches: &[RecordBatch],
    ) -> Result<u64, PostgresError> {
        let decode = |reason: String| PostgresError::Decode {
            catalog: self.name.clone(),
            column: String::new(),
            reason,
        };
        let mut columns = Vec::new();
        for field in arrow_schema.fields() {
            let pg_type = postgres_type_for(field).ok_or_else(|| {
                decode(format!(
                    "column `{}` has type {} with no Postgres counterpart",
                    field.name(),
                    field.data_type()
                ))
            })?;
            // Types come from fjord's own metadata or the table above; they are not user text,
            // but keep them to a conservative alphabet all the same.
            if !pg_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " (),_".contains(c))
            {
                return Err(decode(format!("invalid Postgres type `{pg_type}`")));
            }
            let not_null = if field.is_nullable() { "" } else { " NOT NULL" };
            columns.push(format!(
                "{} {pg_type}{not_null}",
                quote_identifier(field.name())
            ));
        }
        if let Some(key) = primary_key {
            columns.push(format!("PRIMARY KEY ({})", quote_identifier(key)));
        }
        let target = qualified_table(schema, table);
        let mut client = self.pool.get().await?;
        client.mark_busy();
        let pool = &self.pool;
        let transaction_sql = format!(
            "BEGIN; CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {target} ({})",
            quote_identifier(schema),
            columns.join(", ")
        );
        client
            .client()
            .batch_execute(&transaction_sql)
            .await
            .map_err(|e| pool.error(e))?;
        let column_list: Vec<String> = arrow_schema
            .fields()
            .iter()
            .map(|f| quote_identifier(f.name()))
            .collect();
        let copy = format!("COPY {target} ({}) FROM STDIN", column_list.join(", "));
        let sink = client
            .client()
            .copy_in::<_, bytes::Bytes>(copy.as_str())
            .await
            .map_err(|e| pool.error(e))?;
        futures::pin_mut!(sink);
        let options = FormatOptions::default().with_display_error(true);
        for batch in batches {
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            let formatters = batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| decode(error.to_string()))?;
            for row in 0..batch.num_rows() {
                for (index, formatter) in formatters.iter().enumerate() {
                    if index > 0 {
                        buffer.put_u8(b'\t');
                    }
                    if batch.column(index).is_null(row) {
                        buffer.put_slice(b"\\N");
                    } else {
                        escape_copy_text(&formatter.value(row).to_string(), &mut buffer);
                    }
                }
                buffer.put_u8(b'\n');
                if buffer.len() > 1 << 20 {
                    sink.send(buffer.split().freeze())
                        .await
                        .map_err(|e| pool.error(e))?;
                }
            }
            if !buffer.is_empty() {
                sink.send(buffer.freeze())
                    .await
                    .map_err(|e| pool.error(e))?;
            }
        }
        let rows = sink.finish().await.map_err(|e| pool.error(e))?;
        client
            .client()
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pool.error(e))?;
        client.mark_idle();
        Ok(rows)
    }

    /// Whether `schema.table` exists.
    pub async fn table_exists(&self, schema: &str, table: &str) -> Result<bool, PostgresError> {
        let client = self.pool.get().await?;
        let row = client
            .client()
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
                 ON c.relnamespace = n.oid WHERE n.nspname = $1 AND c.relname = $2)",
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.pool.error(e))?;
        Ok(row.get(0))
    }
}

/// COPY text format: backslash, tab, newline and carriage return are escaped.
fn escape_copy_text(value: &str, out: &mut BytesMut) {
    for byte in value.bytes() {
        match byte {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            other => out.put_u8(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_control_characters() {
        let mut out = BytesMut::new();
        escape_copy_text("a\tb\\c\nd", &mut out);
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd");
    }
}
