//! Integer literals in result columns typed `integer`, as PostgreSQL types them.
//!
//! PostgreSQL gives an integer literal the type `integer` (int4) when it fits, and `bigint`
//! otherwise; DataFusion makes every one `bigint`. Clients see the difference in result columns:
//! node-postgres hands a `bigint` over as a string (`SELECT 1` gives `"1"`), pgJDBC's
//! `getObject` returns a `Long`, and `CREATE TABLE ... AS SELECT 0 AS flag` makes a `long`
//! column. So a select item (or a `VALUES` cell) that is such a literal, possibly negated or in
//! parentheses, or a `CASE` whose every result is one, is cast to `integer` in the statement
//! before planning.
//!
//! Only result columns are retyped, never literals inside expressions: DataFusion wraps integer
//! arithmetic around on overflow where PostgreSQL raises an error, so `50000 * 50000` must stay
//! `bigint` arithmetic to give the right number. Column names are unaffected: they come from
//! the statement as the client wrote it (see `column_names`).

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, Query, SelectItem, SetExpr, Statement, UnaryOperator, Value,
    VisitMut, VisitorMut,
};

/// Whether the statement's result columns are retyped: queries, and the query of
/// `CREATE TABLE ... AS` (whose columns take the query's types).
pub(crate) fn applies(statement: &DfStatement) -> bool {
    let DfStatement::Statement(statement) = statement else {
        return false;
    };
    match statement.as_ref() {
        Statement::Query(_) => true,
        Statement::CreateTable(create) => create.query.is_some(),
        _ => false,
    }
}

/// Casts the integer-literal result columns of every query in `statement` (subqueries, CTEs and
/// set operations included) to `integer`.
pub(crate) fn retype(statement: &mut DfStatement) {
    struct Retype;
    impl VisitorMut for Retype {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            retype_body(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    if let DfStatement::Statement(statement) = statement {
        let _ = statement.visit(&mut Retype);
    }
}

fn retype_body(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in select.projection.iter_mut() {
                match item {
                    SelectItem::UnnamedExpr(expression)
                    | SelectItem::ExprWithAlias {
                        expr: expression, ..
                    } => retype_expression(expression),
                    _ => {}
                }
            }
        }
        SetExpr::Values(values) => {
            for row in values.rows.iter_mut() {
                row.iter_mut().for_each(retype_expression);
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            retype_body(left);
            retype_body(right);
        }
        // A nested query is visited as a query of its own.
        _ => {}
    }
}

fn retype_expression(expression: &mut Expr) {
    if is_int4(expression) {
        let inner = std::mem::replace(expression, Expr::value(Value::Null));
        *expression = Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: Box::new(inner),
            data_type: DataType::Int4(None),
            array: false,
            format: None,
        };
    }
}

/// An integer literal in int4's range (`7`, `-7`, `(7)`), or a `CASE` whose results are all
/// such literals or NULL, with at least one literal.
fn is_int4(expression: &Expr) -> bool {
    match expression {
        Expr::Case {
            conditions,
            else_result,
            ..
        } => {
            let mut results = conditions
                .iter()
                .map(|when| &when.result)
                .chain(else_result.as_deref());
            let mut literals = 0;
            let all = results.all(|result| {
                if is_null(result) {
                    true
                } else if literal_value(result).is_some_and(fits_int4) {
                    literals += 1;
                    true
                } else {
                    false
                }
            });
            all && literals > 0
        }
        other => literal_value(other).is_some_and(fits_int4),
    }
}

fn fits_int4(value: i64) -> bool {
    i32::try_from(value).is_ok()
}

/// The value of an integer literal, negated or parenthesized any number of times.
fn literal_value(expression: &Expr) -> Option<i64> {
    match expression {
        Expr::Value(value) => match &value.value {
            // `1L` (a "long" literal) is another dialect's; Postgres has no such suffix.
            Value::Number(digits, false) => digits.parse::<i64>().ok(),
            _ => None,
        },
        Expr::Nested(inner) => literal_value(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => literal_value(expr)?.checked_neg(),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => literal_value(expr),
        _ => None,
    }
}

fn is_null(expression: &Expr) -> bool {
    match expression {
        Expr::Value(value) => matches!(value.value, Value::Null),
        Expr::Nested(inner) => is_null(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    fn retyped(sql: &str) -> String {
        let mut statement = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
            .unwrap()
            .pop_front()
            .unwrap();
        if applies(&statement) {
            retype(&mut statement);
        }
        statement.to_string()
    }

    #[test]
    fn integer_literal_results_become_int4() {
        assert_eq!(retyped("SELECT 1"), "SELECT 1::INT4");
        assert_eq!(
            retyped("SELECT -7 AS x, (3)"),
            "SELECT -7::INT4 AS x, (3)::INT4"
        );
        assert_eq!(
            retyped("SELECT CASE WHEN a THEN 1 ELSE NULL END FROM t"),
            "SELECT CASE WHEN a THEN 1 ELSE NULL END::INT4 FROM t"
        );
        assert_eq!(
            retyped("SELECT * FROM (VALUES (1, 'a')) AS v"),
            "SELECT * FROM (VALUES (1::INT4, 'a')) AS v"
        );
        assert_eq!(
            retyped("SELECT x FROM (SELECT 2 AS x UNION ALL SELECT 3) AS s"),
            "SELECT x FROM (SELECT 2::INT4 AS x UNION ALL SELECT 3::INT4) AS s"
        );
        assert_eq!(
            retyped("CREATE TABLE t AS SELECT 0 AS flag"),
            "CREATE TABLE t AS SELECT 0::INT4 AS flag"
        );
    }

    #[test]
    fn other_literals_and_positions_are_left_alone() {
        // Too large for int4, a decimal, arithmetic (overflow must not wrap), and positions.
        assert_eq!(retyped("SELECT 2147483648"), "SELECT 2147483648");
        assert_eq!(retyped("SELECT 1.5"), "SELECT 1.5");
        assert_eq!(retyped("SELECT 50000 * 50000"), "SELECT 50000 * 50000");
        assert_eq!(
            retyped("SELECT a FROM t WHERE b = 1 GROUP BY 1 ORDER BY 1 LIMIT 1"),
            "SELECT a FROM t WHERE b = 1 GROUP BY 1 ORDER BY 1 LIMIT 1"
        );
        assert_eq!(
            retyped("SELECT CASE WHEN a THEN 1 ELSE b END FROM t"),
            "SELECT CASE WHEN a THEN 1 ELSE b END FROM t"
        );
        assert_eq!(
            retyped("INSERT INTO t VALUES (1)"),
            "INSERT INTO t VALUES (1)"
        );
    }
}
