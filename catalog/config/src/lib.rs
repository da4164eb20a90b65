//! Typed `config.toml`: listeners, session defaults, the demo world and the catalogs.
//!
//! The root `config.toml` of the repository is both the documented reference and the embedded
//! default ([`DEFAULT_CONFIG`]). Loading is strict: unknown keys and wrong types are rejected, and
//! every mistake is reported with the file, line and dotted key it concerns. Secrets are written as
//! `${ENV_VAR}` references and expanded at load into [`Secret`] values, which never print.

mod access;
mod ingest;
mod locate;
mod rules;
mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use access::{
    AuthConfig, AuthMethod, SCRAM_PREFIX, ScramVerifier, TlsConfig, equal_in_constant_time,
    hmac_sha256, scram_keys,
};
pub use ingest::{
    CHANGELOG_SUFFIX, CommitPolicy, IngestConfig, KafkaConfig, MaintenanceConfig, PipelineConfig,
    SchemaRegistryConfig, SecurityProtocol, TOPIC_PLACEHOLDER, TableTemplate, ValueFormat,
    parse_duration, route_name_part,
};
pub use rules::{
    ALERT_FIELDS, PostgresSinkConfig, RuleConfig, RuleKind, RuleShape, StartFrom, TimeWindow,
    WINDOW_COLUMNS, WindowKind, analyze as analyze_rule,
};
pub use secret::{Secret, expand_env_references};

/// The root `config.toml`, compiled in: what `fjord serve` runs when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config.toml");

/// Name under which the embedded default is reported in errors.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded config.toml>";

/// A whole fjord configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub demo: DemoConfig,
    #[serde(default)]
    pub catalogs: BTreeMap<String, CatalogConfig>,
    /// `[ingest]`: the sidecar; absent when this deployment runs none.
    pub ingest: Option<IngestConfig>,
    /// Directory that relative paths in the file are resolved against (the file's directory, or
    /// the working directory for the embedded default). Not a key of the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Catalogs read from the catalogs directory, by name: the file each came from. Not a key.
    #[serde(skip)]
    pub catalog_files: BTreeMap<String, PathBuf>,
    /// The file this configuration was loaded from; `None` for the embedded default. Not a key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[server]`: listeners and the defaults of every new session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the PostgreSQL wire protocol listener.
    pub postgres_listen: String,
    /// Address of the HTTP listener (`/health`, `/catalogs`, `/queries`); empty for none.
    pub http_listen: String,
    /// Address of the Arrow Flight SQL listener; empty for none.
    pub flight_listen: String,
    /// Catalog that unqualified table names resolve in.
    pub default_catalog: String,
    /// Schema that unqualified table names resolve in.
    pub default_schema: String,
    /// Partitions DataFusion plans for; 0 means one per CPU core.
    pub target_partitions: usize,
    /// Rows per Arrow batch produced by scans.
    pub batch_size: usize,
    /// Seconds that shutdown waits for running queries before cancelling them.
    pub shutdown_grace_seconds: u64,
    /// Client connections served at once; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Memory one connection's query may use ("2GiB", "512MB"; "0" for no limit). Operators
    /// that can spill to disk do; others fail the query with SQLSTATE 53200.
    pub query_memory_limit: String,
    /// `[server.tls]`: TLS for the listeners; absent means plaintext only.
    pub tls: Option<TlsConfig>,
    /// `[server.auth]`: the users who may connect and how they authenticate.
    pub auth: AuthConfig,
    /// Directory of one file per catalog (`<name>.toml`), beside the `[catalogs.*]` tables of
    /// this file; relative to this file's directory. Read when it exists.
    pub catalogs_dir: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            postgres_listen: "127.0.0.1:5433".into(),
            http_listen: "127.0.0.1:8080".into(),
            flight_listen: "127.0.0.1:50051".into(),
            default_catalog: "iceberg".into(),
            default_schema: "data_on_eks".into(),
            target_partitions: 0,
            batch_size: 8192,
            shutdown_grace_seconds: 10,
            max_connections: 100,
            query_memory_limit: "2GiB".into(),
            tls: None,
            auth: AuthConfig::default(),
            catalogs_dir: "catalogs".into(),
        }
    }
}

/// `[demo]`: the cat-cafe world that `fjord demo` builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Build the demo world when `fjord serve` starts and the lake has no demo tables yet.
    pub build_on_start: bool,
    /// Iceberg catalog that receives the raw event tables.
    pub iceberg_catalog: String,
    /// Postgres catalog that receives `cats` and `visitors` (skipped when unreachable).
    pub postgres_catalog: String,
    /// Number of `cat_interactions_raw` rows.
    pub interactions: usize,
    /// Days of history, ending at 2026-11-01T00:00:00Z.
    pub days: u32,
    /// Number of cats in Postgres.
    pub cats: usize,
    /// Number of visitors in Postgres.
    pub visitors: usize,
    /// Seed of the generator: the same seed builds the same world.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            build_on_start: true,
            iceberg_catalog: "iceberg".into(),
            postgres_catalog: "postgresql".into(),
            interactions: 1_000_000,
            days: 30,
            cats: 11_000,
            visitors: 1_000,
            seed: 42,
        }
    }
}

/// `[catalogs.<name>]`: one catalog, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CatalogConfig {
    Iceberg(IcebergCatalogConfig),
    Postgres(PostgresCatalogConfig),
}

impl CatalogConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            CatalogConfig::Iceberg(_) => "iceberg",
            CatalogConfig::Postgres(_) => "postgres",
        }
    }
}

/// Which Iceberg catalog implementation holds the table metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcebergCatalogKind {
    /// The SQL catalog on SQLite: the embedded default.
    #[default]
    Sql,
    /// An Iceberg REST catalog.
    Rest,
}

/// An Iceberg catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergCatalogConfig {
    #[serde(default)]
    pub catalog: IcebergCatalogKind,
    /// SQL catalog: a `sqlite://` path (default `<warehouse>/../catalog.db`); REST: the base URL.
    pub uri: Option<String>,
    /// Where data and metadata files go: a local directory or `s3://bucket/prefix`.
    pub warehouse: String,
    /// S3 (or S3-compatible) storage settings, for an `s3://` warehouse.
    pub s3: Option<S3Config>,
    /// Extra properties handed to the Iceberg catalog as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl IcebergCatalogConfig {
    /// The warehouse as a URL-like location: local paths are made absolute against `base`.
    pub fn warehouse_location(&self, base: &Path) -> String {
        if self.warehouse.contains("://") {
            self.warehouse.clone()
        } else {
            absolute(base, &self.warehouse).display().to_string()
        }
    }

    /// The SQL catalog's SQLite URL, with a default beside the warehouse.
    pub fn sql_uri(&self, base: &Path) -> String {
        match &self.uri {
            Some(uri) if uri.starts_with("sqlite://") => {
                let path = &uri["sqlite://".len()..];
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                let path = absolute(base, path);
                if query.is_empty() {
                    format!("sqlite://{}?mode=rwc", path.display())
                } else {
                    format!("sqlite://{}?{query}", path.display())
                }
            }
            Some(uri) => uri.clone(),
            None => {
                let warehouse = absolute(base, &self.warehouse);
                let dir = warehouse
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or(warehouse);
                format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display())
            }
        }
    }
}

/// `[catalogs.<name>.s3]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph...); empty for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted stores need.
    #[serde(default)]
    pub path_style: bool,
}

/// A live PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresCatalogConfig {
    /// A `postgres://user:password@host:port/database` URL; instead of the separate keys.
    pub url: Option<Secret>,
    pub host: Option<String>,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Connections kept open to this database.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Seconds to wait for a connection before the catalog counts as unavailable.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Schemas to expose; every non-system schema when absent.
    pub schemas: Option<Vec<String>>,
}

fn default_pg_port() -> u16 {
    5432
}
fn default_pool_size() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    5
}

impl PostgresCatalogConfig {
    /// The connection settings as a libpq-style URL or key/value string, secrets included.
    /// Callers hand it to the driver and never log it.
    pub fn connection_string(&self) -> String {
        if let Some(url) = &self.url {
            return url.expose().to_string();
        }
        let mut parts = Vec::new();
        let quote = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
        if let Some(host) = &self.host {
            parts.push(format!("host={}", quote(host)));
        }
        parts.push(format!("port={}", self.port));
        if let Some(database) = &self.database {
            parts.push(format!("dbname={}", quote(database)));
        }
        if let Some(user) = &self.user {
            parts.push(format!("user={}", quote(user)));
        }
        if let Some(password) = &self.password {
            parts.push(format!("password={}", quote(password.expose())));
        }
        parts.push(format!("connect_timeout={}", self.connect_timeout_seconds));
        parts.join(" ")
    }

    /// Where this catalog points, without any secret: for logs and error messages.
    pub fn display_target(&self) -> String {
        if let Some(url) = &self.url {
            match url::Url::parse(url.expose()) {
                Ok(parsed) => format!(
                    "{}:{}{}",
                    parsed.host_str().unwrap_or("localhost"),
                    parsed.port().unwrap_or(5432),
                    parsed.path()
                ),
                Err(_) => "<url>".into(),
            }
        } else {
            format!(
                "{}:{}/{}",
                self.host.as_deref().unwrap_or("localhost"),
                self.port,
                self.database.as_deref().unwrap_or("")
            )
        }
    }
}

/// A configuration mistake, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the key, such as `catalogs.postgresql.port`.
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning the file's text as it was read.
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            key: None,
            reason: format!("cannot read the file: {error}"),
        })?;
        let base = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Self::parse(&text, &path.display().to_string(), &base)?;
        config.source = Some(path.to_path_buf());
        Ok((config, text))
    }

    /// The embedded default, with relative paths resolved against the working directory.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, Path::new("."))
    }

    /// Parses and validates `text`, naming it `file` in errors. The catalogs directory
    /// (`server.catalogs_dir`, relative to `base_dir`) is read too when it exists.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = deserialize_located(text, file, "catalogs.").map_err(|error| {
            // A mistake inside a catalog table is reported at the table: find its line.
            match error
                .key
                .as_deref()
                .and_then(|key| key.strip_prefix("catalogs."))
            {
                Some(name) if !name.contains('.') => {
                    locate_in_main_catalog(text, file, name).unwrap_or(error)
                }
                _ => error,
            }
        })?;
        config.base_dir = base_dir.to_path_buf();
        config
            .resolve_secrets()
            .map_err(|(key, reason)| locate_error(text, file, Some(key), None, reason))?;
        config.read_catalogs_dir(text, file)?;
        config
            .validate()
            .map_err(|(key, reason)| locate_error(text, file, Some(key), None, reason))?;
        Ok(config)
    }

    /// Loads this configuration's file again (the embedded default when it came from none),
    /// with the catalogs directory as it is now.
    pub fn load_again(&self) -> Result<Config, ConfigError> {
        match &self.source {
            Some(path) => Config::load(path),
            None => Config::embedded_default(),
        }
    }

    /// The catalogs directory, absolute.
    pub fn catalogs_dir(&self) -> PathBuf {
        absolute(&self.base_dir, &self.server.catalogs_dir)
    }

    /// Adds the catalogs of the catalogs directory: every `<name>.toml` file (hidden files and
    /// other names are ignored), each checked on its own and named in its errors. A name also
    /// configured in the main file is an error.
    fn read_catalogs_dir(&mut self, main_text: &str, main_file: &str) -> Result<(), ConfigError> {
        let directory = self.catalogs_dir();
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(ConfigError {
                    file: directory.display().to_string(),
                    line: None,
                    column: None,
                    key: None,
                    reason: format!("cannot read the catalogs directory: {error}"),
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.extension().is_some_and(|ext| ext == "toml")
                    && !path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let file = path.display().to_string();
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let whole_file = |reason: String| ConfigError {
                file: file.clone(),
                line: None,
                column: None,
                key: None,
                reason,
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|error| whole_file(format!("cannot read the file: {error}")))?;
            if let Err(reason) = check_catalog_name(&name) {
                return Err(whole_file(format!(
                    "the file name gives the catalog `{name}`: {reason}"
                )));
            }
            if self.catalogs.contains_key(&name) {
                let line = locate::find_key(main_text, &format!("catalogs.{name}"))
                    .map(|(line, _)| format!(":{line}"))
                    .unwrap_or_default();
                return Err(whole_file(format!(
                    "catalog `{name}` is also configured in {main_file}{line}; keep one of the two"
                )));
            }
            let mut catalog: CatalogConfig = match deserialize_located(&text, &file, "") {
                Ok(catalog) => catalog,
                // A tagged table's errors keep neither key nor place: read it again as its type.
                Err(error) if error.key.is_none() => {
                    return Err(locate_in_catalog_type(&text, &file).unwrap_or(error));
                }
                Err(error) => return Err(error),
            };
            let located = |(key, reason): (String, String)| {
                locate_error(&text, &file, Some(key), None, reason)
            };
            resolve_catalog_secrets(&mut catalog).map_err(located)?;
            validate_catalog(&catalog).map_err(located)?;
            self.catalogs.insert(name.clone(), catalog);
            self.catalog_files.insert(name, path);
        }
        Ok(())
    }

    fn resolve_secrets(&mut self) -> Result<(), (String, String)> {
        self.server.auth.resolve_secrets()?;
        for (name, catalog) in &mut self.catalogs {
            resolve_catalog_secrets(catalog)
                .map_err(|(field, reason)| (format!("catalogs.{name}.{field}"), reason))?;
        }
        if let Some(ingest) = &mut self.ingest {
            ingest.resolve_secrets()?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (name, catalog) in &self.catalogs {
            if self.catalog_files.contains_key(name) {
                // Checked in its own file.
                continue;
            }
            check_catalog_name(name).map_err(|reason| (format!("catalogs.{name}"), reason))?;
            validate_catalog(catalog)
                .map_err(|(field, reason)| (format!("catalogs.{name}.{field}"), reason))?;
        }
        if !self.catalogs.is_empty() && !self.catalogs.contains_key(&self.server.default_catalog) {
            return Err((
                "server.default_catalog".into(),
                format!(
                    "no catalog named `{}` is configured",
                    self.server.default_catalog
                ),
            ));
        }
        if parse_size(&self.server.query_memory_limit).is_none() {
            return Err((
                "server.query_memory_limit".into(),
                format!(
                    "`{}` is not a size such as \"2GiB\", \"512MB\" or \"0\"",
                    self.server.query_memory_limit
                ),
            ));
        }
        if self.server.max_connections == 0 {
            return Err(("server.max_connections".into(), "must be at least 1".into()));
        }
        if self.server.batch_size == 0 {
            return Err(("server.batch_size".into(), "must be at least 1".into()));
        }
        self.server.auth.validate(self.server.tls.as_ref())?;
        if let Some(ingest) = &self.ingest {
            let iceberg: Vec<&str> = self
                .catalogs
                .iter()
                .filter(|(_, catalog)| matches!(catalog, CatalogConfig::Iceberg(_)))
                .map(|(name, _)| name.as_str())
                .collect();
            ingest.validate(&iceberg)?;
            for (name, rule) in &ingest.rules {
                if let Some(sink) = &rule.postgres
                    && !matches!(
                        self.catalogs.get(&sink.catalog),
                        Some(CatalogConfig::Postgres(_))
                    )
                {
                    return Err((
                        format!("ingest.rules.{name}.postgres.catalog"),
                        format!("no Postgres catalog named `{}` is configured", sink.catalog),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The partitions to plan for: the configured number, or one per core.
    pub fn target_partitions(&self) -> usize {
        if self.server.target_partitions > 0 {
            self.server.target_partitions
        } else {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
        }
    }
}

/// Deserializes `text` with errors located in it. Keys under `tagged_prefix` sit in a tagged
/// catalog table, whose errors lose toml's span: the key path finds the line instead.
fn deserialize_located<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
    tagged_prefix: &str,
) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        let mut key = (path != "." && !path.is_empty()).then_some(path);
        // Inside a tagged catalog table the path stops at the table: the field's name is in
        // the message.
        if let Some(field) = inner
            .message()
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            match &key {
                Some(table) if !table.ends_with(field) => key = Some(format!("{table}.{field}")),
                None if tagged_prefix.is_empty() => key = Some(field.to_string()),
                _ => {}
            }
        }
        let span = if key
            .as_deref()
            .is_some_and(|key| key.starts_with(tagged_prefix))
        {
            None
        } else {
            inner.span()
        };
        locate_error(text, file, key, span, inner.message().trim().to_string())
    })
}

/// The located error of a catalog file read as the struct of its `type`, with the `type` line
/// blanked (so lines keep their numbers): serde's tagged enums lose the key and place of a
/// mistake such as a wrong type, which this finds. `None` when that reading succeeds or the
/// type is unknown.
fn locate_in_catalog_type(text: &str, file: &str) -> Option<ConfigError> {
    let table: toml::Table = text.parse().ok()?;
    let type_name = table.get("type")?.as_str()?.to_string();
    let (type_line, _) = locate::find_key(text, "type")?;
    let blanked: String = text
        .split_inclusive('\n')
        .enumerate()
        .map(
            |(index, line)| {
                if index + 1 == type_line { "\n" } else { line }
            },
        )
        .collect();
    // No key is under a tagged table here: toml's spans are kept.
    const NONE: &str = "\u{0}";
    match type_name.as_str() {
        "postgres" => deserialize_located::<PostgresCatalogConfig>(&blanked, file, NONE).err(),
        "iceberg" => deserialize_located::<IcebergCatalogConfig>(&blanked, file, NONE).err(),
        _ => None,
    }
}

/// [`locate_in_catalog_type`] for the table `[catalogs.<name>]` of the main file: the lines
/// from its header to the next header are read on their own (the others blanked).
fn locate_in_main_catalog(text: &str, file: &str, name: &str) -> Option<ConfigError> {
    let (header, _) = locate::find_key(text, &format!("catalogs.{name}"))?;
    let mut inside = false;
    let region: String = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(index, line)| {
            if index + 1 == header {
                inside = true;
                return "\n";
            }
            if line.trim_start().starts_with('[') {
                inside = false;
            }
            if inside { line } else { "\n" }
        })
        .collect();
    let mut error = locate_in_catalog_type(&region, file)?;
    error.key = Some(match error.key {
        Some(field) => format!("catalogs.{name}.{field}"),
        None => format!("catalogs.{name}"),
    });
    Some(error)
}

/// A [`ConfigError`] in `file` (whose contents are `text`), at `span` or else at `key`.
fn locate_error(
    text: &str,
    file: &str,
    key: Option<String>,
    span: Option<std::ops::Range<usize>>,
    reason: String,
) -> ConfigError {
    let (line, column) = span
        .map(|span| locate::line_and_column(text, span.start))
        .or_else(|| key.as_deref().and_then(|key| locate::find_key(text, key)))
        .map(|(line, column)| (Some(line), Some(column)))
        .unwrap_or((None, None));
    ConfigError {
        file: file.to_string(),
        line,
        column,
        key,
        reason,
    }
}

/// Why `name` cannot name a catalog, if it cannot.
fn check_catalog_name(name: &str) -> Result<(), String> {
    if !is_valid_catalog_name(name) {
        return Err(
            "a catalog name must start with a lowercase letter and contain only \
                    lowercase letters, digits and underscores"
                .into(),
        );
    }
    if matches!(name, "information_schema" | "pg_catalog" | "system") {
        return Err("this catalog name is reserved".into());
    }
    Ok(())
}

/// Expands the secret references of one catalog; errors name the field.
fn resolve_catalog_secrets(catalog: &mut CatalogConfig) -> Result<(), (String, String)> {
    match catalog {
        CatalogConfig::Postgres(pg) => {
            if let Some(url) = &mut pg.url {
                url.resolve().map_err(|reason| ("url".into(), reason))?;
            }
            if let Some(password) = &mut pg.password {
                password
                    .resolve()
                    .map_err(|reason| ("password".into(), reason))?;
            }
        }
        CatalogConfig::Iceberg(iceberg) => {
            if let Some(s3) = &mut iceberg.s3 {
                for (field, secret) in [
                    ("s3.access_key_id", &mut s3.access_key_id),
                    ("s3.secret_access_key", &mut s3.secret_access_key),
                    ("s3.session_token", &mut s3.session_token),
                ] {
                    if let Some(secret) = secret {
                        secret.resolve().map_err(|reason| (field.into(), reason))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks one catalog's settings; errors name the field.
fn validate_catalog(catalog: &CatalogConfig) -> Result<(), (String, String)> {
    let key = |field: &str| field.to_string();
    match catalog {
        CatalogConfig::Postgres(pg) => {
            if let Some(url) = &pg.url {
                if pg.host.is_some() || pg.database.is_some() || pg.user.is_some() {
                    return Err((
                        key("url"),
                        "give either `url` or `host`/`database`/`user`, not both".into(),
                    ));
                }
                if !(url.expose().starts_with("postgres://")
                    || url.expose().starts_with("postgresql://"))
                {
                    return Err((
                        key("url"),
                        "must start with postgres:// or postgresql://".into(),
                    ));
                }
            } else {
                for (field, value) in [
                    ("host", &pg.host),
                    ("database", &pg.database),
                    ("user", &pg.user),
                ] {
                    if value.is_none() {
                        return Err((
                            key(field),
                            format!("missing: a postgres catalog needs `{field}` (or a `url`)"),
                        ));
                    }
                }
            }
            if pg.pool_size == 0 {
                return Err((key("pool_size"), "must be at least 1".into()));
            }
        }
        CatalogConfig::Iceberg(iceberg) => {
            if iceberg.catalog == IcebergCatalogKind::Rest && iceberg.uri.is_none() {
                return Err((
                    key("uri"),
                    "a REST catalog needs the catalog's base URL".into(),
                ));
            }
            if iceberg.catalog == IcebergCatalogKind::Sql
                && iceberg
                    .uri
                    .as_deref()
                    .is_some_and(|uri| !uri.starts_with("sqlite://"))
            {
                return Err((key("uri"), "the SQL catalog takes a sqlite:// URI".into()));
            }
            if iceberg.warehouse.starts_with("s3://") && iceberg.s3.is_none() {
                // AWS credentials may come from the environment: allowed.
            }
            if iceberg.warehouse.trim().is_empty() {
                return Err((key("warehouse"), "must not be empty".into()));
            }
        }
    }
    Ok(())
}

/// One setting of a catalog written by `CREATE CATALOG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSetting {
    Text(String),
    Integer(i64),
    Boolean(bool),
    List(Vec<String>),
}

/// The text of a catalogs-directory file for a catalog of `type_name` with `settings`, each a
/// key (`s3.region` for a nested one) and its value, under a `# comment` line. Values are written
/// as given, so a `${...}` reference stays a reference and is expanded at load. Errors name the
/// key, never a value.
pub fn render_catalog_file(
    type_name: &str,
    settings: &[(String, CatalogSetting)],
    comment: &str,
) -> Result<String, String> {
    // toml_edit writes a string value with TOML's quoting and escapes.
    let quote = |text: &str| toml_edit::Value::from(text).to_string();
    let mut text = format!("# {comment}\ntype = {}\n", quote(type_name));
    for (key, value) in settings {
        let valid = !key.is_empty()
            && key.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid || key == "type" {
            return Err(format!("`{key}` is not a catalog setting"));
        }
        let value = match value {
            CatalogSetting::Text(text) => quote(text),
            CatalogSetting::Integer(number) => number.to_string(),
            CatalogSetting::Boolean(flag) => flag.to_string(),
            CatalogSetting::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|item| quote(item))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        text.push_str(&format!("{key} = {value}\n"));
    }
    Ok(text)
}

/// Writes `text` as catalog `name`'s file in `directory` (made if missing), readable by its
/// owner only (it may hold secrets), replacing the file at once: a reader never sees half of
/// it.
pub fn write_catalog_file(directory: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    std::fs::create_dir_all(directory)?;
    let path = directory.join(format!("{name}.toml"));
    // Hidden, so a directory read meanwhile skips it.
    let partial = directory.join(format!(".{name}.toml.partial"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// A size such as `2GiB`, `512MB`, `64k` or `1048576` (bytes), in bytes.
pub fn parse_size(text: &str) -> Option<usize> {
    let (number, unit) = split_number_unit(text)?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    (number >= 0.0).then_some((number * factor) as usize)
}

/// `"1.5 GiB"` as `(1.5, "GiB")`: a number and the unit after it.
pub(crate) fn split_number_unit(text: &str) -> Option<(f64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

impl ServerConfig {
    /// The per-connection memory limit in bytes; `None` for no limit.
    pub fn query_memory_limit_bytes(&self) -> Option<usize> {
        parse_size(&self.query_memory_limit).filter(|bytes| *bytes > 0)
    }
}

/// Catalog names are SQL identifiers that need no quoting.
pub fn is_valid_catalog_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub(crate) fn absolute(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid() {
        let config = Config::embedded_default().expect("root config.toml must load");
        assert!(config.catalogs.contains_key("iceberg"));
        assert!(config.catalogs.contains_key("postgresql"));
        assert_eq!(config.server.postgres_listen, "127.0.0.1:5433");
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_key() {
        let text = "[server]\npostgres_listen = \"127.0.0.1:1\"\n\n[catalogs.pg]\ntype = \"postgres\"\nhots = \"x\"\n";
        let error = Config::parse(text, "f.toml", Path::new(".")).unwrap_err();
        assert_eq!(error.file, "f.toml");
        assert_eq!(error.line, Some(6), "{error}");
        assert!(error.reason.contains("hots"), "{error}");
        assert!(error.to_string().starts_with("f.toml:6"), "{error}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = "[server]\nbatch_size = \"many\"\n";
        let error = Config::parse(text, "f.toml", Path::new(".")).unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
        assert_eq!(error.key.as_deref(), Some("server.batch_size"), "{error}");
    }

    #[test]
    fn missing_env_reference_is_an_error_naming_the_key() {
        let text = "[server]\ndefault_catalog = \"pg\"\n[catalogs.pg]\ntype = \"postgres\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\npassword = \"${FJORD_TEST_SURELY_UNSET_VARIABLE}\"\n";
        let error = Config::parse(text, "f.toml", Path::new(".")).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("catalogs.pg.password"));
        assert_eq!(error.line, Some(8), "{error}");
        assert!(error.reason.contains("FJORD_TEST_SURELY_UNSET_VARIABLE"));
    }

    #[test]
    fn secrets_never_print() {
        // SAFETY-free: tests in this module do not read this variable concurrently.
        let text = "[server]\ndefault_catalog = \"pg\"\n[catalogs.pg]\ntype = \"postgres\"\nurl = \"postgres://u:hunter2@h:5/d\"\n";
        let config = Config::parse(text, "f.toml", Path::new(".")).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let CatalogConfig::Postgres(pg) = &config.catalogs["pg"] else {
            panic!()
        };
        assert_eq!(pg.display_target(), "h:5/d");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("lots"), None);
        let error = Config::parse(
            "[server]\nquery_memory_limit = \"lots\"\n",
            "f.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
    }

    #[test]
    fn bad_catalog_name_is_rejected() {
        let text = "[server]\ndefault_catalog = \"Bad-Name\"\n[catalogs.Bad-Name]\ntype = \"iceberg\"\nwarehouse = \"w\"\n";
        let error = Config::parse(text, "f.toml", Path::new(".")).unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
    }

    #[test]
    fn unknown_catalog_type_is_rejected() {
        let text = "[catalogs.x]\ntype = \"mysql\"\n";
        let error = Config::parse(text, "f.toml", Path::new(".")).unwrap_err();
        assert!(error.reason.contains("mysql"), "{error}");
        assert_eq!(error.line, Some(2), "{error}");
    }

    const MAIN: &str = "[server]\ndefault_catalog = \"lake\"\n\n[catalogs.lake]\ntype = \"iceberg\"\nwarehouse = \"wh\"\n";

    #[test]
    fn the_catalogs_directory_adds_one_catalog_per_file() {
        let directory = tempfile::tempdir().unwrap();
        let catalogs = directory.path().join("catalogs");
        std::fs::create_dir(&catalogs).unwrap();
        std::fs::write(
            catalogs.join("shop.toml"),
            "type = \"postgres\"\nhost = \"db\"\ndatabase = \"shop\"\nuser = \"app\"\n",
        )
        .unwrap();
        // Editors' leftovers are not catalogs.
        std::fs::write(catalogs.join(".shop.toml.swp"), "junk").unwrap();
        std::fs::write(catalogs.join("notes.txt"), "junk").unwrap();
        let config = Config::parse(MAIN, "config.toml", directory.path()).unwrap();
        assert_eq!(config.catalogs.keys().collect::<Vec<_>>(), ["lake", "shop"]);
        assert_eq!(config.catalog_files["shop"], catalogs.join("shop.toml"));
        assert!(!config.catalog_files.contains_key("lake"));
    }

    #[test]
    fn a_bad_catalog_file_is_named_with_its_line() {
        let directory = tempfile::tempdir().unwrap();
        let catalogs = directory.path().join("catalogs");
        std::fs::create_dir(&catalogs).unwrap();
        let file = catalogs.join("shop.toml");
        std::fs::write(
            &file,
            "type = \"postgres\"\nhost = \"db\"\ndatabase = \"shop\"\nuser = \"app\"\nportt = 1\n",
        )
        .unwrap();
        let error = Config::parse(MAIN, "config.toml", directory.path()).unwrap_err();
        assert_eq!(error.file, file.display().to_string(), "{error}");
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.reason.contains("portt"), "{error}");

        std::fs::write(&file, "type = \"postgres\"\nhost = \"db\"\n").unwrap();
        let error = Config::parse(MAIN, "config.toml", directory.path()).unwrap_err();
        assert!(error.to_string().contains("database"), "{error}");

        std::fs::remove_file(&file).unwrap();
        std::fs::write(
            catalogs.join("lake.toml"),
            "type = \"iceberg\"\nwarehouse = \"x\"\n",
        )
        .unwrap();
        let error = Config::parse(MAIN, "config.toml", directory.path()).unwrap_err();
        assert!(
            error.reason.contains("also configured in config.toml:4"),
            "{error}"
        );

        std::fs::remove_file(catalogs.join("lake.toml")).unwrap();
        std::fs::write(
            catalogs.join("Shop.toml"),
            "type = \"iceberg\"\nwarehouse = \"x\"\n",
        )
        .unwrap();
        let error = Config::parse(MAIN, "config.toml", directory.path()).unwrap_err();
        assert!(error.reason.contains("`Shop`"), "{error}");
    }

    #[test]
    fn rendered_catalog_files_read_back_as_given() {
        let hostile = "a\"b\\c\nd'e $x";
        let settings = vec![
            ("host".to_string(), CatalogSetting::Text(hostile.into())),
            ("port".to_string(), CatalogSetting::Integer(6543)),
            (
                "password".to_string(),
                CatalogSetting::Text("${SHOP_PW}".into()),
            ),
            (
                "schemas".to_string(),
                CatalogSetting::List(vec!["public".into(), "x\"y".into()]),
            ),
        ];
        let text = render_catalog_file("postgres", &settings, "made by a test").unwrap();
        assert!(text.contains("\ntype = \"postgres\"\n"), "{text}");
        assert!(text.contains("\npassword = \"${SHOP_PW}\"\n"), "{text}");
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["host"].as_str(), Some(hostile));
        assert_eq!(table["port"].as_integer(), Some(6543));
        assert_eq!(table["password"].as_str(), Some("${SHOP_PW}"));
        assert_eq!(
            table["schemas"].as_array().unwrap()[1].as_str(),
            Some("x\"y")
        );
        let bad = render_catalog_file(
            "postgres",
            &[("host\nport".into(), CatalogSetting::Integer(1))],
            "x",
        );
        assert!(bad.is_err());
    }

    #[test]
    fn a_wrong_type_in_a_catalog_table_names_its_key_and_line() {
        let text = "[catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"w\"\n\n[catalogs.crm]\ntype = \"postgres\"\nhost = \"db\"\ndatabase = \"crm\"\nuser = \"u\"\npool_size = \"big\"\n\n[demo]\nseed = 1\n";
        let error = Config::parse(text, "c.toml", Path::new(".")).unwrap_err();
        assert_eq!(error.line, Some(10), "{error}");
        assert_eq!(
            error.key.as_deref(),
            Some("catalogs.crm.pool_size"),
            "{error}"
        );
    }
}
