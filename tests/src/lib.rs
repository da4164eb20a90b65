//! Test harness: real components started by the tests themselves.
//!
//! [`Postgres`] is a throwaway PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary directory,
//! on a free loopback port); [`Fjord`] is `fjord serve` started in-process on port 0 with its
//! own warehouse. Both are torn down on drop. Missing binaries are an error, never a skip: the
//! setup script installs them.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;

use anyhow::{Context, Result, bail};
use fjord_cli::RunningServer;
use fjord_config::Config;
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

/// Logs to the test output (shown for failing tests) when `RUST_LOG` is set.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A free TCP port on 127.0.0.1 (bound and released; Postgres needs a number up front).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The directory with `initdb` and `pg_ctl`: on PATH, or Debian's versioned directory.
fn postgres_bin_dir() -> Result<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates
        .into_iter()
        .rev()
        .find(|dir| dir.join("initdb").exists())
    {
        return Ok(dir);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(dir).join("initdb").exists() {
            return Ok(PathBuf::from(dir));
        }
    }
    bail!("PostgreSQL server binaries (initdb, pg_ctl) are missing: run scripts/setup-test-env")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A throwaway PostgreSQL server.
pub struct Postgres {
    pub port: u16,
    directory: TempDir,
    bin: PathBuf,
    as_postgres_user: bool,
}

impl Postgres {
    /// initdb + start, with database `workshop` created.
    pub fn start() -> Result<Postgres> {
        let bin = postgres_bin_dir()?;
        let directory = tempfile::Builder::new().prefix("fjord-pg-").tempdir()?;
        // initdb refuses to run as root: run the server as the `postgres` system user then.
        let as_postgres_user = is_root();
        if as_postgres_user {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(directory.path())
                .status()?;
            if !status.success() {
                bail!("cannot hand the test cluster directory to the postgres user");
            }
        }
        let postgres = Postgres {
            port: free_port(),
            directory,
            bin,
            as_postgres_user,
        };
        let data = postgres.data_dir();
        postgres.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        )?;
        postgres.start_server()?;
        postgres.psql_admin("postgres", "CREATE DATABASE workshop")?;
        Ok(postgres)
    }

    fn data_dir(&self) -> String {
        self.directory.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// (Re)starts the server and waits until it accepts connections.
    pub fn start_server(&self) -> Result<()> {
        let data = self.data_dir();
        let socket_dir = self.directory.path().display().to_string();
        let log = self
            .directory
            .path()
            .join("server.log")
            .display()
            .to_string();
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100 -c wal_level=logical",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        )
    }

    /// Stops the server at once (as a crash or an outage would look to clients).
    pub fn stop_server(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Runs SQL as the superuser through the real psql binary.
    pub fn psql_admin(&self, database: &str, sql: &str) -> Result<String> {
        let output = self.psql(database, &["-At", "-c", sql])?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs the real psql as the superuser with `args` (several `-c` run in one session);
    /// fails with psql's error output unless it succeeds.
    pub fn psql(&self, database: &str, args: &[&str]) -> Result<std::process::Output> {
        let output = Command::new("psql")
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-d", database])
            .args(args)
            .output()
            .context("running psql (install postgresql-client)")?;
        if !output.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(output)
    }

    /// A direct connection to Postgres (not through fjord), for checks.
    pub async fn connect(&self, database: &str) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={database}",
                self.port
            ),
            NoTls,
        )
        .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The same entry written as one URL, with the password from the environment (HOME: any
    /// value is accepted by a trust-authenticated test cluster).
    pub fn catalog_url_toml(&self, name: &str) -> String {
        format!(
            "[catalogs.{name}]\ntype = \"postgres\"\nurl = \"postgres://postgres:${{HOME}}@127.0.0.1:{}/workshop\"\n",
            self.port
        )
    }

    /// The `[catalogs.<name>]` entry for this server's `workshop` database.
    pub fn catalog_toml(&self, name: &str) -> String {
        format!(
            "[catalogs.{name}]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"workshop\"\nuser = \"postgres\"\npool_size = 4\nconnect_timeout_seconds = 2\n",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// Small demo sizes, so that debug builds set the world up in about a second.
pub const TEST_DEMO: &str = "[demo]\nbuild_on_start = true\ninteractions = 20000\ncats = 300\nvisitors = 60\ndays = 30\nseed = 42\n";

/// `fjord serve` in-process.
pub struct Fjord {
    pub server: Option<RunningServer>,
    pub directory: TempDir,
}

impl Fjord {
    /// Starts fjord with an Iceberg catalog `iceberg` in a fresh warehouse, the given extra
    /// TOML (more catalogs, a `[demo]` table), listening on a free port.
    pub async fn start(extra_toml: &str) -> Result<Fjord> {
        Self::start_with_catalogs(&format!(
            "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n\n{extra_toml}"
        ))
        .await
    }

    /// Starts fjord with exactly the given catalogs (and `[demo]`, if present); one of them must
    /// be an Iceberg catalog named `iceberg`.
    pub async fn start_with_catalogs(catalogs_toml: &str) -> Result<Fjord> {
        Self::start_full("", catalogs_toml).await
    }

    /// Starts fjord with extra `[server]` keys and exactly the given catalogs.
    pub async fn start_full(server_toml: &str, catalogs_toml: &str) -> Result<Fjord> {
        init_logging();
        let directory = tempfile::Builder::new().prefix("fjord-test-").tempdir()?;
        let mut text = String::from(
            "[server]\npostgres_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nflight_listen = \"127.0.0.1:0\"\ndefault_catalog = \"iceberg\"\ndefault_schema = \"data_on_eks\"\nshutdown_grace_seconds = 5\n",
        );
        text.push_str(server_toml);
        text.push_str("\n\n");
        let extra_toml = catalogs_toml;
        text.push_str(extra_toml);
        if !extra_toml.contains("[demo]") {
            text.push_str("\n[demo]\nbuild_on_start = false\n");
        }
        let path = directory.path().join("config.toml");
        std::fs::write(&path, &text)?;
        let config = Config::load(&path).map_err(|error| anyhow::anyhow!("{error}"))?;
        let server = RunningServer::start(config).await?;
        Ok(Fjord {
            server: Some(server),
            directory,
        })
    }

    /// The configuration file fjord serves (it follows edits of it).
    pub fn config_path(&self) -> PathBuf {
        self.directory.path().join("config.toml")
    }

    /// `GET path` on fjord's HTTP listener: the status code and the body.
    pub async fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let address = self
            .server
            .as_ref()
            .and_then(|server| server.http_address)
            .context("fjord's HTTP listener is off")?;
        http_get(address, path).await
    }

    /// Where fjord's Flight SQL port listens.
    pub fn flight_address(&self) -> Result<std::net::SocketAddr> {
        self.server
            .as_ref()
            .and_then(|server| server.flight_address)
            .context("the Flight SQL listener is off")
    }

    pub fn port(&self) -> u16 {
        self.server
            .as_ref()
            .expect("running")
            .postgres_address
            .port()
    }

    /// A tokio-postgres connection to fjord.
    pub async fn connect(&self) -> Result<Client> {
        self.connect_to("iceberg").await
    }

    pub async fn connect_to(&self, database: &str) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=tester dbname={database}",
                self.port()
            ),
            NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A connection whose socket the test can close abruptly (by aborting the returned task),
    /// as a crashed or killed client would.
    pub async fn connect_abortable(&self) -> Result<(Client, tokio::task::JoinHandle<()>)> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=tester dbname=iceberg",
                self.port()
            ),
            NoTls,
        )
        .await?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, task))
    }

    /// Runs the real `psql` against fjord; returns (success, stdout, stderr).
    pub async fn psql(&self, args: &[&str]) -> Result<(bool, String, String)> {
        self.psql_in("iceberg", args).await
    }

    /// Runs the real `psql` connected to `database` (which names the session's catalog).
    pub async fn psql_in(&self, database: &str, args: &[&str]) -> Result<(bool, String, String)> {
        let port = self.port().to_string();
        let mut command = tokio::process::Command::new("psql");
        command
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "tester",
                "-d",
                database,
            ])
            .args(args);
        command.env("PGCONNECT_TIMEOUT", "10").stdin(Stdio::null());
        let output = command
            .output()
            .await
            .context("running psql (install postgresql-client)")?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Stops the server and starts it again on the same files (warehouse, configuration and
    /// catalogs directory), as an operator's restart would.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        let config =
            Config::load(&self.config_path()).map_err(|error| anyhow::anyhow!("{error}"))?;
        self.server = Some(RunningServer::start(config).await?);
        Ok(())
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        Ok(())
    }
}

/// The virtualenv with the Python tools tests use (made by scripts/setup-test-env).
pub fn test_venv() -> Result<PathBuf> {
    let venv = match std::env::var_os("FJORD_TEST_VENV") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/fjord/venv"),
    };
    if !venv.join("bin/python").exists() {
        bail!(
            "the test virtualenv {} is missing: run scripts/setup-test-env",
            venv.display()
        );
    }
    Ok(venv)
}

/// An S3-compatible object store (moto's server) on a free loopback port, with a bucket.
pub struct ObjectStore {
    pub endpoint: String,
    child: std::process::Child,
    venv: PathBuf,
}

impl ObjectStore {
    pub async fn start(bucket: &str) -> Result<ObjectStore> {
        let venv = test_venv()?;
        let port = free_port();
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server (run scripts/setup-test-env)")?;
        let store = ObjectStore {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            venv,
        };
        // Ready when it accepts connections.
        let mut ready = false;
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !ready {
            bail!("moto_server did not start on port {port}");
        }
        store.python(&format!("s3.create_bucket(Bucket='{bucket}')"))?;
        Ok(store)
    }

    /// Runs Python with `s3`, a boto3 client for this store, in scope; returns stdout.
    pub fn python(&self, code: &str) -> Result<String> {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{code}\n",
            self.endpoint
        );
        let output = Command::new(self.venv.join("bin/python"))
            .args(["-c", &script])
            .output()?;
        if !output.status.success() {
            bail!("python failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|code| code.code().to_string())
}

/// The first line of an `EXPLAIN` plan (rows as [`query_text`] gives them) that contains every
/// one of `parts`; panics with the whole plan when none does.
pub fn plan_line(plan: &[Vec<String>], parts: &[&str]) -> String {
    let text = plan_text(plan);
    text.lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in the plan:\n{text}"))
        .to_string()
}

/// An `EXPLAIN` result as one text, a row per line (each row's plan keeps its own lines).
pub fn plan_text(plan: &[Vec<String>]) -> String {
    plan.iter()
        .map(|row| row.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of the metric `name` in one line of an `EXPLAIN ANALYZE` plan (counts past a
/// thousand are shown rounded, as `17.29 K`), `None` if the line does not show it.
pub fn plan_metric(line: &str, name: &str) -> Option<u64> {
    let rest = line.split(&format!(" {name}=")).nth(1)?;
    let shown = rest.split([',', ']']).next()?.trim();
    let (number, scale) = match shown.split_once(' ') {
        Some((number, "K")) => (number, 1e3),
        Some((number, "M")) => (number, 1e6),
        Some((number, "B")) => (number, 1e9),
        Some(_) => return None,
        None => (shown, 1.0),
    };
    Some((number.parse::<f64>().ok()? * scale).round() as u64)
}

/// Simple-query rows as text (NULL as "NULL"), for comparing results.
pub async fn query_text(client: &Client, sql: &str) -> Result<Vec<Vec<String>>> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// `GET path` over plain HTTP/1.0: the status code and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .context("status")?
        .parse()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub mod kafka;

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost, made with openssl:
/// `(ca.pem, server.pem, server.key)`.
pub fn make_certificates(directory: &std::path::Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| -> Result<()> {
        let output = Command::new("openssl")
            .current_dir(directory)
            .args(args)
            .output()
            .context("running openssl")?;
        if !output.status.success() {
            bail!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    };
    std::fs::write(
        directory.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=fjord-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    Ok((
        directory.join("ca.pem"),
        directory.join("server.pem"),
        directory.join("server.key"),
    ))
}
