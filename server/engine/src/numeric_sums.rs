//! `sum` of a bigint is a numeric, as in PostgreSQL, so that it cannot overflow.
//!
//! DataFusion sums a bigint column into a bigint with wrapping additions: past
//! 9223372036854775807 the total silently comes out negative. PostgreSQL's `sum(int8)` returns
//! `numeric`, which holds any such total. This analyzer rule, ahead of DataFusion's type
//! coercion, sums bigint arguments as `numeric(38,0)` (Decimal128: 38 digits, far beyond any
//! sum of 64-bit values) under the aggregate's original name, and recomputes the schemas of the
//! plan above so that the new type flows up. `sum` as a window function (a running total) is
//! treated the same way. Sums of smaller integers stay `bigint`, as PostgreSQL's do.
//!
//! Whether an argument is a bigint is read as PostgreSQL would type it, not as DataFusion does:
//! DataFusion types every integer literal `bigint`, so `sum(CASE WHEN liked THEN 1 ELSE 0 END)`
//! and `sum(int_col + 1)` are bigint expressions to it but integer ones to PostgreSQL (whose sum
//! is then `bigint`). An argument counts as bigint only when a bigint column, an explicit cast to
//! bigint or a literal beyond the integer range takes part in it. An `INSERT` whose rows change
//! type this way gets them cast back to the table's column types, as PostgreSQL's assignment
//! casts do.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::WindowFunctionDefinition;
use datafusion::logical_expr::{DmlStatement, Expr, ExprSchemable, LogicalPlan, WriteOp, cast};
use datafusion::optimizer::AnalyzerRule;

use crate::untyped_literals::expression_schema;

/// The type bigint sums are computed in: `numeric(38,0)`.
const SUM_TYPE: DataType = DataType::Decimal128(38, 0);

#[derive(Debug, Default)]
pub(crate) struct NumericSums;

impl AnalyzerRule for NumericSums {
    fn name(&self) -> &str {
        "fjord_numeric_sums"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // Once an aggregate's type changed, every node visited after it (its ancestors among
        // them) recomputes its schema from its inputs.
        let mut changed = false;
        plan.transform_up_with_subqueries(|node| {
            if changed && let LogicalPlan::Dml(dml) = &node {
                return insert_cast_to_table(dml).map(Transformed::yes);
            }
            let node = if let LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) = &node {
                let schema = expression_schema(&node);
                let rewritten =
                    node.map_expressions(|expression| numeric_sum(expression, &schema))?;
                changed |= rewritten.transformed;
                rewritten.data
            } else {
                node
            };
            if changed {
                node.recompute_schema().map(Transformed::yes)
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|transformed| transformed.data)
    }
}

/// `sum(bigint)` (an aggregate or window function of the node, aliased or not) as
/// `sum(CAST(.. AS numeric(38,0)))` under its original name.
fn numeric_sum(expression: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let (inner, alias) = match expression {
        Expr::Alias(alias) => {
            let name = alias.name.clone();
            let relation = alias.relation.clone();
            (*alias.expr, Some((relation, name)))
        }
        other => (other, None),
    };
    let (name, args) = match &inner {
        Expr::AggregateFunction(function) => (function.func.name(), &function.params.args),
        Expr::WindowFunction(window) => match &window.fun {
            WindowFunctionDefinition::AggregateUDF(function) => {
                (function.name(), &window.params.args)
            }
            WindowFunctionDefinition::WindowUDF(_) => {
                return Ok(Transformed::no(restore(inner, alias)));
            }
        },
        _ => return Ok(Transformed::no(restore(inner, alias))),
    };
    let is_bigint_sum = name == "sum"
        && args.len() == 1
        && matches!(args[0].get_type(schema), Ok(DataType::Int64))
        && has_bigint_source(&args[0], schema);
    if !is_bigint_sum {
        return Ok(Transformed::no(restore(inner, alias)));
    }
    let name = inner.schema_name().to_string();
    let summed = match inner {
        Expr::AggregateFunction(mut function) => {
            function.params.args[0] = cast(function.params.args[0].clone(), SUM_TYPE);
            Expr::AggregateFunction(function)
        }
        Expr::WindowFunction(mut window) => {
            window.params.args[0] = cast(window.params.args[0].clone(), SUM_TYPE);
            Expr::WindowFunction(window)
        }
        other => other,
    };
    Ok(Transformed::yes(match alias {
        Some(alias) => restore(summed, Some(alias)),
        None => summed.alias(name),
    }))
}

/// Whether the value of `expression` is a bigint in PostgreSQL's typing: a bigint column, an
/// explicit cast to bigint (before type coercion every cast is the statement's own) or a literal
/// beyond the integer range gives it, through arithmetic, `CASE` results and function
/// arguments. Conditions (`CASE WHEN big_col > 1 THEN 1 ...`) do not.
fn has_bigint_source(expression: &Expr, schema: &DFSchema) -> bool {
    match expression {
        Expr::Column(_) => matches!(expression.get_type(schema), Ok(DataType::Int64)),
        Expr::Cast(cast) => cast.data_type == DataType::Int64,
        Expr::TryCast(cast) => cast.data_type == DataType::Int64,
        Expr::Literal(ScalarValue::Int64(Some(value)), _) => i32::try_from(*value).is_err(),
        Expr::Literal(..) | Expr::Placeholder(_) => false,
        Expr::Alias(alias) => has_bigint_source(&alias.expr, schema),
        Expr::Negative(inner) => has_bigint_source(inner, schema),
        Expr::BinaryExpr(binary) => {
            has_bigint_source(&binary.left, schema) || has_bigint_source(&binary.right, schema)
        }
        Expr::Case(case) => {
            case.when_then_expr
                .iter()
                .any(|(_, then)| has_bigint_source(then, schema))
                || case
                    .else_expr
                    .as_deref()
                    .is_some_and(|other| has_bigint_source(other, schema))
        }
        Expr::ScalarFunction(function) => function
            .args
            .iter()
            .any(|argument| has_bigint_source(argument, schema)),
        // Anything else typed bigint (a subquery, a window value) is taken at its word.
        _ => true,
    }
}

/// An `INSERT` whose rows are cast to the target table's column types where they differ.
fn insert_cast_to_table(dml: &DmlStatement) -> Result<LogicalPlan> {
    let target = dml.target.schema();
    let input = dml.input.as_ref();
    let differs = input.schema().fields().len() == target.fields().len()
        && input
            .schema()
            .fields()
            .iter()
            .zip(target.fields())
            .any(|(have, want)| have.data_type() != want.data_type());
    if !differs || !matches!(dml.op, WriteOp::Insert(_)) {
        return LogicalPlan::Dml(dml.clone()).recompute_schema();
    }
    crate::not_null::map_inserted_columns(dml, input, |column, have, want| {
        if have.data_type() == want.data_type() {
            column
        } else {
            cast(column, want.data_type().clone()).alias(have.name())
        }
    })
}

fn restore(
    expression: Expr,
    alias: Option<(Option<datafusion::common::TableReference>, String)>,
) -> Expr {
    match alias {
        Some((relation, name)) => expression.alias_qualified(relation, name),
        None => expression,
    }
}
