//! A hash join whose probe side is grouped is keyed on the group columns alone, the other
//! equalities checked as its filter, so that its run-time filter reaches below the grouping.
//!
//! DataFusion pushes the keys a hash join collected on its build side into the probe side's
//! scans, and through an aggregation only when the filter reads group columns alone. TPC-H
//! q02's correlated `ps_supplycost = (SELECT min(ps_supplycost) ... WHERE p_partkey =
//! ps_partkey)` plans as a join on `(p_partkey, ps_supplycost) = (ps_partkey, min)`: its filter
//! reads `min` too, so it stopped at the aggregation, and the minimum was computed for all 117k
//! parts with European suppliers (800k partsupp rows joined) to keep the 642 rows of 747 parts.
//! Keyed on `ps_partkey` alone, the join's filter carries those parts' keys into the partsupp
//! scan.
//!
//! The rewrite keeps the join's result: a key equality and the same equality in the join's
//! filter keep the same row pairs when nulls match nothing. It is made only for inner joins
//! that collect their build side whole (a partitioned join's inputs are split by all its keys),
//! and only when the probe side is unique on the remaining keys (an aggregation grouped by
//! them): each probe row then finds at most the build rows of its own group, so checking the
//! moved equalities costs no more than the build side's size.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::{JoinSide, JoinType, NullEquality, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

use crate::unique_semi_joins::{rewrite_hash_joins, same_partitioning, unique};

#[derive(Debug, Default)]
pub(crate) struct GroupKeyJoins;

impl PhysicalOptimizerRule for GroupKeyJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_hash_joins(plan, config, keyed_on_groups)
    }

    fn name(&self) -> &str {
        "GroupKeyJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `join` keyed on the fewest of its keys on which its probe side (right) is unique, the
/// others moved to its filter; `None` if no key can move.
fn keyed_on_groups(join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.join_type() != JoinType::Inner
        || *join.partition_mode() != PartitionMode::CollectLeft
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.null_aware
        || join.on().len() < 2
    {
        return Ok(None);
    }
    // Each key as its two columns, where both are plain columns.
    let columns: Vec<Option<(Column, Column)>> = join
        .on()
        .iter()
        .map(|(left, right)| {
            let left = left.as_any().downcast_ref::<Column>()?;
            let right = right.as_any().downcast_ref::<Column>()?;
            Some((left.clone(), right.clone()))
        })
        .collect();
    let right_keys = |kept: &[bool]| -> BTreeSet<usize> {
        columns
            .iter()
            .zip(kept)
            .filter(|(_, kept)| **kept)
            .filter_map(|(pair, _)| pair.as_ref().map(|(_, right)| right.index()))
            .collect()
    };
    let mut kept = vec![true; columns.len()];
    if !unique(join.right(), &right_keys(&kept)) {
        return Ok(None);
    }
    for index in 0..columns.len() {
        if columns[index].is_none() {
            continue;
        }
        kept[index] = false;
        if !unique(join.right(), &right_keys(&kept)) {
            kept[index] = true;
        }
    }
    if kept.iter().all(|kept| *kept) || !kept.iter().any(|kept| *kept) {
        return Ok(None);
    }

    // The filter: the join's own, if any, and each moved equality, over an intermediate row of
    // the columns they read.
    let (mut expression, mut indices, mut fields) = match join.filter() {
        Some(filter) => (
            Some(filter.expression().clone()),
            filter.column_indices().to_vec(),
            filter.schema().fields().iter().cloned().collect::<Vec<_>>(),
        ),
        None => (None, Vec::new(), Vec::new()),
    };
    let left_schema = join.left().schema();
    let right_schema = join.right().schema();
    let mut on = Vec::new();
    for ((pair, kept), key) in columns.iter().zip(&kept).zip(join.on()) {
        let Some((left, right)) = pair.as_ref().filter(|_| !kept) else {
            on.push(key.clone());
            continue;
        };
        let mut side_column = |column: &Column, side: JoinSide, field: &Field| {
            let position = indices.len();
            indices.push(ColumnIndex {
                index: column.index(),
                side,
            });
            fields.push(Arc::new(
                field
                    .clone()
                    .with_name(format!("{}_{position}", field.name())),
            ));
            Arc::new(Column::new(fields[position].name(), position)) as Arc<dyn PhysicalExpr>
        };
        let left = side_column(left, JoinSide::Left, left_schema.field(left.index()));
        let right = side_column(right, JoinSide::Right, right_schema.field(right.index()));
        let equal = Arc::new(BinaryExpr::new(left, Operator::Eq, right)) as Arc<dyn PhysicalExpr>;
        expression = Some(match expression {
            Some(before) => Arc::new(BinaryExpr::new(before, Operator::And, equal)),
            None => equal,
        });
    }
    let Some(expression) = expression else {
        return Ok(None);
    };
    let filter = JoinFilter::new(expression, indices, Arc::new(Schema::new(fields)));
    let keyed = join
        .builder()
        .with_on(on)
        .with_filter(Some(filter))
        .build()?;
    let (before, after) = (join.properties(), keyed.properties());
    if keyed.schema().fields() != join.schema().fields()
        || !same_partitioning(before.output_partitioning(), after.output_partitioning())
        || before.output_ordering() != after.output_ordering()
    {
        return Ok(None);
    }
    Ok(Some(Arc::new(keyed)))
}
