//! A semi join whose build side has unique keys runs as an inner join, so that it filters its
//! probe side while the query runs.
//!
//! DataFusion derives a run-time filter from a hash join's build side (the keys it collected)
//! and pushes it into the probe side's scans, but only for inner joins. `x IN (SELECT k ... GROUP
//! BY k HAVING ...)` plans as a semi join whose small build side is the subquery's groups, so
//! the probe side is read, joined and aggregated in full first: in TPC-H q18, 57 qualifying
//! orders were looked for in the join of all 6M lineitem rows with their orders and customers.
//!
//! When each key occurs at most once on the build side, every probe row matches at most one
//! build row, so the inner join keeps exactly the rows the semi join keeps (and keeps them once);
//! projected to the probe side's columns it is the same result. Keys are known unique when the
//! build side is an aggregate (or DISTINCT) whose group columns are all among the join keys,
//! seen through filters, column projections and repartitioning. The rewrite is made
//! only when the plan's partitioning and ordering stay the same.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

#[derive(Debug, Default)]
pub(crate) struct UniqueSemiJoins;

/// The name of the rule this one must run before: dynamic filters are attached there.
pub(crate) const RUNS_BEFORE: &str = "FilterPushdown(Post)";

impl PhysicalOptimizerRule for UniqueSemiJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_hash_joins(plan, config, as_inner_join)
    }

    fn name(&self) -> &str {
        "UniqueSemiJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with each hash join `rewrite` gives a replacement for replaced, bottom up, when
/// DataFusion's run-time join filters (which these rewrites are for) are on.
pub(crate) fn rewrite_hash_joins(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
    rewrite: impl Fn(&HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !config.optimizer.enable_join_dynamic_filter_pushdown {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        match rewrite(join)? {
            Some(replacement) => Ok(Transformed::yes(replacement)),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|transformed| transformed.data)
}

/// `join` as an inner join projected to its probe side, if it is a semi join whose build side
/// (left) has unique keys.
fn as_inner_join(join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.join_type() != JoinType::RightSemi || join.filter().is_some() || join.null_aware {
        return Ok(None);
    }
    let mut keys = BTreeSet::new();
    for (left, _) in join.on() {
        match left.as_any().downcast_ref::<Column>() {
            Some(column) => keys.insert(column.index()),
            None => return Ok(None),
        };
    }
    if !unique(join.left(), &keys) {
        return Ok(None);
    }
    let left_width = join.left().schema().fields().len();
    let right_width = join.right().schema().fields().len();
    let projection: Vec<usize> = match &join.projection {
        Some(kept) => kept.iter().map(|index| left_width + index).collect(),
        None => (left_width..left_width + right_width).collect(),
    };
    let inner = join
        .builder()
        .with_type(JoinType::Inner)
        .with_projection(Some(projection))
        .build()?;
    let (before, after) = (join.properties(), inner.properties());
    if inner.schema().fields() != join.schema().fields()
        || !same_partitioning(before.output_partitioning(), after.output_partitioning())
        || before.output_ordering() != after.output_ordering()
    {
        return Ok(None);
    }
    Ok(Some(Arc::new(inner)))
}

/// Whether two partitionings place rows alike (`Partitioning`'s own equality never holds for
/// unknown partitionings).
pub(crate) fn same_partitioning(before: &Partitioning, after: &Partitioning) -> bool {
    match (before, after) {
        (Partitioning::UnknownPartitioning(a), Partitioning::UnknownPartitioning(b)) => a == b,
        _ => before == after,
    }
}

/// Whether the rows of `plan` never repeat the values of the columns `keys` together.
pub(crate) fn unique(plan: &Arc<dyn ExecutionPlan>, keys: &BTreeSet<usize>) -> bool {
    let any = plan.as_any();
    if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
        let group_by = aggregate.group_expr();
        let complete = matches!(
            aggregate.mode(),
            AggregateMode::Final
                | AggregateMode::FinalPartitioned
                | AggregateMode::Single
                | AggregateMode::SinglePartitioned
        );
        // The group columns come first in the output; keys covering them all are unique.
        return complete
            && group_by.is_single()
            && !group_by.expr().is_empty()
            && (0..group_by.expr().len()).all(|index| keys.contains(&index));
    }
    if let Some(filter) = any.downcast_ref::<FilterExec>() {
        let keys = match filter.projection() {
            Some(kept) => keys
                .iter()
                .filter_map(|&key| kept.get(key).copied())
                .collect(),
            None => keys.clone(),
        };
        return unique(filter.input(), &keys);
    }
    if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
        // Only keys that are plain input columns carry over; the others add nothing to prove.
        let keys = keys
            .iter()
            .filter_map(|&key| {
                let expression = &projection.expr().get(key)?.expr;
                expression
                    .as_any()
                    .downcast_ref::<Column>()
                    .map(Column::index)
            })
            .collect();
        return unique(projection.input(), &keys);
    }
    let passes_rows_through = any.is::<RepartitionExec>()
        || any.is::<CoalescePartitionsExec>()
        || any.is::<CooperativeExec>();
    if passes_rows_through {
        return plan
            .children()
            .first()
            .is_some_and(|input| unique(input, keys));
    }
    false
}
