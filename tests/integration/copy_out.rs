//! `COPY ... TO STDOUT` through psql's `\copy` and a driver: the bytes fjord writes in text,
//! CSV and binary format are the bytes PostgreSQL writes for the same rows.

use std::path::Path;

use fjord_tests::{Fjord, Postgres, TEST_DEMO};
use futures::TryStreamExt;

const TABLE: &str = "CREATE TABLE copy_check (id int PRIMARY KEY, label text, amount numeric(12,2), \
     seen timestamptz, ok boolean, ratio float8, tag uuid, doc jsonb, day date, \
     small int2, big int8, single float4, code varchar(12)); \
     INSERT INTO copy_check VALUES \
     (1, E'tab\\there', 12.50, '2026-01-02 03:04:05.5+00', true, 0.1, \
      'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2], \"b\": \"x,y\"}', '2026-01-02', \
      -32768, 9223372036854775807, 1.5, 'A-1'), \
     (2, E'line\\nbreak, \"quoted\" and back\\\\slash', -0.01, NULL, false, 1e20, NULL, NULL, NULL, \
      32767, -9223372036854775808, -0.25, ''), \
     (3, '', NULL, '1999-12-31 23:59:59+00', NULL, NULL, NULL, '[]', '1999-12-31', NULL, NULL, NULL, NULL), \
     (4, NULL, 0, '2026-06-30 12:00:00+00', true, -2.5, NULL, NULL, NULL, 0, 0, 0, 'naïve'), \
     (5, 'Miso 🐱 naïve\\N', 1234567890.12, NULL, NULL, 3, NULL, NULL, NULL, 7, 42, 3.25, NULL)";

/// psql's `\copy` of `select` into `file` (written by psql, on the client) with `options`.
fn copy_command(select: &str, file: &Path, options: &str) -> String {
    format!("\\copy ({select}) to '{}' with ({options})", file.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_writes_what_postgres_writes() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", TABLE)?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let directory = tempfile::tempdir()?;

    for (name, options) in [
        ("text", "format text"),
        ("csv", "format csv, header"),
        (
            "csv-custom",
            "format csv, delimiter ';', null 'NULL', force_quote (label, ok)",
        ),
        ("text-custom", "format text, delimiter '|', null ''"),
        ("binary", "format binary"),
    ] {
        let select = "SELECT * FROM public.copy_check ORDER BY id";
        let from_fjord = directory.path().join(format!("{name}.fjord"));
        let from_postgres = directory.path().join(format!("{name}.postgres"));
        let (ok, stdout, stderr) = fjord
            .psql_in(
                "postgresql",
                &[
                    "-c",
                    "SET TimeZone = 'UTC'",
                    "-c",
                    &copy_command(select, &from_fjord, options),
                ],
            )
            .await?;
        assert!(ok, "{name}: {stderr}");
        assert!(
            stdout.contains("COPY 5"),
            "{name}: psql reports the rows: {stdout}"
        );
        postgres.psql(
            "workshop",
            &[
                "-c",
                "SET TimeZone = 'UTC'",
                "-c",
                &copy_command(select, &from_postgres, options),
            ],
        )?;
        let fjord_bytes = std::fs::read(&from_fjord)?;
        let postgres_bytes = std::fs::read(&from_postgres)?;
        assert_eq!(
            String::from_utf8_lossy(&fjord_bytes),
            String::from_utf8_lossy(&postgres_bytes),
            "{name}: fjord's COPY output differs from PostgreSQL's"
        );
        assert_eq!(fjord_bytes, postgres_bytes, "{name}: bytes differ");
    }

    // A lake table by name, and no rows at all.
    let (ok, stdout, stderr) = fjord
        .psql(&[
            "-c",
            "\\copy data_on_eks.cat_interactions_raw (cat_id, interaction_type) to stdout with csv header",
            "-c",
            "SELECT count(*) FROM data_on_eks.cat_interactions_raw",
        ])
        .await?;
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "cat_id,interaction_type");
    let counted: usize = lines
        .iter()
        .map(|line| line.trim())
        .find_map(|line| line.parse().ok())
        .expect("count(*) row");
    assert!(counted > 0);
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.split(',').count() == 2 && line.len() > 36)
            .count(),
        counted,
        "one CSV line per lake row:\n{}",
        &stdout[..stdout.len().min(500)]
    );
    let empty = directory.path().join("empty.bin");
    let (ok, stdout, stderr) = fjord
        .psql(&[
            "-c",
            &copy_command("SELECT 1 AS a WHERE false", &empty, "format binary"),
        ])
        .await?;
    assert!(ok && stdout.contains("COPY 0"), "{stdout}{stderr}");
    assert_eq!(
        std::fs::read(&empty)?,
        b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\xff\xff",
        "an empty binary copy is the header and the trailer"
    );

    // Through a driver: tokio-postgres sends COPY in the extended protocol.
    let client = fjord.connect_to("postgresql").await?;
    let rows: Vec<_> = client
        .copy_out(
            "COPY (SELECT id, label FROM public.copy_check WHERE id < 3 ORDER BY id) TO STDOUT",
        )
        .await?
        .try_collect()
        .await?;
    let text: String = rows
        .iter()
        .map(|row| String::from_utf8_lossy(row).into_owned())
        .collect();
    assert_eq!(
        text,
        "1\ttab\\there\n2\tline\\nbreak, \"quoted\" and back\\\\slash\n"
    );
    assert_eq!(rows.len(), 2, "one CopyData message per row");

    // Refusals, with Postgres's codes; nothing is written on the server.
    let target = directory.path().join("server-side.csv");
    for (sql, code) in [
        (
            format!("COPY public.copy_check TO '{}'", target.display()),
            "42501",
        ),
        (
            "COPY public.copy_check TO PROGRAM 'touch /tmp/x'".to_string(),
            "42501",
        ),
        ("COPY public.copy_check FROM STDIN".to_string(), "0A000"),
        (
            "COPY public.copy_check TO STDOUT (FORMAT xml)".to_string(),
            "22023",
        ),
        (
            "COPY public.copy_check TO STDOUT (FORMAT binary, HEADER)".to_string(),
            "42601",
        ),
        (
            "COPY public.copy_check TO STDOUT (FORMAT csv, FORCE_QUOTE (nope))".to_string(),
            "42703",
        ),
        ("COPY public.nope TO STDOUT".to_string(), "42P01"),
        (
            "SELECT 1; COPY public.copy_check TO STDOUT".to_string(),
            "0A000",
        ),
    ] {
        let error = client.simple_query(&sql).await.expect_err(&sql);
        assert_eq!(
            error.code().map(|code| code.code()),
            Some(code),
            "{sql}: {error:?}"
        );
    }
    assert!(!target.exists(), "COPY TO a file wrote on the server");

    // An error while rows are produced ends the copy with the error; the session goes on.
    let error = client
        .copy_out("COPY (SELECT 10 / (x - 3) FROM generate_series(1, 5) AS g(x)) TO STDOUT")
        .await;
    let error = match error {
        Ok(stream) => stream
            .try_collect::<Vec<_>>()
            .await
            .expect_err("division by zero"),
        Err(error) => error,
    };
    assert_eq!(
        error.code().map(|code| code.code()),
        Some("22012"),
        "{error:?}"
    );
    let row = client
        .query_one("SELECT count(*) FROM public.copy_check", &[])
        .await?;
    assert_eq!(row.get::<_, i64>(0), 5);

    fjord.stop().await?;
    Ok(())
}
