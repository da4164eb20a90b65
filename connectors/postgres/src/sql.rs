//! The only place that writes SQL text for Postgres: quoting, and translating DataFusion filter
//! expressions into `WHERE` clauses that mean exactly the same thing in Postgres.
//!
//! A filter is pushed only when its meaning cannot differ between the two engines; anything
//! else stays in DataFusion. Two differences matter most: Postgres orders text by collation
//! (DataFusion by bytes, so range comparisons on text use `COLLATE "C"`), and values fjord shows
//! as text but Postgres compares as another type (uuid, jsonb, text fallbacks) are compared
//! through `::text`.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions as physical;

use crate::types::{PgColumn, PgKind};

/// `"name"` with embedded quotes doubled: safe for any identifier, unicode included.
pub fn quote_identifier(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// `'text'` with embedded quotes doubled. Connections run with `standard_conforming_strings`
/// on, so backslashes are ordinary characters. NUL cannot appear in Postgres text: `None`.
pub fn quote_literal(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push('\'');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    Some(quoted)
}

/// `"schema"."table"`.
pub fn qualified_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(table))
}

/// The select list for the given columns: `AsText` kinds are read through `::text`.
pub fn select_list(columns: &[&PgColumn]) -> String {
    let mut list = String::new();
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            list.push_str(", ");
        }
        list.push_str(&quote_identifier(&column.name));
        if column.kind == PgKind::AsText {
            list.push_str("::text");
        }
    }
    list
}

/// Translates filters against one table's columns.
pub struct FilterTranslator<'a> {
    pub columns: &'a [PgColumn],
}

/// The SQL side of a comparison operand, with what kind of value it is.
enum Operand<'a> {
    Column(&'a PgColumn),
    Literal(&'a ScalarValue),
    /// A statement parameter (`$1`), whose value is written in when the scan starts.
    Parameter(&'a Placeholder),
}

impl<'a> FilterTranslator<'a> {
    /// The Postgres SQL for `expr`, or `None` if it cannot be pushed exactly.
    pub fn translate(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => {
                    let left = self.translate(left)?;
                    let right = self.translate(right)?;
                    let keyword = if *op == Operator::And { "AND" } else { "OR" };
                    Some(format!("({left} {keyword} {right})"))
                }
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq => self.comparison(left, *op, right),
                _ => None,
            },
            Expr::Not(inner) => Some(format!("(NOT {})", self.translate(inner)?)),
            // DataFusion simplifies filters after they were pushed (`x IS NOT NULL` on a column
            // it knows is never NULL becomes `true`).
            Expr::Literal(ScalarValue::Boolean(value), _) => Some(
                match value {
                    Some(true) => "TRUE",
                    Some(false) => "FALSE",
                    None => "NULL::boolean",
                }
                .to_string(),
            ),
            // A value fjord reads as NULL (an infinite timestamp, a NaN numeric) is NULL here.
            Expr::IsNull(inner) => {
                let column = self.column(inner)?;
                let sql = self.column_sql(inner, false)?;
                Some(match column.read_as_null(&quote_identifier(&column.name)) {
                    Some(special) => format!("({sql} IS NULL OR {special})"),
                    None => format!("({sql} IS NULL)"),
                })
            }
            Expr::IsNotNull(inner) => {
                let column = self.column(inner)?;
                let sql = self.column_sql(inner, false)?;
                Some(match column.read_as_null(&quote_identifier(&column.name)) {
                    Some(special) => format!("({sql} IS NOT NULL AND NOT {special})"),
                    None => format!("({sql} IS NOT NULL)"),
                })
            }
            Expr::InList(in_list) => {
                let column = self.column(&in_list.expr)?;
                if in_list.list.is_empty() {
                    return None;
                }
                // Canonical uuid spellings compare as uuids, so the column's index serves.
                let canonical_uuids = column.kind == PgKind::Uuid
                    && in_list.list.iter().all(|item| {
                        matches!(item, Expr::Literal(ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)), _)
                            if canonical_uuid(text))
                    });
                let mut sql = if canonical_uuids {
                    quote_identifier(&column.name)
                } else {
                    self.column_sql(&in_list.expr, false)?
                };
                sql.push_str(if in_list.negated {
                    " NOT IN ("
                } else {
                    " IN ("
                });
                for (index, item) in in_list.list.iter().enumerate() {
                    let Expr::Literal(value, _) = item else {
                        return None;
                    };
                    if index > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&literal_for(column, value)?);
                    if canonical_uuids {
                        sql.push_str("::uuid");
                    }
                }
                sql.push(')');
                Some(guarded(column, format!("({sql})")))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let column = self.column(expr)?;
                let (Expr::Literal(low, _), Expr::Literal(high, _)) = (low.as_ref(), high.as_ref())
                else {
                    return None;
                };
                let sql = self.column_sql(expr, true)?;
                let not = if *negated { "NOT " } else { "" };
                Some(guarded(
                    column,
                    format!(
                        "({sql} {not}BETWEEN {} AND {})",
                        literal_for(column, low)?,
                        literal_for(column, high)?
                    ),
                ))
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char,
                case_insensitive,
            }) => {
                let column = self.column(expr)?;
                if !matches!(column.kind, PgKind::Text) && !column.kind.is_text_view() {
                    return None;
                }
                let Expr::Literal(ScalarValue::Utf8(Some(pattern)), _) = pattern.as_ref() else {
                    return None;
                };
                let operator = match (negated, case_insensitive) {
                    (false, false) => "LIKE",
                    (true, false) => "NOT LIKE",
                    // ILIKE folds case by the database's rules, which need not be DataFusion's.
                    _ => return None,
                };
                let escape = escape_clause(*escape_char)?;
                Some(format!(
                    "({} COLLATE \"C\" {operator} {}{escape})",
                    self.column_sql(expr, false)?,
                    quote_literal(pattern)?
                ))
            }
            _ => None,
        }
    }

    fn column(&self, expr: &Expr) -> Option<&'a PgColumn> {
        match expr {
            // char(n) compares without its padding, which fjord keeps: never pushed.
            Expr::Column(column) => self
                .columns
                .iter()
                .find(|c| c.name == column.name && !c.is_bpchar()),
            _ => None,
        }
    }

    /// The column's SQL: text views through `::text`; `ordered` adds `COLLATE "C"` to text so
    /// that range comparisons order by bytes, as DataFusion does.
    fn column_sql(&self, expr: &Expr, ordered: bool) -> Option<String> {
        let column = self.column(expr)?;
        let mut sql = quote_identifier(&column.name);
        // json has no comparison operators of its own.
        if column.kind.is_text_view() || column.type_name == "json" {
            sql.push_str("::text");
        }
        if ordered && (column.kind == PgKind::Text || column.kind.is_text_view()) {
            sql.push_str(" COLLATE \"C\"");
        }
        Some(sql)
    }

    fn operand(&self, expr: &'a Expr) -> Option<Operand<'a>> {
        match expr {
            Expr::Column(_) => self.column(expr).map(Operand::Column),
            Expr::Literal(value, _) => Some(Operand::Literal(value)),
            Expr::Placeholder(placeholder) => Some(Operand::Parameter(placeholder)),
            _ => None,
        }
    }

    fn comparison(&self, left: &'a Expr, op: Operator, right: &'a Expr) -> Option<String> {
        let (column_expr, column, value, op) = match (self.operand(left)?, self.operand(right)?) {
            (Operand::Column(column), Operand::Literal(value)) => (left, column, value, op),
            (Operand::Literal(value), Operand::Column(column)) => {
                (right, column, value, op.swap()?)
            }
            (Operand::Column(column), Operand::Parameter(parameter)) => {
                return self.parameter_comparison(left, column, op, parameter);
            }
            (Operand::Parameter(parameter), Operand::Column(column)) => {
                return self.parameter_comparison(right, column, op.swap()?, parameter);
            }
            _ => return None,
        };
        if value.is_null() {
            // `x = NULL` is NULL in both engines; nothing to gain by pushing it.
            return None;
        }
        let symbol = comparison_symbol(op)?;
        // A uuid compared for equality with its canonical spelling can use the column's index.
        if column.kind == PgKind::Uuid
            && matches!(op, Operator::Eq | Operator::NotEq)
            && let ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)) = value
            && canonical_uuid(text)
        {
            return Some(format!(
                "({} {symbol} {}::uuid)",
                quote_identifier(&column.name),
                quote_literal(text)?
            ));
        }
        let ordered = !matches!(op, Operator::Eq | Operator::NotEq);
        let column_sql = self.column_sql(column_expr, ordered)?;
        Some(guarded(
            column,
            format!("({column_sql} {symbol} {})", literal_for(column, value)?),
        ))
    }

    /// A comparison with a statement parameter: pushed where every value of the parameter's
    /// type is written for the column as a literal would be, so that the statement can be
    /// planned once and run with each execution's values (see [`bind_parameters`]).
    fn parameter_comparison(
        &self,
        column_expr: &Expr,
        column: &PgColumn,
        op: Operator,
        parameter: &Placeholder,
    ) -> Option<String> {
        if !parameter_fits(column, parameter.field.as_ref()?.data_type()) {
            return None;
        }
        let symbol = comparison_symbol(op)?;
        let ordered = !matches!(op, Operator::Eq | Operator::NotEq);
        let column_sql = self.column_sql(column_expr, ordered)?;
        Some(guarded(
            column,
            format!(
                "({column_sql} {symbol} {})",
                parameter_marker(&parameter.id, column)
            ),
        ))
    }
}

fn comparison_symbol(op: Operator) -> Option<&'static str> {
    Some(match op {
        Operator::Eq => "=",
        Operator::NotEq => "<>",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        _ => return None,
    })
}

/// Whether every value of `data_type` is written for `column` by [`literal_for`] (only out of
/// range dates and timestamps are not, and [`bind_parameters`] reports those). Floats are
/// left out: zero and NaN compare differently in the two engines.
fn parameter_fits(column: &PgColumn, data_type: &DataType) -> bool {
    use DataType as T;
    use PgKind as K;
    match &column.kind {
        K::Text => matches!(data_type, T::Utf8 | T::Utf8View | T::LargeUtf8),
        kind if kind.is_text_view() => {
            // A uuid is compared through its text unless spelled canonically, which only the
            // value tells.
            *kind != K::Uuid && matches!(data_type, T::Utf8 | T::Utf8View | T::LargeUtf8)
        }
        K::Bool => *data_type == T::Boolean,
        K::Int2 | K::Int4 | K::Int8 | K::Oid | K::Numeric { .. } => matches!(
            data_type,
            T::Int8
                | T::Int16
                | T::Int32
                | T::Int64
                | T::UInt8
                | T::UInt16
                | T::UInt32
                | T::UInt64
                | T::Decimal128(..)
        ),
        K::Date => *data_type == T::Date32,
        K::Timestamp => *data_type == T::Timestamp(TimeUnit::Microsecond, None),
        K::TimestampTz => matches!(data_type, T::Timestamp(TimeUnit::Microsecond, Some(_))),
        _ => false,
    }
}

/// Where a statement parameter's value goes in a statement for Postgres: its id and the
/// column it is compared with, between NULs. Neither Postgres text nor identifiers can hold
/// NUL ([`quote_literal`] refuses it), so the marker cannot be mistaken for anything else.
fn parameter_marker(id: &str, column: &PgColumn) -> String {
    format!("\0{id}\0{}\0", column.name)
}

/// Whether `query` has statement parameters to bind before it is sent.
pub(crate) fn has_parameters(query: &str) -> bool {
    query.contains('\0')
}

/// `query` for display: each parameter shown as its id (`$1`).
pub(crate) fn show_parameters(query: &str) -> String {
    if !has_parameters(query) {
        return query.to_string();
    }
    let mut shown = String::with_capacity(query.len());
    let mut parts = query.split('\0');
    shown.push_str(parts.next().unwrap_or_default());
    while let (Some(id), Some(_column), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        shown.push_str(id);
        shown.push_str(rest);
    }
    shown
}

/// `query` with each parameter written in as a literal of its column's type (NULL for a null
/// value, which compares as NULL in both engines). `Err` names the parameter whose value is
/// missing or cannot be written (a date beyond year 9999); the statement is then run with its
/// values bound before planning instead.
pub(crate) fn bind_parameters(
    query: &str,
    columns: &[PgColumn],
    values: Option<&ParamValues>,
) -> Result<String, String> {
    fill_parameters(query, columns, values, |bound, id, column, value| {
        let literal = literal_for(column, value).ok_or_else(|| unwritable(id, column))?;
        bound.push_str(&literal);
        Ok(())
    })
}

/// `query` with each parameter written as a Postgres parameter (`$1`, typed as its literal
/// would be), and the parameters' values in text, in order: the statement's text is then the
/// same for every value, so Postgres can parse and plan it once per connection. A null value
/// is written as NULL. `Err` as for [`bind_parameters`].
pub(crate) fn bind_parameter_values(
    query: &str,
    columns: &[PgColumn],
    values: Option<&ParamValues>,
) -> Result<(String, Vec<String>), String> {
    let mut texts = Vec::new();
    let bound = fill_parameters(query, columns, values, |bound, id, column, value| {
        let (text, written) = value_for(column, value).ok_or_else(|| unwritable(id, column))?;
        texts.push(text);
        let _ = write!(bound, "${}", texts.len());
        if let Written::Cast(type_name) = written {
            let _ = write!(bound, "::{type_name}");
        }
        Ok(())
    })?;
    Ok((bound, texts))
}

/// `query` with each parameter marker replaced: NULL for a null value, `fill`'s writing of the
/// value otherwise.
fn fill_parameters(
    query: &str,
    columns: &[PgColumn],
    values: Option<&ParamValues>,
    mut fill: impl FnMut(&mut String, &str, &PgColumn, &ScalarValue) -> Result<(), String>,
) -> Result<String, String> {
    let mut bound = String::with_capacity(query.len() + 16);
    let mut parts = query.split('\0');
    bound.push_str(parts.next().unwrap_or_default());
    while let (Some(id), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        let values = values.ok_or_else(|| format!("no value for parameter {id}"))?;
        let value = values
            .get_placeholders_with_values(id)
            .map_err(|_| format!("no value for parameter {id}"))?;
        let column = columns
            .iter()
            .find(|column| column.name == name)
            .ok_or_else(|| format!("parameter {id} is compared with an unknown column"))?;
        if value.value.is_null() {
            bound.push_str("NULL");
        } else {
            fill(&mut bound, id, column, &value.value)?;
        }
        bound.push_str(rest);
    }
    Ok(bound)
}

fn unwritable(id: &str, column: &PgColumn) -> String {
    format!(
        "the value of parameter {id} cannot be compared with column `{}` in PostgreSQL",
        column.name
    )
}

/// `condition` on `column`, NULL where the column holds a value fjord reads as NULL (an
/// infinite timestamp, a NaN numeric), as DataFusion would see it; unchanged otherwise, so an
/// index still serves the condition.
fn guarded(column: &PgColumn, condition: String) -> String {
    match column.read_as_null(&quote_identifier(&column.name)) {
        Some(special) => format!("({condition} AND (NOT {special} OR NULL))"),
        None => condition,
    }
}

/// A literal written so that Postgres reads it as a value of the column's type, or `None` when
/// the pair is not one whose comparison means the same in both engines.
fn literal_for(column: &PgColumn, value: &ScalarValue) -> Option<String> {
    let (text, written) = value_for(column, value)?;
    Some(match written {
        Written::Untyped => quote_literal(&text)?,
        // Unquoted, as Postgres types an integer literal by its size: exactly these.
        Written::Cast("int4" | "int8") => text,
        Written::Cast("numeric") => format!("{text}::numeric"),
        Written::Cast(type_name) => format!("{}::{type_name}", quote_literal(&text)?),
    })
}

/// How a value is written for Postgres: a string literal whose type Postgres works out from
/// where it stands (as for a column's own type), or a value of the named type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Untyped,
    Cast(&'static str),
}

/// A value as Postgres reads it in text and how it is typed, or `None` when the pair is not
/// one whose comparison means the same in both engines. The same value is either written into
/// the statement as a literal ([`literal_for`]) or sent beside it as a parameter
/// ([`bind_parameter_values`]), with the same meaning.
fn value_for(column: &PgColumn, value: &ScalarValue) -> Option<(String, Written)> {
    use PgKind as K;
    use ScalarValue as V;
    // An integer literal is an int4 if it fits, else an int8, else a numeric.
    let integer = |v: i128| {
        let written = if i32::try_from(v).is_ok() {
            "int4"
        } else if i64::try_from(v).is_ok() {
            "int8"
        } else {
            "numeric"
        };
        Some((v.to_string(), Written::Cast(written)))
    };
    let text = |text: &str| (!text.contains('\0')).then(|| (text.to_string(), Written::Untyped));
    match (&column.kind, value) {
        (K::Text, V::Utf8(Some(value)) | V::Utf8View(Some(value)) | V::LargeUtf8(Some(value))) => {
            text(value)
        }
        (kind, V::Utf8(Some(value)) | V::Utf8View(Some(value)) | V::LargeUtf8(Some(value)))
            if kind.is_text_view() =>
        {
            text(value)
        }
        (K::Bool, V::Boolean(Some(b))) => Some((b.to_string(), Written::Cast("bool"))),
        (K::Int2 | K::Int4 | K::Int8 | K::Oid | K::Numeric { .. }, scalar) => match scalar {
            V::Int8(Some(v)) => integer(*v as i128),
            V::Int16(Some(v)) => integer(*v as i128),
            V::Int32(Some(v)) => integer(*v as i128),
            V::Int64(Some(v)) => integer(*v as i128),
            V::UInt8(Some(v)) => integer(*v as i128),
            V::UInt16(Some(v)) => integer(*v as i128),
            V::UInt32(Some(v)) => integer(*v as i128),
            V::UInt64(Some(v)) => integer(*v as i128),
            V::Decimal128(Some(v), _, scale) => {
                Some((decimal_text(*v, *scale), Written::Cast("numeric")))
            }
            _ => None,
        },
        (K::Float4 | K::Float8, scalar) => match scalar {
            // Integers compare exactly; floats only when finite (NaN orders differently in
            // the two engines), and not zero: -0 equals 0 in Postgres and sorts below it in
            // DataFusion.
            V::Float64(Some(v)) if v.is_finite() && *v != 0.0 => {
                Some((format!("{v:?}"), Written::Cast("float8")))
            }
            V::Float32(Some(v)) if v.is_finite() && *v != 0.0 && column.kind == K::Float4 => {
                Some((format!("{v:?}"), Written::Cast("float4")))
            }
            V::Int32(Some(v)) if *v != 0 => integer(*v as i128),
            V::Int64(Some(v)) if *v != 0 => integer(*v as i128),
            _ => None,
        },
        (K::Date, V::Date32(Some(days))) => Some((date_text(*days)?, Written::Cast("date"))),
        (K::Timestamp, V::TimestampMicrosecond(Some(micros), None)) => {
            Some((timestamp_text(*micros)?, Written::Cast("timestamp")))
        }
        (K::TimestampTz, V::TimestampMicrosecond(Some(micros), Some(_))) => Some((
            format!("{}+00", timestamp_text(*micros)?),
            Written::Cast("timestamptz"),
        )),
        (K::Timestamp, V::TimestampNanosecond(Some(nanos), None)) if nanos % 1000 == 0 => {
            Some((timestamp_text(nanos / 1000)?, Written::Cast("timestamp")))
        }
        (K::TimestampTz, V::TimestampNanosecond(Some(nanos), Some(_))) if nanos % 1000 == 0 => {
            Some((
                format!("{}+00", timestamp_text(nanos / 1000)?),
                Written::Cast("timestamptz"),
            ))
        }
        _ => None,
    }
}

/// The part of a run-time filter from a join (DataFusion's dynamic filters: the build side's key
/// range and, for a small build side, its keys as an IN list) that Postgres can apply, over the
/// scan's output `columns`. Such a filter only ever removes rows that cannot match, so a
/// conjunct that cannot be translated is left out (the join still checks every row); `None`
/// when nothing is left.
pub(crate) fn runtime_filter_sql(
    filter: &Arc<dyn PhysicalExpr>,
    columns: &[PgColumn],
) -> Option<String> {
    let translator = FilterTranslator { columns };
    let mut conjuncts = Vec::new();
    collect_conjuncts(filter, &mut conjuncts);
    let parts: Vec<String> = conjuncts
        .into_iter()
        .filter_map(|conjunct| runtime_condition(conjunct, columns, &translator))
        .filter(|sql| sql != "TRUE")
        .collect();
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

fn collect_conjuncts<'e>(
    expr: &'e Arc<dyn PhysicalExpr>,
    into: &mut Vec<&'e Arc<dyn PhysicalExpr>>,
) {
    if let Some(binary) = expr.as_any().downcast_ref::<physical::BinaryExpr>()
        && *binary.op() == Operator::And
    {
        collect_conjuncts(binary.left(), into);
        collect_conjuncts(binary.right(), into);
        return;
    }
    into.push(expr);
}

/// One conjunct exactly, or `None`. A hash join over several partitions routes each key to its
/// partition's filter with `CASE hash % n WHEN i THEN ... ELSE false END`: any row that passes
/// passes one branch, so the OR of the branches (each with its untranslatable parts left out)
/// keeps every such row.
fn runtime_condition(
    expr: &Arc<dyn PhysicalExpr>,
    columns: &[PgColumn],
    translator: &FilterTranslator<'_>,
) -> Option<String> {
    if let Some(case) = expr.as_any().downcast_ref::<physical::CaseExpr>() {
        let else_false = case.else_expr().is_none_or(|otherwise| {
            matches!(
                otherwise
                    .as_any()
                    .downcast_ref::<physical::Literal>()
                    .map(|l| l.value()),
                Some(ScalarValue::Boolean(Some(false)))
            )
        });
        if !else_false {
            return None;
        }
        let branches = case
            .when_then_expr()
            .iter()
            .map(|(_, then)| runtime_filter_sql(then, columns).unwrap_or_else(|| "TRUE".into()))
            .collect::<Vec<_>>();
        if branches.iter().any(|branch| branch == "TRUE") {
            return None;
        }
        if branches.is_empty() {
            return Some("FALSE".into());
        }
        return Some(format!("({})", branches.join(" OR ")));
    }
    translator.translate(&logical(expr, columns)?)
}

/// The logical form of the simple physical expressions run-time filters are made of.
fn logical(expr: &Arc<dyn PhysicalExpr>, columns: &[PgColumn]) -> Option<Expr> {
    let any = expr.as_any();
    if let Some(column) = any.downcast_ref::<physical::Column>() {
        let name = &columns.get(column.index())?.name;
        return Some(Expr::Column(datafusion::common::Column::new_unqualified(
            name.clone(),
        )));
    }
    if let Some(literal) = any.downcast_ref::<physical::Literal>() {
        return Some(Expr::Literal(literal.value().clone(), None));
    }
    // A join of this text with a lake string (a `Utf8View`) casts the text to a view: the
    // values are the same, so the filter is the column's own.
    if let Some(cast) = any.downcast_ref::<physical::CastExpr>()
        && cast.cast_type().is_string()
        && let Some(column) = cast.expr().as_any().downcast_ref::<physical::Column>()
        && columns.get(column.index())?.kind.data_type().is_string()
    {
        return logical(cast.expr(), columns);
    }
    if let Some(binary) = any.downcast_ref::<physical::BinaryExpr>() {
        return Some(Expr::BinaryExpr(BinaryExpr::new(
            Box::new(logical(binary.left(), columns)?),
            *binary.op(),
            Box::new(logical(binary.right(), columns)?),
        )));
    }
    if let Some(in_list) = any.downcast_ref::<physical::InListExpr>() {
        return Some(Expr::InList(datafusion::logical_expr::expr::InList::new(
            Box::new(logical(in_list.expr(), columns)?),
            in_list
                .list()
                .iter()
                .map(|item| logical(item, columns))
                .collect::<Option<Vec<_>>>()?,
            in_list.negated(),
        )));
    }
    None
}

/// Whether `text` is a uuid as Postgres writes one (lowercase, hyphenated): comparing it as a
/// uuid then means the same as comparing the column's text.
fn canonical_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok_and(|parsed| parsed.hyphenated().to_string() == text)
}

/// ` ESCAPE 'c'` for a LIKE with its own escape character, empty for the default (backslash
/// in both engines).
pub(crate) fn escape_clause(escape: Option<char>) -> Option<String> {
    match escape {
        None => Some(String::new()),
        Some(c) => Some(format!(" ESCAPE {}", quote_literal(&c.to_string())?)),
    }
}

/// Years 1 to 9999: written and read the same way by both engines (chrono writes year 0 and
/// years past 9999 in forms Postgres reads differently or not at all).
fn plain_year(year: i32) -> Option<()> {
    (1..=9999).contains(&year).then_some(())
}

/// A date as Postgres reads it, for days since 1970-01-01; `None` outside years 1 to 9999.
pub(crate) fn date_text(days: i32) -> Option<String> {
    let date = chrono::DateTime::from_timestamp(days as i64 * 86_400, 0)?.date_naive();
    plain_year(chrono::Datelike::year(&date))?;
    Some(date.format("%Y-%m-%d").to_string())
}

/// A timestamp without zone as Postgres reads it, for microseconds since the epoch (UTC);
/// `None` outside years 1 to 9999.
pub(crate) fn timestamp_text(micros: i64) -> Option<String> {
    let timestamp = chrono::DateTime::from_timestamp_micros(micros)?;
    plain_year(chrono::Datelike::year(&timestamp.naive_utc()))?;
    Some(
        timestamp
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string(),
    )
}

pub(crate) fn decimal_text(value: i128, scale: i8) -> String {
    if scale <= 0 {
        let mut text = value.to_string();
        for _ in 0..(-scale) {
            text.push('0');
        }
        return text;
    }
    let negative = value < 0;
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    let mut text = String::new();
    if negative {
        text.push('-');
    }
    let _ = write!(text, "{whole}.{fraction}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn column(name: &str, kind: PgKind) -> PgColumn {
        PgColumn {
            name: name.into(),
            type_name: String::new(),
            kind,
            nullable: true,
        }
    }

    fn parameter(id: &str, data_type: DataType) -> Expr {
        let field = Arc::new(datafusion::arrow::datatypes::Field::new(
            "", data_type, true,
        ));
        Expr::Placeholder(Placeholder::new_with_field(id.into(), Some(field)))
    }

    #[test]
    fn parameters_are_written_in_as_literals_of_their_column() {
        let columns = vec![
            column("id", PgKind::Int8),
            column("name", PgKind::Text),
            column("score", PgKind::Float8),
            column("born", PgKind::Date),
        ];
        let translator = FilterTranslator { columns: &columns };
        let by_id = translator
            .translate(&col("id").eq(parameter("$1", DataType::Int64)))
            .unwrap();
        let by_name = translator
            .translate(&parameter("$2", DataType::Utf8).lt(col("name")))
            .unwrap();
        let born = translator
            .translate(&col("born").lt(parameter("$3", DataType::Date32)))
            .unwrap();
        // Floats compare differently at zero and NaN; an untyped parameter has no kind.
        assert_eq!(
            translator.translate(&col("score").eq(parameter("$1", DataType::Float64))),
            None
        );
        assert_eq!(
            translator.translate(&col("id").eq(Expr::Placeholder(Placeholder::new_with_field(
                "$1".into(),
                None
            )))),
            None
        );
        let query = format!("SELECT 1 WHERE {by_id} AND {by_name} AND {born}");
        assert!(has_parameters(&query));
        assert_eq!(
            show_parameters(&query),
            r#"SELECT 1 WHERE ("id" = $1) AND ("name" COLLATE "C" > $2) AND ("born" < $3)"#
        );
        let values = ParamValues::List(vec![
            ScalarValue::Int64(Some(42)).into(),
            ScalarValue::Utf8(Some("o'brien; DROP".into())).into(),
            ScalarValue::Date32(Some(0)).into(),
        ]);
        assert_eq!(
            bind_parameters(&query, &columns, Some(&values)).unwrap(),
            r#"SELECT 1 WHERE ("id" = 42) AND ("name" COLLATE "C" > 'o''brien; DROP') AND ("born" < '1970-01-01'::date)"#
        );
        let nulls = ParamValues::List(vec![
            ScalarValue::Int64(None).into(),
            ScalarValue::Utf8(None).into(),
            ScalarValue::Date32(None).into(),
        ]);
        assert_eq!(
            bind_parameters(&query, &columns, Some(&nulls)).unwrap(),
            r#"SELECT 1 WHERE ("id" = NULL) AND ("name" COLLATE "C" > NULL) AND ("born" < NULL)"#
        );
        // A value that cannot be written, or none at all, is an error naming the parameter.
        let nul = ParamValues::List(vec![
            ScalarValue::Int64(Some(1)).into(),
            ScalarValue::Utf8(Some("nul\0".into())).into(),
            ScalarValue::Date32(Some(0)).into(),
        ]);
        assert!(
            bind_parameters(&query, &columns, Some(&nul))
                .unwrap_err()
                .contains("$2")
        );
        assert!(
            bind_parameters(&query, &columns, None)
                .unwrap_err()
                .contains("$1")
        );
        let short = ParamValues::List(vec![ScalarValue::Int64(Some(1)).into()]);
        assert!(
            bind_parameters(&query, &columns, Some(&short))
                .unwrap_err()
                .contains("$2")
        );

        // Sent beside the statement instead: the same text for every value, each parameter
        // typed as its literal is, the values in text, and NULL still written in.
        let (text, sent) = bind_parameter_values(&query, &columns, Some(&values)).unwrap();
        assert_eq!(
            text,
            r#"SELECT 1 WHERE ("id" = $1::int4) AND ("name" COLLATE "C" > $2) AND ("born" < $3::date)"#
        );
        assert_eq!(sent, ["42", "o'brien; DROP", "1970-01-01"]);
        let large = ParamValues::List(vec![
            ScalarValue::Int64(Some(1 << 40)).into(),
            ScalarValue::Utf8(None).into(),
            ScalarValue::Date32(Some(1)).into(),
        ]);
        let (text, sent) = bind_parameter_values(&query, &columns, Some(&large)).unwrap();
        assert_eq!(
            text,
            r#"SELECT 1 WHERE ("id" = $1::int8) AND ("name" COLLATE "C" > NULL) AND ("born" < $2::date)"#
        );
        assert_eq!(sent, ["1099511627776", "1970-01-02"]);
        assert!(
            bind_parameter_values(&query, &columns, Some(&nul))
                .unwrap_err()
                .contains("$2")
        );
    }

    #[test]
    fn identifiers_and_literals_cannot_escape_their_quotes() {
        assert_eq!(quote_identifier(r#"we"ird; DROP"#), r#""we""ird; DROP""#);
        assert_eq!(quote_literal("it's \\ fine").unwrap(), "'it''s \\ fine'");
        assert_eq!(quote_literal("nul\0"), None);
    }

    #[test]
    fn translates_filters_with_exact_semantics() {
        let columns = vec![
            column("name", PgKind::Text),
            column("age", PgKind::Int4),
            column("cat_id", PgKind::Uuid),
            column(
                "weight_kg",
                PgKind::Numeric {
                    precision: 4,
                    scale: 1,
                },
            ),
        ];
        let translator = FilterTranslator { columns: &columns };
        assert_eq!(
            translator
                .translate(&col("name").eq(lit("O'Malley")))
                .unwrap(),
            r#"("name" = 'O''Malley')"#
        );
        assert_eq!(
            translator.translate(&col("name").gt(lit("M"))).unwrap(),
            r#"("name" COLLATE "C" > 'M')"#
        );
        assert_eq!(
            translator
                .translate(&lit(3).lt(col("age")).and(col("age").is_not_null()))
                .unwrap(),
            r#"(("age" > 3) AND ("age" IS NOT NULL))"#
        );
        let id = "5b0e7d3c-1f1a-4c55-9a43-8f1f2a6c1e11";
        assert_eq!(
            translator.translate(&col("cat_id").eq(lit(id))).unwrap(),
            format!(r#"("cat_id" = '{id}'::uuid)"#)
        );
        assert_eq!(
            translator
                .translate(&col("cat_id").eq(lit("not-a-uuid")))
                .unwrap(),
            r#"("cat_id"::text = 'not-a-uuid')"#
        );
        assert_eq!(
            translator
                .translate(&col("weight_kg").gt(lit(ScalarValue::Decimal128(Some(-45), 4, 1))))
                .unwrap(),
            r#"(("weight_kg" > -4.5::numeric) AND (NOT "weight_kg" = 'NaN' OR NULL))"#
        );
        // Functions and unknown columns stay in DataFusion.
        assert!(translator.translate(&col("missing").eq(lit(1))).is_none());
        assert!(translator.translate(&col("age").eq(lit("3"))).is_none());
    }

    #[test]
    fn decimal_text_places_the_point() {
        assert_eq!(decimal_text(125, 1), "12.5");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(decimal_text(7, -2), "700");
    }
}
