//! Passwords and TLS on the Postgres front door, checked with psql (libpq) and tokio-postgres
//! against `fjord serve` run as its own process, so that its log can be searched for secrets.

use std::process::{Command, Stdio};

use crate::process::{Serve, fjord_binary};
use anyhow::{Context, Result, bail};
use fjord_tests::{Postgres, make_certificates};

const ALICE_PASSWORD: &str = "cat nap 9; 'quoted' \\ ünï";
const BOB_PASSWORD: &str = "whiskers-4-ever";

/// The verifier a real PostgreSQL stores for `password`.
fn postgres_verifier(postgres: &Postgres, role: &str, password: &str) -> Result<String> {
    let literal = password.replace('\'', "''");
    postgres.psql_admin(
        "postgres",
        &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{literal}'"),
    )?;
    let verifier = postgres.psql_admin(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
    )?;
    let verifier = verifier.trim().to_string();
    if !verifier.starts_with("SCRAM-SHA-256$") {
        bail!("PostgreSQL stored no SCRAM verifier: {verifier}");
    }
    Ok(verifier)
}

/// The verifier `fjord hash-password` prints for `password`.
pub(crate) fn fjord_verifier(password: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(fjord_binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "fjord hash-password failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

fn users_toml(users: &[(&str, &str)]) -> String {
    let mut toml = String::from("[server.auth.users]\n");
    for (user, verifier) in users {
        toml.push_str(&format!("{user} = \"{verifier}\"\n"));
    }
    toml
}

fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.code().code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_logs_in_with_postgres_and_fjord_verifiers_and_refuses_wrong_passwords_with_28p01()
-> Result<()> {
    let postgres = Postgres::start()?;
    let alice = postgres_verifier(&postgres, "alice", ALICE_PASSWORD)?;
    let bob = fjord_verifier(BOB_PASSWORD)?;
    let serve = Serve::start(&users_toml(&[("alice", &alice), ("bob", &bob)]))?;

    // libpq, over plaintext TCP: SCRAM never sends the password.
    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=alice dbname=iceberg sslmode=disable",
        Some(ALICE_PASSWORD),
        "SELECT current_user",
    )?;
    assert!(ok, "{output}");
    assert_eq!(output.trim(), "alice");
    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=bob dbname=iceberg",
        Some(BOB_PASSWORD),
        "SELECT 40 + 2",
    )?;
    assert!(ok, "{output}");
    assert_eq!(output.trim(), "42");

    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=alice dbname=iceberg",
        Some("cat nap 8"),
        "SELECT 1",
    )?;
    assert!(!ok);
    assert!(
        output.contains("password authentication failed for user \"alice\""),
        "{output}"
    );

    // tokio-postgres: the codes, and an unknown user looks exactly like a wrong password.
    let client = serve.connect("bob", BOB_PASSWORD).await?;
    let row = client.query_one("SELECT current_user", &[]).await?;
    assert_eq!(row.get::<_, String>(0), "bob");
    let wrong = serve
        .connect("bob", ALICE_PASSWORD)
        .await
        .err()
        .context("wrong password accepted")?;
    let wrong = wrong.downcast::<tokio_postgres::Error>()?;
    assert_eq!(sqlstate(&wrong), "28P01");
    let unknown = serve
        .connect("mallory", BOB_PASSWORD)
        .await
        .err()
        .context("unknown user accepted")?;
    let unknown = unknown.downcast::<tokio_postgres::Error>()?;
    assert_eq!(sqlstate(&unknown), "28P01");
    assert_eq!(
        unknown.as_db_error().map(|db| db.message().to_string()),
        Some("password authentication failed for user \"mallory\"".to_string())
    );

    // Drivers with their own SCRAM code: asyncpg (Python) and node-postgres.
    let asyncpg = format!(
        "import asyncio, asyncpg, json\n\
         async def main():\n\
         \x20   url = 'postgresql://127.0.0.1:{port}/iceberg'\n\
         \x20   c = await asyncpg.connect(url, user='alice', password={right:?})\n\
         \x20   who = await c.fetchval('SELECT current_user')\n\
         \x20   await c.close()\n\
         \x20   try:\n\
         \x20       await asyncpg.connect(url, user='alice', password='nope')\n\
         \x20       code = None\n\
         \x20   except asyncpg.PostgresError as e:\n\
         \x20       code = e.sqlstate\n\
         \x20   print(json.dumps([who, code]))\n\
         asyncio.run(main())\n",
        port = serve.port,
        right = ALICE_PASSWORD,
    );
    let output = Command::new(fjord_tests::test_venv()?.join("bin/python"))
        .arg("-c")
        .arg(&asyncpg)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "asyncpg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), r#"["alice", "28P01"]"#);
    let node = format!(
        "const {{ Client }} = require('pg');\n\
         (async () => {{\n\
           const ok = new Client({{ host: '127.0.0.1', port: {port}, user: 'bob', password: {right:?}, database: 'iceberg' }});\n\
           await ok.connect();\n\
           const who = (await ok.query('SELECT current_user AS u')).rows[0].u;\n\
           await ok.end();\n\
           const bad = new Client({{ host: '127.0.0.1', port: {port}, user: 'bob', password: 'nope', database: 'iceberg' }});\n\
           let code = null;\n\
           try {{ await bad.connect(); }} catch (e) {{ code = e.code; }}\n\
           console.log(JSON.stringify([who, code]));\n\
         }})().catch((e) => {{ console.error(e); process.exit(1); }});\n",
        port = serve.port,
        right = BOB_PASSWORD,
    );
    let output = Command::new("node")
        .arg("-e")
        .arg(&node)
        .env("NODE_PATH", crate::node_drivers::node_modules()?)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node-postgres: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), r#"["bob","28P01"]"#);

    // A client that sends no password at all gets nowhere either.
    let (ok, output) = serve.psql("host=127.0.0.1 user=bob dbname=iceberg", None, "SELECT 1")?;
    assert!(!ok, "{output}");

    // Failures are logged with the user, never with a password or a verifier.
    let log = serve.log_text();
    assert!(log.contains("password authentication failed"), "{log}");
    for secret in [
        ALICE_PASSWORD,
        BOB_PASSWORD,
        "cat nap 8",
        alice.as_str(),
        bob.as_str(),
    ] {
        assert!(!log.contains(secret), "the log shows a secret: {secret}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_full_works_and_plaintext_is_refused_when_tls_is_required() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (ca, cert, key) = make_certificates(certs.path())?;
    let bob = fjord_verifier(BOB_PASSWORD)?;
    // Cleartext passwords, which fjord only accepts over TLS.
    let serve = Serve::start(&format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nrequired = true\n\n\
         [server.auth]\nmethod = \"password\"\n{}",
        cert.display(),
        key.display(),
        users_toml(&[("bob", &bob)])
    ))?;
    let ca = ca.display().to_string();

    let (ok, output) = serve.psql(
        &format!("host=localhost user=bob dbname=iceberg sslmode=verify-full sslrootcert={ca}"),
        Some(BOB_PASSWORD),
        "\\conninfo",
    )?;
    assert!(ok, "{output}");
    assert!(
        output.contains("SSL connection (protocol: TLSv1.3"),
        "{output}"
    );
    let (ok, output) = serve.psql(
        &format!("host=localhost user=bob dbname=iceberg sslmode=verify-full sslrootcert={ca}"),
        Some(BOB_PASSWORD),
        "SELECT current_user",
    )?;
    assert!(ok, "{output}");
    assert_eq!(output.trim(), "bob");
    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=bob dbname=iceberg sslmode=require",
        Some(BOB_PASSWORD),
        "SELECT 1",
    )?;
    assert!(ok, "{output}");

    // The wrong password over TLS.
    let (ok, output) = serve.psql(
        &format!("host=localhost user=bob dbname=iceberg sslmode=verify-full sslrootcert={ca}"),
        Some("whiskers-4-never"),
        "SELECT 1",
    )?;
    assert!(!ok);
    assert!(
        output.contains("password authentication failed for user \"bob\""),
        "{output}"
    );

    // Plaintext is refused before any password is asked for.
    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=bob dbname=iceberg sslmode=disable",
        Some(BOB_PASSWORD),
        "SELECT 1",
    )?;
    assert!(!ok);
    assert!(output.contains("this server requires TLS"), "{output}");

    // A client that trusts another CA does not connect.
    let other = tempfile::tempdir()?;
    let (other_ca, _, _) = make_certificates(other.path())?;
    let (ok, output) = serve.psql(
        &format!(
            "host=localhost user=bob dbname=iceberg sslmode=verify-full sslrootcert={}",
            other_ca.display()
        ),
        Some(BOB_PASSWORD),
        "SELECT 1",
    )?;
    assert!(!ok);
    assert!(output.contains("certificate verify failed"), "{output}");

    let log = serve.log_text();
    assert!(
        log.contains("tls required"),
        "the start-up log states TLS: {log}"
    );
    assert!(!log.contains(BOB_PASSWORD), "the log shows the password");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_that_cannot_start_stops_fjord_and_check_config_says_why() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (_, cert, _) = make_certificates(certs.path())?;
    let missing = certs.path().join("missing.key");
    let server_toml = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        missing.display()
    );
    let error = Serve::start(&server_toml)
        .err()
        .context("fjord served without its key")?;
    let message = format!("{error:#}");
    assert!(message.contains("exited with"), "{message}");
    assert!(message.contains("missing.key"), "{message}");
    assert!(
        !message.contains("listening"),
        "it must not listen at all: {message}"
    );

    let config = certs.path().join("config.toml");
    std::fs::write(
        &config,
        format!("{server_toml}\n[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n"),
    )?;
    let output = Command::new(fjord_binary())
        .arg("check-config")
        .arg(&config)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("server.tls") && stderr.contains("missing.key"),
        "{stderr}"
    );
    Ok(())
}

/// Without users, the embedded default trusts loopback clients, and says so when it starts.
#[tokio::test(flavor = "multi_thread")]
async fn without_users_loopback_is_trusted_and_the_log_says_so() -> Result<()> {
    let serve = Serve::start("")?;
    let (ok, output) = serve.psql(
        "host=127.0.0.1 user=anyone dbname=iceberg",
        None,
        "SELECT current_user",
    )?;
    assert!(ok, "{output}");
    assert_eq!(output.trim(), "anyone");
    let log = serve.log_text();
    assert!(log.contains("trusting loopback connections"), "{log}");
    Ok(())
}
