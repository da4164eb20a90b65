//! Timestamps and times as text, written as PostgreSQL writes them (DateStyle ISO).
//!
//! Arrow's formatting prints `2026-01-01T10:00:00.500+01:00`; PostgreSQL prints
//! `2026-01-01 10:00:00.5+01`: a space, only the fractional digits needed (none for whole
//! seconds), and the offset's minutes and seconds only when they are not zero. Clients compare
//! and parse this text, so the same rendering serves two places: text-format result columns
//! (the Postgres front door calls [`render_column`]) and casts to text inside statements
//! (`ts::text`, `concat('at ', ts)`), which the analyzer rule [`TemporalTextCasts`] turns into
//! calls of a function that renders the same way.

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Whether [`render_column`] writes values of this type.
pub fn is_temporal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _) | DataType::Time32(_) | DataType::Time64(_)
    )
}

/// A timestamp or time column as PostgreSQL's text; `None` for other types (or a zone arrow
/// cannot read).
pub fn render_column(column: &ArrayRef) -> Option<ArrayRef> {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 26);
    match column.data_type() {
        DataType::Timestamp(_, zone) => {
            let zone = match zone {
                Some(zone) => Some(Tz::from_str(zone).ok()?),
                None => None,
            };
            let micros = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()?;
            let micros = micros.as_primitive::<TimestampMicrosecondType>();
            for value in micros.iter() {
                match value {
                    None => out.append_null(),
                    Some(value) => {
                        let utc = DateTime::from_timestamp_micros(value)?.naive_utc();
                        match &zone {
                            None => out.append_value(timestamp_text(&utc, None)),
                            Some(zone) => {
                                let offset = zone.offset_from_utc_datetime(&utc).fix();
                                let local = utc + offset;
                                out.append_value(timestamp_text(
                                    &local,
                                    Some(offset.local_minus_utc()),
                                ));
                            }
                        }
                    }
                }
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros = cast(column, &DataType::Time64(TimeUnit::Microsecond)).ok()?;
            for value in micros.as_primitive::<Time64MicrosecondType>().iter() {
                match value {
                    None => out.append_null(),
                    Some(value) => out.append_value(time_text(value)),
                }
            }
        }
        _ => return None,
    }
    Some(Arc::new(out.finish()))
}

/// `2026-11-21 10:00:00.5` (and `+01` or `+05:30` after it when `offset_seconds` is given).
fn timestamp_text(local: &NaiveDateTime, offset_seconds: Option<i32>) -> String {
    let mut text = local.format("%Y-%m-%d %H:%M:%S").to_string();
    push_fraction(&mut text, local.and_utc().timestamp_subsec_micros());
    if let Some(seconds) = offset_seconds {
        let sign = if seconds < 0 { '-' } else { '+' };
        let seconds = seconds.unsigned_abs();
        text.push_str(&format!("{sign}{:02}", seconds / 3600));
        let (minutes, rest) = (seconds / 60 % 60, seconds % 60);
        if minutes != 0 || rest != 0 {
            text.push_str(&format!(":{minutes:02}"));
        }
        if rest != 0 {
            text.push_str(&format!(":{rest:02}"));
        }
    }
    text
}

/// `10:00:00.25` from microseconds since midnight.
fn time_text(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    push_fraction(&mut text, micros.rem_euclid(1_000_000) as u32);
    text
}

/// `.5` for 500000 µs, nothing for 0.
fn push_fraction(text: &mut String, micros: u32) {
    if micros == 0 {
        return;
    }
    let digits = format!("{micros:06}");
    text.push('.');
    text.push_str(digits.trim_end_matches('0'));
}

/// `fjord_temporal_text(ts)`: [`render_column`] as a function, what casts to text become.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TemporalText {
    signature: Signature,
}

const FUNCTION: &str = "fjord_temporal_text";

fn function() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TemporalText {
        signature: Signature::any(1, Volatility::Immutable),
    }))
}

impl ScalarUDFImpl for TemporalText {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let is_scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let column = args.args[0].to_array(args.number_rows.max(1))?;
        let text = render_column(&column).ok_or_else(|| {
            DataFusionError::Execution(format!("cannot write {} as text", column.data_type()))
        })?;
        if is_scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&text, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(text))
        }
    }
}

/// Runs after type coercion: a cast of a timestamp or time to a string type (written, or added
/// by coercion as in `concat`) renders as PostgreSQL does.
#[derive(Debug, Default)]
pub(crate) struct TemporalTextCasts;

impl AnalyzerRule for TemporalTextCasts {
    fn name(&self) -> &str {
        "fjord_temporal_text_casts"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let function = function();
        plan.transform_up_with_subqueries(|node| {
            let mut schema = merge_schema(&node.inputs());
            if let LogicalPlan::TableScan(scan) = &node
                && let Ok(source) = DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )
            {
                schema.merge(&source);
            }
            // Columns keep the names they had (`CAST(... AS VARCHAR)`), not the function's.
            let names = NamePreserver::new(&node);
            node.map_expressions(|expression| {
                let name = names.save(&expression);
                expression
                    .transform_up(|inner| rewrite(inner, &schema, &function))
                    .map(|rewritten| rewritten.update_data(|expression| name.restore(expression)))
            })
        })
        .map(|transformed| transformed.data)
    }
}

fn rewrite(
    expression: Expr,
    schema: &DFSchema,
    function: &Arc<ScalarUDF>,
) -> Result<Transformed<Expr>> {
    let (inner, target) = match &expression {
        Expr::Cast(Cast { expr, data_type }) | Expr::TryCast(TryCast { expr, data_type }) => {
            (expr, data_type)
        }
        _ => return Ok(Transformed::no(expression)),
    };
    let is_text = matches!(
        target,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    if !is_text || !inner.get_type(schema).is_ok_and(|from| is_temporal(&from)) {
        return Ok(Transformed::no(expression));
    }
    let target = target.clone();
    let call = Expr::ScalarFunction(ScalarFunction::new_udf(
        function.clone(),
        vec![inner.as_ref().clone()],
    ));
    Ok(Transformed::yes(if target == DataType::Utf8 {
        call
    } else {
        Expr::Cast(Cast::new(Box::new(call), target))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn fractions_and_offsets_are_written_as_postgres_writes_them() {
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00"), None),
            "2026-01-01 10:00:00"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00.5"), Some(0)),
            "2026-01-01 10:00:00.5+00"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00.12348"), Some(3600)),
            "2026-01-01 10:00:00.12348+01"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00.000001"), Some(19800)),
            "2026-01-01 10:00:00.000001+05:30"
        );
        assert_eq!(
            timestamp_text(&naive("2026-01-01 10:00:00"), Some(-12600)),
            "2026-01-01 10:00:00-03:30"
        );
        assert_eq!(time_text(36_000_250_000), "10:00:00.25");
        assert_eq!(time_text(0), "00:00:00");
    }
}
