//! The query engine every front door shares: sessions, statement handling and execution.
//!
//! A front door (pgwire today, Flight SQL next) creates one [`Session`] per client connection,
//! [`Session::prepare`]s each statement and [`Session::execute`]s it. Until the last step, where
//! rows are encoded, the same SQL text goes through the same code whatever the protocol.
//! Sessions share the catalogs and the memory pool; settings (`SET`, `USE`) are per session.

mod catalog_admin;
mod checked_arithmetic;
mod column_names;
mod commands;
mod conjunct_order;
mod constant_plans;
mod copy;
mod cursors;
mod decimal_arithmetic;
mod error;
mod group_key_joins;
mod in_list_nulls;
mod int4_literals;
mod interval_arithmetic;
mod kept_plans;
mod not_null;
mod numeric_sums;
mod pg_catalog;
mod pg_catalog_tables;
pub mod pg_text;
pub mod queries;
mod query_planner;
mod session_vars;
mod shared_subplans;
mod system;
mod types;
mod unique_semi_joins;
mod untyped_literals;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{ParamValues, TableReference, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    DdlStatement, DmlStatement, LogicalPlan, LogicalPlanBuilder, WriteOp, cast, col,
};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use fjord_catalog::{CatalogHandle, CatalogRegistry};
use fjord_config::Config;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

pub use commands::{Command, loggable as loggable_sql, split_statements};
pub use copy::{CopyFormat, CopyOptions, CopyStatement, ForceQuote, recognize as recognize_copy};
pub use error::{EngineError, ErrorClass, classify, sqlstate};
pub use fjord_catalog;
pub use pg_catalog::version_string;
use session_vars::SessionVariables;
pub use types::{TextCarried, text_carried_type};

/// A session's TimeZone until it sets another (Postgres's default when the server's is UTC).
const DEFAULT_TIME_ZONE: &str = "UTC";

/// The catalogs and resources every session shares.
pub struct Engine {
    config: Arc<Config>,
    registry: Arc<CatalogRegistry>,
    queries: Arc<queries::QueryLog>,
    catalog_list: Arc<pg_catalog::SessionCatalogList>,
    compatibility_parser: Arc<datafusion_pg_catalog::sql::PostgresCompatibilityParser>,
    runtime: Arc<RuntimeEnv>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("catalogs", &self.registry.names())
            .finish()
    }
}

impl Engine {
    /// Builds the catalogs of `config`.
    pub async fn new(config: Config) -> Result<Arc<Engine>, fjord_catalog::CatalogError> {
        let registry = CatalogRegistry::from_config(&config).await?;
        Ok(Self::with_registry(config, registry))
    }

    pub fn with_registry(config: Config, registry: Arc<CatalogRegistry>) -> Arc<Engine> {
        let runtime = RuntimeEnvBuilder::new()
            .build_arc()
            .expect("the default runtime environment builds");
        let queries = Arc::new(queries::QueryLog::default());
        let system = system::SystemCatalog::new(&config, registry.clone(), queries.clone());
        let catalog_list = Arc::new(pg_catalog::SessionCatalogList::new(
            registry.clone(),
            Arc::new(system),
        ));
        let compatibility_parser =
            Arc::new(datafusion_pg_catalog::sql::PostgresCompatibilityParser::new());
        Arc::new(Engine {
            config: Arc::new(config),
            registry,
            queries,
            catalog_list,
            compatibility_parser,
            runtime,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn registry(&self) -> &Arc<CatalogRegistry> {
        &self.registry
    }

    /// `pg_cancel_backend(pid)`: cancels the statement running on connection `pid` (its own
    /// user's, or anyone's for an admin), `true` when there was such a connection.
    fn cancel_backend_udf(
        self: &Arc<Self>,
        facts: Arc<parking_lot::RwLock<pg_catalog::SessionFacts>>,
    ) -> datafusion::logical_expr::ScalarUDF {
        use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
        use datafusion::common::{DataFusionError, ScalarValue};
        use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
        let engine = Arc::downgrade(self);
        create_udf(
            "pg_cancel_backend",
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Volatile,
            Arc::new(move |arguments: &[ColumnarValue]| {
                let Some(engine) = engine.upgrade() else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))));
                };
                let user = facts.read().user.clone();
                let admin = engine.config.server.auth.is_admin(&user);
                let cancel =
                    |pid: i64| -> datafusion::error::Result<bool> {
                        let pid = i32::try_from(pid).unwrap_or(0);
                        engine.queries.cancel_backend(pid, &user, admin).map_err(|_| {
                        DataFusionError::External(Box::new(EngineError::new(
                            sqlstate::INSUFFICIENT_PRIVILEGE,
                            format!(
                                "permission denied to cancel connection {pid}: it is another \
                                 user's, and \"{user}\" is not one of server.auth.admins"
                            ),
                        )))
                    })
                    };
                match &arguments[0] {
                    ColumnarValue::Scalar(ScalarValue::Int64(pid)) => Ok(ColumnarValue::Scalar(
                        ScalarValue::Boolean(pid.map(cancel).transpose()?),
                    )),
                    ColumnarValue::Scalar(_) => {
                        Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)))
                    }
                    ColumnarValue::Array(array) => {
                        let pids =
                            array.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                                DataFusionError::Internal("pg_cancel_backend takes int8".into())
                            })?;
                        let answers = (0..pids.len())
                            .map(|i| {
                                (!pids.is_null(i))
                                    .then(|| cancel(pids.value(i)))
                                    .transpose()
                            })
                            .collect::<datafusion::error::Result<BooleanArray>>()?;
                        Ok(ColumnarValue::Array(Arc::new(answers)))
                    }
                }
            }),
        )
    }

    /// Running and recent statements.
    pub fn queries(&self) -> &Arc<queries::QueryLog> {
        &self.queries
    }

    /// A new session with the configured defaults.
    pub fn new_session(self: &Arc<Self>) -> Session {
        let server = &self.config.server;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(&server.default_catalog, &server.default_schema)
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(self.config.target_partitions())
            .with_batch_size(server.batch_size);
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        // `8.3` is an exact numeric, as in Postgres, not the double nearest to it: compared with
        // a numeric(5,2) column, the double would become 8.300000000000001.
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        // A join's build side of up to 1024 keys reaches the probe side's scans as an IN list,
        // which the lake scan applies (a larger one only as a key range; see `IcebergScanExec`):
        // in TPC-H q19 the 1k parts that qualify cut lineitem before its join, and q02's 642
        // part keys reach below its grouped subquery. DataFusion's default is 150.
        config
            .options_mut()
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values = 1024;
        // The session's TimeZone types `now()` and `TIMESTAMPTZ '...'` literals as timestamps
        // with a zone, and reads a literal without an offset in that zone, as Postgres does.
        config.options_mut().execution.time_zone = Some(DEFAULT_TIME_ZONE.into());
        // Each connection gets its own memory pool: one query at a time runs on a connection, so
        // this bounds a query, and a huge one fails alone (53200) instead of starving the rest.
        let runtime = match server.query_memory_limit_bytes() {
            Some(limit) => RuntimeEnvBuilder::new()
                .with_memory_limit(limit, 1.0)
                .build_arc()
                .unwrap_or_else(|_| self.runtime.clone()),
            None => self.runtime.clone(),
        };
        let mut analyzer_rules = datafusion::optimizer::Analyzer::new().rules;
        analyzer_rules.insert(0, Arc::new(untyped_literals::UntypedLiterals));
        analyzer_rules.insert(1, Arc::new(numeric_sums::NumericSums));
        analyzer_rules.push(Arc::new(pg_text::TextCasts));
        analyzer_rules.push(Arc::new(in_list_nulls::InListNulls));
        let mut physical_rules =
            datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        let dynamic_filters = physical_rules
            .iter()
            .position(|rule| rule.name() == unique_semi_joins::RUNS_BEFORE)
            .unwrap_or(physical_rules.len());
        physical_rules.insert(
            dynamic_filters,
            Arc::new(unique_semi_joins::UniqueSemiJoins),
        );
        physical_rules.insert(
            dynamic_filters + 1,
            Arc::new(group_key_joins::GroupKeyJoins),
        );
        physical_rules.push(Arc::new(checked_arithmetic::CheckedArithmetic));
        physical_rules.push(Arc::new(conjunct_order::ConjunctOrder));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_catalog_list(self.catalog_list.clone())
            .with_default_features()
            .with_analyzer_rules(analyzer_rules)
            .with_optimizer_rule(Arc::new(fjord_postgres::PostgresPushdown))
            .with_optimizer_rule(Arc::new(shared_subplans::SharedSubplans))
            .with_query_planner(Arc::new(query_planner::FjordQueryPlanner))
            .with_physical_optimizer_rules(physical_rules)
            .build();
        let mut context = SessionContext::new_with_state(state);
        let facts = Arc::new(parking_lot::RwLock::new(pg_catalog::SessionFacts {
            user: "fjord".into(),
            backend_pid: 0,
        }));
        // Consulted after DataFusion's own planners, for operators they leave as they are.
        if let Err(error) = datafusion::execution::FunctionRegistry::register_expr_planner(
            &mut context,
            Arc::new(interval_arithmetic::IntervalArithmetic),
        ) {
            tracing::warn!(%error, "interval arithmetic is not available");
        }
        pg_catalog::register_session_functions(&context, facts.clone());
        context.register_udf(self.cancel_backend_udf(facts.clone()));
        let variables = Arc::new(Mutex::new(SessionVariables::new(&server.default_schema)));
        context.register_udf(session_vars::CurrentSetting::udf(variables.clone()));
        Session {
            inner: Arc::new(SessionInner {
                engine: self.clone(),
                context,
                variables,
                facts,
                constant_plans: Mutex::default(),
                recent_queries: Mutex::default(),
                plans_generation: Default::default(),
                cursors: Mutex::default(),
            }),
        }
    }
}

/// One client's session. Cloning shares it (a connection's handlers each hold a clone).
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    engine: Arc<Engine>,
    context: SessionContext,
    variables: Arc<Mutex<SessionVariables>>,
    facts: Arc<parking_lot::RwLock<pg_catalog::SessionFacts>>,
    constant_plans: Mutex<constant_plans::ConstantPlans>,
    /// Queries planned from text that may keep their plan, for clients that send the same
    /// text again unnamed (see `kept_plans`).
    recent_queries: Mutex<kept_plans::RecentQueries>,
    /// Counts statements that changed the session, which plans kept across statements may
    /// depend on (see `kept_plans`).
    plans_generation: std::sync::atomic::AtomicU64,
    cursors: Mutex<cursors::Cursors>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        let pid = self.facts.read().backend_pid;
        if pid != 0 {
            self.engine.queries.unregister_backend(pid);
        }
    }
}

/// A statement ready to run: planned by DataFusion or recognized as a fjord command.
///
/// A plan pins the Iceberg snapshots it read when it was made, so a prepared statement that runs
/// again has its tables looked up again (and is planned again from its text if their columns
/// changed): every execution sees the tables as they are then, as in Postgres.
#[derive(Debug, Clone)]
pub struct Prepared {
    kind: PreparedKind,
    sql: Arc<str>,
    /// Set by the first execution; later ones look the tables up afresh.
    executed: Arc<std::sync::atomic::AtomicBool>,
    /// The physical plan later executions run again, where it may be kept (see `kept_plans`).
    kept: Arc<Mutex<kept_plans::Kept>>,
    /// Result column names as Postgres gives them, where they differ from DataFusion's.
    names: Option<Arc<[String]>>,
    /// For `FETCH`: the rows' schema, which is its cursor's.
    cursor_schema: Option<SchemaRef>,
    /// For a query: its rows' schema after analysis, whose rules can change a column's type
    /// from what the SQL planner gave it (a bigint's sum is a numeric, see `numeric_sums`).
    analyzed_schema: Option<SchemaRef>,
    /// `output_schema`, worked out on its first call (after the fields above are final):
    /// clients describe a statement each time they run it.
    output: std::sync::OnceLock<Option<SchemaRef>>,
    /// `parameter_types`, worked out on its first call: every execution asks for them.
    parameters: std::sync::OnceLock<Vec<Option<DataType>>>,
    /// The catalog each table it names is qualified with, if any (see `catalogs`), worked out
    /// on its first call.
    named_catalogs: std::sync::OnceLock<Vec<Option<String>>>,
    /// The row shape a client was told, once it described the statement (see `as_described`).
    described: std::sync::OnceLock<SchemaRef>,
    /// The schema its rows were last renamed to (see `client_named`), and the one they had.
    renamed: Arc<Mutex<Option<(SchemaRef, SchemaRef)>>>,
}

#[derive(Debug, Clone)]
enum PreparedKind {
    Empty,
    Command(Command),
    Plan(Box<LogicalPlan>),
    /// A query that reads no table: planned once per session (see `constant_plans`).
    Constant(Arc<constant_plans::ConstantPlan>),
    /// `DECLARE name CURSOR FOR query`, with the query prepared (it may have parameters).
    Declare {
        name: String,
        hold: bool,
        query: Box<Prepared>,
    },
    /// `COPY ... TO STDOUT`, with its query prepared.
    Copy {
        query: Box<Prepared>,
        options: CopyOptions,
    },
}

/// `stream` once its first batch is in: a scan whose table changed since planning (or whose
/// parameter values cannot be sent as planned) fails before any row, and that error comes
/// back here, with `plan_again`, instead of in the stream, so the statement can be planned
/// again and run.
async fn confirmed(
    mut stream: SendableRecordBatchStream,
) -> Result<SendableRecordBatchStream, EngineError> {
    let first = stream.next().await;
    if let Some(Err(error)) = &first {
        let classified = error::classify(error);
        if classified.plan_again {
            return Err(classified);
        }
    }
    let schema = stream.schema();
    let rest = futures::stream::iter(first).chain(stream);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rest)))
}

/// How recently Postgres must have confirmed a table's columns for a statement described now
/// to be described with them without asking again. A change within that time is still seen by
/// the statement's scan when it runs, and rows of another width then fail (see `as_described`).
const DESCRIBED_SHAPES_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// A statement's rows, if they have the columns its client was told of when it described the
/// statement: as many, each of the same Postgres type. A Postgres table changed since then (a
/// column added or dropped under `*`, or a column's type altered) gives rows the client would
/// misread: Postgres refuses to run its own prepared statements then, with this error, and so
/// does fjord.
fn as_described(
    prepared: &Prepared,
    stream: SendableRecordBatchStream,
) -> Result<SendableRecordBatchStream, EngineError> {
    match prepared.described.get() {
        Some(described) if !same_row_types(described, &stream.schema()) => Err(EngineError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "cached plan must not change result type",
        )),
        _ => Ok(stream),
    }
}

/// Whether rows of `actual` read as rows of `described` do: as many columns, each described
/// with the same Postgres type (an Arrow type's width or string layout aside).
fn same_row_types(described: &SchemaRef, actual: &SchemaRef) -> bool {
    if Arc::ptr_eq(described, actual) || described.fields() == actual.fields() {
        return true;
    }
    let key = fjord_catalog::fjord_postgres_type_key();
    described.fields().len() == actual.fields().len()
        && described
            .fields()
            .iter()
            .zip(actual.fields())
            .all(|(a, b)| {
                pg_catalog_tables::postgres_type(a, key).0
                    == pg_catalog_tables::postgres_type(b, key).0
            })
}

/// The schema a query's rows will have once analyzed, where it differs from the plan's; `None`
/// for other statements, or where analysis needs what only execution gives (parameter values).
fn analyzed_schema(
    state: &datafusion::execution::SessionState,
    plan: &LogicalPlan,
) -> Option<SchemaRef> {
    if matches!(
        plan,
        LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)
    ) {
        return None;
    }
    let analyzed = state
        .analyzer()
        .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
        .ok()?;
    let schema = analyzed.schema().as_arrow();
    let differs = schema
        .fields()
        .iter()
        .zip(plan.schema().fields())
        .any(|(analyzed, planned)| analyzed.data_type() != planned.data_type());
    differs.then(|| Arc::new(schema.clone()))
}

/// The completion tag of a statement that returns no rows, as Postgres spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    pub command: String,
    pub oid: Option<u32>,
    pub rows: Option<usize>,
}

impl CommandTag {
    pub fn new(command: &str) -> Self {
        CommandTag {
            command: command.to_string(),
            oid: None,
            rows: None,
        }
    }

    pub fn with_rows(mut self, rows: usize) -> Self {
        self.rows = Some(rows);
        self
    }
}

/// What [`Session::execute_partitioned`] produced.
pub enum Executed {
    /// A query's rows, one stream per partition of its plan (at least one).
    Partitions(Vec<SendableRecordBatchStream>),
    /// Anything else, as [`Session::execute`] gives it.
    One(Outcome),
}

/// What running a statement produced.
pub enum Outcome {
    Empty,
    /// Rows, streamed as they are computed; `tag` is the command word for completion.
    Rows {
        stream: SendableRecordBatchStream,
        tag: String,
    },
    Command(CommandTag),
    TransactionStart(CommandTag),
    TransactionEnd(CommandTag),
    /// `COPY ... TO STDOUT`: rows for the frontend to write as COPY data.
    Copy {
        stream: SendableRecordBatchStream,
        options: CopyOptions,
    },
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Empty => write!(f, "Empty"),
            Outcome::Rows { tag, .. } => write!(f, "Rows({tag})"),
            Outcome::Command(tag) => write!(f, "Command({tag:?})"),
            Outcome::TransactionStart(tag) => write!(f, "TransactionStart({tag:?})"),
            Outcome::TransactionEnd(tag) => write!(f, "TransactionEnd({tag:?})"),
            Outcome::Copy { options, .. } => write!(f, "Copy({:?})", options.format),
        }
    }
}

impl Prepared {
    fn new(kind: PreparedKind, sql: &str) -> Self {
        let names = match &kind {
            PreparedKind::Constant(plan) => plan.names(),
            _ => None,
        };
        Prepared {
            kind,
            sql: Arc::from(sql),
            executed: Arc::default(),
            kept: Arc::default(),
            names,
            cursor_schema: None,
            analyzed_schema: None,
            output: std::sync::OnceLock::new(),
            parameters: std::sync::OnceLock::new(),
            named_catalogs: std::sync::OnceLock::new(),
            described: std::sync::OnceLock::new(),
            renamed: Arc::default(),
        }
    }

    /// The catalogs of the tables this statement reads or writes (`default` for names without
    /// one), sorted.
    fn catalogs(&self, default: impl Fn() -> String) -> Vec<String> {
        if let PreparedKind::Declare { query, .. } | PreparedKind::Copy { query, .. } = &self.kind {
            return query.catalogs(default);
        }
        let named = self.named_catalogs.get_or_init(|| {
            let mut named = Vec::new();
            if let PreparedKind::Plan(plan) = &self.kind {
                let _ = plan.apply_with_subqueries(|node| {
                    let table = match node {
                        LogicalPlan::TableScan(scan) => Some(&scan.table_name),
                        LogicalPlan::Dml(dml) => Some(&dml.table_name),
                        _ => None,
                    };
                    if let Some(table) = table {
                        named.push(table.catalog().map(str::to_string));
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
            }
            named
        });
        if named.is_empty() {
            return Vec::new();
        }
        let default = named.iter().any(Option::is_none).then(default);
        let mut catalogs: Vec<String> = named
            .iter()
            .filter_map(|catalog| catalog.clone().or_else(|| default.clone()))
            .collect();
        catalogs.sort();
        catalogs.dedup();
        catalogs
    }

    fn with_names(mut self, names: Option<Arc<[String]>>) -> Self {
        self.names = names;
        self
    }

    /// `schema` with the client-facing column names.
    fn named(&self, schema: SchemaRef) -> SchemaRef {
        match &self.names {
            Some(names) if names.len() == schema.fields().len() => {
                column_names::renamed_schema(&schema, names)
            }
            _ => schema,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self.kind, PreparedKind::Empty)
    }

    /// The result stream with the client-facing column names.
    fn client_named(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        match &self.names {
            Some(names) => column_names::rename(stream, names, &self.renamed),
            None => stream,
        }
    }

    /// `output_schema`, as a client's Describe tells it: its rows must keep that many columns.
    pub fn describe_output(&self) -> Option<SchemaRef> {
        let schema = self.output_schema();
        if let Some(schema) = &schema {
            let _ = self.described.set(schema.clone());
        }
        schema
    }

    /// The schema of the rows this statement returns, `None` if it returns none.
    pub fn output_schema(&self) -> Option<SchemaRef> {
        self.output
            .get_or_init(|| self.work_out_output_schema())
            .clone()
    }

    fn work_out_output_schema(&self) -> Option<SchemaRef> {
        match &self.kind {
            PreparedKind::Empty | PreparedKind::Declare { .. } | PreparedKind::Copy { .. } => None,
            PreparedKind::Command(command) => self
                .cursor_schema
                .clone()
                .or_else(|| command_schema(command)),
            PreparedKind::Constant(plan) => Some(self.named(plan.schema())),
            PreparedKind::Plan(plan) => match plan.as_ref() {
                LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => None,
                plan => Some(
                    self.named(
                        self.analyzed_schema
                            .clone()
                            .unwrap_or_else(|| Arc::new(plan.schema().as_arrow().clone())),
                    ),
                ),
            },
        }
    }

    /// Parameter types in `$1, $2, ...` order (numeric, so `$10` follows `$9`); `None` where
    /// DataFusion could not infer one.
    pub fn parameter_types(&self) -> Vec<Option<DataType>> {
        self.parameters
            .get_or_init(|| self.work_out_parameter_types())
            .clone()
    }

    fn work_out_parameter_types(&self) -> Vec<Option<DataType>> {
        if let PreparedKind::Declare { query, .. } = &self.kind {
            return query.parameter_types();
        }
        let PreparedKind::Plan(plan) = &self.kind else {
            return Vec::new();
        };
        let Ok(types) = plan.get_parameter_types() else {
            return Vec::new();
        };
        let count = types
            .keys()
            .filter_map(|key| key.strip_prefix('$')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        let mut ordered = vec![None; count];
        for (key, data_type) in types {
            if let Some(index) = key.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
                && index >= 1
            {
                ordered[index - 1] = data_type;
            }
        }
        // `$1::bigint` leaves the placeholder untyped in DataFusion; the cast says what the
        // client should send, as Postgres would infer it.
        if ordered.iter().any(Option::is_none) {
            use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
            use datafusion::logical_expr::{Cast, Expr, TryCast};
            let _ = plan.apply_with_subqueries(|node| {
                node.apply_expressions(|expression| {
                    expression.apply(|inner| {
                        let (placeholder, data_type) = match inner {
                            Expr::Cast(Cast { expr, data_type })
                            | Expr::TryCast(TryCast { expr, data_type }) => {
                                (expr.as_ref(), data_type)
                            }
                            _ => return Ok(TreeNodeRecursion::Continue),
                        };
                        if let Expr::Placeholder(placeholder) = placeholder
                            && let Some(index) = placeholder
                                .id
                                .strip_prefix('$')
                                .and_then(|n| n.parse::<usize>().ok())
                            && index >= 1
                            && index <= ordered.len()
                            && ordered[index - 1].is_none()
                        {
                            ordered[index - 1] = Some(data_type.clone());
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                })
            });
        }
        ordered
    }
}

fn utf8_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|name| Field::new(*name, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

fn command_schema(command: &Command) -> Option<SchemaRef> {
    match command {
        Command::ShowCatalogs { .. } => Some(utf8_schema(&["Catalog"])),
        Command::ShowSchemas { .. } => Some(utf8_schema(&["Schema"])),
        Command::ShowTables { .. } => Some(utf8_schema(&["Table"])),
        Command::ShowColumns { .. } => Some(utf8_schema(&["Column", "Type", "Extra", "Comment"])),
        Command::ShowVariable { name } => Some(utf8_schema(&[name.as_str()])),
        _ => None,
    }
}

fn rows_outcome(
    schema: SchemaRef,
    columns: Vec<Vec<Option<String>>>,
    tag: &str,
) -> Result<Outcome, EngineError> {
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|values| Arc::new(StringArray::from(values)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| EngineError::new(sqlstate::INTERNAL_ERROR, e.to_string()))?;
    let stream = MemoryStream::try_new(vec![batch], schema, None)?;
    Ok(Outcome::Rows {
        stream: Box::pin(stream),
        tag: tag.to_string(),
    })
}

impl Session {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Applies the client's startup parameters: the database names the default catalog when it
    /// is one (so `psql -d postgresql` starts in that catalog).
    pub fn set_client(
        &self,
        user: Option<&str>,
        database: Option<&str>,
        application: Option<&str>,
    ) -> Result<(), EngineError> {
        let mut variables = self.inner.variables.lock();
        if let Some(user) = user {
            variables.user = user.into();
            self.inner.facts.write().user = user.to_string();
        }
        if let Some(application) = application {
            variables.set("application_name", Some(application.to_string()));
        }
        drop(variables);
        if let Some(database) = database
            && self.inner.engine.registry.get(database).is_some()
        {
            let schema = match self.inner.engine.registry.get(database) {
                Some(CatalogHandle::Postgres(_)) => "public".to_string(),
                _ => self.inner.engine.config.server.default_schema.clone(),
            };
            self.set_defaults(database, &schema);
        }
        Ok(())
    }

    /// The process id the front door gave this session (`pg_backend_pid()`), and how to cancel
    /// its running statement (for `pg_cancel_backend` and `kill_query`).
    pub fn set_backend(&self, pid: i32, cancel: Arc<dyn Fn() + Send + Sync>) {
        self.inner.facts.write().backend_pid = pid;
        let user = self.inner.variables.lock().user.clone();
        self.inner
            .engine
            .queries
            .register_backend(pid, &user, cancel);
    }

    /// The session's `statement_timeout`, if one is set (PostgreSQL's forms: milliseconds as
    /// a number, or a number with `us`, `ms`, `s`, `min`, `h` or `d`; 0 means none).
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.inner.variables.lock().hot().statement_timeout
    }

    /// The session's `extra_float_digits`, which decides how results write floats.
    pub fn extra_float_digits(&self) -> Option<i8> {
        self.inner.variables.lock().hot().extra_float_digits
    }

    /// The schema of cursor `name`'s rows, if it is open (a Describe of it as a portal).
    pub fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.inner.cursors.lock().schema(name).ok()
    }

    /// The session's current schema (for `search_path` reporting).
    pub fn current_schema(&self) -> String {
        self.read_catalog_option(|options| options.default_schema.clone())
    }

    pub fn current_catalog(&self) -> String {
        self.read_catalog_option(|options| options.default_catalog.clone())
    }

    /// Reads the session's catalog settings in place (`context.state()` would clone the whole
    /// session state, function registries included, on every statement).
    fn read_catalog_option(
        &self,
        read: impl Fn(&datafusion::config::CatalogOptions) -> String,
    ) -> String {
        let state = self.inner.context.state_ref();
        let state = state.read();
        read(&state.config().options().catalog)
    }

    /// The session's value of setting `name`, as `SHOW` gives it.
    pub fn variable(&self, name: &str) -> Option<String> {
        self.inner.variables.lock().get(name)
    }

    /// `SET name = value` (`None`: `RESET name`), also used for the settings a client sends in
    /// its startup message. A value fjord cannot honour is refused and the setting keeps its
    /// value.
    pub fn set_variable(&self, name: &str, value: Option<&str>) -> Result<(), EngineError> {
        let name = name.to_lowercase();
        let checked = value
            .map(|value| session_vars::checked_value(&name, value))
            .transpose()?;
        if name == "timezone" {
            let zone = value.unwrap_or(DEFAULT_TIME_ZONE);
            types::check_time_zone(zone)?;
            self.set_time_zone(zone);
        }
        if name == "search_path" {
            let schema = match value {
                Some(value) => session_vars::first_search_path_schema(value),
                None => self.inner.engine.config.server.default_schema.clone(),
            };
            let catalog = self.current_catalog();
            self.set_defaults(&catalog, &schema);
        }
        self.inner.variables.lock().set(&name, checked);
        self.forget_plans();
        Ok(())
    }

    /// Drops the plans kept across statements (see `constant_plans` and `kept_plans`): the
    /// session changed, and planning may have read what changed.
    fn forget_plans(&self) {
        self.inner.constant_plans.lock().clear();
        self.inner.recent_queries.lock().clear();
        self.inner
            .plans_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Gives DataFusion the session's TimeZone, and rebuilds the functions that read it
    /// (`now()`, `current_date`), as DataFusion's own `SET` does.
    fn set_time_zone(&self, zone: &str) {
        use datafusion::execution::FunctionRegistry;
        let state = self.inner.context.state_ref();
        let mut state = state.write();
        state.config_mut().options_mut().execution.time_zone = Some(zone.to_string());
        let options = state.config().options().clone();
        let updated: Vec<_> = state
            .scalar_functions()
            .values()
            .filter_map(|function| function.inner().with_updated_config(&options))
            .collect();
        for function in updated {
            // Replacing a function by name cannot fail.
            let _ = state.register_udf(Arc::new(function));
        }
    }

    fn set_defaults(&self, catalog: &str, schema: &str) {
        let state = self.inner.context.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        options.catalog.default_catalog = catalog.to_string();
        options.catalog.default_schema = schema.to_string();
    }

    /// Splits a simple-protocol query string into statements.
    pub fn split_statements(&self, sql: &str) -> Result<Vec<String>, EngineError> {
        split_statements(sql)
    }

    /// Plans one statement.
    pub async fn prepare(&self, sql: &str) -> Result<Prepared, EngineError> {
        self.plan_or_recall(sql, true).await
    }

    /// Plans one statement that is to run at once, never described (a simple query's).
    pub async fn prepare_to_run(&self, sql: &str) -> Result<Prepared, EngineError> {
        self.plan_or_recall(sql, false).await
    }

    /// The statement planned from the same text before in this session, where it may keep
    /// its plan (see `kept_plans`), else `sql` planned now.
    async fn plan_or_recall(&self, sql: &str, describe: bool) -> Result<Prepared, EngineError> {
        let catalogs = self.inner.engine.registry.generation();
        let recalled = self.inner.recent_queries.lock().get(sql, catalogs);
        if let Some(prepared) = recalled {
            if !describe || self.describes_current_tables(&prepared, true).await? {
                return Ok(prepared);
            }
            self.inner.recent_queries.lock().remove(sql);
        }
        let mut prepared = self.plan_statement(sql, describe).await?;
        if describe && !self.describes_current_tables(&prepared, false).await? {
            prepared = self.plan_statement(sql, describe).await?;
        }
        if let PreparedKind::Plan(plan) = &prepared.kind
            && kept_plans::may_keep(plan)
        {
            // Recalled, it may be described: it needs what only describing works out.
            let mut remembered = prepared.clone();
            if !describe {
                remembered.analyzed_schema = analyzed_schema(&self.inner.context.state(), plan);
                remembered.output = std::sync::OnceLock::new();
            }
            self.inner
                .recent_queries
                .lock()
                .insert(prepared.sql.clone(), catalogs, remembered);
        }
        Ok(prepared)
    }

    /// For a statement a client is about to describe: whether the Postgres tables it was
    /// planned with still have those columns, so that its description is true now (as
    /// Postgres's own description of a statement just parsed is). Only tables planned with
    /// shapes reused from earlier statements can be out of date, or, for a `recalled` plan,
    /// any; and a table Postgres confirmed within [`DESCRIBED_SHAPES_AGE`] is taken as it was,
    /// so that clients that parse each statement (node-postgres, JDBC's and psycopg's first
    /// runs) do not pay a round trip per statement. A table found changed is forgotten, and
    /// read afresh by the next planning.
    async fn describes_current_tables(
        &self,
        prepared: &Prepared,
        recalled: bool,
    ) -> Result<bool, EngineError> {
        let PreparedKind::Plan(plan) = &prepared.kind else {
            return Ok(true);
        };
        let shapes = if recalled {
            fjord_postgres::planned_shapes(plan)
        } else {
            fjord_postgres::reused_shapes(plan)
        };
        if shapes.is_empty() {
            return Ok(true);
        }
        match shapes.confirm_unless_within(DESCRIBED_SHAPES_AGE).await {
            Ok(()) => Ok(true),
            Err(error) if error.needs_planning_again() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Plans one statement; `describe` also works out the analyzed row schema, which only a
    /// client's Describe needs (a statement planned again to run skips it). Postgres tables
    /// are planned with the columns read for earlier statements; if they changed, planning may
    /// fail on them (a new column is unknown), so a failure is tried once more with them read
    /// afresh.
    async fn plan_statement(&self, sql: &str, describe: bool) -> Result<Prepared, EngineError> {
        match self.plan_statement_once(sql, describe).await {
            Err(_) if self.inner.engine.registry.forget_table_shapes() => {
                self.plan_statement_once(sql, describe).await
            }
            planned => planned,
        }
    }

    async fn plan_statement_once(
        &self,
        sql: &str,
        describe: bool,
    ) -> Result<Prepared, EngineError> {
        if let Some(plan) = self.inner.constant_plans.lock().get(sql) {
            return Ok(Prepared::new(PreparedKind::Constant(plan), sql));
        }
        let tokens = commands::significant_tokens(sql)?;
        if tokens.is_empty() {
            return Ok(Prepared::new(PreparedKind::Empty, sql));
        }
        if commands::is_declare(&tokens) {
            let declare = commands::recognize_declare(sql)?;
            let query = Box::pin(self.plan_statement_once(&declare.query, describe)).await?;
            if query.output_schema().is_none() {
                return Err(EngineError::syntax(
                    "DECLARE CURSOR needs a query that returns rows",
                ));
            }
            let kind = PreparedKind::Declare {
                name: declare.name,
                hold: declare.hold,
                query: Box::new(query),
            };
            return Ok(Prepared::new(kind, sql));
        }
        if commands::is_copy(&tokens) {
            let copy = copy::recognize(sql)?;
            let query = Box::pin(self.plan_statement_once(&copy.query, describe)).await?;
            if query.output_schema().is_none() {
                return Err(EngineError::syntax("COPY needs a query that returns rows"));
            }
            let kind = PreparedKind::Copy {
                query: Box::new(query),
                options: copy.options,
            };
            return Ok(Prepared::new(kind, sql));
        }
        if let Some(command) = commands::recognize(&tokens)? {
            let cursor_schema = match &command {
                Command::Fetch {
                    cursor,
                    fetch: true,
                    ..
                } => Some(self.inner.cursors.lock().schema(cursor)?),
                _ => None,
            };
            let mut prepared = Prepared::new(PreparedKind::Command(command), sql);
            prepared.cursor_schema = cursor_schema;
            return Ok(prepared);
        }
        let mut statements = if pg_catalog::needs_compatibility_rewrite(sql) {
            self.inner
                .engine
                .compatibility_parser
                .parse(sql)
                .map_err(|error| EngineError::syntax(format!("syntax error: {error}")))?
                .into_iter()
                .map(|mut statement| {
                    pg_catalog::rewrite_catalog_statement(&mut statement);
                    DfStatement::Statement(Box::new(statement))
                })
                .collect()
        } else {
            DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})?
        };
        if statements.len() != 1 {
            return Err(EngineError::syntax(format!(
                "expected one statement, found {}; send several through the simple query protocol",
                statements.len()
            )));
        }
        let statement = statements.pop_front().expect("one statement");
        if mentions_catalog_views(sql) {
            // information_schema lists tables through synchronous calls: load listings first.
            self.inner.engine.registry.refresh_all().await;
        }
        let state = self.inner.context.state();
        // Only a query's syntax names result columns; other statements (a large INSERT ...
        // VALUES) are not copied for it.
        let syntax = column_names::is_query(&statement).then(|| statement.clone());
        let mut statement = statement;
        let int4_results = int4_literals::applies(&statement);
        if int4_results {
            int4_literals::retype(&mut statement);
        }
        let plan = match state.statement_to_plan(statement).await {
            Err(error)
                if error
                    .to_string()
                    .contains("require unique expression names") =>
            {
                // Postgres allows select items with the same name; see `column_names`.
                let mut aliased = syntax.clone().ok_or(error)?;
                column_names::alias_select_items(&mut aliased);
                if int4_results {
                    int4_literals::retype(&mut aliased);
                }
                state.statement_to_plan(aliased).await?
            }
            planned => planned?,
        };
        if mentions_catalog_views(sql)
            && let Some(name) = self.unknown_catalog_view(&plan)
        {
            return Err(EngineError::new(
                sqlstate::INVALID_CATALOG_NAME,
                format!("catalog \"{name}\" does not exist"),
            ));
        }
        let names = syntax
            .as_ref()
            .and_then(|syntax| column_names::postgres_names(syntax, plan.schema()));
        if constant_plans::is_constant(&plan) {
            let physical = state.create_physical_plan(&plan).await?;
            let task = Arc::new(datafusion::execution::TaskContext::from(&state));
            let constant = Arc::new(constant_plans::ConstantPlan::new(physical, task, names));
            self.inner
                .constant_plans
                .lock()
                .insert(sql, constant.clone());
            return Ok(Prepared::new(PreparedKind::Constant(constant), sql));
        }
        let analyzed_schema = describe.then(|| analyzed_schema(&state, &plan)).flatten();
        let mut prepared = Prepared::new(PreparedKind::Plan(Box::new(plan)), sql).with_names(names);
        prepared.analyzed_schema = analyzed_schema;
        Ok(prepared)
    }

    /// The catalog of an `information_schema` view `plan` reads, when no such catalog exists:
    /// DataFusion answers `c.information_schema.tables` for any name `c`.
    fn unknown_catalog_view(&self, plan: &LogicalPlan) -> Option<String> {
        let mut unknown = None;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Some(catalog) = scan.table_name.catalog()
                && scan.table_name.schema() == Some("information_schema")
                && catalog != system::SYSTEM_CATALOG
                && self.inner.engine.registry.get(catalog).is_none()
            {
                unknown = Some(catalog.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        unknown
    }

    /// Runs a prepared statement with its parameter values, if it has any. It shows in
    /// `system.runtime.queries` while it runs (its rows until the stream ends) and after.
    pub async fn execute(
        &self,
        prepared: &Prepared,
        parameters: Option<ParamValues>,
    ) -> Result<Outcome, EngineError> {
        if matches!(prepared.kind, PreparedKind::Empty) {
            return Ok(Outcome::Empty);
        }
        let handle = self.begin_query(prepared);
        let outcome = match &prepared.kind {
            // Runs without planning's machinery, whose future is large: a future holding it
            // inline is copied whole each time it is created or moved, and front doors run
            // constant statements (pool health checks) more than any other.
            PreparedKind::Constant(plan) => plan
                .execute()
                .map(|stream| Outcome::Rows {
                    stream: self.client_rows(prepared, stream),
                    tag: "SELECT".into(),
                })
                .map_err(EngineError::from),
            _ => Box::pin(self.execute_untracked(prepared, parameters)).await,
        };
        match outcome {
            Ok(Outcome::Rows { stream, tag }) => Ok(Outcome::Rows {
                stream: handle.track(stream),
                tag,
            }),
            Ok(Outcome::Copy { stream, options }) => Ok(Outcome::Copy {
                stream: handle.track(stream),
                options,
            }),
            Ok(outcome) => {
                handle.finish();
                Ok(outcome)
            }
            Err(error) => {
                handle.fail(&error.message);
                Err(error)
            }
        }
    }

    /// Runs a query as the independent streams of its plan's output partitions, so that a
    /// front door can hand them to a client to read in parallel (Flight SQL's endpoints). The
    /// result is the same rows `execute` gives, in no particular order across the streams.
    /// Statements that are not plain queries, and queries whose plan has one partition or must
    /// be confirmed before running (see `run_confirmed`), run as `execute` runs them.
    pub async fn execute_partitioned(
        &self,
        prepared: &Prepared,
        parameters: Option<ParamValues>,
    ) -> Result<Executed, EngineError> {
        let PreparedKind::Plan(plan) = &prepared.kind else {
            return Ok(Executed::One(self.execute(prepared, parameters).await?));
        };
        if matches!(
            plan.as_ref(),
            LogicalPlan::Statement(_)
                | LogicalPlan::Ddl(_)
                | LogicalPlan::Dml(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
        ) {
            return Ok(Executed::One(self.execute(prepared, parameters).await?));
        }
        if fjord_postgres::reads_reused_shapes(plan) {
            // Confirming reused shapes waits for the first rows (see `run_confirmed`): that
            // happens when the rows are first read, so that starting the statement stays quick.
            let session = self.clone();
            let prepared = prepared.clone();
            let schema = self
                .rows_schema(&prepared)
                .unwrap_or_else(|| Arc::new(Schema::empty()));
            let rows = futures::stream::once(async move {
                match session.execute(&prepared, parameters).await {
                    Ok(Outcome::Rows { stream, .. }) => stream,
                    Ok(_) => Box::pin(RecordBatchStreamAdapter::new(
                        Arc::new(Schema::empty()),
                        futures::stream::empty(),
                    )),
                    Err(error) => Box::pin(RecordBatchStreamAdapter::new(
                        Arc::new(Schema::empty()),
                        futures::stream::once(async move {
                            Err(datafusion::error::DataFusionError::External(Box::new(
                                error,
                            )))
                        }),
                    )),
                }
            })
            .flatten();
            return Ok(Executed::Partitions(vec![Box::pin(
                RecordBatchStreamAdapter::new(schema, rows),
            )]));
        }
        let handle = self.begin_query(prepared);
        let streams = async {
            let plan = self.plan_to_run(prepared, plan).await?;
            let plan = match parameters {
                Some(parameters) => plan.with_param_values(parameters)?,
                None => plan,
            };
            let frame = self.inner.context.execute_logical_plan(plan).await?;
            Ok::<_, EngineError>(
                frame
                    .execute_stream_partitioned()
                    .await?
                    .into_iter()
                    .map(|stream| self.client_rows(prepared, stream))
                    .collect::<Vec<_>>(),
            )
        }
        .await;
        match streams {
            Ok(streams) => Ok(Executed::Partitions(handle.track_all(streams))),
            Err(error) => {
                handle.fail(&error.message);
                Err(error)
            }
        }
    }

    /// The schema of the rows `prepared` gives in this session: its output schema, with
    /// timestamps with a zone in the session's TimeZone. `None` for statements without rows.
    pub fn rows_schema(&self, prepared: &Prepared) -> Option<SchemaRef> {
        let schema = prepared.output_schema()?;
        Some(
            self.time_zone()
                .and_then(|zone| types::zoned_schema(&schema, &zone))
                .unwrap_or(schema),
        )
    }

    /// `prepared`'s rows as the client sees them: timestamps with a zone in the session's
    /// TimeZone, columns under the names the client's SQL gave them.
    fn client_rows(
        &self,
        prepared: &Prepared,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let stream = match self.time_zone() {
            Some(zone) => types::in_time_zone(stream, &zone),
            None => stream,
        };
        prepared.client_named(stream)
    }

    /// The entry of `prepared` in the query log, running from now.
    fn begin_query(&self, prepared: &Prepared) -> queries::QueryHandle {
        let (user, source) = {
            let variables = self.inner.variables.lock();
            (
                variables.user.clone(),
                variables.hot().application_name.clone(),
            )
        };
        let pid = self.inner.facts.read().backend_pid;
        self.inner.engine.queries.begin(
            (pid, user, source),
            &prepared.sql,
            prepared.catalogs(|| self.current_catalog()),
        )
    }

    /// The plan to run for a prepared query: as planned the first time, with its tables looked
    /// up again (or planned again from the text) after that.
    async fn plan_to_run(
        &self,
        prepared: &Prepared,
        plan: &LogicalPlan,
    ) -> Result<LogicalPlan, EngineError> {
        if !prepared
            .executed
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(plan.clone());
        }
        Ok(match self.with_current_tables(plan, &prepared.sql).await {
            Some(current) => current,
            None => self
                .replan(&prepared.sql)
                .await?
                .unwrap_or_else(|| plan.clone()),
        })
    }

    async fn execute_untracked(
        &self,
        prepared: &Prepared,
        parameters: Option<ParamValues>,
    ) -> Result<Outcome, EngineError> {
        let changes_session = match &prepared.kind {
            PreparedKind::Command(Command::Fetch { .. } | Command::CloseCursor { .. }) => false,
            PreparedKind::Command(_) => true,
            PreparedKind::Plan(plan) => matches!(
                plan.as_ref(),
                LogicalPlan::Statement(_)
                    | LogicalPlan::Ddl(_)
                    | LogicalPlan::Dml(_)
                    | LogicalPlan::Copy(_)
            ),
            PreparedKind::Empty
            | PreparedKind::Constant(_)
            | PreparedKind::Declare { .. }
            | PreparedKind::Copy { .. } => false,
        };
        if changes_session {
            // Planning may have read what this statement changes.
            self.forget_plans();
        }
        match &prepared.kind {
            PreparedKind::Empty => Ok(Outcome::Empty),
            PreparedKind::Command(command) => self.run_command(command).await,
            PreparedKind::Declare { name, hold, query } => {
                match Box::pin(self.execute_untracked(query, parameters)).await? {
                    Outcome::Rows { stream, .. } => {
                        self.inner.cursors.lock().declare(name, *hold, stream)?;
                        Ok(Outcome::Command(CommandTag::new("DECLARE CURSOR")))
                    }
                    _ => Err(EngineError::syntax(
                        "DECLARE CURSOR needs a query that returns rows",
                    )),
                }
            }
            PreparedKind::Copy { query, options } => {
                match Box::pin(self.execute_untracked(query, parameters)).await? {
                    Outcome::Rows { stream, .. } => Ok(Outcome::Copy {
                        stream,
                        options: options.clone(),
                    }),
                    _ => Err(EngineError::syntax("COPY needs a query that returns rows")),
                }
            }
            PreparedKind::Constant(plan) => Ok(Outcome::Rows {
                stream: self.client_rows(prepared, plan.execute()?),
                tag: "SELECT".into(),
            }),
            PreparedKind::Plan(plan) => {
                if let Some(kept) = self.kept_plan(prepared, plan).await {
                    match self.run_kept(&kept, parameters.clone()).await {
                        Ok(stream) => {
                            return Ok(Outcome::Rows {
                                stream: self.client_rows(prepared, as_described(prepared, stream)?),
                                tag: "SELECT".into(),
                            });
                        }
                        // A table changed, or a value cannot be sent as planned: plan again
                        // below, with the values bound first.
                        Err(error) if error.plan_again => {
                            *prepared.kept.lock() = kept_plans::Kept::Untried;
                            self.inner.recent_queries.lock().remove(&prepared.sql);
                        }
                        Err(error) => return Err(error),
                    }
                }
                let plan = self.plan_to_run(prepared, plan).await?;
                let outcome = match self.run_confirmed(plan, parameters.clone()).await {
                    Err(error) if error.plan_again => {
                        // A Postgres table changed since its shape was read: the failed scan
                        // sent nothing, and planning from the text reads the table afresh.
                        self.inner.recent_queries.lock().remove(&prepared.sql);
                        match self.replan(&prepared.sql).await? {
                            Some(plan) => self.run_confirmed(plan, parameters).await?,
                            None => return Err(error),
                        }
                    }
                    outcome => outcome?,
                };
                match outcome {
                    Outcome::Rows { stream, tag } => Ok(Outcome::Rows {
                        stream: self.client_rows(prepared, as_described(prepared, stream)?),
                        tag,
                    }),
                    other => Ok(other),
                }
            }
        }
    }

    /// The physical plan a prepared query runs again, from its second execution on: the one
    /// kept, or one made now with its parameters unbound; `None` where the statement cannot
    /// keep one (see `kept_plans`).
    async fn kept_plan(
        &self,
        prepared: &Prepared,
        plan: &LogicalPlan,
    ) -> Option<Arc<kept_plans::KeptPlan>> {
        use std::sync::atomic::Ordering;
        if !prepared.executed.load(Ordering::SeqCst) {
            return None;
        }
        let generation = kept_plans::Generation {
            session: self.inner.plans_generation.load(Ordering::SeqCst),
            catalogs: self.inner.engine.registry.generation(),
        };
        {
            let mut kept = prepared.kept.lock();
            match &*kept {
                kept_plans::Kept::Never => return None,
                kept_plans::Kept::Plan(plan) if plan.generation == generation => {
                    return Some(plan.clone());
                }
                // Out of date: let go of it (and of the connections its scans hold).
                _ => *kept = kept_plans::Kept::Untried,
            }
        }
        if !kept_plans::may_keep(plan) {
            *prepared.kept.lock() = kept_plans::Kept::Never;
            return None;
        }
        let current = self.with_current_tables(plan, &prepared.sql).await?;
        let state = self.inner.context.state();
        let kept = match state.create_physical_plan(&current).await {
            Ok(physical) => {
                let task = Arc::new(datafusion::execution::TaskContext::from(&state));
                kept_plans::KeptPlan::new(physical, task, generation).map(Arc::new)
            }
            // A parameter used where only a value will do: planned with values each time.
            Err(_) => None,
        };
        if kept.as_ref().is_some_and(|kept| !kept.confirms_shapes()) {
            // Planned on shapes read just now (a table changed or was first seen): a later
            // execution, planned on them reused, keeps a plan that confirms them.
            return None;
        }
        *prepared.kept.lock() = match &kept {
            Some(kept) => kept_plans::Kept::Plan(kept.clone()),
            None => kept_plans::Kept::Never,
        };
        kept
    }

    /// Runs a kept plan with `parameters`. Like `run_confirmed`, waits for the first batch, so
    /// that a scan whose table changed (or whose values cannot be sent as planned) comes back
    /// as an error with `plan_again` rather than in the stream.
    async fn run_kept(
        &self,
        kept: &kept_plans::KeptPlan,
        parameters: Option<ParamValues>,
    ) -> Result<SendableRecordBatchStream, EngineError> {
        confirmed(kept.execute(parameters)?).await
    }

    /// A query's plan made afresh from its text, to run at once; `None` if the text is no
    /// longer planned as a query.
    async fn replan(&self, sql: &str) -> Result<Option<LogicalPlan>, EngineError> {
        Ok(match self.plan_statement(sql, false).await?.kind {
            PreparedKind::Plan(plan) => Some(*plan),
            _ => None,
        })
    }

    /// Runs a query's plan. Where it reads Postgres tables planned with shapes reused from
    /// earlier statements, waits for the first batch: a scan whose table changed fails before
    /// sending any row, and that error comes back here (with `plan_again`) instead of in the
    /// stream, so that the statement can be planned again and run.
    async fn run_confirmed(
        &self,
        plan: LogicalPlan,
        parameters: Option<ParamValues>,
    ) -> Result<Outcome, EngineError> {
        let confirm = fjord_postgres::reads_reused_shapes(&plan);
        let plan = match parameters {
            Some(parameters) => plan.with_param_values(parameters)?,
            None => plan,
        };
        let outcome = self.run_plan(plan).await?;
        let Outcome::Rows { stream, tag } = outcome else {
            return Ok(outcome);
        };
        if !confirm {
            return Ok(Outcome::Rows { stream, tag });
        }
        Ok(Outcome::Rows {
            stream: confirmed(stream).await?,
            tag,
        })
    }

    /// A prepared query's `plan` with every table it reads looked up again, so that running it
    /// again sees the tables as they are now (an Iceberg table's latest snapshot, a Postgres
    /// table's current size) without planning it again from its text. `None` where only that
    /// will do: a table's columns changed or it is gone (planning again reports it), the query
    /// reads the catalog views (their listings are loaded before planning), or it is not a query.
    async fn with_current_tables(&self, plan: &LogicalPlan, sql: &str) -> Option<LogicalPlan> {
        if matches!(
            plan,
            LogicalPlan::Dml(_)
                | LogicalPlan::Ddl(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Copy(_)
        ) || mentions_catalog_views(sql)
        {
            return None;
        }
        let mut names: Vec<TableReference> = Vec::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && !names.contains(&scan.table_name)
            {
                names.push(scan.table_name.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .ok()?;
        let mut current = Vec::with_capacity(names.len());
        for name in names {
            let provider = self.inner.context.table_provider(name.clone()).await.ok()?;
            current.push((name, provider));
        }
        plan.clone()
            .transform_up_with_subqueries(|node| {
                let LogicalPlan::TableScan(mut scan) = node else {
                    return Ok(Transformed::no(node));
                };
                let provider = current
                    .iter()
                    .find(|(name, _)| *name == scan.table_name)
                    .map(|(_, provider)| provider)
                    .filter(|provider| provider.schema() == scan.source.schema());
                let Some(provider) = provider else {
                    return plan_err!("{} changed since it was planned", scan.table_name);
                };
                scan.source = provider_as_source(provider.clone());
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            })
            .ok()
            .map(|transformed| transformed.data)
    }

    /// The session's TimeZone when it is not UTC: timestamps with a zone are shown in it.
    /// The session's time zone, when it is not UTC.
    fn time_zone(&self) -> Option<Arc<str>> {
        self.inner.variables.lock().hot().time_zone.clone()
    }

    /// Prepares and runs every statement of `sql`, collecting rows: for tests and tools.
    pub async fn run_sql(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let mut batches = Vec::new();
        for statement in split_statements(sql)? {
            let prepared = self.plan_statement(&statement, false).await?;
            if let Outcome::Rows { stream, .. } = self.execute(&prepared, None).await? {
                batches = stream.try_collect().await?;
            }
        }
        Ok(batches)
    }

    async fn run_plan(&self, plan: LogicalPlan) -> Result<Outcome, EngineError> {
        match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                let name = create.name.clone();
                if let Some(CatalogHandle::Iceberg(_)) = self.resolve_catalog(&name) {
                    return self
                        .create_iceberg_table(
                            &name,
                            create.input.as_ref().clone(),
                            create.if_not_exists,
                            false,
                        )
                        .await;
                }
                self.run_to_completion(plan, CommandTag::new("CREATE TABLE"))
                    .await
            }
            LogicalPlan::Ddl(ddl) => {
                let tag = match ddl {
                    DdlStatement::CreateView(_) => "CREATE VIEW",
                    DdlStatement::DropView(_) => "DROP VIEW",
                    DdlStatement::CreateCatalogSchema(_) => "CREATE SCHEMA",
                    DdlStatement::DropTable(_) => "DROP TABLE",
                    DdlStatement::CreateExternalTable(_) => "CREATE TABLE",
                    _ => "OK",
                };
                self.run_to_completion(plan, CommandTag::new(tag)).await
            }
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Insert(_),
                ..
            }) => {
                let rows = self
                    .count_rows(not_null::check_required_columns(plan)?)
                    .await?;
                Ok(Outcome::Command(CommandTag {
                    command: "INSERT".into(),
                    oid: Some(0),
                    rows: Some(rows),
                }))
            }
            LogicalPlan::Dml(dml) => {
                let command = match dml.op {
                    WriteOp::Delete => "DELETE",
                    WriteOp::Update => "UPDATE",
                    _ => "INSERT",
                };
                let rows = self.count_rows(plan).await?;
                Ok(Outcome::Command(CommandTag::new(command).with_rows(rows)))
            }
            LogicalPlan::Statement(_) => self.run_to_completion(plan, CommandTag::new("SET")).await,
            _ => {
                let tag = match &plan {
                    LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => "EXPLAIN",
                    _ => "SELECT",
                };
                let reused = match &plan {
                    LogicalPlan::Explain(_) => fjord_postgres::ReusedShapes::default(),
                    _ => fjord_postgres::reused_shapes(&plan),
                };
                let frame = self.inner.context.execute_logical_plan(plan).await?;
                let stream = if reused.is_empty() {
                    frame.execute_stream().await?
                } else {
                    // A table whose scan the optimizer removed is confirmed here, as its scan
                    // would have been: its columns still shape the result.
                    let task = Arc::new(frame.task_ctx());
                    let physical = frame.create_physical_plan().await?;
                    reused.confirm_unscanned(&physical).await?;
                    datafusion::physical_plan::execute_stream(physical, task)?
                };
                Ok(Outcome::Rows {
                    stream,
                    tag: tag.into(),
                })
            }
        }
    }

    async fn run_to_completion(
        &self,
        plan: LogicalPlan,
        tag: CommandTag,
    ) -> Result<Outcome, EngineError> {
        let frame = self.inner.context.execute_logical_plan(plan).await?;
        frame.collect().await?;
        Ok(Outcome::Command(tag))
    }

    /// Runs a write plan and returns the row count it reports.
    async fn count_rows(&self, plan: LogicalPlan) -> Result<usize, EngineError> {
        let batches = self
            .inner
            .context
            .execute_logical_plan(plan)
            .await?
            .collect()
            .await?;
        let mut rows = 0usize;
        for batch in batches {
            if batch.num_columns() == 0 {
                continue;
            }
            let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::UInt64)
                .map_err(|e| EngineError::new(sqlstate::INTERNAL_ERROR, e.to_string()))?;
            let counts = column
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>();
            rows += counts
                .map(|counts| counts.iter().flatten().sum::<u64>() as usize)
                .unwrap_or(0);
        }
        Ok(rows)
    }

    /// The catalog a possibly partial table name refers to in this session.
    fn resolve_catalog(&self, name: &TableReference) -> Option<CatalogHandle> {
        let catalog = name
            .catalog()
            .map(str::to_string)
            .unwrap_or_else(|| self.current_catalog());
        self.inner.engine.registry.get(&catalog)
    }

    fn full_name(&self, parts: &[String]) -> Result<(String, String, String), EngineError> {
        match parts {
            [table] => Ok((self.current_catalog(), self.current_schema(), table.clone())),
            [schema, table] => Ok((self.current_catalog(), schema.clone(), table.clone())),
            [catalog, schema, table] => Ok((catalog.clone(), schema.clone(), table.clone())),
            _ => Err(EngineError::syntax(format!(
                "`{}` is not a table name",
                parts.join(".")
            ))),
        }
    }

    /// `CREATE TABLE [AS]` in an Iceberg catalog: create the table with the query's columns
    /// (types adjusted to what Iceberg stores), then append the query's rows. If the append
    /// fails, the new table is dropped again so that a failed CTAS leaves nothing behind.
    /// `keep_not_null` makes the input's non-nullable columns required in the table.
    async fn create_iceberg_table(
        &self,
        name: &TableReference,
        input: LogicalPlan,
        if_not_exists: bool,
        keep_not_null: bool,
    ) -> Result<Outcome, EngineError> {
        let catalog_name = name
            .catalog()
            .map(str::to_string)
            .unwrap_or_else(|| self.current_catalog());
        let schema_name = name
            .schema()
            .map(str::to_string)
            .unwrap_or_else(|| self.current_schema());
        let table_name = name.table().to_string();
        let catalog = self
            .inner
            .engine
            .registry
            .iceberg(&catalog_name, "CREATE TABLE")
            .map_err(catalog_error)?;
        if catalog
            .table_exists(&schema_name, &table_name)
            .await
            .map_err(iceberg_error)?
        {
            if if_not_exists {
                return Ok(Outcome::Command(CommandTag::new("CREATE TABLE")));
            }
            return Err(EngineError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{catalog_name}.{schema_name}.{table_name}\" already exists"),
            ));
        }
        let input_schema = input.schema().as_arrow().clone();
        let table_schema = types::iceberg_compatible_schema(&input_schema, keep_not_null)?;
        catalog
            .create_table(
                &schema_name,
                &table_name,
                &table_schema,
                &[],
                Default::default(),
            )
            .await
            .map_err(iceberg_error)?;
        let is_empty =
            matches!(&input, LogicalPlan::EmptyRelation(empty) if !empty.produce_one_row);
        if is_empty {
            return Ok(Outcome::Command(CommandTag::new("CREATE TABLE")));
        }
        let reference = TableReference::full(
            catalog_name.as_str(),
            schema_name.as_str(),
            table_name.as_str(),
        );
        let result = self.insert_plan(input, reference).await;
        match result {
            Ok(rows) => Ok(Outcome::Command(CommandTag::new("SELECT").with_rows(rows))),
            Err(error) => {
                if let Err(drop_error) = catalog.drop_table(&schema_name, &table_name).await {
                    tracing::warn!(%drop_error, table = %table_name, "dropping the table of a failed CREATE TABLE AS failed");
                }
                Err(error)
            }
        }
    }

    /// Appends `input`'s rows to a table, each column cast to the table's type; returns the count.
    async fn insert_plan(
        &self,
        input: LogicalPlan,
        reference: TableReference,
    ) -> Result<usize, EngineError> {
        let provider = self.inner.context.table_provider(reference.clone()).await?;
        let target = provider.schema();
        let source = input.schema().as_arrow().clone();
        if source.fields().len() != target.fields().len() {
            return Err(EngineError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "{} columns given, table {reference} has {}",
                    source.fields().len(),
                    target.fields().len()
                ),
            ));
        }
        let projection = source
            .fields()
            .iter()
            .zip(target.fields())
            .map(|(source, target)| {
                cast(
                    col(datafusion::common::Column::from_name(source.name())),
                    target.data_type().clone(),
                )
                .alias(target.name())
            })
            .collect::<Vec<_>>();
        let plan = LogicalPlanBuilder::from(input)
            .project(projection)?
            .build()?;
        let insert = LogicalPlanBuilder::insert_into(
            plan,
            reference,
            provider_as_source(provider),
            InsertOp::Append,
        )?
        .build()?;
        self.count_rows(not_null::check_required_columns(insert)?)
            .await
    }

    /// Creates Iceberg table `name` (one to three parts) from Parquet files, as `CREATE TABLE
    /// name AS SELECT * FROM` the files would: the schema is the files', and the rows stream
    /// through the same write path as SQL's, so memory stays bounded. Returns the rows written.
    pub async fn create_table_from_parquet(
        &self,
        name: &[String],
        paths: &[std::path::PathBuf],
    ) -> Result<usize, EngineError> {
        use datafusion::datasource::file_format::parquet::ParquetFormat;
        use datafusion::datasource::listing::{
            ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
        };
        let (catalog, schema, table) = self.full_name(name)?;
        if paths.is_empty() {
            return Err(EngineError::syntax("no Parquet files to load"));
        }
        let urls = paths
            .iter()
            .map(|path| {
                let absolute = std::path::absolute(path).map_err(|error| {
                    EngineError::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("{}: {error}", path.display()),
                    )
                })?;
                ListingTableUrl::parse(absolute.to_string_lossy()).map_err(EngineError::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let state = self.inner.context.state();
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let file_schema = options.infer_schema(&state, &urls[0]).await?;
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(file_schema);
        let files = ListingTable::try_new(config)?;
        let input =
            LogicalPlanBuilder::scan("fjord_load", provider_as_source(Arc::new(files)), None)?
                .build()?;
        let reference = TableReference::full(catalog.as_str(), schema.as_str(), table.as_str());
        match self
            .create_iceberg_table(&reference, input, false, true)
            .await?
        {
            Outcome::Command(CommandTag {
                rows: Some(rows), ..
            }) => Ok(rows),
            _ => Ok(0),
        }
    }

    /// Appends in-memory batches to `catalog.schema.table` (the demo builder and tests use it).
    pub async fn append_batches(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        batch_schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize, EngineError> {
        let memory = datafusion::datasource::MemTable::try_new(batch_schema, vec![batches])?;
        let input =
            LogicalPlanBuilder::scan("fjord_input", provider_as_source(Arc::new(memory)), None)?
                .build()?;
        self.insert_plan(input, TableReference::full(catalog, schema, table))
            .await
    }

    async fn run_command(&self, command: &Command) -> Result<Outcome, EngineError> {
        let registry = &self.inner.engine.registry;
        match command {
            Command::ShowCatalogs { like } => {
                let names: Vec<Option<String>> = registry
                    .names()
                    .into_iter()
                    .filter(|name| {
                        like.as_ref()
                            .is_none_or(|pattern| commands::like_match(pattern, name))
                    })
                    .map(Some)
                    .collect();
                rows_outcome(command_schema(command).expect("rows"), vec![names], "SHOW")
            }
            Command::ShowSchemas { catalog, like } => {
                let catalog = catalog.clone().unwrap_or_else(|| self.current_catalog());
                let provider = self.catalog_provider(&catalog).await?;
                let mut names = provider.schema_names();
                names.push("information_schema".into());
                names.sort();
                names.dedup();
                let names = names
                    .into_iter()
                    .filter(|name| {
                        like.as_ref()
                            .is_none_or(|pattern| commands::like_match(pattern, name))
                    })
                    .map(Some)
                    .collect();
                rows_outcome(command_schema(command).expect("rows"), vec![names], "SHOW")
            }
            Command::ShowTables {
                catalog,
                schema,
                like,
            } => {
                let catalog = catalog.clone().unwrap_or_else(|| self.current_catalog());
                let schema = schema.clone().unwrap_or_else(|| self.current_schema());
                let provider = self.catalog_provider(&catalog).await?;
                if !provider.schema_names().contains(&schema) {
                    return Err(EngineError::new(
                        sqlstate::INVALID_SCHEMA_NAME,
                        format!("schema \"{catalog}.{schema}\" does not exist"),
                    ));
                }
                let schema_provider = provider.schema(&schema).ok_or_else(|| {
                    EngineError::new(
                        sqlstate::INVALID_SCHEMA_NAME,
                        format!("schema \"{catalog}.{schema}\" does not exist"),
                    )
                })?;
                let mut names = schema_provider.table_names();
                names.sort();
                let names = names
                    .into_iter()
                    .filter(|name| {
                        like.as_ref()
                            .is_none_or(|pattern| commands::like_match(pattern, name))
                    })
                    .map(Some)
                    .collect();
                rows_outcome(command_schema(command).expect("rows"), vec![names], "SHOW")
            }
            Command::ShowColumns { name } => {
                let (catalog, schema, table) = self.full_name(name)?;
                let reference =
                    TableReference::full(catalog.as_str(), schema.as_str(), table.as_str());
                // The columns as they are now, not as a Postgres table's were last read.
                self.inner.engine.registry.forget_table_shapes();
                let provider = self.inner.context.table_provider(reference).await?;
                let table_schema = provider.schema();
                let mut columns = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
                for field in table_schema.fields() {
                    columns[0].push(Some(field.name().clone()));
                    columns[1].push(Some(types::sql_type_name(field)));
                    columns[2].push(Some(if field.is_nullable() {
                        String::new()
                    } else {
                        "not null".into()
                    }));
                    columns[3].push(Some(String::new()));
                }
                rows_outcome(command_schema(command).expect("rows"), columns, "SHOW")
            }
            Command::Use { catalog, schema } => {
                let catalog = catalog.clone().unwrap_or_else(|| self.current_catalog());
                let provider = self.catalog_provider(&catalog).await?;
                if !provider.schema_names().contains(schema) {
                    return Err(EngineError::new(
                        sqlstate::INVALID_SCHEMA_NAME,
                        format!("schema \"{catalog}.{schema}\" does not exist"),
                    ));
                }
                self.set_defaults(&catalog, schema);
                Ok(Outcome::Command(CommandTag::new("USE")))
            }
            Command::Begin => {
                self.inner.cursors.lock().begin();
                Ok(Outcome::TransactionStart(CommandTag::new("BEGIN")))
            }
            Command::Commit => {
                self.inner.cursors.lock().end_transaction(true);
                Ok(Outcome::TransactionEnd(CommandTag::new("COMMIT")))
            }
            Command::Rollback => {
                self.inner.cursors.lock().end_transaction(false);
                Ok(Outcome::TransactionEnd(CommandTag::new("ROLLBACK")))
            }
            Command::Fetch {
                cursor,
                movement,
                fetch,
            } => {
                let stream = self.inner.cursors.lock().fetch(cursor, *movement)?;
                if *fetch {
                    return Ok(Outcome::Rows {
                        stream,
                        tag: "FETCH".into(),
                    });
                }
                let rows = cursors::count_rows(stream).await?;
                Ok(Outcome::Command(
                    CommandTag::new("MOVE").with_rows(rows as usize),
                ))
            }
            Command::CloseCursor { name } => {
                let mut cursors = self.inner.cursors.lock();
                match name {
                    Some(name) => {
                        cursors.close(name)?;
                        Ok(Outcome::Command(CommandTag::new("CLOSE CURSOR")))
                    }
                    None => {
                        cursors.close_all();
                        Ok(Outcome::Command(CommandTag::new("CLOSE CURSOR ALL")))
                    }
                }
            }
            Command::SetVariable { name, value } => {
                self.set_variable(name, value.as_deref())?;
                Ok(Outcome::Command(CommandTag::new(if value.is_some() {
                    "SET"
                } else {
                    "RESET"
                })))
            }
            Command::ResetAll => {
                self.reset();
                Ok(Outcome::Command(CommandTag::new("RESET")))
            }
            Command::DiscardAll => {
                self.reset();
                self.inner.cursors.lock().close_all();
                Ok(Outcome::Command(CommandTag::new("DISCARD ALL")))
            }
            Command::ShowVariable { name } => {
                let lowered = name.to_lowercase();
                let value = if lowered == "search_path" {
                    Some(self.current_schema())
                } else {
                    self.inner.variables.lock().get(&lowered)
                };
                let value = value.ok_or_else(|| {
                    EngineError::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                rows_outcome(
                    command_schema(command).expect("rows"),
                    vec![vec![Some(value)]],
                    "SHOW",
                )
            }
            Command::CreateSchema {
                name,
                if_not_exists,
            } => {
                let (catalog, schema) = match name.as_slice() {
                    [schema] => (self.current_catalog(), schema.clone()),
                    [catalog, schema] => (catalog.clone(), schema.clone()),
                    _ => {
                        return Err(EngineError::syntax(
                            "CREATE SCHEMA takes catalog.schema or schema",
                        ));
                    }
                };
                let iceberg = registry
                    .iceberg(&catalog, "CREATE SCHEMA")
                    .map_err(catalog_error)?;
                iceberg
                    .create_schema(&schema, *if_not_exists)
                    .await
                    .map_err(iceberg_error)?;
                Ok(Outcome::Command(CommandTag::new("CREATE SCHEMA")))
            }
            Command::DropTable { name, if_exists } => {
                let (catalog, schema, table) = self.full_name(name)?;
                let iceberg = registry
                    .iceberg(&catalog, "DROP TABLE")
                    .map_err(catalog_error)?;
                if !iceberg
                    .table_exists(&schema, &table)
                    .await
                    .map_err(iceberg_error)?
                {
                    if *if_exists {
                        return Ok(Outcome::Command(CommandTag::new("DROP TABLE")));
                    }
                    return Err(EngineError::new(
                        sqlstate::UNDEFINED_TABLE,
                        format!("relation \"{catalog}.{schema}.{table}\" does not exist"),
                    ));
                }
                iceberg
                    .drop_table(&schema, &table)
                    .await
                    .map_err(iceberg_error)?;
                Ok(Outcome::Command(CommandTag::new("DROP TABLE")))
            }
            Command::CreateCatalog {
                name,
                type_name,
                properties,
                if_not_exists,
            } => {
                let user = self.inner.variables.lock().user.clone();
                catalog_admin::create(
                    &self.inner.engine.config,
                    registry,
                    &user,
                    (name, type_name, properties, *if_not_exists),
                )
                .await?;
                Ok(Outcome::Command(CommandTag::new("CREATE CATALOG")))
            }
            Command::KillQuery { query_id, message } => {
                let user = self.inner.variables.lock().user.clone();
                let admin = self.inner.engine.config.server.auth.is_admin(&user);
                match self.inner.engine.queries.kill(query_id, &user, admin) {
                    Ok(()) => {
                        tracing::info!(
                            query_id,
                            user = &*user,
                            message = message.as_deref().unwrap_or(""),
                            "query killed"
                        );
                        Ok(Outcome::Command(CommandTag::new("CALL")))
                    }
                    Err(queries::KillError::NotRunning) => Err(EngineError::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("query \"{query_id}\" is not running"),
                    )),
                    Err(queries::KillError::NotYours) => Err(EngineError::new(
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!(
                            "permission denied to kill query \"{query_id}\": it is another user's, \
                             and \"{user}\" is not one of server.auth.admins"
                        ),
                    )),
                }
            }
            Command::DropCatalog { name, if_exists } => {
                let user = self.inner.variables.lock().user.clone();
                catalog_admin::drop(&self.inner.engine.config, registry, &user, name, *if_exists)
                    .await?;
                Ok(Outcome::Command(CommandTag::new("DROP CATALOG")))
            }
        }
    }

    fn reset(&self) {
        let server = &self.inner.engine.config.server;
        let user = self.inner.variables.lock().user.clone();
        let mut fresh = SessionVariables::new(&server.default_schema);
        fresh.user = user;
        *self.inner.variables.lock() = fresh;
        self.set_time_zone(DEFAULT_TIME_ZONE);
        self.set_defaults(
            &server.default_catalog.clone(),
            &server.default_schema.clone(),
        );
    }

    /// A catalog's provider with a fresh listing, or 3D000 naming it.
    async fn catalog_provider(
        &self,
        name: &str,
    ) -> Result<Arc<dyn datafusion::catalog::CatalogProvider>, EngineError> {
        let registry = &self.inner.engine.registry;
        match registry.get(name) {
            Some(CatalogHandle::Postgres(postgres)) => {
                postgres
                    .refresh()
                    .await
                    .map_err(|error| EngineError::new(error.sqlstate(), error.to_string()))?;
            }
            Some(CatalogHandle::Iceberg(iceberg)) => {
                iceberg.refresh().await.map_err(iceberg_error)?;
            }
            Some(CatalogHandle::Other(_)) => {}
            None => {
                return Err(EngineError::new(
                    sqlstate::INVALID_CATALOG_NAME,
                    format!("catalog \"{name}\" does not exist"),
                ));
            }
        }
        use datafusion::catalog::CatalogProviderList;
        registry.catalog(name).ok_or_else(|| {
            EngineError::new(
                sqlstate::INVALID_CATALOG_NAME,
                format!("catalog \"{name}\" does not exist"),
            )
        })
    }
}

fn catalog_error(error: fjord_catalog::CatalogError) -> EngineError {
    EngineError::new(error.sqlstate(), error.to_string())
}

fn iceberg_error(error: fjord_catalog::IcebergError) -> EngineError {
    classify(&datafusion::error::DataFusionError::External(Box::new(
        error,
    )))
}

fn mentions_catalog_views(sql: &str) -> bool {
    let lowered = sql.to_ascii_lowercase();
    lowered.contains("information_schema")
        || lowered.contains("pg_catalog")
        || lowered.contains("show ")
}
