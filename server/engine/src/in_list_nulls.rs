//! Two IN lists on one value that cannot both hold keep their NULL.
//!
//! DataFusion's simplifier merges `a IN (1, 2) AND a IN (3, 4)` into `a IN ()` and then into
//! `false`, and `a NOT IN (1) OR a NOT IN (2)` into `true`. Both are wrong when `a` is NULL:
//! SQL gives NULL there, and `NOT (...)` of it is NULL too, not `true`, so a row with a NULL
//! `a` came back from `WHERE NOT (a IN (1) AND a IN (2))` where PostgreSQL returns none. This
//! analyzer rule, ahead of the optimizer, writes those pairs as what they are: `false` (or
//! `true`) unless `a` is NULL, then NULL. Lists holding a NULL are left alone.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;

#[derive(Debug, Default)]
pub(crate) struct InListNulls;

impl AnalyzerRule for InListNulls {
    fn name(&self) -> &str {
        "fjord_in_list_nulls"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|expression| expression.transform_up(rewrite))
        })
        .map(|transformed| transformed.data)
    }
}

fn rewrite(expression: Expr) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expression else {
        return Ok(Transformed::no(expression));
    };
    let (Expr::InList(first), Expr::InList(second)) = (left.as_ref(), right.as_ref()) else {
        return Ok(Transformed::no(expression));
    };
    if first.expr != second.expr || !literals_only(first) || !literals_only(second) {
        return Ok(Transformed::no(expression));
    }
    let shared = |a: &InList, b: &InList| a.list.iter().any(|item| b.list.contains(item));
    let covered = |a: &InList, b: &InList| a.list.iter().all(|item| b.list.contains(item));
    // The pairs the simplifier turns into a constant, and that constant.
    let constant = match (op, first.negated, second.negated) {
        (Operator::And, false, false) if !shared(first, second) => false,
        (Operator::And, false, true) if covered(first, second) => false,
        (Operator::And, true, false) if covered(second, first) => false,
        (Operator::Or, true, true) if !shared(first, second) => true,
        _ => return Ok(Transformed::no(expression)),
    };
    let value = first.expr.as_ref().clone();
    // NULL when the value is NULL, the constant otherwise.
    let rewritten = if constant {
        Expr::BinaryExpr(BinaryExpr::new(
            Box::new(value.is_not_null()),
            Operator::Or,
            Box::new(lit_bool_null()),
        ))
    } else {
        Expr::BinaryExpr(BinaryExpr::new(
            Box::new(value.is_null()),
            Operator::And,
            Box::new(lit_bool_null()),
        ))
    };
    Ok(Transformed::yes(rewritten))
}

fn lit_bool_null() -> Expr {
    Expr::Literal(ScalarValue::Boolean(None), None)
}

fn literals_only(list: &InList) -> bool {
    !list.list.is_empty()
        && list
            .list
            .iter()
            .all(|item| matches!(item, Expr::Literal(value, _) if !value.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn disjoint_lists_keep_null() {
        let a = || col("a");
        let pair = a()
            .in_list(vec![lit(1), lit(2)], false)
            .and(a().in_list(vec![lit(3)], false));
        let rewritten = rewrite(pair).unwrap();
        assert!(rewritten.transformed);
        assert_eq!(rewritten.data, a().is_null().and(lit_bool_null()));

        let pair = a()
            .in_list(vec![lit(1)], true)
            .or(a().in_list(vec![lit(2)], true));
        assert_eq!(
            rewrite(pair).unwrap().data,
            a().is_not_null().or(lit_bool_null())
        );

        // Overlapping lists are merged correctly by the simplifier: left alone.
        let pair = a()
            .in_list(vec![lit(1), lit(2)], false)
            .and(a().in_list(vec![lit(2)], false));
        assert!(!rewrite(pair).unwrap().transformed);
    }
}
