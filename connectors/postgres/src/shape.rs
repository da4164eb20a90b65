//! What fjord knows of a Postgres table's columns, and how it keeps that knowledge current
//! without a round trip before every statement.
//!
//! The first statement that names a table reads its shape (one catalog query). Later
//! statements are planned with the shape already read, and each scan built on such a reused
//! shape sends a much cheaper catalog query (the relation by oid and name, its columns' types
//! and its size), pipelined on its connection just ahead of its `COPY`: both go out together
//! and their answers come back in order. If the columns still match, the rows are read as
//! planned; if not, the cache forgets the table and the scan fails with
//! [`PostgresError::Changed`] before it yields any row, and the engine plans the statement
//! again. A statement never reads rows with columns other than the ones it was planned with.
//! Which columns are unique keys is only read with the whole shape; it only decides how a read
//! is split.
//!
//! A read of a few rows (a key lookup, an aggregate) carries its check inside its own
//! statement instead: one more column, true while every table's columns are as planned
//! ([`ShapeCheck::guard`]), on every row and on a row of its own where the read finds none.
//! That saves Postgres a second statement per read; a read that fails or finds a change
//! falls back to the separate check.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::datasource::TableType;
use parking_lot::Mutex;
use tokio_postgres::Row;

use crate::error::PostgresError;
use crate::pool::{Pool, PooledClient};
use crate::sql::quote_literal;
use crate::types::{PgColumn, PgKind};

/// A relation's columns as one text: for each column in order, its name's length in
/// characters, name, type oid, type modifier and whether it is NOT NULL. The same expression
/// reads a shape and checks it, so the two agree byte for byte. Expects the relation as `c`.
macro_rules! column_facts {
    () => {
        "COALESCE((SELECT pg_catalog.string_agg(\
           pg_catalog.length(a.attname::text)::text || ':' || a.attname::text || ':' \
           || a.atttypid::text || ':' || a.atttypmod::text || ':' || a.attnotnull::text, \
           ',' ORDER BY a.attnum) \
         FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')"
    };
}

/// A relation's facts on every row, one row per column (a table without columns gives one row
/// with NULL column facts). The tenth column says whether a valid unique index has that column
/// as its only key, so an equality on it reads at most one row. The last, on the first row
/// only (once per relation, as a wide table's would be long), is [`column_facts!`].
pub(crate) const TABLE_SHAPE: &str = concat!(
    "SELECT c.relkind::text, \
        CASE WHEN c.relkind IN ('r', 'm') \
          THEN pg_catalog.pg_relation_size(c.oid) \
               / pg_catalog.current_setting('block_size')::bigint \
          ELSE 0 END, \
        pg_catalog.current_setting('server_version_num')::int, \
        a.attname::text, a.atttypid, a.atttypmod, \
        pg_catalog.format_type(a.atttypid, a.atttypmod), \
        CASE WHEN t.typcategory = 'A' THEN t.typelem END, NOT a.attnotnull, \
        EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
          WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indnatts = 1 \
            AND i.indkey[0] = a.attnum AND i.indpred IS NULL AND i.indexprs IS NULL), \
        c.oid, c.relnamespace, \
        CASE WHEN pg_catalog.row_number() OVER (ORDER BY a.attnum) = 1 THEN ",
    column_facts!(),
    " END FROM pg_catalog.pg_class c \
 JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
 LEFT JOIN pg_catalog.pg_attribute a \
   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
 LEFT JOIN pg_catalog.pg_type t ON a.atttypid = t.oid \
 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'v', 'm', 'p', 'f') \
 ORDER BY a.attnum"
);

/// What a scan asks to confirm a shape read before: the same relation (by oid, under the same
/// name and schema) with the same columns, and its current size. Two index lookups, where
/// [`TABLE_SHAPE`] costs Postgres several times a trivial statement.
const SHAPE_CHECK: &str = "SELECT CASE WHEN c.relkind IN ('r', 'm') \
          THEN pg_catalog.pg_relation_size(c.oid) \
               / pg_catalog.current_setting('block_size')::bigint \
          ELSE 0 END, \
        a.attname::text, a.atttypid, a.atttypmod, NOT a.attnotnull \
 FROM pg_catalog.pg_class c \
 LEFT JOIN pg_catalog.pg_attribute a \
   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
 WHERE c.oid = $1 AND c.relname = $2 AND c.relnamespace = $3 \
 ORDER BY a.attnum";

/// A column as the catalog stores it: name, type oid, type modifier, nullable.
type ColumnFacts = (String, u32, i32, bool);

/// What [`TABLE_SHAPE`] tells of a relation.
#[derive(Debug, Clone)]
pub(crate) struct TableShape {
    pub(crate) columns: Vec<PgColumn>,
    /// Per column: whether it alone is a unique key.
    pub(crate) unique: Vec<bool>,
    pub(crate) table_type: TableType,
    /// Heap blocks; 0 where block ranges cannot split the relation.
    pub(crate) blocks: u64,
    /// Whether the server can split reads into block ranges (version 14 and later).
    splittable: bool,
    oid: u32,
    namespace: u32,
    facts: Vec<ColumnFacts>,
    /// The same facts as [`column_facts!`] writes them, for [`ShapeCheck::guard`].
    facts_text: String,
    /// When Postgres last confirmed these columns (read or checked), as [`Confirmed`] counts.
    confirmed: Arc<AtomicU64>,
    /// When Postgres last gave `blocks` (a read or a separate check; a statement's own guard
    /// does not give sizes), as [`Confirmed`] counts.
    sized: Arc<AtomicU64>,
}

/// Milliseconds since the first shape was read, for [`TableShape::confirmed_within`].
struct Confirmed;

impl Confirmed {
    fn now() -> u64 {
        static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        START.elapsed().as_millis() as u64
    }
}

impl TableShape {
    /// Whether Postgres confirmed these columns less than `age` ago.
    pub(crate) fn confirmed_within(&self, age: Duration) -> bool {
        Confirmed::now().saturating_sub(self.confirmed.load(Ordering::Relaxed))
            < age.as_millis() as u64
    }

    fn mark_confirmed(&self) {
        self.confirmed.store(Confirmed::now(), Ordering::Relaxed);
    }

    fn mark_sized(&self) {
        self.sized.store(Confirmed::now(), Ordering::Relaxed);
    }

    /// Whether Postgres gave `blocks` less than `age` ago.
    pub(crate) fn sized_within(&self, age: Duration) -> bool {
        Confirmed::now().saturating_sub(self.sized.load(Ordering::Relaxed)) < age.as_millis() as u64
    }
}

impl TableShape {
    /// Reads [`TABLE_SHAPE`]'s rows; `None` if there are none (no such relation).
    pub(crate) fn from_rows(rows: &[Row]) -> Option<TableShape> {
        let relation = rows.first()?;
        let relkind: String = relation.get(0);
        let blocks: i64 = relation.get(1);
        let server_version: i32 = relation.get(2);
        // No column facts at all for a table without columns.
        let described = || {
            rows.iter()
                .filter(|row| row.get::<_, Option<String>>(3).is_some())
        };
        let unique = described().map(|row| row.get::<_, bool>(9)).collect();
        let facts = described()
            .map(|row| (row.get(3), row.get(4), row.get(5), row.get(8)))
            .collect();
        let columns = described()
            .map(|row| {
                let type_oid: u32 = row.get(4);
                let typmod: i32 = row.get(5);
                let element: Option<u32> = row.get(7);
                PgColumn {
                    name: row.get(3),
                    type_name: row.get(6),
                    kind: PgKind::from_type(type_oid, typmod, element),
                    nullable: row.get(8),
                }
            })
            .collect();
        let table_type = match relkind.as_str() {
            "v" | "m" => TableType::View,
            _ => TableType::Base,
        };
        // Block ranges are read with TID range scans, which Postgres has since version 14;
        // views, partitioned and foreign tables have no blocks of their own (0 here).
        let splittable = server_version >= 140000;
        let blocks = if splittable { blocks.max(0) as u64 } else { 0 };
        Some(TableShape {
            columns,
            unique,
            table_type,
            blocks,
            splittable,
            oid: relation.get(10),
            namespace: relation.get(11),
            facts,
            facts_text: relation.get(12),
            confirmed: Arc::new(AtomicU64::new(Confirmed::now())),
            sized: Arc::new(AtomicU64::new(Confirmed::now())),
        })
    }

    /// Compares [`SHAPE_CHECK`]'s rows with this shape: `None` if the relation is gone or its
    /// columns changed, else its current size in blocks.
    fn confirm(&self, rows: &[Row]) -> Option<u64> {
        let blocks: i64 = rows.first()?.get(0);
        let facts = rows
            .iter()
            .filter_map(|row| {
                let name: Option<String> = row.get(1);
                Some((name?, row.get(2), row.get(3), row.get(4)))
            })
            .collect::<Vec<ColumnFacts>>();
        (facts == self.facts).then_some(if self.splittable {
            blocks.max(0) as u64
        } else {
            0
        })
    }
}

/// The shapes a catalog has read, by (schema, table).
#[derive(Debug, Default)]
pub(crate) struct ShapeCache {
    shapes: Mutex<HashMap<(String, String), Arc<TableShape>>>,
}

impl ShapeCache {
    pub(crate) fn get(&self, schema: &str, table: &str) -> Option<Arc<TableShape>> {
        self.shapes
            .lock()
            .get(&(schema.to_string(), table.to_string()))
            .cloned()
    }

    /// Forgets every shape; says whether there was any.
    pub(crate) fn clear(&self) -> bool {
        let mut shapes = self.shapes.lock();
        let had = !shapes.is_empty();
        shapes.clear();
        had
    }

    /// Records what was just read of a table: its shape, or that it does not exist.
    pub(crate) fn put(&self, schema: &str, table: &str, shape: Option<Arc<TableShape>>) {
        let key = (schema.to_string(), table.to_string());
        let mut shapes = self.shapes.lock();
        match shape {
            Some(shape) => shapes.insert(key, shape),
            None => shapes.remove(&key),
        };
    }
}

/// A reused shape that a scan confirms in the round trip that reads its rows.
#[derive(Debug, Clone)]
pub(crate) struct ShapeCheck {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) planned: Arc<TableShape>,
    pub(crate) cache: Arc<ShapeCache>,
}

impl ShapeCheck {
    /// A condition true while every check's table is as planned (the relation by oid, under
    /// the same name and schema, with the same columns), for a statement to select beside its
    /// own columns. It has no reference to the statement's rows, so Postgres evaluates it once
    /// per run. `None` without checks.
    pub(crate) fn guard(checks: &[ShapeCheck]) -> Option<String> {
        if checks.is_empty() {
            return None;
        }
        let tables = checks
            .iter()
            .map(|check| {
                let planned = &check.planned;
                Some(format!(
                    "(SELECT c.relname = {} AND c.relnamespace = '{}'::oid AND {} = {} \
                     FROM pg_catalog.pg_class c WHERE c.oid = '{}'::oid)",
                    quote_literal(&check.table)?,
                    planned.namespace,
                    column_facts!(),
                    quote_literal(&planned.facts_text)?,
                    planned.oid,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(format!("({}) IS TRUE", tables.join(" AND ")))
    }

    /// Records that a statement's guard found every check's table as planned.
    pub(crate) fn confirmed_by_guard(checks: &[ShapeCheck]) {
        for check in checks {
            check.planned.mark_confirmed();
        }
    }

    /// Confirms every check's table with a statement of its own: `Ok` if all are as planned.
    pub(crate) async fn confirm_all(
        checks: &[ShapeCheck],
        pool: &Pool,
        client: &mut PooledClient,
    ) -> Result<(), PostgresError> {
        Self::around(checks, pool, client, async |_| Ok(())).await
    }

    /// Runs `read` on `client` with every check's catalog query sent just ahead of it on the
    /// same connection; `read`'s result is returned only if every shape is as planned.
    pub(crate) async fn around<T>(
        checks: &[ShapeCheck],
        pool: &Pool,
        client: &mut PooledClient,
        read: impl AsyncFnOnce(&PooledClient) -> Result<T, PostgresError>,
    ) -> Result<T, PostgresError> {
        if checks.is_empty() {
            return read(client).await;
        }
        let statement = client
            .prepared(SHAPE_CHECK)
            .await
            .map_err(|e| pool.error(e))?;
        let client = &*client;
        let statement = &statement;
        let shapes = futures::future::try_join_all(checks.iter().map(|check| async move {
            client
                .client()
                .query(
                    statement,
                    &[&check.planned.oid, &check.table, &check.planned.namespace],
                )
                .await
        }));
        // Polled together, the catalog queries are written before the read's statement.
        let (shapes, read) = futures::join!(shapes, read(client));
        let shapes = shapes.map_err(|e| pool.error(e))?;
        for (check, rows) in checks.iter().zip(shapes) {
            match check.planned.confirm(&rows) {
                Some(blocks) if blocks == check.planned.blocks => {
                    check.planned.mark_confirmed();
                    check.planned.mark_sized();
                }
                Some(blocks) => {
                    check.planned.mark_confirmed();
                    // Same columns, another size: later statements split reads by it.
                    let mut current = check.planned.as_ref().clone();
                    current.blocks = blocks;
                    current.sized = Arc::new(AtomicU64::new(Confirmed::now()));
                    check
                        .cache
                        .put(&check.schema, &check.table, Some(Arc::new(current)));
                }
                None => {
                    check.cache.put(&check.schema, &check.table, None);
                    pool.table_changed();
                    return Err(PostgresError::Changed {
                        catalog: pool.catalog().to_string(),
                        table: format!("{}.{}", check.schema, check.table),
                    });
                }
            }
        }
        read
    }
}
