//! Avro values in the Confluent wire format, decoded straight into Arrow by arrow-avro.
//!
//! A value is the magic byte `0`, the writer schema's registry id (4 bytes, big-endian) and the
//! Avro body. Schemas are fetched from the registry's REST API (`GET /schemas/ids/{id}`) the
//! first time an id is seen, and kept. Records of one schema id are decoded together; when that
//! fails, each record is decoded alone to find the ones to reject.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use fjord_config::SchemaRegistryConfig;

use crate::decode::{
    Chunk, Decoded, Rejected, data_schema, meta_fields, timestamp_type, with_meta,
};

/// The registry client and the schemas seen so far.
pub struct AvroDecoder {
    config: SchemaRegistryConfig,
    client: reqwest::Client,
    schemas: HashMap<u32, String>,
}

/// Why a schema could not be had.
enum Lookup {
    /// The registry answered that it has no such id: the record is a dead letter.
    Unknown(String),
    /// The registry could not be asked: retry later, reject nothing.
    Unavailable(String),
}

impl AvroDecoder {
    pub fn new(config: SchemaRegistryConfig) -> Self {
        AvroDecoder {
            config,
            client: reqwest::Client::new(),
            schemas: HashMap::new(),
        }
    }

    async fn fetch(&self, id: u32) -> Result<String, Lookup> {
        let url = format!("{}/schemas/ids/{id}", self.config.url.trim_end_matches('/'));
        let mut request = self.client.get(&url);
        if let Some(user) = &self.config.username {
            request = request.basic_auth(
                user.expose(),
                self.config.password.as_ref().map(|p| p.expose()),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|error| Lookup::Unavailable(format!("schema registry {url}: {error}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| Lookup::Unavailable(format!("schema registry {url}: {error}")))?;
        if status.as_u16() == 404 {
            return Err(Lookup::Unknown(format!(
                "schema id {id} is not in the schema registry"
            )));
        }
        if !status.is_success() {
            return Err(Lookup::Unavailable(format!(
                "schema registry {url} answered {status}"
            )));
        }
        let parsed: serde_json::Value = serde_json::from_str(&body)
            .map_err(|error| Lookup::Unavailable(format!("schema registry {url}: {error}")))?;
        if let Some(kind) = parsed.get("schemaType").and_then(|t| t.as_str())
            && kind != "AVRO"
        {
            return Err(Lookup::Unknown(format!(
                "schema id {id} is a {kind} schema, not Avro"
            )));
        }
        parsed
            .get("schema")
            .and_then(|schema| schema.as_str())
            .map(str::to_string)
            .ok_or_else(|| Lookup::Unavailable(format!("schema registry {url}: no `schema`")))
    }

    fn store(&self) -> Result<SchemaStore, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        for (id, schema) in &self.schemas {
            store
                .set(Fingerprint::Id(*id), AvroSchema::new(schema.clone()))
                .map_err(|error| error.to_string())?;
        }
        Ok(store)
    }

    /// Decodes each record on its own schema; returns batches in the writers' schemas with the
    /// chunk rows they hold, and the rejected records. `Err` when the registry cannot be
    /// reached (nothing is rejected for that).
    pub async fn decode(
        &mut self,
        chunk: &Chunk,
    ) -> Result<(Vec<(RecordBatch, Vec<usize>)>, Vec<Rejected>), String> {
        let mut rejected = Vec::new();
        // Consecutive records of one schema id decode together.
        let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
        for row in 0..chunk.len() {
            let value = chunk.value(row);
            if value.len() < 5 || value[0] != 0 {
                rejected.push(Rejected {
                    row,
                    error: "not in the Confluent Avro wire format (magic byte 0, 4-byte schema id)"
                        .into(),
                });
                continue;
            }
            let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
            if !self.schemas.contains_key(&id) {
                match self.fetch(id).await {
                    Ok(schema) => {
                        if let Err(error) = SchemaStore::new_with_type(FingerprintAlgorithm::Id)
                            .set(Fingerprint::Id(id), AvroSchema::new(schema.clone()))
                        {
                            rejected.push(Rejected {
                                row,
                                error: format!(
                                    "schema id {id} is not a usable Avro schema: {error}"
                                ),
                            });
                            continue;
                        }
                        self.schemas.insert(id, schema);
                    }
                    Err(Lookup::Unknown(error)) => {
                        rejected.push(Rejected { row, error });
                        continue;
                    }
                    Err(Lookup::Unavailable(error)) => return Err(error),
                }
            }
            match groups.last_mut() {
                Some((last, rows)) if *last == id => rows.push(row),
                _ => groups.push((id, vec![row])),
            }
        }
        let mut batches = Vec::new();
        for (id, rows) in groups {
            match self.decode_rows(chunk, &rows) {
                Ok(batch) => batches.push((batch, rows)),
                Err(_) => {
                    // Find the records that do not decode; decode the rest together.
                    let mut good = Vec::new();
                    for row in rows {
                        match self.decode_rows(chunk, &[row]) {
                            Ok(_) => good.push(row),
                            Err(error) => rejected.push(Rejected {
                                row,
                                error: format!("Avro body does not match schema id {id}: {error}"),
                            }),
                        }
                    }
                    if !good.is_empty() {
                        let batch = self.decode_rows(chunk, &good)?;
                        batches.push((batch, good));
                    }
                }
            }
        }
        rejected.sort_by_key(|rejected| rejected.row);
        Ok((batches, rejected))
    }

    fn decode_rows(&self, chunk: &Chunk, rows: &[usize]) -> Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new()
            .with_writer_schema_store(self.store()?)
            .with_batch_size(rows.len().max(1))
            .build_decoder()
            .map_err(|error| error.to_string())?;
        for &row in rows {
            let value = chunk.value(row);
            let consumed = decoder.decode(value).map_err(|error| error.to_string())?;
            if consumed != value.len() {
                return Err(format!(
                    "{} bytes left after the record",
                    value.len() - consumed
                ));
            }
        }
        let batch = decoder
            .flush()
            .map_err(|error| error.to_string())?
            .ok_or_else(|| "no rows decoded".to_string())?;
        if batch.num_rows() != rows.len() {
            return Err(format!(
                "{} rows decoded from {} records",
                batch.num_rows(),
                rows.len()
            ));
        }
        Ok(batch)
    }
}

/// The type a table column gets for an Arrow type arrow-avro produced: timestamps in
/// microseconds (Iceberg's unit), view types as plain ones.
fn lake_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(_, Some(_)) => timestamp_type(),
        DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Microsecond),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::UInt8 | DataType::UInt16 | DataType::Int8 | DataType::Int16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        other => other.clone(),
    }
}

/// The columns of a new table for records of `writer`, plus the metadata columns.
pub fn table_schema_for(writer: &Schema) -> Schema {
    let mut fields: Vec<Field> = writer
        .fields()
        .iter()
        .map(|field| Field::new(field.name(), lake_type(field.data_type()), true))
        .collect();
    fields.extend(meta_fields());
    Schema::new(fields)
}

/// A writer-schema batch shaped as the table: columns by name, cast to the table's types;
/// columns the records lack are null. Fields the table lacks ask for columns.
pub fn conform(
    batch: &RecordBatch,
    rows: &[usize],
    chunk: &Chunk,
    table_schema: &SchemaRef,
    ingested_at_micros: i64,
) -> Result<Decoded, String> {
    let data = data_schema(table_schema);
    let missing: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .filter(|field| data.field_with_name(field.name()).is_err())
        .map(|field| Field::new(field.name(), lake_type(field.data_type()), true))
        .collect();
    if !missing.is_empty() {
        return Ok(Decoded::NeedsColumns(missing));
    }
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut fields = Vec::new();
    for field in data.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => column.clone(),
            Some(column) => cast(column, field.data_type()).map_err(|error| {
                format!(
                    "field `{}` ({}) does not fit column type {}: {error}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )
            })?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
        fields.push(field.clone());
    }
    let shaped = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|error| error.to_string())?;
    let subset = chunk.select(rows);
    Ok(Decoded::Rows {
        batch: Some(with_meta(
            &shaped,
            &subset,
            table_schema,
            ingested_at_micros,
        )?),
        rejected: Vec::new(),
    })
}
