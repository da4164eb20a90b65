//! SQL behaviour in sqllogictest files (`tests/slt/*.slt`), run against fjord with the demo world
//! and a live Postgres catalog, once over the Postgres wire protocol and once over Arrow Flight
//! SQL, so that both front doors stay equivalent. Errors are matched as `SQLSTATE: message`, so
//! a file can pin the code a client gets.
//!
//! Over Flight SQL, values arrive as Arrow arrays; the runner writes them as Postgres writes
//! them in text (booleans as `t`/`f`, bytea as `\x...`, arrays as `{...}`, timestamps and floats
//! with the engine's renderer), so the same expected text checks the same values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandStatementQuery, CommandStatementUpdate, DoPutUpdateResult, ProstMessageExt,
};
use arrow_flight::{FlightData, FlightDescriptor};
use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use fjord_engine::pg_text::render_column;
use fjord_tests::{Fjord, Postgres, TEST_DEMO};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{Client, SimpleQueryMessage};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// A Postgres-protocol error as `SQLSTATE: message`.
#[derive(Debug)]
struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

struct FjordDb {
    client: Client,
}

#[async_trait]
impl AsyncDB for FjordDb {
    type Error = WireError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WireError> {
        let messages =
            self.client
                .simple_query(sql)
                .await
                .map_err(|error| match error.as_db_error() {
                    Some(db) => WireError(format!("{}: {}", db.code().code(), db.message())),
                    None => WireError(error.to_string()),
                })?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut saw_rows = false;
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(description) => {
                    saw_rows = true;
                    columns = description.len();
                }
                SimpleQueryMessage::Row(row) => {
                    saw_rows = true;
                    columns = row.len();
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(value) => value.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(count) => affected = count,
                _ => {}
            }
        }
        if saw_rows {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; columns],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(affected))
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "fjord"
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A session over Flight SQL: a handshake's bearer token, so that settings, transaction blocks
/// and cursors carry over between statements as on a Postgres connection.
struct FlightDb {
    client: FlightServiceClient<Channel>,
    token: MetadataValue<Ascii>,
}

impl FlightDb {
    async fn connect(address: SocketAddr) -> Result<FlightDb, WireError> {
        let failed = |error: &dyn std::fmt::Display| WireError(error.to_string());
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| failed(&error))?
            .connect()
            .await
            .map_err(|error| failed(&error))?;
        let token = FlightSqlServiceClient::new(channel.clone())
            .handshake("slt", "")
            .await
            .map_err(|error| failed(&error))?;
        let token = format!("Bearer {}", String::from_utf8_lossy(&token))
            .parse()
            .map_err(|error| failed(&error))?;
        Ok(FlightDb {
            client: FlightServiceClient::new(channel),
            token,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.token.clone());
        request
    }

    /// A statement's rows, every endpoint's in turn.
    async fn fetch(&mut self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), WireError> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let info = self
            .client
            .get_flight_info(self.request(descriptor))
            .await
            .map_err(|status| status_error(&status))?
            .into_inner();
        let schema = Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(|error| WireError(error.to_string()))?,
        );
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| WireError("an endpoint without a ticket".into()))?;
            let stream = self
                .client
                .do_get(self.request(ticket))
                .await
                .map_err(|status| status_error(&status))?
                .into_inner();
            let mut decoded =
                FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from));
            while let Some(batch) = decoded.next().await {
                match batch {
                    Ok(batch) => batches.push(batch),
                    Err(FlightError::Tonic(status)) => return Err(status_error(&status)),
                    Err(error) => return Err(WireError(error.to_string())),
                }
            }
        }
        Ok((schema, batches))
    }

    /// An INSERT, UPDATE or DELETE as Flight SQL clients run updates (DoPut): the rows it
    /// changed.
    async fn update(&mut self, sql: &str) -> Result<u64, WireError> {
        let command = CommandStatementUpdate {
            query: sql.to_string(),
            transaction_id: None,
        };
        let message = FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(command.as_any().encode_to_vec())),
            ..Default::default()
        };
        let mut results = self
            .client
            .do_put(self.request(futures::stream::iter(vec![message])))
            .await
            .map_err(|status| status_error(&status))?
            .into_inner();
        let result = results
            .message()
            .await
            .map_err(|status| status_error(&status))?
            .ok_or_else(|| WireError("DoPut answered nothing".into()))?;
        let result = DoPutUpdateResult::decode(result.app_metadata)
            .map_err(|error| WireError(error.to_string()))?;
        Ok(u64::try_from(result.record_count).unwrap_or(0))
    }
}

/// A Flight SQL error as `SQLSTATE: message`, the code from the `x-sqlstate` header.
fn status_error(status: &tonic::Status) -> WireError {
    match status
        .metadata()
        .get("x-sqlstate")
        .and_then(|value| value.to_str().ok())
    {
        Some(code) => WireError(format!("{code}: {}", status.message())),
        None => WireError(status.to_string()),
    }
}

#[async_trait]
impl AsyncDB for FlightDb {
    type Error = WireError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WireError> {
        let verb = sql
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if matches!(verb.as_str(), "INSERT" | "UPDATE" | "DELETE") {
            return Ok(DBOutput::StatementComplete(self.update(sql).await?));
        }
        let (schema, batches) = self.fetch(sql).await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let floats = schema.fields().iter().any(|field| {
            matches!(
                field.data_type(),
                DataType::Float32 | DataType::Float64 | DataType::List(_)
            )
        });
        // Floats are written with the session's extra_float_digits, as the Postgres port does.
        let extra_float_digits = if floats {
            let (_, setting) = self.fetch("SHOW extra_float_digits").await?;
            text_values(setting[0].column(0), 1)?[0]
                .as_deref()
                .and_then(|value| value.parse().ok())
                .unwrap_or(1)
        } else {
            1
        };
        let mut rows = Vec::new();
        for batch in &batches {
            let columns = batch
                .columns()
                .iter()
                .map(|column| text_values(column, extra_float_digits))
                .collect::<Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                rows.push(
                    columns
                        .iter()
                        .map(|column| match column[row].as_deref() {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(value) => value.to_string(),
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; schema.fields().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "fjord-flight-sql"
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// `column`'s values as Postgres writes them in text (`None` for NULL).
fn text_values(
    column: &ArrayRef,
    extra_float_digits: i32,
) -> Result<Vec<Option<String>>, WireError> {
    let failed = |error: datafusion::arrow::error::ArrowError| WireError(error.to_string());
    if let Some(rendered) = render_column(column, extra_float_digits) {
        return Ok(rendered
            .as_string::<i32>()
            .iter()
            .map(|value| value.map(str::to_string))
            .collect());
    }
    let values = match column.data_type() {
        DataType::Boolean => column
            .as_boolean()
            .iter()
            .map(|value| value.map(|value| if value { "t" } else { "f" }.to_string()))
            .collect(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let binary = cast(column, &DataType::Binary).map_err(failed)?;
            binary
                .as_binary::<i32>()
                .iter()
                .map(|value| {
                    value.map(|bytes| {
                        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
                        format!("\\x{hex}")
                    })
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let list = cast(
                column,
                &DataType::List(Arc::new(Field::new_list_field(
                    column_element_type(column),
                    true,
                ))),
            )
            .map_err(failed)?;
            let list = list.as_list::<i32>();
            let mut values = Vec::with_capacity(list.len());
            for row in 0..list.len() {
                if list.is_null(row) {
                    values.push(None);
                    continue;
                }
                let elements = text_values(&list.value(row), extra_float_digits)?;
                let elements: Vec<String> = elements
                    .into_iter()
                    .map(|element| match element {
                        None => "NULL".to_string(),
                        Some(text) => array_element(&text),
                    })
                    .collect();
                values.push(Some(format!("{{{}}}", elements.join(","))));
            }
            values
        }
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options).map_err(failed)?;
            (0..column.len())
                .map(|row| (!column.is_null(row)).then(|| formatter.value(row).to_string()))
                .collect()
        }
    };
    Ok(values)
}

/// The element type of a list column.
fn column_element_type(column: &ArrayRef) -> DataType {
    match column.data_type() {
        DataType::List(field) | DataType::LargeList(field) => field.data_type().clone(),
        other => other.clone(),
    }
}

/// An array element as Postgres writes it: quoted when empty, `NULL`-like, or holding braces,
/// quotes, commas, backslashes or white space.
fn array_element(text: &str) -> String {
    let plain = !text.is_empty()
        && !text.eq_ignore_ascii_case("null")
        && !text
            .chars()
            .any(|c| matches!(c, '{' | '}' | '"' | ',' | '\\') || c.is_whitespace());
    if plain {
        text.to_string()
    } else {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The front door a run goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FrontDoor {
    Postgres,
    FlightSql,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() -> anyhow::Result<()> {
    run_files(FrontDoor::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_over_flight_sql() -> anyhow::Result<()> {
    run_files(FrontDoor::FlightSql).await
}

async fn run_files(front_door: FrontDoor) -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    // Every type the connector maps, with values that test the edges.
    postgres.psql_admin(
        "workshop",
        r#"CREATE TABLE all_types (
             id int2 PRIMARY KEY, i4 int4, i8 int8, n numeric(10,3), n_free numeric, r real, d double precision,
             b bool, t text, v varchar(20), c char(3), day date, tod time, ts timestamp, tstz timestamptz,
             span interval, u uuid, j json, jb jsonb, bytes bytea, ints int4[], texts text[], money_value money);
           INSERT INTO all_types VALUES
             (1, -2147483648, 9223372036854775807, -1234567.891, 3.14159265358979, 1.5, -2.25e-10,
              true, 'O''Malley; DROP TABLE x', 'varchar', 'ab', '2026-10-31', '13:14:15.123456',
              '2026-10-31 23:59:59.999999', '2026-10-31 23:59:59+02', '1 year 2 mons 3 days 04:05:06',
              '5b0e7d3c-1f1a-4c55-9a43-8f1f2a6c1e11', '{"a": [1, 2]}', '{"b": true}', '\x00ff10',
              '{1,NULL,3}', '{"x","y z"}', 12.34),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL);
           CREATE TABLE "Mixed Case" ("Weird ""Column""" text, "ünïcödé" int);
           INSERT INTO "Mixed Case" VALUES ('quoted', 7);
           CREATE VIEW available_cats AS SELECT 1 AS one;"#,
    )?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;
    let port = fjord.port();
    let flight = fjord.flight_address()?;
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "slt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .slt files in {}",
        directory.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let outcome = match front_door {
            FrontDoor::Postgres => {
                sqllogictest::Runner::new(move || async move {
                    let (client, connection) = tokio_postgres::connect(
                        &format!("host=127.0.0.1 port={port} user=slt dbname=iceberg"),
                        tokio_postgres::NoTls,
                    )
                    .await
                    .map_err(|error| WireError(error.to_string()))?;
                    tokio::spawn(connection);
                    Ok(FjordDb { client })
                })
                .run_file_async(file)
                .await
            }
            FrontDoor::FlightSql => {
                sqllogictest::Runner::new(move || FlightDb::connect(flight))
                    .run_file_async(file)
                    .await
            }
        };
        if let Err(error) = outcome {
            failures.push(format!("{}:\n{error}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
    fjord.stop().await
}
