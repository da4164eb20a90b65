//! `interval * number`, `number * interval` and `interval / number`, as PostgreSQL computes them.
//!
//! DataFusion 53 types the number as an interval and then finds no interval product ("Cannot
//! get result type for temporal operation"), so `now() - interval '1 day' * 7` failed to plan.
//! The SQL planner asks expression planners about each binary operator before it builds one;
//! this one turns these three forms into calls of functions that scale an interval the way
//! PostgreSQL's `interval_mul` and `interval_div` do: months, days and microseconds each
//! scaled, with the fraction of a month carried into days (30 a month) and the fraction of a
//! day into time (86,400 seconds), so `interval '1 month' * 0.5` is `15 days` and
//! `interval '1 day' / 4` is `06:00:00`.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::error::{EngineError, sqlstate};

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);

/// The expression planner: registered with the session, consulted for every binary operator.
#[derive(Debug, Default)]
pub(crate) struct IntervalArithmetic;

impl ExprPlanner for IntervalArithmetic {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let is_interval = |side: &Expr| matches!(side.get_type(schema), Ok(DataType::Interval(_)));
        // An untyped parameter beside an interval is a number, as Postgres infers it
        // (`interval '1 day' * $1` takes a float8).
        let is_number = |side: &Expr| match side {
            Expr::Placeholder(placeholder) if placeholder.field.is_none() => true,
            side => side.get_type(schema).is_ok_and(|t| t.is_numeric()),
        };
        let (interval, factor, operation) = match expr.op {
            BinaryOperator::Multiply if is_interval(&expr.left) && is_number(&expr.right) => {
                (&expr.left, &expr.right, Operation::Multiply)
            }
            BinaryOperator::Multiply if is_number(&expr.left) && is_interval(&expr.right) => {
                (&expr.right, &expr.left, Operation::Multiply)
            }
            BinaryOperator::Divide if is_interval(&expr.left) && is_number(&expr.right) => {
                (&expr.left, &expr.right, Operation::Divide)
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let call = Arc::new(ScalarUDF::new_from_impl(ScaleInterval::new(operation))).call(vec![
            cast(interval.clone(), INTERVAL),
            cast(factor.clone(), DataType::Float64),
        ]);
        Ok(PlannerResult::Planned(call))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Operation {
    Multiply,
    Divide,
}

/// `fjord_interval_mul(interval, float8)` or `fjord_interval_div(interval, float8)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ScaleInterval {
    operation: Operation,
    signature: Signature,
}

impl ScaleInterval {
    fn new(operation: Operation) -> Self {
        ScaleInterval {
            operation,
            signature: Signature::exact(vec![INTERVAL, DataType::Float64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ScaleInterval {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        match self.operation {
            Operation::Multiply => "fjord_interval_mul",
            Operation::Divide => "fjord_interval_div",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(INTERVAL)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalars = args
            .args
            .iter()
            .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let intervals = arrays[0].as_primitive::<IntervalMonthDayNanoType>();
        let factors = arrays[1].as_primitive::<Float64Type>();
        let scaled = intervals
            .iter()
            .zip(factors.iter())
            .map(|pair| match pair {
                (Some(interval), Some(factor)) => match self.operation {
                    Operation::Multiply => scale(interval, |value| value * factor),
                    Operation::Divide if factor == 0.0 => Err(EngineError::new(
                        sqlstate::DIVISION_BY_ZERO,
                        "division by zero",
                    )),
                    Operation::Divide => scale(interval, |value| value / factor),
                }
                .map(Some),
                _ => Ok(None),
            })
            .collect::<Result<IntervalMonthDayNanoArray, EngineError>>()
            .map_err(|error| DataFusionError::External(Box::new(error)))?;
        let scaled: ArrayRef = Arc::new(scaled);
        if scalars {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &scaled, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(scaled))
        }
    }
}

const DAYS_PER_MONTH: f64 = 30.0;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// PostgreSQL's timestamp precision: values are rounded to microseconds.
fn round_to_micros(value: f64) -> f64 {
    (value * 1e6).round_ties_even() / 1e6
}

/// `interval` with each field scaled by `by` (a product, or a quotient: PostgreSQL divides
/// rather than multiplying by the inverse), the fractions carried down as PostgreSQL's
/// `interval_mul` and `interval_div` carry them.
fn scale(
    interval: IntervalMonthDayNano,
    by: impl Fn(f64) -> f64,
) -> Result<IntervalMonthDayNano, EngineError> {
    let out_of_range =
        || EngineError::new(sqlstate::DATETIME_FIELD_OVERFLOW, "interval out of range");
    let to_i32 = |value: f64| {
        (!value.is_nan() && value >= f64::from(i32::MIN) && value < -f64::from(i32::MIN))
            .then_some(value as i32)
            .ok_or_else(out_of_range)
    };
    let months_exact = by(f64::from(interval.months));
    let months = to_i32(months_exact)?;
    let days_exact = by(f64::from(interval.days));
    let mut days = to_i32(days_exact)?;
    let month_remainder_days = round_to_micros((months_exact - f64::from(months)) * DAYS_PER_MONTH);
    let mut seconds_remainder = round_to_micros(
        (days_exact - f64::from(days) + month_remainder_days
            - f64::from(month_remainder_days as i32))
            * SECONDS_PER_DAY,
    );
    if seconds_remainder.abs() >= SECONDS_PER_DAY {
        let whole_days = (seconds_remainder / SECONDS_PER_DAY) as i32;
        days = days.checked_add(whole_days).ok_or_else(out_of_range)?;
        seconds_remainder -= f64::from(whole_days) * SECONDS_PER_DAY;
    }
    days = days
        .checked_add(month_remainder_days as i32)
        .ok_or_else(out_of_range)?;
    // Postgres keeps microseconds; Arrow's interval counts nanoseconds.
    let micros =
        (by(interval.nanoseconds as f64 / 1000.0) + seconds_remainder * 1e6).round_ties_even();
    if micros.is_nan() || micros.abs() >= (i64::MAX / 1000) as f64 {
        return Err(out_of_range());
    }
    Ok(IntervalMonthDayNano::new(
        months,
        days,
        micros as i64 * 1000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(months: i32, days: i32, micros: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, micros * 1000)
    }

    fn times(value: IntervalMonthDayNano, factor: f64) -> IntervalMonthDayNano {
        scale(value, |v| v * factor).unwrap()
    }

    fn divided(value: IntervalMonthDayNano, factor: f64) -> IntervalMonthDayNano {
        scale(value, |v| v / factor).unwrap()
    }

    #[test]
    fn fractions_carry_down_as_in_postgres() {
        // What PostgreSQL 15 gives for each.
        let hours = |h: i64| h * 3_600_000_000;
        assert_eq!(times(interval(0, 1, 0), 7.0), interval(0, 7, 0));
        assert_eq!(times(interval(1, 0, 0), 0.5), interval(0, 15, 0));
        assert_eq!(times(interval(0, 1, 0), 1.5), interval(0, 1, hours(12)));
        assert_eq!(
            times(interval(0, 0, 1_000_000), -2.5),
            interval(0, 0, -2_500_000)
        );
        // '1 mon 1 day 1 hour' * 1.3 = '1 mon 10 days 08:30:00'
        assert_eq!(
            times(interval(1, 1, hours(1)), 1.3),
            interval(1, 10, 30_600_000_000)
        );
        // '1 year 2 mons' * 0.37 = '5 mons 5 days 09:36:00'
        assert_eq!(
            times(interval(14, 0, 0), 0.37),
            interval(5, 5, 34_560_000_000)
        );
        // '-1 mon 3 days' * 2.7 = '-2 mons -13 days +02:24:00'
        assert_eq!(
            times(interval(-1, 3, 0), 2.7),
            interval(-2, -13, 8_640_000_000)
        );
        // '1 mon' * 1e-7 = '00:00:00.2592'
        assert_eq!(times(interval(1, 0, 0), 1e-7), interval(0, 0, 259_200));
        // Half a microsecond rounds to even.
        assert_eq!(times(interval(0, 2, 1), 0.5), interval(0, 1, 0));
        assert_eq!(divided(interval(0, 1, 0), 4.0), interval(0, 0, hours(6)));
        // '1 mon' / 7 = '4 days 06:51:25.6896'
        assert_eq!(
            divided(interval(1, 0, 0), 7.0),
            interval(0, 4, 24_685_689_600)
        );
        assert_eq!(divided(interval(0, 1, 0), 0.3), interval(0, 3, hours(8)));
        // '7 days 3 hours' / 1.1 = '6 days 11:27:16.363636'
        assert_eq!(
            divided(interval(0, 7, hours(3)), 1.1),
            interval(0, 6, 41_236_363_636)
        );
        assert!(scale(interval(0, 2_000_000_000, 0), |v| v * 2.0).is_err());
    }
}
