//! Timestamps, times and floating-point numbers as text, written as PostgreSQL writes them
//! (DateStyle ISO, extra_float_digits 1 or more, the default).
//!
//! Arrow's formatting prints `2026-01-01T10:00:00.500+01:00`; PostgreSQL prints
//! `2026-01-01 10:00:00.5+01`: a space, only the fractional digits needed (none for whole
//! seconds), and the offset's minutes and seconds only when they are not zero. Arrow prints the
//! double 3 as `3.0` and 1e20 as `1e20`; PostgreSQL prints `3` and `1e+20` (the shortest digits
//! that read back exactly, in exponent form below 1e-4 and from 1e15, 1e6 for `real`).
//! Clients compare and parse this text, so the same rendering serves two places: text-format
//! result columns (the Postgres front door calls [`render_column`]) and casts to text inside
//! statements (`ts::text`, `concat('at ', ts)`), which the analyzer rule [`TextCasts`] turns
//! into calls of a function that renders the same way.

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;

use std::fmt::Write;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, IntervalMonthDayNano,
    IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Whether [`render_column`] writes values of this type.
pub fn is_rendered(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Float32
            | DataType::Float64
            | DataType::Interval(_)
    )
}

/// A timestamp, time or float column as PostgreSQL's text; `None` for other types (or a zone
/// arrow cannot read). `extra_float_digits` is the session's setting: 1 or more gives the
/// shortest exact digits, 0 or less rounds to 15 (6 for `real`) plus that many digits, as
/// PostgreSQL does.
pub fn render_column(column: &ArrayRef, extra_float_digits: i32) -> Option<ArrayRef> {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 26);
    match column.data_type() {
        DataType::Timestamp(unit, zone) => {
            let zone = match zone {
                Some(zone) => Some(Tz::from_str(zone).ok()?),
                None => None,
            };
            let micros = primitive::<TimestampMicrosecondType>(
                column,
                *unit == TimeUnit::Microsecond,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            render_each(&micros, &mut out, |text, value| {
                let utc = DateTime::from_timestamp_micros(value)?.naive_utc();
                match &zone {
                    None => push_timestamp_text(text, &utc, None),
                    Some(zone) => {
                        let offset = zone.offset_from_utc_datetime(&utc).fix();
                        push_timestamp_text(text, &(utc + offset), Some(offset.local_minus_utc()));
                    }
                }
                Some(())
            })?;
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros = primitive::<Time64MicrosecondType>(
                column,
                false,
                &DataType::Time64(TimeUnit::Microsecond),
            )?;
            render_each(&micros, &mut out, |text, value| {
                text.push_str(&time_text(value));
                Some(())
            })?;
        }
        DataType::Interval(unit) => {
            let intervals = primitive::<IntervalMonthDayNanoType>(
                column,
                *unit == IntervalUnit::MonthDayNano,
                &DataType::Interval(IntervalUnit::MonthDayNano),
            )?;
            render_each(&intervals, &mut out, |text, value| {
                push_interval_text(text, value);
                Some(())
            })?;
        }
        DataType::Float64 => {
            render_each(
                column.as_primitive::<Float64Type>(),
                &mut out,
                |text, value| {
                    push_double_text(text, value, extra_float_digits);
                    Some(())
                },
            )?;
        }
        DataType::Float32 => {
            render_each(
                column.as_primitive::<Float32Type>(),
                &mut out,
                |text, value| {
                    push_real_text(text, value, extra_float_digits);
                    Some(())
                },
            )?;
        }
        _ => return None,
    }
    Some(Arc::new(out.finish()))
}

/// `column` as an array of `T`: itself when it already is one (`as_is`; a cast costs more
/// than rendering a few rows), else cast to `target`.
fn primitive<T: ArrowPrimitiveType>(
    column: &ArrayRef,
    as_is: bool,
    target: &DataType,
) -> Option<PrimitiveArray<T>> {
    if as_is {
        return Some(column.as_primitive::<T>().clone());
    }
    Some(cast(column, target).ok()?.as_primitive::<T>().clone())
}

/// Appends each value of `values` to `out` as `push` writes it (nulls as nulls), through one
/// reused buffer; `None` if `push` gives up on a value.
fn render_each<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
    out: &mut StringBuilder,
    mut push: impl FnMut(&mut String, T::Native) -> Option<()>,
) -> Option<()> {
    let mut text = String::with_capacity(32);
    for value in values.iter() {
        match value {
            None => out.append_null(),
            Some(value) => {
                text.clear();
                push(&mut text, value)?;
                out.append_value(&text);
            }
        }
    }
    Some(())
}

/// `2026-11-21 10:00:00.5` (and `+01` or `+05:30` after it when `offset_seconds` is given).
#[cfg(test)]
fn timestamp_text(local: &NaiveDateTime, offset_seconds: Option<i32>) -> String {
    let mut text = String::with_capacity(32);
    push_timestamp_text(&mut text, local, offset_seconds);
    text
}

/// [`timestamp_text`] appended to `text`: written digit by digit rather than through chrono's
/// format strings, which cost more than the rest of a text result's row.
fn push_timestamp_text(text: &mut String, local: &NaiveDateTime, offset_seconds: Option<i32>) {
    let year = local.year();
    if (0..=9999).contains(&year) {
        push_digits(text, year.unsigned_abs(), 4);
        text.push('-');
        push_digits(text, local.month(), 2);
        text.push('-');
        push_digits(text, local.day(), 2);
        text.push(' ');
        push_digits(text, local.hour(), 2);
        text.push(':');
        push_digits(text, local.minute(), 2);
        text.push(':');
        push_digits(text, local.second(), 2);
    } else {
        // Years of five digits or before year 0, as chrono writes them (`+10000`, `-0001`).
        let _ = write!(text, "{}", local.format("%Y-%m-%d %H:%M:%S"));
    }
    push_fraction(text, local.and_utc().timestamp_subsec_micros());
    if let Some(seconds) = offset_seconds {
        text.push(if seconds < 0 { '-' } else { '+' });
        let seconds = seconds.unsigned_abs();
        push_digits(text, seconds / 3600, 2);
        let (minutes, rest) = (seconds / 60 % 60, seconds % 60);
        if minutes != 0 || rest != 0 {
            text.push(':');
            push_digits(text, minutes, 2);
        }
        if rest != 0 {
            text.push(':');
            push_digits(text, rest, 2);
        }
    }
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(text: &mut String, value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut at = digits.len();
    let mut rest = value;
    while rest > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text.extend(digits[at..].iter().map(|&digit| char::from(digit)));
}

/// An interval as PostgreSQL writes it (IntervalStyle `postgres`): `1 year 2 mons`,
/// `3 days 04:05:06.5`, `-2 mons -13 days +02:24:00` (a field after a negative one carries its
/// sign), `00:00:00` for none. Nanoseconds below a microsecond, which Postgres cannot hold,
/// are dropped.
fn push_interval_text(text: &mut String, interval: IntervalMonthDayNano) {
    let mut is_zero = true;
    let mut is_before = false;
    let fields = [
        (interval.months / 12, "year"),
        (interval.months % 12, "mon"),
        (interval.days, "day"),
    ];
    for (value, unit) in fields {
        if value == 0 {
            continue;
        }
        if !is_zero {
            text.push(' ');
        }
        if is_before && value > 0 {
            text.push('+');
        }
        let _ = write!(text, "{value} {unit}");
        if value != 1 {
            text.push('s');
        }
        is_before = value < 0;
        is_zero = false;
    }
    let micros = interval.nanoseconds / 1000;
    if is_zero || micros != 0 {
        if !is_zero {
            text.push(' ');
        }
        if micros < 0 {
            text.push('-');
        } else if is_before {
            text.push('+');
        }
        let micros = micros.unsigned_abs();
        let hours = micros / 3_600_000_000;
        if hours > u64::from(u32::MAX) {
            let _ = write!(text, "{hours}");
        } else {
            push_digits(text, hours as u32, 2);
        }
        text.push(':');
        push_digits(text, (micros / 60_000_000 % 60) as u32, 2);
        text.push(':');
        push_digits(text, (micros / 1_000_000 % 60) as u32, 2);
        push_fraction(text, (micros % 1_000_000) as u32);
    }
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

/// Decimal exponents from which PostgreSQL writes a `double precision` or `real` in exponent
/// form (DBL_DIG and FLT_DIG).
const DOUBLE_EXPONENT_FROM: i32 = 15;
const REAL_EXPONENT_FROM: i32 = 6;

/// [`double_text`] appended to `text`. With the shortest exact digits (`extra_float_digits`
/// above 0) and a decimal exponent from -4 up to 15, PostgreSQL writes a value as Rust's
/// `Display` does, plain and shortest (`0.0001`, `3`, `-0`), which costs a third of the way
/// through exponent form; a value outside that range cannot have shortest digits inside it,
/// as those would read back as another value.
fn push_double_text(text: &mut String, value: f64, extra_float_digits: i32) {
    let plain = value == 0.0 || (1e-4..1e15).contains(&value.abs());
    if extra_float_digits > 0 && plain {
        let _ = write!(text, "{value}");
    } else {
        text.push_str(&double_text(value, extra_float_digits));
    }
}

/// [`real_text`] appended to `text`, as [`push_double_text`] (plain below 1e6).
fn push_real_text(text: &mut String, value: f32, extra_float_digits: i32) {
    let plain = value == 0.0 || (1e-4..1e6).contains(&value.abs());
    if extra_float_digits > 0 && plain {
        let _ = write!(text, "{value}");
    } else {
        text.push_str(&real_text(value, extra_float_digits));
    }
}

/// A `double precision` as PostgreSQL writes it under `extra_float_digits`.
fn double_text(value: f64, extra_float_digits: i32) -> String {
    float_in_style(
        value,
        extra_float_digits,
        DOUBLE_EXPONENT_FROM,
        || format!("{value:e}"),
        |decimals| format!("{value:.decimals$e}"),
    )
}

/// A `real` as PostgreSQL writes it under `extra_float_digits`.
fn real_text(value: f32, extra_float_digits: i32) -> String {
    float_in_style(
        f64::from(value),
        extra_float_digits,
        REAL_EXPONENT_FROM,
        || format!("{value:e}"),
        |decimals| format!("{value:.decimals$e}"),
    )
}

/// The shortest exact digits (`shortest`, in the value's own precision) when
/// `extra_float_digits` is above 0; otherwise C's `%g` at `digits + extra_float_digits`
/// significant digits (`rounded` gives the exponent form with that many decimals).
fn float_in_style(
    value: f64,
    extra_float_digits: i32,
    digits: i32,
    shortest: impl FnOnce() -> String,
    rounded: impl FnOnce(usize) -> String,
) -> String {
    if extra_float_digits > 0 {
        return float_text(value, shortest(), digits);
    }
    let precision = (digits + extra_float_digits).max(1);
    let text = rounded((precision - 1) as usize);
    float_text(value, without_trailing_zeros(&text), precision)
}

/// `3.1400e2` as `3.14e2`, as C's `%g` drops them.
fn without_trailing_zeros(exponent_form: &str) -> String {
    match exponent_form.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        _ => exponent_form.to_string(),
    }
}

/// `value` as PostgreSQL writes it, from Rust's shortest round-trip digits in exponent form
/// (`shortest`, as `{:e}` gives them: `1.5e0`, `3e20`, `-2.5e-7`).
fn float_text(value: f64, shortest: String, exponent_from: i32) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let (mantissa, exponent) = shortest.split_once('e').unwrap_or((&shortest, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.trim_start_matches('0').is_empty() {
        return format!("{sign}0");
    }
    if exponent < -4 || exponent >= exponent_from {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        );
    }
    // Positional: the decimal point goes after digit `exponent + 1`.
    let point = exponent + 1;
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let point = point as usize;
    if digits.len() <= point {
        let zeros = "0".repeat(point - digits.len());
        format!("{sign}{digits}{zeros}")
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

/// `.5` for 500000 µs, nothing for 0.
fn push_fraction(text: &mut String, micros: u32) {
    if micros == 0 {
        return;
    }
    let mut micros = micros;
    let mut width = 6;
    while micros.is_multiple_of(10) {
        micros /= 10;
        width -= 1;
    }
    text.push('.');
    push_digits(text, micros, width);
}

/// `fjord_text(value)`: [`render_column`] as a function, what casts to text become.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgText {
    signature: Signature,
}

const FUNCTION: &str = "fjord_text";

fn function() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(PgText {
        signature: Signature::any(1, Volatility::Immutable),
    }))
}

impl ScalarUDFImpl for PgText {
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
        let text = render_column(&column, 1).ok_or_else(|| {
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

/// Runs after type coercion: a cast of a timestamp, time or float to a string type (written, or
/// added by coercion as in `concat`) renders as PostgreSQL does.
#[derive(Debug, Default)]
pub(crate) struct TextCasts;

impl AnalyzerRule for TextCasts {
    fn name(&self) -> &str {
        "fjord_text_casts"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let function = function();
        plan.transform_up_with_subqueries(|node| {
            let schema = crate::untyped_literals::expression_schema(&node);
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
    if !is_text || !inner.get_type(schema).is_ok_and(|from| is_rendered(&from)) {
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

    /// The rendering through chrono's format strings that the digit-by-digit one replaced.
    fn formatted(local: &NaiveDateTime, offset_seconds: Option<i32>) -> String {
        let mut text = local.format("%Y-%m-%d %H:%M:%S").to_string();
        let micros = local.and_utc().timestamp_subsec_micros();
        if micros != 0 {
            text.push('.');
            text.push_str(format!("{micros:06}").trim_end_matches('0'));
        }
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

    #[test]
    fn timestamps_are_written_as_chrono_formats_them() {
        let micros = [
            0,
            1,
            10,
            500_000,
            123_450,
            999_999,
            -1,
            946_684_800_000_000,
            1_798_761_600_123_456,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_135_596_800_000_000,
            -62_135_596_800_000_001,
            -62_198_755_200_000_000,
            -100_000_000_000_000_000,
        ];
        for value in micros {
            let local = DateTime::from_timestamp_micros(value).unwrap().naive_utc();
            for offset in [
                None,
                Some(0),
                Some(3600),
                Some(-12_600),
                Some(19_800),
                Some(-3_723),
            ] {
                assert_eq!(
                    timestamp_text(&local, offset),
                    formatted(&local, offset),
                    "{value} {offset:?}"
                );
            }
        }
    }

    #[test]
    fn plain_floats_are_written_as_through_exponent_form() {
        // Values around the bounds of plain form, and a spread of bit patterns.
        let mut doubles = vec![
            1e-4,
            1e-4 - 1e-20,
            9.999999999999999e-5,
            1e15,
            999_999_999_999_999.9,
            1e15 - 0.125,
            0.0,
            -0.0,
            0.1 + 0.2,
            -123.456,
            f64::NAN,
            f64::INFINITY,
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Exponents around the range that matters, any mantissa and sign.
            let exponent = 1023 - 20 + (state >> 57);
            let bits = (state & 0x800f_ffff_ffff_ffff) | (exponent << 52);
            doubles.push(f64::from_bits(bits));
            doubles.push(f64::from(f32::from_bits((state >> 32) as u32)));
        }
        for &value in &doubles {
            for digits in [1, 3] {
                let mut text = String::new();
                push_double_text(&mut text, value, digits);
                assert_eq!(text, double_text(value, digits), "{value:e}");
            }
            let mut text = String::new();
            push_double_text(&mut text, value, 0);
            assert_eq!(text, double_text(value, 0), "{value:e}");
            let value = value as f32;
            let mut text = String::new();
            push_real_text(&mut text, value, 1);
            assert_eq!(text, real_text(value, 1), "{value:e}");
        }
        let mut text = String::new();
        push_real_text(&mut text, 1e-4_f32, 1);
        assert_eq!(text, real_text(1e-4, 1));
        text.clear();
        push_real_text(&mut text, 999_999.94_f32, 1);
        assert_eq!(text, real_text(999_999.94, 1));
    }

    #[test]
    fn intervals_are_written_as_postgres_writes_them() {
        let text = |months: i32, days: i32, micros: i64| {
            let mut text = String::new();
            push_interval_text(
                &mut text,
                IntervalMonthDayNano::new(months, days, micros * 1000),
            );
            text
        };
        // What PostgreSQL 15 prints for each.
        for (interval, expected) in [
            ((0, 0, 0), "00:00:00"),
            ((0, 7, 0), "7 days"),
            ((0, 1, 43_200_000_000), "1 day 12:00:00"),
            ((14, 0, 0), "1 year 2 mons"),
            ((-12, 0, 0), "-1 years"),
            ((1, 10, 30_600_000_000), "1 mon 10 days 08:30:00"),
            ((-2, -13, 8_640_000_000), "-2 mons -13 days +02:24:00"),
            ((0, 0, -2_500_000), "-00:00:02.5"),
            ((0, -1, -3_600_000_000), "-1 days -01:00:00"),
            ((0, 0, 129_600_000_000), "36:00:00"),
            ((0, 4, 24_685_689_600), "4 days 06:51:25.6896"),
            ((-1, 1, 0), "-1 mons +1 day"),
        ] {
            assert_eq!(text(interval.0, interval.1, interval.2), expected);
        }
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

    #[test]
    fn floats_are_written_as_postgres_writes_them() {
        let double = |value: f64| float_text(value, format!("{value:e}"), DOUBLE_EXPONENT_FROM);
        let real =
            |value: f32| float_text(f64::from(value), format!("{value:e}"), REAL_EXPONENT_FROM);
        // What PostgreSQL 15 prints for each.
        for (value, text) in [
            (3.0, "3"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e20, "1e+20"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (1e300, "1e+300"),
            (100.0, "100"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(double(value), text, "{value:?}");
        }
        for (value, text) in [
            (3.0, "3"),
            (0.1, "0.1"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1.5e-5, "1.5e-05"),
        ] {
            assert_eq!(real(value), text, "{value:?}");
        }
        // extra_float_digits 0 and below round as C's %g with 15 (6) plus that many digits.
        for (value, digits, text) in [
            (0.1 + 0.2, 0, "0.3"),
            (1.0 / 3.0, 0, "0.333333333333333"),
            (1.0 / 3.0, -10, "0.33333"),
            (1e20, 0, "1e+20"),
            (123456789012345678.0, 0, "1.23456789012346e+17"),
            (2.5, -14, "2"),
            (100.0, 0, "100"),
            (0.00001234, 0, "1.234e-05"),
        ] {
            assert_eq!(double_text(value, digits), text, "{value:?} at {digits}");
        }
        assert_eq!(real_text(1.0 / 3.0, 0), "0.333333");
        assert_eq!(real_text(1234567.0, 0), "1.23457e+06");
    }
}
