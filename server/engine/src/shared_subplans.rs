//! A grouped result that a query needs twice is computed once.
//!
//! DataFusion inlines a CTE at each place it is used, so TPC-H q15's `revenue0`, joined with
//! `supplier` and again under `max(total_revenue)`, scanned and summed lineitem twice. Postgres
//! evaluates a CTE used twice once, and so does fjord now: after optimization, an aggregation
//! that appears more than once in a plan, with the same groups over the same input, becomes a
//! [`SharedSubplan`] at each place. DataFusion prunes each place to the aggregates and columns
//! it uses, so the shared aggregation computes all that any place uses, and a place that uses
//! less takes its columns from it. The first place to run computes it; the others read the same
//! batches, held in memory (and counted against the query's memory limit) until the query ends.
//!
//! Only aggregations are shared: their results are usually small, which is what makes holding
//! them worthwhile, and reading a whole table twice is better than holding it. A shared input
//! sees nothing of where it is used: filters, limits and run-time join filters from its
//! consumers are not pushed into it, since they differ between the places. Plans with volatile
//! functions (two `random()`s are two values), correlated references or recursive CTEs (whose
//! steps run again) are left as they are.

use std::any::Any;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, Filter, LogicalPlan, Projection, TableScan, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore, lit,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream, collect_partitioned,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;

/// The optimizer rule; it runs after DataFusion's own rules and the Postgres pushdown.
#[derive(Debug, Default)]
pub(crate) struct SharedSubplans;

impl OptimizerRule for SharedSubplans {
    fn name(&self) -> &str {
        "fjord_shared_subplans"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let repeated = repeated_aggregations(&plan)?;
        if repeated.is_empty() {
            return Ok(Transformed::no(plan));
        }
        plan.transform_down(|node| {
            let LogicalPlan::Aggregate(place) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some(repeated) = repeated.iter().find(|repeated| repeated.computes(place)) else {
                return Ok(Transformed::no(node));
            };
            let shared = LogicalPlan::Extension(Extension {
                node: Arc::new(SharedSubplan {
                    input: repeated.aggregation.clone(),
                    result: repeated.result.clone(),
                }),
            });
            let replacement = if repeated.aggregation == node {
                shared
            } else {
                // This place computes fewer aggregates than the shared aggregation: it takes
                // its own columns from those.
                let columns = node
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                LogicalPlan::Projection(Projection::try_new_with_schema(
                    columns,
                    Arc::new(shared),
                    node.schema().clone(),
                )?)
            };
            // The input is shared as a whole: nothing inside it is shared again.
            Ok(Transformed::new(replacement, true, TreeNodeRecursion::Jump))
        })
    }
}

/// An aggregation a plan computes at several places: the same groups of the same input, with
/// every aggregate and input column that any of the places uses.
struct Repeated {
    /// The places' input as [`common_input`] gives it.
    input: LogicalPlan,
    groups: Vec<Expr>,
    aggregation: LogicalPlan,
    result: Arc<SharedResult>,
}

impl Repeated {
    fn computes(&self, place: &Aggregate) -> bool {
        let LogicalPlan::Aggregate(aggregation) = &self.aggregation else {
            return false;
        };
        place.group_expr == self.groups
            && place
                .aggr_expr
                .iter()
                .all(|aggregate| aggregation.aggr_expr.contains(aggregate))
            && common_input(&place.input).is_ok_and(|input| input == self.input)
    }
}

/// A place's input with what DataFusion trims to the columns that place uses taken away, so
/// that places using different columns of one input compare equal: a projection of plain
/// columns on top is dropped, and a table scan under filters reads every column (and is not
/// given `true` as a filter, which a join above one of the places may push down).
fn common_input(input: &LogicalPlan) -> Result<LogicalPlan> {
    let input = columns_only(input);
    Ok(filtered_scan(input, None)?.unwrap_or_else(|| input.clone()))
}

/// `plan` without a projection of plain columns on top.
fn columns_only(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::Projection(projection)
            if projection
                .expr
                .iter()
                .all(|expression| matches!(expression, Expr::Column(_))) =>
        {
            projection.input.as_ref()
        }
        other => other,
    }
}

/// `plan`, if it is a table scan under filters, with the scan reading `columns` (all if
/// `None`).
fn filtered_scan(plan: &LogicalPlan, columns: Option<Vec<usize>>) -> Result<Option<LogicalPlan>> {
    Ok(match plan {
        LogicalPlan::Filter(filter) => match filtered_scan(&filter.input, columns)? {
            Some(input) => Some(LogicalPlan::Filter(Filter::try_new(
                filter.predicate.clone(),
                Arc::new(input),
            )?)),
            None => None,
        },
        LogicalPlan::TableScan(scan) => Some(LogicalPlan::TableScan(TableScan::try_new(
            scan.table_name.clone(),
            scan.source.clone(),
            columns,
            scan.filters
                .iter()
                .filter(|filter| **filter != lit(true))
                .cloned()
                .collect(),
            scan.fetch,
        )?)),
        _ => None,
    })
}

/// The table scan at the bottom of `plan`, a scan under filters.
fn bottom_scan(plan: &LogicalPlan) -> Option<&TableScan> {
    match plan {
        LogicalPlan::Filter(filter) => bottom_scan(&filter.input),
        LogicalPlan::TableScan(scan) => Some(scan),
        _ => None,
    }
}

/// The input an aggregation shared by `places` reads: their common input, with its table scan
/// (for a scan under filters) reading the columns any of them reads.
fn shared_input(common: &LogicalPlan, places: &[&Aggregate]) -> Result<LogicalPlan> {
    let mut columns: Option<Vec<usize>> = Some(Vec::new());
    for place in places {
        let Some(scan) = bottom_scan(columns_only(&place.input)) else {
            return Ok(common.clone());
        };
        match (&mut columns, &scan.projection) {
            (Some(columns), Some(projection)) => columns.extend(projection),
            _ => columns = None,
        }
    }
    if let Some(columns) = &mut columns {
        columns.sort_unstable();
        columns.dedup();
    }
    Ok(filtered_scan(common, columns)?.unwrap_or_else(|| common.clone()))
}

/// The aggregations that appear at more than one place in `plan` (outside subquery
/// expressions) and may be computed once. DataFusion prunes each place to the aggregates and
/// columns it uses, so places are matched by input and groups, and the shared aggregation
/// computes what all of them use.
fn repeated_aggregations(plan: &LogicalPlan) -> Result<Vec<Repeated>> {
    let mut aggregations: Vec<&Aggregate> = Vec::new();
    let mut recursive = false;
    plan.apply(|node| {
        match node {
            LogicalPlan::RecursiveQuery(_) => {
                recursive = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            // Already shared (the optimizer runs its rules more than once).
            LogicalPlan::Extension(extension) if extension.node.as_any().is::<SharedSubplan>() => {
                return Ok(TreeNodeRecursion::Jump);
            }
            LogicalPlan::Aggregate(aggregate) => aggregations.push(aggregate),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    // Most plans have one aggregation or none: nothing to compare, no inputs rebuilt.
    if recursive || aggregations.len() < 2 {
        return Ok(Vec::new());
    }
    let mut places: HashMap<(LogicalPlan, &[Expr]), Vec<&Aggregate>> = HashMap::new();
    for aggregate in aggregations {
        places
            .entry((
                common_input(&aggregate.input)?,
                aggregate.group_expr.as_slice(),
            ))
            .or_default()
            .push(aggregate);
    }
    let mut repeated = Vec::new();
    for ((input, groups), places) in places {
        let mut aggregates: Vec<Expr> = Vec::new();
        for aggregate in places.iter().flat_map(|place| &place.aggr_expr) {
            if !aggregates.contains(aggregate) {
                aggregates.push(aggregate.clone());
            }
        }
        if places.len() < 2
            || !may_share(&input)
            || groups.iter().chain(&aggregates).any(volatile_or_correlated)
        {
            continue;
        }
        let aggregation = Aggregate::try_new(
            Arc::new(shared_input(&input, &places)?),
            groups.to_vec(),
            aggregates,
        )?;
        repeated.push((input, groups.to_vec(), LogicalPlan::Aggregate(aggregation)));
    }
    // Numbered in a stable order, for EXPLAIN.
    repeated.sort_by_cached_key(|(_, _, aggregation)| aggregation.display_indent().to_string());
    Ok(repeated
        .into_iter()
        .enumerate()
        .map(|(index, (input, groups, aggregation))| Repeated {
            input,
            groups,
            aggregation,
            result: Arc::new(SharedResult::new(index + 1)),
        })
        .collect())
}

fn volatile_or_correlated(expression: &Expr) -> bool {
    expression.is_volatile() || expression.contains_outer()
}

/// Whether computing `plan` once gives what computing it at each place would: it reads a
/// table (a constant is not worth holding), refers to no outer query, and calls nothing
/// volatile.
fn may_share(plan: &LogicalPlan) -> bool {
    let mut reads = false;
    let mut deterministic = true;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(_) => reads = true,
            LogicalPlan::Extension(extension) if extension.node.inputs().is_empty() => reads = true,
            _ => {}
        }
        let _ = node.apply_expressions(|expression| {
            if volatile_or_correlated(expression) {
                deterministic = false;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if deterministic {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    reads && deterministic
}

/// What the places of one shared input share: its batches, once computed.
#[derive(Debug)]
pub(crate) struct SharedResult {
    /// Numbers the shared inputs of one plan, for EXPLAIN.
    id: usize,
    batches: tokio::sync::OnceCell<std::result::Result<Arc<Computed>, Arc<DataFusionError>>>,
}

#[derive(Debug)]
struct Computed {
    /// The batches of each of the input's partitions.
    partitions: Vec<Vec<RecordBatch>>,
    /// Their memory, held against the query's pool until the query ends.
    _reservation: MemoryReservation,
}

impl SharedResult {
    fn new(id: usize) -> Self {
        SharedResult {
            id,
            batches: tokio::sync::OnceCell::new(),
        }
    }

    /// The input's batches, computed by the first caller (with `input`, which every place
    /// plans alike) while the others wait for them.
    async fn get(
        &self,
        input: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> Result<Arc<Computed>> {
        let computed = self
            .batches
            .get_or_init(|| async move {
                let reservation = MemoryConsumer::new(format!("SharedSubplanExec[{}]", self.id))
                    .register(context.memory_pool());
                let partitions = collect_partitioned(input, context).await?;
                let size = partitions
                    .iter()
                    .flatten()
                    .map(RecordBatch::get_array_memory_size)
                    .sum();
                reservation.try_grow(size)?;
                Ok(Arc::new(Computed {
                    partitions,
                    _reservation: reservation,
                }))
            })
            .await;
        match computed {
            Ok(computed) => Ok(computed.clone()),
            Err(error) => Err(DataFusionError::Shared(error.clone())),
        }
    }
}

/// One place of a shared input in a logical plan.
#[derive(Debug, Clone)]
pub(crate) struct SharedSubplan {
    input: LogicalPlan,
    result: Arc<SharedResult>,
}

impl PartialEq for SharedSubplan {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.result, &other.result) && self.input == other.input
    }
}

impl Eq for SharedSubplan {}

impl PartialOrd for SharedSubplan {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.result.id.partial_cmp(&other.result.id)
    }
}

impl Hash for SharedSubplan {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.result.id.hash(state);
        self.input.hash(state);
    }
}

impl UserDefinedLogicalNodeCore for SharedSubplan {
    fn name(&self) -> &str {
        "SharedSubplan"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedSubplan: id={}", self.result.id)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        Ok(SharedSubplan {
            input: inputs.swap_remove(0),
            result: self.result.clone(),
        })
    }
}

/// Plans [`SharedSubplan`]s as [`SharedSubplanExec`]s.
#[derive(Debug, Default)]
pub(crate) struct SharedSubplanPlanner;

#[async_trait]
impl ExtensionPlanner for SharedSubplanPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(shared) = node.as_any().downcast_ref::<SharedSubplan>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Internal(format!(
                "SharedSubplan has one input, not {}",
                physical_inputs.len()
            )));
        };
        Ok(Some(Arc::new(SharedSubplanExec::new(
            input.clone(),
            shared.result.clone(),
        ))))
    }
}

/// One place of a shared input in a physical plan: the input's rows, computed by whichever
/// place runs first.
///
/// Its partitions are not declared to be the input's: each place reads partition `j` of the
/// computed result in its partition `j % n`, which is right however many partitions the input
/// that ran had. Filters from above are not pushed through it (the default), and it takes no
/// limit.
#[derive(Debug)]
pub(crate) struct SharedSubplanExec {
    input: Arc<dyn ExecutionPlan>,
    result: Arc<SharedResult>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SharedSubplanExec {
    fn new(input: Arc<dyn ExecutionPlan>, result: Arc<SharedResult>) -> Self {
        let partitions = input.output_partitioning().partition_count().max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        SharedSubplanExec {
            input,
            result,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for SharedSubplanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedSubplanExec: id={}", self.result.id)
    }
}

impl ExecutionPlan for SharedSubplanExec {
    fn name(&self) -> &'static str {
        "SharedSubplanExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "SharedSubplanExec has one input, not {}",
                children.len()
            )));
        }
        Ok(Arc::new(SharedSubplanExec::new(
            children.swap_remove(0),
            self.result.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let places = self.properties.partitioning.partition_count();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let result = self.result.clone();
        let input = self.input.clone();
        let batches = futures::stream::once(async move {
            let computed = result.get(input, context).await?;
            let mine: Vec<Result<RecordBatch>> = computed
                .partitions
                .iter()
                .skip(partition)
                .step_by(places)
                .flatten()
                .map(|batch| Ok(batch.clone()))
                .collect();
            Ok::<_, DataFusionError>(futures::stream::iter(mine))
        })
        .map(|batches| match batches {
            Ok(batches) => batches.left_stream(),
            Err(error) => futures::stream::once(async { Err(error) }).right_stream(),
        })
        .flatten()
        .map(move |batch| batch.record_output(&baseline));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
