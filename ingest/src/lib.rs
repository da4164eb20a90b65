//! `fjord ingest`: the sidecar that keeps Kafka topics landing in Iceberg tables, exactly once.
//!
//! Each pipeline of `[ingest.pipelines]` runs a consumer on a thread of its own ([`pipeline`]);
//! records are decoded into Arrow ([`decode`]), written as Parquet data files and committed with
//! their Kafka offsets in the snapshot summary ([`table`], [`offsets`]), fenced against other
//! writers ([`fence`]). Records that cannot be landed go to a dead-letter table
//! ([`dead_letter`]). Alert rules run over the same topics on threads of their own ([`rules`]).
//! An HTTP listener serves `/health`, Prometheus `/metrics` and the alert feed ([`http`]).

pub mod avro;
pub mod dead_letter;
pub mod debezium;
pub mod decode;
pub mod fence;
mod http;
pub mod maintain;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod route;
pub mod rules;
pub mod table;

use std::net::SocketAddr;
use std::time::Duration;

use fjord_config::{CatalogConfig, Config};
use fjord_iceberg::rewrite::SqlCatalogCommits;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use metrics::Registry;
pub use pipeline::{client_config, probe_brokers};

/// Which pipelines a sidecar runs.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Only these pipelines (all when empty).
    pub pipelines: Vec<String>,
    /// Overrides `ingest.http_listen` (tests use port 0).
    pub http_listen: Option<String>,
}

/// A running sidecar.
pub struct IngestServer {
    pub http_address: SocketAddr,
    pub registry: Registry,
    /// Alerts as the rules fire them.
    pub feed: rules::AlertFeed,
    shutdown: CancellationToken,
    pipelines: Vec<(String, JoinHandle<Result<(), String>>)>,
    rules: Vec<(String, JoinHandle<Result<(), String>>)>,
    http: Option<JoinHandle<()>>,
    maintenance: Option<JoinHandle<()>>,
}

impl IngestServer {
    /// Connects to the catalog, starts the HTTP listener and one thread per pipeline.
    pub async fn start(config: &Config, options: IngestOptions) -> anyhow::Result<IngestServer> {
        let Some(ingest) = &config.ingest else {
            anyhow::bail!("the configuration has no [ingest] section: there is nothing to ingest");
        };
        let Some(CatalogConfig::Iceberg(iceberg)) = config.catalogs.get(&ingest.catalog) else {
            anyhow::bail!(
                "ingest.catalog `{}` is not an Iceberg catalog",
                ingest.catalog
            );
        };
        for name in &options.pipelines {
            if !ingest.pipelines.contains_key(name) {
                anyhow::bail!("no pipeline named `{name}` in [ingest.pipelines]");
            }
        }
        let catalog =
            fjord_iceberg::build_catalog(&ingest.catalog, iceberg, &config.base_dir).await?;
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        let listen = options
            .http_listen
            .clone()
            .unwrap_or_else(|| ingest.http_listen.clone());
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {listen}: {error}"))?;
        let http_address = listener.local_addr()?;
        let feed = rules::AlertFeed::default();
        let http = tokio::spawn(http::serve(
            listener,
            registry.clone(),
            feed.clone(),
            shutdown.clone(),
        ));
        let writer_id = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let handle = tokio::runtime::Handle::current();
        let mut pipelines = Vec::new();
        for (name, pipeline) in &ingest.pipelines {
            if !options.pipelines.is_empty() && !options.pipelines.contains(name) {
                continue;
            }
            let spec = pipeline::PipelineSpec {
                name: name.clone(),
                config: pipeline.clone(),
                kafka: ingest.kafka.clone(),
                registry: ingest.schema_registry.clone(),
                catalog: catalog.clone(),
                metrics: registry.pipeline(name),
                writer_id: writer_id.clone(),
            };
            let handle = handle.clone();
            let token = shutdown.clone();
            let metrics = spec.metrics.clone();
            let thread_name = format!("ingest-{name}");
            let task = tokio::task::spawn_blocking(move || {
                let result = pipeline::run_pipeline(spec, handle, token);
                if let Err(error) = &result {
                    let mut state = metrics.state.lock();
                    state.running = false;
                    state.last_error = Some(error.clone());
                }
                result
            });
            tracing::debug!(thread = %thread_name, "pipeline thread started");
            pipelines.push((name.clone(), task));
        }
        let mut rule_tasks = Vec::new();
        for (name, rule) in &ingest.rules {
            let shape = rule
                .shape()
                .map_err(|reason| anyhow::anyhow!("ingest.rules.{name}: {reason}"))?;
            if !options.pipelines.is_empty() && !options.pipelines.contains(&shape.source) {
                continue;
            }
            let Some(pipeline) = ingest.pipelines.get(&shape.source) else {
                anyhow::bail!("ingest.rules.{name}: no pipeline named `{}`", shape.source);
            };
            let postgres = match &rule.postgres {
                Some(sink) => {
                    let Some(CatalogConfig::Postgres(catalog)) = config.catalogs.get(&sink.catalog)
                    else {
                        anyhow::bail!(
                            "ingest.rules.{name}.postgres: no Postgres catalog named `{}`",
                            sink.catalog
                        );
                    };
                    let (schema, table) = sink.table_parts().ok_or_else(|| {
                        anyhow::anyhow!("ingest.rules.{name}.postgres.table: not schema.table")
                    })?;
                    Some(rules::PostgresSink {
                        catalog: fjord_postgres::PostgresCatalog::new(
                            &sink.catalog,
                            catalog,
                            config.server.batch_size,
                        ),
                        schema: schema.to_string(),
                        table: table.to_string(),
                        key: if sink.key.is_empty() {
                            vec![rule.key.clone()]
                        } else {
                            sink.key.clone()
                        },
                    })
                }
                None => None,
            };
            let spec = rules::RuleSpec {
                name: name.clone(),
                postgres,
                config: rule.clone(),
                shape,
                registry: ingest.schema_registry.clone(),
                pipeline: pipeline.clone(),
                kafka: ingest.kafka.clone(),
                metrics: registry.rule(name),
                feed: feed.clone(),
            };
            let handle = handle.clone();
            let token = shutdown.clone();
            let task = tokio::task::spawn_blocking(move || rules::run_rule(spec, handle, token));
            rule_tasks.push((name.clone(), task));
        }
        if pipelines.is_empty() {
            anyhow::bail!("[ingest.pipelines] is empty: there is nothing to ingest");
        }
        let commits = if ingest.maintenance.enabled && ingest.maintenance.compact {
            let commits =
                SqlCatalogCommits::connect(&ingest.catalog, iceberg, &config.base_dir).await?;
            if commits.is_none() {
                tracing::warn!(catalog = %ingest.catalog, "maintenance: a REST catalog's tables are not compacted; set ingest.maintenance.compact = false to silence this");
            }
            commits
        } else {
            None
        };
        let maintenance = ingest.maintenance.enabled.then(|| {
            let mut tables: Vec<(String, String)> = Vec::new();
            for (name, pipeline) in &ingest.pipelines {
                if options.pipelines.is_empty() || options.pipelines.contains(name) {
                    for table in [pipeline.landing_parts(), pipeline.dead_letter_parts()] {
                        if !tables.contains(&table) {
                            tables.push(table);
                        }
                    }
                }
            }
            tokio::spawn(maintain::run_periodically(
                catalog.clone(),
                commits,
                tables,
                ingest.maintenance.clone(),
                shutdown.clone(),
            ))
        });
        tracing::info!(%http_address, pipelines = pipelines.len(), rules = rule_tasks.len(), writer = %writer_id, "fjord ingest is running");
        Ok(IngestServer {
            http_address,
            registry,
            feed,
            shutdown,
            pipelines,
            rules: rule_tasks,
            http: Some(http),
            maintenance,
        })
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every pipeline after its final commit.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the shutdown token is cancelled and every pipeline has stopped.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (name, task) in std::mem::take(&mut self.pipelines) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failed.push(format!("{name}: {error}")),
                Err(error) => failed.push(format!("{name}: {error}")),
            }
        }
        self.shutdown.cancel();
        for (name, task) in std::mem::take(&mut self.rules) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failed.push(format!("rule {name}: {error}")),
                Err(error) => failed.push(format!("rule {name}: {error}")),
            }
        }
        if let Some(http) = self.http.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        }
        if let Some(maintenance) = self.maintenance.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), maintenance).await;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("pipelines failed: {}", failed.join("; "))
        }
    }
}

impl Drop for IngestServer {
    /// A sidecar dropped without `stop` (a failing test, say) still stops its pipelines.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
