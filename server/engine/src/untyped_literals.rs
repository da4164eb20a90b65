//! Quoted literals compared with booleans, as PostgreSQL reads them.
//!
//! In PostgreSQL a quoted literal has no type until its context gives one: in
//! `ix.indisprimary = 'f'` (SQLAlchemy 1.4's index query, which Superset sends) `'f'` is the
//! boolean false. DataFusion types it as text and refuses to compare text with a boolean. This
//! analyzer rule runs before DataFusion's type coercion and turns a string literal compared with
//! (or listed in `IN` against) a boolean expression into a boolean literal, accepting
//! PostgreSQL's spellings (`t`, `true`, `yes`, `on`, `1`, their prefixes, any case). Text that is
//! none of them fails with PostgreSQL's error, `22P02 invalid input syntax for type boolean`.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;

use crate::error::{EngineError, sqlstate};

#[derive(Debug, Default)]
pub(crate) struct UntypedLiterals;

impl AnalyzerRule for UntypedLiterals {
    fn name(&self) -> &str {
        "fjord_untyped_literals"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let schema = expression_schema(&node);
            node.map_expressions(|expression| {
                expression.transform_up(|inner| rewrite(inner, &schema))
            })
        })
        .map(|transformed| transformed.data)
    }
}

/// The schema a plan node's expressions are typed against: its inputs' columns, and for a
/// table scan (whose filters name the table's columns) the table's.
pub(crate) fn expression_schema(node: &LogicalPlan) -> DFSchema {
    let mut schema = merge_schema(&node.inputs());
    if let LogicalPlan::TableScan(scan) = node
        && let Ok(source) =
            DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema())
    {
        schema.merge(&source);
    }
    schema
}

fn rewrite(expression: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let is_boolean = |side: &Expr| matches!(side.get_type(schema), Ok(DataType::Boolean));
    match expression {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison(op) => {
            let (left, right) = match (text_literal(&left), text_literal(&right)) {
                (Some(text), None) if is_boolean(&right) => (Box::new(boolean(text)?), right),
                (None, Some(text)) if is_boolean(&left) => (left, Box::new(boolean(text)?)),
                _ => {
                    return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                        left,
                        op,
                        right,
                    })));
                }
            };
            Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right,
            })))
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) if is_boolean(&expr) && list.iter().any(|item| text_literal(item).is_some()) => {
            let list = list
                .into_iter()
                .map(|item| match text_literal(&item) {
                    Some(text) => boolean(text),
                    None => Ok(item),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Transformed::yes(Expr::InList(InList {
                expr,
                list,
                negated,
            })))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// `=`, `<>`, `<`, `<=`, `>`, `>=` and `IS [NOT] DISTINCT FROM`.
pub(crate) fn is_comparison(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

fn text_literal(expression: &Expr) -> Option<&str> {
    match expression {
        Expr::Literal(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
            _,
        ) => Some(text),
        _ => None,
    }
}

/// PostgreSQL's boolean input: `t`/`f`, `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, and
/// unambiguous prefixes of the words, in any case, with surrounding spaces ignored.
fn boolean(text: &str) -> Result<Expr> {
    let word = text.trim().to_ascii_lowercase();
    let matches = |full: &str, shortest: usize| word.len() >= shortest && full.starts_with(&word);
    let value = if matches("true", 1) || matches("yes", 1) || matches("on", 2) || word == "1" {
        true
    } else if matches("false", 1) || matches("no", 1) || matches("off", 2) || word == "0" {
        false
    } else {
        return Err(DataFusionError::External(Box::new(EngineError::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type boolean: \"{text}\""),
        ))));
    };
    Ok(Expr::Literal(ScalarValue::Boolean(Some(value)), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<bool> {
        match boolean(text).ok()? {
            Expr::Literal(ScalarValue::Boolean(value), _) => value,
            _ => None,
        }
    }

    #[test]
    fn postgres_boolean_spellings() {
        for text in ["t", "TRUE", " yes ", "y", "on", "1", "tr"] {
            assert_eq!(value(text), Some(true), "{text}");
        }
        for text in ["f", "False", "no", "n", "off", "0", "fa"] {
            assert_eq!(value(text), Some(false), "{text}");
        }
        for text in ["o", "2", "maybe", ""] {
            assert_eq!(value(text), None, "{text}");
        }
    }
}
