//! The conditions of a filter tested most selective first.
//!
//! A filter `a AND b AND c` is evaluated left to right: `a` on every row, then `b` on every
//! row, unless `a` kept under a fifth of them, in which case `b` sees only those (DataFusion's
//! short circuit). So the written order decides the cost: TPC-H q12 writes the condition that
//! keeps 28% of lineitem first and the date range that keeps 15% last, and its filter cost
//! twice what the reverse order costs. A filter whose conditions can all be evaluated on any
//! row without error is therefore evaluated in the order of what each condition kept on a
//! sample batch: the first batch, then every `RESAMPLE_EVERY`th, so a change along the data
//! (files sorted by date) reorders it again. The rows kept are the same in any order.
//!
//! Conditions that could fail on some row (a division, a cast, a function) keep the written
//! order, so a guard such as `x <> 0 AND 10 / x > 1` is never evaluated the other way round.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal, NotExpr,
};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use parking_lot::Mutex;

use crate::untyped_literals::is_comparison;

/// How many batches run in the order a sample chose before the next sample.
const RESAMPLE_EVERY: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct ConjunctOrder;

impl PhysicalOptimizerRule for ConjunctOrder {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.as_any().downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let predicate = filter.predicate();
            let conjuncts = units(predicate);
            if conjuncts.len() < 2 || !conjuncts.iter().all(cannot_fail) {
                return Ok(Transformed::no(node));
            }
            let ordered = Arc::new(OrderedConjunction {
                written: predicate.clone(),
                conjuncts,
                state: Mutex::new(None),
                batches: AtomicUsize::new(0),
            });
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(ordered)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "fjord_conjunct_order"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

type Unit = (Option<usize>, Vec<Arc<dyn PhysicalExpr>>);

/// The conditions of `predicate`, those on one same column joined into one: the two ends of
/// a range keep far fewer rows together than either alone (in q12, 15% against 43% and 70%),
/// so they are sampled, and placed, as one.
fn units(predicate: &Arc<dyn PhysicalExpr>) -> Vec<Arc<dyn PhysicalExpr>> {
    // Each unit: the one column its conditions read (if one), and the conditions.
    let mut units: Vec<Unit> = Vec::new();
    for conjunct in split_conjunction(predicate) {
        let columns = collect_columns(conjunct);
        let single = (columns.len() == 1)
            .then(|| columns.iter().next().map(Column::index))
            .flatten();
        match units
            .iter_mut()
            .find(|(column, _)| single.is_some() && *column == single)
        {
            Some((_, members)) => members.push(conjunct.clone()),
            None => units.push((single, vec![conjunct.clone()])),
        }
    }
    units
        .into_iter()
        .map(|(_, members)| conjunction(members))
        .collect()
}

/// Whether `expression` evaluates without error on any row: columns, constants, comparisons,
/// AND/OR/NOT, IN lists, LIKE and IS [NOT] NULL, and nothing else.
fn cannot_fail(expression: &Arc<dyn PhysicalExpr>) -> bool {
    let mut safe = true;
    let _ = expression.apply(|node| {
        let any = node.as_any();
        let ok = any.is::<Column>()
            || any.is::<Literal>()
            || any.is::<InListExpr>()
            || any.is::<IsNullExpr>()
            || any.is::<IsNotNullExpr>()
            || any.is::<LikeExpr>()
            || any.is::<NotExpr>()
            || any.downcast_ref::<BinaryExpr>().is_some_and(|binary| {
                is_comparison(*binary.op()) || binary.op().is_logic_operator()
            });
        if ok {
            Ok(TreeNodeRecursion::Continue)
        } else {
            safe = false;
            Ok(TreeNodeRecursion::Stop)
        }
    });
    safe
}

/// A filter's conditions, evaluated as one AND chain in the order the last sample chose.
#[derive(Debug)]
pub(crate) struct OrderedConjunction {
    /// The predicate as planned: shown in plans, and what the chain is equivalent to.
    written: Arc<dyn PhysicalExpr>,
    conjuncts: Vec<Arc<dyn PhysicalExpr>>,
    /// The chain in the chosen order, once a sample chose one.
    state: Mutex<Option<Arc<dyn PhysicalExpr>>>,
    batches: AtomicUsize,
}

impl PartialEq for OrderedConjunction {
    fn eq(&self, other: &Self) -> bool {
        self.written.eq(&other.written)
    }
}

impl Eq for OrderedConjunction {}

impl Hash for OrderedConjunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.written.hash(state);
    }
}

impl fmt::Display for OrderedConjunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.written, f)
    }
}

impl OrderedConjunction {
    /// Each condition evaluated on all of `batch`, and the chain of them ordered by the rows
    /// each kept (fewest first; ties keep the written order).
    fn sample(&self, batch: &RecordBatch) -> Result<Arc<dyn PhysicalExpr>> {
        let mut kept = Vec::with_capacity(self.conjuncts.len());
        for (index, conjunct) in self.conjuncts.iter().enumerate() {
            let count = match conjunct.evaluate(batch)? {
                ColumnarValue::Array(array) => match array.data_type() {
                    DataType::Boolean => array.as_boolean().true_count(),
                    _ => batch.num_rows(),
                },
                ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => batch.num_rows(),
                ColumnarValue::Scalar(_) => 0,
            };
            kept.push((count, index));
        }
        kept.sort();
        Ok(conjunction(
            kept.into_iter()
                .map(|(_, index)| self.conjuncts[index].clone()),
        ))
    }
}

impl PhysicalExpr for OrderedConjunction {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.written.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.written.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let seen = self.batches.fetch_add(1, AtomicOrdering::Relaxed);
        let chosen = self.state.lock().clone();
        let chain = match chosen {
            Some(chain) if !seen.is_multiple_of(RESAMPLE_EVERY) => chain,
            _ if batch.num_rows() == 0 => return self.written.evaluate(batch),
            _ => {
                let chain = self.sample(batch)?;
                *self.state.lock() = Some(chain.clone());
                chain
            }
        };
        chain.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.written]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        // A rewrite of the predicate (a projection pushed through the filter, say) is taken as
        // a new written predicate, sampled afresh.
        let written = children.pop().ok_or_else(|| {
            datafusion::common::DataFusionError::Internal(
                "an ordered conjunction takes its predicate".into(),
            )
        })?;
        let conjuncts = units(&written);
        Ok(Arc::new(OrderedConjunction {
            written,
            conjuncts,
            state: Mutex::new(None),
            batches: AtomicUsize::new(0),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.written.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::lit;

    fn column(name: &str, index: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(name, index))
    }

    fn compare(
        left: Arc<dyn PhysicalExpr>,
        op: Operator,
        right: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(left, op, right))
    }

    #[test]
    fn the_most_selective_condition_goes_first_and_the_rows_kept_do_not_change() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]));
        let a: ArrayRef = Arc::new(Int64Array::from_iter(
            (0..1000).map(|v| (v % 7 != 0).then_some(v)),
        ));
        let b: ArrayRef = Arc::new(Int64Array::from_iter_values((0..1000).map(|v| v % 10)));
        let batch = RecordBatch::try_new(schema, vec![a, b]).unwrap();
        // Keeps most rows, then keeps a tenth.
        let broad = compare(column("a", 0), Operator::Gt, lit(5i64));
        let narrow = compare(column("b", 1), Operator::Eq, lit(3i64));
        let written = conjunction([broad.clone(), narrow.clone()]);
        let ordered = OrderedConjunction {
            written: written.clone(),
            conjuncts: vec![broad, narrow.clone()],
            state: Mutex::new(None),
            batches: AtomicUsize::new(0),
        };
        let chain = ordered.sample(&batch).unwrap();
        let first = split_conjunction(&chain)[0].clone();
        assert_eq!(first.to_string(), narrow.to_string());
        let mask = |value: ColumnarValue| -> BooleanArray {
            let array = value.into_array(batch.num_rows()).unwrap();
            let mask = array.as_boolean().clone();
            // Rows a filter keeps: true, not null.
            BooleanArray::from_iter(mask.iter().map(|v| Some(v == Some(true))))
        };
        for _ in 0..(RESAMPLE_EVERY + 2) {
            assert_eq!(
                mask(ordered.evaluate(&batch).unwrap()),
                mask(written.evaluate(&batch).unwrap())
            );
        }
        assert_eq!(ordered.to_string(), written.to_string());
    }

    #[test]
    fn the_ends_of_a_range_are_one_unit() {
        let low = compare(column("d", 2), Operator::GtEq, lit(10i64));
        let high = compare(column("d", 2), Operator::Lt, lit(20i64));
        let other = compare(column("a", 0), Operator::Lt, column("b", 1));
        let predicate = conjunction([low.clone(), other.clone(), high.clone()]);
        let found: Vec<String> = units(&predicate).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            found,
            [conjunction([low, high]).to_string(), other.to_string()]
        );
    }

    #[test]
    fn conditions_that_could_fail_keep_their_order() {
        let guard = compare(column("a", 0), Operator::NotEq, lit(0i64));
        let division = compare(
            compare(lit(10i64), Operator::Divide, column("a", 0)),
            Operator::Gt,
            lit(1i64),
        );
        assert!(cannot_fail(&guard));
        assert!(!cannot_fail(&division));
    }
}
