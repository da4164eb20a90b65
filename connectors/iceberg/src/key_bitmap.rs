//! A join's keys pushed into a lake scan as an IN list of integers, checked against one bit per
//! value in their span.
//!
//! A hash join's build side of up to 1024 keys reaches the scan as `key IN (...)`, which
//! DataFusion evaluates by hashing each row's key into a set: about 8 ns a row, so that over
//! TPC-H q17's 6M lineitem rows the scan's check cost more than the join it spared. Keys of
//! integer type whose span (largest minus smallest) is at most [`MAX_SPAN`] are checked against
//! a bitmap of that span instead (1 MB at most, and 25 KB for q17's part keys): a subtraction,
//! a comparison and a bit test per row.
//!
//! The result is the IN list's, nulls included: a null key gives null, and so does a key not
//! in a list that holds a null.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{InListExpr, Literal};

/// The widest span of keys checked against a bitmap, in values (one bit each).
pub(crate) const MAX_SPAN: u64 = 1 << 23;

#[derive(Debug)]
pub(crate) struct KeyBitmap {
    key: Arc<dyn PhysicalExpr>,
    /// The smallest key; bit `i` stands for `low + i`.
    low: i64,
    bits: Vec<u64>,
    keys: usize,
    /// The list holds a null: a key not in it gives null rather than false.
    null_in_list: bool,
}

impl KeyBitmap {
    /// `in_list` as a bitmap check, if it lists integer constants within [`MAX_SPAN`].
    pub(crate) fn from_in_list(in_list: &InListExpr) -> Option<Self> {
        if in_list.negated() {
            return None;
        }
        let mut keys = Vec::with_capacity(in_list.list().len());
        let mut null_in_list = false;
        for item in in_list.list() {
            match item.as_any().downcast_ref::<Literal>()?.value() {
                ScalarValue::Int64(Some(key)) => keys.push(*key),
                ScalarValue::Int32(Some(key)) => keys.push(i64::from(*key)),
                ScalarValue::Int64(None) | ScalarValue::Int32(None) => null_in_list = true,
                _ => return None,
            }
        }
        let low = *keys.iter().min()?;
        let high = *keys.iter().max()?;
        let span = u64::try_from(i128::from(high) - i128::from(low) + 1).ok()?;
        if span > MAX_SPAN {
            return None;
        }
        let mut bits = vec![0u64; span.div_ceil(64) as usize];
        for key in &keys {
            let offset = key.wrapping_sub(low) as u64;
            bits[(offset / 64) as usize] |= 1 << (offset % 64);
        }
        Some(KeyBitmap {
            key: in_list.expr().clone(),
            low,
            bits,
            keys: keys.len(),
            null_in_list,
        })
    }

    fn contains(&self, key: i64) -> bool {
        if key < self.low {
            return false;
        }
        // Not negative, and below 2^64: the difference fits a u64. Bits past the largest key
        // are clear.
        let offset = key.wrapping_sub(self.low) as u64;
        usize::try_from(offset / 64)
            .ok()
            .and_then(|word| self.bits.get(word))
            .is_some_and(|word| word & (1 << (offset % 64)) != 0)
    }

    fn check<T: Copy + Into<i64>>(&self, keys: &[T]) -> BooleanBuffer {
        BooleanBuffer::collect_bool(keys.len(), |row| self.contains(keys[row].into()))
    }
}

impl PartialEq for KeyBitmap {
    fn eq(&self, other: &Self) -> bool {
        self.key.eq(&other.key)
            && self.low == other.low
            && self.bits == other.bits
            && self.null_in_list == other.null_in_list
    }
}

impl Eq for KeyBitmap {}

impl Hash for KeyBitmap {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.low.hash(state);
        self.bits.hash(state);
        self.null_in_list.hash(state);
    }
}

impl fmt::Display for KeyBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} IN (bitmap of {} keys)", self.key, self.keys)
    }
}

impl PhysicalExpr for KeyBitmap {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        Ok(self.null_in_list || self.key.nullable(input_schema)?)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let keys = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        let found = match keys.data_type() {
            DataType::Int64 => self.check(keys.as_primitive::<Int64Type>().values()),
            DataType::Int32 => self.check(keys.as_primitive::<Int32Type>().values()),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "a key bitmap checks integers, not {other}"
                )));
            }
        };
        let unknown = self.null_in_list.then(|| NullBuffer::new(found.clone()));
        let nulls = NullBuffer::union(keys.nulls(), unknown.as_ref());
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            found, nulls,
        ))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.key]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let key = children.pop().ok_or_else(|| {
            DataFusionError::Internal("a key bitmap checks one expression".into())
        })?;
        Ok(Arc::new(KeyBitmap {
            key,
            low: self.low,
            bits: self.bits.clone(),
            keys: self.keys,
            null_in_list: self.null_in_list,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{Column, lit};

    fn batch(column: Arc<dyn Array>) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("k", column.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![column]).unwrap()
    }

    fn both(list: Vec<ScalarValue>, batch: &RecordBatch) -> (BooleanArray, BooleanArray) {
        let key = Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>;
        let list = list.into_iter().map(lit).collect();
        let in_list = InListExpr::try_new(key, list, false, &batch.schema()).unwrap();
        let bitmap = KeyBitmap::from_in_list(&in_list).expect("a bitmap");
        let evaluate = |expression: &dyn PhysicalExpr| {
            expression
                .evaluate(batch)
                .unwrap()
                .into_array(batch.num_rows())
                .unwrap()
                .as_boolean()
                .clone()
        };
        (evaluate(&bitmap), evaluate(&in_list))
    }

    #[test]
    fn gives_what_the_in_list_gives() {
        let values = Int64Array::from(vec![
            Some(5),
            Some(6),
            None,
            Some(-3),
            Some(i64::MIN),
            Some(i64::MAX),
            Some(4096),
            Some(4095),
        ]);
        let batch = batch(Arc::new(values));
        for list in [
            vec![5i64, -3, 4096, 70],
            vec![i64::MAX, i64::MAX - 10],
            vec![i64::MIN + 1],
        ] {
            let scalars: Vec<ScalarValue> =
                list.iter().map(|key| ScalarValue::from(*key)).collect();
            let (bitmap, in_list) = both(scalars.clone(), &batch);
            assert_eq!(bitmap, in_list, "{list:?}");
            let mut with_null = scalars;
            with_null.push(ScalarValue::Int64(None));
            let (bitmap, in_list) = both(with_null, &batch);
            assert_eq!(bitmap, in_list, "{list:?} and a null");
        }
    }

    #[test]
    fn checks_int_keys_too() {
        let batch = batch(Arc::new(Int32Array::from(vec![
            Some(1),
            None,
            Some(2),
            Some(-7),
        ])));
        let list = vec![ScalarValue::from(2i32), ScalarValue::from(-7i32)];
        let (bitmap, in_list) = both(list, &batch);
        assert_eq!(bitmap, in_list);
    }

    #[test]
    fn wide_spans_and_other_types_stay_in_lists() {
        let key = Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>;
        let schema = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let wide = InListExpr::try_new(
            key.clone(),
            vec![lit(0i64), lit(MAX_SPAN as i64)],
            false,
            &schema,
        )
        .unwrap();
        assert!(KeyBitmap::from_in_list(&wide).is_none());
        let negated = InListExpr::try_new(key, vec![lit(1i64)], true, &schema).unwrap();
        assert!(KeyBitmap::from_in_list(&negated).is_none());
    }
}
