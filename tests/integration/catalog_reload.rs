//! Catalog edits without a restart: fjord serve follows its configuration file and catalogs
//! directory (and SIGHUP), rejects a broken edit whole while the previous catalogs keep
//! serving, and never shows the secrets it expands.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fjord_tests::{Fjord, Postgres, query_text, sqlstate};

/// Runs `sql` until it gives `expected` (or until 15 s have passed: a failure naming the last
/// answer); returns how long it took.
async fn until_answer(
    client: &tokio_postgres::Client,
    sql: &str,
    expected: &[&[&str]],
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let answer = query_text(client, sql)
            .await
            .map_err(|error| error.to_string());
        if let Ok(rows) = &answer
            && rows
                .iter()
                .map(|row| row.iter().map(String::as_str).collect::<Vec<_>>())
                .eq(expected.iter().map(|row| row.to_vec()))
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("`{sql}` did not give {expected:?} within 15 s; last answer: {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SQLSTATE of `sql`'s error, once it fails (within 15 s).
async fn until_error(client: &tokio_postgres::Client, sql: &str) -> Result<(String, String)> {
    let started = Instant::now();
    loop {
        if let Err(error) = client.simple_query(sql).await {
            let message = error
                .as_db_error()
                .map(|db| db.message().to_string())
                .unwrap_or_else(|| error.to_string());
            return Ok((sqlstate(&error).unwrap_or_default(), message));
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("`{sql}` still ran after 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A catalog file for `database` on `postgres`, its password read from `password_file`.
fn postgres_catalog_file(postgres: &Postgres, database: &str, password_file: &Path) -> String {
    format!(
        "type = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"{database}\"\nuser = \"postgres\"\n\
         password = \"${{file:{}}}\"\npool_size = 2\nconnect_timeout_seconds = 2\n",
        postgres.port,
        password_file.display()
    )
}

/// fjord's open connections to `database`, as Postgres counts them.
fn fjord_connections(postgres: &Postgres, database: &str) -> Result<u32> {
    let count = postgres.psql_admin(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fjord' AND datname = '{database}'"
        ),
    )?;
    count
        .trim()
        .parse()
        .with_context(|| format!("a count, not {count:?}"))
}

async fn catalogs_json(fjord: &Fjord) -> Result<serde_json::Value> {
    let (status, body) = fjord.http_get("/catalogs").await?;
    anyhow::ensure!(status == 200, "/catalogs answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_are_added_changed_and_removed_by_editing_files() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin("postgres", "CREATE DATABASE shop")?;
    postgres.psql_admin("postgres", "CREATE DATABASE shop_next")?;
    postgres.psql_admin(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'bowl'), (2, 'brush');\
         CREATE VIEW slow AS SELECT n FROM generate_series(1, 3) AS n WHERE pg_sleep(0.5) IS NOT NULL",
    )?;
    postgres.psql_admin(
        "shop_next",
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'bowl'), (2, 'brush'), (3, 'bed')",
    )?;
    let fjord = Fjord::start("").await?;
    let secrets = tempfile::tempdir()?;
    let password_file = secrets.path().join("shop-password");
    let secret = "zebra-Secret-4417";
    std::fs::write(&password_file, format!("{secret}\n"))?;
    let catalogs = fjord.directory.path().join("catalogs");
    std::fs::create_dir(&catalogs)?;
    // A session open before any edit follows them all.
    let client = fjord.connect().await?;
    let count = "SELECT count(*) FROM shop.public.items";
    let (state, message) = until_error(&client, count).await?;
    assert!(
        matches!(state.as_str(), "3D000" | "42P01"),
        "{state} {message}"
    );
    assert!(message.contains("shop"), "{message}");

    // Added: a file in the catalogs directory.
    std::fs::write(
        catalogs.join("shop.toml"),
        postgres_catalog_file(&postgres, "shop", &password_file),
    )?;
    let took = until_answer(&client, count, &[&["2"]]).await?;
    eprintln!("a catalog added by a new file answered after {took:?}");
    // EXPLAIN names the catalog and the SQL sent, never the connection's password.
    let explained = format!(
        "{:?}",
        query_text(&client, &format!("EXPLAIN ANALYZE {count}")).await?
    );
    assert!(explained.contains("catalog=shop"), "{explained}");
    assert!(!explained.contains(secret), "{explained}");
    let listed = query_text(&client, "SHOW CATALOGS").await?;
    assert!(listed.contains(&vec!["shop".to_string()]), "{listed:?}");
    // A prepared lookup run more than once keeps its plan; an edit must still reach it.
    let lookup = client
        .prepare("SELECT name FROM shop.public.items WHERE id = $1")
        .await?;
    for (id, name) in [(1, Some("bowl")), (2, Some("brush")), (3, None)] {
        let rows = client.query(&lookup, &[&id]).await?;
        let found: Option<String> = rows.first().map(|row| row.get(0));
        assert_eq!(found.as_deref(), name, "shop item {id}");
    }

    // Changed: its database. A query running on the old one finishes there.
    let running = {
        let background = fjord.connect().await?;
        tokio::spawn(async move {
            query_text(&background, "SELECT count(*) FROM shop.public.slow").await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        catalogs.join("shop.toml"),
        postgres_catalog_file(&postgres, "shop_next", &password_file),
    )?;
    let took = until_answer(&client, count, &[&["3"]]).await?;
    eprintln!("a changed catalog answered from its new database after {took:?}");
    assert_eq!(running.await??, vec![vec!["3".to_string()]]);
    let rows = client.query(&lookup, &[&3i32]).await?;
    assert_eq!(
        rows.first().map(|row| row.get::<_, String>(0)).as_deref(),
        Some("bed"),
        "the prepared lookup reads the catalog's new database"
    );

    // A broken edit is rejected whole, named with file and line; the catalogs keep serving.
    std::fs::write(
        catalogs.join("shop.toml"),
        format!(
            "{}colour = \"blue\"\n",
            postgres_catalog_file(&postgres, "shop", &password_file)
        ),
    )?;
    let rejected = wait_for_rejection(&fjord, "shop.toml").await?;
    assert!(rejected.contains("shop.toml:9"), "{rejected}");
    assert!(rejected.contains("colour"), "{rejected}");
    assert_eq!(
        query_text(&client, count).await?,
        vec![vec!["3".to_string()]]
    );
    // So is one in the main file, and an unresolvable reference.
    let config = std::fs::read_to_string(fjord.config_path())?;
    std::fs::write(fjord.config_path(), format!("{config}\n[catalogs.more\n"))?;
    let rejected = wait_for_rejection(&fjord, "config.toml").await?;
    assert!(rejected.contains("config.toml:"), "{rejected}");
    std::fs::write(fjord.config_path(), &config)?;
    std::fs::write(
        catalogs.join("shop.toml"),
        postgres_catalog_file(&postgres, "shop_next", Path::new("/no/such/secret")),
    )?;
    let rejected = wait_for_rejection(&fjord, "/no/such/secret").await?;
    assert!(rejected.contains("/no/such/secret"), "{rejected}");
    assert_eq!(
        query_text(&client, count).await?,
        vec![vec!["3".to_string()]]
    );
    let status = catalogs_json(&fjord).await?;
    let shop = status["catalogs"]
        .as_array()
        .context("catalogs")?
        .iter()
        .find(|catalog| catalog["name"] == "shop")
        .context("shop listed")?;
    assert_eq!(shop["type"], "postgres", "{status}");
    assert_eq!(shop["state"], "available", "{status}");
    assert!(
        shop["file"]
            .as_str()
            .is_some_and(|file| file.ends_with("catalogs/shop.toml")),
        "{status}"
    );

    // Removed: its queries fail naming it, and its connections close.
    std::fs::remove_file(catalogs.join("shop.toml"))?;
    let (state, message) = until_error(&client, count).await?;
    assert!(
        matches!(state.as_str(), "3D000" | "42P01"),
        "{state} {message}"
    );
    assert!(message.contains("shop"), "{message}");
    let error = client
        .query(&lookup, &[&1i32])
        .await
        .expect_err("the prepared lookup's catalog is gone");
    assert!(
        matches!(sqlstate(&error).as_deref(), Some("3D000" | "42P01")),
        "{error:?}"
    );
    let listed = query_text(&client, "SHOW CATALOGS").await?;
    assert!(!listed.contains(&vec!["shop".to_string()]), "{listed:?}");
    let status = catalogs_json(&fjord).await?;
    assert!(status["config"]["rejected_edit"].is_null(), "{status}");
    let started = Instant::now();
    while fjord_connections(&postgres, "shop_next")? > 0 {
        if started.elapsed() > Duration::from_secs(15) {
            bail!("fjord kept its connections to a removed catalog's database");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An unreachable database is not a bad edit: its catalog exists, unavailable, with why.
    std::fs::write(
        catalogs.join("down.toml"),
        format!(
            "type = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"x\"\nuser = \"x\"\nconnect_timeout_seconds = 1\n",
            fjord_tests::free_port()
        ),
    )?;
    let started = Instant::now();
    loop {
        let status = catalogs_json(&fjord).await?;
        let down = status["catalogs"]
            .as_array()
            .and_then(|catalogs| catalogs.iter().find(|c| c["name"] == "down").cloned());
        if let Some(down) = down
            && down["state"] == "unavailable"
        {
            assert!(
                down["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                "{status}"
            );
            assert!(status["config"]["rejected_edit"].is_null(), "{status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("the unreachable catalog never showed as unavailable: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_file(catalogs.join("down.toml"))?;

    // The expanded password never shows: not in answers, errors or HTTP output.
    let shown = format!("{status}{:?}", query_text(&client, "SHOW CATALOGS").await?);
    assert!(!shown.contains(secret), "{shown}");
    fjord.stop().await?;
    Ok(())
}

/// Waits for `/catalogs` to report a rejected edit whose reason mentions `naming`; returns
/// the reason.
async fn wait_for_rejection(fjord: &Fjord, naming: &str) -> Result<String> {
    let started = Instant::now();
    loop {
        let status = catalogs_json(fjord).await?;
        if let Some(reason) = status["config"]["rejected_edit"]["reason"].as_str()
            && reason.contains(naming)
        {
            return Ok(reason.to_string());
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("no rejected edit reported within 15 s: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn sighup_reloads_and_the_log_never_holds_a_secret() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", "CREATE TABLE toys (id int)")?;
    let serve = crate::process::Serve::start("")?;
    let directory = serve
        .config_path()
        .parent()
        .context("a directory")?
        .to_path_buf();
    let password_file = directory.join("pg-password");
    let secret = "okapi-Secret-9921";
    std::fs::write(&password_file, secret)?;
    let catalogs = directory.join("catalogs");
    std::fs::create_dir(&catalogs)?;
    std::fs::write(
        catalogs.join("shop.toml"),
        postgres_catalog_file(&postgres, "workshop", &password_file),
    )?;
    let started = Instant::now();
    loop {
        let (ok, output) = serve.psql(
            "host=127.0.0.1 user=tester dbname=iceberg",
            None,
            "SELECT count(*) FROM shop.public.toys",
        )?;
        if ok {
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!(
                "the new catalog never answered: {output}\n{}",
                serve.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = std::process::Command::new("kill")
        .args(["-HUP", &serve.child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -HUP failed");
    let started = Instant::now();
    while !serve
        .log_text()
        .contains("configuration reloaded after SIGHUP: no catalog changed")
    {
        if started.elapsed() > Duration::from_secs(15) {
            bail!("no reload after SIGHUP:\n{}", serve.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A rejected edit and a failing statement on the catalog: neither shows the password.
    std::fs::write(
        catalogs.join("shop.toml"),
        format!(
            "{}port = \"x\"\n",
            postgres_catalog_file(&postgres, "workshop", &password_file)
        ),
    )?;
    let started = Instant::now();
    while !serve.log_text().contains("configuration edit rejected") {
        if started.elapsed() > Duration::from_secs(15) {
            bail!("no rejection logged:\n{}", serve.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=tester dbname=iceberg",
        None,
        "SELECT * FROM shop.public.nothing_here",
    )?;
    assert!(!ok, "{output}");
    assert!(!output.contains(secret), "{output}");
    let log = serve.log_text();
    assert!(log.contains("shop.toml:"), "{log}");
    assert!(!log.contains(secret), "the log holds the password:\n{log}");
    Ok(())
}

/// The SQLSTATE and message of a statement that must fail.
async fn failure(client: &tokio_postgres::Client, sql: &str) -> Result<(String, String)> {
    match client.simple_query(sql).await {
        Ok(_) => bail!("`{sql}` succeeded"),
        Err(error) => Ok((
            sqlstate(&error).unwrap_or_default(),
            error
                .as_db_error()
                .map(|db| db.message().to_string())
                .unwrap_or_else(|| error.to_string()),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_catalog_persists_a_file_and_drop_catalog_removes_it() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE toys (id int); INSERT INTO toys VALUES (1), (2), (3)",
    )?;
    let mut fjord = Fjord::start("").await?;
    let secrets = tempfile::tempdir()?;
    let password_file = secrets.path().join("pw");
    let secret = "lynx-Secret-3318";
    std::fs::write(&password_file, secret)?;
    let client = fjord.connect().await?;
    let create = format!(
        "CREATE CATALOG shop USING postgres WITH (host = '127.0.0.1', port = {}, database = 'workshop', \
         user = 'postgres', password = '${{file:{}}}', schemas = ARRAY['public'], pool_size = 2)",
        postgres.port,
        password_file.display()
    );
    client.simple_query(&create).await?;
    // At once, without waiting for the configuration watch.
    let count = "SELECT count(*) FROM shop.public.toys";
    assert_eq!(
        query_text(&client, count).await?,
        vec![vec!["3".to_string()]]
    );
    let file = fjord.directory.path().join("catalogs/shop.toml");
    let text = std::fs::read_to_string(&file)?;
    assert!(text.contains("${file:"), "{text}");
    assert!(!text.contains(secret), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let (state, message) = failure(&client, &create).await?;
    assert_eq!(state, "42710", "{message}");
    client
        .simple_query(&create.replace("CREATE CATALOG shop", "CREATE CATALOG IF NOT EXISTS shop"))
        .await?;
    // A setting the catalog type does not have: refused, and no file is left.
    let (state, message) = failure(
        &client,
        "CREATE CATALOG bad USING postgres WITH (hots = 'db', database = 'x', user = 'y')",
    )
    .await?;
    assert_eq!(state, "22023", "{message}");
    assert!(message.contains("hots"), "{message}");
    assert!(!fjord.directory.path().join("catalogs/bad.toml").exists());
    let (state, message) =
        failure(&client, "CREATE CATALOG odd USING mysql WITH (host = 'x')").await?;
    assert_eq!(state, "0A000", "{message}");
    // Catalogs of the main file are changed there, not in SQL.
    let (state, message) = failure(&client, "DROP CATALOG iceberg").await?;
    assert_eq!(state, "55000", "{message}");
    assert!(message.contains("config.toml"), "{message}");

    // A restart finds the catalog in its file.
    drop(client);
    fjord.restart().await?;
    let client = fjord.connect().await?;
    assert_eq!(
        query_text(&client, count).await?,
        vec![vec!["3".to_string()]]
    );

    client.simple_query("DROP CATALOG shop").await?;
    assert!(!file.exists());
    let (state, message) = failure(&client, count).await?;
    assert_eq!(state, "42P01", "{message}");
    let (state, message) = failure(&client, "DROP CATALOG shop").await?;
    assert_eq!(state, "3D000", "{message}");
    client.simple_query("DROP CATALOG IF EXISTS shop").await?;
    fjord.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_change_catalogs_and_the_statement_is_never_logged() -> Result<()> {
    let postgres = Postgres::start()?;
    let alice = crate::auth::fjord_verifier("alice-pw")?;
    let bob = crate::auth::fjord_verifier("bob-pw")?;
    let serve = crate::process::Serve::start(&format!(
        "[server.auth]\nadmins = [\"alice\"]\n[server.auth.users]\nalice = \"{alice}\"\nbob = \"{bob}\"\n"
    ))?;
    let secret = "plain-Literal-5512";
    let create = format!(
        "CREATE CATALOG shop USING postgres WITH (host = '127.0.0.1', port = {}, database = 'workshop', \
         user = 'postgres', password = '{secret}')",
        postgres.port
    );
    let bob = serve.connect("bob", "bob-pw").await?;
    let (state, message) = failure(&bob, &create).await?;
    assert_eq!(state, "42501", "{message}");
    let (state, message) = failure(&bob, "DROP CATALOG iceberg").await?;
    assert_eq!(state, "42501", "{message}");
    let alice = serve.connect("alice", "alice-pw").await?;
    alice.simple_query(&create).await?;
    let rows = query_text(&bob, "SHOW CATALOGS").await?;
    assert!(rows.contains(&vec!["shop".to_string()]), "{rows:?}");
    // A literal password is kept as given in the catalog's file (readable by its owner only),
    // but the log, at debug level, never shows it.
    let listed = query_text(&alice, "SELECT query FROM system.runtime.queries").await?;
    let listed = format!("{listed:?}");
    assert!(listed.contains("CREATE CATALOG shop"), "{listed}");
    assert!(!listed.contains(secret), "{listed}");
    let log = serve.log_text();
    assert!(log.contains("CREATE CATALOG shop"), "{log}");
    assert!(!log.contains(secret), "the log holds the password:\n{log}");
    Ok(())
}

/// A connection to fjord as application `application`.
async fn connect_as(fjord: &Fjord, application: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=tester dbname=iceberg application_name={application}",
            fjord.port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Starts the minute-long `pg.public.slow` query on a connection of application `cat-report`.
async fn start_slow_report(
    fjord: &Fjord,
) -> Result<tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>> {
    let reporter = connect_as(fjord, "cat-report").await?;
    Ok(tokio::spawn(async move {
        reporter
            .simple_query("SELECT count(*) FROM pg.public.slow")
            .await
            .map(|_| ())
    }))
}

/// Waits until `system.runtime.queries` shows a running statement reading `pg.public.slow`;
/// returns its id, backend pid, user, source and catalogs.
async fn running_slow_query(client: &tokio_postgres::Client) -> Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let rows = query_text(
            client,
            "SELECT query_id, CAST(backend_pid AS text), \"user\", source, catalogs \
             FROM system.runtime.queries WHERE state = 'RUNNING' AND query LIKE '%public.slow%' \
             AND query NOT LIKE '%system.runtime%'",
        )
        .await?;
        if let Some(row) = rows.into_iter().next() {
            return Ok(row);
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("the slow query never showed as running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_tables_show_catalogs_and_queries_and_kill_a_query() -> Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE VIEW slow AS SELECT n FROM generate_series(1, 1) AS n WHERE pg_sleep(60) IS NOT NULL",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("pg")).await?;
    let watcher = fjord.connect().await?;

    let catalogs = query_text(
        &watcher,
        "SELECT catalog_name, connector_name, state FROM system.runtime.catalogs ORDER BY 1",
    )
    .await?;
    assert_eq!(
        catalogs,
        vec![
            vec!["iceberg".to_string(), "iceberg".into(), "available".into()],
            vec!["pg".to_string(), "postgres".into(), "available".into()],
        ]
    );
    let nodes = query_text(
        &watcher,
        "SELECT count(*), bool_and(coordinator) FROM system.runtime.nodes",
    )
    .await?;
    assert_eq!(nodes, vec![vec!["1".to_string(), "t".into()]]);

    // A finished statement stays listed, with its rows.
    query_text(
        &watcher,
        "SELECT * FROM (VALUES (1), (2), (3)) AS t(x) WHERE x > 0",
    )
    .await?;
    let finished = query_text(
        &watcher,
        "SELECT state, CAST(rows AS text) FROM system.runtime.queries WHERE query LIKE '%VALUES (1), (2), (3)%' \
         AND query NOT LIKE '%system.runtime%'",
    )
    .await?;
    assert_eq!(finished, vec![vec!["FINISHED".to_string(), "3".into()]]);

    // Killed by id: the client gets 57014 and the statement shows as cancelled.
    let slow = start_slow_report(&fjord).await?;
    let running = running_slow_query(&watcher).await?;
    assert_eq!(&running[2..], ["tester", "cat-report", "pg"], "{running:?}");
    let (status, body) = fjord.http_get("/queries").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&running[0]), "{body}");
    watcher
        .simple_query(&format!(
            "CALL system.runtime.kill_query(query_id => '{}', message => 'too slow')",
            running[0]
        ))
        .await?;
    let error = tokio::time::timeout(Duration::from_secs(15), slow)
        .await??
        .expect_err("the killed query failed");
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"), "{error}");
    let state = query_text(
        &watcher,
        &format!(
            "SELECT state FROM system.runtime.queries WHERE query_id = '{}'",
            running[0]
        ),
    )
    .await?;
    assert_eq!(state, vec![vec!["CANCELLED".to_string()]]);
    let (state, message) = failure(
        &watcher,
        &format!("CALL system.runtime.kill_query('{}')", running[0]),
    )
    .await?;
    assert_eq!(state, "42704", "{message}");

    // pg_cancel_backend by the connection's process id.
    let slow = start_slow_report(&fjord).await?;
    let running = running_slow_query(&watcher).await?;
    let cancelled = query_text(
        &watcher,
        &format!("SELECT pg_cancel_backend({})", running[1]),
    )
    .await?;
    assert_eq!(cancelled, vec![vec!["t".to_string()]]);
    let error = tokio::time::timeout(Duration::from_secs(15), slow)
        .await??
        .expect_err("the cancelled query failed");
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"), "{error}");
    let none = query_text(&watcher, "SELECT pg_cancel_backend(999999)").await?;
    assert_eq!(none, vec![vec!["f".to_string()]]);
    fjord.stop().await?;
    Ok(())
}
