//! Reading large Postgres tables in parallel: block ranges over several connections, all on one
//! exported snapshot, so the result is exactly one `SELECT`'s even while others write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fjord_tests::{Fjord, Postgres, query_text};

/// 400,000 rows of about 100 bytes, pages half full: some 10,000 heap blocks, enough for four
/// ranges. The free half keeps updated rows on their page (HOT updates), so the first row stays
/// in the first range and the last row in the last.
const BIG_TABLE: &str = "CREATE TABLE ledger (id int PRIMARY KEY, amount bigint NOT NULL, \
     label text, at timestamptz) WITH (fillfactor = 50); \
     INSERT INTO ledger SELECT g, 1000, repeat(md5(g::text), 2), \
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' \
     FROM generate_series(1, 400000) AS g; \
     CREATE VIEW ledger_view AS SELECT * FROM ledger";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_table_is_read_in_ranges_on_one_snapshot() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", BIG_TABLE)?;
    postgres.psql_admin("workshop", "VACUUM ANALYZE ledger")?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect_to("postgresql").await?;
    client
        .batch_execute("SET datafusion.execution.target_partitions = 4")
        .await?;

    // EXPLAIN shows one statement per range; a LIMIT, a view and a small table use one.
    // Rows read into fjord (here for a function Postgres is not trusted to compute alike) come
    // in ranges; an aggregate Postgres can compute alone is sent whole.
    let plan = query_text(
        &client,
        "EXPLAIN SELECT sum(amount) FROM public.ledger WHERE md5(label) <> ''",
    )
    .await?;
    let plan = plan.concat().join("\n");
    assert!(plan.contains("partitions=4 (one snapshot)"), "{plan}");
    assert!(
        plan.contains("ctid < '(") && plan.contains("ctid >= '("),
        "{plan}"
    );
    for (sql, why) in [
        ("EXPLAIN SELECT * FROM public.ledger LIMIT 5", "a LIMIT"),
        ("EXPLAIN SELECT amount FROM public.ledger_view", "a view"),
        (
            "EXPLAIN SELECT sum(amount) FROM public.ledger",
            "an aggregate pushed whole",
        ),
        (
            "EXPLAIN SELECT * FROM public.ledger WHERE id = 5",
            "a key lookup Postgres expects one row from",
        ),
    ] {
        let plan = query_text(&client, sql).await?.concat().join("\n");
        assert!(plan.contains("PostgresScanExec"), "{plan}");
        assert!(
            !plan.contains("ctid"),
            "{why} is read in one statement:\n{plan}"
        );
    }

    // The same rows as Postgres gives, column by column.
    let check = "SELECT count(*)::text, sum(id)::text, sum(amount)::text, \
                 sum(length(label))::text, min(at)::text, max(at)::text FROM public.ledger";
    let direct = postgres.connect("workshop").await?;
    direct.batch_execute("SET TimeZone = 'UTC'").await?;
    let expected = direct.query_one(check, &[]).await?;
    let expected: Vec<String> = (0..6).map(|index| expected.get(index)).collect();
    let rows = query_text(&client, check).await?;
    assert_eq!(rows, vec![expected]);

    // Transfers between the first and the last row keep the total at 400,000,000. Rows read at
    // different moments would see some transfers half-applied; one snapshot never does.
    let writing = Arc::new(AtomicBool::new(true));
    let transfers = Arc::new(AtomicU64::new(0));
    // Four writers, each moving amounts between a row near the start and one near the end.
    let mut writers = Vec::new();
    for pair in 1..=4i32 {
        let writing = writing.clone();
        let transfers = transfers.clone();
        let direct = postgres.connect("workshop").await?;
        writers.push(tokio::spawn(async move {
            let (low, high) = (pair, 400_001 - pair);
            let mut step: i64 = 0;
            while writing.load(Ordering::Relaxed) {
                step += 1;
                let (from, to) = if step % 2 == 0 {
                    (low, high)
                } else {
                    (high, low)
                };
                direct
                    .execute(
                        "UPDATE ledger SET amount = amount + CASE WHEN id = $1 THEN -7 ELSE 7 END \
                         WHERE id IN ($1, $2)",
                        &[&from, &to],
                    )
                    .await?;
                transfers.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let totals = "SELECT sum(amount), count(*) FROM public.ledger WHERE md5(label) <> ''";
    for _ in 0..30 {
        let rows = query_text(&client, totals).await?;
        assert_eq!(
            rows,
            vec![vec!["400000000".to_string(), "400000".to_string()]],
            "a parallel read saw a transfer half-applied"
        );
    }
    writing.store(false, Ordering::Relaxed);
    for writer in writers {
        writer.await??;
    }
    assert!(
        transfers.load(Ordering::Relaxed) > 20,
        "the writer ran while fjord read"
    );

    // Every range's connection goes back to the pool: no transaction is left open.
    let open = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'fjord' AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await?;
    assert_eq!(open.get::<_, i64>(0), 0);

    // The text read in ranges 30 times above, after a column it reads changes type: a split
    // read is planned again (its table was confirmed only when it was planned), never run from
    // a plan kept with the old type.
    postgres.psql_admin(
        "workshop",
        "DROP VIEW ledger_view; ALTER TABLE ledger ALTER COLUMN amount TYPE numeric(20,2)",
    )?;
    let rows = query_text(&client, totals).await?;
    assert_eq!(
        rows,
        vec![vec!["400000000.00".to_string(), "400000".to_string()]]
    );

    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_values_cannot_change_the_statement() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    // A schema, table and columns whose names hold quotes, a semicolon, a backslash, spaces,
    // mixed case and non-ASCII letters, and values that look like SQL.
    postgres.psql_admin(
        "workshop",
        r#"CREATE SCHEMA "Sch""ema; --";
           CREATE TABLE "Sch""ema; --"."ta""ble;\x" ("i""d" int, "Näme; DROP" text, "back\slash" text);
           INSERT INTO "Sch""ema; --"."ta""ble;\x" VALUES
             (1, 'O''Malley''; DROP TABLE keep; --', 'a\b'),
             (2, E'line\nbreak', '$$dollar$$'),
             (3, '%_wild', NULL);
           CREATE TABLE keep (id int); INSERT INTO keep VALUES (1);"#,
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect_to("postgresql").await?;
    let table = r#""Sch""ema; --"."ta""ble;\x""#;

    let rows = query_text(
        &client,
        &format!(r#"SELECT "i""d", "Näme; DROP", "back\slash" FROM {table} ORDER BY 1"#),
    )
    .await?;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0][1], "O'Malley'; DROP TABLE keep; --");
    assert_eq!(rows[0][2], "a\\b");
    assert_eq!(rows[1][1], "line\nbreak");

    // Filters with such values are pushed into Postgres (EXPLAIN shows them quoted) and match
    // exactly the rows they name.
    for (filter, expected) in [
        (r#""Näme; DROP" = 'O''Malley''; DROP TABLE keep; --'"#, "1"),
        (r#""back\slash" = 'a\b'"#, "1"),
        (r#""back\slash" = '$$dollar$$'"#, "2"),
        (r#""Näme; DROP" = '%_wild'"#, "3"),
        (r#""Näme; DROP" LIKE '%''; DROP%'"#, "1"),
    ] {
        let sql = format!(r#"SELECT "i""d" FROM {table} WHERE {filter}"#);
        let plan = query_text(&client, &format!("EXPLAIN {sql}"))
            .await?
            .concat()
            .join("\n");
        assert!(
            plan.contains("PostgresScanExec") && plan.contains(" WHERE "),
            "{filter} is pushed down:\n{plan}"
        );
        let rows = query_text(&client, &sql).await?;
        assert_eq!(rows, vec![vec![expected.to_string()]], "{filter}");
    }

    // Nothing was dropped or changed in Postgres.
    let direct = postgres.connect("workshop").await?;
    let kept: i64 = direct
        .query_one("SELECT count(*) FROM keep", &[])
        .await?
        .get(0);
    assert_eq!(kept, 1);
    fjord.stop().await
}
