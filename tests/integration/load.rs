//! `fjord load`: Parquet files become an Iceberg table (what the benchmark runner loads TPC-H
//! with), visible to a running server without a restart.

use std::process::Command;

use datafusion::prelude::SessionContext;

use crate::process::{Serve, fjord_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_creates_an_iceberg_table_from_parquet_files() -> anyhow::Result<()> {
    let serve = Serve::start("")?;
    let files = tempfile::tempdir()?;
    // Two Parquet files with DataFusion's own writer: decimals, dates and text survive.
    let context = SessionContext::new();
    for (part, range) in [(1, "1, 600"), (2, "601, 1000")] {
        let path = files.path().join(format!("orders-{part}.parquet"));
        context
            .sql(&format!(
                "COPY (SELECT value AS o_orderkey, CAST(value AS DECIMAL(15,2)) / 4 AS o_totalprice, \
                 DATE '1995-01-01' + CAST(value AS INT) AS o_orderdate, 'clerk#' || value AS o_clerk \
                 FROM generate_series({range})) TO '{}' STORED AS PARQUET",
                path.display()
            ))
            .await?
            .collect()
            .await?;
    }
    let output = Command::new(fjord_binary())
        .args(["--log", "warn", "load", "--config"])
        .arg(serve.config_path())
        .args(["--table", "iceberg.bench.orders"])
        .arg(files.path().join("orders-1.parquet"))
        .arg(files.path().join("orders-2.parquet"))
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1000");

    let (ok, text) = serve.psql(
        "host=127.0.0.1 user=analyst dbname=iceberg",
        None,
        "SELECT count(*), sum(o_totalprice), max(o_orderdate), min(o_clerk) FROM bench.orders",
    )?;
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "1000|125125.000000|1997-09-27|clerk#1");

    // The files' NOT NULL columns stay required in the table: psql's \d says so, and a null is
    // refused with Postgres's error however the row was made, with nothing written.
    let psql = |sql: &str| serve.psql("host=127.0.0.1 user=analyst dbname=iceberg", None, sql);
    let client = serve.connect("analyst", "").await?;
    let (ok, text) = psql("\\d bench.orders")?;
    assert!(ok, "{text}");
    let not_null = text
        .lines()
        .filter(|line| line.ends_with("|not null|"))
        .count();
    assert_eq!(not_null, 4, "{text}");
    for insert in [
        "INSERT INTO bench.orders VALUES (NULL, 1.5, DATE '2000-01-01', 'x')",
        "INSERT INTO bench.orders VALUES (1001, 1.5, DATE '2000-01-01', 'x'), \
         (1002, 1.5, DATE '2000-01-01', NULL)",
        "INSERT INTO bench.orders (o_orderkey, o_totalprice, o_orderdate) \
         VALUES (1003, 1.5, DATE '2000-01-01')",
        "INSERT INTO bench.orders SELECT o_orderkey + 1000, o_totalprice, o_orderdate, \
         CASE WHEN o_orderkey = 7 THEN NULL ELSE o_clerk END FROM bench.orders",
    ] {
        let error = client.batch_execute(insert).await.expect_err(insert);
        let error = error.as_db_error().expect(insert);
        assert_eq!(error.code().code(), "23502", "{insert}: {error}");
        assert!(
            error
                .message()
                .ends_with("of relation \"orders\" violates not-null constraint"),
            "{insert}: {error}"
        );
    }
    let (ok, text) = psql("SELECT count(*) FROM bench.orders")?;
    assert!(ok && text.trim() == "1000", "{text}");
    // A table made by CREATE TABLE AS has optional columns, as in Postgres.
    let (ok, text) = psql(
        "CREATE TABLE bench.orders_copy AS SELECT * FROM bench.orders; \
         INSERT INTO bench.orders_copy VALUES (NULL, NULL, NULL, NULL); \
         SELECT count(*) FROM bench.orders_copy",
    )?;
    assert!(ok, "{text}");
    assert_eq!(text.lines().last(), Some("1001"), "{text}");

    // A second load of the same table is refused: nothing is appended twice.
    let again = Command::new(fjord_binary())
        .args(["--log", "warn", "load", "--config"])
        .arg(serve.config_path())
        .args(["--table", "iceberg.bench.orders"])
        .arg(files.path().join("orders-1.parquet"))
        .output()?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    Ok(())
}
