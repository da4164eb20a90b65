//! Errors of the Postgres connector, each naming the catalog it concerns.

use datafusion::error::DataFusionError;

/// What went wrong talking to one Postgres catalog.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The database cannot be reached (refused, timed out, connection lost).
    #[error("catalog `{catalog}` is unavailable: cannot reach PostgreSQL at {target}: {reason}")]
    Unavailable {
        catalog: String,
        target: String,
        reason: String,
    },
    /// Postgres answered with an error of its own; `sqlstate` is Postgres's code.
    #[error("catalog `{catalog}`: PostgreSQL error: {message}")]
    Server {
        catalog: String,
        sqlstate: String,
        message: String,
    },
    /// The rows Postgres sent could not be decoded.
    #[error("catalog `{catalog}`: cannot decode a value of column `{column}`: {reason}")]
    Decode {
        catalog: String,
        column: String,
        reason: String,
    },
    /// A table's columns changed after the statement was planned with the ones fjord had read
    /// before; the statement must be planned again (the engine does so once by itself).
    #[error(
        "catalog `{catalog}`: table {table} changed after the statement was planned; run it again"
    )]
    Changed { catalog: String, table: String },
    /// A statement planned with its parameters unbound got a value that cannot be written
    /// into its statement for Postgres; the engine runs it with the values bound first.
    #[error("catalog `{catalog}`: {reason}")]
    Unbound { catalog: String, reason: String },
    /// A broken invariant of the connector itself.
    #[error("catalog `{catalog}`: internal error: {reason}")]
    Internal { catalog: String, reason: String },
}

impl PostgresError {
    /// Whether planning the statement again (with the table read afresh) would get past it.
    pub fn needs_planning_again(&self) -> bool {
        matches!(
            self,
            PostgresError::Changed { .. } | PostgresError::Unbound { .. }
        )
    }

    /// The SQLSTATE a client should see for this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            PostgresError::Unavailable { .. } => "08001",
            PostgresError::Server { sqlstate, .. } => sqlstate,
            // Postgres's own code when a prepared statement's cached plan no longer fits.
            PostgresError::Changed { .. } => "0A000",
            PostgresError::Unbound { .. } => "22023",
            PostgresError::Decode { .. } | PostgresError::Internal { .. } => "XX000",
        }
    }

    pub fn catalog(&self) -> &str {
        match self {
            PostgresError::Unavailable { catalog, .. }
            | PostgresError::Server { catalog, .. }
            | PostgresError::Decode { catalog, .. }
            | PostgresError::Changed { catalog, .. }
            | PostgresError::Unbound { catalog, .. }
            | PostgresError::Internal { catalog, .. } => catalog,
        }
    }

    /// Classifies a driver error: lost connections are unavailability, the rest keeps
    /// Postgres's own SQLSTATE.
    pub fn from_driver(catalog: &str, target: &str, error: tokio_postgres::Error) -> Self {
        if let Some(db) = error.as_db_error() {
            let code = db.code().code();
            // Class 08 (connection), 57P01..57P03 (shutdown, cannot connect now) mean the
            // source is not there right now.
            if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
                return PostgresError::Unavailable {
                    catalog: catalog.into(),
                    target: target.into(),
                    reason: db.message().to_string(),
                };
            }
            return PostgresError::Server {
                catalog: catalog.into(),
                sqlstate: code.to_string(),
                message: db.message().to_string(),
            };
        }
        let reason = match std::error::Error::source(&error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        };
        PostgresError::Unavailable {
            catalog: catalog.into(),
            target: target.into(),
            reason,
        }
    }
}

impl From<PostgresError> for DataFusionError {
    fn from(error: PostgresError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}
