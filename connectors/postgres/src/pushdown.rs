//! Whole-plan pushdown: the parts of a query that only touch one Postgres catalog become one
//! statement that Postgres runs.
//!
//! An optimizer rule, run after DataFusion's own, looks for the largest sub-plans whose tables
//! all live in one Postgres database and that contain work worth handing over (an aggregate, a
//! join or a `DISTINCT`), and replaces each with a [`PostgresQuery`] node holding the SQL. A
//! `Sort` with a fetch (`ORDER BY ... LIMIT n`) sends its input with `ORDER BY ... LIMIT n`,
//! and keeps sorting the `n` rows in DataFusion, so the order stays DataFusion's.
//!
//! Nothing is pushed unless it means exactly the same in both engines. Every node kind, function
//! and operator is on an allow-list with the argument types it is allowed for; the rest of the
//! plan stays in DataFusion. The SQL is built as nested derived tables whose columns are named
//! by position (`c0`, `c1`, ...), so names from the plan never reach the statement and each
//! level's column types are exactly the Arrow types DataFusion expects: every computed value is
//! cast to the Postgres type of its Arrow type, text is compared with `COLLATE "C"` (byte order,
//! as DataFusion compares), and values fjord shows as text (uuid, jsonb, unmapped types) are
//! read as text before anything else sees them.
//!
//! Results come back through the same binary COPY path as table scans, over one connection.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DFSchemaRef, NullEquality, Result, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{AggregateFunction, Alias, Case, Cast, Sort as SortExpr};
use datafusion::logical_expr::logical_plan::{
    Aggregate, Distinct, Extension, FetchType, Join, JoinType, Limit, Projection, SkipType, Sort,
    TableScan,
};
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, ExprSchemable, Like, LogicalPlan, Operator, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use crate::PostgresTable;
use crate::pool::Pool;
use crate::scan::PostgresScanExec;
use crate::shape::ShapeCheck;
use crate::sql::{
    FilterTranslator, date_text, decimal_text, escape_clause, qualified_table, quote_identifier,
    quote_literal, timestamp_text,
};
use crate::types::{PgColumn, PgKind};

/// The optimizer rule; add it after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct PostgresPushdown;

impl OptimizerRule for PostgresPushdown {
    fn name(&self) -> &str {
        "postgres_pushdown"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        push_down(plan)
    }
}

/// Replaces the largest pushable sub-plans, top down.
fn push_down(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if let Some(pushed) = try_push(&plan) {
        return Ok(Transformed::yes(pushed));
    }
    plan.map_children(push_down)
}

fn try_push(plan: &LogicalPlan) -> Option<LogicalPlan> {
    if let LogicalPlan::Sort(sort) = plan {
        return push_top_n(sort);
    }
    if !worth_pushing(plan) {
        return None;
    }
    let mut builder = Builder::default();
    let sql = builder.relation(plan)?;
    let few_rows = plan
        .max_rows()
        .is_some_and(|rows| rows <= crate::scan::FEW_ROWS);
    builder.node(sql, plan.schema().clone(), few_rows)
}

/// `ORDER BY ... LIMIT n` over a pushable input: Postgres sorts and cuts; the sort stays in
/// the plan over the `n` rows so that the order and ties are DataFusion's.
fn push_top_n(sort: &Sort) -> Option<LogicalPlan> {
    let fetch = sort.fetch?;
    let mut builder = Builder::default();
    let input = builder.relation(&sort.input)?;
    let alias = builder.alias();
    let schema = sort.input.schema();
    let scope = Scope::single(&alias, schema);
    let keys = sort
        .expr
        .iter()
        .map(|key| scope.sort_key(key))
        .collect::<Option<Vec<_>>>()?;
    let sql = format!(
        "SELECT * FROM ({input}) AS {alias} ORDER BY {} LIMIT {fetch}",
        keys.join(", ")
    );
    let node = builder.node(sql, schema.clone(), fetch <= crate::scan::FEW_ROWS)?;
    Some(LogicalPlan::Sort(Sort {
        expr: sort.expr.clone(),
        input: Arc::new(node),
        fetch: sort.fetch,
    }))
}

/// Plain scans (with their filters, projections and limits) already go to Postgres, in
/// parallel ranges where that pays; a whole statement is sent only when it also aggregates,
/// joins or removes duplicates there.
fn worth_pushing(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found |= matches!(
            node,
            LogicalPlan::Aggregate(_) | LogicalPlan::Join(_) | LogicalPlan::Distinct(_)
        );
        Ok(if found {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    found
}

/// Builds one statement; all its tables must come from one catalog (one pool).
#[derive(Default)]
struct Builder {
    source: Option<(String, Arc<Pool>, usize)>,
    aliases: usize,
    /// Reused shapes of the tables read, for the scan to confirm.
    checks: Vec<ShapeCheck>,
}

impl Builder {
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("s{}", self.aliases)
    }

    fn node(&self, sql: String, schema: DFSchemaRef, few_rows: bool) -> Option<LogicalPlan> {
        let (catalog, pool, batch_size) = self.source.clone()?;
        // Every output column must be decodable as the Arrow type the plan expects.
        for field in schema.fields() {
            kind_for(field.data_type())?;
        }
        Some(LogicalPlan::Extension(Extension {
            node: Arc::new(PostgresQuery {
                catalog,
                pool,
                batch_size,
                sql,
                schema,
                checks: self.checks.clone(),
                few_rows,
            }),
        }))
    }

    /// A `SELECT` whose output columns are `c0, c1, ...` in the order of `plan`'s schema, each
    /// of the Postgres type of its Arrow type; `None` if any part cannot be pushed exactly.
    fn relation(&mut self, plan: &LogicalPlan) -> Option<String> {
        match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::SubqueryAlias(alias) => self.relation(&alias.input),
            LogicalPlan::Projection(projection) => self.projection(projection),
            LogicalPlan::Filter(filter) => {
                let input = self.relation(&filter.input)?;
                let alias = self.alias();
                let scope = Scope::single(&alias, filter.input.schema());
                let predicate = scope.predicate(&filter.predicate)?;
                Some(format!(
                    "SELECT * FROM ({input}) AS {alias} WHERE {predicate}"
                ))
            }
            LogicalPlan::Aggregate(aggregate) => self.aggregate(aggregate),
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                // Floats and intervals: equal values differ between the engines (-0 and 0,
                // '1 day' and '24 hours').
                if !input
                    .schema()
                    .fields()
                    .iter()
                    .all(|field| groupable(field.data_type()))
                {
                    return None;
                }
                let input_sql = self.relation(input)?;
                let alias = self.alias();
                Some(format!("SELECT DISTINCT * FROM ({input_sql}) AS {alias}"))
            }
            LogicalPlan::Limit(limit) => self.limit(limit),
            _ => None,
        }
    }

    fn scan(&mut self, scan: &TableScan) -> Option<String> {
        let provider = source_as_provider(&scan.source).ok()?;
        let table = provider.as_any().downcast_ref::<PostgresTable>()?;
        match &self.source {
            None => {
                self.source = Some((table.catalog.clone(), table.pool.clone(), table.batch_size))
            }
            Some((_, pool, _)) if Arc::ptr_eq(pool, &table.pool) => {}
            Some(_) => return None,
        }
        if let Some(check) = &table.check
            && !self
                .checks
                .iter()
                .any(|c| c.schema == check.schema && c.table == check.table)
        {
            self.checks.push(check.clone());
        }
        let indices: Vec<usize> = match &scan.projection {
            Some(projection) => projection.clone(),
            None => (0..table.columns.len()).collect(),
        };
        let mut columns = Vec::with_capacity(indices.len());
        for (position, &index) in indices.iter().enumerate() {
            let column = table.columns.get(index)?;
            let name = quote_identifier(&column.name);
            // Each column is read as the Postgres type of its Arrow type, so comparisons above
            // see the values DataFusion would.
            // Text is read under the "C" collation, so that equality, grouping and DISTINCT
            // are byte-wise whatever the column's collation. Values fjord reads as NULL (NaN
            // and infinite numerics, infinite timestamps) are NULL here too.
            let value = match &column.kind {
                // char(n) values are padded; Postgres drops the padding in every conversion
                // to text and ignores it in comparisons: not pushed.
                PgKind::Text if column.is_bpchar() => return None,
                PgKind::Text if column.type_name == "text" => format!("{name} COLLATE \"C\""),
                PgKind::Text | PgKind::Jsonb | PgKind::Uuid | PgKind::AsText => {
                    format!("{name}::text COLLATE \"C\"")
                }
                PgKind::Oid => format!("{name}::int8"),
                PgKind::Numeric { precision, scale } if column.type_name == "numeric" => format!(
                    "CASE WHEN {name}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL \
                     ELSE {name}::numeric({precision},{scale}) END"
                ),
                PgKind::Numeric { .. } => format!("NULLIF({name}, 'NaN')"),
                PgKind::Timestamp | PgKind::TimestampTz => {
                    format!("NULLIF(NULLIF({name}, 'infinity'), '-infinity')")
                }
                _ => name,
            };
            columns.push(format!("{value} AS c{position}"));
        }
        if columns.is_empty() {
            // `SELECT FROM t` is valid Postgres; an empty select list keeps the row count.
            columns.push(String::new());
        }
        let mut sql = format!(
            "SELECT {} FROM {}",
            columns.join(", "),
            qualified_table(&table.schema_name, &table.table_name)
        );
        let translator = FilterTranslator {
            columns: &table.columns,
        };
        let conditions = scan
            .filters
            .iter()
            .map(|filter| translator.translate(filter))
            .collect::<Option<Vec<_>>>()?;
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(fetch) = scan.fetch {
            sql.push_str(&format!(" LIMIT {fetch}"));
        }
        Some(sql)
    }

    fn projection(&mut self, projection: &Projection) -> Option<String> {
        let input = self.relation(&projection.input)?;
        let alias = self.alias();
        let scope = Scope::single(&alias, projection.input.schema());
        let mut items = Vec::with_capacity(projection.expr.len());
        for (index, expr) in projection.expr.iter().enumerate() {
            let field = projection.schema.field(index);
            items.push(format!(
                "{} AS c{index}",
                scope.output(expr, field.data_type())?
            ));
        }
        Some(format!(
            "SELECT {} FROM ({input}) AS {alias}",
            items.join(", ")
        ))
    }

    fn aggregate(&mut self, aggregate: &Aggregate) -> Option<String> {
        let input = self.relation(&aggregate.input)?;
        let alias = self.alias();
        let scope = Scope::single(&alias, aggregate.input.schema());
        let mut items = Vec::new();
        let mut groups = Vec::new();
        for (index, expr) in aggregate.group_expr.iter().enumerate() {
            if matches!(expr, Expr::GroupingSet(_)) {
                return None;
            }
            let data_type = aggregate.schema.field(index).data_type();
            // A constant key (`GROUP BY true`) reads as a column position or is refused.
            if !groupable(data_type) || matches!(expr, Expr::Literal(..)) {
                return None;
            }
            let sql = scope.expr(expr)?;
            items.push(format!("{sql} AS c{index}"));
            groups.push(sql);
        }
        let offset = aggregate.group_expr.len();
        for (index, expr) in aggregate.aggr_expr.iter().enumerate() {
            let position = offset + index;
            let target = pg_type_for(aggregate.schema.field(position).data_type())?;
            let sql = scope.aggregate(expr)?;
            items.push(format!("CAST({sql} AS {target}) AS c{position}"));
        }
        if items.is_empty() {
            return None;
        }
        let mut sql = format!("SELECT {} FROM ({input}) AS {alias}", items.join(", "));
        if !groups.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&groups.join(", "));
        }
        Some(sql)
    }

    fn join(&mut self, join: &Join) -> Option<String> {
        if join.null_aware {
            return None;
        }
        let keyword = match join.join_type {
            JoinType::Inner => "JOIN",
            JoinType::Left => "LEFT JOIN",
            JoinType::Right => "RIGHT JOIN",
            JoinType::Full => "FULL JOIN",
            JoinType::LeftSemi | JoinType::LeftAnti => "",
            _ => return None,
        };
        let left = self.relation(&join.left)?;
        let right = self.relation(&join.right)?;
        let left_alias = self.alias();
        let right_alias = self.alias();
        let left_schema = join.left.schema();
        let right_schema = join.right.schema();
        let combined = left_schema.join(right_schema).ok()?;
        let scope = Scope {
            inputs: vec![(&left_alias, left_schema), (&right_alias, right_schema)],
            typing: &combined,
        };
        let equal = match join.null_equality {
            NullEquality::NullEqualsNothing => "=",
            NullEquality::NullEqualsNull => "IS NOT DISTINCT FROM",
        };
        let mut conditions = Vec::new();
        for (left_key, right_key) in &join.on {
            let key_type = scope.data_type(left_key)?;
            if !groupable(&key_type) || scope.data_type(right_key)? != key_type {
                return None;
            }
            conditions.push(format!(
                "({} {equal} {})",
                scope.expr(left_key)?,
                scope.expr(right_key)?
            ));
        }
        if let Some(filter) = &join.filter {
            conditions.push(scope.predicate(filter)?);
        }
        let condition = if conditions.is_empty() {
            "TRUE".to_string()
        } else {
            conditions.join(" AND ")
        };
        match join.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti => {
                let not = if join.join_type == JoinType::LeftAnti {
                    "NOT "
                } else {
                    ""
                };
                Some(format!(
                    "SELECT {left_alias}.* FROM ({left}) AS {left_alias} WHERE {not}EXISTS \
                     (SELECT 1 FROM ({right}) AS {right_alias} WHERE {condition})"
                ))
            }
            _ => {
                let left_count = left_schema.fields().len();
                let columns: Vec<String> = (0..left_count)
                    .map(|i| format!("{left_alias}.c{i} AS c{i}"))
                    .chain(
                        (0..right_schema.fields().len())
                            .map(|i| format!("{right_alias}.c{i} AS c{}", left_count + i)),
                    )
                    .collect();
                let columns = if columns.is_empty() {
                    String::new()
                } else {
                    columns.join(", ")
                };
                Some(format!(
                    "SELECT {columns} FROM ({left}) AS {left_alias} {keyword} ({right}) AS \
                     {right_alias} ON {condition}"
                ))
            }
        }
    }

    fn limit(&mut self, limit: &Limit) -> Option<String> {
        let skip = match limit.get_skip_type().ok()? {
            SkipType::Literal(skip) => skip,
            SkipType::UnsupportedExpr => return None,
        };
        let fetch = match limit.get_fetch_type().ok()? {
            FetchType::Literal(fetch) => fetch,
            FetchType::UnsupportedExpr => return None,
        };
        let input = self.relation(&limit.input)?;
        let alias = self.alias();
        let mut sql = format!("SELECT * FROM ({input}) AS {alias}");
        if let Some(fetch) = fetch {
            sql.push_str(&format!(" LIMIT {fetch}"));
        }
        if skip > 0 {
            sql.push_str(&format!(" OFFSET {skip}"));
        }
        Some(sql)
    }
}

/// The inputs an expression's columns come from, each under its alias.
struct Scope<'a> {
    inputs: Vec<(&'a str, &'a DFSchemaRef)>,
    /// The schema expressions are typed against (all inputs' fields).
    typing: &'a DFSchema,
}

/// What kind of value a type holds, for deciding what may be compared or computed in
/// Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Int,
    Decimal,
    Float,
    Text,
    Bool,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Other,
}

fn class(data_type: &DataType) -> Class {
    match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => Class::Int,
        DataType::Decimal128(..) => Class::Decimal,
        DataType::Float32 | DataType::Float64 => Class::Float,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Class::Text,
        DataType::Boolean => Class::Bool,
        DataType::Date32 => Class::Date,
        DataType::Time64(TimeUnit::Microsecond) => Class::Time,
        DataType::Timestamp(TimeUnit::Microsecond, None) => Class::Timestamp,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Class::TimestampTz,
        _ => Class::Other,
    }
}

/// Types whose equality means the same in both engines (so they may be grouped, joined and
/// de-duplicated on): not floats (-0 and 0), not intervals ('1 day' and '24 hours').
fn groupable(data_type: &DataType) -> bool {
    !matches!(class(data_type), Class::Float | Class::Other)
}

impl<'a> Scope<'a> {
    fn single(alias: &'a str, schema: &'a DFSchemaRef) -> Self {
        Scope {
            inputs: vec![(alias, schema)],
            typing: schema.as_ref(),
        }
    }

    fn column(&self, column: &Column) -> Option<String> {
        self.inputs.iter().find_map(|(alias, schema)| {
            schema
                .maybe_index_of_column(column)
                .map(|index| format!("{alias}.c{index}"))
        })
    }

    fn data_type(&self, expr: &Expr) -> Option<DataType> {
        expr.get_type(self.typing).ok()
    }

    /// A boolean condition.
    fn predicate(&self, expr: &Expr) -> Option<String> {
        (self.data_type(expr)? == DataType::Boolean).then_some(())?;
        self.expr(expr)
    }

    /// An output column of the Arrow type `target`: computed values are cast to it.
    fn output(&self, expr: &Expr, target: &DataType) -> Option<String> {
        let pg_type = pg_type_for(target)?;
        let mut inner = expr;
        while let Expr::Alias(Alias { expr, .. }) = inner {
            inner = expr;
        }
        let sql = self.expr(inner)?;
        if matches!(inner, Expr::Column(_)) && self.data_type(inner)? == *target {
            return Some(sql);
        }
        Some(format!("CAST({sql} AS {pg_type})"))
    }

    /// `expr` in Postgres SQL, or `None` unless it means exactly the same there.
    fn expr(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Column(column) => self.column(column),
            Expr::Alias(Alias { expr, .. }) => self.expr(expr),
            Expr::Literal(value, _) => literal(value),
            Expr::BinaryExpr(binary) => self.binary(binary),
            Expr::Not(inner) => Some(format!("(NOT {})", self.predicate(inner)?)),
            Expr::IsNull(inner) => Some(format!("({} IS NULL)", self.expr(inner)?)),
            Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", self.expr(inner)?)),
            Expr::IsTrue(inner) => Some(format!("({} IS TRUE)", self.predicate(inner)?)),
            Expr::IsFalse(inner) => Some(format!("({} IS FALSE)", self.predicate(inner)?)),
            Expr::IsNotTrue(inner) => Some(format!("({} IS NOT TRUE)", self.predicate(inner)?)),
            Expr::IsNotFalse(inner) => Some(format!("({} IS NOT FALSE)", self.predicate(inner)?)),
            Expr::Negative(inner) => {
                matches!(class(&self.data_type(inner)?), Class::Int | Class::Decimal)
                    .then_some(())?;
                Some(format!("(- {})", self.expr(inner)?))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let value = self.comparable(expr, low)?;
                self.comparable(expr, high)?;
                let not = if *negated { "NOT " } else { "" };
                Some(format!(
                    "({value} {not}BETWEEN {} AND {})",
                    self.ordered(low)?,
                    self.ordered(high)?
                ))
            }
            Expr::InList(in_list) => {
                if in_list.list.is_empty() {
                    return None;
                }
                let value_type = self.data_type(&in_list.expr)?;
                if !groupable(&value_type) {
                    return None;
                }
                let mut items = Vec::with_capacity(in_list.list.len());
                for item in &in_list.list {
                    if !same_class(&self.data_type(item)?, &value_type) {
                        return None;
                    }
                    items.push(self.expr(item)?);
                }
                let not = if in_list.negated { "NOT " } else { "" };
                Some(format!(
                    "({} {not}IN ({}))",
                    self.expr(&in_list.expr)?,
                    items.join(", ")
                ))
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char,
                case_insensitive,
            }) => {
                // ILIKE folds case by the database's rules, which need not be DataFusion's.
                if *case_insensitive
                    || class(&self.data_type(expr)?) != Class::Text
                    || class(&self.data_type(pattern)?) != Class::Text
                {
                    return None;
                }
                let escape = escape_clause(*escape_char)?;
                let not = if *negated { "NOT " } else { "" };
                Some(format!(
                    "({} COLLATE \"C\" {not}LIKE {}{escape})",
                    self.expr(expr)?,
                    self.expr(pattern)?
                ))
            }
            Expr::Cast(Cast { expr, data_type }) => self.cast(expr, data_type),
            Expr::Case(case) => self.case(expr, case),
            Expr::ScalarFunction(function) => {
                use datafusion::functions::core::coalesce::CoalesceFunc;
                use datafusion::functions::core::nullif::NullIfFunc;
                use datafusion::functions::math::abs::AbsFunc;
                use datafusion::functions::unicode::character_length::CharacterLengthFunc;
                let inner = function.func.inner().as_any();
                let result = self.data_type(expr)?;
                let arguments = function
                    .args
                    .iter()
                    .map(|arg| {
                        same_class(&self.data_type(arg)?, &result)
                            .then_some(())
                            .and_then(|()| self.expr(arg))
                    })
                    .collect::<Option<Vec<_>>>();
                let name = if inner.is::<CoalesceFunc>() {
                    "coalesce"
                } else if inner.is::<NullIfFunc>() {
                    "nullif"
                } else if inner.is::<AbsFunc>() && class(&result) == Class::Int {
                    "abs"
                } else if inner.is::<CharacterLengthFunc>() && function.args.len() == 1 {
                    let arg = &function.args[0];
                    (class(&self.data_type(arg)?) == Class::Text).then_some(())?;
                    return Some(format!(
                        "CAST(char_length({}) AS {})",
                        self.expr(arg)?,
                        pg_type_for(&result)?
                    ));
                } else {
                    return None;
                };
                Some(format!(
                    "CAST({name}({}) AS {})",
                    arguments?.join(", "),
                    pg_type_for(&result)?
                ))
            }
            _ => None,
        }
    }

    fn binary(&self, binary: &BinaryExpr) -> Option<String> {
        let BinaryExpr { left, op, right } = binary;
        match op {
            Operator::And | Operator::Or => {
                let keyword = if *op == Operator::And { "AND" } else { "OR" };
                Some(format!(
                    "({} {keyword} {})",
                    self.predicate(left)?,
                    self.predicate(right)?
                ))
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => {
                let symbol = match op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::IsDistinctFrom => "IS DISTINCT FROM",
                    _ => "IS NOT DISTINCT FROM",
                };
                let left_sql = self.comparable(left, right)?;
                Some(format!("({left_sql} {symbol} {})", self.expr(right)?))
            }
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                let symbol = match op {
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    _ => ">=",
                };
                let left_sql = self.comparable(left, right)?;
                Some(format!("({left_sql} {symbol} {})", self.ordered(right)?))
            }
            Operator::Plus
            | Operator::Minus
            | Operator::Multiply
            | Operator::Divide
            | Operator::Modulo => {
                // Integer arithmetic only: the same results where both succeed. Overflow is an
                // error in Postgres (and in fjord's projections and filters; DataFusion wraps
                // elsewhere), division by zero in both. Decimal and float results are typed
                // differently.
                let left_type = self.data_type(left)?;
                if class(&left_type) != Class::Int || self.data_type(right)? != left_type {
                    return None;
                }
                let symbol = match op {
                    Operator::Plus => "+",
                    Operator::Minus => "-",
                    Operator::Multiply => "*",
                    Operator::Divide => "/",
                    _ => "%",
                };
                Some(format!(
                    "({} {symbol} {})",
                    self.expr(left)?,
                    self.expr(right)?
                ))
            }
            Operator::StringConcat => {
                if class(&self.data_type(left)?) != Class::Text
                    || class(&self.data_type(right)?) != Class::Text
                {
                    return None;
                }
                Some(format!("({} || {})", self.expr(left)?, self.expr(right)?))
            }
            _ => None,
        }
    }

    /// The left side of a comparison with `other`, ordered by bytes when it is text; `None`
    /// when the two cannot be compared alike in both engines.
    fn comparable(&self, value: &Expr, other: &Expr) -> Option<String> {
        let value_type = self.data_type(value)?;
        let other_type = self.data_type(other)?;
        if !same_class(&value_type, &other_type) {
            return None;
        }
        if class(&value_type) == Class::Float {
            // -0 and 0 are equal in Postgres and ordered in DataFusion; comparing with a
            // finite literal other than zero is the same in both.
            let finite_literal = |expr: &Expr| {
                matches!(expr, Expr::Literal(ScalarValue::Float64(Some(v)), _) if v.is_finite() && *v != 0.0)
                    || matches!(expr, Expr::Literal(ScalarValue::Float32(Some(v)), _) if v.is_finite() && *v != 0.0)
            };
            if !finite_literal(other) && !finite_literal(value) {
                return None;
            }
        }
        self.ordered(value)
    }

    /// An expression as an operand of an ordering comparison: text in byte order.
    fn ordered(&self, expr: &Expr) -> Option<String> {
        let sql = self.expr(expr)?;
        if class(&self.data_type(expr)?) == Class::Text {
            return Some(format!("({sql} COLLATE \"C\")"));
        }
        Some(sql)
    }

    fn sort_key(&self, key: &SortExpr) -> Option<String> {
        let data_type = self.data_type(&key.expr)?;
        // Floats order -0 before 0 in DataFusion and tie them in Postgres.
        if matches!(class(&data_type), Class::Other | Class::Float)
            || matches!(key.expr, Expr::Literal(..))
        {
            return None;
        }
        let direction = if key.asc { "ASC" } else { "DESC" };
        let nulls = if key.nulls_first {
            "NULLS FIRST"
        } else {
            "NULLS LAST"
        };
        Some(format!("{} {direction} {nulls}", self.ordered(&key.expr)?))
    }

    fn cast(&self, expr: &Expr, target: &DataType) -> Option<String> {
        let source = self.data_type(expr)?;
        let sql = self.expr(expr)?;
        let exact = match (class(&source), class(target)) {
            (Class::Text, Class::Text) => return Some(sql),
            // Narrowing integers fails on overflow in both engines.
            (Class::Int, Class::Int | Class::Float) => true,
            (Class::Int, Class::Decimal) => true,
            (Class::Decimal, Class::Decimal) => match (&source, target) {
                // Only widening: rounding rules differ.
                (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => {
                    s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16)
                }
                _ => false,
            },
            (Class::Float, Class::Float) => {
                matches!((&source, target), (DataType::Float32, DataType::Float64))
                    || source == *target
            }
            (Class::Date, Class::Timestamp) => true,
            (Class::Int, Class::Text) => true,
            (from, to) => from == to && source == *target,
        };
        exact.then_some(())?;
        Some(format!("CAST({sql} AS {})", pg_type_for(target)?))
    }

    fn case(&self, expr: &Expr, case: &Case) -> Option<String> {
        let result = self.data_type(expr)?;
        let mut sql = String::from("CASE");
        if let Some(base) = &case.expr {
            let base_type = self.data_type(base)?;
            if !groupable(&base_type) {
                return None;
            }
            sql.push(' ');
            sql.push_str(&self.expr(base)?);
            for (when, _) in &case.when_then_expr {
                if !same_class(&self.data_type(when)?, &base_type) {
                    return None;
                }
            }
        }
        for (when, then) in &case.when_then_expr {
            let when_sql = if case.expr.is_some() {
                self.expr(when)?
            } else {
                self.predicate(when)?
            };
            sql.push_str(&format!(
                " WHEN {when_sql} THEN {}",
                self.output(then, &result)?
            ));
        }
        if let Some(otherwise) = &case.else_expr {
            sql.push_str(&format!(" ELSE {}", self.output(otherwise, &result)?));
        }
        sql.push_str(" END");
        Some(sql)
    }

    fn aggregate(&self, expr: &Expr) -> Option<String> {
        use datafusion::functions_aggregate::average::Avg;
        use datafusion::functions_aggregate::count::Count;
        use datafusion::functions_aggregate::min_max::{Max, Min};
        use datafusion::functions_aggregate::sum::Sum;
        let expr = match expr {
            Expr::Alias(Alias { expr, .. }) => expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
            return None;
        };
        if params.filter.is_some() || !params.order_by.is_empty() || params.null_treatment.is_some()
        {
            return None;
        }
        let distinct = if params.distinct { "DISTINCT " } else { "" };
        let inner = func.inner().as_any();
        let [argument] = params.args.as_slice() else {
            return None;
        };
        let argument_type = self.data_type(argument)?;
        let argument_class = class(&argument_type);
        if inner.is::<Count>() {
            if let Expr::Literal(value, _) = argument
                && !value.is_null()
                && !params.distinct
            {
                return Some("count(*)".into());
            }
            if params.distinct && !groupable(&argument_type) {
                return None;
            }
            return Some(format!("count({distinct}{})", self.expr(argument)?));
        }
        let name = if inner.is::<Sum>() {
            matches!(argument_class, Class::Int | Class::Decimal | Class::Float).then_some("sum")
        } else if inner.is::<Avg>() {
            // Decimal averages are rounded differently: only integers and floats.
            matches!(argument_class, Class::Int | Class::Float).then_some("avg")
        } else if inner.is::<Min>() || inner.is::<Max>() {
            // Not floats: which of -0 and 0 wins differs.
            (!matches!(argument_class, Class::Other | Class::Bool | Class::Float))
                .then_some(if inner.is::<Min>() { "min" } else { "max" })
        } else {
            None
        }?;
        if params.distinct && !groupable(&argument_type) {
            return None;
        }
        let argument = if name == "min" || name == "max" {
            self.ordered(argument)?
        } else {
            self.expr(argument)?
        };
        Some(format!("{name}({distinct}{argument})"))
    }
}

/// Whether two types compare as the same kind of value in both engines.
fn same_class(left: &DataType, right: &DataType) -> bool {
    let (a, b) = (class(left), class(right));
    a != Class::Other
        && (a == b
            || matches!(
                (a, b),
                (Class::Int, Class::Decimal) | (Class::Decimal, Class::Int)
            ))
}

/// A literal of exactly its Arrow type in Postgres.
fn literal(value: &ScalarValue) -> Option<String> {
    use ScalarValue as V;
    if value.is_null() {
        return Some(format!(
            "CAST(NULL AS {})",
            pg_type_for(&value.data_type())?
        ));
    }
    let typed = |text: String, pg_type: &str| {
        if text.starts_with('-') {
            format!("({text})::{pg_type}")
        } else {
            format!("{text}::{pg_type}")
        }
    };
    Some(match value {
        V::Boolean(Some(b)) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        V::Int16(Some(v)) => typed(v.to_string(), "int2"),
        V::Int32(Some(v)) => typed(v.to_string(), "int4"),
        V::Int64(Some(v)) => typed(v.to_string(), "int8"),
        // Quoted: an unquoted -0.0 is read as a numeric and loses its sign.
        V::Float64(Some(v)) if v.is_finite() => format!("'{v:?}'::float8"),
        V::Float32(Some(v)) if v.is_finite() => format!("'{v:?}'::float4"),
        V::Decimal128(Some(v), precision, scale) if *scale >= 0 => typed(
            decimal_text(*v, *scale),
            &format!("numeric({precision},{scale})"),
        ),
        V::Utf8(Some(text)) | V::Utf8View(Some(text)) | V::LargeUtf8(Some(text)) => {
            format!("{}::text", quote_literal(text)?)
        }
        V::Date32(Some(days)) => format!("'{}'::date", date_text(*days)?),
        V::TimestampMicrosecond(Some(micros), zone) => {
            let text = timestamp_text(*micros)?;
            match zone {
                None => format!("'{text}'::timestamp"),
                Some(_) => format!("'{text}+00'::timestamptz"),
            }
        }
        _ => return None,
    })
}

/// The Postgres type that holds exactly the values of an Arrow type, as fjord decodes it.
fn pg_type_for(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int16 => "int2".into(),
        DataType::Int32 => "int4".into(),
        DataType::Int64 => "int8".into(),
        DataType::Float32 => "float4".into(),
        DataType::Float64 => "float8".into(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text".into(),
        DataType::Binary => "bytea".into(),
        DataType::Date32 => "date".into(),
        DataType::Time64(TimeUnit::Microsecond) => "time".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(zone)) if zone.as_ref() == "UTC" => {
            "timestamptz".into()
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => "interval".into(),
        DataType::Decimal128(precision, scale) if *scale >= 0 && *scale as u8 <= *precision => {
            format!("numeric({precision},{scale})")
        }
        _ => return None,
    })
}

/// How a result column of an Arrow type is decoded from binary COPY.
fn kind_for(data_type: &DataType) -> Option<PgKind> {
    Some(match data_type {
        DataType::Boolean => PgKind::Bool,
        DataType::Int16 => PgKind::Int2,
        DataType::Int32 => PgKind::Int4,
        DataType::Int64 => PgKind::Int8,
        DataType::Float32 => PgKind::Float4,
        DataType::Float64 => PgKind::Float8,
        DataType::Utf8 => PgKind::Text,
        DataType::Binary => PgKind::Bytea,
        DataType::Date32 => PgKind::Date,
        DataType::Time64(TimeUnit::Microsecond) => PgKind::Time,
        DataType::Timestamp(TimeUnit::Microsecond, None) => PgKind::Timestamp,
        DataType::Timestamp(TimeUnit::Microsecond, Some(zone)) if zone.as_ref() == "UTC" => {
            PgKind::TimestampTz
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => PgKind::Interval,
        DataType::Decimal128(precision, scale) if *scale >= 0 => PgKind::Numeric {
            precision: *precision,
            scale: *scale,
        },
        _ => return None,
    })
}

/// A statement run whole by one Postgres catalog.
pub struct PostgresQuery {
    catalog: String,
    pool: Arc<Pool>,
    batch_size: usize,
    sql: String,
    schema: DFSchemaRef,
    checks: Vec<ShapeCheck>,
    /// The statement returns at most a few rows (see [`crate::scan::FEW_ROWS`]): an aggregate
    /// without GROUP BY, a small top-n.
    few_rows: bool,
}

impl PostgresQuery {
    /// The exact statement Postgres runs (inside `COPY (...) TO STDOUT`).
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

impl fmt::Debug for PostgresQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresQuery")
            .field("catalog", &self.catalog)
            .field("sql", &self.sql)
            .finish()
    }
}

impl PartialEq for PostgresQuery {
    fn eq(&self, other: &Self) -> bool {
        self.catalog == other.catalog && self.sql == other.sql && self.schema == other.schema
    }
}

impl Eq for PostgresQuery {}

impl PartialOrd for PostgresQuery {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some((&self.catalog, &self.sql).cmp(&(&other.catalog, &other.sql)))
    }
}

impl Hash for PostgresQuery {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.catalog.hash(state);
        self.sql.hash(state);
    }
}

impl UserDefinedLogicalNodeCore for PostgresQuery {
    fn name(&self) -> &str {
        "PostgresQuery"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PostgresQuery: catalog={}, sql={}",
            self.catalog, self.sql
        )
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(PostgresQuery {
            catalog: self.catalog.clone(),
            pool: self.pool.clone(),
            batch_size: self.batch_size,
            sql: self.sql.clone(),
            schema: self.schema.clone(),
            checks: self.checks.clone(),
            few_rows: self.few_rows,
        })
    }
}

/// Plans [`PostgresQuery`] nodes: the statement over one connection, as a binary COPY or, for
/// few rows, a plain statement.
#[derive(Debug, Default)]
pub struct PostgresQueryPlanner;

#[async_trait]
impl ExtensionPlanner for PostgresQueryPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(query) = node.as_any().downcast_ref::<PostgresQuery>() else {
            return Ok(None);
        };
        let schema = query.schema.inner().clone();
        let kinds = schema
            .fields()
            .iter()
            .map(|field| {
                kind_for(field.data_type()).ok_or_else(|| {
                    datafusion::common::DataFusionError::Internal(format!(
                        "pushed query has an undecodable column type {}",
                        field.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The statement's columns are `c0, c1, ...`, each of the Postgres type of its Arrow type.
        let columns = schema
            .fields()
            .iter()
            .zip(&kinds)
            .enumerate()
            .map(|(index, (field, kind))| PgColumn {
                name: format!("c{index}"),
                type_name: pg_type_for(field.data_type()).unwrap_or_default(),
                kind: kind.clone(),
                nullable: true,
            })
            .collect();
        // A statement of few rows goes in one round trip; one of many, as a COPY. Either may
        // run long in Postgres (a join counted): abandoning either cancels it there (see
        // `PooledClient`'s drop).
        Ok(Some(Arc::new(
            PostgresScanExec::new(
                query.catalog.clone(),
                query.pool.clone(),
                vec![query.sql.clone()],
                schema,
                kinds,
                columns,
                query.batch_size,
                query.checks.clone(),
            )
            .with_few_rows(query.few_rows),
        )))
    }
}
