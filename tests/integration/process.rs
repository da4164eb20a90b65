//! fjord run as a separate process of this test build's binary: for tests that read its log,
//! its memory, or its exit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fjord_tests::free_port;
use tokio_postgres::NoTls;

/// The `fjord` binary of this test build.
pub(crate) fn fjord_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fjord-under-test"))
}

/// `fjord serve` as a child process with its log in a file.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) port: u16,
    log: PathBuf,
    _directory: tempfile::TempDir,
}

impl Serve {
    /// Starts fjord with `server_toml` appended to `[server]` and waits until it accepts
    /// connections.
    pub(crate) fn start(server_toml: &str) -> Result<Serve> {
        let directory = tempfile::Builder::new().prefix("fjord-auth-").tempdir()?;
        let port = free_port();
        let config = directory.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\npostgres_listen = \"127.0.0.1:{port}\"\nhttp_listen = \"\"\nflight_listen = \"\"\ndefault_catalog = \"iceberg\"\n\
                 default_schema = \"public\"\n{server_toml}\n\n\
                 [catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n\n\
                 [demo]\nbuild_on_start = false\n"
            ),
        )?;
        let log = directory.path().join("fjord.log");
        let child = Command::new(fjord_binary())
            .args(["--log", "debug,sqlx=warn,iceberg=warn", "serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting fjord serve")?;
        let mut serve = Serve {
            child,
            port,
            log,
            _directory: directory,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(serve);
            }
            if let Some(status) = serve.child.try_wait()? {
                bail!("fjord serve exited with {status}:\n{}", serve.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "fjord serve did not listen within 60 s:\n{}",
                    serve.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The configuration file the server runs with.
    pub(crate) fn config_path(&self) -> PathBuf {
        self._directory.path().join("config.toml")
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs psql with `conninfo` (host and port are added) and `password`.
    pub(crate) fn psql(
        &self,
        conninfo: &str,
        password: Option<&str>,
        sql: &str,
    ) -> Result<(bool, String)> {
        let mut command = Command::new("psql");
        command
            .arg("-X")
            .arg("-At")
            .arg(format!("port={} connect_timeout=10 {conninfo}", self.port))
            .arg("-c")
            .arg(sql)
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", self.log.with_file_name("no-passfile"))
            .stdin(Stdio::null());
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        let output = command.output().context("running psql")?;
        Ok((
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ))
    }

    pub(crate) async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname("iceberg")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
