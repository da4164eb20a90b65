//! The wire protocol as drivers use it: extended queries with parameters, binary results,
//! per-session settings, streaming, SQLSTATEs.

use fjord_tests::{Fjord, TEST_DEMO, query_text, sqlstate};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_queries_take_typed_parameters_and_return_binary_rows() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    let statement = client
        .prepare(
            "SELECT interaction_type, count(*) AS n, max(event_time) AS latest FROM cat_interactions_raw \
             WHERE interaction_type = $1 AND duration_seconds > $2 GROUP BY interaction_type",
        )
        .await?;
    assert_eq!(statement.params().len(), 2);
    let rows = client.query(&statement, &[&"like", &100i32]).await?;
    assert_eq!(rows.len(), 1);
    let kind: &str = rows[0].get(0);
    let count: i64 = rows[0].get(1);
    let latest: chrono::DateTime<chrono::Utc> = rows[0].get(2);
    assert_eq!(kind, "like");
    assert!(count > 0);
    assert!(
        latest
            < chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")?
                .with_timezone(&chrono::Utc)
    );
    // The same count through the simple protocol.
    let simple = query_text(&client, "SELECT count(*) FROM cat_interactions_raw WHERE interaction_type = 'like' AND duration_seconds > 100").await?;
    assert_eq!(simple[0][0], count.to_string());

    // Ten or more parameters keep their order ($10 after $9).
    let sql = "SELECT $1::bigint + $2::bigint + $3::bigint + $4::bigint + $5::bigint + $6::bigint + $7::bigint + $8::bigint + $9::bigint + $10::bigint * 100";
    let values: Vec<i64> = (1..=10).collect();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        values.iter().map(|v| v as _).collect();
    let row = client.query_one(sql, &params).await?;
    assert_eq!(row.get::<_, i64>(0), 45 + 1000);

    // A parameter beside an interval is a float8, as Postgres infers it.
    let scaled = client
        .prepare("SELECT CAST(interval '1 day' * $1 AS text), CAST($2 * interval '1 hour' AS text)")
        .await?;
    assert_eq!(
        scaled.params(),
        [
            tokio_postgres::types::Type::FLOAT8,
            tokio_postgres::types::Type::FLOAT8
        ]
    );
    let row = client.query_one(&scaled, &[&2.5f64, &-3f64]).await?;
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, &str>(1)),
        ("2 days 12:00:00", "-03:00:00")
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_the_sessions_first_settings() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let connect = |options: &str| {
        let url = format!(
            "host=127.0.0.1 port={} user=tester dbname=iceberg options='{options}'",
            fjord.port()
        );
        async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            anyhow::Ok(client)
        }
    };
    // libpq's `options` (PGOPTIONS): `-c name=value` and `--name=value`, escaped spaces kept.
    let client = connect(
        r"-c TimeZone=Europe/Oslo --search_path=data_on_eks -c application_name=night\\ batch",
    )
    .await?;
    assert_eq!(
        query_text(
            &client,
            "SELECT current_setting('TimeZone'), current_schema(), current_setting('application_name'), \
             TIMESTAMPTZ '2026-01-01 12:00:00+00'"
        )
        .await?[0],
        ["Europe/Oslo", "data_on_eks", "night batch", "2026-01-01 13:00:00+01"]
    );
    // A setting fjord cannot honour ends the connection with PostgreSQL's code, as SET does.
    for (options, code) in [
        ("-c DateStyle=SQL", "0A000"),
        ("-c TimeZone=Mars/Olympus", "22023"),
        ("-c extra_float_digits=9", "22023"),
        ("-x", "42601"),
    ] {
        let error = connect(options).await.expect_err(options);
        let code_seen = error
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|error| error.code())
            .map(|code| code.code().to_string());
        assert_eq!(code_seen.as_deref(), Some(code), "{options}: {error}");
    }
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_per_connection() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let first = fjord.connect().await?;
    let second = fjord.connect().await?;
    first
        .batch_execute(
            "SET application_name = 'dashboard'; SET datafusion.execution.batch_size = 17",
        )
        .await?;
    assert_eq!(
        query_text(&first, "SHOW application_name").await?[0][0],
        "dashboard"
    );
    assert_eq!(
        query_text(&second, "SHOW application_name").await?[0][0],
        ""
    );
    // current_setting() reads the same per-session values, and knows what it does not know.
    assert_eq!(
        query_text(
            &first,
            "SELECT current_setting('application_name'), current_setting('nope', true) IS NULL"
        )
        .await?[0],
        ["dashboard", "t"]
    );
    assert_eq!(
        query_text(&second, "SELECT current_setting('application_name')").await?[0][0],
        ""
    );
    let error = second
        .simple_query("SELECT current_setting('no_such_setting')")
        .await
        .expect_err("unknown setting");
    assert_eq!(sqlstate(&error).as_deref(), Some("42704"));
    assert_eq!(
        query_text(&first, "SHOW datafusion.execution.batch_size").await?[0][1],
        "17"
    );
    assert_eq!(
        query_text(&second, "SHOW datafusion.execution.batch_size").await?[0][1],
        "8192"
    );

    // USE changes where unqualified names resolve, for that session only.
    first
        .batch_execute("CREATE SCHEMA iceberg.scratch; USE iceberg.scratch")
        .await?;
    let error = first
        .simple_query("SELECT count(*) FROM cat_interactions_raw")
        .await
        .expect_err("not in scratch");
    assert_eq!(sqlstate(&error).as_deref(), Some("42P01"));
    assert_eq!(
        query_text(&second, "SELECT count(*) FROM cat_interactions_raw").await?[0][0],
        "20000"
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stream_before_the_result_is_complete() -> anyhow::Result<()> {
    let fjord = Fjord::start("").await?;
    let (client, socket) = fjord.connect_abortable().await?;
    // Ten billion rows cannot be computed before sending: the first ones arriving at all shows
    // that results stream, in the extended protocol...
    let rows = client
        .query_raw("SELECT value FROM range(10000000000)", Vec::<i64>::new())
        .await?;
    futures::pin_mut!(rows);
    for expected in 0..1000i64 {
        let row = rows.next().await.expect("a row")?;
        assert_eq!(row.get::<_, i64>(0), expected);
    }
    // Hang up: fjord stops computing the rest.
    socket.abort();
    drop(client);
    // ...and in the simple protocol, through psql's cursor-less fetch of a LIMITed stream.
    let (ok, output, stderr) = fjord
        .psql(&["-At", "-c", "SELECT value FROM range(10000000000) LIMIT 3"])
        .await?;
    assert!(ok, "{stderr}");
    assert_eq!(output, "0\n1\n2\n");
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_real_sqlstates() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    let cases = [
        (
            "SELECT * FROM iceberg.data_on_eks.no_such_table",
            "42P01",
            "no_such_table",
        ),
        ("SELEC 1", "42601", "syntax"),
        (
            "SELECT no_such_column FROM cat_interactions_raw",
            "42703",
            "no_such_column",
        ),
        ("SHOW TABLES FROM nowhere.public", "3D000", "nowhere"),
        (
            "SHOW TABLES FROM iceberg.no_such_schema",
            "3F000",
            "no_such_schema",
        ),
        ("SELECT 1/0", "22012", "division by zero"),
        ("SHOW no_such_setting", "42704", "no_such_setting"),
    ];
    for (sql, code, mention) in cases {
        let error = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&error).as_deref(), Some(code), "{sql}: {error:?}");
        let message = error.as_db_error().expect("db error").message().to_string();
        assert!(message.contains(mention), "{sql}: {message}");
    }
    // psql shows the code too.
    let (ok, _, stderr) = fjord
        .psql(&["-v", "VERBOSITY=verbose", "-c", "SELECT * FROM nope"])
        .await?;
    assert!(!ok);
    assert!(stderr.contains("42P01"), "{stderr}");
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_long_queries_with_57014() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await?;
    let error = client
        .simple_query(
            "SELECT count(*) FROM cat_interactions_raw a, cat_interactions_raw b, cat_interactions_raw c \
             WHERE a.duration_seconds + b.duration_seconds = c.duration_seconds",
        )
        .await
        .expect_err("the query outlives its timeout");
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"), "{error:?}");
    assert!(
        error
            .as_db_error()
            .expect("db error")
            .message()
            .contains("statement timeout"),
        "{error:?}"
    );
    // Short queries still run, and RESET removes the limit.
    assert_eq!(
        query_text(&client, "SELECT count(*) FROM cat_interactions_raw").await?[0][0],
        "20000"
    );
    client.batch_execute("RESET statement_timeout").await?;
    assert_eq!(
        query_text(&client, "SHOW statement_timeout").await?[0][0],
        "0"
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_limited_execute_fetches_a_huge_result_in_pieces() -> anyhow::Result<()> {
    let fjord = Fjord::start("").await?;
    let mut client = fjord.connect().await?;
    let transaction = client.transaction().await?;
    // A portal over ten billion rows, read 1000 at a time: only what is asked for is computed.
    let portal = transaction
        .bind("SELECT value FROM range(10000000000)", &[])
        .await?;
    let mut next = 0i64;
    for _ in 0..5 {
        let rows = transaction.query_portal(&portal, 1000).await?;
        assert_eq!(rows.len(), 1000);
        for row in rows {
            assert_eq!(row.get::<_, i64>(0), next);
            next += 1;
        }
    }
    transaction.rollback().await?;
    assert_eq!(query_text(&client, "SELECT 1").await?[0][0], "1");
    fjord.stop().await
}

/// Ten million rows read through a portal in pieces of 10,000 (what JDBC's fetch size and
/// psycopg's `itersize` do): fjord's memory stays flat, because only the rows asked for are
/// computed and encoded. Prints fjord's peak resident memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_million_rows_fetched_in_pieces_keep_memory_bounded() -> anyhow::Result<()> {
    let serve = crate::process::Serve::start("")?;
    let peak = |pid: u32| -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse::<u64>()?
            / 1024)
    };
    let mut client = serve.connect("analyst", "").await?;
    let before = peak(serve.child.id())?;
    let transaction = client.transaction().await?;
    let portal = transaction
        .bind(
            "SELECT value, 'cat-' || value AS name, value * 0.5 AS half FROM range(10000000)",
            &[],
        )
        .await?;
    let mut rows = 0u64;
    let mut checksum = 0i64;
    loop {
        let piece = transaction.query_portal(&portal, 10_000).await?;
        if piece.is_empty() {
            break;
        }
        for row in &piece {
            checksum += row.get::<_, i64>(0);
        }
        rows += piece.len() as u64;
    }
    transaction.commit().await?;
    let after = peak(serve.child.id())?;
    eprintln!(
        "10M rows in pieces of 10,000: fjord peak RSS {before} MiB before, {after} MiB after"
    );
    assert_eq!(rows, 10_000_000);
    assert_eq!(checksum, 10_000_000 * 9_999_999 / 2);
    // The whole result is about 350 MB as Arrow and more as Postgres text: a peak far below
    // that shows it was never held at once.
    assert!(
        after < before + 150,
        "peak RSS grew from {before} MiB to {after} MiB"
    );
    Ok(())
}

/// Statements that read no table are planned once per session and run again; nothing they
/// return may go stale: not the clock, not random numbers, not session settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_plans_of_constant_statements_never_go_stale() -> anyhow::Result<()> {
    let fjord = Fjord::start("").await?;
    let client = fjord.connect().await?;
    let prepared = client
        .prepare("SELECT 20 + 22 AS answer, upper('ok') AS status")
        .await?;
    for _ in 0..3 {
        let row = client.query_one(&prepared, &[]).await?;
        assert_eq!(row.get::<_, i64>(0), 42);
        assert_eq!(row.get::<_, &str>(1), "OK");
        assert_eq!(query_text(&client, "SELECT 20 + 22").await?[0][0], "42");
    }

    // The clock and random numbers are evaluated on every run, in both protocols.
    let clock = client.prepare("SELECT now()::text").await?;
    let first: String = client.query_one(&clock, &[]).await?.get(0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second: String = client.query_one(&clock, &[]).await?.get(0);
    assert_ne!(first, second);
    let first = query_text(&client, "SELECT now()::text").await?;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_ne!(first, query_text(&client, "SELECT now()::text").await?);
    let random = (
        query_text(&client, "SELECT random()").await?,
        query_text(&client, "SELECT random()").await?,
    );
    assert_ne!(random.0, random.1);

    // Settings changed between two runs of the same text apply to the second.
    let sql = "SELECT current_schema(), arrow_cast(0, 'Timestamp(Second, Some(\"UTC\"))')";
    let before = query_text(&client, sql).await?;
    client
        .batch_execute("SET search_path = elsewhere; SET TIME ZONE 'Europe/Oslo'")
        .await?;
    let after = query_text(&client, sql).await?;
    assert_eq!(before[0], ["data_on_eks", "1970-01-01 00:00:00+00"]);
    assert_eq!(after[0], ["elsewhere", "1970-01-01 01:00:00+01"]);
    // A setting that planning reads: the reused plan must be dropped.
    // (Decimal literals are exact numerics, as in Postgres, unless a session asks otherwise.)
    let sum = "SELECT 0.1 + 0.2";
    assert_eq!(query_text(&client, sum).await?[0][0], "0.3");
    client
        .batch_execute("SET datafusion.sql_parser.parse_float_as_decimal = false")
        .await?;
    assert_eq!(query_text(&client, sum).await?[0][0], "0.30000000000000004");
    fjord.stop().await
}

/// Unaliased result columns are named as PostgreSQL names them (clients show and key rows by
/// these names), checked against a real PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_columns_are_named_as_postgres_names_them() -> anyhow::Result<()> {
    let postgres = fjord_tests::Postgres::start()?;
    let fjord = Fjord::start("").await?;
    let fjord_client = fjord.connect().await?;
    let postgres_client = postgres.connect("postgres").await?;
    let statements = [
        "SELECT 1",
        "SELECT upper('x'), 'a' || 'b', CASE WHEN true THEN 1 END, 1::text",
        "SELECT a, count(*), sum(a) AS total, max(a) FROM (VALUES (1), (2)) v(a) GROUP BY a ORDER BY a",
        "SELECT coalesce(NULL, 1), length('abc'), now()::date",
        "SELECT 1 UNION ALL SELECT 2",
        "SELECT DISTINCT lower('A') LIMIT 1",
        "SELECT (SELECT 1 AS x), (SELECT 2), CAST('1' AS integer), DATE '2026-11-01', 2.5::numeric",
        "SELECT x::bigint, v.x + 1, -x, v.* FROM (VALUES (1)) v(x)",
        "SELECT EXTRACT(year FROM DATE '2026-11-01'), ARRAY[1, 2], 'a' LIKE 'a', NOT true",
        // Repeated names, which DataFusion alone refuses.
        "SELECT 1, 1::text, (SELECT 1), (SELECT 1), count(*), count(*) FROM (VALUES (1)) v(x)",
    ];
    for sql in statements {
        let names = |statement: &tokio_postgres::Statement| -> Vec<String> {
            statement
                .columns()
                .iter()
                .map(|column| column.name().to_string())
                .collect()
        };
        let expected = names(&postgres_client.prepare(sql).await?);
        let described = names(&fjord_client.prepare(sql).await?);
        assert_eq!(described, expected, "{sql}");
        // The simple protocol's row description says the same.
        let messages = fjord_client.simple_query(sql).await?;
        let columns: Vec<String> = messages
            .iter()
            .find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::RowDescription(columns) => Some(
                    columns
                        .iter()
                        .map(|c| c.name().to_string())
                        .collect::<Vec<_>>(),
                ),
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .map(|c| c.name().to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        assert_eq!(columns, expected, "{sql}");
    }
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_types_and_time_zone_text_match_postgres() -> anyhow::Result<()> {
    let postgres = fjord_tests::Postgres::start()?;
    let fjord = Fjord::start("").await?;
    let fjord_client = fjord.connect().await?;
    let postgres_client = postgres.connect("postgres").await?;
    // Result column types, as a driver reads them from the row description.
    let typed = [
        "SELECT 1",
        "SELECT -7 AS x, (3), 2147483648",
        "SELECT CASE WHEN true THEN 1 ELSE 0 END, CASE WHEN false THEN 1 END",
        "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(id, name)",
        "SELECT x FROM (SELECT 2 AS x UNION ALL SELECT 3) s ORDER BY 1",
        "SELECT count(*), sum(x) FROM (SELECT 1 AS x) s",
        "SELECT sum(x), sum(x) AS total, sum(DISTINCT x) FROM (SELECT 5::bigint AS x) s",
        "SELECT k, sum(x) FROM (SELECT 1 AS k, 5::bigint AS x) s GROUP BY k HAVING sum(x) > 1",
        // Integers summed: bigint, however DataFusion types the literals inside.
        "SELECT sum(CASE WHEN x > 1 THEN 1 ELSE 0 END), sum(y + 1), sum(3000000000) \
         FROM (SELECT 5::bigint AS x, 2 AS y) s",
        "SELECT now(), TIMESTAMPTZ '2026-11-01 10:00:00+02', TIMESTAMP '2026-11-01 10:00:00'",
        // A running total: numeric for a bigint, bigint for an integer.
        "SELECT sum(x) OVER (ORDER BY x), sum(y) OVER () AS t FROM (SELECT 5::bigint AS x, 2 AS y) s",
    ];
    for sql in typed {
        let types = |statement: &tokio_postgres::Statement| -> Vec<String> {
            statement
                .columns()
                .iter()
                .map(|column| column.type_().name().to_string())
                .collect()
        };
        let expected = types(&postgres_client.prepare(sql).await?);
        let described = types(&fjord_client.prepare(sql).await?);
        assert_eq!(described, expected, "{sql}");
    }
    // Over a table the statement is planned afresh at each run; its description must still
    // give the types the rows will have.
    fjord_client
        .batch_execute(
            "CREATE SCHEMA iceberg.described; CREATE TABLE iceberg.described.totals AS \
             SELECT 'a' AS k, 9223372036854775807::bigint AS x UNION ALL SELECT 'a', 5::bigint",
        )
        .await?;
    for sql in [
        "SELECT k, sum(x) FROM iceberg.described.totals GROUP BY k",
        "SELECT k, sum(x) OVER (PARTITION BY k) FROM iceberg.described.totals",
    ] {
        let statement = fjord_client.prepare(sql).await?;
        let types: Vec<_> = statement
            .columns()
            .iter()
            .map(|c| c.type_().name())
            .collect();
        assert_eq!(types, ["text", "numeric"], "{sql}");
        let rows = fjord_client.query(&statement, &[]).await?;
        assert_eq!(rows[0].columns()[1].type_().name(), "numeric", "{sql}");
        assert_eq!(
            query_text(&fjord_client, sql).await?[0][1],
            "9223372036854775812",
            "{sql}"
        );
    }
    // Values too: 50000 * 50000 is bigint arithmetic in fjord (Postgres raises 22003 for it;
    // DataFusion would wrap int4 around), so it is left out of the comparison.
    assert_eq!(
        query_text(&fjord_client, "SELECT 50000 * 50000").await?[0][0],
        "2500000000"
    );
    // A bigint sum past the bigint range is a numeric, as in Postgres (DataFusion alone would
    // wrap it around to a negative number).
    let big_sums = [
        "SELECT sum(x), sum(x) - 1, sum(x) > 0 FROM (VALUES (9223372036854775807::bigint), \
         (9223372036854775807::bigint), (5::bigint)) v(x)",
        "SELECT k, sum(x) AS total FROM (VALUES (1, 9223372036854775807::bigint), \
         (1, 1::bigint), (2, -3::bigint)) v(k, x) GROUP BY k HAVING sum(x) <> 0 ORDER BY k",
        "SELECT k, x, sum(x) OVER (PARTITION BY k ORDER BY x) AS running, \
         sum(x) OVER (PARTITION BY k) - 1 AS total FROM (VALUES (1, 9223372036854775807::bigint), \
         (1, 9223372036854775806::bigint), (2, -3::bigint)) v(k, x) ORDER BY k, x",
        // Numerics past 28 digits (products of wide numerics, sums of such) in text, small
        // ones and zeros keeping their scale.
        "SELECT a * b, a * b * -1, sum(a * b) OVER (), a * 0, b - b FROM (VALUES          (99999999999999999.99::numeric(19,2), 9999999999999.9999::numeric(17,4)),          (0.05::numeric(19,2), -0.0001::numeric(17,4))) v(a, b) ORDER BY 1",
    ];
    for sql in big_sums {
        assert_eq!(
            query_text(&fjord_client, sql).await?,
            query_text(&postgres_client, sql).await?,
            "{sql}"
        );
    }

    // TIMESTAMPTZ literals and now() follow the session's TimeZone as in Postgres: a literal
    // without an offset is read in that zone, and results are written in it.
    let zoned = [
        "SELECT TIMESTAMPTZ '2026-11-01 10:00:00'",
        "SELECT TIMESTAMPTZ '2026-07-01 10:00:00+00'",
        "SELECT date_trunc('day', TIMESTAMPTZ '2026-11-01 23:30:00+00')",
        "SELECT TIMESTAMPTZ '2026-11-01 10:00:00' = TIMESTAMPTZ '2026-11-01 09:00:00+00'",
    ];
    for zone in ["UTC", "Europe/Oslo", "America/New_York"] {
        let set = format!("SET TIME ZONE '{zone}'");
        fjord_client.batch_execute(&set).await?;
        postgres_client.batch_execute(&set).await?;
        for sql in zoned {
            assert_eq!(
                query_text(&fjord_client, sql).await?,
                query_text(&postgres_client, sql).await?,
                "{sql} in {zone}"
            );
        }
        // now() is the current instant whatever the zone: its text carries the zone's offset.
        let now = &query_text(&fjord_client, "SELECT now()").await?[0][0];
        let offset = &query_text(&postgres_client, "SELECT now()").await?[0][0];
        assert_eq!(
            now[now.len() - 3..],
            offset[offset.len() - 3..],
            "now() in {zone}"
        );
    }
    fjord_client.batch_execute("RESET TimeZone").await?;
    assert_eq!(
        query_text(&fjord_client, "SELECT TIMESTAMPTZ '2026-11-01 10:00:00'").await?[0][0],
        "2026-11-01 10:00:00+00"
    );

    // Settings that would change how results are written take only what fjord writes.
    fjord_client
        .batch_execute("SET DateStyle = 'ISO, DMY'; SET client_encoding = 'utf-8'")
        .await?;
    assert_eq!(
        query_text(&fjord_client, "SHOW DateStyle").await?[0][0],
        "ISO, DMY"
    );
    assert_eq!(
        query_text(&fjord_client, "SHOW client_encoding").await?[0][0],
        "UTF8"
    );
    for (sql, code) in [
        ("SET DateStyle = 'German'", "0A000"),
        ("SET DateStyle = 'ISO, sideways'", "22023"),
        ("SET IntervalStyle = 'iso_8601'", "0A000"),
        ("SET client_encoding = 'LATIN1'", "0A000"),
        ("SET standard_conforming_strings = off", "0A000"),
        ("SET extra_float_digits = 9", "22023"),
    ] {
        let error = fjord_client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&error).as_deref(), Some(code), "{sql}: {error:?}");
    }
    // A refused value leaves the setting as it was.
    assert_eq!(
        query_text(&fjord_client, "SHOW DateStyle").await?[0][0],
        "ISO, DMY"
    );
    fjord.stop().await
}

/// Dates and timestamps in binary results (tokio-postgres asks for binary) and in a binary COPY
/// are exactly Postgres's own bytes: before and after 2000 and 1970, with and without a zone,
/// and NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_dates_and_timestamps_are_postgres_own() -> anyhow::Result<()> {
    let postgres = fjord_tests::Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE moments (id int PRIMARY KEY, d date, t timestamp, tz timestamptz); \
         INSERT INTO moments VALUES \
           (1, '2000-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00'), \
           (2, '1969-12-31', '1969-12-31 23:59:59.999999', '1960-06-15 12:30:00.5+02'), \
           (3, '2026-12-05', '2026-12-05 18:16:27.123456', '2026-12-05 18:16:27.123456-05'), \
           (4, NULL, NULL, NULL), \
           (5, '0044-03-15 BC', '1000-01-01 00:00:00', '9999-12-31 23:59:59.999999+00')",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    let direct = postgres.connect("workshop").await?;
    type Moment = (
        i32,
        Option<chrono::NaiveDate>,
        Option<chrono::NaiveDateTime>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<Moment> {
        rows.iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect()
    };
    let ours = read(
        client
            .query(
                "SELECT id, d, t, tz FROM postgresql.public.moments ORDER BY id",
                &[],
            )
            .await?,
    );
    let theirs = read(
        direct
            .query("SELECT id, d, t, tz FROM moments ORDER BY id", &[])
            .await?,
    );
    assert_eq!(ours, theirs);

    // A binary COPY carries the same bytes as Postgres's own.
    assert_eq!(
        binary_copy(&client, "postgresql.public.moments").await?,
        binary_copy(&direct, "moments").await?
    );
    fjord.stop().await
}

/// The bytes of a binary COPY of `d, t, tz` from `table`.
async fn binary_copy(client: &tokio_postgres::Client, table: &str) -> anyhow::Result<Vec<u8>> {
    let sql = format!("COPY (SELECT d, t, tz FROM {table} ORDER BY id) TO STDOUT (FORMAT binary)");
    let stream = client.copy_out(sql.as_str()).await?;
    futures::pin_mut!(stream);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes)
}
