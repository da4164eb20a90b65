//! The `fjord` command line itself: argument parsing and the subcommands.
#![allow(clippy::print_stdout, clippy::print_stderr)] // The CLI's own output.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::RunningServer;
use clap::{Parser, Subcommand};
use fjord_config::{Config, ConfigError};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "fjord",
    version,
    about = "fjord: one SQL endpoint over Iceberg tables and live PostgreSQL databases",
    long_about = "fjord serves SQL over the PostgreSQL wire protocol. One statement can join Apache \
                  Iceberg tables with live PostgreSQL tables, named catalog.schema.table. Catalogs \
                  are configured in config.toml; without --config, the embedded default runs: a \
                  local Iceberg warehouse under .fjord/ and a Postgres catalog at 127.0.0.1:5432."
)]
struct Cli {
    /// Log filter, as in RUST_LOG (for example `info` or `fjord_pgwire=debug`). RUST_LOG wins
    /// when set.
    #[arg(long, global = true, default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the query server until SIGINT or SIGTERM.
    Serve {
        /// Configuration file; the embedded default (the repository's config.toml) if absent.
        #[arg(long, short, env = "FJORD_CONFIG")]
        config: Option<PathBuf>,
        /// Address of the PostgreSQL wire listener, overriding `server.postgres_listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Do not build the demo world on start, whatever `demo.build_on_start` says.
        #[arg(long)]
        no_demo: bool,
    },
    /// Build the cat-cafe demo world: raw event tables in the Iceberg catalog and, if the
    /// Postgres catalog is reachable, `public.cats` and `public.visitors`. Idempotent.
    Demo {
        #[arg(long, short, env = "FJORD_CONFIG")]
        config: Option<PathBuf>,
        /// Rows of cat_interactions_raw (overrides `demo.interactions`).
        #[arg(long)]
        interactions: Option<usize>,
        /// Days of history (overrides `demo.days`).
        #[arg(long)]
        days: Option<u32>,
        /// Generator seed (overrides `demo.seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// After building, produce the cafe's events live into Kafka (`[ingest.kafka]`) until
        /// SIGINT, for `fjord ingest` to land.
        #[arg(long)]
        live: bool,
        /// Events per second of `--live`, over all four topics.
        #[arg(long, default_value_t = 50.0, requires = "live")]
        rate: f64,
        /// Stop `--live` after this many events.
        #[arg(long, requires = "live")]
        events: Option<u64>,
    },
    /// Run the ingest sidecar until SIGINT or SIGTERM: the pipelines of `[ingest]` land their
    /// Kafka topics in Iceberg tables, exactly once, and the alert rules of `[ingest.rules]`
    /// run over the same records. Serves /health, /metrics and /alerts over HTTP.
    Ingest {
        #[arg(long, short, env = "FJORD_CONFIG")]
        config: Option<PathBuf>,
        /// Run only this pipeline and the rules over it (repeatable); everything when absent.
        #[arg(long = "pipeline", value_name = "NAME")]
        pipelines: Vec<String>,
        /// Address of the HTTP listener, overriding `ingest.http_listen`.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Merge small data files of Iceberg tables and expire old snapshots. Snapshots the ingest
    /// sidecar needs to find its Kafka offsets are always kept; data files that compaction
    /// replaced are deleted once no snapshot left reads them (see docs/ingest.md).
    Maintain {
        #[arg(long, short, env = "FJORD_CONFIG")]
        config: Option<PathBuf>,
        /// The Iceberg catalog to maintain; `ingest.catalog` when absent.
        #[arg(long)]
        catalog: Option<String>,
        /// Only this table, as schema.table (repeatable); every table of the catalog when absent.
        #[arg(long = "table", value_name = "SCHEMA.TABLE")]
        tables: Vec<String>,
        /// Expire snapshots older than this: a number with ms, s, m, h or d.
        #[arg(long, default_value = "1d")]
        older_than: String,
        /// Always keep this many of the newest snapshots of each table.
        #[arg(long, default_value_t = 100)]
        retain_last: usize,
        /// Merge each partition's data files smaller than this (a size such as 32MB).
        #[arg(long, default_value = "32MB")]
        small_file_size: String,
        /// Merge at most this much of small files per table and run.
        #[arg(long, default_value = "2GB")]
        compact_max_bytes: String,
        /// Only expire snapshots; merge no files (the only choice for REST catalogs).
        #[arg(long)]
        no_compact: bool,
        /// Report what would be merged and expired without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create an Iceberg table from Parquet files, as CREATE TABLE ... AS SELECT over them:
    /// for bulk loads such as benchmark data. The table must not exist; its schema is created
    /// if missing. Prints the number of rows loaded.
    Load {
        #[arg(long, short, env = "FJORD_CONFIG")]
        config: Option<PathBuf>,
        /// The table to create: catalog.schema.table, or schema.table in the default catalog.
        #[arg(long, value_name = "[CATALOG.]SCHEMA.TABLE")]
        table: String,
        /// Parquet files with the same schema.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the SCRAM-SHA-256 verifier of a password, for `[server.auth.users]`. The password
    /// is read from the first line of standard input (`printf '%s' "$PW" | fjord hash-password`);
    /// the verifier is PostgreSQL's format, so one copied from `pg_authid` works too.
    HashPassword,
    /// Validate a configuration file; exits non-zero with file, line and reason when it is wrong.
    CheckConfig {
        /// The file to check; the embedded default if absent.
        file: Option<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    }
}

/// Parses the process arguments and runs the subcommand: the whole `fjord` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                listen,
                no_demo,
            } => serve(config, listen, no_demo).await,
            Command::Demo {
                config,
                interactions,
                days,
                seed,
                live,
                rate,
                events,
            } => {
                let live = live.then_some(fjord_demo::live::LiveOptions {
                    rate,
                    limit: events,
                });
                demo(config, interactions, days, seed, live).await
            }
            Command::Ingest {
                config,
                pipelines,
                http_listen,
            } => ingest(config, pipelines, http_listen).await,
            Command::Maintain {
                config,
                catalog,
                tables,
                older_than,
                retain_last,
                small_file_size,
                compact_max_bytes,
                no_compact,
                dry_run,
            } => {
                let compact = (!no_compact)
                    .then(|| compact_policy(&small_file_size, &compact_max_bytes, dry_run))
                    .transpose()?;
                maintain(
                    config,
                    catalog,
                    tables,
                    &older_than,
                    retain_last,
                    compact,
                    dry_run,
                )
                .await
            }
            Command::Load {
                config,
                table,
                files,
            } => load(config, &table, &files).await,
            Command::HashPassword => hash_password(),
            Command::CheckConfig { file } => check_config(file),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    path: Option<PathBuf>,
    listen: Option<String>,
    no_demo: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = load_config(path.as_ref())?;
    if let Some(listen) = listen {
        config.server.postgres_listen = listen;
    }
    if no_demo {
        config.demo.build_on_start = false;
    }
    let server = RunningServer::start(config).await?;
    eprintln!(
        "fjord is ready: psql -h {} -p {}",
        server.postgres_address.ip(),
        server.postgres_address.port()
    );
    cancel_on_signal(
        server.shutdown_token(),
        "shutting down: no new queries; running ones get the grace period",
        "second signal: exiting now",
    );
    server.wait().await?;
    Ok(ExitCode::SUCCESS)
}

async fn ingest(
    path: Option<PathBuf>,
    pipelines: Vec<String>,
    http_listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path.as_ref())?;
    let options = fjord_ingest::IngestOptions {
        pipelines,
        http_listen,
    };
    let sidecar = fjord_ingest::IngestServer::start(&config, options).await?;
    eprintln!(
        "fjord ingest is running: http://{}/metrics",
        sidecar.http_address
    );
    cancel_on_signal(
        sidecar.shutdown_token(),
        "shutting down: committing what is buffered",
        "second signal: exiting now; uncommitted records will be read again",
    );
    sidecar.wait().await?;
    Ok(ExitCode::SUCCESS)
}

async fn load(path: Option<PathBuf>, table: &str, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let config = load_config(path.as_ref())?;
    let name: Vec<String> = table.split('.').map(str::to_string).collect();
    if !(2..=3).contains(&name.len()) || name.iter().any(String::is_empty) {
        anyhow::bail!("--table `{table}` is not schema.table or catalog.schema.table");
    }
    let engine = fjord_engine::Engine::new(config).await?;
    let session = engine.new_session();
    let schema = name[..name.len() - 1].join(".");
    session
        .run_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await?;
    let started = std::time::Instant::now();
    let rows = session.create_table_from_parquet(&name, files).await?;
    eprintln!(
        "loaded {rows} rows into {table} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{rows}");
    Ok(ExitCode::SUCCESS)
}

fn compact_policy(
    small_file_size: &str,
    max_bytes: &str,
    dry_run: bool,
) -> anyhow::Result<fjord_ingest::maintain::CompactPolicy> {
    let size = |flag: &str, text: &str| {
        fjord_config::parse_size(text)
            .filter(|bytes| *bytes > 0)
            .map(|bytes| bytes as u64)
            .ok_or_else(|| anyhow::anyhow!("{flag} `{text}` is not a size such as 32MB"))
    };
    Ok(fjord_ingest::maintain::CompactPolicy {
        small_file_bytes: size("--small-file-size", small_file_size)?,
        max_input_bytes: size("--compact-max-bytes", max_bytes)?,
        dry_run,
        ..Default::default()
    })
}

async fn maintain(
    path: Option<PathBuf>,
    catalog: Option<String>,
    tables: Vec<String>,
    older_than: &str,
    retain_last: usize,
    compact: Option<fjord_ingest::maintain::CompactPolicy>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    use fjord_ingest::maintain::{ExpirePolicy, maintain_catalog};
    let config = load_config(path.as_ref())?;
    let age = fjord_config::parse_duration(older_than).ok_or_else(|| {
        anyhow::anyhow!("--older-than `{older_than}` is not a duration such as 12h or 7d")
    })?;
    if retain_last == 0 {
        anyhow::bail!("--retain-last must be at least 1");
    }
    let policy = ExpirePolicy::older_than(age, retain_last, dry_run);
    let results = maintain_catalog(&config, catalog.as_deref(), &tables, compact, policy).await?;
    let dry = if dry_run { " (dry run)" } else { "" };
    let mut failed = false;
    for (table, result) in results {
        match result {
            Ok(report) => {
                if let Some(merged) = report.compacted {
                    println!(
                        "{table}: {} small files ({}) in {} partitions -> {} files ({}); \
                         data manifests {} -> {}{dry}{}",
                        merged.files_merged,
                        human_bytes(merged.bytes_merged),
                        merged.partitions,
                        merged.files_written,
                        human_bytes(merged.bytes_written),
                        merged.manifests_before,
                        merged.manifests_after,
                        if merged.files_left > 0 {
                            format!("; {} small files left for the next run", merged.files_left)
                        } else {
                            String::new()
                        }
                    );
                }
                let expired = report.expired;
                println!(
                    "{table}: {} snapshots -> {}{dry} (newest {} kept for the Kafka offsets); \
                     {} replaced data files deleted",
                    expired.snapshots_before,
                    expired.snapshots_after,
                    expired.kept_for_offsets,
                    expired.files_deleted
                );
            }
            Err(error) => {
                failed = true;
                eprintln!("error: {table}: {error}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// SIGINT or SIGTERM cancels `shutdown` (a graceful stop); a second one exits at once.
fn cancel_on_signal(
    shutdown: tokio_util::sync::CancellationToken,
    first: &'static str,
    second: &'static str,
) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("{first}");
        shutdown.cancel();
        wait_for_signal().await;
        tracing::warn!("{second}");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn demo(
    path: Option<PathBuf>,
    interactions: Option<usize>,
    days: Option<u32>,
    seed: Option<u64>,
    live: Option<fjord_demo::live::LiveOptions>,
) -> anyhow::Result<ExitCode> {
    let mut config = load_config(path.as_ref())?;
    if let Some(interactions) = interactions {
        config.demo.interactions = interactions;
    }
    if let Some(days) = days {
        config.demo.days = days;
    }
    if let Some(seed) = seed {
        config.demo.seed = seed;
    }
    let engine = fjord_engine::Engine::new(config.clone()).await?;
    let progress = |line: &str| eprintln!("demo: {line}");
    let report = fjord_demo::build(&engine, &config.demo, &progress).await?;
    for (table, rows) in &report.written {
        println!("{table}\t{rows} rows written");
    }
    for table in &report.kept {
        println!("{table}\tkept (already present)");
    }
    if let Some(reason) = &report.postgres_skipped {
        println!("postgres tables skipped: {reason}");
    }
    if let Some(options) = live {
        let Some(ingest) = &config.ingest else {
            anyhow::bail!("--live needs [ingest.kafka] in the configuration: where to produce");
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        cancel_on_signal(
            shutdown.clone(),
            "demo: stopping the live events",
            "second signal: exiting now",
        );
        eprintln!(
            "demo: producing about {} events/s into {} (Ctrl-C stops)",
            options.rate, ingest.kafka.bootstrap_servers
        );
        let produced =
            fjord_demo::live::run_live(&ingest.kafka, &config.demo, &options, shutdown, &|line| {
                eprintln!("demo: {line}")
            })
            .await
            .map_err(|error| anyhow::anyhow!(error))?;
        println!("{produced} live events produced");
    }
    Ok(ExitCode::SUCCESS)
}

fn hash_password() -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!(
            "no password on standard input: printf '%s' \"$PASSWORD\" | fjord hash-password"
        );
    }
    println!("{}", fjord_pgwire::hash_password(password));
    Ok(ExitCode::SUCCESS)
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match crate::check_config(path.as_deref()) {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(2))
        }
    }
}
