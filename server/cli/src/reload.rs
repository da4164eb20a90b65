//! Following the configuration while `fjord serve` runs: when the file or the catalogs
//! directory changes (polled), or on SIGHUP, the configuration is loaded again and its catalogs
//! are applied to the registry. An edit that does not load is rejected whole, with its file,
//! line and reason, and the previous configuration keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fjord_catalog::CatalogRegistry;
use fjord_config::Config;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// How often the files are compared with what was last loaded.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A change is applied once the files have stayed the same this long, so that an editor's
/// half-written file is not mistaken for an edit.
const SETTLE: Duration = Duration::from_millis(150);

/// What the newest configuration load did, for `/catalogs` and the log.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// The configuration file, or `None` for the embedded default (which never changes).
    pub file: Option<PathBuf>,
    /// When the configuration now serving was loaded.
    pub loaded_at: SystemTime,
    /// Where each catalog of the serving configuration is defined.
    pub catalog_sources: BTreeMap<String, PathBuf>,
    /// The newest rejected edit: when, and why (file, line and reason). Cleared by a good load.
    pub rejected: Option<(SystemTime, String)>,
    /// Keys changed in the file that only a restart applies.
    pub restart_needed: Vec<String>,
}

impl ReloadStatus {
    pub fn new(config: &Config) -> Self {
        ReloadStatus {
            file: config.source.clone(),
            loaded_at: SystemTime::now(),
            catalog_sources: sources(config),
            rejected: None,
            restart_needed: Vec::new(),
        }
    }
}

fn sources(config: &Config) -> BTreeMap<String, PathBuf> {
    config
        .catalogs
        .keys()
        .map(|name| {
            let file = config
                .catalog_files
                .get(name)
                .or(config.source.as_ref())
                .cloned()
                .unwrap_or_else(|| PathBuf::from(fjord_config::DEFAULT_CONFIG_NAME));
            (name.clone(), file)
        })
        .collect()
}

/// The contents of the configuration file and of every file in the catalogs directory: two
/// equal snapshots mean nothing changed.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot(Vec<(PathBuf, Option<Vec<u8>>)>);

impl Snapshot {
    fn take(file: &Path, catalogs_dir: &Path) -> Snapshot {
        let mut files = vec![(file.to_path_buf(), std::fs::read(file).ok())];
        if let Ok(entries) = std::fs::read_dir(catalogs_dir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
                .collect();
            paths.sort();
            files.extend(paths.into_iter().map(|path| {
                let contents = std::fs::read(&path).ok();
                (path, contents)
            }));
        }
        Snapshot(files)
    }
}

/// Follows `config`'s file until `shutdown`; does nothing for the embedded default.
pub fn spawn(
    config: Config,
    registry: Arc<CatalogRegistry>,
    status: Arc<Mutex<ReloadStatus>>,
    shutdown: CancellationToken,
) {
    let Some(file) = config.source.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut hangup = hangup_signal();
        let mut serving = Serving {
            keys: std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or_default(),
            config,
        };
        let mut seen = Snapshot::take(&file, &serving.config.catalogs_dir());
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                _ = recv(&mut hangup) => true,
            };
            let now = Snapshot::take(&file, &serving.config.catalogs_dir());
            if !forced {
                if now == seen {
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                if Snapshot::take(&file, &serving.config.catalogs_dir()) != now {
                    continue;
                }
            }
            seen = now;
            if let Some(next) = reload(&file, &serving, &registry, &status, forced).await {
                serving = next;
                // The catalogs directory may have moved with the edit.
                seen = Snapshot::take(&file, &serving.config.catalogs_dir());
            }
        }
    });
}

/// The configuration serving, and its file's keys as TOML (to tell restart-only edits).
struct Serving {
    config: Config,
    keys: toml::Table,
}

/// Loads `file` again and applies its catalogs; returns the new configuration when it was
/// taken.
async fn reload(
    file: &Path,
    serving: &Serving,
    registry: &Arc<CatalogRegistry>,
    status: &Mutex<ReloadStatus>,
    forced: bool,
) -> Option<Serving> {
    let cause = if forced { "SIGHUP" } else { "an edit" };
    let loaded = match Config::load_with_text(file) {
        Ok((config, text)) => registry
            .apply(&config)
            .await
            .map(|changes| (config, text, changes))
            .map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match loaded {
        Ok((config, text, changes)) => {
            let keys: toml::Table = text.parse().unwrap_or_default();
            let mut restart_needed = Vec::new();
            diff_keys("", &serving.keys, &keys, &mut restart_needed);
            tracing::info!(
                file = %file.display(),
                "configuration reloaded after {cause}: {changes}"
            );
            for key in &restart_needed {
                tracing::warn!(
                    file = %file.display(),
                    "`{key}` changed: it takes effect at the next restart"
                );
            }
            {
                let mut status = status.lock();
                status.loaded_at = SystemTime::now();
                status.catalog_sources = sources(&config);
                status.rejected = None;
                status.restart_needed = restart_needed;
            }
            if !changes.added.is_empty() || !changes.changed.is_empty() {
                // Listing new catalogs may wait for an unreachable database: not here.
                let registry = registry.clone();
                tokio::spawn(async move { registry.refresh_all().await });
            }
            Some(Serving { config, keys })
        }
        Err(reason) => {
            tracing::error!(
                "configuration edit rejected, the previous configuration keeps serving: {reason}"
            );
            status.lock().rejected = Some((SystemTime::now(), reason));
            None
        }
    }
}

/// Dotted paths of the keys that differ between `before` and `after` (added, removed or
/// changed) and that a reload does not apply, into `out`: all but `[catalogs]` and
/// `server.catalogs_dir` (the load reads the directory it names).
fn diff_keys(prefix: &str, before: &toml::Table, after: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if (prefix.is_empty() && key == "catalogs") || (prefix == "server" && key == "catalogs_dir")
        {
            continue;
        }
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (before.get(key), after.get(key)) {
            (Some(toml::Value::Table(old)), Some(toml::Value::Table(new))) => {
                diff_keys(&path, old, new, out)
            }
            (old, new) if old != new => out.push(path),
            _ => {}
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot watch for SIGHUP; file edits are still followed");
                None
            }
        }
    }
}

async fn recv(hangup: &mut Hangup) {
    #[cfg(unix)]
    match hangup {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_outside_catalogs_need_a_restart() {
        let before: toml::Table = "[server]\npostgres_listen = \"a\"\nbatch_size = 1\n\n[catalogs.x]\ntype = \"iceberg\"\n"
            .parse()
            .unwrap();
        let after: toml::Table = "[server]\npostgres_listen = \"b\"\nbatch_size = 1\nmax_connections = 3\n\n[catalogs.y]\ntype = \"iceberg\"\n[demo]\nseed = 1\n"
            .parse()
            .unwrap();
        let mut changed = Vec::new();
        diff_keys("", &before, &after, &mut changed);
        assert_eq!(
            changed,
            ["demo", "server.max_connections", "server.postgres_listen"]
        );
    }
}
