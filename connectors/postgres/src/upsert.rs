//! Rows given as JSON objects written into an existing table by upsert: `INSERT ... ON CONFLICT
//! (key) DO UPDATE`. Postgres itself converts each JSON member to its column's type
//! (`jsonb_populate_recordset`), so the caller needs to know nothing of the table's types.
//! The alert rules of the ingest sidecar deliver through this.

use crate::PostgresCatalog;
use crate::error::PostgresError;
use crate::sql::{qualified_table, quote_identifier};

impl PostgresCatalog {
    /// Upserts `rows` (JSON objects, members named like the table's columns; members the table
    /// lacks are ignored) into `schema.table`, which needs a primary key or unique constraint
    /// on `key`. A later row wins over an earlier one with the same key. Returns the rows
    /// written.
    pub async fn upsert_json(
        &self,
        schema: &str,
        table: &str,
        key: &[String],
        rows: &[serde_json::Map<String, serde_json::Value>],
    ) -> Result<u64, PostgresError> {
        if rows.is_empty() {
            return Ok(0);
        }
        // The table's columns, read as every scan reads them (one prepared statement).
        let columns: Vec<String> = match self.load_columns(schema, table).await? {
            Some(shape) => shape
                .columns
                .into_iter()
                .map(|column| column.name)
                .collect(),
            None => Vec::new(),
        };
        // As Postgres would say it: undefined table, undefined column.
        let missing = |sqlstate: &str, message: String| PostgresError::Server {
            catalog: self.name.clone(),
            sqlstate: sqlstate.to_string(),
            message,
        };
        if columns.is_empty() {
            return Err(missing("42P01", format!("no table {schema}.{table}")));
        }
        if let Some(absent) = key.iter().find(|k| !columns.contains(k)) {
            return Err(missing(
                "42703",
                format!("table {schema}.{table} has no column `{absent}` (the upsert key)"),
            ));
        }
        // The last row per key; the columns any row has.
        let mut latest: Vec<&serde_json::Map<String, serde_json::Value>> = Vec::new();
        for row in rows {
            let same_key = |other: &&serde_json::Map<String, serde_json::Value>| {
                key.iter().all(|k| other.get(k) == row.get(k))
            };
            match latest.iter().position(same_key) {
                Some(at) => latest[at] = row,
                None => latest.push(row),
            }
        }
        let written: Vec<&String> = columns
            .iter()
            .filter(|column| latest.iter().any(|row| row.contains_key(column.as_str())))
            .collect();
        let list = written
            .iter()
            .map(|column| quote_identifier(column))
            .collect::<Vec<_>>()
            .join(", ");
        let target = qualified_table(schema, table);
        let conflict = key
            .iter()
            .map(|column| quote_identifier(column))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = written
            .iter()
            .filter(|column| !key.contains(column))
            .map(|column| {
                let column = quote_identifier(column);
                format!("{column} = EXCLUDED.{column}")
            })
            .collect();
        let action = if updates.is_empty() {
            "NOTHING".to_string()
        } else {
            format!("UPDATE SET {}", updates.join(", "))
        };
        let statement = format!(
            "INSERT INTO {target} ({list}) SELECT {list} FROM \
             pg_catalog.jsonb_populate_recordset(NULL::{target}, $1::text::jsonb) \
             ON CONFLICT ({conflict}) DO {action}"
        );
        let payload = serde_json::to_string(&latest).map_err(|error| PostgresError::Decode {
            catalog: self.name.clone(),
            column: String::new(),
            reason: error.to_string(),
        })?;
        let client = self.pool.get().await?;
        let written = client
            .client()
            .execute(&statement, &[&payload])
            .await
            .map_err(|e| self.pool.error(e))?;
        Ok(written)
    }
}
