//! Rows in Postgres's binary format written column by column: each column's array is looked up
//! once per batch, and each value is written with no per-value dispatch on its type, no
//! per-row allocation and no copy of an encoded row. For the types whose binary form is their
//! bytes as Arrow holds them (integers, floats, booleans, text) and for the columns that
//! `encode::wire_forms` has already put in their binary form (numeric, uuid, jsonb, dates,
//! timestamps); a batch with any other column goes through arrow-pg as before. Used for
//! binary COPY out and for results a client asked for in binary format.

use datafusion::arrow::array::{
    Array, BinaryArray, BinaryViewArray, BooleanArray, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, LargeBinaryArray, LargeStringArray, RecordBatch, StringArray,
    StringViewArray,
};
use datafusion::arrow::datatypes::DataType;
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

/// One column of a batch, as its binary values are written.
enum Column<'a> {
    Bool(&'a BooleanArray),
    Int2(&'a Int16Array),
    Int4(&'a Int32Array),
    Int8(&'a Int64Array),
    Float4(&'a Float32Array),
    Float8(&'a Float64Array),
    Text(&'a StringArray),
    LargeText(&'a LargeStringArray),
    TextView(&'a StringViewArray),
    Bytes(&'a BinaryArray),
    LargeBytes(&'a LargeBinaryArray),
    BytesView(&'a BinaryViewArray),
}

/// A batch's rows, ready to be written one by one in binary format.
pub(crate) struct BinaryRows<'a> {
    columns: Vec<Column<'a>>,
}

impl<'a> BinaryRows<'a> {
    /// `batch` (after `wire_forms`) described by `fields`, if every column is one this module
    /// writes; `None` sends the batch through arrow-pg.
    pub(crate) fn new(batch: &'a RecordBatch, fields: &[FieldInfo]) -> Option<BinaryRows<'a>> {
        let columns = batch
            .columns()
            .iter()
            .zip(fields)
            .map(|(array, field)| {
                let any = array.as_any();
                let pg = field.datatype();
                Some(match array.data_type() {
                    DataType::Boolean if *pg == Type::BOOL => Column::Bool(any.downcast_ref()?),
                    DataType::Int16 if *pg == Type::INT2 => Column::Int2(any.downcast_ref()?),
                    DataType::Int32 if *pg == Type::INT4 => Column::Int4(any.downcast_ref()?),
                    DataType::Int64 if *pg == Type::INT8 => Column::Int8(any.downcast_ref()?),
                    DataType::Float32 if *pg == Type::FLOAT4 => Column::Float4(any.downcast_ref()?),
                    DataType::Float64 if *pg == Type::FLOAT8 => Column::Float8(any.downcast_ref()?),
                    DataType::Utf8 if is_text(pg) => Column::Text(any.downcast_ref()?),
                    DataType::LargeUtf8 if is_text(pg) => Column::LargeText(any.downcast_ref()?),
                    DataType::Utf8View if is_text(pg) => Column::TextView(any.downcast_ref()?),
                    // A bytea, or a value `wire_forms` wrote in its type's binary form.
                    DataType::Binary => Column::Bytes(any.downcast_ref()?),
                    DataType::LargeBinary => Column::LargeBytes(any.downcast_ref()?),
                    DataType::BinaryView => Column::BytesView(any.downcast_ref()?),
                    _ => return None,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(BinaryRows { columns })
    }

    /// Row `row` as a binary COPY tuple (a DataRow's body): the field count, then the fields.
    pub(crate) fn write_tuple(&self, row: usize, out: &mut bytes::BytesMut) {
        use bytes::BufMut;
        out.put_i16(self.columns.len() as i16);
        self.write_fields(row, out);
    }

    /// Row `row`'s fields, each as its length (-1 for NULL) and bytes.
    fn write_fields(&self, row: usize, out: &mut bytes::BytesMut) {
        for column in &self.columns {
            column.write(row, out);
        }
    }
}

/// `batch`'s rows as DataRows, where every column is sent in binary format (a client that
/// asked for binary results) and is one this module writes; `None` leaves them to arrow-pg.
pub(crate) fn data_rows(
    batch: &RecordBatch,
    fields: &[FieldInfo],
) -> Option<Vec<PgWireResult<DataRow>>> {
    if fields
        .iter()
        .any(|field| field.format() != FieldFormat::Binary)
    {
        return None;
    }
    let rows = BinaryRows::new(batch, fields)?;
    Some(
        (0..batch.num_rows())
            .map(|row| {
                let mut data = bytes::BytesMut::new();
                rows.write_fields(row, &mut data);
                Ok(DataRow::new(data, rows.columns.len() as i16))
            })
            .collect(),
    )
}

impl Column<'_> {
    fn write(&self, row: usize, out: &mut bytes::BytesMut) {
        use bytes::BufMut;
        let null = match self {
            Column::Bool(a) => a.is_null(row),
            Column::Int2(a) => a.is_null(row),
            Column::Int4(a) => a.is_null(row),
            Column::Int8(a) => a.is_null(row),
            Column::Float4(a) => a.is_null(row),
            Column::Float8(a) => a.is_null(row),
            Column::Text(a) => a.is_null(row),
            Column::LargeText(a) => a.is_null(row),
            Column::TextView(a) => a.is_null(row),
            Column::Bytes(a) => a.is_null(row),
            Column::LargeBytes(a) => a.is_null(row),
            Column::BytesView(a) => a.is_null(row),
        };
        if null {
            out.put_i32(-1);
            return;
        }
        let variable = |value: &[u8], out: &mut bytes::BytesMut| {
            out.put_i32(value.len() as i32);
            out.put_slice(value);
        };
        match self {
            Column::Bool(a) => {
                out.put_i32(1);
                out.put_u8(u8::from(a.value(row)));
            }
            Column::Int2(a) => {
                out.put_i32(2);
                out.put_i16(a.value(row));
            }
            Column::Int4(a) => {
                out.put_i32(4);
                out.put_i32(a.value(row));
            }
            Column::Int8(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row));
            }
            Column::Float4(a) => {
                out.put_i32(4);
                out.put_f32(a.value(row));
            }
            Column::Float8(a) => {
                out.put_i32(8);
                out.put_f64(a.value(row));
            }
            Column::Text(a) => variable(a.value(row).as_bytes(), out),
            Column::LargeText(a) => variable(a.value(row).as_bytes(), out),
            Column::TextView(a) => variable(a.value(row).as_bytes(), out),
            Column::Bytes(a) => variable(a.value(row), out),
            Column::LargeBytes(a) => variable(a.value(row), out),
            Column::BytesView(a) => variable(a.value(row), out),
        }
    }
}

/// Types whose binary form is the text's own bytes.
fn is_text(pg: &Type) -> bool {
    [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(pg)
}
