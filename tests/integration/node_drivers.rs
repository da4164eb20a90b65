//! node-postgres (`pg`), the driver of Node.js BI back ends, against fjord.

use fjord_tests::{Fjord, Postgres, TEST_DEMO, query_text};
use serde_json::Value;

/// Where the test script installed node-postgres.
pub(crate) fn node_modules() -> anyhow::Result<std::path::PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = std::path::PathBuf::from(home).join(".cache/fjord/node/node_modules");
    anyhow::ensure!(
        path.join("pg").exists(),
        "node-postgres is missing from {}: run scripts/setup-test-env",
        path.display()
    );
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_reads_queries_parameters_and_errors() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node/drivers.cjs");
    let url = format!("postgresql://analyst@127.0.0.1:{}/iceberg", fjord.port());
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(&url)
        .env("NODE_PATH", node_modules()?)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "node-postgres failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)?;

    // The same figures from Postgres itself.
    let direct = postgres.connect("workshop").await?;
    let row = direct
        .query_one(
            "SELECT count(*)::text, min(weight_kg)::text, \
             to_char((SELECT min(registered_at) FROM visitors) AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             FROM cats WHERE age > 3",
            &[],
        )
        .await?;
    let (count, weight, registered): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(result["count"], count.as_str(), "{result}");
    assert_eq!(result["weight"], weight.as_str(), "{result}");
    assert_eq!(result["arrived_is_date"], true, "{result}");
    assert_eq!(result["registered_iso"], registered.as_str(), "{result}");
    assert_eq!(
        result["fields"],
        serde_json::json!(["n", "weight", "arrived", "registered"]),
        "{result}"
    );

    let client = fjord.connect().await?;
    let count_of = |kind: &str| {
        format!(
            "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw \
             WHERE interaction_type = '{kind}' AND duration_seconds > 0"
        )
    };
    let likes = query_text(&client, &count_of("like")).await?;
    let pets = query_text(&client, &count_of("pet")).await?;
    assert_eq!(result["likes"], likes[0][0].as_str(), "{result}");
    assert_eq!(result["pets"], pets[0][0].as_str(), "{result}");
    assert_eq!(result["error_code"], "42P01", "{result}");
    assert_eq!(result["after_error"], 1, "{result}");
    fjord.stop().await
}
