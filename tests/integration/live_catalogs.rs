//! Catalogs are live: tables created after fjord started, by Postgres users or by another
//! Iceberg writer, are queryable at once, and schema changes are seen without a restart.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use fjord_tests::{Fjord, Postgres, query_text};
use futures::TryStreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_table_created_after_start_is_queryable_and_listed() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    // The URL form of a catalog entry, with a `${ENV}` password.
    let fjord = Fjord::start(&postgres.catalog_url_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    let before = query_text(&client, "SHOW TABLES FROM postgresql.public").await?;
    assert!(before.is_empty(), "{before:?}");

    postgres.psql_admin("workshop", "CREATE TABLE adoptions (cat_id uuid, adopted_on date); INSERT INTO adoptions VALUES ('5b0e7d3c-1f1a-4c55-9a43-8f1f2a6c1e11', '2026-10-30')")?;
    let rows = query_text(
        &client,
        "SELECT cat_id, adopted_on FROM postgresql.public.adoptions",
    )
    .await?;
    assert_eq!(
        rows,
        vec![vec![
            "5b0e7d3c-1f1a-4c55-9a43-8f1f2a6c1e11".to_string(),
            "2026-10-30".to_string()
        ]]
    );
    let tables = query_text(&client, "SHOW TABLES FROM postgresql.public").await?;
    assert_eq!(tables, vec![vec!["adoptions".to_string()]]);

    // A column added in Postgres shows up in the next statement.
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE adoptions ADD COLUMN fee numeric(6,2) DEFAULT 49.50",
    )?;
    let rows = query_text(&client, "SELECT fee FROM postgresql.public.adoptions").await?;
    assert_eq!(rows[0][0], "49.50");
    let columns = query_text(&client, "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'postgresql' AND table_name = 'adoptions' ORDER BY ordinal_position").await?;
    assert_eq!(columns.concat(), vec!["cat_id", "adopted_on", "fee"]);
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_table_written_by_another_writer_is_queryable_without_restart()
-> anyhow::Result<()> {
    let fjord = Fjord::start("").await?;
    let client = fjord.connect().await?;
    client
        .batch_execute("CREATE SCHEMA iceberg.elsewhere")
        .await?;

    // A second, independent writer on the same catalog database and warehouse.
    let config_path = fjord.directory.path().join("config.toml");
    let config = fjord_config::Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let other = fjord_engine::Engine::new(config).await?;
    let Some(fjord_catalog::CatalogHandle::Iceberg(writer)) = other.registry().get("iceberg")
    else {
        anyhow::bail!("no iceberg catalog")
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    writer
        .create_table("elsewhere", "cats_seen", &schema, &[], Default::default())
        .await?;
    // Appends rows as the other writer; returns how many were written.
    let append = |ids: Vec<i64>, names: Vec<&'static str>| {
        let (session, schema) = (other.new_session(), schema.clone());
        async move {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(names)),
                ],
            )?;
            anyhow::Ok(
                session
                    .append_batches("iceberg", "elsewhere", "cats_seen", schema, vec![batch])
                    .await?,
            )
        }
    };
    let count_and_max = "SELECT count(*), max(name) FROM iceberg.elsewhere.cats_seen";
    assert_eq!(
        append(vec![1, 2, 3], vec!["Luna", "Milo", "Loki"]).await?,
        3
    );
    let rows = query_text(&client, count_and_max).await?;
    assert_eq!(rows, vec![vec!["3".to_string(), "Milo".to_string()]]);
    // The server keeps the table it loaded while its metadata stays where it was: another
    // append moves it, and the next statement sees the new rows.
    append(vec![4], vec!["Nala"]).await?;
    let rows = query_text(&client, count_and_max).await?;
    assert_eq!(rows, vec![vec!["4".to_string(), "Nala".to_string()]]);
    let tables = query_text(&client, "SHOW TABLES FROM iceberg.elsewhere").await?;
    assert_eq!(tables, vec![vec!["cats_seen".to_string()]]);

    // The other writer replaces the table with a wider one: the new column is visible.
    writer.drop_table("elsewhere", "cats_seen").await?;
    let wider = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("archetype", DataType::Utf8, true),
    ]));
    writer
        .create_table("elsewhere", "cats_seen", &wider, &[], Default::default())
        .await?;
    let columns = query_text(&client, "SHOW COLUMNS FROM iceberg.elsewhere.cats_seen").await?;
    assert_eq!(
        columns.iter().map(|row| row[0].clone()).collect::<Vec<_>>(),
        vec!["id", "name", "archetype"]
    );
    fjord.stop().await
}

/// A prepared statement run again sees the table as it is then, not as it was when prepared
/// (a plan pins the Iceberg snapshot it read): JDBC and psycopg's automatic prepares reuse
/// statements for as long as a connection lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_sees_rows_committed_after_it_was_prepared() -> anyhow::Result<()> {
    let fjord = fjord_tests::Fjord::start("").await?;
    let client = fjord.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA iceberg.prep; \
             CREATE TABLE iceberg.prep.t AS SELECT 1 AS n",
        )
        .await?;
    let count = client
        .prepare("SELECT count(*) FROM iceberg.prep.t")
        .await?;
    let first: i64 = client.query_one(&count, &[]).await?.get(0);
    assert_eq!(first, 1);
    let writer = fjord.connect().await?;
    writer
        .batch_execute("INSERT INTO iceberg.prep.t SELECT 2 AS n")
        .await?;
    let second: i64 = client.query_one(&count, &[]).await?.get(0);
    assert_eq!(second, 2, "the second execution sees the new snapshot");
    let third: i64 = client.query_one(&count, &[]).await?.get(0);
    assert_eq!(third, 2);
    Ok(())
}

/// The rows of `statement` (prepared on both sides) for `params`, each value as text.
async fn rows_as_text(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<Vec<String>> {
    let rows = client.query(statement, params).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let id: i32 = row.get(0);
            let name: Option<String> = row.get(1);
            let born: Option<chrono::NaiveDate> = row.get(2);
            format!("{id}|{name:?}|{born:?}")
        })
        .collect())
}

/// From its second execution on, a prepared statement over a Postgres table runs the physical
/// plan it kept, with each execution's values written into the statement sent to Postgres.
/// Every value gives Postgres's own rows: NULL, quotes and backslashes, a date Postgres text
/// cannot carry the usual way (the statement then runs with its values bound first), and the
/// table changing between executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_lookup_runs_its_kept_plan_with_each_executions_values() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE kept (id int PRIMARY KEY, name text, born date, note text); \
         INSERT INTO kept SELECT g, CASE g % 4 WHEN 0 THEN 'o''brien' WHEN 1 THEN 'back\\slash' \
         WHEN 2 THEN NULL ELSE 'cat ' || g END, date '2020-01-01' + g, 'n' FROM generate_series(1, 60) AS g",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    let direct = postgres.connect("workshop").await?;
    let select = "SELECT id, name, born FROM {t} WHERE";
    let fjord_table = "postgresql.public.kept";
    let cases: Vec<(&str, Vec<Box<dyn tokio_postgres::types::ToSql + Sync>>)> = vec![
        ("id = $1", vec![Box::new(7i32)]),
        ("id = $1", vec![Box::new(8i32)]),
        ("id = $1", vec![Box::new(61i32)]),
        ("id = $1", vec![Box::new(None::<i32>)]),
        ("id = $1", vec![Box::new(1i32)]),
        ("name = $1 ORDER BY id", vec![Box::new("o'brien")]),
        ("name = $1 ORDER BY id", vec![Box::new("back\\slash")]),
        ("name = $1 ORDER BY id", vec![Box::new(None::<String>)]),
        ("name = $1 ORDER BY id", vec![Box::new("cat 3")]),
        (
            "id > $1 AND id <= $2 ORDER BY id",
            vec![Box::new(10i32), Box::new(14i32)],
        ),
        (
            "id > $1 AND id <= $2 ORDER BY id",
            vec![Box::new(58i32), Box::new(100i32)],
        ),
        (
            "born < $1 ORDER BY id",
            vec![Box::new(chrono::NaiveDate::from_ymd_opt(2020, 1, 4))],
        ),
        // Beyond year 9999: not written as a date literal, so bound before planning instead.
        (
            "born < $1 AND id < 3 ORDER BY id",
            vec![Box::new(chrono::NaiveDate::from_ymd_opt(12000, 1, 1))],
        ),
        (
            "born < $1 ORDER BY id",
            vec![Box::new(chrono::NaiveDate::from_ymd_opt(2020, 1, 3))],
        ),
    ];
    let mut prepared = std::collections::HashMap::new();
    for round in 0..3 {
        for (condition, values) in &cases {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                values.iter().map(|value| value.as_ref()).collect();
            if !prepared.contains_key(condition) {
                let sql = format!("{} {condition}", select.replace("{t}", fjord_table));
                let ours = client.prepare(&sql).await?;
                let theirs = direct
                    .prepare(&format!("{} {condition}", select.replace("{t}", "kept")))
                    .await?;
                prepared.insert(*condition, (ours, theirs));
            }
            let (ours, theirs) = &prepared[condition];
            let expected = rows_as_text(&direct, theirs, &params).await?;
            let actual = rows_as_text(&client, ours, &params).await?;
            assert_eq!(
                actual, expected,
                "round {round}: {condition} with {values:?}"
            );
        }
        if round == 1 {
            // A column the statements do not read changes type, and rows change: the kept
            // plans' scans see the new shape, and the statements are planned again.
            postgres.psql_admin(
                "workshop",
                "ALTER TABLE kept ALTER COLUMN note TYPE varchar(10); \
                 UPDATE kept SET name = upper(name) WHERE id % 2 = 0",
            )?;
        }
    }
    Ok(())
}

/// A kept plan's lookup goes to Postgres as one statement text with its value beside it, which
/// each connection prepares once. The key's type changing under it, and keys of every size,
/// still give Postgres's own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lookup_follows_its_key_changing_type() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE keyed (k int PRIMARY KEY, label text); \
         INSERT INTO keyed SELECT g, 'label ' || g FROM generate_series(1, 50) AS g",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    let sql = "SELECT label FROM postgresql.public.keyed WHERE k = $1";
    let label = async |statement: &tokio_postgres::Statement,
                       key: &(dyn tokio_postgres::types::ToSql + Sync)|
           -> anyhow::Result<Option<String>> {
        let rows = client.query(statement, &[key]).await?;
        anyhow::ensure!(rows.len() <= 1, "one row at most: {rows:?}");
        Ok(rows.first().map(|row| row.get(0)))
    };
    let lookup = client.prepare(sql).await?;
    for key in [1i32, 2, 3, 50, 51, 3] {
        let expected = (key <= 50).then(|| format!("label {key}"));
        assert_eq!(label(&lookup, &key).await?, expected, "key {key}");
    }
    // Postgres saw one text for all those values.
    let direct = postgres.connect("workshop").await?;
    let sent: Vec<String> = direct
        .query(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'fjord' AND query LIKE '%keyed%'",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        !sent.is_empty() && sent.iter().all(|query| query.contains("= $1")),
        "{sent:?}"
    );

    postgres.psql_admin(
        "workshop",
        "ALTER TABLE keyed ALTER COLUMN k TYPE bigint; \
         INSERT INTO keyed VALUES (5000000000, 'large'), (-5000000000, 'negative'); \
         UPDATE keyed SET label = upper(label) WHERE k = 3",
    )?;
    for key in [3i32, 4, 3] {
        let expected = if key == 3 {
            "LABEL 3".to_string()
        } else {
            format!("label {key}")
        };
        assert_eq!(
            label(&lookup, &key).await?,
            Some(expected),
            "key {key} after the change"
        );
    }
    // Prepared again, the statement takes bigints, and values past int4 find their rows.
    let wide = client.prepare(sql).await?;
    for (key, expected) in [
        (5_000_000_000i64, Some("large")),
        (-5_000_000_000, Some("negative")),
        (7, Some("label 7")),
        (5_000_000_001, None),
        (5_000_000_000, Some("large")),
    ] {
        assert_eq!(
            label(&wide, &key).await?,
            expected.map(str::to_string),
            "key {key}"
        );
    }
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_follows_a_postgres_column_change() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE shifting (id int PRIMARY KEY, v int, note text); \
         INSERT INTO shifting VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c')",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    let total = client
        .prepare("SELECT count(*) FROM postgresql.public.shifting WHERE md5(v::text) <> md5('2') AND id > $1")
        .await?;
    // md5 is computed in fjord, so the values of v are read.
    let first: i64 = client.query_one(&total, &[&0i32]).await?.get(0);
    assert_eq!(first, 2);

    // The column's type changes, the statement's result type does not: the next execution
    // reads the new type (rows read with the old plan would be 8-byte values taken as 4).
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE shifting ALTER COLUMN v TYPE bigint USING v::bigint * 1000000000",
    )?;
    // A statement planned from text is planned with the columns read before (no round trip);
    // its scan confirms them as it reads and sees the change, and the statement is planned
    // again with the new type.
    let simple = query_text(
        &client,
        "SELECT count(*), sum(v) FROM postgresql.public.shifting WHERE md5(v::text) <> ''",
    )
    .await?;
    assert_eq!(
        simple,
        vec![vec!["3".to_string(), "6000000000".to_string()]]
    );
    let wider: i64 = client.query_one(&total, &[&0i32]).await?.get(0);
    assert_eq!(wider, 3);
    let again: i64 = client.query_one(&total, &[&1i32]).await?.get(0);
    assert_eq!(again, 2, "each execution uses its own parameter");

    // A column the statement reads is gone: the error names it.
    postgres.psql_admin("workshop", "ALTER TABLE shifting DROP COLUMN v")?;
    let error = client
        .query_one(&total, &[&0i32])
        .await
        .expect_err("v no longer exists");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| error.to_string());
    assert!(message.contains('v'), "{message}");

    // Another column changing leaves the statement's answers right.
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE shifting ADD COLUMN v bigint; UPDATE shifting SET v = id * 10; \
         ALTER TABLE shifting ALTER COLUMN note TYPE varchar(5)",
    )?;
    let back: i64 = client.query_one(&total, &[&0i32]).await?.get(0);
    assert_eq!(back, 3);

    // The catalog views describe the table as it is now, not as it was last read.
    postgres.psql_admin("workshop", "ALTER TABLE shifting ADD COLUMN added date")?;
    let columns = query_text(
        &client,
        "SELECT column_name FROM information_schema.columns \
         WHERE table_catalog = 'postgresql' AND table_name = 'shifting' ORDER BY ordinal_position",
    )
    .await?;
    assert_eq!(
        columns.concat(),
        vec!["id", "note", "v", "added"],
        "information_schema after ADD COLUMN"
    );
    query_text(&client, "SELECT count(*) FROM postgresql.public.shifting").await?;
    postgres.psql_admin("workshop", "ALTER TABLE shifting ADD COLUMN more text")?;
    let described = query_text(&client, "DESCRIBE postgresql.public.shifting").await?;
    let names: Vec<&str> = described.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        ["id", "note", "v", "added", "more"],
        "DESCRIBE after ADD COLUMN"
    );
    fjord.stop().await
}

/// Clients that do not name their statements send the same text again and again; fjord runs
/// it again from the plan it made the first time (see the engine's `kept_plans`). The same text
/// must still follow every change: the table's columns and their types, its rows, and the
/// session's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_query_text_again_follows_every_change() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE again (id int PRIMARY KEY, v int, price numeric(6,2)); \
         INSERT INTO again VALUES (1, 10, 1.25), (2, 20, 2.50), (3, 30, NULL); \
         CREATE SCHEMA other; CREATE TABLE other.again (id int, v int, price numeric(6,2)); \
         INSERT INTO other.again VALUES (4, 70, 7.00)",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    client.batch_execute("USE postgresql.public").await?;
    let rows = "SELECT * FROM again WHERE id < 5 ORDER BY id";
    let totals = "SELECT count(*), sum(v), sum(price) FROM again WHERE id < 5";
    // Each text through both protocols: a simple query, and an unnamed extended statement.
    let both = async |sql: &str| -> anyhow::Result<Vec<Vec<String>>> {
        let simple = query_text(&client, sql).await?;
        let extended = client.query(sql, &[]).await?;
        assert_eq!(
            extended.len(),
            simple.len(),
            "{sql}: rows over both protocols"
        );
        assert_eq!(
            extended.first().map(|row| row.len()),
            simple.first().map(|row| row.len()),
            "{sql}: columns over both protocols"
        );
        Ok(simple)
    };
    let text = |rows: &[&[&str]]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|row| row.iter().map(|value| value.to_string()).collect())
            .collect()
    };
    for _ in 0..3 {
        assert_eq!(
            both(rows).await?,
            text(&[
                &["1", "10", "1.25"],
                &["2", "20", "2.50"],
                &["3", "30", "NULL"]
            ])
        );
        assert_eq!(both(totals).await?, text(&[&["3", "60", "3.75"]]));
    }

    // Rows change: read afresh, never kept.
    postgres.psql_admin("workshop", "UPDATE again SET v = v + 1 WHERE id = 1")?;
    assert_eq!(both(totals).await?, text(&[&["3", "61", "3.75"]]));

    // A column is added: `*` shows it.
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE again ADD COLUMN note text DEFAULT 'n'",
    )?;
    for _ in 0..2 {
        assert_eq!(
            both(rows).await?,
            text(&[
                &["1", "11", "1.25", "n"],
                &["2", "20", "2.50", "n"],
                &["3", "30", "NULL", "n"]
            ])
        );
    }

    // Types change, one only in its scale: the values and sums come in the new types.
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE again ALTER COLUMN v TYPE bigint USING v::bigint * 1000000000; \
         ALTER TABLE again ALTER COLUMN price TYPE numeric(8,4); \
         UPDATE again SET price = 0.0001 WHERE id = 3",
    )?;
    for _ in 0..2 {
        assert_eq!(
            both(totals).await?,
            text(&[&["3", "61000000000", "3.7501"]])
        );
        assert_eq!(both(rows).await?[2], ["3", "30000000000", "0.0001", "n"]);
    }

    // A column is renamed: statements Postgres had prepared for the old name give way.
    let lookup = "SELECT * FROM again WHERE id = 2";
    for _ in 0..3 {
        assert_eq!(
            both(lookup).await?,
            text(&[&["2", "20000000000", "2.5000", "n"]])
        );
    }
    postgres.psql_admin("workshop", "ALTER TABLE again RENAME COLUMN note TO remark")?;
    for _ in 0..2 {
        assert_eq!(
            both(lookup).await?,
            text(&[&["2", "20000000000", "2.5000", "n"]])
        );
        assert_eq!(both(rows).await?[0], ["1", "11000000000", "1.2500", "n"]);
    }

    // The session's schema changes: the same name is another table.
    client.batch_execute("USE postgresql.other").await?;
    assert_eq!(both(totals).await?, text(&[&["1", "70", "7.00"]]));
    assert_eq!(both(rows).await?, text(&[&["4", "70", "7.00"]]));

    // The table goes: the error names it, and the text is not answered from a kept plan.
    postgres.psql_admin("workshop", "DROP TABLE other.again")?;
    let error = client
        .simple_query(totals)
        .await
        .expect_err("the table is gone");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| error.to_string());
    assert!(message.contains("again"), "{message}");
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_checks_its_table_inside_its_own_statement() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    // Names that the check's literals must carry exactly: quotes, a semicolon, a comma, colons
    // (the check's own separator) and letters beyond ASCII.
    postgres.psql_admin(
        "workshop",
        r#"CREATE TABLE "Odd 'keyed'; tåble" ("K'ey" int PRIMARY KEY, "naïve, label" text NOT NULL, "x:1:2" numeric(8,3));
           INSERT INTO "Odd 'keyed'; tåble" SELECT g, 'label ' || g, g / 8.0 FROM generate_series(1, 20) AS g"#,
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    client.batch_execute("USE postgresql.public").await?;
    let lookup = |key: i32| format!(r#"SELECT * FROM "Odd 'keyed'; tåble" WHERE "K'ey" = {key}"#);
    // The column names and rows of a simple query, which names its columns even without rows.
    let read = async |sql: &str| -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for message in client.simple_query(sql).await? {
            match message {
                tokio_postgres::SimpleQueryMessage::RowDescription(described) => {
                    columns = described.iter().map(|c| c.name().to_string()).collect();
                }
                tokio_postgres::SimpleQueryMessage::Row(row) => rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                ),
                _ => {}
            }
        }
        Ok((columns, rows))
    };
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    for (key, x) in [
        (1, "0.125"),
        (2, "0.250"),
        (99, ""),
        (20, "2.500"),
        (3, "0.375"),
    ] {
        let (columns, rows) = read(&lookup(key)).await?;
        assert_eq!(columns, names(&["K'ey", "naïve, label", "x:1:2"]));
        let expected = if x.is_empty() {
            vec![]
        } else {
            vec![names(&[&key.to_string(), &format!("label {key}"), x])]
        };
        assert_eq!(rows, expected, "key {key}");
    }
    // The last read confirmed the table with the column it selected beside the rows, even
    // finding none: had the check found a difference, or had there been no row to carry it,
    // a separate check would have followed.
    let (_, rows) = read(&lookup(97)).await?;
    assert!(rows.is_empty());
    let direct = postgres.connect("workshop").await?;
    let last_read = async || -> anyhow::Result<String> {
        Ok(direct
            .query_one(
                "SELECT query FROM pg_stat_activity \
                 WHERE application_name = 'fjord' AND query LIKE '%tåble%' \
                 ORDER BY state_change DESC LIMIT 1",
                &[],
            )
            .await?
            .get(0))
    };
    let sent = last_read().await?;
    assert!(sent.contains("AS fjord_read"), "{sent}");

    // A column added: a lookup that finds nothing still shows it, one that finds a row has it.
    postgres.psql_admin(
        "workshop",
        r#"ALTER TABLE "Odd 'keyed'; tåble" ADD COLUMN "new; one" int DEFAULT 7"#,
    )?;
    let (columns, rows) = read(&lookup(98)).await?;
    assert_eq!(
        (columns, rows.len()),
        (names(&["K'ey", "naïve, label", "x:1:2", "new; one"]), 0)
    );
    let (_, rows) = read(&lookup(2)).await?;
    assert_eq!(rows, vec![names(&["2", "label 2", "0.250", "7"])]);
    // A scale change: the values come with the new scale.
    postgres.psql_admin(
        "workshop",
        r#"ALTER TABLE "Odd 'keyed'; tåble" ALTER COLUMN "x:1:2" TYPE numeric(10,5)"#,
    )?;
    for _ in 0..2 {
        let (_, rows) = read(&lookup(3)).await?;
        assert_eq!(rows, vec![names(&["3", "label 3", "0.37500", "7"])]);
    }
    let sent = last_read().await?;
    assert!(sent.contains("AS fjord_read"), "{sent}");

    // The table grows to some 3,000 blocks (pages a tenth full), enough for ranges. A lookup's
    // own check reads no size, so until a lookup checks apart (every few seconds) a read is
    // planned with the size last read: one statement.
    postgres.psql_admin(
        "workshop",
        r#"ALTER TABLE "Odd 'keyed'; tåble" SET (fillfactor = 10);
           INSERT INTO "Odd 'keyed'; tåble" SELECT g, 'label ' || g, g / 8.0 FROM generate_series(21, 40000) AS g"#,
    )?;
    client
        .batch_execute("SET datafusion.execution.target_partitions = 4")
        .await?;
    let split = async || -> anyhow::Result<bool> {
        let plan = read(
            r#"EXPLAIN SELECT count(*) FROM "Odd 'keyed'; tåble" WHERE md5("naïve, label") <> ''"#,
        )
        .await?
        .1
        .concat()
        .join("\n");
        assert!(plan.contains("PostgresScanExec"), "{plan}");
        Ok(plan.contains("ctid >= '("))
    };
    let (_, rows) = read(&lookup(30000)).await?;
    assert_eq!(rows.len(), 1);
    assert!(!split().await?, "planned before any read of the new size");
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    let (_, rows) = read(&lookup(30001)).await?;
    assert_eq!(
        rows,
        vec![names(&["30001", "label 30001", "3750.12500", "7"])]
    );
    let sent = last_read().await?;
    assert!(!sent.contains("AS fjord_read"), "checked apart: {sent}");
    assert!(
        split().await?,
        "the lookup's separate check read the new size"
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_planned_to_read_nothing_still_sees_the_table_as_it_is() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE settled (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO settled VALUES (1, 10), (2, 20)",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    client.batch_execute("USE postgresql.public").await?;
    let one = |value: &str| vec![vec![value.to_string()]];
    assert_eq!(
        query_text(&client, "SELECT count(*) FROM settled").await?,
        one("2")
    );
    // Prepared now, run after the table changes below.
    let early = client.prepare("SELECT * FROM settled WHERE id = 1").await?;
    let columns = async |sql: &str| -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for message in client.simple_query(sql).await? {
            if let tokio_postgres::SimpleQueryMessage::RowDescription(columns) = message {
                names = columns.iter().map(|c| c.name().to_string()).collect();
            }
        }
        Ok(names)
    };

    // `LIMIT 0` is how many clients ask for a table's columns: a plan that reads no row.
    postgres.psql_admin("workshop", "ALTER TABLE settled ADD COLUMN w int")?;
    assert_eq!(
        columns("SELECT * FROM settled LIMIT 0").await?,
        ["id", "v", "w"]
    );

    // A NOT NULL column lets the planner answer `IS NULL` without reading; not once it is gone.
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE settled ALTER COLUMN v DROP NOT NULL; INSERT INTO settled VALUES (3, NULL, 5)",
    )?;
    assert_eq!(
        query_text(&client, "SELECT id FROM settled WHERE v IS NULL").await?,
        one("3")
    );

    // A statement prepared now is described with the table as it is now, and its rows fit.
    // (A table that Postgres confirmed within the last second is described as it was then;
    // a change in that second is caught when the statement runs, as at the end.)
    postgres.psql_admin(
        "workshop",
        "ALTER TABLE settled ADD COLUMN x text DEFAULT 'x'",
    )?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let now = client.prepare("SELECT * FROM settled WHERE id = 3").await?;
    let names: Vec<&str> = now.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "v", "w", "x"]);
    let row = client.query_one(&now, &[]).await?;
    assert_eq!(
        (
            row.get::<_, i32>(0),
            row.get::<_, i32>(2),
            row.get::<_, String>(3)
        ),
        (3, 5, "x".to_string())
    );
    let described = client.prepare("SELECT * FROM settled LIMIT 0").await?;
    assert_eq!(described.columns().len(), 4);

    // Queries inside COPY and DECLARE are described to no client: their columns may follow
    // the table, and their types follow analysis (a bigint's sum is a numeric).
    let copy = async |sql: &str| -> anyhow::Result<String> {
        let chunks: Vec<_> = client.copy_out(sql).await?.try_collect().await?;
        let bytes: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.to_vec()).collect();
        Ok(String::from_utf8(bytes)?)
    };
    assert_eq!(
        copy("COPY (SELECT sum(v::int8) AS total FROM settled) TO STDOUT").await?,
        "30\n"
    );
    postgres.psql_admin("workshop", "ALTER TABLE settled ADD COLUMN y int DEFAULT 9")?;
    assert_eq!(
        copy("COPY (SELECT * FROM settled WHERE id = 1) TO STDOUT").await?,
        "1\t10\t\\N\tx\t9\n"
    );
    client
        .batch_execute("BEGIN; DECLARE totals CURSOR FOR SELECT sum(v::int8) FROM settled")
        .await?;
    assert_eq!(
        query_text(&client, "FETCH ALL FROM totals").await?,
        one("30")
    );
    client.batch_execute("COMMIT").await?;

    // One prepared before the changes was described with two columns: like Postgres, fjord
    // refuses to send it rows of four, rather than rows its client would misread.
    let refused = async |statement: &tokio_postgres::Statement| {
        let error = client
            .query(statement, &[])
            .await
            .expect_err("the described columns changed");
        let error = error.as_db_error().expect("a server error");
        assert_eq!(
            (error.code().code(), error.message()),
            ("0A000", "cached plan must not change result type")
        );
    };
    refused(&early).await;

    // So does one whose columns keep their number but not their types: a client told `v` is
    // an int4 would read an int8's eight bytes as four.
    let typed = client
        .prepare("SELECT id, v FROM settled WHERE id = 1")
        .await?;
    let row = client.query_one(&typed, &[]).await?;
    assert_eq!(row.get::<_, i32>(1), 10);
    postgres.psql_admin("workshop", "ALTER TABLE settled ALTER COLUMN v TYPE bigint")?;
    refused(&typed).await;
    // Prepared again, it is described and answered with the new type.
    let typed = client
        .prepare("SELECT id, v FROM settled WHERE id = 1")
        .await?;
    assert_eq!(
        typed.columns()[1].type_(),
        &tokio_postgres::types::Type::INT8
    );
    let row = client.query_one(&typed, &[]).await?;
    assert_eq!(row.get::<_, i64>(1), 10);
    fjord.stop().await
}
