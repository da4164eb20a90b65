//! The `fjord` command line: `serve`, `demo`, `ingest` and `check-config`, and the in-process
//! server that tests start the same way `fjord serve` does.

mod command;
mod http;
mod reload;

pub use command::main;
pub use reload::ReloadStatus;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fjord_config::Config;
use fjord_engine::Engine;
use fjord_pgwire::PgServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `fjord check-config`: whether the file (or the embedded default) is valid, and what to
/// print: a summary of its catalogs, or `file:line:column: key ...: reason`.
/// "tumbling 1m windows", for the check's summary.
fn describe_window(kind: &fjord_config::WindowKind) -> String {
    let span = |duration: &std::time::Duration| {
        let ms = duration.as_millis();
        [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .into_iter()
        .find(|(unit, _)| ms.is_multiple_of(*unit))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, name)| format!("{}{name}", ms / unit),
        )
    };
    match kind {
        fjord_config::WindowKind::Tumble { size } => format!("tumbling {} windows", span(size)),
        fjord_config::WindowKind::Hop { slide, size } => {
            format!("{} windows every {}", span(size), span(slide))
        }
        fjord_config::WindowKind::Session { gap } => format!("sessions with a {} gap", span(gap)),
    }
}

pub fn check_config(path: Option<&std::path::Path>) -> Result<String, fjord_config::ConfigError> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default()?,
    };
    let name = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| fjord_config::DEFAULT_CONFIG_NAME.into());
    let catalogs: Vec<String> = config
        .catalogs
        .iter()
        .map(|(name, catalog)| format!("{name} ({})", catalog.type_name()))
        .collect();
    // The TLS files are read as `fjord serve` would read them.
    let access =
        fjord_pgwire::Access::from_config(&config.server, &config.base_dir).map_err(|reason| {
            fjord_config::ConfigError {
                file: name.clone(),
                line: None,
                column: None,
                key: Some("server.tls".into()),
                reason,
            }
        })?;
    let mut summary = format!(
        "{name}: ok; catalogs: {}; postgres listener: {}",
        catalogs.join(", "),
        access.describe()
    );
    if let Some(ingest) = &config.ingest {
        let pipelines: Vec<String> = ingest
            .pipelines
            .iter()
            .map(|(name, pipeline)| {
                format!(
                    "{name} ({} -> {}.{})",
                    pipeline.topics.join(", "),
                    ingest.catalog,
                    pipeline.table
                )
            })
            .collect();
        summary.push_str(&format!("; ingest pipelines: {}", pipelines.join(", ")));
        if !ingest.rules.is_empty() {
            let rules: Vec<String> = ingest
                .rules
                .iter()
                .map(|(name, rule)| {
                    let Ok(shape) = rule.shape() else {
                        return name.clone();
                    };
                    let mut from = shape.source;
                    if let Some(window) = &shape.window {
                        from.push_str(&format!(", {}", describe_window(&window.kind)));
                    }
                    let mut text = match &rule.kafka_topic {
                        Some(topic) => format!("{name} ({from} -> {topic}"),
                        None => format!("{name} ({from}"),
                    };
                    if let Some(late) = &rule.late_events_topic {
                        text.push_str(&format!("; late records -> {late}"));
                    }
                    text.push(')');
                    text
                })
                .collect();
            summary.push_str(&format!("; alert rules: {}", rules.join(", ")));
        }
    }
    Ok(summary)
}

/// A running `fjord serve`: its listeners' addresses and a handle to stop it.
pub struct RunningServer {
    pub engine: Arc<Engine>,
    pub postgres_address: SocketAddr,
    /// The HTTP listener's address (`/health`, `/catalogs`, `/queries`), when it is on.
    pub http_address: Option<SocketAddr>,
    /// The Arrow Flight SQL listener's address, when it is on.
    pub flight_address: Option<SocketAddr>,
    /// What the newest configuration load did.
    pub reload_status: Arc<parking_lot::Mutex<ReloadStatus>>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Starts every listener of `config` and returns once they accept connections. The demo
    /// world is built first when `[demo] build_on_start` is set and it is missing.
    pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
        // TLS that cannot start stops the server here: never a silent plaintext fallback.
        let access = fjord_pgwire::Access::from_config(&config.server, &config.base_dir)
            .map_err(|error| anyhow::anyhow!("cannot start the postgres listener: {error}"))?;
        let engine = Engine::new(config.clone()).await?;
        if config.demo.build_on_start {
            match fjord_demo::is_built(&engine, &config.demo).await {
                Ok(true) => tracing::info!("demo world present"),
                Ok(false) => {
                    let progress = |line: &str| tracing::info!("demo: {line}");
                    fjord_demo::build(&engine, &config.demo, &progress).await?;
                }
                Err(error) => tracing::warn!(%error, "not building the demo world"),
            }
        }
        let server = PgServer::bind(&config.server.postgres_listen, engine.clone(), access)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot listen on {}: {error}",
                    config.server.postgres_listen
                )
            })?;
        let postgres_address = server.local_addr()?;
        let http_listener = match config.server.http_listen.trim() {
            "" => None,
            address => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot listen for HTTP on {address}: {error}")
                    })?,
            ),
        };
        let http_address = http_listener
            .as_ref()
            .map(|listener| listener.local_addr())
            .transpose()?;
        let flight = match config.server.flight_listen.trim() {
            "" => None,
            address => Some(
                fjord_flight::FlightServer::bind(address, engine.clone())
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot listen for Flight SQL on {address}: {error}")
                    })?,
            ),
        };
        let flight_address = flight
            .as_ref()
            .map(fjord_flight::FlightServer::local_addr)
            .transpose()?;
        let shutdown = CancellationToken::new();
        if let Some(flight) = flight {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = flight.run(shutdown).await {
                    tracing::error!(%error, "the Flight SQL listener failed");
                }
            });
        }
        let reload_status = Arc::new(parking_lot::Mutex::new(ReloadStatus::new(&config)));
        if let Some(listener) = http_listener {
            tracing::info!(address = %listener.local_addr()?, "HTTP listening: /health, /catalogs, /queries");
            tokio::spawn(http::serve(
                listener,
                engine.clone(),
                reload_status.clone(),
                shutdown.clone(),
            ));
        }
        reload::spawn(
            config.clone(),
            engine.registry().clone(),
            reload_status.clone(),
            shutdown.clone(),
        );
        let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
        let task = tokio::spawn(server.run(shutdown.clone(), grace));
        Ok(RunningServer {
            engine,
            postgres_address,
            http_address,
            flight_address,
            reload_status,
            shutdown,
            task,
        })
    }

    /// The token whose cancellation starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets running queries finish within the grace period, then closes.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}
