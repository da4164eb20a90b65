//! A small connection pool: at most `pool_size` connections to one database, reused while
//! healthy, with a connect timeout so that a dead host fails fast instead of hanging a query.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use std::collections::HashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio_postgres::{Client, NoTls, Statement};

use crate::error::PostgresError;

pub(crate) struct Pool {
    catalog: String,
    /// How often each statement text (by hash) was sent: one sent again is worth preparing.
    sent: Mutex<HashMap<u64, u32>>,
    /// Counts table changes seen by shape checks: statements prepared before one may describe
    /// rows the table no longer has.
    changes: std::sync::atomic::AtomicU64,
    target: String,
    connection_string: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
}

/// An open connection and the statements prepared on it.
struct Connection {
    client: Client,
    /// The task that drives the connection's socket. Aborting it closes the socket, which
    /// Postgres notices even in a statement that sends nothing (see `Pool::connect`).
    socket: tokio::task::AbortHandle,
    /// fjord's own fixed statements (catalog queries), prepared once per connection so that
    /// Postgres parses and plans them once.
    statements: HashMap<&'static str, Statement>,
    /// Statements for rows that were sent more than once (a kept plan's, a lookup of the same
    /// key), prepared on this connection, and the pool's table changes when they were.
    repeated: HashMap<String, Statement>,
    repeated_as_of: u64,
}

/// Distinct texts a pool counts, and statements a connection keeps prepared; more clear the
/// set and start again (a dropped statement is closed in Postgres).
const REPEATED_TEXTS: usize = 4096;
const REPEATED_STATEMENTS: usize = 64;

/// A connection on loan. Returned to the pool on drop unless it closed or was abandoned busy.
pub(crate) struct PooledClient {
    client: Option<Connection>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
    busy: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("catalog", &self.catalog)
            .field("target", &self.target)
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(
        catalog: &str,
        target: String,
        connection_string: String,
        size: usize,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Pool {
            catalog: catalog.to_string(),
            sent: Mutex::default(),
            changes: Default::default(),
            target,
            connection_string,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
            size: size.max(1),
        })
    }

    pub(crate) fn catalog(&self) -> &str {
        &self.catalog
    }

    /// The most connections this pool opens.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn error(&self, error: tokio_postgres::Error) -> PostgresError {
        if error.as_db_error().is_some_and(|db| {
            db.code().code() == "0A000" && db.routine() == Some("RevalidateCachedQuery")
        }) {
            // Postgres's "cached plan must not change result type" (known by its routine, whose
            // name is not translated as the message may be): a statement prepared on a
            // connection (see `PooledClient::repeated`) whose table changed in a way no shape
            // check has seen yet.
            self.table_changed();
            return PostgresError::Changed {
                catalog: self.catalog.clone(),
                table: "read by this statement".into(),
            };
        }
        PostgresError::from_driver(&self.catalog, &self.target, error)
    }

    /// Records that a table's columns changed: statements prepared before are prepared again.
    pub(crate) fn table_changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Counts one more sending of `sql`; true from the second on.
    fn sent_again(&self, sql: &str) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let key = BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(sql);
        let mut sent = self.sent.lock();
        if sent.len() >= REPEATED_TEXTS && !sent.contains_key(&key) {
            sent.clear();
        }
        let count = sent.entry(key).or_default();
        *count = count.saturating_add(1);
        *count > 1
    }

    /// Borrows a connection, opening one if no healthy idle one is left.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<PooledClient, PostgresError> {
        let mut clients = self.get_many(1).await?;
        Ok(clients.pop().expect("one connection"))
    }

    /// Borrows `count` connections at once (at most the pool's size). The permits are taken
    /// together, so two queries that each need several cannot each hold part and wait forever.
    pub(crate) async fn get_many(
        self: &Arc<Self>,
        count: usize,
    ) -> Result<Vec<PooledClient>, PostgresError> {
        let mut permits = self
            .permits
            .clone()
            .acquire_many_owned(count as u32)
            .await
            .expect("pool semaphore is never closed");
        let mut each = Vec::with_capacity(count);
        for _ in 1..count {
            each.push(permits.split(1).expect("a permit per connection"));
        }
        each.push(permits);
        let mut clients = Vec::with_capacity(count);
        for permit in each {
            let idle = loop {
                match self.idle.lock().pop() {
                    Some(connection) if !connection.client.is_closed() => break Some(connection),
                    Some(_closed) => continue,
                    None => break None,
                }
            };
            let client = match idle {
                Some(connection) => connection,
                None => self.connect().await?,
            };
            clients.push(PooledClient {
                client: Some(client),
                pool: self.clone(),
                _permit: permit,
                busy: false,
            });
        }
        Ok(clients)
    }

    async fn connect(&self) -> Result<Connection, PostgresError> {
        let unavailable = |reason: String| PostgresError::Unavailable {
            catalog: self.catalog.clone(),
            target: self.target.clone(),
            reason,
        };
        let mut config: tokio_postgres::Config =
            self.connection_string
                .parse()
                .map_err(|error: tokio_postgres::Error| {
                    unavailable(format!("invalid connection settings: {error}"))
                })?;
        config.connect_timeout(self.connect_timeout);
        config.application_name("fjord");
        let connecting = config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| unavailable(format!("no connection within {:?}", self.connect_timeout)))?
            .map_err(|error| self.error(error))?;
        let catalog = self.catalog.clone();
        let socket = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(catalog, %error, "postgres connection ended");
            }
        })
        .abort_handle();
        // Values fjord sends and reads are interpreted the same way whatever the server's
        // defaults: UTC timestamps, ISO dates, backslashes literal in strings. Prepared
        // statements (fjord's catalog lookups, users' lookups sent again) are planned as
        // Postgres plans any client's: for their values at first, then once for all values
        // where that plan is as good, so a range over skewed data keeps a plan for its values.
        client
            .batch_execute(
                "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'; SET standard_conforming_strings = on; \
                 SET extra_float_digits = 3",
            )
            .await
            .map_err(|error| self.error(error))?;
        // A statement abandoned by fjord is cancelled (see `PooledClient`'s drop), and its
        // connection closed. Should the cancel come too early or get lost, Postgres still
        // stops the statement within a second of the close, as long as it checks the client's
        // socket while it runs (version 14 and later, on platforms that can; elsewhere the
        // setting is refused and the statement runs until it next sends a row).
        if let Err(error) = client
            .batch_execute(
                "SELECT pg_catalog.set_config('client_connection_check_interval', '1s', false) \
                 WHERE pg_catalog.current_setting('server_version_num')::int >= 140000",
            )
            .await
        {
            tracing::debug!(catalog = self.catalog, %error, "postgres cannot check for closed connections");
        }
        Ok(Connection {
            client,
            socket,
            statements: HashMap::new(),
            repeated: HashMap::new(),
            repeated_as_of: self.changes.load(std::sync::atomic::Ordering::SeqCst),
        })
    }
}

impl PooledClient {
    pub(crate) fn client(&self) -> &Client {
        &self
            .client
            .as_ref()
            .expect("client is present until drop")
            .client
    }

    /// `sql` prepared on this connection: the first use prepares it, later ones reuse it.
    pub(crate) async fn prepared(
        &mut self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        let connection = self.client.as_mut().expect("client is present until drop");
        if let Some(statement) = connection.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = connection.client.prepare(sql).await?;
        connection.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// `sql` prepared on this connection if it was sent before, so that Postgres parses and
    /// plans it once per connection rather than each time (and a `COPY` is not prepared and
    /// closed around each run); `None` for a text sent the first time. Statements prepared
    /// before a table change are dropped first: their rows may no longer fit the table.
    pub(crate) async fn repeated(
        &mut self,
        sql: &str,
    ) -> Result<Option<Statement>, tokio_postgres::Error> {
        if !self.pool.sent_again(sql) {
            return Ok(None);
        }
        let changes = self.pool.changes.load(std::sync::atomic::Ordering::SeqCst);
        let connection = self.client.as_mut().expect("client is present until drop");
        if connection.repeated_as_of != changes
            || (connection.repeated.len() >= REPEATED_STATEMENTS
                && !connection.repeated.contains_key(sql))
        {
            connection.repeated.clear();
            connection.repeated_as_of = changes;
        }
        if let Some(statement) = connection.repeated.get(sql) {
            return Ok(Some(statement.clone()));
        }
        let statement = connection.client.prepare(sql).await?;
        connection
            .repeated
            .insert(sql.to_string(), statement.clone());
        Ok(Some(statement))
    }

    /// Marks a streaming statement as running: if this loan ends before [`Self::mark_idle`],
    /// the statement was abandoned, and dropping the loan cancels it in Postgres.
    pub(crate) fn mark_busy(&mut self) {
        self.busy = true;
    }

    pub(crate) fn mark_idle(&mut self) {
        self.busy = false;
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        let Some(connection) = self.client.take() else {
            return;
        };
        if self.busy {
            // The consumer went away mid-statement: ask Postgres to stop working on it, and
            // close this connection rather than reuse it in an unknown protocol state.
            let token = connection.client.cancel_token();
            let catalog = self.pool.catalog.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        if let Err(error) = token.cancel_query(NoTls).await {
                            tracing::debug!(catalog, %error, "cancelling an abandoned postgres statement failed");
                        }
                        // Dropping the client alone would leave the socket open until the
                        // statement's end: the connection's task still awaits its answer.
                        connection.socket.abort();
                    });
                }
                Err(_) => connection.socket.abort(),
            }
            return;
        }
        if !connection.client.is_closed() {
            self.pool.idle.lock().push(connection);
        }
    }
}
