//! psql's meta-commands, through the real psql binary: fjord answers the catalog queries psql
//! sends as PostgreSQL would for the session's current catalog.

use fjord_tests::{Fjord, Postgres, TEST_DEMO};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_describe_the_current_catalog() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;

    let (ok, tables, stderr) = fjord.psql(&["-c", "\\dt"]).await?;
    assert!(ok, "{stderr}");
    for table in [
        "cafe_orders_raw",
        "cat_interactions_raw",
        "cat_wellness_iot_raw",
        "visitor_checkins_raw",
    ] {
        assert!(tables.contains(table), "\\dt lists {table}:\n{tables}");
    }
    assert!(
        !tables.contains("cats"),
        "the lake session does not list Postgres tables:\n{tables}"
    );

    // Connecting to database `postgresql` browses that catalog.
    let (ok, text, stderr) = fjord
        .psql_in("postgresql", &["-c", "\\dt", "-c", "\\d cats"])
        .await?;
    assert!(ok, "{stderr}");
    assert!(text.contains("cats") && text.contains("visitors"), "{text}");
    assert!(text.contains("Table \"public.cats\""), "{text}");
    assert!(text.contains("archetype"), "{text}");

    let (ok, schemas, stderr) = fjord.psql(&["-c", "\\dn"]).await?;
    assert!(ok, "{stderr}");
    assert!(schemas.contains("data_on_eks"), "{schemas}");

    let (ok, databases, stderr) = fjord.psql(&["-c", "\\l"]).await?;
    assert!(ok, "{stderr}");
    assert!(
        databases.contains("iceberg") && databases.contains("postgresql"),
        "every catalog is a database:\n{databases}"
    );

    let (ok, described, stderr) = fjord.psql(&["-c", "\\d cat_interactions_raw"]).await?;
    assert!(ok, "{stderr}");
    assert!(
        described.contains("interaction_type") && described.contains("_kafka_offset"),
        "{described}"
    );

    let (ok, detailed, stderr) = fjord.psql(&["-c", "\\d+ cat_interactions_raw"]).await?;
    assert!(ok, "{stderr}");
    assert!(
        detailed.contains("Storage") && detailed.contains("timestamp with time zone"),
        "{detailed}"
    );

    // Empty answers, not errors.
    for command in ["\\dv", "\\df"] {
        let (ok, _, stderr) = fjord.psql(&["-c", command]).await?;
        assert!(ok, "{command}: {stderr}");
    }

    // \x and \timing are client-side, and work on fjord's rows.
    let (ok, expanded, stderr) = fjord
        .psql(&[
            "-c",
            "\\x",
            "-c",
            "\\timing",
            "-c",
            "SELECT 1 AS a, 'b' AS b",
        ])
        .await?;
    assert!(ok, "{stderr}");
    assert!(
        expanded.contains("-[ RECORD 1 ]") && expanded.contains("Time:"),
        "{expanded}"
    );

    // \gdesc describes a query's columns without running it; psql names each type through
    // format_type with the OID as text. (psql takes it from a file, not from -c.)
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        "SELECT count(*) AS n, sum(duration_seconds::bigint) AS total, max(event_time) AS latest \
         FROM cat_interactions_raw \\gdesc\n\
         SELECT total_amount FROM cafe_orders_raw \\gdesc\n",
    )?;
    let script_path = script.path().to_string_lossy().into_owned();
    let (ok, described, stderr) = fjord.psql(&["-At", "-F", "|", "-f", &script_path]).await?;
    assert!(ok, "{stderr}");
    assert_eq!(
        described.trim_end(),
        "n|bigint\ntotal|numeric\nlatest|timestamp with time zone\ntotal_amount|numeric(10,2)",
        "{described}"
    );

    // What drivers ask on connect.
    let (ok, facts, stderr) = fjord
        .psql(&[
            "-At",
            "-F",
            "|",
            "-c",
            "SELECT pg_catalog.version(), current_database(), current_schema(), current_user",
        ])
        .await?;
    assert!(ok, "{stderr}");
    assert!(facts.starts_with("PostgreSQL 16.6 (fjord "), "{facts}");
    assert!(
        facts.trim_end().ends_with("|iceberg|data_on_eks|tester"),
        "{facts}"
    );
    fjord.stop().await
}
