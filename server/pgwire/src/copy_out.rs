//! `COPY ... TO STDOUT`: rows sent as COPY data in text, CSV or binary format, one CopyData
//! message per row as a Postgres backend sends them (libpq, psycopg and JDBC read them so).
//!
//! Values are the ones a query's results carry: text and CSV fields are the text-format values
//! (rendered as Postgres renders them), binary fields the binary-format values. Rows are encoded
//! batch by batch as the client takes them, so memory stays bounded whatever the row count. An
//! error mid-stream ends the copy with an ErrorResponse, as in Postgres.

use std::sync::Arc;

use arrow_pg::datatypes::encode_recordbatch;
use bytes::{BufMut, BytesMut};
use datafusion::arrow::datatypes::Schema;
use datafusion::physical_plan::SendableRecordBatchStream;
use fjord_engine::{CopyFormat, CopyOptions, EngineError, ForceQuote, sqlstate};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::Tag;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use crate::binary_rows::BinaryRows;
use crate::cancel::QueryToken;
use crate::encode::{canceled_by, engine_error, pg_fields, wire_forms};

/// The binary format's signature, flags and header extension length.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Streams `stream` to the client as a COPY OUT, ending with CommandComplete `COPY n`.
pub(crate) async fn copy_out<C>(
    client: &mut C,
    mut stream: SendableRecordBatchStream,
    options: &CopyOptions,
    format_options: Arc<FormatOptions>,
    cancel: &QueryToken,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let schema = stream.schema();
    let binary = options.format == CopyFormat::Binary;
    let format = if binary {
        Format::UnifiedBinary
    } else {
        Format::UnifiedText
    };
    let fields = Arc::new(pg_fields(&schema, &format, Some(format_options))?);
    let writer = RowWriter::new(options, &schema)?;
    let code: i8 = if binary { 1 } else { 0 };
    client
        .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            code,
            fields.len() as i16,
            vec![i16::from(code); fields.len()],
        )))
        .await?;

    // Like Postgres, the binary header travels with the first row (or with the trailer).
    let mut pending = BytesMut::new();
    if binary {
        pending.put_slice(BINARY_HEADER);
    } else if options.header {
        writer.header(&schema, &mut pending);
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(
                pending.split().freeze(),
            )))
            .await?;
    }
    let mut rows: usize = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(canceled_by(cancel)),
            next = stream.next() => next,
        };
        let batch = match next {
            None => break,
            Some(Ok(batch)) => batch,
            Some(Err(error)) => return Err(engine_error(EngineError::from(error))),
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = wire_forms(batch, &fields)?;
        if binary && let Some(tuples) = BinaryRows::new(&batch, &fields) {
            for row in 0..batch.num_rows() {
                tuples.write_tuple(row, &mut pending);
                client
                    .feed(PgWireBackendMessage::CopyData(CopyData::new(
                        pending.split().freeze(),
                    )))
                    .await?;
            }
            rows += batch.num_rows();
            continue;
        }
        for row in encode_recordbatch(fields.clone(), batch) {
            writer.row(&row?, &mut pending)?;
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(
                    pending.split().freeze(),
                )))
                .await?;
            rows += 1;
        }
    }
    if binary {
        pending.put_i16(-1);
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(
                pending.split().freeze(),
            )))
            .await?;
    }
    client
        .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    client
        .send(PgWireBackendMessage::CommandComplete(
            Tag::new("COPY").with_rows(rows).into(),
        ))
        .await?;
    Ok(())
}

/// Writes encoded rows in one COPY format.
struct RowWriter<'a> {
    options: &'a CopyOptions,
    /// Per column: quoted in CSV whatever its value (FORCE_QUOTE).
    force_quote: Vec<bool>,
}

impl RowWriter<'_> {
    fn single_column(&self) -> bool {
        self.force_quote.len() == 1
    }
}

impl<'a> RowWriter<'a> {
    fn new(options: &'a CopyOptions, schema: &Schema) -> PgWireResult<Self> {
        let count = schema.fields().len();
        let force_quote = match &options.force_quote {
            ForceQuote::None => vec![false; count],
            ForceQuote::All => vec![true; count],
            ForceQuote::Columns(names) => {
                let mut flags = vec![false; count];
                for name in names {
                    let index = schema
                        .fields()
                        .iter()
                        .position(|field| field.name() == name)
                        .ok_or_else(|| {
                            engine_error(EngineError::new(
                                sqlstate::UNDEFINED_COLUMN,
                                format!("FORCE_QUOTE column \"{name}\" not referenced by COPY"),
                            ))
                        })?;
                    flags[index] = true;
                }
                flags
            }
        };
        Ok(RowWriter {
            options,
            force_quote,
        })
    }

    /// The header line: column names, as text or CSV fields.
    fn header(&self, schema: &Schema, out: &mut BytesMut) {
        for (index, field) in schema.fields().iter().enumerate() {
            if index > 0 {
                out.put_u8(self.options.delimiter);
            }
            let name = field.name().as_bytes();
            match self.options.format {
                CopyFormat::Csv => self.csv_field(name, false, out),
                _ => self.text_field(name, out),
            }
        }
        out.put_u8(b'\n');
    }

    /// One row from the encoded fields of a DataRow (each an `i32` length, -1 for NULL, then
    /// the bytes).
    fn row(&self, row: &DataRow, out: &mut BytesMut) -> PgWireResult<()> {
        if self.options.format == CopyFormat::Binary {
            // A binary COPY tuple is a DataRow's body: the field count, then the fields.
            out.reserve(2 + row.data.len());
            out.put_i16(row.field_count);
            out.put_slice(&row.data);
            return Ok(());
        }
        let mut data: &[u8] = &row.data;
        for index in 0..row.field_count as usize {
            if index > 0 {
                out.put_u8(self.options.delimiter);
            }
            let (length, rest) = data.split_at_checked(4).ok_or_else(truncated)?;
            let length = i32::from_be_bytes(length.try_into().expect("four bytes"));
            if length < 0 {
                out.put_slice(self.options.null.as_bytes());
                data = rest;
                continue;
            }
            let (value, rest) = rest
                .split_at_checked(length as usize)
                .ok_or_else(truncated)?;
            data = rest;
            match self.options.format {
                CopyFormat::Csv => self.csv_field(value, self.force_quote[index], out),
                _ => self.text_field(value, out),
            }
        }
        out.put_u8(b'\n');
        Ok(())
    }

    /// Text format: backslash escapes for control characters, backslash and the delimiter.
    fn text_field(&self, value: &[u8], out: &mut BytesMut) {
        let delimiter = self.options.delimiter;
        let mut start = 0;
        for (index, &byte) in value.iter().enumerate() {
            let escaped = match byte {
                b'\x08' => b'b',
                b'\x0c' => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                b'\x0b' => b'v',
                b'\\' => b'\\',
                byte if byte == delimiter => byte,
                _ => continue,
            };
            out.put_slice(&value[start..index]);
            out.put_u8(b'\\');
            out.put_u8(escaped);
            start = index + 1;
        }
        out.put_slice(&value[start..]);
    }

    /// CSV: quoted when forced, when it holds the delimiter, the quote or a line break, when
    /// it reads as the NULL string, and when it is `\.` alone (the end-of-data marker).
    fn csv_field(&self, value: &[u8], force: bool, out: &mut BytesMut) {
        let CopyOptions {
            delimiter,
            quote,
            escape,
            ..
        } = *self.options;
        let quoted = force
            || value == self.options.null.as_bytes()
            || (self.single_column() && value == b"\\.")
            || value
                .iter()
                .any(|&byte| byte == delimiter || byte == quote || byte == b'\n' || byte == b'\r');
        if !quoted {
            out.put_slice(value);
            return;
        }
        out.put_u8(quote);
        let mut start = 0;
        for (index, &byte) in value.iter().enumerate() {
            if byte == quote || byte == escape {
                out.put_slice(&value[start..index]);
                out.put_u8(escape);
                start = index;
            }
        }
        out.put_slice(&value[start..]);
        out.put_u8(quote);
    }
}

fn truncated() -> PgWireError {
    engine_error(EngineError::new(
        sqlstate::INTERNAL_ERROR,
        "an encoded row ended early while writing COPY data",
    ))
}

/// A COPY payload as one `Bytes`, for tests.
#[cfg(test)]
fn written(options: &CopyOptions, schema: &Schema, rows: &[Vec<Option<&str>>]) -> bytes::Bytes {
    let writer = RowWriter::new(options, schema).unwrap();
    let mut out = BytesMut::new();
    if options.header {
        writer.header(schema, &mut out);
    }
    for values in rows {
        let mut data = BytesMut::new();
        for value in values {
            match value {
                None => data.put_i32(-1),
                Some(text) => {
                    data.put_i32(text.len() as i32);
                    data.put_slice(text.as_bytes());
                }
            }
        }
        let row = DataRow::new(data, values.len() as i16);
        writer.row(&row, &mut out).unwrap();
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn schema(names: &[&str]) -> Schema {
        Schema::new(
            names
                .iter()
                .map(|name| Field::new(*name, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        )
    }

    fn options(format: CopyFormat) -> CopyOptions {
        let sql = match format {
            CopyFormat::Text => "COPY t TO STDOUT",
            CopyFormat::Csv => "COPY t TO STDOUT (FORMAT csv)",
            CopyFormat::Binary => "COPY t TO STDOUT (FORMAT binary)",
        };
        fjord_engine::recognize_copy(sql).unwrap().options
    }

    #[test]
    fn text_format_escapes_as_postgres_does() {
        let out = written(
            &options(CopyFormat::Text),
            &schema(&["a", "b"]),
            &[
                vec![Some("plain"), None],
                vec![Some("tab\there"), Some("back\\slash\nnew\rline")],
            ],
        );
        assert_eq!(
            &out[..],
            b"plain\t\\N\ntab\\there\tback\\\\slash\\nnew\\rline\n"
        );
    }

    #[test]
    fn csv_quotes_only_where_needed() {
        let mut csv = options(CopyFormat::Csv);
        csv.header = true;
        let out = written(
            &csv,
            &schema(&["name", "note,s"]),
            &[
                vec![Some("Miso"), None],
                vec![Some(""), Some("says \"hi\", twice")],
                vec![Some("two\nlines"), Some("x")],
            ],
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "name,\"note,s\"\nMiso,\n\"\",\"says \"\"hi\"\", twice\"\n\"two\nlines\",x\n"
        );
        csv.header = false;
        csv.force_quote = ForceQuote::All;
        let out = written(&csv, &schema(&["a"]), &[vec![Some("v")], vec![None]]);
        assert_eq!(&out[..], b"\"v\"\n\n");
    }

    #[test]
    fn binary_rows_are_data_row_bodies() {
        let out = written(
            &options(CopyFormat::Binary),
            &schema(&["a"]),
            &[vec![Some("ab")]],
        );
        assert_eq!(&out[..], b"\x00\x01\x00\x00\x00\x02ab");
    }
}
