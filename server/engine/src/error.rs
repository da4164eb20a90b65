//! Errors of query handling, classified once into SQLSTATE-style classes that every front door
//! maps to its own protocol (a Postgres SQLSTATE as is; a gRPC status from the class).

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use fjord_catalog::{IcebergError, PostgresError};

/// A classified error: the SQLSTATE a Postgres client sees, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    pub sqlstate: String,
    pub message: String,
    /// Extra context for the client (PostgreSQL's DETAIL).
    pub detail: Option<String>,
    /// A table changed after the statement was planned: planning it again gets past this.
    pub plan_again: bool,
}

/// Broad classes, for protocols that have fewer codes than Postgres (gRPC, HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The statement is wrong: syntax, types, unknown function (42xxx, 22xxx, 0Axxx).
    InvalidStatement,
    /// A named table, schema, catalog or column does not exist (42P01, 3F000, 3D000, 42703).
    NotFound,
    /// A data source cannot be reached right now (08xxx).
    Unavailable,
    /// The query was cancelled (57014).
    Cancelled,
    /// Out of memory or another resource (53xxx).
    ResourceExhausted,
    /// Something already exists (42P06, 42P07).
    AlreadyExists,
    /// A bug or an unexpected failure (XX000).
    Internal,
}

impl EngineError {
    pub fn new(sqlstate: &str, message: impl Into<String>) -> Self {
        EngineError {
            sqlstate: sqlstate.to_string(),
            message: message.into(),
            detail: None,
            plan_again: false,
        }
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(sqlstate::SYNTAX_ERROR, message)
    }

    pub fn class(&self) -> ErrorClass {
        let code = self.sqlstate.as_str();
        match code {
            sqlstate::UNDEFINED_TABLE
            | sqlstate::INVALID_SCHEMA_NAME
            | sqlstate::INVALID_CATALOG_NAME
            | sqlstate::UNDEFINED_COLUMN
            | sqlstate::UNDEFINED_FUNCTION => ErrorClass::NotFound,
            sqlstate::QUERY_CANCELED => ErrorClass::Cancelled,
            sqlstate::DUPLICATE_TABLE | sqlstate::DUPLICATE_SCHEMA => ErrorClass::AlreadyExists,
            _ if code.starts_with("08") => ErrorClass::Unavailable,
            _ if code.starts_with("53") => ErrorClass::ResourceExhausted,
            _ if code.starts_with("XX") || code.starts_with("58") => ErrorClass::Internal,
            _ => ErrorClass::InvalidStatement,
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EngineError {}

/// The SQLSTATE codes fjord uses, by their PostgreSQL names.
pub mod sqlstate {
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const CONNECTION_EXCEPTION: &str = "08000";
    pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const DATA_EXCEPTION: &str = "22000";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const INVALID_TRANSACTION_STATE: &str = "25000";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
    pub const SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: &str = "42000";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const DUPLICATE_SCHEMA: &str = "42P06";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_CURSOR: &str = "42P03";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const SYSTEM_ERROR: &str = "58000";
    pub const INTERNAL_ERROR: &str = "XX000";
}

impl From<DataFusionError> for EngineError {
    fn from(error: DataFusionError) -> Self {
        classify(&error)
    }
}

impl From<PostgresError> for EngineError {
    fn from(error: PostgresError) -> Self {
        classify_postgres(&error)
    }
}

/// Classifies a DataFusion error, looking through wrappers to the error that caused it.
pub fn classify(error: &DataFusionError) -> EngineError {
    use sqlstate as s;
    match error {
        DataFusionError::Context(_, inner) => classify(inner),
        DataFusionError::Diagnostic(_, inner) => classify(inner),
        DataFusionError::Shared(inner) => classify(inner),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(first) => classify(first),
            None => EngineError::new(s::INTERNAL_ERROR, error.to_string()),
        },
        DataFusionError::External(inner) => classify_external(inner.as_ref()),
        DataFusionError::SQL(parser_error, _) => {
            EngineError::new(s::SYNTAX_ERROR, format!("syntax error: {parser_error}"))
        }
        DataFusionError::NotImplemented(message) => EngineError::new(
            s::FEATURE_NOT_SUPPORTED,
            format!("not supported: {message}"),
        ),
        DataFusionError::Plan(message) => classify_plan_message(message),
        DataFusionError::SchemaError(schema_error, _) => {
            let message = schema_error.to_string();
            let code = if message.contains("No field named") || message.contains("not found") {
                s::UNDEFINED_COLUMN
            } else if message.contains("Ambiguous") || message.contains("ambiguous") {
                s::AMBIGUOUS_COLUMN
            } else if message.contains("Schema contains duplicate") {
                "42701"
            } else {
                s::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION
            };
            EngineError::new(code, message)
        }
        DataFusionError::ArrowError(arrow_error, _) => classify_arrow(arrow_error),
        DataFusionError::ResourcesExhausted(message) => {
            EngineError::new(s::OUT_OF_MEMORY, format!("resources exhausted: {message}"))
        }
        DataFusionError::Execution(message) => classify_execution_message(message),
        DataFusionError::ExecutionJoin(join_error) => {
            if join_error.is_cancelled() {
                EngineError::new(s::QUERY_CANCELED, "canceling statement due to user request")
            } else {
                EngineError::new(s::INTERNAL_ERROR, format!("internal error: {join_error}"))
            }
        }
        DataFusionError::IoError(io_error) => {
            EngineError::new(s::SYSTEM_ERROR, format!("I/O error: {io_error}"))
        }
        DataFusionError::ObjectStore(store_error) => {
            EngineError::new(s::SYSTEM_ERROR, format!("storage error: {store_error}"))
        }
        DataFusionError::ParquetError(parquet_error) => {
            EngineError::new(s::DATA_EXCEPTION, format!("parquet error: {parquet_error}"))
        }
        DataFusionError::Configuration(message) => EngineError::new(
            s::INVALID_PARAMETER_VALUE,
            format!("invalid setting: {message}"),
        ),
        DataFusionError::Substrait(message) => EngineError::new(s::INTERNAL_ERROR, message.clone()),
        DataFusionError::Internal(message) => {
            EngineError::new(s::INTERNAL_ERROR, format!("internal error: {message}"))
        }
        DataFusionError::Ffi(message) => EngineError::new(s::INTERNAL_ERROR, message.clone()),
    }
}

fn classify_postgres(error: &PostgresError) -> EngineError {
    let mut classified = EngineError::new(error.sqlstate(), error.to_string());
    classified.plan_again = error.needs_planning_again();
    classified
}

fn classify_external(error: &(dyn std::error::Error + Send + Sync + 'static)) -> EngineError {
    use sqlstate as s;
    if let Some(engine_error) = error.downcast_ref::<EngineError>() {
        return engine_error.clone();
    }
    if let Some(inner) = error.downcast_ref::<DataFusionError>() {
        return classify(inner);
    }
    if let Some(postgres) = error.downcast_ref::<PostgresError>() {
        return classify_postgres(postgres);
    }
    if let Some(arrow_error) = error.downcast_ref::<ArrowError>() {
        return classify_arrow(arrow_error);
    }
    if let Some(iceberg_error) = error.downcast_ref::<IcebergError>() {
        return classify_iceberg(iceberg_error);
    }
    if let Some(catalog_error) = error.downcast_ref::<fjord_catalog::CatalogError>() {
        return EngineError::new(catalog_error.sqlstate(), catalog_error.to_string());
    }
    EngineError::new(s::INTERNAL_ERROR, error.to_string())
}

fn classify_iceberg(error: &IcebergError) -> EngineError {
    use fjord_catalog::IcebergErrorKind as K;
    use sqlstate as s;
    let code = match error.kind() {
        K::TableNotFound => s::UNDEFINED_TABLE,
        K::NamespaceNotFound => s::INVALID_SCHEMA_NAME,
        K::TableAlreadyExists => s::DUPLICATE_TABLE,
        K::NamespaceAlreadyExists => s::DUPLICATE_SCHEMA,
        K::DataInvalid => s::DATA_EXCEPTION,
        K::FeatureUnsupported => s::FEATURE_NOT_SUPPORTED,
        _ => s::SYSTEM_ERROR,
    };
    EngineError::new(code, format!("iceberg: {error}"))
}

fn classify_arrow(error: &ArrowError) -> EngineError {
    use sqlstate as s;
    match error {
        ArrowError::DivideByZero => EngineError::new(s::DIVISION_BY_ZERO, "division by zero"),
        ArrowError::CastError(message) => EngineError::new(
            s::INVALID_TEXT_REPRESENTATION,
            format!("invalid value: {message}"),
        ),
        ArrowError::ParseError(message) => EngineError::new(
            s::INVALID_TEXT_REPRESENTATION,
            format!("invalid value: {message}"),
        ),
        ArrowError::ComputeError(message)
            if message.contains("Overflow") || message.contains("overflow") =>
        {
            EngineError::new(s::NUMERIC_VALUE_OUT_OF_RANGE, message.clone())
        }
        ArrowError::ArithmeticOverflow(message) => EngineError::new(
            s::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("value out of range: {}", message.to_lowercase()),
        ),
        ArrowError::ExternalError(inner) => classify_external(inner.as_ref()),
        ArrowError::MemoryError(message) => EngineError::new(s::OUT_OF_MEMORY, message.clone()),
        other => EngineError::new(s::DATA_EXCEPTION, other.to_string()),
    }
}

/// DataFusion reports most planning failures as a `Plan` string; its wording is stable enough
/// to find the unknown table, column or function a user typed.
fn classify_plan_message(message: &str) -> EngineError {
    use sqlstate as s;
    let code = if message.contains("failed to resolve catalog")
        || message.contains("catalog") && message.contains("not found")
    {
        s::INVALID_CATALOG_NAME
    } else if message.contains("table '") && message.contains("' not found") {
        s::UNDEFINED_TABLE
    } else if message.starts_with("No field named")
        || message.contains("column") && message.contains("not found")
    {
        s::UNDEFINED_COLUMN
    } else if message.contains("Invalid function")
        || message.contains("function") && message.contains("not found")
    {
        s::UNDEFINED_FUNCTION
    } else if message.contains("Cannot infer common")
        || message.contains("Cannot coerce")
        || message.contains("No function matches")
        || message.contains("does not support")
        || message.contains("type mismatch")
    {
        s::DATATYPE_MISMATCH
    } else if message.contains("already exists") {
        if message.contains("chema") {
            s::DUPLICATE_SCHEMA
        } else {
            s::DUPLICATE_TABLE
        }
    } else if message.contains("schema") && message.contains("not found")
        || message.contains("Schema") && message.contains("does not exist")
    {
        s::INVALID_SCHEMA_NAME
    } else {
        s::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION
    };
    let message = message.trim();
    // "table 'a.b.c' not found" reads better as Postgres says it.
    let message = match (code, message.split('\'').nth(1)) {
        (s::UNDEFINED_TABLE, Some(name)) => format!("relation \"{name}\" does not exist"),
        _ => message.to_string(),
    };
    EngineError::new(code, message)
}

fn classify_execution_message(message: &str) -> EngineError {
    use sqlstate as s;
    if message.contains("Divide by zero") || message.contains("division by zero") {
        EngineError::new(s::DIVISION_BY_ZERO, "division by zero")
    } else if message.contains("Cannot cast") || message.contains("Cast error") {
        EngineError::new(s::INVALID_TEXT_REPRESENTATION, message.to_string())
    } else if message.contains("overflow") || message.contains("Overflow") {
        EngineError::new(s::NUMERIC_VALUE_OUT_OF_RANGE, message.to_string())
    } else {
        EngineError::new(s::DATA_EXCEPTION, message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tables_are_42p01_with_their_name() {
        let error = classify(&DataFusionError::Plan(
            "table 'iceberg.data_on_eks.nope' not found".into(),
        ));
        assert_eq!(error.sqlstate, "42P01");
        assert_eq!(
            error.message,
            "relation \"iceberg.data_on_eks.nope\" does not exist"
        );
        assert_eq!(error.class(), ErrorClass::NotFound);
    }

    #[test]
    fn postgres_unavailability_keeps_its_class_through_wrappers() {
        let postgres = PostgresError::Unavailable {
            catalog: "postgresql".into(),
            target: "127.0.0.1:1/x".into(),
            reason: "refused".into(),
        };
        let wrapped = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::External(Box::new(postgres))),
        );
        let error = classify(&wrapped);
        assert_eq!(error.sqlstate, "08001");
        assert!(error.message.contains("`postgresql`"));
        assert_eq!(error.class(), ErrorClass::Unavailable);
    }
}
