//! Reading a table: one `COPY (SELECT ...) TO STDOUT (FORMAT binary)` per partition, decoded
//! straight into Arrow batches.
//!
//! A large plain table is split into ranges of heap blocks (`ctid` ranges, which Postgres 14
//! and later read with a TID range scan), one per partition, each read over its own pooled
//! connection. All of them read one snapshot: the first connection opens a repeatable-read
//! transaction and exports its snapshot (`pg_export_snapshot()`), the others import it
//! (`SET TRANSACTION SNAPSHOT`) before any range is read. So the parallel result is exactly
//! the rows one `SELECT` would have returned, even while other sessions write.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, ParamValues, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use parking_lot::Mutex;
use postgres_types::{Format, FromSql, IsNull, Kind, ToSql, Type};
use tokio_postgres::Statement;

use crate::binary_copy::{BinaryCopyDecoder, DecodeError};
use crate::error::PostgresError;
use crate::pool::{Pool, PooledClient};
use crate::shape::ShapeCheck;
use crate::sql::{
    bind_parameter_values, bind_parameters, quote_literal, runtime_filter_sql, show_parameters,
};
use crate::types::{PgColumn, PgKind};

/// Table reads of at most this many rows (a key lookup, a small LIMIT) are sent as a plain
/// statement, answered in binary rows: one round trip, where a `COPY` is prepared first and
/// closed after.
pub(crate) const FEW_ROWS: usize = 1000;

/// The rows a few-rows read's column builders are first sized for.
const FEW_ROWS_CAPACITY: usize = 16;

/// How long a table's size in blocks serves a few-rows read that carries its shape check in
/// its own statement (which reads no sizes). Past that, the read sends the separate check
/// beside it, in the same round trip, which also reads the size, so that a table grown under
/// a stream of lookups is split by its size when a larger read comes.
const GUARD_SIZE_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// A table is split only when each range would hold at least this many 8 kB blocks (8 MB):
/// below that, opening connections and a snapshot costs more than one connection's read.
pub(crate) const MIN_BLOCKS_PER_RANGE: u64 = 1024;

/// How many ranges to read a table of `blocks` heap blocks in: at most `partitions` (the
/// session's target partitions) and `pool_size` (connections are taken all at once), and
/// none smaller than [`MIN_BLOCKS_PER_RANGE`].
pub(crate) fn range_count(blocks: u64, partitions: usize, pool_size: usize) -> usize {
    let by_size = (blocks / MIN_BLOCKS_PER_RANGE).max(1) as usize;
    by_size.min(partitions).min(pool_size).max(1)
}

/// How many ranges a read of about `bytes` is worth: one per 8 MB (a range's worth of
/// blocks), so a selective read stays on one connection.
pub(crate) fn range_count_for_bytes(bytes: u64) -> usize {
    (bytes / (MIN_BLOCKS_PER_RANGE * 8192)).max(1) as usize
}

/// The `ctid` condition of each of `count` ranges over `blocks` blocks. The first range is
/// open below and the last open above, so rows in blocks added since `blocks` was read are
/// still read exactly once.
pub(crate) fn ctid_ranges(blocks: u64, count: usize) -> Vec<String> {
    let count = count.max(1) as u64;
    let step = blocks.div_ceil(count).max(1);
    (0..count)
        .map(|index| {
            let start = index * step;
            let end = (index + 1) * step;
            match (index == 0, index + 1 == count) {
                (true, true) => String::new(),
                (true, false) => format!("ctid < '({end},0)'::tid"),
                (false, true) => format!("ctid >= '({start},0)'::tid"),
                (false, false) => {
                    format!("ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid")
                }
            }
        })
        .collect()
}

/// How long a scan waits at its start for a run-time filter that is not final yet. A hash join's
/// is final microseconds after its probe starts; a TopK's or an aggregate's only at the end, and
/// those sit over scans that read the whole table (anything smaller is pushed whole), so the
/// wait is small beside the read.
const RUNTIME_FILTER_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs one `SELECT` per partition in Postgres through binary COPY and streams the rows as
/// Arrow batches.
#[derive(Debug)]
pub struct PostgresScanExec {
    catalog: String,
    pool: Arc<Pool>,
    queries: Vec<String>,
    schema: SchemaRef,
    kinds: Vec<PgKind>,
    /// The output columns as Postgres sees them, for translating run-time filters.
    columns: Arc<Vec<PgColumn>>,
    /// Run-time filters from joins above (DataFusion's dynamic filters), read when the scan
    /// starts: by then a hash join has built its table and set them.
    runtime_filters: Vec<Arc<dyn PhysicalExpr>>,
    batch_size: usize,
    /// Reused table shapes to confirm in the round trip that reads the rows (one partition).
    checks: Vec<ShapeCheck>,
    /// For a few-rows read, [`ShapeCheck::guard`] of `checks`: written once per plan.
    guard: Option<Arc<str>>,
    properties: Arc<PlanProperties>,
    /// Rows read from Postgres per partition (`output_rows` in EXPLAIN ANALYZE).
    metrics: ExecutionPlanMetricsSet,
    /// The partitions of the current execution, which share one snapshot.
    round: Mutex<Option<Arc<Round>>>,
    /// The statements last sent with run-time filters added, for EXPLAIN ANALYZE.
    sent: Arc<Mutex<Vec<Option<String>>>>,
    /// Set when the statements compare columns with statement parameters: the table's
    /// columns, to write each execution's values in for (see [`StatementParameters`]).
    parameter_columns: Option<Arc<Vec<PgColumn>>>,
    /// At most [`FEW_ROWS`] rows: read as a plain statement rather than a `COPY`.
    few_rows: bool,
    /// The (schema, table) of tables confirmed when the scan was planned (a split read's).
    confirmed_at_planning: Vec<(String, String)>,
}

/// The parameter values of the statement being run, for scans planned with its parameters
/// unbound (a prepared statement planned once and run many times). The engine puts them in
/// the task's session config; a scan writes them into its statements when it starts.
#[derive(Debug)]
pub struct StatementParameters(pub ParamValues);

impl PostgresScanExec {
    #[allow(clippy::too_many_arguments)] // One per part of what a scan reads; all required.
    pub(crate) fn new(
        catalog: String,
        pool: Arc<Pool>,
        queries: Vec<String>,
        schema: SchemaRef,
        kinds: Vec<PgKind>,
        columns: Vec<PgColumn>,
        batch_size: usize,
        checks: Vec<ShapeCheck>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(queries.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        PostgresScanExec {
            catalog,
            pool,
            queries,
            schema,
            kinds,
            columns: Arc::new(columns),
            runtime_filters: Vec::new(),
            batch_size,
            guard: None,
            checks,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            round: Mutex::new(None),
            sent: Arc::default(),
            parameter_columns: None,
            few_rows: false,
            confirmed_at_planning: Vec::new(),
        }
    }

    /// The scan of tables that `checks` confirmed as it was planned.
    pub(crate) fn with_confirmed_at_planning(mut self, checks: &[ShapeCheck]) -> Self {
        self.confirmed_at_planning = checks
            .iter()
            .map(|check| (check.schema.clone(), check.table.clone()))
            .collect();
        self
    }

    /// The scan of a statement known to return at most [`FEW_ROWS`] rows.
    pub(crate) fn with_few_rows(mut self, few_rows: bool) -> Self {
        self.few_rows = few_rows && self.queries.len() == 1;
        self.guard = if self.few_rows {
            ShapeCheck::guard(&self.checks).map(Arc::from)
        } else {
            None
        };
        self
    }

    /// The scan of statements with parameters compared with the table's `columns`.
    pub(crate) fn with_parameters(mut self, columns: Arc<Vec<PgColumn>>) -> Self {
        self.parameter_columns = Some(columns);
        self
    }

    /// The exact statements sent to Postgres, one per partition (parameters shown as `$1`).
    pub fn queries(&self) -> Vec<String> {
        self.queries
            .iter()
            .map(|query| show_parameters(query))
            .collect()
    }

    /// Whether running this scan again gives the rows as they are then: not if it takes
    /// run-time filters from operators above it, which are set once per plan (DataFusion's
    /// dynamic filters), nor if it is split into block ranges, whose table was confirmed once,
    /// when it was planned, and whose ranges share one round of connections per plan.
    pub fn can_run_again(&self) -> bool {
        self.runtime_filters.is_empty() && self.queries.len() == 1
    }

    /// Whether the scan confirms, each time it runs, that its tables still have the columns it
    /// was planned with. A scan planned on shapes read just then has nothing to confirm, and
    /// running it again later would not see a change.
    pub fn confirms_shapes(&self) -> bool {
        !self.checks.is_empty()
    }

    pub fn catalog(&self) -> &str {
        &self.catalog
    }

    /// The (schema, table) of each table this scan confirms as it starts, or confirmed when
    /// it was planned.
    pub(crate) fn checked_tables(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.checks
            .iter()
            .map(|check| (check.schema.clone(), check.table.clone()))
            .chain(self.confirmed_at_planning.iter().cloned())
    }

    /// The round that partition `partition` belongs to: the current one unless it has
    /// already read that partition (the plan is being executed again).
    fn join_round(&self, partition: usize) -> Arc<Round> {
        let mut current = self.round.lock();
        if let Some(round) = current.as_ref() {
            let mut joined = round.joined.lock();
            if !joined[partition] {
                joined[partition] = true;
                return round.clone();
            }
        }
        let round = Arc::new(Round {
            joined: Mutex::new(vec![false; self.queries.len()]),
            connections: tokio::sync::OnceCell::new(),
        });
        round.joined.lock()[partition] = true;
        *current = Some(round.clone());
        round
    }
}

impl DisplayAs for PostgresScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queries = self.queries();
        if let [query] = queries.as_slice() {
            write!(f, "PostgresScanExec: catalog={}, sql={query}", self.catalog)?;
        } else {
            write!(
                f,
                "PostgresScanExec: catalog={}, partitions={} (one snapshot), sql=[{}]",
                self.catalog,
                queries.len(),
                queries.join("; ")
            )?;
        }
        if !self.runtime_filters.is_empty() {
            let filters: Vec<String> = self
                .runtime_filters
                .iter()
                .map(|filter| filter.to_string())
                .collect();
            write!(f, ", runtime_filters=[{}]", filters.join(", "))?;
            let sent: Vec<String> = self.sent.lock().iter().flatten().cloned().collect();
            if !sent.is_empty() {
                write!(f, ", sent=[{}]", sent.join("; "))?;
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for PostgresScanExec {
    fn name(&self) -> &str {
        "PostgresScanExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    /// Keeps the join filters DataFusion offers after planning (phase `Post`); the join
    /// above still checks every row, so each is reported as not applied here.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let filters: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .iter()
            .map(|result| result.filter.clone())
            .collect();
        let not_applied = vec![PushedDown::No; filters.len()];
        let runtime: Vec<Arc<dyn PhysicalExpr>> = filters
            .into_iter()
            .filter(|filter| {
                phase == FilterPushdownPhase::Post
                    && filter
                        .as_any()
                        .downcast_ref::<DynamicFilterPhysicalExpr>()
                        .is_some()
            })
            .collect();
        let mut propagation = FilterPushdownPropagation {
            filters: not_applied,
            updated_node: None,
        };
        if !runtime.is_empty() {
            let mut runtime_filters = self.runtime_filters.clone();
            runtime_filters.extend(runtime);
            propagation = propagation.with_updated_node(Arc::new(PostgresScanExec {
                catalog: self.catalog.clone(),
                pool: self.pool.clone(),
                queries: self.queries.clone(),
                schema: self.schema.clone(),
                kinds: self.kinds.clone(),
                columns: self.columns.clone(),
                runtime_filters,
                batch_size: self.batch_size,
                checks: self.checks.clone(),
                guard: self.guard.clone(),
                properties: self.properties.clone(),
                metrics: ExecutionPlanMetricsSet::new(),
                round: Mutex::new(None),
                sent: Arc::default(),
                parameter_columns: self.parameter_columns.clone(),
                few_rows: self.few_rows,
                confirmed_at_planning: self.confirmed_at_planning.clone(),
            }) as Arc<dyn ExecutionPlan>);
        }
        Ok(propagation)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(query) = self.queries.get(partition) else {
            return Err(DataFusionError::Internal(format!(
                "PostgresScanExec has {} partitions, asked for {partition}",
                self.queries.len()
            )));
        };
        let batch_size = self
            .batch_size
            .min(context.session_config().batch_size())
            .max(1);
        // A kept plan's parameters: sent beside a few-rows statement, whose text then stays
        // the same for every value; written into a COPY, which takes none.
        let (query, parameters) = match &self.parameter_columns {
            Some(columns) => {
                let values = context
                    .session_config()
                    .get_extension::<StatementParameters>();
                let values = values.as_ref().map(|values| &values.0);
                let bound = if self.few_rows {
                    bind_parameter_values(query, columns, values)
                } else {
                    bind_parameters(query, columns, values).map(|query| (query, Vec::new()))
                };
                bound.map_err(|reason| PostgresError::Unbound {
                    catalog: self.catalog.clone(),
                    reason,
                })?
            }
            None => (query.clone(), Vec::new()),
        };
        let read = Read {
            pool: self.pool.clone(),
            query,
            parameters,
            schema: self.schema.clone(),
            kinds: self.kinds.clone(),
            columns: self.columns.clone(),
            runtime_filters: self.runtime_filters.clone(),
            catalog: self.catalog.clone(),
            round: (self.queries.len() > 1).then(|| self.join_round(partition)),
            partition,
            partitions: self.queries.len(),
            batch_size,
            checks: self.checks.clone(),
            guard: self.guard.clone(),
            output_rows: MetricBuilder::new(&self.metrics).output_rows(partition),
            sent: self.sent.clone(),
            few_rows: self.few_rows,
        };
        // Nothing is sent to Postgres until the stream is first polled: a hash join polls its
        // probe side only once its build side is read, and its run-time filters are set by then.
        let schema = self.schema.clone();
        let stream = futures::stream::once(read.start()).flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One partition's read, started on the first poll.
struct Read {
    pool: Arc<Pool>,
    query: String,
    /// Values of the query's `$1`, `$2`, ... in text (a few-rows read only).
    parameters: Vec<String>,
    schema: SchemaRef,
    kinds: Vec<PgKind>,
    columns: Arc<Vec<PgColumn>>,
    runtime_filters: Vec<Arc<dyn PhysicalExpr>>,
    catalog: String,
    round: Option<Arc<Round>>,
    partition: usize,
    partitions: usize,
    batch_size: usize,
    checks: Vec<ShapeCheck>,
    guard: Option<Arc<str>>,
    output_rows: Count,
    sent: Arc<Mutex<Vec<Option<String>>>>,
    few_rows: bool,
}

impl Read {
    async fn start(self) -> SendableRecordBatchStream {
        let Read {
            pool,
            mut query,
            parameters,
            schema,
            kinds,
            columns,
            runtime_filters,
            catalog,
            round,
            partition,
            partitions,
            batch_size,
            checks,
            guard,
            output_rows,
            sent,
            few_rows,
        } = self;
        let mut conditions = Vec::new();
        for filter in &runtime_filters {
            let Some(dynamic) = filter.as_any().downcast_ref::<DynamicFilterPhysicalExpr>() else {
                continue;
            };
            // A hash join releases all its partitions to probe at once and only then sets the
            // filter, so the first probe can come a moment early: wait briefly for it.
            let _ = tokio::time::timeout(RUNTIME_FILTER_WAIT, dynamic.wait_complete()).await;
            if let Some(sql) = dynamic
                .current()
                .ok()
                .and_then(|current| runtime_filter_sql(&current, &columns))
            {
                conditions.push(sql);
            }
        }
        if !conditions.is_empty() {
            query = format!(
                "SELECT * FROM ({query}) AS runtime_filtered WHERE {}",
                conditions.join(" AND ")
            );
        }
        let out_schema = schema.clone();
        if !runtime_filters.is_empty() {
            let mut sent = sent.lock();
            if sent.len() < partitions {
                sent.resize(partitions, None);
            }
            sent[partition] = Some(query.clone());
        }
        let decode_error = {
            let catalog = catalog.clone();
            move |error: DecodeError| PostgresError::Decode {
                catalog: catalog.clone(),
                column: error.column,
                reason: error.reason,
            }
        };
        if few_rows {
            // A key lookup or a small LIMIT: read in the consumer's own task, as one plain
            // statement (parse, bind and execute go out together with the unnamed statement),
            // rather than in a task of its own feeding a channel: for one row, the hand-offs
            // between tasks cost more than the read. Dropping the stream drops the pooled
            // connection mid-statement, which cancels it in Postgres.
            // Only unsplit reads are few-row reads: one connection, no shared snapshot.
            let read = async move {
                let mut client = pool.get().await?;
                client.mark_busy();
                // Sized for a few rows; the builders grow if more come.
                let new_decoder = || {
                    BinaryCopyDecoder::with_capacity(
                        schema.clone(),
                        &kinds,
                        batch_size,
                        FEW_ROWS_CAPACITY.min(batch_size),
                    )
                };
                let mut decoder = new_decoder();
                let few = FewRows {
                    pool: &pool,
                    parameters: &parameters,
                    decode_error: &decode_error,
                };
                // The tables' check rides in the statement itself (see `shape`) when it can.
                let sized = checks
                    .iter()
                    .all(|check| check.planned.sized_within(GUARD_SIZE_AGE));
                let guarded = guard.filter(|_| sized).map(|guard| {
                    // One row at least, even where the read finds none, to carry the guard;
                    // a lateral join with nothing to join on runs as a nested loop over the
                    // guard's one row, so the read's rows keep their order.
                    format!(
                        "SELECT fjord_guard.ok, fjord_read.* FROM (SELECT {guard} AS ok) AS fjord_guard \
                         LEFT JOIN LATERAL (SELECT true AS fjord_present, fjord_rows.* \
                         FROM ({query}) AS fjord_rows) AS fjord_read ON true"
                    )
                });
                let confirmed = match &guarded {
                    Some(sql) => match few.read(&mut client, sql, &mut decoder, true).await {
                        Ok(Some(true)) => {
                            ShapeCheck::confirmed_by_guard(&checks);
                            true
                        }
                        Ok(Some(false)) => false,
                        // Not expected (the statement gives a row at least): check apart.
                        Ok(None) => {
                            ShapeCheck::confirm_all(&checks, &pool, &mut client).await?;
                            true
                        }
                        // A statement planned on a changed table may fail for that change
                        // (a column gone): say so, so that it is planned again.
                        Err(error) => {
                            return Err(
                                match ShapeCheck::confirm_all(&checks, &pool, &mut client).await {
                                    Err(changed @ PostgresError::Changed { .. }) => changed,
                                    _ => error,
                                },
                            );
                        }
                    },
                    None => false,
                };
                if !confirmed {
                    // Read again behind the separate check, which names what changed (or
                    // finds the tables as planned again, and then the rows are good).
                    decoder = new_decoder();
                    let prepared = client.repeated(&query).await.ok().flatten();
                    ShapeCheck::around(&checks, &pool, &mut client, async |client| {
                        few.read_prepared(client, &query, prepared.as_ref(), &mut decoder, false)
                            .await
                    })
                    .await?;
                }
                let batches = decoder.finish().map_err(&decode_error)?;
                for batch in &batches {
                    output_rows.add(batch.num_rows());
                }
                client.mark_idle();
                Ok::<_, PostgresError>(batches)
            };
            let stream = futures::stream::once(read).flat_map(|read| {
                let batches: Vec<Result<RecordBatch>> = match read {
                    Ok(batches) => batches.into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error.into())],
                };
                futures::stream::iter(batches)
            });
            return Box::pin(RecordBatchStreamAdapter::new(out_schema, stream));
        }
        let statement = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let mut builder = RecordBatchReceiverStreamBuilder::new(out_schema, 2);
        let sender = builder.tx();
        // When the consumer goes away (client disconnect, LIMIT satisfied, cancel), the builder
        // aborts this task; the pooled connection's drop then cancels the statement in Postgres.
        builder.spawn(async move {
            let mut client = match &round {
                Some(round) => round.connection(&pool, partition, partitions).await?,
                None => {
                    let mut client = pool.get().await?;
                    client.mark_busy();
                    client
                }
            };
            let mut decoder = BinaryCopyDecoder::new(schema, &kinds, batch_size);
            let prepared = client.repeated(&statement).await.ok().flatten();
            let stream = ShapeCheck::around(&checks, &pool, &mut client, async |client| {
                match &prepared {
                    Some(prepared) => client.client().copy_out(prepared).await,
                    None => client.client().copy_out(statement.as_str()).await,
                }
                .map_err(|e| pool.error(e))
            })
            .await?;
            futures::pin_mut!(stream);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| pool.error(e))?;
                decoder.push(&chunk).map_err(&decode_error)?;
                for batch in decoder.take_ready() {
                    output_rows.add(batch.num_rows());
                    if sender.send(Ok(batch)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            for batch in decoder.finish().map_err(&decode_error)? {
                output_rows.add(batch.num_rows());
                if sender.send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
            }
            if round.is_some() {
                // Read-only: ending the transaction only releases the snapshot.
                client
                    .client()
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| pool.error(e))?;
            }
            client.mark_idle();
            Ok(())
        });
        builder.build()
    }
}

/// What a few-rows read needs besides its connection, statement and decoder.
struct FewRows<'a, E> {
    pool: &'a Pool,
    parameters: &'a [String],
    decode_error: &'a E,
}

impl<E: Fn(DecodeError) -> PostgresError> FewRows<'_, E> {
    /// Runs `sql` (prepared on the connection if it was sent before) and decodes its rows.
    async fn read(
        &self,
        client: &mut PooledClient,
        sql: &str,
        decoder: &mut BinaryCopyDecoder,
        guarded: bool,
    ) -> Result<Option<bool>, PostgresError> {
        // A prepare that fails (a column renamed) leaves the statement to go unprepared, and
        // its failure to the caller's check.
        let prepared = client.repeated(sql).await.ok().flatten();
        self.read_prepared(client, sql, prepared.as_ref(), decoder, guarded)
            .await
    }

    /// Runs `sql`, or `prepared` if given, and decodes its rows. With `guarded`, each row
    /// starts with [`ShapeCheck::guard`]'s value and whether a row of the read follows (NULL
    /// in the one row of a read that found none): the guard's value is returned (`None` if no
    /// row came at all), the read's rows decoded.
    async fn read_prepared(
        &self,
        client: &PooledClient,
        sql: &str,
        prepared: Option<&Statement>,
        decoder: &mut BinaryCopyDecoder,
        guarded: bool,
    ) -> Result<Option<bool>, PostgresError> {
        let pool = self.pool;
        let values = self.parameters.iter().map(|text| TextValue(text));
        let rows = match prepared {
            Some(statement) => client.client().query_raw(statement, values).await,
            // Postgres types each parameter from where it stands, as it would a literal
            // (`$1::date`, or a column's own type).
            None => {
                let unspecified = || Type::new(String::new(), 0, Kind::Simple, String::new());
                client
                    .client()
                    .query_typed_raw(sql, values.map(|value| (value, unspecified())))
                    .await
            }
        }
        .map_err(|e| pool.error(e))?;
        futures::pin_mut!(rows);
        let mut guard = None;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| pool.error(e))?;
            // Guarded, a row is the guard, whether a row of the read follows, then that row.
            let first = if guarded {
                if guard.is_none() {
                    guard = Some(row.try_get::<_, Option<bool>>(0).ok().flatten() == Some(true));
                }
                if row.try_get::<_, Option<bool>>(1).ok().flatten().is_none() {
                    // The read found no row: this one only carries the guard.
                    continue;
                }
                2
            } else {
                0
            };
            let values = (first..row.len()).map(|index| {
                row.try_get::<_, Option<RawValue>>(index)
                    .ok()
                    .flatten()
                    .map(|value| value.0)
            });
            decoder.push_row(values).map_err(self.decode_error)?;
        }
        Ok(guard)
    }
}

/// A parameter's value in Postgres's text form, which Postgres reads as the parameter's type.
#[derive(Debug)]
struct TextValue<'a>(&'a str);

impl ToSql for TextValue<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A value as Postgres sent it, in its binary form, whatever its type.
struct RawValue<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One execution of a split scan: a connection per partition, all in one snapshot.
struct Round {
    /// Partitions that have started in this round.
    joined: Mutex<Vec<bool>>,
    /// Opened by the first partition to need them; each partition takes its own.
    connections: tokio::sync::OnceCell<Vec<Mutex<Option<PooledClient>>>>,
}

impl fmt::Debug for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Round")
            .field("joined", &*self.joined.lock())
            .field("opened", &self.connections.initialized())
            .finish()
    }
}

impl Round {
    /// Partition `partition`'s connection, in a transaction on the round's snapshot.
    async fn connection(
        &self,
        pool: &Arc<Pool>,
        partition: usize,
        partitions: usize,
    ) -> Result<PooledClient, PostgresError> {
        let connections = self
            .connections
            .get_or_try_init(|| share_snapshot(pool, partitions))
            .await?;
        connections[partition]
            .lock()
            .take()
            .ok_or_else(|| PostgresError::Internal {
                catalog: pool.catalog().to_string(),
                reason: format!("partition {partition} was read twice in one scan"),
            })
    }
}

/// `count` connections in repeatable-read transactions that see one snapshot.
async fn share_snapshot(
    pool: &Arc<Pool>,
    count: usize,
) -> Result<Vec<Mutex<Option<PooledClient>>>, PostgresError> {
    let mut clients = pool.get_many(count).await?;
    // Until COMMIT, a connection is inside a transaction: if it is dropped before that, it is
    // closed rather than handed to another query.
    for client in &mut clients {
        client.mark_busy();
    }
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    let exporter = clients[0].client();
    exporter
        .batch_execute(begin)
        .await
        .map_err(|e| pool.error(e))?;
    let snapshot: String = exporter
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
        .map_err(|e| pool.error(e))?
        .get(0);
    let snapshot = quote_literal(&snapshot).ok_or_else(|| PostgresError::Internal {
        catalog: pool.catalog().to_string(),
        reason: "the exported snapshot id holds a NUL byte".into(),
    })?;
    let import = format!("{begin}; SET TRANSACTION SNAPSHOT {snapshot}");
    futures::future::try_join_all(
        clients[1..]
            .iter()
            .map(|client| client.client().batch_execute(&import)),
    )
    .await
    .map_err(|e| pool.error(e))?;
    Ok(clients
        .into_iter()
        .map(|client| Mutex::new(Some(client)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_block_once() {
        assert_eq!(ctid_ranges(5000, 1), vec![String::new()]);
        assert_eq!(
            ctid_ranges(5000, 2),
            vec![
                "ctid < '(2500,0)'::tid".to_string(),
                "ctid >= '(2500,0)'::tid".to_string()
            ]
        );
        assert_eq!(
            ctid_ranges(10, 3),
            vec![
                "ctid < '(4,0)'::tid".to_string(),
                "ctid >= '(4,0)'::tid AND ctid < '(8,0)'::tid".to_string(),
                "ctid >= '(8,0)'::tid".to_string()
            ]
        );
    }

    #[test]
    fn selective_reads_are_not_split() {
        assert_eq!(range_count_for_bytes(0), 1);
        assert_eq!(range_count_for_bytes(120), 1);
        assert_eq!(range_count_for_bytes(16 * 1024 * 1024 - 1), 1);
        assert_eq!(range_count_for_bytes(64 * 1024 * 1024), 8);
    }

    #[test]
    fn small_tables_are_not_split() {
        assert_eq!(range_count(0, 8, 4), 1);
        assert_eq!(range_count(MIN_BLOCKS_PER_RANGE * 2 - 1, 8, 4), 1);
        assert_eq!(range_count(MIN_BLOCKS_PER_RANGE * 2, 8, 4), 2);
        assert_eq!(range_count(MIN_BLOCKS_PER_RANGE * 100, 8, 4), 4);
        assert_eq!(range_count(MIN_BLOCKS_PER_RANGE * 100, 2, 4), 2);
        assert_eq!(range_count(MIN_BLOCKS_PER_RANGE * 100, 8, 1), 1);
    }
}
