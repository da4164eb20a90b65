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
