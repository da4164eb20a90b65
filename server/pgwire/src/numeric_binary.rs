//! `numeric` in binary format, written as Postgres's `numeric_send` writes it.
//!
//! arrow-pg encodes decimals through rust_decimal, which loses the display scale of a zero
//! (`0.00` goes out as `0` with scale 0), and clients in binary mode (asyncpg, psycopg 3,
//! JDBC) then show `0` where Postgres shows `0.00`. Binary-format decimal columns are therefore
//! encoded here, from the unscaled integer and the scale: base-10000 digit groups aligned on
//! the decimal point, leading and trailing zero groups dropped, the weight of the first group,
//! the sign, and the column's scale as the display scale.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;

/// `batch` with its binary-format decimal columns as Postgres's binary numeric (bytes, which
/// the encoder sends unchanged).
pub(crate) fn binary_forms(batch: RecordBatch, fields: &[FieldInfo]) -> PgWireResult<RecordBatch> {
    let converts = |info: &FieldInfo| {
        info.format() == FieldFormat::Binary && *info.datatype() == Type::NUMERIC
    };
    if !fields.iter().any(converts) {
        return Ok(batch);
    }
    crate::encode::replace_columns(&batch, fields, |column, info| {
        Ok::<_, PgWireError>(match column.data_type() {
            DataType::Decimal128(_, scale) if converts(info) && *scale >= 0 => {
                Some(binary_column(column, *scale as u16))
            }
            _ => None,
        })
    })?
    .map_err(|error| PgWireError::ApiError(Box::new(error)))
}

fn binary_column(column: &ArrayRef, scale: u16) -> ArrayRef {
    let decimals = column.as_primitive::<Decimal128Type>();
    let mut out = BinaryBuilder::with_capacity(decimals.len(), decimals.len() * 16);
    let mut value = Vec::with_capacity(48);
    for index in 0..decimals.len() {
        if decimals.is_null(index) {
            out.append_null();
            continue;
        }
        value.clear();
        write_numeric(decimals.value(index), scale, &mut value);
        out.append_value(&value);
    }
    Arc::new(out.finish())
}

/// Appends Postgres's binary numeric for `unscaled / 10^scale`.
fn write_numeric(unscaled: i128, scale: u16, out: &mut Vec<u8>) {
    let sign = if unscaled < 0 { NEGATIVE } else { POSITIVE };
    let magnitude = unscaled.unsigned_abs();
    let divisor = 10u128.pow(u32::from(scale));
    let (mut integer, fraction) = (magnitude / divisor, magnitude % divisor);

    // Base-10000 groups, most significant first, in a fixed buffer (a 38-digit decimal has at
    // most 10 groups on each side of the point): no allocation per value.
    let mut groups = [0u16; 20];
    let mut integer_count = 0;
    while integer > 0 {
        integer_count += 1;
        groups[10 - integer_count] = (integer % 10_000) as u16;
        integer /= 10_000;
    }
    let fraction_count = usize::from(scale).div_ceil(4);
    if fraction_count > 0 {
        // The fraction padded to whole groups of 4 digits; the last group holds the last
        // 4 - padding digits (no multiplication that could overflow at scale 38).
        let padding = (fraction_count * 4 - usize::from(scale)) as u32;
        let last_digits = 10u128.pow(4 - padding);
        groups[10 + fraction_count - 1] = ((fraction % last_digits) * 10u128.pow(padding)) as u16;
        let mut rest = fraction / last_digits;
        for group in groups[10..10 + fraction_count - 1].iter_mut().rev() {
            *group = (rest % 10_000) as u16;
            rest /= 10_000;
        }
    }
    let mut digits = &groups[10 - integer_count..10 + fraction_count];
    let mut weight = integer_count as i16 - 1;
    while let [0, rest @ ..] = digits {
        digits = rest;
        weight -= 1;
    }
    while let [rest @ .., 0] = digits {
        digits = rest;
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign = if digits.is_empty() { POSITIVE } else { sign };

    out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for group in digits {
        out.extend_from_slice(&group.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(unscaled: i128, scale: u16) -> Vec<u16> {
        let mut out = Vec::new();
        write_numeric(unscaled, scale, &mut out);
        out.chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect()
    }

    #[test]
    fn matches_numeric_send() {
        // (ndigits, weight, sign, dscale, digits...), as Postgres 15 sends them.
        assert_eq!(numeric(1250, 2), vec![2, 0, POSITIVE, 2, 12, 5000]);
        assert_eq!(numeric(-1, 2), vec![1, (-1i16) as u16, NEGATIVE, 2, 100]);
        assert_eq!(numeric(0, 2), vec![0, 0, POSITIVE, 2]);
        assert_eq!(
            numeric(123_456_789_012, 2),
            vec![4, 2, POSITIVE, 2, 12, 3456, 7890, 1200]
        );
        assert_eq!(numeric(1, 8), vec![1, (-2i16) as u16, POSITIVE, 8, 1]);
        assert_eq!(numeric(10_000, 0), vec![1, 1, POSITIVE, 0, 1]);
        assert_eq!(numeric(-7, 0), vec![1, 0, NEGATIVE, 0, 7]);
        // The widest decimal: 38 digits, all after the point.
        let widest = numeric(i128::from(10u8).pow(37) * 9, 38);
        assert_eq!(widest, vec![1, (-1i16) as u16, POSITIVE, 38, 9000]);
    }
}
