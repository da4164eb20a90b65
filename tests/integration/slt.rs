//! SQL behaviour in sqllogictest files (`tests/slt/*.slt`), run over the Postgres wire protocol
//! against fjord with the demo world and a live Postgres catalog. Errors are matched as
//! `SQLSTATE: message`, so a file can pin the code a client gets.

use std::path::PathBuf;

use async_trait::async_trait;
use fjord_tests::{Fjord, Postgres, TEST_DEMO};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{Client, SimpleQueryMessage};

/// A Postgres-protocol error as `SQLSTATE: message`.
#[derive(Debug)]
struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

struct FjordDb {
    client: Client,
}

#[async_trait]
impl AsyncDB for FjordDb {
    type Error = WireError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WireError> {
        let messages =
            self.client
                .simple_query(sql)
                .await
                .map_err(|error| match error.as_db_error() {
                    Some(db) => WireError(format!("{}: {}", db.code().code(), db.message())),
                    None => WireError(error.to_string()),
                })?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut saw_rows = false;
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(description) => {
                    saw_rows = true;
                    columns = description.len();
                }
                SimpleQueryMessage::Row(row) => {
                    saw_rows = true;
                    columns = row.len();
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(value) => value.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(count) => affected = count,
                _ => {}
            }
        }
        if saw_rows {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; columns],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(affected))
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "fjord"
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    // Every type the connector maps, with values that test the edges.
    postgres.psql_admin(
        "workshop",
        r#"CREATE TABLE all_types (
             id int2 PRIMARY KEY, i4 int4, i8 int8, n numeric(10,3), n_free numeric, r real, d double precision,
             b bool, t text, v varchar(20), c char(3), day date, tod time, ts timestamp, tstz timestamptz,
             span interval, u uuid, j json, jb jsonb, bytes bytea, ints int4[], texts text[], money_value money);
           INSERT INTO all_types VALUES
             (1, -2147483648, 9223372036854775807, -1234567.891, 3.14159265358979, 1.5, -2.25e-10,
              true, 'O''Malley; DROP TABLE x', 'varchar', 'ab', '2026-10-31', '13:14:15.123456',
              '2026-10-31 23:59:59.999999', '2026-10-31 23:59:59+02', '1 year 2 mons 3 days 04:05:06',
              '5b0e7d3c-1f1a-4c55-9a43-8f1f2a6c1e11', '{"a": [1, 2]}', '{"b": true}', '\x00ff10',
              '{1,NULL,3}', '{"x","y z"}', 12.34),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL);
           CREATE TABLE "Mixed Case" ("Weird ""Column""" text, "ünïcödé" int);
           INSERT INTO "Mixed Case" VALUES ('quoted', 7);
           CREATE VIEW available_cats AS SELECT 1 AS one;"#,
    )?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let port = fjord.port();
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "slt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .slt files in {}",
        directory.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let mut runner = sqllogictest::Runner::new(move || async move {
            let (client, connection) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=slt dbname=iceberg"),
                tokio_postgres::NoTls,
            )
            .await
            .map_err(|error| WireError(error.to_string()))?;
            tokio::spawn(connection);
            Ok(FjordDb { client })
        });
        if let Err(error) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{error}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
    fjord.stop().await
}
