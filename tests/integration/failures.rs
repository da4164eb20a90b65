//! Failure behaviour: unreachable sources, sources that go away and come back, cancelled and
//! abandoned queries.

use std::time::Duration;

use fjord_tests::{Fjord, Postgres, TEST_DEMO, free_port, query_text, sqlstate};

/// A 08xxx error that names the catalog that is down.
fn assert_unavailable(error: &tokio_postgres::Error, catalog: &str) {
    let code = sqlstate(error).expect("a server error");
    assert!(code.starts_with("08"), "{code}: {error:?}");
    let message = error.as_db_error().expect("db error").message();
    assert!(message.contains(&format!("`{catalog}`")), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_catalog_is_08xxx_naming_it_while_the_lake_serves()
-> anyhow::Result<()> {
    let dead_port = free_port();
    let catalog = format!(
        "[catalogs.postgresql]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {dead_port}\ndatabase = \"workshop\"\nuser = \"postgres\"\nconnect_timeout_seconds = 1\n"
    );
    let fjord = Fjord::start(&format!("{catalog}\n{TEST_DEMO}")).await?;
    let client = fjord.connect().await?;
    let error = client
        .simple_query("SELECT * FROM postgresql.public.cats")
        .await
        .expect_err("the catalog is down");
    assert_unavailable(&error, "postgresql");
    // The other catalog keeps serving on the same connection.
    let rows = query_text(
        &client,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    assert_eq!(rows[0][0], "20000");
    let catalogs = query_text(&client, "SHOW CATALOGS").await?;
    assert_eq!(
        catalogs,
        vec![vec!["iceberg".to_string()], vec!["postgresql".to_string()]]
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_mid_session_is_a_clean_error_and_queries_resume_after()
-> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    assert_eq!(
        query_text(&client, "SELECT count(*) FROM postgresql.public.t").await?[0][0],
        "10"
    );

    postgres.stop_server()?;
    let error = client
        .simple_query("SELECT count(*) FROM postgresql.public.t")
        .await
        .expect_err("postgres is down");
    assert_unavailable(&error, "postgresql");
    // The client's own connection to fjord survived.
    assert_eq!(query_text(&client, "SELECT 1").await?[0][0], "1");

    postgres.start_server()?;
    let mut resumed = None;
    // The pool may hold connections that died with the server; the first query after the
    // restart discards them. Within a few attempts the catalog must be back.
    for _ in 0..5 {
        match query_text(&client, "SELECT count(*) FROM postgresql.public.t").await {
            Ok(rows) => {
                resumed = Some(rows);
                break;
            }
            Err(error) => {
                let code = error
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(sqlstate)
                    .unwrap_or_default();
                assert!(
                    code.starts_with("08"),
                    "only 08xxx while recovering, got {code}: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(
        resumed.expect("queries resume without a restart")[0][0],
        "10"
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_running_query_with_57014() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    // A join that takes far longer than the test: only the cancel can end it.
    let error = client
        .simple_query(
            "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw a, iceberg.data_on_eks.cat_interactions_raw b, \
             iceberg.data_on_eks.cat_interactions_raw c WHERE a.duration_seconds + b.duration_seconds = c.duration_seconds",
        )
        .await
        .expect_err("the query is cancelled");
    canceller.await??;
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"), "{error:?}");
    // The connection is usable afterwards.
    assert_eq!(query_text(&client, "SELECT 1").await?[0][0], "1");
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_query_stops_the_work_in_postgres() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 2000000) g")?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let (client, socket) = fjord.connect_abortable().await?;
    let rows = client
        .query_raw(
            "SELECT id, label FROM postgresql.public.big",
            Vec::<String>::new(),
        )
        .await?;
    futures::pin_mut!(rows);
    use futures::StreamExt;
    // Read a few rows: the query is running in Postgres and streaming.
    for _ in 0..10 {
        rows.next().await.expect("a row")?;
    }
    let direct = postgres.connect("workshop").await?;
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%big%' AND state = 'active'";
    // The client dies: its socket closes without a goodbye.
    socket.abort();
    drop(client);
    // Once fjord notices the client is gone, the statement in Postgres is cancelled.
    let mut still_running = i64::MAX;
    for _ in 0..100 {
        still_running = direct.query_one(running, &[]).await?.get(0);
        if still_running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        still_running, 0,
        "the abandoned COPY should have been cancelled"
    );
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_queries_finish_and_then_refuses_connections() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE VIEW slow AS SELECT 42 AS answer FROM pg_sleep(2)",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let port = fjord.port();
    let client = fjord.connect().await?;
    let running = tokio::spawn(async move {
        query_text(&client, "SELECT answer FROM postgresql.public.slow").await
    });
    // Wait until the query is really running in Postgres before shutting down.
    let direct = postgres.connect("workshop").await?;
    let mut started = false;
    for _ in 0..100 {
        let active: i64 = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%slow%' AND state = 'active' AND pid <> pg_backend_pid()", &[])
            .await?
            .get(0);
        if active > 0 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the slow query never started");
    fjord.stop().await?;
    let rows = running.await??;
    assert_eq!(
        rows,
        vec![vec!["42".to_string()]],
        "the running query finished during the grace period"
    );
    let refused = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=late dbname=iceberg"),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(refused.is_err(), "a stopped server accepts no connections");
    Ok(())
}

const LAKE_WITH_DEMO: &str = "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n\n[demo]\nbuild_on_start = true\ninteractions = 20000\ncats = 300\nvisitors = 60\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_with_53300() -> anyhow::Result<()> {
    let fjord = Fjord::start_full("max_connections = 2", LAKE_WITH_DEMO).await?;
    let first = fjord.connect().await?;
    let second = fjord.connect().await?;
    let error = fjord
        .connect()
        .await
        .expect_err("a third connection is over the limit");
    let error = error
        .downcast_ref::<tokio_postgres::Error>()
        .expect("a driver error");
    assert_eq!(sqlstate(error).as_deref(), Some("53300"), "{error:?}");
    // The connections inside the limit are unaffected, and a slot frees when one closes.
    assert_eq!(query_text(&first, "SELECT 1").await?[0][0], "1");
    drop(second);
    let mut reconnected = None;
    for _ in 0..50 {
        if let Ok(client) = fjord.connect().await {
            reconnected = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = reconnected.expect("a slot frees when a client leaves");
    assert_eq!(query_text(&third, "SELECT 2").await?[0][0], "2");
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_alone_with_53200() -> anyhow::Result<()> {
    let fjord = Fjord::start_full("query_memory_limit = \"1MB\"", LAKE_WITH_DEMO).await?;
    let client = fjord.connect().await?;
    // A hash join builds its whole build side in memory: 20k rows of several strings.
    let error = client
        .simple_query(
            "SELECT count(*) FROM cat_interactions_raw a JOIN cat_interactions_raw b \
             ON a.event_id = b.event_id AND a.visitor_id = b.visitor_id",
        )
        .await
        .expect_err("the join needs more than 1MB");
    assert_eq!(sqlstate(&error).as_deref(), Some("53200"), "{error:?}");
    // The connection and the server carry on.
    assert_eq!(
        query_text(&client, "SELECT count(*) FROM cat_interactions_raw").await?[0][0],
        "20000"
    );
    fjord.stop().await
}

/// A statement Postgres runs for a long time (a join pushed whole) is cancelled in Postgres when
/// the fjord query is cancelled by the client and when the session's statement_timeout fires,
/// whether fjord reads it as a plain statement (one row: a count) or as a COPY (many rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_or_timing_out_a_pushed_query_cancels_it_in_postgres() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE pairs AS SELECT g AS id FROM generate_series(1, 200000) g",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let direct = postgres.connect("workshop").await?;
    let running = "SELECT count(*) FROM pg_stat_activity \
                   WHERE application_name = 'fjord' AND query LIKE $1 AND state = 'active'";
    let direct = &direct;
    // Statements in Postgres whose text is like `sent`, with `expected` as the count to wait for.
    let wait_for = |sent: &'static str, expected: i64| async move {
        let mut seen = -1;
        for _ in 0..100 {
            seen = direct.query_one(running, &[&sent]).await?.get::<_, i64>(0);
            if seen == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(seen)
    };

    // fjord answers 57014, and the statement is no longer running in Postgres.
    let stopped = |read: &'static str, error: tokio_postgres::Error| async move {
        assert_eq!(
            sqlstate(&error).as_deref(),
            Some("57014"),
            "{read}: {error:?}"
        );
        let running = wait_for("%pairs%", 0).await?;
        assert_eq!(running, 0, "{read}: cancelled in Postgres too");
        anyhow::Ok(())
    };

    // 200,000 x 200,000 comparisons: far longer than this test. Counted, the answer is one
    // row; grouped, many, and none before the join ends.
    let joined = "FROM postgresql.public.pairs a JOIN postgresql.public.pairs b ON a.id < b.id";
    for (read, sent, slow) in [
        (
            "plain",
            "SELECT%pairs%",
            format!("SELECT count(*) {joined}"),
        ),
        (
            "COPY",
            "COPY (SELECT%pairs%",
            format!("SELECT a.id % 1000, count(*) {joined} GROUP BY a.id % 1000"),
        ),
    ] {
        let plan = query_text(&fjord.connect().await?, &format!("EXPLAIN {slow}")).await?;
        assert!(
            plan.iter().any(|row| row[1].contains("PostgresScanExec")),
            "{read}: the join is pushed whole: {plan:?}"
        );

        // The client cancels (psql's Ctrl-C): fjord answers 57014 and Postgres stops.
        let client = fjord.connect().await?;
        let token = client.cancel_token();
        let statement = slow.clone();
        let query = tokio::spawn(async move { client.simple_query(&statement).await.map(|_| ()) });
        assert_eq!(
            wait_for(sent, 1).await?,
            1,
            "{read}: the join runs in Postgres"
        );
        token.cancel_query(tokio_postgres::NoTls).await?;
        let error = query.await?.expect_err("the query was cancelled");
        stopped(read, error).await?;

        // statement_timeout: the same, without the client doing anything.
        let client = fjord.connect().await?;
        client.batch_execute("SET statement_timeout = '1s'").await?;
        let error = client
            .simple_query(&slow)
            .await
            .expect_err("the query timed out");
        stopped(read, error).await?;
        // The session goes on.
        assert_eq!(query_text(&client, "SELECT 1").await?[0][0], "1");
    }
    fjord.stop().await
}
