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
