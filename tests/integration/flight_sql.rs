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
use futures::TryStreamExt;
use tonic::transport::Channel;

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
    anyhow::ensure!(
        output.status.success(),
        "the ADBC check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn client(fjord: &Fjord) -> Result<FlightSqlServiceClient<Channel>> {
    let address = fjord
        .server
        .as_ref()
        .and_then(|server| server.flight_address)
        .context("the Flight SQL listener is off")?;
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
    let address = fjord
        .server
        .as_ref()
        .and_then(|server| server.flight_address)
        .context("flight address")?;
    let seen = adbc_check(&format!("grpc://{address}"), &[]).await?;
    let join_rows: Vec<Vec<String>> = query_text(
        &pg,
        "SELECT c.name, v.slot FROM postgresql.public.cats c JOIN iceberg.cafe.visits v ON v.cat_id = c.id ORDER BY 1, 2",
    )
    .await?;
    assert_eq!(seen["join"], serde_json::json!(join_rows), "{seen}");
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
    // tonic shows a code by its description.
    assert!(
        shown.contains(&tonic::Code::NotFound.description().to_string())
            && shown.contains("iceberg.cafe.nope")
            && shown.contains("does not exist"),
        "{shown}"
    );
    let bad = flight
        .execute("SELEC 1".into(), None)
        .await
        .expect_err("bad SQL");
    assert!(
        bad.to_string()
            .contains(&tonic::Code::InvalidArgument.description().to_string()),
        "{bad}"
    );
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
        refused
            .to_string()
            .contains(&tonic::Code::Unauthenticated.description().to_string()),
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
    let address = fjord
        .server
        .as_ref()
        .and_then(|server| server.flight_address)
        .context("flight address")?;
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
    let address = fjord
        .server
        .as_ref()
        .and_then(|server| server.flight_address)
        .context("flight address")?;
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
        let stream = flight.do_get(ticket).await;
        drop(stream);
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
