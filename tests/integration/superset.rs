//! Apache Superset itself, driven through its REST API as a user drives its UI: add fjord as a
//! database (one per catalog), test the connection, browse schemas and tables, open tables in
//! SQL Lab (column metadata and the preview query) and run SQL Lab queries, including the
//! cross-catalog join that is why fjord exists. The rows Superset shows are compared with what
//! fjord answers directly.
//!
//! Superset runs from its own virtualenv (scripts/setup-test-env installs it) with a SQLite
//! metadata database; `tests/python/superset_serve.py` starts it and `superset_check.py` drives it.

use std::path::PathBuf;
use std::process::Stdio;

use fjord_tests::{Fjord, Postgres, TEST_DEMO, free_port, query_text};

use crate::scenario::SCENARIO_QUERY;
use serde_json::Value;

fn superset_venv() -> anyhow::Result<PathBuf> {
    let venv = match std::env::var_os("FJORD_SUPERSET_VENV") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/fjord/superset-venv"),
    };
    anyhow::ensure!(
        venv.join("bin/superset").exists(),
        "Superset's virtualenv {} is missing: run scripts/setup-test-env",
        venv.display()
    );
    Ok(venv)
}

/// The Superset web server, stopped when dropped.
struct Superset {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
}

impl Superset {
    fn start(venv: &std::path::Path, work: &std::path::Path) -> anyhow::Result<Superset> {
        let port = free_port();
        let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
        // The migrated metadata database is kept between runs: setting one up takes ~15 s.
        let template = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/fjord/superset-template");
        let log = work.join("superset.log");
        let child = tokio::process::Command::new(venv.join("bin/python"))
            .arg(scripts.join("superset_serve.py"))
            .arg(work.join("superset"))
            .arg(port.to_string())
            .arg("--template")
            .arg(&template)
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Superset {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// Runs `superset_check.py` with `args`; returns the rows of its queries.
    async fn check(&mut self, venv: &std::path::Path, args: &[String]) -> anyhow::Result<Value> {
        let rows = tempfile::NamedTempFile::new()?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/superset_check.py");
        let output = tokio::process::Command::new(venv.join("bin/python"))
            .arg(script)
            .args(["--url", &self.url, "--wait", "300", "--rows-json"])
            .arg(rows.path())
            .args(args)
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("{stdout}");
        if !output.status.success() {
            let exited = self.child.try_wait()?;
            anyhow::bail!(
                "Superset check failed: {}\n{stdout}\nSuperset ({}) log tail:\n{}",
                String::from_utf8_lossy(&output.stderr),
                match exited {
                    Some(status) => format!("exited: {status}"),
                    None => "running".into(),
                },
                tail(&self.log)
            );
        }
        Ok(serde_json::from_slice(&std::fs::read(rows.path())?)?)
    }
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A SQL Lab row's values in column order, as text (Superset returns JSON numbers and strings).
fn row_text(row: &Value, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .map(|column| match &row[*column] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superset_adds_fjord_browses_both_catalogs_and_runs_sql_lab() -> anyhow::Result<()> {
    let venv = superset_venv()?;
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let work = tempfile::tempdir()?;
    let mut superset = Superset::start(&venv, work.path())?;
    let uri = |catalog: &str| {
        format!(
            "postgresql+psycopg2://superset@127.0.0.1:{}/{catalog}",
            fjord.port()
        )
    };
    let daily = "SELECT interaction_type, count(*) AS n FROM cat_interactions_raw \
                 WHERE event_time >= TIMESTAMP '2000-01-01 00:00:00' GROUP BY interaction_type ORDER BY interaction_type";
    let args: Vec<String> = [
        "--database-name",
        "fjord lake",
        "--sqlalchemy-uri",
        &uri("iceberg"),
        "--expect-schema",
        "data_on_eks",
        "--expect-table",
        "data_on_eks.cat_interactions_raw",
        "--expect-table",
        "data_on_eks.visitor_checkins_raw",
        "--schema",
        "data_on_eks",
        "--query",
        SCENARIO_QUERY.trim_end_matches(';'),
        "--query",
        daily,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let lake = superset.check(&venv, &args).await?;

    let client = fjord.connect().await?;
    // Ties in the count may come in either order: compare as sets.
    let mut scenario = query_text(&client, SCENARIO_QUERY).await?;
    let mut shown: Vec<Vec<String>> = lake[0]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row_text(row, &["archetype", "like_count"]))
        .collect();
    assert!(!scenario.is_empty());
    scenario.sort();
    shown.sort();
    assert_eq!(shown, scenario, "the cross-catalog join in SQL Lab");
    let by_type: Vec<Vec<String>> = lake[1]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row_text(row, &["interaction_type", "n"]))
        .collect();
    assert_eq!(by_type, query_text(&client, daily).await?);

    // The live catalog as its own Superset database, with a time-grain query of the kind
    // Superset's charts send.
    let grain = "SELECT date_trunc('day', registered_at) AS __timestamp, count(*) AS visitors \
                 FROM visitors GROUP BY date_trunc('day', registered_at) ORDER BY __timestamp";
    let args: Vec<String> = [
        "--database-name",
        "fjord live",
        "--sqlalchemy-uri",
        &uri("postgresql"),
        "--expect-schema",
        "public",
        "--expect-table",
        "public.cats",
        "--expect-table",
        "public.visitors",
        "--schema",
        "public",
        "--query",
        grain,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let live = superset.check(&venv, &args).await?;
    let direct = postgres.connect("workshop").await?;
    let expected = direct
        .query_one(
            "SELECT count(DISTINCT date_trunc('day', registered_at)), count(*) FROM visitors",
            &[],
        )
        .await?;
    let days = live[0].as_array().expect("rows");
    assert_eq!(days.len() as i64, expected.get::<_, i64>(0), "{live}");
    let total: i64 = days
        .iter()
        .map(|row| row["visitors"].as_i64().expect("a count"))
        .sum();
    assert_eq!(total, expected.get::<_, i64>(1), "{live}");
    // Superset shows time-grain buckets as ISO timestamps in UTC.
    assert!(
        days[0]["__timestamp"]
            .as_str()
            .is_some_and(|day| day.ends_with("T00:00:00+00:00")),
        "{live}"
    );
    fjord.stop().await
}
