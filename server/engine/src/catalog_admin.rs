//! `CREATE CATALOG` and `DROP CATALOG`: catalogs made and removed in SQL are files of the
//! catalogs directory, so they survive a restart and an operator sees them where the other
//! catalog files are. The statement writes or removes the file, loads the configuration again
//! and applies its catalogs at once; the configuration watch of `fjord serve` then finds
//! nothing more to do. Settings are written as given, so a `${ENV}` or `${file:...}` reference
//! stays a reference on disk and in the statement; neither the statement's settings nor
//! expanded values are logged.

use fjord_catalog::CatalogRegistry;
use fjord_config::Config;

use crate::commands::CatalogProperties;
use crate::error::{EngineError, sqlstate};

fn config_error(error: fjord_config::ConfigError) -> EngineError {
    EngineError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("the catalog's settings do not load: {error}"),
    )
}

fn check_admin(config: &Config, user: &str, statement: &str) -> Result<(), EngineError> {
    if config.server.auth.is_admin(user) {
        return Ok(());
    }
    Err(EngineError::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!(
            "permission denied for {statement}: user \"{user}\" is not one of server.auth.admins"
        ),
    ))
}

/// `CREATE CATALOG name USING type WITH (...)` by `user`.
pub(crate) async fn create(
    config: &Config,
    registry: &CatalogRegistry,
    user: &str,
    (name, type_name, properties, if_not_exists): (&str, &str, &CatalogProperties, bool),
) -> Result<(), EngineError> {
    check_admin(config, user, "CREATE CATALOG")?;
    if !matches!(type_name, "postgres" | "iceberg") {
        return Err(EngineError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("catalog type \"{type_name}\" does not exist: use postgres or iceberg"),
        ));
    }
    if !fjord_config::is_valid_catalog_name(name)
        || matches!(name, "system" | "information_schema" | "pg_catalog")
    {
        return Err(EngineError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "\"{name}\" cannot name a catalog: use a lowercase letter, then lowercase letters, \
                 digits and underscores (system, information_schema and pg_catalog are reserved)"
            ),
        ));
    }
    let current = config.load_again().map_err(|error| {
        EngineError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the configuration does not load now, so no catalog can be added: {error}"),
        )
    })?;
    if current.catalogs.contains_key(name) || registry.get(name).is_some() {
        if if_not_exists {
            return Ok(());
        }
        return Err(EngineError::new(
            sqlstate::DUPLICATE_OBJECT,
            format!("catalog \"{name}\" already exists"),
        ));
    }
    let comment = format!(
        "Made by CREATE CATALOG (user \"{user}\", {}).",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    let text = fjord_config::render_catalog_file(type_name, &properties.0, &comment)
        .map_err(|reason| EngineError::new(sqlstate::INVALID_PARAMETER_VALUE, reason))?;
    let directory = current.catalogs_dir();
    let path = fjord_config::write_catalog_file(&directory, name, &text).map_err(|error| {
        EngineError::new(
            sqlstate::SYSTEM_ERROR,
            format!(
                "cannot write the catalog file in {}: {error}",
                directory.display()
            ),
        )
    })?;
    let applied = match current.load_again() {
        Ok(next) => registry.apply(&next).await.map_err(|error| {
            EngineError::new(sqlstate::INVALID_PARAMETER_VALUE, error.to_string())
        }),
        Err(error) => Err(config_error(error)),
    };
    match applied {
        Ok(changes) => {
            tracing::info!(catalog = name, user, file = %path.display(), "CREATE CATALOG: {changes}");
            Ok(())
        }
        Err(error) => {
            // Nothing was applied: the file goes too, so a restart does not find it.
            if let Err(remove) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), %remove, "cannot remove a refused catalog file");
            }
            Err(error)
        }
    }
}

/// `DROP CATALOG name` by `user`: only catalogs of the catalogs directory can be dropped.
pub(crate) async fn drop(
    config: &Config,
    registry: &CatalogRegistry,
    user: &str,
    name: &str,
    if_exists: bool,
) -> Result<(), EngineError> {
    check_admin(config, user, "DROP CATALOG")?;
    let current = config.load_again().map_err(|error| {
        EngineError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the configuration does not load now, so no catalog can be dropped: {error}"),
        )
    })?;
    if !current.catalogs.contains_key(name) {
        if if_exists && registry.get(name).is_none() {
            return Ok(());
        }
        return Err(EngineError::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!("catalog \"{name}\" does not exist"),
        ));
    }
    let Some(path) = current.catalog_files.get(name) else {
        let file = current
            .source
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_else(|| fjord_config::DEFAULT_CONFIG_NAME.to_string());
        return Err(EngineError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "catalog \"{name}\" is configured in {file}; remove it there (DROP CATALOG removes \
                 catalogs of the catalogs directory)"
            ),
        ));
    };
    let kept = std::fs::read(path).map_err(|error| {
        EngineError::new(
            sqlstate::SYSTEM_ERROR,
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    std::fs::remove_file(path).map_err(|error| {
        EngineError::new(
            sqlstate::SYSTEM_ERROR,
            format!("cannot remove {}: {error}", path.display()),
        )
    })?;
    let applied = match current.load_again() {
        Ok(next) => registry.apply(&next).await.map_err(|error| {
            EngineError::new(sqlstate::INVALID_PARAMETER_VALUE, error.to_string())
        }),
        Err(error) => Err(EngineError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("catalog \"{name}\" cannot be dropped: without it {error}"),
        )),
    };
    match applied {
        Ok(changes) => {
            tracing::info!(catalog = name, user, file = %path.display(), "DROP CATALOG: {changes}");
            Ok(())
        }
        Err(error) => {
            if let Err(restore) = fjord_config::write_catalog_file(
                path.parent().unwrap_or(&current.catalogs_dir()),
                name,
                &String::from_utf8_lossy(&kept),
            ) {
                tracing::error!(file = %path.display(), %restore, "cannot restore a catalog file after a refused DROP CATALOG");
            }
            Err(error)
        }
    }
}
