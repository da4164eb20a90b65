//! Decoding `COPY ... TO STDOUT (FORMAT binary)` straight into Arrow builders.
//!
//! The stream is a fixed header (`PGCOPY\n\xff\r\n\0`, flags, extension length), then one tuple
//! per row: a big-endian i16 field count, and per field an i32 length (-1 for NULL) followed by
//! the value in the type's binary send format; a field count of -1 ends the data. Postgres
//! usually sends one tuple per CopyData message, but nothing guarantees that, so the decoder
//! accepts chunks cut anywhere and keeps an incomplete tail for the next chunk.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder,
    ListArray, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{Field, IntervalMonthDayNano, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::types::PgKind;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (Postgres's).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

/// Turns binary COPY bytes into record batches of at most `batch_size` rows.
pub struct BinaryCopyDecoder {
    schema: SchemaRef,
    columns: Vec<Box<dyn ColumnDecoder>>,
    pending: Vec<u8>,
    header_seen: bool,
    finished: bool,
    rows: usize,
    batch_size: usize,
    ready: Vec<RecordBatch>,
}

impl BinaryCopyDecoder {
    pub fn new(schema: SchemaRef, kinds: &[PgKind], batch_size: usize) -> Self {
        Self::with_capacity(schema, kinds, batch_size, batch_size)
    }

    /// Like [`Self::new`], with column builders first sized for `capacity` rows (they grow up
    /// to `batch_size`): a read of a few rows need not allocate, and zero, a whole batch.
    pub fn with_capacity(
        schema: SchemaRef,
        kinds: &[PgKind],
        batch_size: usize,
        capacity: usize,
    ) -> Self {
        let columns = kinds
            .iter()
            .map(|kind| new_decoder(kind, capacity))
            .collect();
        BinaryCopyDecoder {
            schema,
            columns,
            pending: Vec::new(),
            header_seen: false,
            finished: false,
            rows: 0,
            batch_size: batch_size.max(1),
            ready: Vec::new(),
        }
    }

    /// Feeds one chunk of the COPY stream. Complete batches become available through
    /// [`Self::take_ready`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        if self.pending.is_empty() {
            let consumed = self.decode_from(chunk)?;
            self.pending.extend_from_slice(&chunk[consumed..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let consumed = self.decode_from(&pending)?;
            self.pending = pending[consumed..].to_vec();
        }
        Ok(())
    }

    /// Appends one row given as its fields' values (a binary DataRow's fields are encoded as
    /// a binary COPY row's are), `None` for NULL.
    pub fn push_row<'a>(
        &mut self,
        values: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
    ) -> Result<(), DecodeError> {
        if values.len() != self.columns.len() {
            return Err(DecodeError::new(
                "",
                format!(
                    "a row has {} fields, expected {}",
                    values.len(),
                    self.columns.len()
                ),
            ));
        }
        for ((column, value), field) in self
            .columns
            .iter_mut()
            .zip(values)
            .zip(self.schema.fields())
        {
            column
                .append(value)
                .map_err(|reason| DecodeError::new(field.name(), reason))?;
        }
        self.rows += 1;
        if self.rows >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Batches completed so far.
    pub fn take_ready(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.ready)
    }

    /// Ends the stream: the last partial batch, or an error if the data stopped mid-tuple.
    pub fn finish(mut self) -> Result<Vec<RecordBatch>, DecodeError> {
        if !self.pending.is_empty() {
            return Err(DecodeError::new(
                "",
                "the COPY data ended in the middle of a row",
            ));
        }
        if self.rows > 0 {
            self.flush()?;
        }
        Ok(self.ready)
    }

    /// Decodes every complete tuple at the start of `data`; returns how many bytes it used.
    fn decode_from(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut position = 0;
        if !self.header_seen {
            // Signature, flags (i32), header extension length (i32) and the extension itself.
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(DecodeError::new(
                    "",
                    "the COPY data does not start with PGCOPY",
                ));
            }
            let extension = read_i32(&data[SIGNATURE.len() + 4..]) as usize;
            let header_length = SIGNATURE.len() + 8 + extension;
            if data.len() < header_length {
                return Ok(0);
            }
            position = header_length;
            self.header_seen = true;
        }
        while !self.finished {
            let rest = &data[position..];
            let Some(length) = self.complete_tuple_length(rest)? else {
                break;
            };
            let field_count = read_i16(rest);
            if field_count == -1 {
                self.finished = true;
                position += 2;
                break;
            }
            let mut offset = 2;
            for (index, column) in self.columns.iter_mut().enumerate() {
                let value_length = read_i32(&rest[offset..]);
                offset += 4;
                let value = if value_length < 0 {
                    None
                } else {
                    let end = offset + value_length as usize;
                    let value = &rest[offset..end];
                    offset = end;
                    Some(value)
                };
                column
                    .append(value)
                    .map_err(|reason| DecodeError::new(self.schema.field(index).name(), reason))?;
            }
            debug_assert_eq!(offset, length);
            position += length;
            self.rows += 1;
            if self.rows >= self.batch_size {
                self.flush()?;
            }
        }
        Ok(position)
    }

    /// The byte length of the tuple at the start of `data` if it is all there.
    fn complete_tuple_length(&self, data: &[u8]) -> Result<Option<usize>, DecodeError> {
        if data.len() < 2 {
            return Ok(None);
        }
        let field_count = read_i16(data);
        if field_count == -1 {
            return Ok(Some(2));
        }
        if field_count as usize != self.columns.len() {
            return Err(DecodeError::new(
                "",
                format!(
                    "a row has {field_count} fields, expected {}",
                    self.columns.len()
                ),
            ));
        }
        let mut offset = 2;
        for _ in 0..field_count {
            if data.len() < offset + 4 {
                return Ok(None);
            }
            let value_length = read_i32(&data[offset..]);
            offset += 4;
            if value_length > 0 {
                offset += value_length as usize;
            }
            if data.len() < offset {
                return Ok(None);
            }
        }
        Ok(Some(offset))
    }

    fn flush(&mut self) -> Result<(), DecodeError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|column| column.finish())
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|error| DecodeError::new("", error.to_string()))?;
        self.ready.push(batch);
        self.rows = 0;
        Ok(())
    }
}

/// A value that could not be decoded, with its column.
#[derive(Debug)]
pub struct DecodeError {
    pub column: String,
    pub reason: String,
}

impl DecodeError {
    fn new(column: &str, reason: impl Into<String>) -> Self {
        DecodeError {
            column: column.to_string(),
            reason: reason.into(),
        }
    }
}

fn read_i16(data: &[u8]) -> i16 {
    i16::from_be_bytes([data[0], data[1]])
}

fn read_i32(data: &[u8]) -> i32 {
    i32::from_be_bytes([data[0], data[1], data[2], data[3]])
}

fn read_i64(data: &[u8]) -> i64 {
    i64::from_be_bytes(data[..8].try_into().expect("eight bytes"))
}

fn expect_length(value: &[u8], length: usize, what: &str) -> Result<(), String> {
    if value.len() == length {
        Ok(())
    } else {
        Err(format!(
            "a {what} value has {} bytes, expected {length}",
            value.len()
        ))
    }
}

/// One column's builder: appends wire values, finishes into an Arrow array.
trait ColumnDecoder: Send {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String>;
    fn finish(&mut self) -> ArrayRef;
}

fn new_decoder(kind: &PgKind, capacity: usize) -> Box<dyn ColumnDecoder> {
    match kind {
        PgKind::Bool => Box::new(BoolDecoder(BooleanBuilder::with_capacity(capacity))),
        PgKind::Int2 => Box::new(Int2Decoder(Int16Builder::with_capacity(capacity))),
        PgKind::Int4 => Box::new(Int4Decoder(Int32Builder::with_capacity(capacity))),
        PgKind::Int8 => Box::new(Int8Decoder(Int64Builder::with_capacity(capacity))),
        PgKind::Oid => Box::new(OidDecoder(Int64Builder::with_capacity(capacity))),
        PgKind::Float4 => Box::new(Float4Decoder(Float32Builder::with_capacity(capacity))),
        PgKind::Float8 => Box::new(Float8Decoder(Float64Builder::with_capacity(capacity))),
        PgKind::Text | PgKind::AsText => Box::new(TextDecoder {
            builder: StringBuilder::new(),
            skip: 0,
        }),
        PgKind::Jsonb => Box::new(TextDecoder {
            builder: StringBuilder::new(),
            skip: 1,
        }),
        PgKind::Uuid => Box::new(UuidDecoder(StringBuilder::with_capacity(
            capacity,
            capacity * 36,
        ))),
        PgKind::Bytea => Box::new(ByteaDecoder(BinaryBuilder::new())),
        PgKind::Date => Box::new(DateDecoder(Date32Builder::with_capacity(capacity))),
        PgKind::Time => Box::new(TimeDecoder(Time64MicrosecondBuilder::with_capacity(
            capacity,
        ))),
        PgKind::Timestamp => Box::new(TimestampDecoder {
            builder: TimestampMicrosecondBuilder::with_capacity(capacity),
        }),
        PgKind::TimestampTz => Box::new(TimestampDecoder {
            builder: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
        }),
        PgKind::Interval => Box::new(IntervalDecoder(IntervalMonthDayNanoBuilder::with_capacity(
            capacity,
        ))),
        PgKind::Numeric { precision, scale } => Box::new(NumericDecoder {
            builder: Decimal128Builder::with_capacity(capacity)
                .with_precision_and_scale(*precision, *scale)
                .expect("precision and scale come from a valid typmod"),
            scale: *scale,
        }),
        PgKind::Array(inner) => Box::new(ArrayDecoder {
            element: new_decoder(inner, capacity),
            element_field: Arc::new(Field::new("item", inner.data_type(), true)),
            offsets: vec![0],
            nulls: NullBufferBuilder::new(capacity),
        }),
    }
}

macro_rules! fixed_width_decoder {
    ($name:ident, $builder:ty, $length:expr, $what:expr, |$bytes:ident| $convert:expr) => {
        struct $name($builder);
        impl ColumnDecoder for $name {
            fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
                match value {
                    None => self.0.append_null(),
                    Some($bytes) => {
                        expect_length($bytes, $length, $what)?;
                        self.0.append_value($convert);
                    }
                }
                Ok(())
            }
            fn finish(&mut self) -> ArrayRef {
                Arc::new(self.0.finish())
            }
        }
    };
}

fixed_width_decoder!(BoolDecoder, BooleanBuilder, 1, "bool", |bytes| bytes[0]
    != 0);
fixed_width_decoder!(Int2Decoder, Int16Builder, 2, "int2", |bytes| read_i16(
    bytes
));
fixed_width_decoder!(Int4Decoder, Int32Builder, 4, "int4", |bytes| read_i32(
    bytes
));
fixed_width_decoder!(Int8Decoder, Int64Builder, 8, "int8", |bytes| read_i64(
    bytes
));
fixed_width_decoder!(
    OidDecoder,
    Int64Builder,
    4,
    "oid",
    |bytes| read_i32(bytes) as u32 as i64
);
fixed_width_decoder!(Float4Decoder, Float32Builder, 4, "float4", |bytes| {
    f32::from_bits(read_i32(bytes) as u32)
});
fixed_width_decoder!(Float8Decoder, Float64Builder, 8, "float8", |bytes| {
    f64::from_bits(read_i64(bytes) as u64)
});
fixed_width_decoder!(DateDecoder, Date32Builder, 4, "date", |bytes| read_i32(
    bytes
)
.saturating_add(PG_EPOCH_DAYS));
fixed_width_decoder!(TimeDecoder, Time64MicrosecondBuilder, 8, "time", |bytes| {
    read_i64(bytes)
});
fixed_width_decoder!(
    IntervalDecoder,
    IntervalMonthDayNanoBuilder,
    16,
    "interval",
    |bytes| IntervalMonthDayNano::new(
        read_i32(&bytes[12..]),
        read_i32(&bytes[8..]),
        read_i64(bytes).saturating_mul(1000)
    )
);

struct TextDecoder {
    builder: StringBuilder,
    /// Leading bytes to drop: jsonb's format version.
    skip: usize,
}

impl ColumnDecoder for TextDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            None => self.builder.append_null(),
            Some(bytes) => {
                let bytes = bytes.get(self.skip..).ok_or("an empty jsonb value")?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|error| format!("invalid UTF-8: {error}"))?;
                self.builder.append_value(text);
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.builder.finish())
    }
}

struct UuidDecoder(StringBuilder);

impl ColumnDecoder for UuidDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            None => self.0.append_null(),
            Some(bytes) => {
                let uuid = uuid::Uuid::from_slice(bytes).map_err(|error| error.to_string())?;
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                self.0
                    .append_value(uuid.hyphenated().encode_lower(&mut text));
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

struct ByteaDecoder(BinaryBuilder);

impl ColumnDecoder for ByteaDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            None => self.0.append_null(),
            Some(bytes) => self.0.append_value(bytes),
        }
        Ok(())
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

struct TimestampDecoder {
    builder: TimestampMicrosecondBuilder,
}

impl ColumnDecoder for TimestampDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            None => self.builder.append_null(),
            Some(bytes) => {
                expect_length(bytes, 8, "timestamp")?;
                let micros = read_i64(bytes);
                // 'infinity' and '-infinity' have no Arrow counterpart.
                if micros == i64::MAX || micros == i64::MIN {
                    self.builder.append_null();
                } else {
                    self.builder
                        .append_value(micros.saturating_add(PG_EPOCH_MICROS));
                }
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.builder.finish())
    }
}

struct NumericDecoder {
    builder: Decimal128Builder,
    scale: i8,
}

impl ColumnDecoder for NumericDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            None => self.builder.append_null(),
            Some(bytes) => match numeric_to_i128(bytes, self.scale)? {
                Some(value) => self.builder.append_value(value),
                // NaN and infinities have no decimal counterpart.
                None => self.builder.append_null(),
            },
        }
        Ok(())
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.builder.finish())
    }
}

/// Postgres `numeric` (base-10000 digits with a weight) as an integer scaled by 10^`scale`,
/// rounding half away from zero beyond that scale. `None` for NaN and infinities.
pub(crate) fn numeric_to_i128(bytes: &[u8], scale: i8) -> Result<Option<i128>, String> {
    if bytes.len() < 8 {
        return Err("a numeric value is shorter than its header".into());
    }
    let digit_count = read_i16(bytes) as usize;
    let weight = read_i16(&bytes[2..]) as i32;
    let sign = u16::from_be_bytes([bytes[4], bytes[5]]);
    if bytes.len() != 8 + digit_count * 2 {
        return Err("a numeric value's length does not match its digit count".into());
    }
    match sign {
        0x0000 | 0x4000 => {}
        _ => return Ok(None),
    }
    let overflow = || "a numeric value does not fit in 38 digits".to_string();
    // The value is sum(digit[i] * 10000^(weight - i)); scaled by 10^scale, digit i carries
    // 10^(4 * (weight - i) + scale).
    let mut result: i128 = 0;
    let mut round_up = false;
    for index in 0..digit_count {
        let digit = u16::from_be_bytes([bytes[8 + index * 2], bytes[9 + index * 2]]) as i128;
        let exponent = 4 * (weight - index as i32) + scale as i32;
        if exponent >= 0 {
            let factor = 10i128.checked_pow(exponent as u32).ok_or_else(overflow)?;
            result = digit
                .checked_mul(factor)
                .and_then(|part| result.checked_add(part))
                .ok_or_else(overflow)?;
        } else if exponent > -4 {
            let divisor = 10i128.pow((-exponent) as u32);
            result = result.checked_add(digit / divisor).ok_or_else(overflow)?;
            if (digit % divisor) * 2 >= divisor {
                round_up = true;
            }
            break;
        } else {
            if exponent == -4 && digit >= 5000 {
                round_up = true;
            }
            break;
        }
    }
    if round_up {
        result = result.checked_add(1).ok_or_else(overflow)?;
    }
    Ok(Some(if sign == 0x4000 { -result } else { result }))
}

/// One-dimensional arrays: `ndim`, a has-nulls flag, the element type OID, then per
/// dimension its length and lower bound, then each element as length + bytes.
struct ArrayDecoder {
    element: Box<dyn ColumnDecoder>,
    element_field: Arc<Field>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl ColumnDecoder for ArrayDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let last = *self.offsets.last().expect("offsets start with 0");
        let Some(bytes) = value else {
            self.offsets.push(last);
            self.nulls.append_null();
            return Ok(());
        };
        if bytes.len() < 12 {
            return Err("an array value is shorter than its header".into());
        }
        let dimensions = read_i32(bytes);
        let count = match dimensions {
            0 => 0,
            1 => {
                if bytes.len() < 20 {
                    return Err("an array value is shorter than its header".into());
                }
                read_i32(&bytes[12..]).max(0) as usize
            }
            more => return Err(format!("arrays of {more} dimensions are not supported")),
        };
        let mut position = if dimensions == 0 { 12 } else { 20 };
        for _ in 0..count {
            if bytes.len() < position + 4 {
                return Err("an array value ends early".into());
            }
            let length = read_i32(&bytes[position..]);
            position += 4;
            if length < 0 {
                self.element.append(None)?;
            } else {
                let end = position + length as usize;
                let element = bytes
                    .get(position..end)
                    .ok_or("an array value ends early")?;
                self.element.append(Some(element))?;
                position = end;
            }
        }
        self.offsets.push(last + count as i32);
        self.nulls.append_non_null();
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = self.element.finish();
        let nulls = self.nulls.finish();
        Arc::new(ListArray::new(
            self.element_field.clone(),
            OffsetBuffer::new(offsets.into()),
            values,
            nulls,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: i16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((digits.len() as i16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend(sign.to_be_bytes());
        out.extend(dscale.to_be_bytes());
        for digit in digits {
            out.extend(digit.to_be_bytes());
        }
        out
    }

    #[test]
    fn numeric_values_keep_their_scale() {
        // 12.5 = digits [12, 5000], weight 0
        assert_eq!(
            numeric_to_i128(&numeric(0, 0, 1, &[12, 5000]), 1).unwrap(),
            Some(125)
        );
        // -0.05 at scale 2 = digits [500], weight -1
        assert_eq!(
            numeric_to_i128(&numeric(-1, 0x4000, 2, &[500]), 2).unwrap(),
            Some(-5)
        );
        // 123456789 = [1, 2345, 6789], weight 2, at scale 3
        assert_eq!(
            numeric_to_i128(&numeric(2, 0, 0, &[1, 2345, 6789]), 3).unwrap(),
            Some(123_456_789_000)
        );
        // 0.123456 rounded to scale 4: 0.1235
        assert_eq!(
            numeric_to_i128(&numeric(-1, 0, 6, &[1234, 5600]), 4).unwrap(),
            Some(1235)
        );
        // 0 has no digits
        assert_eq!(numeric_to_i128(&numeric(0, 0, 0, &[]), 2).unwrap(), Some(0));
        // NaN
        assert_eq!(
            numeric_to_i128(&numeric(0, 0xC000, 0, &[]), 2).unwrap(),
            None
        );
    }

    #[test]
    fn decodes_tuples_split_across_chunks() {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType, Int32Type, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut data = Vec::new();
        data.extend_from_slice(SIGNATURE);
        data.extend(0i32.to_be_bytes());
        data.extend(0i32.to_be_bytes());
        for (id, name) in [(1i32, Some("a")), (2, None), (3, Some("ccc"))] {
            data.extend(2i16.to_be_bytes());
            data.extend(4i32.to_be_bytes());
            data.extend(id.to_be_bytes());
            match name {
                Some(name) => {
                    data.extend((name.len() as i32).to_be_bytes());
                    data.extend(name.as_bytes());
                }
                None => data.extend((-1i32).to_be_bytes()),
            }
        }
        data.extend((-1i16).to_be_bytes());
        let mut decoder = BinaryCopyDecoder::new(schema, &[PgKind::Int4, PgKind::Text], 2);
        for chunk in data.chunks(5) {
            decoder.push(chunk).unwrap();
        }
        let mut batches = decoder.take_ready();
        assert_eq!(batches.len(), 1);
        batches.extend(decoder.finish().unwrap());
        assert_eq!(
            batches.iter().map(|batch| batch.num_rows()).sum::<usize>(),
            3
        );
        let ids = batches[1].column(0).as_primitive::<Int32Type>();
        assert_eq!(ids.value(0), 3);
        assert!(batches[0].column(1).is_null(1));
        assert_eq!(batches[1].column(1).as_string::<i32>().value(0), "ccc");
    }
}
