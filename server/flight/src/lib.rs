//! The Arrow Flight SQL front door: the same engine, sessions and catalogs as the PostgreSQL
//! wire protocol, with results sent as Arrow record batches.
//!
//! A statement's `FlightInfo` carries the SQL in its ticket; `DoGet` plans and runs it on a
//! fresh session of the caller's user and streams the batches as they are computed. Metadata
//! calls (catalogs, schemas, tables, table types, SQL info) are answered from the same catalogs
//! `information_schema` shows. Errors carry the gRPC code of their SQLSTATE's class and the
//! message the Postgres front door would give.
//!
//! Authentication: with no users configured, calls from loopback addresses are trusted (as on
//! the Postgres port) and others refused. With users, a client first sends a Handshake with
//! HTTP Basic credentials, checked against the same verifiers, and gets a bearer token to send
//! with every later call.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::Schema;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{ActionCancelQueryRequest, ActionCancelQueryResult};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable,
    SqlInfo, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use base64::Engine as _;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fjord_config::ScramVerifier;
use fjord_engine::{Engine, EngineError, Executed, Outcome, Prepared, Session};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

mod running;

use running::{Running, Unreadable};

/// How long a bearer token stays valid without use.
const TOKEN_IDLE: Duration = Duration::from_secs(8 * 60 * 60);

/// The Flight SQL listener, bound and ready to serve.
pub struct FlightServer {
    listener: TcpListener,
    /// With `[server.tls]`, the port speaks TLS only.
    tls: Option<tonic::transport::ServerTlsConfig>,
    service: FjordFlightSql,
}

impl FlightServer {
    /// Binds `address` for `engine`; users and their verifiers come from `[server.auth]`.
    pub async fn bind(address: &str, engine: Arc<Engine>) -> std::io::Result<FlightServer> {
        let listener = TcpListener::bind(address).await?;
        let users = engine
            .config()
            .server
            .auth
            .verifiers()
            .map_err(|(key, reason)| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{key}: {reason}"))
            })?;
        let tls = match &engine.config().server.tls {
            Some(tls) => {
                // tonic's TLS takes the process's rustls provider; more than one is linked in,
                // so name fjord's (the one the Postgres port uses). Already set is fine.
                let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
                let base = &engine.config().base_dir;
                let read = |path: std::path::PathBuf| {
                    std::fs::read(&path).map_err(|error| {
                        std::io::Error::new(
                            error.kind(),
                            format!("cannot read {}: {error}", path.display()),
                        )
                    })
                };
                let identity = tonic::transport::Identity::from_pem(
                    read(tls.cert_path(base))?,
                    read(tls.key_path(base))?,
                );
                Some(tonic::transport::ServerTlsConfig::new().identity(identity))
            }
            None => None,
        };
        Ok(FlightServer {
            listener,
            tls,
            service: FjordFlightSql {
                engine,
                users,
                tokens: Mutex::default(),
                running: Running::default(),
                statements: Mutex::default(),
                sql_info: sql_info(),
                type_info: type_info(),
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; calls in flight are given no grace (their clients see the
    /// connection end).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), tonic::transport::Error> {
        let address = self.listener.local_addr().ok();
        tracing::info!(
            ?address,
            users = self.service.users.len(),
            "flight sql listening"
        );
        // Statements whose endpoints nobody fetches are dropped after a while, even when no
        // other statement comes to sweep them.
        let running = self.service.running.clone();
        let sweeping = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sweeping.cancelled() => return,
                    _ = tokio::time::sleep(running::UNREAD_TTL / 10) => running.sweep(),
                }
            }
        });
        // TCP_NODELAY: without it, a small response (a FlightInfo, the last frame of a short
        // result) waits for the client's delayed ACK, about 40 ms on Linux, on every call.
        // Tonic sets it only on listeners it binds itself.
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .add_service(FlightServiceServer::new(self.service))
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await
    }
}

struct FjordFlightSql {
    engine: Arc<Engine>,
    /// User name to verifier; empty: loopback callers are trusted.
    users: BTreeMap<String, ScramVerifier>,
    /// Bearer token to (its session, last use).
    tokens: Mutex<HashMap<String, (FlightSession, Instant)>>,
    /// Statements started by GetFlightInfo, until their endpoints are read.
    running: Running,
    /// Prepared statements by handle, until closed.
    statements: Mutex<HashMap<Vec<u8>, PreparedStatement>>,
    sql_info: SqlInfoData,
    type_info: XdbcTypeInfoData,
}

/// The SQL types clients may use in statements, for GetXdbcTypeInfo: fjord's column types by
/// their Postgres names.
fn type_info() -> XdbcTypeInfoData {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    /// Name, type, column size, creation parameters, and whether values are quoted text.
    type TypeFacts = (
        &'static str,
        XdbcDataType,
        Option<i32>,
        Option<&'static str>,
        bool,
    );
    let types: [TypeFacts; 11] = [
        ("boolean", XdbcDataType::XdbcBit, Some(1), None, false),
        (
            "smallint",
            XdbcDataType::XdbcSmallint,
            Some(16),
            None,
            false,
        ),
        ("integer", XdbcDataType::XdbcInteger, Some(32), None, false),
        ("bigint", XdbcDataType::XdbcBigint, Some(64), None, false),
        ("real", XdbcDataType::XdbcReal, Some(24), None, false),
        (
            "double precision",
            XdbcDataType::XdbcDouble,
            Some(53),
            None,
            false,
        ),
        (
            "numeric",
            XdbcDataType::XdbcDecimal,
            Some(38),
            Some("precision, scale"),
            false,
        ),
        ("text", XdbcDataType::XdbcVarchar, None, None, true),
        ("date", XdbcDataType::XdbcDate, Some(10), None, false),
        (
            "timestamp",
            XdbcDataType::XdbcTimestamp,
            Some(26),
            None,
            false,
        ),
        ("bytea", XdbcDataType::XdbcVarbinary, None, None, false),
    ];
    for (name, kind, size, params, text) in types {
        let numeric = size.is_some()
            && !matches!(
                kind,
                XdbcDataType::XdbcBit | XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp
            );
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type: kind,
            column_size: size,
            literal_prefix: text.then(|| "'".into()),
            literal_suffix: text.then(|| "'".into()),
            create_params: params.map(|params| vec![params.into()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: false,
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: kind,
            datetime_subcode: None,
            num_prec_radix: numeric.then_some(2),
            interval_precision: None,
        });
    }
    builder.build().expect("the type facts build")
}

/// The schema of GetPrimaryKeys' answer, as the Flight SQL specification defines it.
fn primary_keys_schema() -> Schema {
    use arrow::datatypes::{DataType, Field};
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("key_name", DataType::Utf8, true),
    ])
}

/// The schema of GetImportedKeys', GetExportedKeys' and GetCrossReference's answers.
fn foreign_keys_schema() -> Schema {
    use arrow::datatypes::{DataType, Field};
    Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// No rows of `schema`: fjord does not track keys, and clients expect an empty answer.
fn no_rows(schema: Schema) -> Result<Response<DoGetStream>, Status> {
    one_batch(Ok(arrow::record_batch::RecordBatch::new_empty(Arc::new(
        schema,
    ))))
}

/// A prepared statement of one user, with the parameters bound last.
#[derive(Clone)]
struct PreparedStatement {
    user: String,
    client: FlightSession,
    prepared: Prepared,
    parameters: Option<ParamValues>,
}

/// A client's session: a bearer token's for the token's life (so `SET`, cursors and
/// transaction blocks carry over between its calls, as on a Postgres connection), or one
/// call's. It is registered as a backend, so `kill_query` and `pg_cancel_backend` reach its
/// statements.
#[derive(Clone)]
struct FlightSession {
    user: String,
    session: Session,
    /// Cancels the statements running now; replaced once used, so later ones run.
    cancel: Arc<Mutex<CancellationToken>>,
}

impl FlightSession {
    fn new(engine: &Arc<Engine>, user: &str) -> Result<FlightSession, Status> {
        let session = engine.new_session();
        session
            .set_client(Some(user), None, Some("flight sql"))
            .map_err(|error| status(&error))?;
        let cancel = Arc::new(Mutex::new(CancellationToken::new()));
        let current = cancel.clone();
        session.set_backend(
            fjord_engine::queries::next_backend_pid(),
            Arc::new(move || {
                let mut token = current.lock();
                token.cancel();
                *token = CancellationToken::new();
            }),
        );
        Ok(FlightSession {
            user: user.to_string(),
            session,
            cancel,
        })
    }

    /// The token that cancels a statement starting now.
    fn statement_token(&self) -> CancellationToken {
        self.cancel.lock().child_token()
    }
}

/// A schema as Flight SQL sends it in messages: an IPC schema message.
fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let message: IpcMessage =
        SchemaAsIpc::new(schema, &arrow::ipc::writer::IpcWriteOptions::default())
            .try_into()
            .map_err(|error: arrow::error::ArrowError| {
                Status::internal(format!("cannot encode a schema: {error}"))
            })?;
    Ok(message.0)
}

/// The parameter values in the first row of what a client put, in column order. The stream
/// is read whole, its first message (with the schema) included.
async fn bound_parameters(stream: PeekableFlightDataStream) -> Result<Option<ParamValues>, Status> {
    let mut batches =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from));
    while let Some(batch) = batches.next().await {
        let batch =
            batch.map_err(|error| Status::invalid_argument(format!("bad parameters: {error}")))?;
        if batch.num_rows() == 0 {
            continue;
        }
        if batch.num_rows() > 1 {
            return Err(Status::invalid_argument(
                "bind one row of parameters at a time",
            ));
        }
        let values = batch
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Status::invalid_argument(format!("bad parameters: {error}")))?;
        return Ok(Some(ParamValues::from(values)));
    }
    Ok(None)
}

/// The facts clients read with GetSqlInfo.
fn sql_info() -> SqlInfoData {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "fjord");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "58");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
    builder.append(SqlInfo::FlightSqlServerCancel, true);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlIdentifierCase, 2_i32); // lowercase, as Postgres folds
    builder.append(SqlInfo::SqlQuotedIdentifierCase, 3_i32); // case sensitive
    builder.append(SqlInfo::SqlDdlCatalog, true);
    builder.append(SqlInfo::SqlDdlSchema, true);
    builder.append(SqlInfo::SqlDdlTable, true);
    builder.append(SqlInfo::SqlAllTablesAreSelectable, true);
    builder.append(SqlInfo::SqlSearchStringEscape, "\\");
    builder.append(SqlInfo::SqlCatalogTerm, "catalog");
    builder.append(SqlInfo::SqlSchemaTerm, "schema");
    builder.build().expect("the SQL info facts build")
}

/// The gRPC status for an engine error: the code of its SQLSTATE's class, the message the
/// Postgres front door would give, and the SQLSTATE in the `x-sqlstate` header.
fn status(error: &EngineError) -> Status {
    use tonic::Code;
    let state = error.sqlstate.as_str();
    let code = match state {
        "42P01" | "3D000" | "3F000" | "42703" | "42883" | "42704" => Code::NotFound,
        "42501" => Code::PermissionDenied,
        "57014" => Code::Cancelled,
        "0A000" => Code::Unimplemented,
        "42P07" | "42P06" | "42710" => Code::AlreadyExists,
        "57P01" => Code::Unavailable,
        _ if state.starts_with("08") => Code::Unavailable,
        _ if state.starts_with("28") => Code::Unauthenticated,
        _ if state.starts_with("53") => Code::ResourceExhausted,
        _ if state.starts_with("42") || state.starts_with("22") => Code::InvalidArgument,
        _ if state.starts_with("55") => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    let mut status = Status::new(code, error.message.clone());
    if let Ok(value) = state.parse() {
        status.metadata_mut().insert("x-sqlstate", value);
    }
    status
}

type DoGetStream = <FjordFlightSql as FlightService>::DoGetStream;

/// `batches` (with `schema`) as Flight data; an error mid-stream becomes its gRPC status.
fn flight_stream(
    schema: Arc<Schema>,
    batches: impl Stream<Item = Result<arrow::record_batch::RecordBatch, EngineError>> + Send + 'static,
) -> DoGetStream {
    let batches = batches.map_err(|error| FlightError::Tonic(Box::new(status(&error))));
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    )
}

fn one_batch(
    batch: Result<arrow::record_batch::RecordBatch, FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|error| Status::internal(error.to_string()))?;
    let schema = batch.schema();
    Ok(Response::new(flight_stream(
        schema,
        futures::stream::once(async move { Ok(batch) }),
    )))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`.
fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|error| Status::internal(format!("cannot encode the schema: {error}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// Who is calling: a client with a session of its own, or a trusted one without.
enum Caller {
    Session(FlightSession),
    Trusted(String),
}

impl FjordFlightSql {
    /// The `FlightInfo` of a metadata command for an authenticated caller: the command's result
    /// schema and one endpoint whose ticket is the command itself.
    fn command_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: &impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        flight_info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// The caller: its bearer token's session, or a user trusted on loopback when no users
    /// exist.
    fn caller(&self, metadata: &MetadataMap, peer: Option<SocketAddr>) -> Result<Caller, Status> {
        if let Some(token) = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        {
            let mut tokens = self.tokens.lock();
            if let Some((session, used)) = tokens.get_mut(token)
                && used.elapsed() < TOKEN_IDLE
            {
                *used = Instant::now();
                return Ok(Caller::Session(session.clone()));
            }
            tokens.remove(token);
            return Err(Status::unauthenticated(
                "the bearer token is unknown or expired; send a Handshake again",
            ));
        }
        if self.users.is_empty() {
            if peer.is_some_and(|peer| peer.ip().is_loopback()) {
                return Ok(Caller::Trusted("flight".to_string()));
            }
            return Err(Status::unauthenticated(
                "no users are configured: only loopback connections are accepted",
            ));
        }
        Err(Status::unauthenticated(
            "authenticate first: a Handshake with Basic credentials returns a bearer token",
        ))
    }

    /// The caller's user.
    fn user(&self, metadata: &MetadataMap, peer: Option<SocketAddr>) -> Result<String, Status> {
        Ok(match self.caller(metadata, peer)? {
            Caller::Session(session) => session.user,
            Caller::Trusted(user) => user,
        })
    }

    /// The caller's session: its token's, or a new one for this call.
    fn client<T>(&self, request: &Request<T>) -> Result<FlightSession, Status> {
        match self.caller(request.metadata(), request.remote_addr())? {
            Caller::Session(session) => Ok(session),
            Caller::Trusted(user) => FlightSession::new(&self.engine, &user),
        }
    }

    /// The caller's prepared statement `handle`.
    fn statement<T>(
        &self,
        handle: &[u8],
        request: &Request<T>,
    ) -> Result<PreparedStatement, Status> {
        let user = self.user(request.metadata(), request.remote_addr())?;
        match self.statements.lock().get(handle) {
            Some(statement) if statement.user == user => Ok(statement.clone()),
            _ => Err(Status::not_found(
                "no such prepared statement (closed, or another user's)",
            )),
        }
    }

    /// The caller's session (see [`FjordFlightSql::client`]).
    fn session<T>(&self, request: &Request<T>) -> Result<Session, Status> {
        Ok(self.client(request)?.session)
    }

    /// Starts `prepared` (with `parameters`) in `client`'s session and describes its result:
    /// one endpoint per partition, each read by its own DoGet.
    async fn start(
        &self,
        client: &FlightSession,
        prepared: &Prepared,
        parameters: Option<ParamValues>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let announced = client.session.rows_schema(prepared);
        let cancel = client.statement_token();
        let executed = client
            .session
            .execute_partitioned(prepared, parameters)
            .await
            .map_err(|error| status(&error))?;
        let mut streams = match executed {
            Executed::Partitions(streams) => streams,
            Executed::One(Outcome::Rows { stream, .. } | Outcome::Copy { stream, .. }) => {
                vec![stream]
            }
            // It ran: its endpoint has no rows.
            Executed::One(_) => Vec::new(),
        };
        let schema = announced
            .or_else(|| streams.first().map(|stream| stream.schema()))
            .map(|schema| classic_types(&schema))
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        if streams.is_empty() {
            streams.push(Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                futures::stream::empty(),
            )));
        }
        let partitions = streams.len() as u32;
        let (id, expires) = self.running.insert(
            &client.user,
            client.session.clone(),
            schema.clone(),
            streams,
            cancel,
            client.session.statement_timeout(),
        )?;
        let since_epoch = expires
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let expiration = prost_types::Timestamp {
            seconds: since_epoch.as_secs() as i64,
            nanos: since_epoch.subsec_nanos() as i32,
        };
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|error| Status::internal(format!("cannot encode the schema: {error}")))?
            .with_descriptor(descriptor)
            .with_ordered(partitions == 1);
        for partition in 0..partitions {
            let ticket = TicketStatementQuery {
                statement_handle: running::ticket_bytes(&id, partition).into(),
            };
            info = info.with_endpoint(
                FlightEndpoint::new()
                    .with_ticket(Ticket::new(ticket.as_any().encode_to_vec()))
                    .with_expiration_time(expiration),
            );
        }
        Ok(Response::new(info))
    }

    /// Cancels the statement whose `FlightInfo` is `info`, for the caller of `request`:
    /// whether it was still running.
    fn cancel<T>(&self, info: &FlightInfo, request: &Request<T>) -> Result<bool, Status> {
        let user = self.user(request.metadata(), request.remote_addr())?;
        let Some((id, _)) = info
            .endpoint
            .first()
            .and_then(|endpoint| endpoint.ticket.as_ref())
            .and_then(|ticket| {
                arrow_flight::sql::Any::decode(ticket.ticket.as_ref())
                    .ok()?
                    .unpack::<TicketStatementQuery>()
                    .ok()?
            })
            .and_then(|ticket| running::parse_ticket(&ticket.statement_handle))
        else {
            return Err(Status::invalid_argument(
                "the FlightInfo is not one of a statement fjord started",
            ));
        };
        let admin = self.engine.config().server.auth.is_admin(&user);
        self.running
            .cancel(&id, &user, admin)
            .map_err(|_| Status::permission_denied("the statement is another user's"))
    }

    /// Every `(catalog, schema, table, type)` the session can see, from `information_schema`.
    async fn tables(&self, session: &Session) -> Result<Vec<[String; 4]>, Status> {
        let batches = session
            .run_sql(
                "SELECT table_catalog, table_schema, table_name, table_type \
                 FROM information_schema.tables ORDER BY 1, 2, 3",
            )
            .await
            .map_err(|error| status(&error))?;
        let mut rows = Vec::new();
        for batch in batches {
            let [catalogs, schemas, tables, kinds] = [0, 1, 2, 3].map(|i| text_column(&batch, i));
            let (catalogs, schemas, tables, kinds) = (catalogs?, schemas?, tables?, kinds?);
            for (((catalog, schema), table), kind) in
                catalogs.into_iter().zip(schemas).zip(tables).zip(kinds)
            {
                rows.push([catalog, schema, table, kind]);
            }
        }
        Ok(rows)
    }
}

/// `sql` with JDBC/ODBC-style `?` parameter markers, which Flight SQL clients send (ADBC's
/// DB-API uses them), numbered as `$1`, `$2`, ...; markers inside quoted strings, quoted
/// identifiers, dollar-quoted strings and comments are left alone.
fn number_question_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    let mut next = 1;
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for (_, inner) in chars.by_ref() {
                    out.push(inner);
                    if inner == c {
                        // A doubled quote continues the string; the loop reads it as a
                        // closing quote followed by a new opening one.
                        break;
                    }
                }
            }
            '-' if sql[at..].starts_with("--") => {
                out.push(c);
                for (_, inner) in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '/' if sql[at..].starts_with("/*") => {
                let end = sql[at + 2..]
                    .find("*/")
                    .map_or(sql.len(), |end| at + 2 + end + 2);
                out.push_str(&sql[at..end]);
                while chars.peek().is_some_and(|(index, _)| *index < end) {
                    chars.next();
                }
            }
            '$' => {
                // `$tag$ ... $tag$` (tag empty or an identifier); `$1` is a number, not a tag.
                let rest = &sql[at + 1..];
                let tag_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'));
                match tag_end {
                    Some(end)
                        if rest[end..].starts_with('$')
                            && !rest[..end].starts_with(|c: char| c.is_ascii_digit()) =>
                    {
                        let delimiter = &sql[at..at + end + 2];
                        let body = at + delimiter.len();
                        let close = sql[body..]
                            .find(delimiter)
                            .map_or(sql.len(), |close| body + close + delimiter.len());
                        out.push_str(&sql[at..close]);
                        while chars.peek().is_some_and(|(index, _)| *index < close) {
                            chars.next();
                        }
                    }
                    _ => out.push(c),
                }
            }
            '?' => {
                out.push_str(&format!("${next}"));
                next += 1;
            }
            other => out.push(other),
        }
    }
    out
}

/// Runs `prepared` and streams its rows in the schema its `FlightInfo` announced (the planned
/// one): Flight SQL clients check that the two agree, and execution may find a column never
/// null where planning could not tell, or choose another physical type for it.
async fn rows_stream(
    session: &Session,
    prepared: &Prepared,
    parameters: Option<ParamValues>,
) -> Result<DoGetStream, Status> {
    let announced = session.rows_schema(prepared);
    let outcome = session
        .execute(prepared, parameters)
        .await
        .map_err(|error| status(&error))?;
    let Outcome::Rows { stream, .. } = outcome else {
        return Ok(flight_stream(
            Arc::new(Schema::empty()),
            futures::stream::empty(),
        ));
    };
    let schema = classic_types(&announced.unwrap_or_else(|| stream.schema()));
    let target = schema.clone();
    let batches = stream.map(move |batch| {
        let batch = batch.map_err(EngineError::from)?;
        conform(batch, &target)
    });
    Ok(flight_stream(schema, batches))
}

/// `schema` as Flight clients are sent it: strings and binaries in Arrow's classic layout
/// (`Utf8`, `Binary`) rather than as views. The lake's strings are views inside fjord, but
/// Flight SQL clients built on Arrow releases before views (Arrow Java's JDBC driver among
/// them, as BI tools use it) cannot read them, and every client reads the classic types.
fn classic_types(schema: &Schema) -> Arc<Schema> {
    use arrow::datatypes::DataType;
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let classic = match field.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                other => other.clone(),
            };
            field.as_ref().clone().with_data_type(classic)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with `schema`'s fields: columns cast where their types differ.
fn conform(
    batch: arrow::record_batch::RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<arrow::record_batch::RecordBatch, EngineError> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch);
    }
    let internal = |error: arrow::error::ArrowError| {
        EngineError::new(
            "XX000",
            format!("the rows do not fit the announced schema: {error}"),
        )
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type()).map_err(internal)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).map_err(internal)
}

/// The rows an update wrote: its command's count, or the rows it answered (an INSERT's count
/// comes as a row); -1 when unknown.
async fn affected_rows(outcome: Outcome) -> Result<i64, Status> {
    match outcome {
        Outcome::Command(tag) => Ok(tag.rows.map_or(-1, |rows| rows as i64)),
        Outcome::Rows { mut stream, .. } => {
            let mut rows = 0_i64;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|error| status(&EngineError::from(error)))?;
                rows += batch.num_rows() as i64;
            }
            Ok(rows)
        }
        _ => Ok(-1),
    }
}

/// Column `index` of `batch` as text (NULL as empty).
fn text_column(
    batch: &arrow::record_batch::RecordBatch,
    index: usize,
) -> Result<Vec<String>, Status> {
    let text = arrow::compute::cast(batch.column(index), &arrow::datatypes::DataType::Utf8)
        .map_err(|error| Status::internal(error.to_string()))?;
    let text = text
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .ok_or_else(|| Status::internal("a column cast to text is not text"))?;
    Ok(text
        .iter()
        .map(|value| value.unwrap_or_default().to_string())
        .collect())
}

/// `information_schema`'s table types as Flight SQL names them.
fn table_type(information_schema: &str) -> &str {
    match information_schema {
        "BASE TABLE" => "TABLE",
        other => other,
    }
}

/// A double-quoted SQL identifier.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[tonic::async_trait]
impl FlightSqlService for FjordFlightSql {
    type FlightService = FjordFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let basic = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "))
            .map(|encoded| {
                // Padded or not: Go's Flight client (under ADBC) sends it unpadded.
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(encoded.trim().trim_end_matches('='))
                    .ok()
                    .and_then(|decoded| String::from_utf8(decoded).ok())
                    .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))
            })
            .transpose()?;
        let user = match basic.as_deref().and_then(|text| text.split_once(':')) {
            Some((user, password)) => {
                let known = self.users.get(user);
                let accepted = match known {
                    Some(verifier) => verifier.matches_password(password),
                    None => self.users.is_empty(),
                };
                if !accepted {
                    tracing::warn!(user, peer = ?request.remote_addr(), "flight sql: password authentication failed");
                    return Err(Status::unauthenticated(format!(
                        "password authentication failed for user \"{user}\""
                    )));
                }
                user.to_string()
            }
            None => self.user(request.metadata(), request.remote_addr())?,
        };
        let token = {
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| Status::internal("no secure random source"))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let session = FlightSession::new(&self.engine, &user)?;
        {
            let mut tokens = self.tokens.lock();
            tokens.retain(|_, (_, used)| used.elapsed() < TOKEN_IDLE);
            tokens.insert(token.clone(), (session, Instant::now()));
        }
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(futures::stream::once(async { Ok(reply) })));
        if let Ok(value) = format!("Bearer {token}").parse() {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let client = self.client(&request)?;
        let prepared = client
            .session
            .prepare(&query.query)
            .await
            .map_err(|error| status(&error))?;
        self.start(&client, &prepared, None, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let user = self.user(request.metadata(), request.remote_addr())?;
        let (id, partition) = running::parse_ticket(&ticket.statement_handle)
            .ok_or_else(|| Status::invalid_argument("the ticket is not one of fjord's"))?;
        let (schema, reading) =
            self.running
                .take(&id, partition, &user)
                .map_err(|reason| match reason {
                    Unreadable::Unknown => Status::not_found(
                        "no such statement: it ended, was cancelled, or waited too long to be \
                         fetched; call GetFlightInfo again",
                    ),
                    Unreadable::NotYours => {
                        Status::permission_denied("the statement is another user's")
                    }
                    Unreadable::Taken => Status::failed_precondition(
                        "this endpoint was fetched already: each endpoint is read once",
                    ),
                })?;
        let target = schema.clone();
        let batches = reading.map(move |batch| conform(batch?, &target));
        Ok(Response::new(flight_stream(schema, batches)))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session(&request)?;
        let prepared = session
            .prepare_to_run(&command.query)
            .await
            .map_err(|error| status(&error))?;
        let outcome = session
            .execute(&prepared, None)
            .await
            .map_err(|error| status(&error))?;
        affected_rows(outcome).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(request, &schema, &query)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        let mut builder = query.into_builder();
        for name in self.engine.registry().names() {
            builder.append(name);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(request, &schema, &query)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let mut schemas: Vec<(String, String)> = Vec::new();
        let listed = session
            .run_sql("SELECT catalog_name, schema_name FROM information_schema.schemata")
            .await
            .map_err(|error| status(&error))?;
        for batch in listed {
            let (catalogs, names) = (text_column(&batch, 0)?, text_column(&batch, 1)?);
            schemas.extend(catalogs.into_iter().zip(names));
        }
        schemas.sort();
        schemas.dedup();
        let mut builder = query.into_builder();
        for (catalog, schema) in schemas {
            builder.append(catalog, schema);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(request, &schema, &query)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for [catalog, schema, table, kind] in self.tables(&session).await? {
            let columns = if include_schema && schema != "information_schema" {
                let sql = format!(
                    "SELECT * FROM {}.{}.{} LIMIT 0",
                    quote(&catalog),
                    quote(&schema),
                    quote(&table)
                );
                match session.prepare(&sql).await {
                    Ok(prepared) => prepared
                        .output_schema()
                        .map(|schema| classic_types(&schema).as_ref().clone())
                        .unwrap_or_else(Schema::empty),
                    Err(_) => Schema::empty(),
                }
            } else {
                Schema::empty()
            };
            builder
                .append(&catalog, &schema, &table, table_type(&kind), &columns)
                .map_err(|error| Status::internal(error.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(request, &schema, &query)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        let mut builder = query.into_builder();
        for kind in ["TABLE", "VIEW"] {
            builder.append(kind);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.command_info(request, &schema, &query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        one_batch(query.into_builder(&self.sql_info).build())
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let client = self.client(&request)?;
        let prepared = client
            .session
            .prepare(&number_question_marks(&query.query))
            .await
            .map_err(|error| status(&error))?;
        let dataset = prepared
            .output_schema()
            .map(|schema| classic_types(&schema).as_ref().clone())
            .unwrap_or_else(Schema::empty);
        let parameters = Schema::new(
            prepared
                .parameter_types()
                .into_iter()
                .enumerate()
                .map(|(index, kind)| {
                    arrow::datatypes::Field::new(
                        format!("${}", index + 1),
                        kind.unwrap_or(arrow::datatypes::DataType::Utf8),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let handle = {
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; 16];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| Status::internal("no secure random source"))?;
            bytes.to_vec()
        };
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.clone().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        };
        self.statements.lock().insert(
            handle,
            PreparedStatement {
                user: client.user.clone(),
                client,
                prepared,
                parameters: None,
            },
        );
        Ok(result)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = query.prepared_statement_handle.to_vec();
        self.statement(&handle, &request)?;
        let parameters = bound_parameters(request.into_inner()).await?;
        if let Some(statement) = self.statements.lock().get_mut(&handle) {
            statement.parameters = parameters;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = self.statement(&query.prepared_statement_handle, &request)?;
        self.start(
            &statement.client,
            &statement.prepared,
            statement.parameters.clone(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let statement = self.statement(&query.prepared_statement_handle, &request)?;
        Ok(Response::new(
            rows_stream(
                &statement.client.session,
                &statement.prepared,
                statement.parameters.clone(),
            )
            .await?,
        ))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle = query.prepared_statement_handle.to_vec();
        let statement = self.statement(&handle, &request)?;
        let parameters = bound_parameters(request.into_inner())
            .await?
            .or(statement.parameters.clone());
        let outcome = statement
            .client
            .session
            .execute(&statement.prepared, parameters)
            .await
            .map_err(|error| status(&error))?;
        affected_rows(outcome).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let handle = query.prepared_statement_handle.to_vec();
        self.statement(&handle, &request)?;
        self.statements.lock().remove(&handle);
        Ok(())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.type_info).schema();
        self.command_info(request, &schema, &query)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        one_batch(query.into_builder(&self.type_info).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &primary_keys_schema(), &query)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        no_rows(primary_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &foreign_keys_schema(), &query)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        no_rows(foreign_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &foreign_keys_schema(), &query)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        no_rows(foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &foreign_keys_schema(), &query)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(request.metadata(), request.remote_addr())?;
        no_rows(foreign_keys_schema())
    }

    /// Flight SQL's older cancel action, with the `FlightInfo` serialized in the request.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|error| Status::invalid_argument(format!("bad FlightInfo: {error}")))?;
        // Its result codes are CancelFlightInfo's (the older enum is not exported).
        let result = if self.cancel(&info, &request)? {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        Ok(ActionCancelQueryResult {
            result: result as i32,
        })
    }

    /// Flight's `CancelFlightInfo` action, which Flight SQL clients send to cancel a statement.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type != "CancelFlightInfo" {
            return Err(Status::unimplemented(format!(
                "fjord has no action {:?}",
                request.get_ref().r#type
            )));
        }
        let cancel =
            CancelFlightInfoRequest::decode(request.get_ref().body.as_ref()).map_err(|error| {
                Status::invalid_argument(format!("bad CancelFlightInfoRequest: {error}"))
            })?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
        let status = if self.cancel(&info, &request)? {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        let result = CancelFlightInfoResult {
            status: status as i32,
        };
        Ok(Response::new(Box::pin(futures::stream::once(async move {
            Ok(arrow_flight::Result {
                body: result.encode_to_vec().into(),
            })
        }))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        Some(vec![Ok(arrow_flight::ActionType {
            r#type: "CancelFlightInfo".into(),
            description: "Cancels a statement: its FlightInfo in a CancelFlightInfoRequest".into(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_parameters_outside_quotes_and_comments() {
        assert_eq!(
            number_question_marks("SELECT * FROM t WHERE a = ? AND b = ?"),
            "SELECT * FROM t WHERE a = $1 AND b = $2"
        );
        assert_eq!(
            number_question_marks(
                "SELECT '?', 'it''s ?', \"q?\", $$ ? $$, $x$?$x$ -- ?\n, ? /* ? */, $1"
            ),
            "SELECT '?', 'it''s ?', \"q?\", $$ ? $$, $x$?$x$ -- ?\n, $1 /* ? */, $1"
        );
    }

    #[test]
    fn errors_carry_the_code_of_their_class() {
        let code = |state: &str| status(&EngineError::new(state, "x")).code();
        assert_eq!(code("42P01"), tonic::Code::NotFound);
        assert_eq!(code("42601"), tonic::Code::InvalidArgument);
        assert_eq!(code("08001"), tonic::Code::Unavailable);
        assert_eq!(code("57014"), tonic::Code::Cancelled);
        assert_eq!(code("XX000"), tonic::Code::Internal);
        let with_state = status(&EngineError::new("42P01", "relation \"t\" does not exist"));
        assert_eq!(with_state.metadata().get("x-sqlstate").unwrap(), "42P01");
        assert_eq!(with_state.message(), "relation \"t\" does not exist");
    }
}
