//! The Arrow Flight SQL front door, through arrow-flight's own Flight SQL client: the same SQL
//! gives the same rows as on the Postgres port, metadata calls list both catalogs, updates
//! write Iceberg, errors carry their class, and users authenticate with a handshake.

use anyhow::{Context, Result};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use fjord_tests::{Fjord, Postgres, query_text};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

/// Whether `error` (as shown) carries gRPC `code`: tonic shows a code by its description.
fn has_code(error: &dyn std::fmt::Display, code: tonic::Code) -> bool {
    error.to_string().contains(code.description())
}

/// What tests/python/adbc_check.py saw through `uri` (with its extra `options`).
async fn adbc_check(uri: &str, options: &[&str]) -> Result<serde_json::Value> {
    let venv = fjord_tests::test_venv()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/adbc_check.py");
    let output = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(uri)
        .args(options)
        .output()
        .await?;
    adbc_output(output)
}

fn adbc_output(output: std::process::Output) -> Result<serde_json::Value> {
    anyhow::ensure!(
        output.status.success(),
        "the ADBC check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn client(fjord: &Fjord) -> Result<FlightSqlServiceClient<Channel>> {
    let address = fjord.flight_address()?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

/// Every endpoint's batches of `info`.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.context("an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

/// Rows as text, the way `query_text` gives the Postgres port's.
fn text_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|formatter| formatter.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(rows)
}

async fn rows(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<Vec<String>>> {
    let info = client.execute(sql.to_string(), None).await?;
    text_rows(&fetch(client, info).await?)
}

/// One column of a metadata answer, as text.
fn column(batches: &[RecordBatch], name: &str) -> Result<Vec<String>> {
    let mut values = Vec::new();
    for batch in batches {
        let index = batch.schema().index_of(name)?;
        let formatter =
            ArrayFormatter::try_new(batch.column(index).as_ref(), &FormatOptions::default())?;
        values.extend((0..batch.num_rows()).map(|row| formatter.value(row).to_string()));
    }
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_as_the_postgres_port_does() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE cats (id int PRIMARY KEY, name text); \
         INSERT INTO cats VALUES (1, 'Miso'), (2, 'Tofu'), (3, 'Nori')",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let pg = fjord.connect().await?;
    pg.simple_query(
        "CREATE SCHEMA iceberg.cafe; \
         CREATE TABLE iceberg.cafe.visits AS SELECT * FROM (VALUES (1, 'morning'), (1, 'evening'), (3, 'noon')) AS v(cat_id, slot)",
    )
    .await?;
    let mut flight = client(&fjord).await?;

    // The same federated join, the same rows.
    let join = "SELECT c.name, v.slot, count(*) OVER () AS total FROM postgresql.public.cats c \
                JOIN iceberg.cafe.visits v ON v.cat_id = c.id ORDER BY 1, 2";
    let over_flight = rows(&mut flight, join).await?;
    assert_eq!(over_flight.len(), 3, "{over_flight:?}");
    assert_eq!(over_flight, query_text(&pg, join).await?);

    // Metadata: both catalogs, their schemas, tables with their columns, types, facts.
    let catalogs = {
        let info = flight.get_catalogs().await?;
        column(&fetch(&mut flight, info).await?, "catalog_name")?
    };
    assert!(
        catalogs.contains(&"iceberg".to_string()) && catalogs.contains(&"postgresql".to_string()),
        "{catalogs:?}"
    );
    let schemas = {
        let info = flight
            .get_db_schemas(CommandGetDbSchemas {
                catalog: Some("iceberg".into()),
                db_schema_filter_pattern: Some("caf%".into()),
            })
            .await?;
        column(&fetch(&mut flight, info).await?, "db_schema_name")?
    };
    assert_eq!(schemas, ["cafe"]);
    let tables = {
        let info = flight
            .get_tables(CommandGetTables {
                catalog: Some("postgresql".into()),
                db_schema_filter_pattern: Some("public".into()),
                table_name_filter_pattern: Some("ca%".into()),
                table_types: vec![],
                include_schema: true,
            })
            .await?;
        fetch(&mut flight, info).await?
    };
    assert_eq!(column(&tables, "table_name")?, ["cats"]);
    assert_eq!(column(&tables, "table_type")?, ["TABLE"]);
    let schema_bytes = column(&tables, "table_schema")?;
    assert!(
        !schema_bytes[0].is_empty(),
        "a table's schema is sent when asked for"
    );
    let types = {
        let info = flight.get_table_types().await?;
        column(&fetch(&mut flight, info).await?, "table_type")?
    };
    assert_eq!(types, ["TABLE", "VIEW"]);
    let facts = {
        let info = flight
            .get_sql_info(vec![SqlInfo::FlightSqlServerName])
            .await?;
        fetch(&mut flight, info).await?
    };
    assert_eq!(facts.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    assert!(format!("{:?}", facts[0].column(1)).contains("fjord"));

    let type_names = {
        let info = flight
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
            .await?;
        column(&fetch(&mut flight, info).await?, "type_name")?
    };
    assert!(
        type_names.contains(&"bigint".to_string()) && type_names.contains(&"text".to_string()),
        "{type_names:?}"
    );
    // Keys are not tracked: empty answers, never errors.
    let keys = {
        let info = flight
            .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
                catalog: Some("postgresql".into()),
                db_schema: Some("public".into()),
                table: "cats".into(),
            })
            .await?;
        fetch(&mut flight, info).await?
    };
    assert_eq!(keys.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let imported = {
        let info = flight
            .get_imported_keys(arrow_flight::sql::CommandGetImportedKeys {
                catalog: None,
                db_schema: None,
                table: "cats".into(),
            })
            .await?;
        fetch(&mut flight, info).await?
    };
    assert_eq!(imported.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);

    // An update writes Iceberg; the Postgres port sees it.
    flight
        .execute_update(
            "CREATE TABLE iceberg.cafe.visit_copy AS SELECT * FROM iceberg.cafe.visits".into(),
            None,
        )
        .await?;
    assert_eq!(
        query_text(&pg, "SELECT count(*) FROM iceberg.cafe.visit_copy").await?,
        vec![vec!["3".to_string()]]
    );

    // ADBC's Flight SQL driver, as pyarrow users connect.
    let address = fjord.flight_address()?;
    let seen = adbc_check(&format!("grpc://{address}"), &[]).await?;
    let join_rows: Vec<Vec<String>> = query_text(
        &pg,
        "SELECT c.name, v.slot FROM postgresql.public.cats c JOIN iceberg.cafe.visits v ON v.cat_id = c.id ORDER BY 1, 2",
    )
    .await?;
    assert_eq!(seen["join"], serde_json::json!(join_rows), "{seen}");
    assert_eq!(
        seen["lake_types"],
        serde_json::json!(["string", "int32"]),
        "{seen}"
    );
    assert_eq!(
        seen["lake_rows"],
        serde_json::json!([
            {"slot": "evening", "cat_id": 1},
            {"slot": "morning", "cat_id": 1},
            {"slot": "noon", "cat_id": 3}
        ]),
        "{seen}"
    );
    assert_eq!(seen["cat_2"], serde_json::json!([["Tofu"]]), "{seen}");
    assert_eq!(seen["cat_3"], serde_json::json!([["Nori"]]), "{seen}");
    assert_eq!(seen["copied"], 3, "{seen}");
    assert!(
        seen["missing"]
            .as_str()
            .is_some_and(|error| error.contains("does not exist")),
        "{seen}"
    );
    let catalogs = seen["catalogs"].to_string();
    assert!(
        catalogs.contains("iceberg") && catalogs.contains("postgresql"),
        "{seen}"
    );
    let tables = seen["tables"].to_string();
    assert!(
        tables.contains("iceberg.cafe.visits") && tables.contains("postgresql.public.cats"),
        "{seen}"
    );
    assert_eq!(
        seen["table_types"],
        serde_json::json!(["TABLE", "VIEW"]),
        "{seen}"
    );
    assert_eq!(seen["vendor"], "fjord", "{seen}");

    // Errors name what was wrong, with the class's gRPC code.
    let missing = flight
        .execute("SELECT * FROM iceberg.cafe.nope".into(), None)
        .await
        .expect_err("an unknown table");
    let shown = missing.to_string();
    assert!(
        has_code(&shown, tonic::Code::NotFound)
            && shown.contains("iceberg.cafe.nope")
            && shown.contains("does not exist"),
        "{shown}"
    );
    let bad = flight
        .execute("SELEC 1".into(), None)
        .await
        .expect_err("bad SQL");
    assert!(has_code(&bad, tonic::Code::InvalidArgument), "{bad}");
    fjord.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_users_authenticate_with_a_handshake() -> Result<()> {
    let alice = crate::auth::fjord_verifier("alice-pw")?;
    let fjord = Fjord::start_full(
        &format!("[server.auth.users]\nalice = \"{alice}\"\n"),
        "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n",
    )
    .await?;
    let mut anonymous = client(&fjord).await?;
    let refused = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("no credentials");
    assert!(
        has_code(&refused, tonic::Code::Unauthenticated),
        "{refused}"
    );
    let mut wrong = client(&fjord).await?;
    let error = wrong
        .handshake("alice", "not-her-password")
        .await
        .expect_err("a wrong password");
    assert!(
        error.to_string().contains("password authentication failed"),
        "{error}"
    );
    let address = fjord.flight_address()?;
    let uri = format!("grpc://{address}");
    let seen = adbc_check(
        &uri,
        &["--who", "--user", "alice", "--password", "alice-pw"],
    )
    .await?;
    assert_eq!(seen["user"], "alice", "{seen}");
    let refused = adbc_check(&uri, &["--who", "--user", "alice", "--password", "wrong"])
        .await
        .expect_err("a wrong password");
    assert!(
        refused
            .to_string()
            .contains("password authentication failed"),
        "{refused}"
    );
    let mut flight = client(&fjord).await?;
    flight.handshake("alice", "alice-pw").await?;
    assert_eq!(
        rows(&mut flight, "SELECT current_user AS who").await?,
        vec![vec!["alice".to_string()]]
    );
    fjord.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_serves_tls_from_the_configured_certificate() -> Result<()> {
    let certificates = tempfile::tempdir()?;
    let (ca, certificate, key) = fjord_tests::make_certificates(certificates.path())?;
    let fjord = Fjord::start_full(
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            certificate.display(),
            key.display()
        ),
        "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n",
    )
    .await?;
    let address = fjord.flight_address()?;
    let ca = ca.display().to_string();
    let seen = adbc_check(
        &format!("grpc+tls://localhost:{}", address.port()),
        &["--who", "--tls-root", &ca],
    )
    .await?;
    assert_eq!(seen["user"], "flight", "{seen}");
    // Plaintext is not spoken on a TLS port.
    adbc_check(&format!("grpc://{address}"), &["--who"])
        .await
        .expect_err("plaintext to a TLS port");
    fjord.stop().await?;
    Ok(())
}

/// fjord's statements running in `postgres`'s `workshop` database, by their text.
fn running_in_postgres(postgres: &Postgres, like: &str) -> Result<u32> {
    let count = postgres.psql_admin(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fjord' \
             AND state = 'active' AND query LIKE '{like}'"
        ),
    )?;
    Ok(count.trim().parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_flight_stream_stops_the_statement_in_postgres() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE VIEW slow AS SELECT n FROM generate_series(1, 1) AS n WHERE pg_sleep(60) IS NOT NULL",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let mut flight = client(&fjord).await?;
    let info = flight
        .execute("SELECT count(*) FROM postgresql.public.slow".into(), None)
        .await?;
    let ticket = info.endpoint[0].ticket.clone().context("a ticket")?;
    // The client waits for the first batch, which Postgres takes a minute to give.
    let reading = tokio::spawn(async move {
        if let Ok(mut stream) = flight.do_get(ticket).await {
            let _ = stream.next().await;
        }
        drop(flight);
    });
    let started = std::time::Instant::now();
    while running_in_postgres(&postgres, "%public%slow%")? == 0 {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the statement never reached Postgres"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The client goes away mid-statement: fjord cancels it in Postgres.
    reading.abort();
    let started = std::time::Instant::now();
    while running_in_postgres(&postgres, "%public%slow%")? > 0 {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "Postgres kept running a statement whose Flight client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    fjord.stop().await?;
    Ok(())
}

/// `info`'s first endpoint, read to its end by a client of its own in the background.
fn read_in_background(
    flight: FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
) -> Result<tokio::task::JoinHandle<Result<Vec<RecordBatch>>>> {
    let ticket = info.endpoint[0].ticket.clone().context("a ticket")?;
    let mut flight = flight;
    Ok(tokio::spawn(async move {
        let stream = flight.do_get(ticket).await?;
        Ok(stream.try_collect::<Vec<_>>().await?)
    }))
}

/// Waits until `postgres` runs `count` of fjord's statements on its `slow` view.
async fn until_running_in_postgres(postgres: &Postgres, count: u32) -> Result<()> {
    let started = std::time::Instant::now();
    while running_in_postgres(postgres, "%public%slow%")? != count {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "Postgres never ran {count} of fjord's statements on the slow view"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// CancelFlightInfo for `info`: the status the server answered.
async fn cancel_flight_info(
    flight: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
) -> Result<arrow_flight::CancelStatus> {
    use prost::Message;
    let action = arrow_flight::Action::new(
        "CancelFlightInfo",
        arrow_flight::CancelFlightInfoRequest::new(info.clone()).encode_to_vec(),
    );
    let mut results = flight.do_action(action).await?;
    let result = results
        .try_next()
        .await?
        .context("CancelFlightInfo answered nothing")?;
    let result = arrow_flight::CancelFlightInfoResult::decode(result.body)?;
    Ok(arrow_flight::CancelStatus::try_from(result.status)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_statements_stop_on_cancel_flight_info_and_kill_query() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE VIEW slow AS SELECT n FROM generate_series(1, 1) AS n WHERE pg_sleep(60) IS NOT NULL",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let slow = "SELECT count(*) FROM postgresql.public.slow";
    let mut flight = client(&fjord).await?;

    // CancelFlightInfo: the reader's stream ends with CANCELLED (never as if the result were
    // whole), and the statement stops in Postgres.
    let info = flight.execute(slow.into(), None).await?;
    let reader = read_in_background(client(&fjord).await?, &info)?;
    until_running_in_postgres(&postgres, 1)
        .await
        .context("step 1")?;
    assert_eq!(
        cancel_flight_info(&mut flight, &info).await?,
        arrow_flight::CancelStatus::Cancelled
    );
    let error = reader.await?.expect_err("a cancelled statement's rows");
    assert!(
        error
            .to_string()
            .contains("canceling statement due to user request"),
        "{error}"
    );
    until_running_in_postgres(&postgres, 0)
        .await
        .context("step 2")?;
    assert_eq!(
        cancel_flight_info(&mut flight, &info).await?,
        arrow_flight::CancelStatus::NotCancellable,
        "a statement that ended cannot be cancelled again"
    );

    // kill_query from the Postgres port finds the Flight statement by its id.
    let info = flight.execute(slow.into(), None).await?;
    let reader = read_in_background(client(&fjord).await?, &info)?;
    until_running_in_postgres(&postgres, 1)
        .await
        .context("step 3")?;
    let pg = fjord.connect().await?;
    let running = query_text(
        &pg,
        "SELECT query_id, backend_pid FROM system.runtime.queries \
         WHERE state = 'RUNNING' AND source = 'flight sql' AND query LIKE '%slow%'",
    )
    .await?;
    assert_eq!(running.len(), 1, "{running:?}");
    assert_ne!(running[0][1], "0", "a Flight session has a process id");
    pg.simple_query(&format!(
        "CALL system.runtime.kill_query(query_id => '{}')",
        running[0][0]
    ))
    .await?;
    let error = reader.await?.expect_err("a killed statement's rows");
    assert!(error.to_string().contains("canceling statement"), "{error}");
    until_running_in_postgres(&postgres, 0)
        .await
        .context("step 4")?;
    let state = query_text(
        &pg,
        &format!(
            "SELECT state FROM system.runtime.queries WHERE query_id = '{}'",
            running[0][0]
        ),
    )
    .await?;
    assert_eq!(state, vec![vec!["CANCELLED".to_string()]]);

    // ADBC's cancel call, from another thread of the client that reads.
    let address = fjord.flight_address()?;
    let signals = tempfile::tempdir()?;
    let go = signals.path().join("go");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/adbc_check.py");
    let reading = tokio::process::Command::new(fjord_tests::test_venv()?.join("bin/python"))
        .arg(script)
        .arg(format!("grpc://{address}"))
        .args(["--cancel", slow, "--go-file"])
        .arg(&go)
        .output();
    let reading = tokio::spawn(reading);
    let started = until_running_in_postgres(&postgres, 1).await;
    std::fs::write(&go, "")?;
    let seen = adbc_output(reading.await??)?;
    started.with_context(|| format!("the ADBC client saw {seen}"))?;
    assert!(
        seen["cancelled"]
            .as_str()
            .is_some_and(|error| error.to_lowercase().contains("cancel")),
        "{seen}"
    );
    until_running_in_postgres(&postgres, 0)
        .await
        .context("step 5")?;

    // A statement cancelled before its endpoint is fetched has nothing left to fetch.
    let info = flight.execute("SELECT 1 AS one".into(), None).await?;
    assert_eq!(
        cancel_flight_info(&mut flight, &info).await?,
        arrow_flight::CancelStatus::Cancelled
    );
    let gone = fetch(&mut flight, info)
        .await
        .expect_err("a cancelled endpoint");
    assert!(has_code(&gone, tonic::Code::NotFound), "{gone}");
    fjord.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_results_offer_an_endpoint_per_partition() -> Result<()> {
    let fjord = Fjord::start_full(
        "target_partitions = 3\n",
        "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n",
    )
    .await?;
    let pg = fjord.connect().await?;
    pg.simple_query(
        "CREATE SCHEMA iceberg.shop; \
         CREATE TABLE iceberg.shop.sales AS \
           SELECT value AS id, value % 11 AS store, value * 0.5 AS amount \
           FROM generate_series(1, 30000)",
    )
    .await?;
    let mut flight = client(&fjord).await?;

    // A grouped result comes in the aggregate's partitions, which clients read in parallel.
    let grouped = "SELECT store, count(*) AS sales, sum(amount) AS total \
                   FROM iceberg.shop.sales GROUP BY store";
    let info = flight.execute(grouped.into(), None).await?;
    assert_eq!(info.endpoint.len(), 3, "{info:?}");
    assert!(!info.ordered);
    let readers = info
        .endpoint
        .iter()
        .map(|endpoint| {
            let ticket = endpoint.ticket.clone();
            let fjord_client = client(&fjord);
            async move {
                let mut flight = fjord_client.await?;
                let stream = flight.do_get(ticket.context("a ticket")?).await?;
                Ok::<_, anyhow::Error>(stream.try_collect::<Vec<_>>().await?)
            }
        })
        .collect::<Vec<_>>();
    let mut batches = Vec::new();
    for partition in futures::future::try_join_all(readers).await? {
        batches.extend(partition);
    }
    let mut over_flight = text_rows(&batches)?;
    over_flight.sort();
    let mut over_postgres = query_text(&pg, grouped).await?;
    over_postgres.sort();
    assert_eq!(over_flight.len(), 11);
    assert_eq!(over_flight, over_postgres);

    // Each endpoint is read once.
    let again = flight
        .do_get(info.endpoint[0].ticket.clone().context("a ticket")?)
        .await;
    let again = match again {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(error) => Err(error),
    }
    .expect_err("a ticket read twice");
    assert!(
        has_code(&again, tonic::Code::NotFound) || again.to_string().contains("fetched already"),
        "{again}"
    );

    // An ordered result is one endpoint, in order.
    let info = flight
        .execute(
            "SELECT store, count(*) AS sales FROM iceberg.shop.sales GROUP BY store ORDER BY store"
                .into(),
            None,
        )
        .await?;
    assert_eq!(info.endpoint.len(), 1);
    assert!(info.ordered);
    let rows = text_rows(&fetch(&mut flight, info).await?)?;
    let stores: Vec<String> = rows.iter().map(|row| row[0].clone()).collect();
    assert_eq!(stores, (0..11).map(|n| n.to_string()).collect::<Vec<_>>());
    fjord.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_token_keeps_its_session_settings() -> Result<()> {
    let fjord = Fjord::start("").await?;
    // With no users configured, a loopback client may still hand-shake for a session.
    let mut flight = client(&fjord).await?;
    flight.handshake("ann", "").await?;
    let pid = rows(&mut flight, "SELECT pg_backend_pid() AS pid").await?;
    assert_ne!(pid, vec![vec!["0".to_string()]]);
    flight
        .execute("SET TimeZone = 'Asia/Kolkata'".into(), None)
        .await?;
    assert_eq!(
        rows(&mut flight, "SHOW TimeZone").await?,
        vec![vec!["Asia/Kolkata".to_string()]]
    );
    assert_eq!(
        rows(&mut flight, "SELECT pg_backend_pid() AS pid").await?,
        pid
    );
    assert_eq!(
        rows(&mut flight, "SELECT current_user AS who").await?,
        vec![vec!["ann".to_string()]]
    );
    // The session's statement_timeout ends a statement that runs too long.
    flight
        .execute("SET statement_timeout = '200ms'".into(), None)
        .await?;
    let info = flight
        .execute(
            "SELECT count(*) FROM generate_series(1, 2000000000)".into(),
            None,
        )
        .await?;
    let timed_out = fetch(&mut flight, info).await.expect_err("a timeout");
    assert!(
        timed_out.to_string().contains("statement timeout")
            && has_code(&timed_out, tonic::Code::Cancelled),
        "{timed_out}"
    );
    // A client without a token gets a session per call, with the defaults.
    let mut other = client(&fjord).await?;
    assert_eq!(
        rows(&mut other, "SHOW TimeZone").await?,
        vec![vec!["UTC".to_string()]]
    );
    fjord.stop().await?;
    Ok(())
}
