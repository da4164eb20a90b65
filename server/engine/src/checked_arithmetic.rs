//! Arithmetic that overflows its type is an error, as in PostgreSQL, not a wrapped value.
//!
//! DataFusion's planner builds `+`, `-` and `*` with wrapping kernels: `int_col * int_col` past
//! 2147483647 silently comes out negative. PostgreSQL raises `22003 integer out of range`. The
//! physical expression can check (`BinaryExpr::with_fail_on_overflow`), but nothing in the
//! planner asks for it, so this physical optimizer rule turns it on in the expressions of
//! projections and filters, where arithmetic in a statement's select list and WHERE clause
//! ends up, and in the arguments of aggregates (`sum(a * b)`). The checked kernels differ only
//! on integer overflow (and decimal precision overflow); floats and temporal arithmetic give the
//! same values. Arithmetic inside join conditions is left as DataFusion plans it.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::decimal_arithmetic::{decimal_arithmetic, integer_to_numeric};

#[derive(Debug, Default)]
pub(crate) struct CheckedArithmetic;

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(projection) = node.as_any().downcast_ref::<ProjectionExec>() {
                let mut changed = false;
                let expressions = projection
                    .expr()
                    .iter()
                    .map(|item| {
                        let checked = checked(&item.expr, &projection.input().schema())?;
                        changed |= checked.transformed;
                        Ok(ProjectionExpr {
                            expr: checked.data,
                            alias: item.alias.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                if changed {
                    let rebuilt = ProjectionExec::try_new(expressions, projection.input().clone())?;
                    return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
                }
            } else if let Some(filter) = node.as_any().downcast_ref::<FilterExec>() {
                let predicate = checked(filter.predicate(), &filter.input().schema())?;
                if predicate.transformed {
                    let rebuilt = FilterExecBuilder::from(filter)
                        .with_predicate(predicate.data)
                        .build()?;
                    return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
                }
            } else if let Some(aggregate) = node.as_any().downcast_ref::<AggregateExec>() {
                let mut changed = false;
                let schema = aggregate.input_schema();
                let expressions = aggregate
                    .aggr_expr()
                    .iter()
                    .map(|function| {
                        let mut arguments = Vec::new();
                        let mut any = false;
                        for argument in function.expressions() {
                            let argument = checked(&argument, &schema)?;
                            any |= argument.transformed;
                            arguments.push(argument.data);
                        }
                        let order_by = function
                            .order_bys()
                            .iter()
                            .map(|sort| sort.expr.clone())
                            .collect();
                        Ok(
                            match any.then(|| function.with_new_expressions(arguments, order_by)) {
                                Some(Some(rebuilt)) => {
                                    changed = true;
                                    Arc::new(rebuilt)
                                }
                                _ => function.clone(),
                            },
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                if changed {
                    let rebuilt = aggregate.with_new_aggr_exprs(expressions);
                    return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
                }
            }
            Ok(Transformed::no(node))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "fjord_checked_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expression` with every wrapping `+`, `-` and `*` in it made checking, those on numerics
/// evaluated by [`DecimalArithmetic`](crate::decimal_arithmetic::DecimalArithmetic), which
/// checks a batch at a time, and integers cast to numerics that hold them all widened without
/// checks. `schema` is the input the expression reads.
fn checked(
    expression: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expression.clone().transform_up(|node| {
        if let Some(cast) = node.as_any().downcast_ref::<CastExpr>() {
            return Ok(match integer_to_numeric(cast, schema)? {
                Some(widening) => Transformed::yes(widening),
                None => Transformed::no(node),
            });
        }
        let Some(binary) = node.as_any().downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(node));
        };
        let arithmetic = matches!(
            binary.op(),
            Operator::Plus | Operator::Minus | Operator::Multiply
        );
        if !arithmetic {
            return Ok(Transformed::no(node));
        }
        let rebuilt = BinaryExpr::new(binary.left().clone(), *binary.op(), binary.right().clone())
            .with_fail_on_overflow(true);
        if let Some(decimal) = decimal_arithmetic(&rebuilt, schema)? {
            return Ok(Transformed::yes(decimal));
        }
        if rebuilt == *binary {
            // Checking already.
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn PhysicalExpr>))
    })
}
