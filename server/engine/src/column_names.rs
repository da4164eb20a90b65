//! Result column names as PostgreSQL gives them to clients.
//!
//! DataFusion names an unaliased select item after its whole expression (`count(*)`,
//! `Int64(1)`, `upper(t.name)`); PostgreSQL names it from the statement's syntax: the
//! outermost function (`count`, `upper`), `case`, the column a cast applies to, the type of a
//! cast literal, and `?column?` for everything else. Clients show these names as headers and key
//! rows by them, so fjord renames its output the way Postgres does. Aliases, plain columns and
//! `*` keep their names. Names may repeat (`SELECT 1, 2` has two `?column?`), which is why the
//! renaming is applied to the results and not to the plan.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
};
use futures::StreamExt;

/// Postgres's name for a column no rule names.
const UNNAMED: &str = "?column?";

/// The names Postgres would give the result columns of `statement`, whose plan has the output
/// `schema`; `None` when they are DataFusion's names already, or the statement is no query.
pub(crate) fn postgres_names(statement: &DfStatement, schema: &DFSchema) -> Option<Arc<[String]>> {
    let DfStatement::Statement(statement) = statement else {
        return None;
    };
    let Statement::Query(query) = statement.as_ref() else {
        return None;
    };
    let items = select_items(query)?;
    let fields = schema.fields();
    let wildcards = items
        .iter()
        .filter(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
        .count();
    let expanded = fields.len().checked_sub(items.len() - wildcards)?;
    if wildcards > 1 || (wildcards == 0 && expanded != 0) {
        return None;
    }
    let mut names = Vec::with_capacity(fields.len());
    for item in items {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                for field in fields.iter().skip(names.len()).take(expanded) {
                    names.push(field.name().clone());
                }
            }
            SelectItem::ExprWithAlias { .. } => names.push(fields.get(names.len())?.name().clone()),
            SelectItem::UnnamedExpr(expression) => {
                let field = fields.get(names.len())?;
                let name = match expression {
                    // A plain column: DataFusion's name is the column's.
                    Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                        if !field.name().starts_with(INTERNAL_ALIAS) =>
                    {
                        field.name().clone()
                    }
                    other => figure(other, Some(field.data_type()))
                        .unwrap_or_else(|| UNNAMED.to_string()),
                };
                names.push(name);
            }
        }
    }
    if names.len() != fields.len()
        || names
            .iter()
            .zip(fields.iter())
            .all(|(name, field)| name == field.name())
    {
        return None;
    }
    Some(names.into())
}

/// Whether the statement is a query, the only kind whose result columns get names here.
pub(crate) fn is_query(statement: &DfStatement) -> bool {
    matches!(statement, DfStatement::Statement(inner) if matches!(inner.as_ref(), Statement::Query(_)))
}

/// Prefix of the aliases [`alias_select_items`] gives.
const INTERNAL_ALIAS: &str = "__fjord_column_";

/// Gives every unaliased item of the statement's select lists an alias of its own position.
/// DataFusion refuses two select items with the same name (`SELECT 1, 1::text`,
/// `SELECT x::bigint, v.*`), which Postgres allows; planning again with these aliases gets past
/// that, and [`postgres_names`] on the original statement still names the columns.
pub(crate) fn alias_select_items(statement: &mut DfStatement) {
    fn alias(body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => {
                for (position, item) in select.projection.iter_mut().enumerate() {
                    if let SelectItem::UnnamedExpr(expression) = item {
                        *item = SelectItem::ExprWithAlias {
                            expr: expression.clone(),
                            alias: Ident::with_quote('"', format!("{INTERNAL_ALIAS}{position}")),
                        };
                    }
                }
            }
            SetExpr::Query(query) => alias(&mut query.body),
            SetExpr::SetOperation { left, right, .. } => {
                alias(left);
                alias(right);
            }
            _ => {}
        }
    }
    if let DfStatement::Statement(statement) = statement
        && let Statement::Query(query) = statement.as_mut()
    {
        alias(&mut query.body);
    }
}

/// The select list that names a query's columns: the first branch of a set operation.
fn select_items(query: &Query) -> Option<&[SelectItem]> {
    fn of(body: &SetExpr) -> Option<&[SelectItem]> {
        match body {
            SetExpr::Select(select) => Some(&select.projection),
            SetExpr::Query(query) => of(&query.body),
            SetExpr::SetOperation { left, .. } => of(left),
            _ => None,
        }
    }
    of(&query.body)
}

/// Postgres's `FigureColname`: the name an expression gives its column, `None` for
/// `?column?`. `data_type` is the column's type, for casts of literals.
fn figure(expression: &Expr, data_type: Option<&DataType>) -> Option<String> {
    match expression {
        Expr::Identifier(ident) => Some(normalized(ident)),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalized),
        Expr::Function(function) => match function.name.0.last()? {
            ObjectNamePart::Identifier(ident) => Some(normalized(ident)),
            ObjectNamePart::Function(part) => Some(normalized(&part.name)),
        },
        Expr::Cast { expr, .. } => {
            figure(expr, None).or_else(|| data_type.and_then(type_name).map(String::from))
        }
        Expr::TypedString(_) => data_type.and_then(type_name).map(String::from),
        Expr::Nested(inner) => figure(inner, data_type),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Interval(_) => Some("interval".into()),
        Expr::Subquery(query) => match select_items(query)?.first()? {
            SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
            SelectItem::UnnamedExpr(inner) => figure(inner, None),
            _ => None,
        },
        _ => None,
    }
}

/// An identifier as Postgres stores it: unquoted names fold to lowercase.
fn normalized(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Postgres's name of the type a literal is cast to.
fn type_name(data_type: &DataType) -> Option<&'static str> {
    Some(match data_type {
        DataType::Boolean => "bool",
        DataType::Int16 => "int2",
        DataType::Int32 => "int4",
        DataType::Int64 => "int8",
        DataType::Float32 => "float4",
        DataType::Float64 => "float8",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        DataType::Interval(_) => "interval",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        _ => return None,
    })
}

/// `schema` with its fields renamed to `names`.
pub(crate) fn renamed_schema(schema: &Schema, names: &[String]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(field, name)| field.as_ref().clone().with_name(name))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The stream with its columns renamed to `names`. `last` keeps the schema built for the
/// previous run of the same statement (with the schema it was built from), which serves again
/// while the rows keep their schema.
pub(crate) fn rename(
    stream: SendableRecordBatchStream,
    names: &[String],
    last: &parking_lot::Mutex<Option<(SchemaRef, SchemaRef)>>,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    if names.len() != schema.fields().len() {
        return stream;
    }
    let renamed = {
        let mut last = last.lock();
        match last.as_ref() {
            Some((from, to)) if Arc::ptr_eq(from, &schema) || **from == *schema => to.clone(),
            _ => {
                let to = renamed_schema(&schema, names);
                *last = Some((schema.clone(), to.clone()));
                to
            }
        }
    };
    let target = renamed.clone();
    let batches = stream.map(move |batch| {
        let batch = batch?;
        Ok(RecordBatch::try_new(
            target.clone(),
            batch.columns().to_vec(),
        )?)
    });
    Box::pin(RecordBatchStreamAdapter::new(renamed, batches))
}
