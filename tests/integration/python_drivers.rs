//! Python drivers that use the binary protocol: psycopg 3 (binary cursors) and asyncpg
//! (prepared statements, its own type introspection); and the server-side cursors of psycopg2,
//! psycopg 3 and SQLAlchemy (`DECLARE` / `FETCH` / `MOVE` / `CLOSE`).

use fjord_tests::{Fjord, Postgres, TEST_DEMO, query_text, test_venv};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_read_typed_values_and_stream_through_server_cursors() -> anyhow::Result<()>
{
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let venv = test_venv()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/drivers.py");
    let url = format!("postgresql://analyst@127.0.0.1:{}/iceberg", fjord.port());
    let output = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(&url)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "drivers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)?;

    // The same figures computed by Postgres itself.
    let direct = postgres.connect("workshop").await?;
    let row = direct
        .query_one(
            "SELECT count(*), min(weight_kg)::text FROM cats WHERE age > 3",
            &[],
        )
        .await?;
    let (count, weight): (i64, String) = (row.get(0), row.get(1));
    assert_eq!(result["psycopg"]["count"], count, "{result}");
    assert_eq!(result["psycopg"]["weight"], weight.as_str(), "{result}");
    assert_eq!(result["psycopg"]["arrived_type"], "date", "{result}");
    assert_eq!(result["psycopg"]["registered_tz"], "UTC", "{result}");
    // uuid and jsonb columns are described as such and sent in their binary forms.
    let first = direct
        .query_one(
            "SELECT cat_id::text, traits::text FROM cats ORDER BY name LIMIT 1",
            &[],
        )
        .await?;
    let (cat_id, traits): (String, String) = (first.get(0), first.get(1));
    assert_eq!(result["psycopg"]["uuid_type"], "UUID", "{result}");
    assert_eq!(result["psycopg"]["jsonb_type"], "dict", "{result}");
    assert_eq!(result["psycopg"]["cat_id"], cat_id.as_str(), "{result}");
    assert_eq!(result["psycopg"]["found_by_uuid"], true, "{result}");
    assert_eq!(result["asyncpg"]["uuid_type"], "UUID", "{result}");
    assert_eq!(result["asyncpg"]["cat_id"], cat_id.as_str(), "{result}");
    assert_eq!(
        result["asyncpg"]["traits"],
        serde_json::from_str::<Value>(&traits)?,
        "{result}"
    );

    let client = fjord.connect().await?;
    let likes = query_text(
        &client,
        "SELECT count(*) FROM cat_interactions_raw WHERE interaction_type = 'like'",
    )
    .await?;
    assert_eq!(
        result["asyncpg"]["likes"].to_string(),
        likes[0][0],
        "{result}"
    );
    assert_eq!(result["asyncpg"]["weight"], weight.as_str(), "{result}");
    assert_eq!(result["asyncpg"]["date_type"], "date", "{result}");

    let all: i64 =
        query_text(&client, "SELECT count(*) FROM cat_interactions_raw").await?[0][0].parse()?;
    let positive: i64 = likes[0][0].parse()?;
    assert!(positive > 1000 && positive < all, "{positive} of {all}");
    assert_eq!(result["psycopg2_named"]["rows"], positive, "{result}");
    assert_eq!(result["psycopg2_named"]["distinct"], positive, "{result}");
    assert_eq!(result["psycopg_server"]["rows"], positive, "{result}");
    assert_eq!(
        result["psycopg_server"]["columns"],
        serde_json::json!(["event_id", "duration_seconds"]),
        "{result}"
    );
    assert_eq!(
        result["psycopg_server"]["first_duration_type"], "int",
        "{result}"
    );
    assert_eq!(result["psycopg_server"]["held_count"], all, "{result}");
    assert_eq!(result["sqlalchemy_stream"]["rows"], all, "{result}");
    fjord.stop().await
}

/// pgcli, through its own code (tests/python/pgcli_check.py): the queries behind its completions
/// and the backslash commands, in the live catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcli_completes_and_describes_tables() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let venv = test_venv()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pgcli_check.py");
    let url = format!("postgresql://analyst@127.0.0.1:{}/postgresql", fjord.port());
    let output = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(&url)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "pgcli failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        result["tables"],
        serde_json::json!([["public", "cats"], ["public", "visitors"]]),
        "{result}"
    );
    assert_eq!(
        result["completer_tables"],
        serde_json::json!(["cats", "visitors"]),
        "{result}"
    );
    assert_eq!(
        result["databases"],
        serde_json::json!(["iceberg", "postgresql"]),
        "{result}"
    );
    assert_eq!(result["search_path"][0], "public", "{result}");
    let dt = &result["dt"][0];
    assert_eq!(dt["rows"].as_array().map(Vec::len), Some(2), "{result}");
    let columns = &result["d_cats"][0]["rows"];
    let types: Vec<(&str, &str)> = columns
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| (row[0].as_str().unwrap_or(""), row[1].as_str().unwrap_or("")))
        .collect();
    assert!(types.contains(&("cat_id", "uuid")), "{types:?}");
    assert!(types.contains(&("traits", "jsonb")), "{types:?}");
    assert!(types.contains(&("weight_kg", "numeric(4,1)")), "{types:?}");

    // The query's rows are Postgres's own answer.
    let direct = postgres.connect("workshop").await?;
    let expected: Vec<Vec<String>> = direct
        .query(
            "SELECT archetype, count(*)::text FROM cats GROUP BY archetype ORDER BY archetype",
            &[],
        )
        .await?
        .iter()
        .map(|row| vec![row.get(0), row.get(1)])
        .collect();
    assert_eq!(
        result["query"][0]["rows"],
        serde_json::json!(expected),
        "{result}"
    );
    assert_eq!(
        result["query"][0]["status"],
        format!("SELECT {}", expected.len()),
        "{result}"
    );
    fjord.stop().await
}

/// PostgreSQL's JDBC driver (DBeaver's), in a JVM through JPype: the metadata calls a SQL IDE
/// makes and a prepared statement read with a fetch size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_metadata_and_fetch_size_work_as_dbeaver_uses_them() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let venv = test_venv()?;
    let jar = jdbc_driver_jar()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/jdbc_check.py");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/postgresql?user=analyst",
        fjord.port()
    );
    let output = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(&url)
        .arg(&jar)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "JDBC failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(result["product"], "PostgreSQL", "{result}");
    assert_eq!(
        result["catalogs"],
        serde_json::json!([{"TABLE_CAT": "postgresql"}]),
        "{result}"
    );
    let schemas: Vec<&str> = result["schemas"]
        .as_array()
        .expect("schemas")
        .iter()
        .filter_map(|schema| schema["TABLE_SCHEM"].as_str())
        .collect();
    assert!(schemas.contains(&"public"), "{result}");
    assert_eq!(
        result["tables"],
        serde_json::json!([
            {"TABLE_SCHEM": "public", "TABLE_NAME": "cats", "TABLE_TYPE": "TABLE"},
            {"TABLE_SCHEM": "public", "TABLE_NAME": "visitors", "TABLE_TYPE": "TABLE"}
        ]),
        "{result}"
    );
    let column = |name: &str| {
        result["columns"]
            .as_array()
            .and_then(|columns| columns.iter().find(|column| column["COLUMN_NAME"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(column("cat_id")["TYPE_NAME"], "uuid", "{result}");
    assert_eq!(column("cat_id")["IS_NULLABLE"], "NO", "{result}");
    assert_eq!(column("weight_kg")["TYPE_NAME"], "numeric", "{result}");
    assert_eq!(column("weight_kg")["COLUMN_SIZE"], "4", "{result}");
    assert_eq!(column("weight_kg")["DECIMAL_DIGITS"], "1", "{result}");
    assert_eq!(column("traits")["TYPE_NAME"], "jsonb", "{result}");
    for empty in ["primary_keys", "imported_keys", "exported_keys", "indexes"] {
        assert_eq!(result[empty], serde_json::json!([]), "{empty}: {result}");
    }
    assert!(result["type_info"].as_u64().unwrap_or(0) > 0, "{result}");
    assert_eq!(
        result["result_types"],
        serde_json::json!(["text", "numeric", "uuid", "jsonb", "date"]),
        "{result}"
    );
    // The rows read 25 at a time are Postgres's own answer.
    let direct = postgres.connect("workshop").await?;
    let names: Vec<String> = direct
        .query("SELECT name FROM cats WHERE age > 3 ORDER BY name", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(names.len() > 25, "{}", names.len());
    assert_eq!(result["names"], serde_json::json!(names), "{result}");
    // The JVM's zone came in the startup message and is the session's.
    assert_eq!(
        result["session_zone"],
        serde_json::json!(["Asia/Kolkata", "2026-01-01 17:30:00+05:30"]),
        "{result}"
    );
    fjord.stop().await
}

/// pgJDBC's jar, from Debian's libpostgresql-jdbc-java (scripts/setup-test-env installs it).
fn jdbc_driver_jar() -> anyhow::Result<std::path::PathBuf> {
    let jar = std::path::PathBuf::from("/usr/share/java/postgresql.jar");
    anyhow::ensure!(
        jar.exists(),
        "{} is missing: run scripts/setup-test-env",
        jar.display()
    );
    Ok(jar)
}
