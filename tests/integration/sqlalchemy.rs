//! Superset's path: SQLAlchemy's stock PostgreSQL dialect (psycopg2) inspecting tables of both
//! catalogs, as Superset does when a database is added and its schemas are browsed.

use fjord_tests::{Fjord, Postgres, TEST_DEMO, test_venv};
use serde_json::Value;

async fn inspect(
    fjord: &Fjord,
    database: &str,
    schema: &str,
    table: &str,
) -> anyhow::Result<Value> {
    let venv = test_venv()?;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sqlalchemy_inspector.py");
    let url = format!(
        "postgresql+psycopg2://superset@127.0.0.1:{}/{database}",
        fjord.port()
    );
    let output = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .args([&url, schema, table])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "inspector failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlalchemy_inspector_browses_both_catalogs() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;

    let lake = inspect(&fjord, "iceberg", "data_on_eks", "cat_interactions_raw").await?;
    assert!(names(&lake["schemas"]).contains(&"data_on_eks"), "{lake}");
    assert!(
        names(&lake["tables"]).contains(&"cat_interactions_raw"),
        "{lake}"
    );
    let columns = lake["columns"].as_array().expect("columns");
    assert_eq!(columns.len(), 11, "{lake}");
    assert_eq!(columns[1]["name"], "event_time");
    assert_eq!(columns[1]["type"], "TIMESTAMP", "{lake}");
    assert_eq!(lake["count"], 20000);
    assert_eq!(lake["pk"], serde_json::json!([]));
    assert_eq!(lake["indexes"], serde_json::json!([]));

    let live = inspect(&fjord, "postgresql", "public", "cats").await?;
    assert!(names(&live["tables"]).contains(&"visitors"), "{live}");
    let columns = live["columns"].as_array().expect("columns");
    assert_eq!(columns[0]["name"], "cat_id");
    assert_eq!(columns[0]["type"], "UUID", "{live}");
    assert_eq!(columns[0]["nullable"], false);
    let weight = columns
        .iter()
        .find(|column| column["name"] == "weight_kg")
        .expect("weight_kg");
    assert_eq!(weight["type"], "NUMERIC(4, 1)", "{live}");
    assert_eq!(live["count"], 300);
    fjord.stop().await
}
