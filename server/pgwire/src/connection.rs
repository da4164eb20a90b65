//! One client connection: startup, simple and extended query protocols, cancel requests.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::into_pg_type;
use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fjord_engine::{CommandTag, Engine, EngineError, Outcome, Prepared, Session, sqlstate};
use futures::{Sink, SinkExt, TryStreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, ErrorHandler, METADATA_APPLICATION_NAME,
    METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Execute, Parse, ParseComplete, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::startup::{Authentication, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Admission, AuthFailure, Exchange, SCRAM_SHA_256, fatal, random_bytes};
use crate::cancel::{CancelRegistry, QueryCancel, QueryToken};
use crate::encode::{canceled, canceled_by, engine_error, pg_fields, query_response};

/// Counts a query as running while alive; shutdown waits for the count to reach zero.
pub(crate) struct QueryGuard(Arc<AtomicUsize>);

impl QueryGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        QueryGuard(counter.clone())
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Connection {
    session: Session,
    parser: Arc<Parser>,
    cancels: Arc<CancelRegistry>,
    query_cancel: Arc<QueryCancel>,
    running_queries: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    peer: SocketAddr,
    /// Past `max_connections`: the startup is answered with 53300 and the connection closed.
    over_limit: bool,
    access: Arc<Access>,
    /// Where this connection's password exchange stands.
    exchange: parking_lot::Mutex<Exchange>,
    /// The format options last built, with the `extra_float_digits` they were built for.
    format: parking_lot::Mutex<Option<(Option<i8>, Arc<FormatOptions>)>>,
    /// Row descriptions built lately (see `fields`).
    described: parking_lot::Mutex<Vec<Described>>,
}

/// A row description, and what it was built from.
struct Described {
    schema: SchemaRef,
    format: Format,
    options: Option<Arc<FormatOptions>>,
    fields: Arc<Vec<FieldInfo>>,
}

/// How many row descriptions a connection keeps: a client's Describe and Execute of the
/// statement it runs over and over, with a few to spare.
const DESCRIBED: usize = 4;

/// Whether two result formats ask for the same column formats.
fn same_format(a: &Format, b: &Format) -> bool {
    match (a, b) {
        (Format::UnifiedText, Format::UnifiedText)
        | (Format::UnifiedBinary, Format::UnifiedBinary) => true,
        (Format::Individual(a), Format::Individual(b)) => a == b,
        _ => false,
    }
}

impl Connection {
    pub(crate) fn new(
        engine: Arc<Engine>,
        cancels: Arc<CancelRegistry>,
        running_queries: Arc<AtomicUsize>,
        shutdown: CancellationToken,
        peer: SocketAddr,
        over_limit: bool,
        access: Arc<Access>,
    ) -> Self {
        let session = engine.new_session();
        Connection {
            parser: Arc::new(Parser {
                session: session.clone(),
            }),
            session,
            cancels,
            query_cancel: Arc::new(QueryCancel::default()),
            running_queries,
            shutdown,
            peer,
            over_limit,
            access,
            exchange: parking_lot::Mutex::new(Exchange::Idle),
            format: parking_lot::Mutex::default(),
            described: parking_lot::Mutex::default(),
        }
    }

    /// Refuses new work once the server is shutting down, as PostgreSQL does.
    fn check_shutdown(&self) -> PgWireResult<()> {
        if self.shutdown.is_cancelled() {
            return Err(engine_error(EngineError::new(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            )));
        }
        Ok(())
    }

    /// How results are written: the startup message's choices, then the session's current
    /// `extra_float_digits` (which SET changes after startup). Built again only when that
    /// setting changed: the startup message's choices are fixed.
    fn format_options<C: ClientInfo>(&self, client: &C) -> Arc<FormatOptions> {
        let digits = self.session.extra_float_digits();
        let mut format = self.format.lock();
        if let Some((built_for, options)) = format.as_ref()
            && *built_for == digits
        {
            return options.clone();
        }
        let mut options = FormatOptions::from_client_metadata(client.metadata());
        if let Some(digits) = digits {
            options.extra_float_digits = digits;
        }
        let options = Arc::new(options);
        *format = Some((digits, options.clone()));
        options
    }

    /// The row description of rows of `schema` written in `format` with `options`: built
    /// again only when it differs from one built lately, since clients describe and run the
    /// same statements over and over.
    fn fields(
        &self,
        schema: &SchemaRef,
        format: &Format,
        options: Option<Arc<FormatOptions>>,
    ) -> PgWireResult<Arc<Vec<FieldInfo>>> {
        let same_options = |kept: &Option<Arc<FormatOptions>>| match (kept, &options) {
            (None, None) => true,
            (Some(kept), Some(options)) => Arc::ptr_eq(kept, options) || kept == options,
            _ => false,
        };
        let mut described = self.described.lock();
        if let Some(index) = described.iter().position(|kept| {
            (Arc::ptr_eq(&kept.schema, schema) || kept.schema == *schema)
                && same_format(&kept.format, format)
                && same_options(&kept.options)
        }) {
            // The most recent last, so that the oldest goes first.
            let kept = described.remove(index);
            let fields = kept.fields.clone();
            described.push(kept);
            return Ok(fields);
        }
        let fields = Arc::new(pg_fields(schema, format, options.clone())?);
        if described.len() == DESCRIBED {
            described.remove(0);
        }
        described.push(Described {
            schema: schema.clone(),
            format: format.clone(),
            options,
            fields: fields.clone(),
        });
        Ok(fields)
    }

    /// The row description of `statement`'s rows in `format` (empty for a statement without
    /// rows), as Describe gives it.
    fn statement_fields(
        &self,
        statement: &Prepared,
        format: &Format,
    ) -> PgWireResult<Arc<Vec<FieldInfo>>> {
        match statement.describe_output() {
            Some(schema) => self.fields(&schema, format, None),
            None => Ok(Arc::default()),
        }
    }

    /// Turns an engine outcome into a pgwire response. Rows stay a lazy stream.
    fn response(
        &self,
        outcome: Outcome,
        format: &Format,
        options: Arc<FormatOptions>,
        cancel: QueryToken,
    ) -> PgWireResult<Response> {
        Ok(match outcome {
            Outcome::Empty => Response::EmptyQuery,
            Outcome::Command(tag) => Response::Execution(pg_tag(&tag)),
            Outcome::TransactionStart(tag) => Response::TransactionStart(pg_tag(&tag)),
            Outcome::TransactionEnd(tag) => Response::TransactionEnd(pg_tag(&tag)),
            Outcome::Copy { .. } => {
                return Err(engine_error(EngineError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "COPY ... TO STDOUT must be sent alone: as the only statement of a query \
                     string (as psql's \\copy sends it) or by an Execute without a row limit",
                )));
            }
            Outcome::Rows { stream, tag } => {
                let fields = self.fields(&stream.schema(), format, Some(options))?;
                let guard = QueryGuard::new(&self.running_queries);
                Response::Query(query_response(stream, fields, &tag, cancel, guard))
            }
        })
    }

    /// Runs `future` unless the query is cancelled first.
    async fn cancellable<T>(
        cancel: &QueryToken,
        future: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> PgWireResult<T> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(canceled_by(cancel)),
            result = future => result.map_err(engine_error),
        }
    }
}

fn pg_tag(tag: &CommandTag) -> Tag {
    let mut pg = Tag::new(&tag.command);
    if let Some(oid) = tag.oid {
        pg = pg.with_oid(oid);
    }
    if let Some(rows) = tag.rows {
        pg = pg.with_rows(rows);
    }
    pg
}

/// The handlers pgwire asks for: all of them are this one connection.
pub(crate) struct ConnectionHandlers(Arc<Connection>);

impl ConnectionHandlers {
    pub(crate) fn new(connection: Arc<Connection>) -> Self {
        ConnectionHandlers(connection)
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.0.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        self.0.clone()
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                if self.over_limit {
                    tracing::warn!(peer = %self.peer, "connection refused: max_connections reached");
                    return Err(startup_error(fatal(
                        "53300",
                        "sorry, too many clients already".into(),
                    )));
                }
                save_startup_parameters_to_metadata(client, &startup);
                let user = client_user(client);
                match self.access.admit(&self.peer, client.is_secure(), &user) {
                    Admission::Trusted => self.complete_startup(client).await,
                    Admission::Refused(reason) => {
                        tracing::warn!(peer = %self.peer, %user, %reason, "connection refused");
                        Err(startup_error(fatal("28000", reason)))
                    }
                    Admission::Scram => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        *self.exchange.lock() = Exchange::AwaitingClientFirst;
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                                vec![SCRAM_SHA_256.to_string()],
                            )))
                            .await?;
                        Ok(())
                    }
                    Admission::Cleartext => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        *self.exchange.lock() = Exchange::AwaitingPassword;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::CleartextPassword,
                            ))
                            .await?;
                        Ok(())
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = client_user(client);
                let exchange = std::mem::take(&mut *self.exchange.lock());
                let outcome = match exchange {
                    Exchange::AwaitingClientFirst => {
                        let initial = message
                            .into_sasl_initial_response()
                            .map_err(|_| malformed("expected a SASLInitialResponse message"))?;
                        if initial.auth_method != SCRAM_SHA_256 {
                            return Err(malformed("the client chose a SASL mechanism not offered"));
                        }
                        let data = initial.data.unwrap_or_default();
                        match self.access.scram_first(&user, &data) {
                            Ok((server_first, pending)) => {
                                *self.exchange.lock() =
                                    Exchange::AwaitingClientFinal(Box::new(pending));
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLContinue(server_first.into()),
                                    ))
                                    .await?;
                                return Ok(());
                            }
                            Err(failure) => Err(failure),
                        }
                    }
                    Exchange::AwaitingClientFinal(pending) => {
                        let response = message
                            .into_sasl_response()
                            .map_err(|_| malformed("expected a SASLResponse message"))?;
                        match self.access.scram_final(&pending, &response.data) {
                            Ok(server_final) => {
                                client
                                    .feed(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into()),
                                    ))
                                    .await?;
                                Ok(())
                            }
                            Err(failure) => Err(failure),
                        }
                    }
                    Exchange::AwaitingPassword => {
                        let password = message
                            .into_password()
                            .map_err(|_| malformed("expected a password message"))?;
                        if self.access.check_password(&user, &password.password) {
                            Ok(())
                        } else {
                            Err(AuthFailure::Failed)
                        }
                    }
                    Exchange::Idle => Err(AuthFailure::Malformed("unexpected password message")),
                };
                match outcome {
                    Ok(()) => self.complete_startup(client).await,
                    Err(AuthFailure::Malformed(reason)) => {
                        tracing::warn!(peer = %self.peer, %user, reason, "authentication aborted");
                        Err(malformed(reason))
                    }
                    Err(AuthFailure::Failed) => {
                        tracing::warn!(peer = %self.peer, %user, "password authentication failed");
                        Err(startup_error(fatal(
                            "28P01",
                            format!("password authentication failed for user \"{user}\""),
                        )))
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

impl Connection {
    /// After authentication: binds the session to the client and sends the server's
    /// parameters, the cancel key and ReadyForQuery.
    async fn complete_startup<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client.metadata().get(METADATA_USER).cloned();
        let database = client.metadata().get(METADATA_DATABASE).cloned();
        let application = client.metadata().get(METADATA_APPLICATION_NAME).cloned();
        self.session
            .set_client(user.as_deref(), database.as_deref(), application.as_deref())
            .map_err(engine_error)?;
        // The other startup parameters are settings, as if SET when the session began
        // (pgJDBC sends TimeZone, DateStyle, client_encoding and extra_float_digits; libpq
        // sends `options` such as `-c search_path=...`). One fjord refuses ends the connection,
        // as in PostgreSQL, rather than leaving the client expecting a format it will not get.
        let settings = startup_settings(client.metadata())
            .map_err(|message| startup_error(fatal("42601", message)))?;
        for (name, value) in settings {
            if let Err(error) = self.session.set_variable(&name, Some(&value)) {
                return Err(startup_error(fatal(&error.sqlstate, error.message)));
            }
        }

        let pid = fjord_engine::queries::next_backend_pid();
        // The cancel key must be unguessable by other clients.
        let secret = i32::from_ne_bytes(random_bytes::<4>());
        client.set_pid_and_secret_key(pid, SecretKey::I32(secret));
        let query_cancel = Arc::downgrade(&self.query_cancel);
        self.session.set_backend(
            pid,
            Arc::new(move || {
                if let Some(cancel) = query_cancel.upgrade() {
                    cancel.cancel();
                }
            }),
        );
        self.cancels.register(
            pid,
            SecretKey::I32(secret).to_bytes().to_vec(),
            Arc::downgrade(&self.query_cancel),
        );
        tracing::info!(peer = %self.peer, pid, user = user.as_deref().unwrap_or(""), database = database.as_deref().unwrap_or(""), tls = client.is_secure(), "client connected");

        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.6 (fjord {})", env!("CARGO_PKG_VERSION"));
        let setting = |name: &str, default: &str| {
            self.session
                .variable(name)
                .unwrap_or_else(|| default.to_string())
        };
        parameters.time_zone = setting("timezone", "UTC");
        parameters.date_style = setting("datestyle", "ISO, MDY");
        parameters.client_encoding = Some(setting("client_encoding", "UTF8"));
        parameters.search_path = self.session.current_schema();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = false;
        finish_authentication(client, &parameters).await
    }
}

/// The settings of a startup message: every parameter that is not the user, database or
/// application name or a protocol extension (`_pq_.*`), plus each `-c name=value` (or
/// `--name=value`) of `options`, where a backslash keeps the next character (a space) in a value.
fn startup_settings(
    metadata: &std::collections::HashMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let mut settings: Vec<(String, String)> = metadata
        .iter()
        .filter(|(name, _)| {
            ![
                METADATA_USER,
                METADATA_DATABASE,
                METADATA_APPLICATION_NAME,
                "options",
                "replication",
            ]
            .contains(&name.as_str())
                && !name.starts_with("_pq_.")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    settings.sort();
    if let Some(options) = metadata.get("options") {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut chars = options.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => word.extend(chars.next()),
                c if c.is_whitespace() => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            let pair = match word.as_str() {
                "-c" => words.next(),
                _ => word
                    .strip_prefix("--")
                    .or_else(|| word.strip_prefix("-c"))
                    .map(str::to_string),
            };
            let Some((name, value)) = pair.as_deref().and_then(|pair| pair.split_once('=')) else {
                return Err(format!(
                    "invalid command-line argument for server process: {word}"
                ));
            };
            settings.push((name.replace('-', "_"), value.to_string()));
        }
    }
    Ok(settings)
}

/// The user name of the startup message.
fn client_user<C: ClientInfo>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_default()
}

fn startup_error(info: pgwire::error::ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(info))
}

/// A startup message that breaks the protocol: FATAL 08P01.
fn malformed(reason: &str) -> PgWireError {
    startup_error(fatal("08P01", reason.to_string()))
}

#[async_trait]
impl CancelHandler for Connection {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancels
            .cancel(request.pid, &request.secret_key.to_bytes());
    }
}

impl ErrorHandler for Connection {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        // Errors that pgwire produces itself (protocol violations, unknown portals) keep its
        // codes; a bare API error would otherwise be XX000 without context.
        if let PgWireError::ApiError(inner) = error
            && let Some(engine) = inner.downcast_ref::<EngineError>()
        {
            *error = engine_error(engine.clone());
        }
        if let PgWireError::QueryCanceled = error {
            *error = canceled();
        }
        tracing::debug!(peer = %self.peer, %error, "error sent to client");
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.check_shutdown()?;
        tracing::debug!(peer = %self.peer, sql = %fjord_engine::loggable_sql(query), "simple query");
        let cancel = self
            .query_cancel
            .start_query(self.session.statement_timeout());
        let options = self.format_options(client);
        let statements = match self.session.split_statements(query) {
            Ok(statements) => statements,
            Err(error) => return Ok(vec![Response::Error(Box::new(error_info(error)))]),
        };
        let count = statements.len();
        let mut responses = Vec::with_capacity(count);
        for (index, statement) in statements.into_iter().enumerate() {
            // Boxed: planning's future is large, and every future holding it inline would be
            // copied whole each time it is created or moved (pgwire boxes each handler's future).
            let outcome = Self::cancellable(
                &cancel,
                Box::pin(async {
                    let prepared = self.session.prepare_to_run(&statement).await?;
                    self.session.execute(&prepared, None).await
                }),
            )
            .await;
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(error) => {
                    // PostgreSQL stops a multi-statement query at the first failure.
                    responses.push(Response::Error(Box::new(pg_error_info(error))));
                    break;
                }
            };
            // COPY writes its rows itself, straight to the client.
            let outcome = match outcome {
                Outcome::Copy {
                    stream,
                    options: copy,
                } if count == 1 => {
                    self.copy_out(client, stream, &copy, options.clone(), &cancel)
                        .await?;
                    return Ok(responses);
                }
                other => other,
            };
            // Only the last statement's rows stream; earlier ones are read now so that the
            // statements run in order.
            let outcome = match outcome {
                Outcome::Rows { stream, tag } if index + 1 < count => {
                    let schema = stream.schema();
                    let batches: Vec<_> = match Self::cancellable(&cancel, async {
                        stream
                            .try_collect::<Vec<_>>()
                            .await
                            .map_err(EngineError::from)
                    })
                    .await
                    {
                        Ok(batches) => batches,
                        Err(error) => {
                            responses.push(Response::Error(Box::new(pg_error_info(error))));
                            break;
                        }
                    };
                    let stream = RecordBatchStreamAdapter::new(
                        schema,
                        futures::stream::iter(batches.into_iter().map(Ok)),
                    );
                    Outcome::Rows {
                        stream: Box::pin(stream),
                        tag,
                    }
                }
                other => other,
            };
            responses.push(self.response(
                outcome,
                &Format::UnifiedText,
                options.clone(),
                cancel.clone(),
            )?);
        }
        Ok(responses)
    }
}

fn error_info(error: EngineError) -> pgwire::error::ErrorInfo {
    let mut info = pgwire::error::ErrorInfo::new("ERROR".into(), error.sqlstate, error.message);
    info.detail = error.detail;
    info
}

fn pg_error_info(error: PgWireError) -> pgwire::error::ErrorInfo {
    match error {
        PgWireError::UserError(info) => *info,
        other => pgwire::error::ErrorInfo::new(
            "ERROR".into(),
            sqlstate::INTERNAL_ERROR.into(),
            other.to_string(),
        ),
    }
}

/// Plans statements for the extended protocol with the connection's session.
pub(crate) struct Parser {
    session: Session,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Prepared>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        tracing::debug!(sql = %fjord_engine::loggable_sql(sql), "parse");
        self.session.prepare(sql).await.map_err(engine_error)
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(statement
            .parameter_types()
            .iter()
            .map(|data_type| {
                data_type
                    .as_ref()
                    .and_then(|t| into_pg_type(t).ok())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect())
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement.describe_output() {
            Some(schema) => pg_fields(&schema, format.unwrap_or(&Format::UnifiedText), None),
            None => Ok(Vec::new()),
        }
    }
}

impl Connection {
    /// The parameter types of `statement`: as its Parse declared them, else as inferred.
    fn statement_parameters(
        &self,
        statement: &StoredStatement<Prepared>,
    ) -> PgWireResult<Vec<Type>> {
        let inferred = self.parser.get_parameter_types(&statement.statement)?;
        let count = inferred.len().max(statement.parameter_types.len());
        Ok((0..count)
            .map(|index| {
                statement
                    .parameter_types
                    .get(index)
                    .cloned()
                    .flatten()
                    .or_else(|| inferred.get(index).cloned())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect())
    }

    /// Writes a COPY's rows to the client, counted as a running query until done.
    async fn copy_out<C>(
        &self,
        client: &mut C,
        stream: datafusion::physical_plan::SendableRecordBatchStream,
        copy: &fjord_engine::CopyOptions,
        options: Arc<FormatOptions>,
        cancel: &QueryToken,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = QueryGuard::new(&self.running_queries);
        crate::copy_out::copy_out(client, stream, copy, options, cancel).await
    }

    /// Runs a bound portal: its parameters decoded (typed as the statement infers them) and
    /// the statement executed under a fresh cancel token.
    async fn execute_portal(
        &self,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<(Outcome, QueryToken)> {
        self.check_shutdown()?;
        let cancel = self
            .query_cancel
            .start_query(self.session.statement_timeout());
        let prepared = &portal.statement.statement;
        let inferred = prepared.parameter_types();
        let parameters = if portal.parameter_len() > 0 || !inferred.is_empty() {
            let mut types: Vec<Option<DataType>> = inferred.clone();
            types.resize(types.len().max(portal.parameter_len()), None);
            let references: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
            match text_carried_parameters(portal)? {
                Some(portal) => Some(deserialize_parameters(&portal, &references)?),
                None => Some(deserialize_parameters(portal, &references)?),
            }
        } else {
            None
        };
        let outcome =
            Self::cancellable(&cancel, self.session.execute(prepared, parameters)).await?;
        Ok((outcome, cancel))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parameters = self.statement_parameters(target)?;
        let fields = self.statement_fields(&target.statement, &Format::UnifiedText)?;
        Ok(DescribeStatementResponse::new(
            parameters,
            fields.as_ref().clone(),
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields =
            self.statement_fields(&target.statement.statement, &target.result_column_format)?;
        Ok(DescribePortalResponse::new(fields.as_ref().clone()))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (outcome, cancel) = self.execute_portal(portal).await?;
        self.response(
            outcome,
            &portal.result_column_format,
            self.format_options(client),
            cancel,
        )
    }

    /// Like pgwire's default, but the reply waits in the write buffer for Sync or Flush, as a
    /// Postgres backend's does: one write per round trip instead of one per message.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = StoredStatement::parse(client, &message, self.query_parser()).await?;
        client.portal_store().put_statement(Arc::new(statement));
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Like pgwire's default, with the reply buffered until Sync or Flush (see `on_parse`).
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let statement = client
            .portal_store()
            .get_statement(name)
            .ok_or_else(|| PgWireError::StatementNotFound(name.to_owned()))?;
        let portal = Portal::try_new(&message, statement)?;
        client.portal_store().put_portal(Arc::new(portal));
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// Like pgwire's default, with the reply buffered until Sync or Flush (see `on_parse`).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let (parameters, fields) = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let statement = client
                    .portal_store()
                    .get_statement(name)
                    .ok_or_else(|| PgWireError::StatementNotFound(name.to_owned()))?;
                let parameters = self.statement_parameters(&statement)?;
                let fields = self.statement_fields(&statement.statement, &Format::UnifiedText)?;
                (Some(parameters), fields)
            }
            TARGET_TYPE_BYTE_PORTAL => {
                let fields = match client.portal_store().get_portal(name) {
                    Some(portal) => self.statement_fields(
                        &portal.statement.statement,
                        &portal.result_column_format,
                    )?,
                    // A cursor that DECLARE opened is a portal too (psycopg 3's server-side
                    // cursors describe it by name).
                    None => match self.session.cursor_schema(name) {
                        Some(schema) => self.fields(&schema, &Format::UnifiedText, None)?,
                        None => return Err(PgWireError::PortalNotFound(name.to_owned())),
                    },
                };
                (None, fields)
            }
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        if let Some(parameters) = parameters {
            client
                .feed(PgWireBackendMessage::ParameterDescription(
                    ParameterDescription::new(parameters.iter().map(Type::oid).collect()),
                ))
                .await?;
        }
        if fields.is_empty() {
            client
                .feed(PgWireBackendMessage::NoData(NoData::new()))
                .await?;
        } else {
            client
                .feed(PgWireBackendMessage::RowDescription(RowDescription::new(
                    fields.iter().map(Into::into).collect(),
                )))
                .await?;
        }
        Ok(())
    }

    /// Like pgwire's default, except that an Execute without a row limit streams its rows
    /// straight to the client instead of collecting them first.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = message.max_rows.max(0) as usize;
        let Some(portal) = client.portal_store().get_portal(portal_name) else {
            return self._on_execute(client, message).await;
        };
        let initial = matches!(
            *portal.state().lock().await,
            pgwire::api::portal::PortalExecutionState::Initial
        );
        if max_rows > 0 || !initial {
            // Row-limited fetches and later fetches of a suspended portal: pgwire keeps the
            // stream in the portal and sends at most `max_rows` rows per Execute.
            return self._on_execute(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut transaction_status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let response = match self.execute_portal(portal.as_ref()).await {
            Ok((
                Outcome::Copy {
                    stream,
                    options: copy,
                },
                cancel,
            )) => {
                // COPY writes its rows itself, straight to the client.
                let options = self.format_options(client);
                let result = Box::pin(self.copy_out(client, stream, &copy, options, &cancel)).await;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return result;
            }
            Ok((outcome, cancel)) => self.response(
                outcome,
                &portal.result_column_format,
                self.format_options(client),
                cancel,
            ),
            Err(error) => Err(error),
        };
        let result = match response {
            Ok(Response::Query(query)) => send_streamed(client, query).await,
            Ok(Response::EmptyQuery) => client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await
                .map_err(PgWireError::from),
            Ok(Response::Execution(tag)) => send_execution_response(client, tag).await,
            Ok(Response::TransactionStart(tag)) => {
                transaction_status = transaction_status.to_in_transaction_state();
                send_execution_response(client, tag).await
            }
            Ok(Response::TransactionEnd(tag)) => {
                transaction_status = transaction_status.to_idle_state();
                client.portal_store().rm_portal(DEFAULT_NAME);
                send_execution_response(client, tag).await
            }
            Ok(Response::Error(error)) => {
                transaction_status = transaction_status.to_error_state();
                client
                    .send(PgWireBackendMessage::ErrorResponse((*error).into()))
                    .await
                    .map_err(PgWireError::from)
            }
            Ok(_) => Err(engine_error(EngineError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "COPY is not supported",
            ))),
            Err(error) => Err(error),
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction_status);
        result
    }
}

/// A copy of `portal` with its uuid, json and jsonb parameters as text, which is how the engine
/// carries those types (see `text_carried`); `None` when it has none. The binary forms are
/// turned to text here: a uuid's 16 bytes to its canonical spelling, a jsonb's version byte
/// dropped.
fn text_carried_parameters(portal: &Portal<Prepared>) -> PgWireResult<Option<Portal<Prepared>>> {
    let declared = &portal.statement.parameter_types;
    let carried = |index: usize| {
        matches!(
            declared.get(index),
            Some(Some(Type::UUID | Type::JSON | Type::JSONB))
        )
    };
    let count = portal.parameter_len();
    if !(0..count).any(carried) {
        return Ok(None);
    }
    let mut types = declared.clone();
    let mut parameters = portal.parameters.clone();
    let mut formats = Vec::with_capacity(count);
    for index in 0..count {
        let binary = portal.parameter_format.is_binary(index);
        if !carried(index) {
            formats.push(i16::from(binary));
            continue;
        }
        if binary && let Some(bytes) = &parameters[index] {
            let text = match declared[index] {
                Some(Type::UUID) => uuid::Uuid::from_slice(bytes)
                    .map_err(|_| invalid_parameter(index, "a uuid must be 16 bytes"))?
                    .hyphenated()
                    .to_string(),
                Some(Type::JSONB) => match bytes.split_first() {
                    Some((1, json)) => String::from_utf8(json.to_vec())
                        .map_err(|_| invalid_parameter(index, "jsonb is not UTF-8"))?,
                    _ => return Err(invalid_parameter(index, "unsupported jsonb version")),
                },
                _ => String::from_utf8(bytes.to_vec())
                    .map_err(|_| invalid_parameter(index, "json is not UTF-8"))?,
            };
            parameters[index] = Some(text.into_bytes().into());
        }
        types[index] = Some(Type::TEXT);
        formats.push(0);
    }
    let statement = StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        types,
    );
    let mut copy = Portal::new_cursor(portal.name.clone(), Arc::new(statement));
    copy.parameter_format = Format::Individual(formats);
    copy.parameters = parameters;
    copy.result_column_format = portal.result_column_format.clone();
    copy.state = portal.state.clone();
    Ok(Some(copy))
}

fn invalid_parameter(index: usize, reason: &str) -> PgWireError {
    engine_error(EngineError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("parameter ${}: {reason}", index + 1),
    ))
}

async fn send_streamed<C>(client: &mut C, query: QueryResponse) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    send_query_response(client, query, false).await
}
