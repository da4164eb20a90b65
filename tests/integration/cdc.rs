//! Change data capture: Debezium's real PostgreSQL connector streams a live database's changes
//! into Kafka (tansu), `fjord ingest` lands them in change logs, and fjord serve's current-state
//! tables match the source tables row for row afterwards.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use fjord_tests::kafka::{DebeziumRelay, Kafka};
use fjord_tests::{Fjord, Postgres, query_text};

use crate::ingest::start_sidecar;

/// The scenario's master data, plus a table with a composite key.
const SCHEMA_SQL: &str = "
CREATE TABLE cats (cat_id uuid PRIMARY KEY, name text, age int, archetype text, coat_color text,
                   status text, arrived_on date, weight_kg numeric(4,1), traits jsonb,
                   notes text);
CREATE TABLE visitors (visitor_id uuid PRIMARY KEY, name text, email text, archetype text,
                       registered_at timestamptz);
CREATE TABLE sponsorships (visitor_id uuid, cat_id uuid, since date, monthly numeric(6,2),
                           PRIMARY KEY (visitor_id, cat_id));
INSERT INTO cats
SELECT md5('cat' || i)::uuid, 'Cat ' || i, i % 17,
       (ARRAY['Maine Coon','Siamese','Tabby','Bengal'])[1 + i % 4],
       (ARRAY['black','white','ginger','grey'])[1 + i % 4], 'available',
       DATE '2025-01-01' + i, (2 + i % 60 / 10.0)::numeric(4,1),
       jsonb_build_object('shy', i % 2 = 0, 'toys', jsonb_build_array('mouse', i % 5))
FROM generate_series(1, 300) AS i;
-- Large enough for Postgres to store out of line (TOAST): an update that leaves it unchanged
-- does not put it in the WAL, and Debezium sends a placeholder instead.
UPDATE cats SET notes = (SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 400) AS g)
 WHERE age % 2 = 0;
INSERT INTO visitors
SELECT md5('visitor' || i)::uuid, 'Visitor ' || i, 'v' || i || '@example.com',
       (ARRAY['potential_adopter','casual_visitor','family','cat_lover'])[1 + i % 4],
       TIMESTAMPTZ '2026-01-01 09:00:00.123456+00' + i * INTERVAL '1 hour 1.000001 second'
FROM generate_series(1, 60) AS i;
INSERT INTO sponsorships
SELECT md5('visitor' || (1 + i % 60))::uuid, md5('cat' || i)::uuid, DATE '2026-02-01' + i,
       (5 + i % 20)::numeric(6,2)
FROM generate_series(1, 40) AS i;
";

/// Changes made while the connector streams: updates, key-only deletes (Postgres's default
/// replica identity), re-inserted keys, a primary-key change, several changes of one row in one
/// transaction, NULLs and nested JSON.
const CHANGES_SQL: &str = "
UPDATE cats SET status = 'adopted', weight_kg = weight_kg + 0.5 WHERE age % 3 = 0;
DELETE FROM cats WHERE age % 7 = 1;
INSERT INTO cats
SELECT md5('cat' || i)::uuid, 'Kitten ' || i, 0, 'Tabby', NULL, 'available', DATE '2026-11-01',
       1.2, '{\"vet\": {\"checked\": true}}'
FROM generate_series(301, 340) AS i;
BEGIN;
UPDATE cats SET name = 'Renamed once' WHERE cat_id = md5('cat2')::uuid;
UPDATE cats SET name = 'Renamed twice', traits = NULL WHERE cat_id = md5('cat2')::uuid;
DELETE FROM cats WHERE cat_id = md5('cat4')::uuid;
INSERT INTO cats (cat_id, name, age, status) VALUES (md5('cat4')::uuid, 'Back again', 9, 'available');
COMMIT;
UPDATE cats SET notes = 'short now' WHERE cat_id = md5('cat10')::uuid;
UPDATE cats SET notes = NULL WHERE cat_id = md5('cat12')::uuid;
UPDATE cats SET age = age + 1 WHERE cat_id IN (md5('cat10')::uuid, md5('cat12')::uuid, md5('cat14')::uuid);
UPDATE cats SET cat_id = md5('moved' || age)::uuid WHERE cat_id IN (md5('cat5')::uuid, md5('cat7')::uuid);
UPDATE visitors SET email = upper(email), registered_at = registered_at + INTERVAL '1 day'
 WHERE archetype = 'family';
DELETE FROM visitors WHERE name LIKE 'Visitor 1_';
DELETE FROM sponsorships WHERE since < DATE '2026-02-10';
INSERT INTO sponsorships VALUES (md5('visitor1')::uuid, md5('cat300')::uuid, DATE '2026-11-20', 12.5);
UPDATE sponsorships SET monthly = monthly * 2 WHERE since > DATE '2026-03-01';
";

/// (table, ordered columns as Postgres reads them, as fjord reads them, key) compared between
/// the two, as text.
const TABLES: [(&str, &str, &str, &str); 3] = [
    (
        "cats",
        "cat_id, name, age, archetype, coat_color, status, arrived_on, weight_kg, traits, notes",
        "cat_id, name, age, archetype, coat_color, status, arrived_on, weight_kg, traits, notes",
        "cat_id",
    ),
    (
        "visitors",
        "visitor_id, name, email, archetype, registered_at",
        "visitor_id, name, email, archetype, registered_at",
        "visitor_id",
    ),
    (
        "sponsorships",
        "visitor_id, cat_id, since, monthly",
        "visitor_id, cat_id, since, monthly",
        "visitor_id, cat_id",
    ),
];

fn config(kafka: &Kafka) -> String {
    let mut text = crate::ingest::sidecar_toml(kafka, "fjord-cdc");
    for (table, _, _, _) in TABLES {
        text.push_str(&format!(
            "\n[ingest.pipelines.{table}]\ntopics = [\"workshop.public.{table}\"]\n\
             table = \"shelter.{table}\"\nformat = \"debezium\"\n\
             [ingest.pipelines.{table}.commit]\ninterval = \"300ms\"\nidle = \"100ms\"\n"
        ));
    }
    // A rule over a change log: an alert for each update that leaves a cat adopted.
    text.push_str(
        "\n[ingest.rules.adoptions]\nsql = \"SELECT cat_id, name, 'ADOPTED' AS alert_type FROM cats \
         WHERE _cdc_op = 'u' AND status = 'adopted'\"\nkey = \"cat_id\"\nkafka_topic = \"cat-adoptions\"\n",
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_changes_land_and_the_current_state_matches_postgres() -> Result<()> {
    fjord_tests::init_logging();
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", SCHEMA_SQL)?;
    let kafka = Kafka::start().await?;
    for (table, _, _, _) in TABLES {
        kafka
            .create_topic(&format!("workshop.public.{table}"), 2)
            .await?;
    }
    kafka.create_topic("cat-adoptions", 1).await?;
    let fjord = Fjord::start("").await?;
    let config_path = fjord.directory.path().join("ingest.toml");
    std::fs::write(&config_path, config(&kafka))?;

    let mut relay = DebeziumRelay::start(
        &postgres,
        "workshop",
        &["public.cats", "public.visitors", "public.sponsorships"],
        "workshop",
        &kafka,
    )?;
    relay.wait_ready(Duration::from_secs(240)).await?;
    let sidecar = start_sidecar(&config_path, &[]).await?;
    postgres.psql_admin("workshop", CHANGES_SQL)?;

    let source = postgres.connect("workshop").await?;
    source.batch_execute("SET TIME ZONE 'UTC'").await?;
    let lake = fjord.connect().await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    for (table, source_columns, lake_columns, key) in TABLES {
        let want = query_text(
            &source,
            &format!("SELECT {source_columns} FROM {table} ORDER BY {key}"),
        )
        .await?;
        let lake_sql = format!("SELECT {lake_columns} FROM iceberg.shelter.{table} ORDER BY {key}");
        let mut last;
        loop {
            relay.check_alive()?;
            match query_text(&lake, &lake_sql).await {
                Ok(got) if got == want => break,
                Ok(got) => {
                    let first_difference = want
                        .iter()
                        .zip(&got)
                        .find(|(want, got)| want != got)
                        .map(|(want, got)| format!("postgres {want:?} vs fjord {got:?}"));
                    last = format!(
                        "{} rows in postgres, {} in fjord; {}",
                        want.len(),
                        got.len(),
                        first_difference.unwrap_or_else(|| "rows missing at the end".into())
                    );
                }
                Err(error) => last = error.to_string(),
            }
            if Instant::now() > deadline {
                bail!("shelter.{table} never matched postgres: {last}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // The change log holds every kind of event, the key-only deletes and the tombstones.
    let count = |sql: String| {
        let lake = &lake;
        async move {
            let rows = query_text(lake, &sql).await?;
            Ok::<i64, anyhow::Error>(rows[0][0].parse()?)
        }
    };
    for op in ["r", "c", "u", "d"] {
        let n = count(format!(
            "SELECT count(*) FROM iceberg.shelter.cats_changelog WHERE _cdc_op = '{op}'"
        ))
        .await?;
        assert!(n > 0, "no `{op}` events in the change log");
    }
    let key_only = count(
        "SELECT count(*) FROM iceberg.shelter.cats_changelog \
         WHERE _cdc_op = 'd' AND _cdc_lsn IS NOT NULL AND name IS NULL"
            .into(),
    )
    .await?;
    assert!(key_only > 0, "no key-only delete events");
    let tombstones = count(
        "SELECT count(*) FROM iceberg.shelter.cats_changelog WHERE _cdc_op = 'd' AND _cdc_lsn IS NULL"
            .into(),
    )
    .await?;
    assert!(tombstones > 0, "no tombstones");
    let positions = count(
        "SELECT count(*) FROM iceberg.shelter.cats_changelog \
         WHERE _cdc_op <> 'd' AND (_cdc_lsn IS NULL OR _cdc_txid IS NULL OR _cdc_source_ts IS NULL)"
            .into(),
    )
    .await?;
    assert_eq!(positions, 0, "changes without their source position");
    // Unchanged out-of-line values arrived as Debezium's placeholder; the current state (compared
    // above) shows the real values.
    let placeholders = count(
        "SELECT count(*) FROM iceberg.shelter.cats_changelog \
         WHERE notes = '__debezium_unavailable_value'"
            .into(),
    )
    .await?;
    assert!(placeholders > 0, "no update left a TOASTed value out");
    // Nothing was rejected.
    let dead = query_text(&lake, "SELECT count(*) FROM iceberg.shelter.dead_letters").await;
    if let Ok(rows) = dead {
        assert_eq!(rows[0][0], "0", "dead letters: {rows:?}");
    }
    // The current-state tables are listed beside their change logs, typed from the schemas.
    let tables = query_text(&lake, "SHOW TABLES FROM iceberg.shelter").await?;
    let names: Vec<&str> = tables
        .iter()
        .map(|row| row[row.len() - 1].as_str())
        .collect();
    for name in [
        "cats",
        "cats_changelog",
        "visitors",
        "sponsorships_changelog",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let types = query_text(
        &lake,
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_catalog = 'iceberg' AND table_schema = 'shelter' AND table_name = 'cats' \
         ORDER BY ordinal_position",
    )
    .await?;
    let type_of = |column: &str| {
        types
            .iter()
            .find(|row| row[0] == column)
            .map(|row| row[1].clone())
            .unwrap_or_default()
    };
    assert_eq!(types.len(), 10, "{types:?}");
    assert!(type_of("arrived_on").contains("Date"), "{types:?}");
    assert!(
        type_of("weight_kg").contains("Decimal128(4, 1)"),
        "{types:?}"
    );

    // The rule saw the change events as the change log has them: one alert per update to an
    // adopted cat, each named by the event's position.
    let updates = query_text(
        &lake,
        "SELECT _kafka_partition, _kafka_offset FROM iceberg.shelter.cats_changelog \
         WHERE _cdc_op = 'u' AND status = 'adopted'",
    )
    .await?;
    assert!(updates.len() >= 10, "{updates:?}");
    let mut want: Vec<String> = updates
        .iter()
        .map(|row| format!("workshop.public.cats-{}-{}", row[0], row[1]))
        .collect();
    want.sort();
    let alerts = tokio::task::block_in_place(|| {
        crate::alerts::read_alerts(&kafka, "cat-adoptions", want.len(), Duration::from_secs(2))
    })?;
    let mut got: Vec<String> = alerts
        .iter()
        .map(|(key, alert)| {
            assert_eq!(alert["alert_type"], "ADOPTED", "{alert}");
            assert_eq!(alert["key"].as_str(), Some(key.as_str()), "{alert}");
            let id = alert["alert_id"].as_str().unwrap_or_default();
            id.rsplit('/').next().unwrap_or_default().to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, want);

    sidecar.stop().await?;
    Ok(())
}
