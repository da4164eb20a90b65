//! A real Kafka-protocol broker for the tests: tansu, started on a free loopback port with
//! in-memory storage, plus a producer and topic creation through librdkafka.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::free_port;

/// The tansu binary: `$FJORD_TANSU`, the one the setup script installs, or on PATH.
fn tansu_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("FJORD_TANSU") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = PathBuf::from(home).join(".cache/fjord/tools/bin/tansu");
    if installed.exists() {
        return Ok(installed);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("tansu");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("the tansu broker is missing: run scripts/setup-test-env")
}

/// A tansu broker, killed on drop.
pub struct Kafka {
    pub bootstrap: String,
    child: Child,
    /// Set for a broker that wants SASL and/or TLS.
    security: Option<Security>,
    proxy: Option<Child>,
    _directory: Option<tempfile::TempDir>,
}

/// How clients reach a secured broker.
#[derive(Debug, Clone)]
pub struct Security {
    /// SCRAM-SHA-512 credentials, when the broker authenticates clients.
    pub sasl: Option<(String, String)>,
    /// The CA file that signs the TLS listener's certificate, when clients use TLS.
    pub ca: Option<PathBuf>,
}

impl Security {
    pub fn protocol(&self) -> &'static str {
        match (self.sasl.is_some(), self.ca.is_some()) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }
}

impl Kafka {
    pub async fn start() -> Result<Kafka> {
        let binary = tansu_binary()?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let kafka = Kafka {
            bootstrap: format!("127.0.0.1:{port}"),
            child,
            security: None,
            proxy: None,
            _directory: None,
        };
        kafka.wait_ready().await?;
        Ok(kafka)
    }

    /// A broker that authenticates clients with SASL SCRAM-SHA-512 as `user`/`password` (when
    /// given) and/or listens with TLS (certificates from a throwaway CA).
    ///
    /// tansu keeps SASL users only in its SQL storage (not in memory), and its users are created
    /// over the Kafka protocol by a client that cannot log in itself: so the broker first runs
    /// without authentication to create the user, then again with it. tansu 0.6 does not
    /// terminate TLS itself (its --cert/--key are not used), so a TLS proxy
    /// (`tests/python/tls_proxy.py`) stands in front of it.
    pub async fn start_secured(sasl: Option<(&str, &str)>, tls: bool) -> Result<Kafka> {
        let binary = tansu_binary()?;
        let directory = tempfile::Builder::new().prefix("fjord-tansu-").tempdir()?;
        let port = free_port();
        let public_port = if tls { free_port() } else { port };
        let listen = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{public_port}");
        let broker = |authenticate: bool| {
            let mut command = Command::new(&binary);
            command
                .current_dir(directory.path())
                .args(["broker", "--storage-engine", "sqlite://tansu.db"])
                .args([
                    "--listener-url",
                    &listen,
                    "--advertised-listener-url",
                    &advertised,
                ])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if authenticate {
                command.arg("--authentication");
            }
            command
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))
        };
        if let Some((user, password)) = sasl {
            let mut open = broker(false)?;
            wait_for_port(port).await?;
            let status = Command::new(&binary)
                .args(["user", "create", "--broker", &listen, user, password])
                .args(["--mechanism", "scram512"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .status()?;
            open.kill()?;
            open.wait()?;
            if !status.success() {
                bail!("tansu user create failed: {status}");
            }
        }
        let child = broker(sasl.is_some())?;
        let mut security = Security {
            sasl: sasl.map(|(user, password)| (user.to_string(), password.to_string())),
            ca: None,
        };
        let proxy = if tls {
            let (ca, cert, key) = crate::make_certificates(directory.path())?;
            security.ca = Some(ca);
            let venv = crate::test_venv()?;
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tls_proxy.py");
            Some(
                Command::new(venv.join("bin/python"))
                    .arg(script)
                    .args(["--listen", &format!("127.0.0.1:{public_port}")])
                    .args(["--target", &format!("127.0.0.1:{port}")])
                    .arg("--cert")
                    .arg(cert)
                    .arg("--key")
                    .arg(key)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("cannot start the TLS proxy")?,
            )
        } else {
            None
        };
        let kafka = Kafka {
            bootstrap: format!("127.0.0.1:{public_port}"),
            child,
            security: Some(security),
            proxy,
            _directory: Some(directory),
        };
        kafka.wait_ready().await?;
        Ok(kafka)
    }

    pub fn security(&self) -> Option<&Security> {
        self.security.as_ref()
    }

    /// A librdkafka configuration that reaches this broker (credentials and CA included).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        if let Some(security) = &self.security {
            config.set("security.protocol", security.protocol());
            if let Some((user, password)) = &security.sasl {
                config
                    .set("sasl.mechanism", "SCRAM-SHA-512")
                    .set("sasl.username", user)
                    .set("sasl.password", password);
            }
            if let Some(ca) = &security.ca {
                config.set("ssl.ca.location", ca.display().to_string());
            }
        }
        config
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let config = self.client_config();
            let ready = tokio::task::spawn_blocking(move || {
                let consumer: rdkafka::consumer::BaseConsumer = config.create()?;
                rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(2))
                    .map(|_| ())
            })
            .await?;
            match ready {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    bail!("tansu did not answer within 30 s: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The TOML of an `[ingest.kafka]` table pointing at this broker.
    pub fn ingest_kafka_toml(&self, group: &str) -> String {
        let mut toml = format!(
            "[ingest.kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\n",
            self.bootstrap
        );
        if let Some(security) = &self.security {
            toml.push_str(&format!(
                "security_protocol = \"{}\"\n",
                security.protocol()
            ));
            if let Some((user, password)) = &security.sasl {
                toml.push_str(&format!(
                    "sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"{user}\"\nsasl_password = \"{password}\"\n"
                ));
            }
            if let Some(ca) = &security.ca {
                toml.push_str(&format!("ssl_ca_location = \"{}\"\n", ca.display()));
            }
        }
        toml
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .context("CreateTopics")?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("cannot create topic {topic}: {code}");
            }
        }
        Ok(())
    }

    pub fn producer(&self) -> Result<FutureProducer> {
        Ok(self
            .client_config()
            .set("linger.ms", "5")
            .set("acks", "all")
            .create()?)
    }

    /// Produces `records` (key, value) to `topic` and waits until all are acknowledged.
    pub async fn produce(&self, topic: &str, records: &[(String, Vec<u8>)]) -> Result<()> {
        let producer = self.producer()?;
        produce_with(&producer, topic, records).await
    }
}

/// Sends with `producer`, in order, waiting for every acknowledgement.
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Vec<u8>)],
) -> Result<()> {
    let mut pending = Vec::with_capacity(records.len());
    for (key, value) in records {
        let record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_slice());
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| anyhow::anyhow!("cannot enqueue: {error}"))?;
        pending.push(delivery);
        if pending.len() >= 10_000 {
            for delivery in pending.drain(..) {
                delivery
                    .await?
                    .map_err(|(error, _)| anyhow::anyhow!("not delivered: {error}"))?;
            }
        }
    }
    for delivery in pending {
        delivery
            .await?
            .map_err(|(error, _)| anyhow::anyhow!("not delivered: {error}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(proxy) = &mut self.proxy {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
    }
}

async fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `fjord ingest` as a separate process of the test build's binary, so that tests can kill it.
pub struct IngestProcess {
    pub child: Child,
}

impl IngestProcess {
    /// Starts `<binary> ingest --config <config> --http-listen 127.0.0.1:0 [args]`, logging
    /// warnings and errors (`FJORD_TEST_INGEST_LOG` sets another level when a test is debugged).
    pub fn spawn(
        binary: &std::path::Path,
        config: &std::path::Path,
        args: &[&str],
    ) -> Result<Self> {
        let level = std::env::var("FJORD_TEST_INGEST_LOG").unwrap_or_else(|_| "warn".into());
        let child = Command::new(binary)
            .arg("--log")
            .arg(level)
            .arg("ingest")
            .arg("--config")
            .arg(config)
            .args(["--http-listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(IngestProcess { child })
    }

    /// SIGKILL: no final commit, no cleanup.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal Confluent-compatible schema registry: the two documented endpoints the sidecar and
/// the tests use (`POST /subjects/{subject}/versions`, `GET /schemas/ids/{id}`), in memory. No
/// Confluent-compatible registry can be installed from the package registries this project
/// reaches, so the tests use this fixture.
pub struct SchemaRegistry {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RegistryState {
    schemas: Vec<String>,
}

impl SchemaRegistry {
    pub async fn start() -> Result<SchemaRegistry> {
        use std::sync::{Arc, Mutex};

        use axum::Json;
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::routing::{get, post};

        type Shared = Arc<Mutex<RegistryState>>;
        async fn register(
            State(state): State<Shared>,
            Path(_subject): Path<String>,
            Json(body): Json<serde_json::Value>,
        ) -> (StatusCode, Json<serde_json::Value>) {
            let Some(schema) = body.get("schema").and_then(|s| s.as_str()) else {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(serde_json::json!({"error_code": 42201, "message": "Invalid schema"})),
                );
            };
            let mut state = state.lock().expect("registry lock");
            let id = match state.schemas.iter().position(|known| known == schema) {
                Some(index) => index + 1,
                None => {
                    state.schemas.push(schema.to_string());
                    state.schemas.len()
                }
            };
            (StatusCode::OK, Json(serde_json::json!({ "id": id })))
        }
        async fn by_id(
            State(state): State<Shared>,
            Path(id): Path<usize>,
        ) -> (StatusCode, Json<serde_json::Value>) {
            let state = state.lock().expect("registry lock");
            match id.checked_sub(1).and_then(|index| state.schemas.get(index)) {
                Some(schema) => (
                    StatusCode::OK,
                    Json(serde_json::json!({ "schema": schema })),
                ),
                None => (
                    StatusCode::NOT_FOUND,
                    Json(serde_json::json!({"error_code": 40403, "message": "Schema not found"})),
                ),
            }
        }
        let state: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/schemas/ids/{id}", get(by_id))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SchemaRegistry { url, task })
    }

    /// Registers `schema` (Avro JSON) under `subject`; returns its id, as a producer's
    /// serializer does.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = serde_json::json!({ "schema": schema }).to_string();
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!(
                    "POST /subjects/{subject}/versions HTTP/1.0\r\nHost: x\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let json = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .context("registry response")?;
        let parsed: serde_json::Value = serde_json::from_str(json)?;
        parsed["id"]
            .as_u64()
            .map(|id| id as u32)
            .with_context(|| format!("registry answered {json}"))
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Debezium's PostgreSQL connector relaying a database's changes to Kafka topics
/// `<prefix>.<schema>.<table>`, as Debezium Server's Kafka sink would: the real connector, run
/// through its embedded engine by `tests/python/debezium_relay.py`. Killed on drop.
pub struct DebeziumRelay {
    child: Child,
    ready: PathBuf,
    _directory: tempfile::TempDir,
}

impl DebeziumRelay {
    /// Starts capturing `tables` (`schema.table`) of `database` into `kafka`. The replication
    /// slot and publication are created by the connector.
    pub fn start(
        postgres: &crate::Postgres,
        database: &str,
        tables: &[&str],
        prefix: &str,
        kafka: &Kafka,
    ) -> Result<DebeziumRelay> {
        let venv = crate::test_venv()?;
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/debezium_relay.py");
        let directory = tempfile::Builder::new().prefix("fjord-dbz-").tempdir()?;
        let ready = directory.path().join("ready");
        let child = Command::new(venv.join("bin/python"))
            .arg(&script)
            .args(["--pg-host", "127.0.0.1"])
            .args(["--pg-port", &postgres.port.to_string()])
            .args(["--database", database])
            .args(["--tables", &tables.join(",")])
            .args(["--topic-prefix", prefix])
            .args(["--bootstrap", &kafka.bootstrap])
            .arg("--offsets-file")
            .arg(directory.path().join("offsets.dat"))
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", script.display()))?;
        Ok(DebeziumRelay {
            child,
            ready,
            _directory: directory,
        })
    }

    /// Waits until the connector has taken its snapshot and streams changes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready.exists() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the Debezium relay exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                bail!("the Debezium relay was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails if the relay has died.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the Debezium relay exited: {status}");
        }
        Ok(())
    }
}

impl Drop for DebeziumRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
