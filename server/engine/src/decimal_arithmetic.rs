//! Numeric `+`, `-` and `*`, and integers cast to numerics, without a check per value.
//!
//! Arrow's decimal kernels check every value for i128 overflow, even the "wrapping" ones, and
//! the check is a branch and a widening multiply per value: in TPC-H's
//! `l_extendedprice * (1 - l_discount) * (1 + l_tax)` it was a third of q01's time. For one
//! batch, though, the largest magnitude on each side bounds every result, so one pass over the
//! inputs proves that no value can overflow; then the values are computed with plain wrapping
//! arithmetic, which the compiler vectorises, and two numbers below 2^63 multiply with one
//! widening instruction. A batch the bound does not cover goes to Arrow's checked kernel, so
//! an overflow is still the error it was, and results, types and nulls are Arrow's throughout.
//!
//! The same goes for an integer cast to a numeric wide enough for any integer of its type
//! (`sum(bigint)` sums `CAST(x AS numeric(38,0))`, as Postgres's sum of a bigint is a numeric):
//! Arrow's cast checks each value's product and precision, which cannot fail there, and took
//! half the time of such a sum.

use std::any::Any;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr};
use datafusion::physical_expr_common::datum::apply;

/// `binary` evaluated by [`DecimalArithmetic`] when it is `+`, `-` or `*` of two
/// `Decimal128` operands, as typed by `schema`; `None` otherwise.
pub(crate) fn decimal_arithmetic(
    binary: &BinaryExpr,
    schema: &Schema,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    if !matches!(
        binary.op(),
        Operator::Plus | Operator::Minus | Operator::Multiply
    ) {
        return Ok(None);
    }
    let left = binary.left().data_type(schema)?;
    let right = binary.right().data_type(schema)?;
    if !matches!(
        (&left, &right),
        (DataType::Decimal128(..), DataType::Decimal128(..))
    ) {
        return Ok(None);
    }
    // The expression's type must be the one the kernels produce, or the batches would not
    // match the plan's schema; where they would differ, leave the expression alone.
    let Some(result) = result_type(*binary.op(), &left, &right) else {
        return Ok(None);
    };
    if binary.data_type(schema)? != result {
        return Ok(None);
    }
    Ok(Some(Arc::new(DecimalArithmetic {
        inner: binary.clone(),
    })))
}

/// `cast` evaluated by [`IntegerToNumeric`] when it turns an integer into a numeric that
/// holds every value of the integer's type; `None` otherwise.
pub(crate) fn integer_to_numeric(
    cast: &CastExpr,
    schema: &Schema,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let DataType::Decimal128(precision, scale) = *cast.cast_type() else {
        return Ok(None);
    };
    let digits = match cast.expr().data_type(schema)? {
        DataType::Int8 => 3,
        DataType::Int16 => 5,
        DataType::Int32 => 10,
        DataType::Int64 => 19,
        _ => return Ok(None),
    };
    if scale < 0 || i16::from(precision) - i16::from(scale) < digits {
        return Ok(None);
    }
    Ok(Some(Arc::new(IntegerToNumeric {
        inner: cast.clone(),
    })))
}

/// An integer cast to a numeric that holds any value of its type: each value times
/// `10^scale`, which cannot overflow or exceed the precision, so nothing is checked.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct IntegerToNumeric {
    inner: CastExpr,
}

impl fmt::Display for IntegerToNumeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl PhysicalExpr for IntegerToNumeric {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.inner.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let DataType::Decimal128(precision, scale) = *self.inner.cast_type() else {
            return self.inner.evaluate(batch);
        };
        let factor = 10i128.pow(scale as u32);
        let array = match self.inner.expr().evaluate(batch)? {
            ColumnarValue::Array(array) => array,
            // Constants are folded at planning; a rare one left is cast the usual way.
            ColumnarValue::Scalar(_) => return self.inner.evaluate(batch),
        };
        let widened: PrimitiveArray<Decimal128Type> = match array.data_type() {
            DataType::Int8 => array
                .as_primitive::<Int8Type>()
                .unary(|v| i128::from(v) * factor),
            DataType::Int16 => array
                .as_primitive::<Int16Type>()
                .unary(|v| i128::from(v) * factor),
            DataType::Int32 => array
                .as_primitive::<Int32Type>()
                .unary(|v| i128::from(v) * factor),
            DataType::Int64 => array
                .as_primitive::<Int64Type>()
                .unary(|v| i128::from(v) * factor),
            _ => return self.inner.evaluate(batch),
        };
        Ok(ColumnarValue::Array(Arc::new(
            widened.with_precision_and_scale(precision, scale)?,
        )))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![self.inner.expr()]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [child]: [Arc<dyn PhysicalExpr>; 1] = children.try_into().map_err(|_| {
            datafusion::common::DataFusionError::Internal("a cast takes one operand".into())
        })?;
        let inner = CastExpr::new(
            child,
            self.inner.cast_type().clone(),
            Some(self.inner.cast_options().clone()),
        );
        Ok(Arc::new(IntegerToNumeric { inner }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// A decimal `+`, `-` or `*`: the same expression, typed and shown as the [`BinaryExpr`] it
/// replaces, evaluated without a per-value overflow check where a batch's bound allows.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct DecimalArithmetic {
    inner: BinaryExpr,
}

impl fmt::Display for DecimalArithmetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl PhysicalExpr for DecimalArithmetic {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.inner.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let left = self.inner.left().evaluate(batch)?;
        let right = self.inner.right().evaluate(batch)?;
        let op = *self.inner.op();
        if let Some(array) = unchecked(op, &left, &right) {
            return Ok(ColumnarValue::Array(array));
        }
        match op {
            Operator::Plus => apply(&left, &right, numeric::add),
            Operator::Minus => apply(&left, &right, numeric::sub),
            _ => apply(&left, &right, numeric::mul),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![self.inner.left(), self.inner.right()]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [left, right]: [Arc<dyn PhysicalExpr>; 2] = children.try_into().map_err(|_| {
            datafusion::common::DataFusionError::Internal(
                "a decimal operator takes two operands".into(),
            )
        })?;
        let inner = BinaryExpr::new(left, *self.inner.op(), right).with_fail_on_overflow(true);
        Ok(Arc::new(DecimalArithmetic { inner }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// The type Arrow's decimal kernel gives `left op right` (Hive's rules, as in `decimal_op`),
/// or `None` where the kernel would refuse (a product's scale past 38).
fn result_type(op: Operator, left: &DataType, right: &DataType) -> Option<DataType> {
    let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) = (left, right) else {
        return None;
    };
    let max_precision = 38u8;
    match op {
        Operator::Plus | Operator::Minus => {
            let scale = *s1.max(s2);
            let whole = (*p1 as i8 - s1).max(*p2 as i8 - s2);
            let precision = (scale.saturating_add(whole) as u8)
                .saturating_add(1)
                .min(max_precision);
            Some(DataType::Decimal128(precision, scale))
        }
        Operator::Multiply => {
            let scale = s1.checked_add(*s2).filter(|scale| *scale <= 38)?;
            let precision = p1.saturating_add(p2 + 1).min(max_precision);
            Some(DataType::Decimal128(precision, scale))
        }
        _ => None,
    }
}

/// One side of the operator: a column of unscaled values, or one value for every row.
enum Side<'a> {
    Column(&'a PrimitiveArray<Decimal128Type>),
    Constant(i128),
}

impl Side<'_> {
    /// The largest magnitude among the values. Null slots count too: their values are
    /// computed like the rest, so a bound over every slot holds for every slot.
    fn largest(&self) -> u128 {
        match self {
            Side::Column(array) => array
                .values()
                .iter()
                .fold(0u128, |largest, value| largest.max(value.unsigned_abs())),
            Side::Constant(value) => value.unsigned_abs(),
        }
    }
}

fn side(value: &ColumnarValue) -> Option<Side<'_>> {
    match value {
        ColumnarValue::Array(array) => match array.data_type() {
            DataType::Decimal128(..) => Some(Side::Column(array.as_primitive())),
            _ => None,
        },
        // A null constant makes every row null: Arrow's kernel says so without computing.
        ColumnarValue::Scalar(ScalarValue::Decimal128(Some(value), _, _)) => {
            Some(Side::Constant(*value))
        }
        ColumnarValue::Scalar(_) => None,
    }
}

/// `left op right` computed without per-value checks, or `None` when the inputs are not
/// a column against a column or a constant, or when this batch's values could overflow.
fn unchecked(op: Operator, left: &ColumnarValue, right: &ColumnarValue) -> Option<ArrayRef> {
    let result = result_type(op, &left.data_type(), &right.data_type())?;
    let (DataType::Decimal128(_, s1), DataType::Decimal128(_, s2)) =
        (left.data_type(), right.data_type())
    else {
        return None;
    };
    let (l, r) = (side(left)?, side(right)?);
    match (&l, &r) {
        (Side::Column(a), Side::Column(b)) if a.len() == b.len() => {}
        (Side::Column(_), Side::Constant(_)) | (Side::Constant(_), Side::Column(_)) => {}
        // Two constants are folded at planning; nothing gains from doing them here.
        _ => return None,
    }
    let (largest_l, largest_r) = (l.largest(), r.largest());
    let limit = i128::MAX as u128;
    let values: Vec<i128> = match op {
        Operator::Plus | Operator::Minus => {
            let DataType::Decimal128(_, scale) = result else {
                return None;
            };
            let factor_l = 10i128.checked_pow((scale - s1) as u32)?;
            let factor_r = 10i128.checked_pow((scale - s2) as u32)?;
            let bound = largest_l
                .checked_mul(factor_l as u128)?
                .checked_add(largest_r.checked_mul(factor_r as u128)?)?;
            if bound > limit {
                return None;
            }
            let minus = op == Operator::Minus;
            combine(&l, &r, |a, b| {
                let (a, b) = (a.wrapping_mul(factor_l), b.wrapping_mul(factor_r));
                if minus {
                    a.wrapping_sub(b)
                } else {
                    a.wrapping_add(b)
                }
            })
        }
        _ => {
            if largest_l.checked_mul(largest_r)? > limit {
                return None;
            }
            let narrow = i64::MAX as u128;
            if largest_l <= narrow && largest_r <= narrow {
                // Both fit in 64 bits: one widening multiply each.
                combine(&l, &r, |a, b| (a as i64 as i128) * (b as i64 as i128))
            } else {
                combine(&l, &r, i128::wrapping_mul)
            }
        }
    };
    let nulls = match (&l, &r) {
        (Side::Column(a), Side::Column(b)) => NullBuffer::union(a.nulls(), b.nulls()),
        (Side::Column(a), Side::Constant(_)) | (Side::Constant(_), Side::Column(a)) => {
            a.nulls().cloned()
        }
        _ => None,
    };
    let DataType::Decimal128(precision, scale) = result else {
        return None;
    };
    let array = PrimitiveArray::<Decimal128Type>::new(ScalarBuffer::from(values), nulls)
        .with_precision_and_scale(precision, scale)
        .ok()?;
    Some(Arc::new(array))
}

#[inline(always)]
fn combine(left: &Side, right: &Side, f: impl Fn(i128, i128) -> i128) -> Vec<i128> {
    match (left, right) {
        (Side::Column(a), Side::Column(b)) => a
            .values()
            .iter()
            .zip(b.values().iter())
            .map(|(a, b)| f(*a, *b))
            .collect(),
        (Side::Column(a), Side::Constant(b)) => a.values().iter().map(|a| f(*a, *b)).collect(),
        (Side::Constant(a), Side::Column(b)) => b.values().iter().map(|b| f(*a, *b)).collect(),
        (Side::Constant(_), Side::Constant(_)) => {
            unreachable!("`unchecked` leaves two constants to the kernel before combining")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(values: &[Option<i128>], precision: u8, scale: i8) -> ArrayRef {
        Arc::new(
            values
                .iter()
                .copied()
                .collect::<PrimitiveArray<Decimal128Type>>()
                .with_precision_and_scale(precision, scale)
                .unwrap(),
        )
    }

    fn constant(value: i128, precision: u8, scale: i8) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Decimal128(Some(value), precision, scale))
    }

    /// What Arrow's checked kernel gives, as this module's fallback computes it.
    fn arrow(op: Operator, left: &ColumnarValue, right: &ColumnarValue) -> Result<ArrayRef> {
        let kernel = match op {
            Operator::Plus => numeric::add,
            Operator::Minus => numeric::sub,
            _ => numeric::mul,
        };
        match apply(left, right, kernel)? {
            ColumnarValue::Array(array) => Ok(array),
            ColumnarValue::Scalar(_) => unreachable!("one side is a column"),
        }
    }

    /// A deterministic spread of values across magnitudes, signs and nulls.
    fn values(seed: u64, count: usize, digits: u32) -> Vec<Option<i128>> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if state >> 60 == 0 {
                    return None;
                }
                let magnitude = 10i128.pow((state >> 32) as u32 % (digits + 1));
                let value = (state as i128 >> 3) % magnitude.max(1);
                Some(if state & 4 == 0 { value } else { -value })
            })
            .collect()
    }

    #[test]
    fn unchecked_results_are_arrows_own_values_types_and_nulls() {
        let shapes = [
            (15u8, 2i8, 15u8, 2i8),
            (23, 2, 15, 2),
            (38, 4, 23, 2),
            (10, 0, 18, 6),
        ];
        for (seed, (p1, s1, p2, s2)) in shapes.into_iter().enumerate() {
            let left = column(&values(seed as u64, 500, p1 as u32 / 2), p1, s1);
            let right = column(&values(seed as u64 + 99, 500, p2 as u32 / 2), p2, s2);
            for op in [Operator::Plus, Operator::Minus, Operator::Multiply] {
                let cases = [
                    (
                        ColumnarValue::Array(left.clone()),
                        ColumnarValue::Array(right.clone()),
                    ),
                    (ColumnarValue::Array(left.clone()), constant(1, 20, 0)),
                    (constant(-7, 20, 0), ColumnarValue::Array(right.clone())),
                ];
                for (l, r) in cases {
                    let fast = unchecked(op, &l, &r)
                        .unwrap_or_else(|| panic!("{op} on {p1},{s1} and {p2},{s2} fell back"));
                    let expected = arrow(op, &l, &r).unwrap();
                    assert_eq!(fast.data_type(), expected.data_type(), "{op}");
                    assert_eq!(&fast, &expected, "{op} on {p1},{s1} and {p2},{s2}");
                }
            }
        }
    }

    #[test]
    fn integers_widen_to_arrows_own_numerics() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::Field;
        use datafusion::physical_expr::expressions::Column;

        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let values = Int64Array::from(vec![
            Some(i64::MAX),
            Some(i64::MIN),
            None,
            Some(0),
            Some(-7),
        ]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
        for (precision, scale) in [(38u8, 0i8), (38, 2), (21, 2), (19, 0)] {
            let target = DataType::Decimal128(precision, scale);
            let cast = CastExpr::new(Arc::new(Column::new("x", 0)), target.clone(), None);
            let fast = integer_to_numeric(&cast, &schema)
                .unwrap()
                .unwrap_or_else(|| panic!("{target} not taken"));
            let (ColumnarValue::Array(fast), ColumnarValue::Array(expected)) = (
                fast.evaluate(&batch).unwrap(),
                cast.evaluate(&batch).unwrap(),
            ) else {
                panic!("columns expected");
            };
            assert_eq!(&fast, &expected, "{target}");
        }
        // Too narrow for every bigint: Arrow's cast, which checks.
        let narrow = CastExpr::new(
            Arc::new(Column::new("x", 0)),
            DataType::Decimal128(20, 2),
            None,
        );
        assert!(integer_to_numeric(&narrow, &schema).unwrap().is_none());
    }

    #[test]
    fn a_batch_that_could_overflow_is_left_to_the_checked_kernel() {
        let huge = 10i128.pow(37);
        let left = ColumnarValue::Array(column(&[Some(huge), Some(1)], 38, 0));
        let right = ColumnarValue::Array(column(&[Some(100), Some(2)], 38, 0));
        assert!(unchecked(Operator::Multiply, &left, &right).is_none());
        assert!(arrow(Operator::Multiply, &left, &right).is_err());
        let plus = constant(i128::MAX - 5, 38, 0);
        assert!(unchecked(Operator::Plus, &left, &plus).is_none());
        // Nulls on the constant side are Arrow's too: every row null, computed by the kernel.
        let null = ColumnarValue::Scalar(ScalarValue::Decimal128(None, 38, 0));
        assert!(unchecked(Operator::Plus, &left, &null).is_none());
    }
}
