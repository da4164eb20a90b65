//! The PostgreSQL wire protocol front door: psql, BI tools and Postgres drivers talk to fjord
//! through it.
//!
//! Every connection gets its own engine session (a `SET` never leaks between clients). Results
//! stream to the client as the engine produces batches. Cancel requests (sent by clients on a
//! second connection with the key from `BackendKeyData`) stop the running query by dropping its
//! stream, which stops the work in DataFusion and in any Postgres source.
//!
//! **Invariant:** this crate and the other front doors are the only ones that import pgwire.

mod access;
mod binary_rows;
mod cancel;
mod connection;
mod copy_out;
mod datetime_binary;
mod encode;
mod numeric_binary;
mod pg_text;
mod text_carried;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fjord_engine::Engine;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use access::{Access, hash_password};
use cancel::CancelRegistry;
use connection::{Connection, ConnectionHandlers};

/// Counts a connection as open until its task ends.
struct ConnectionCount(Arc<AtomicUsize>, usize);

impl ConnectionCount {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        ConnectionCount(counter.clone(), count)
    }

    /// Open connections including this one, when it opened.
    fn count(&self) -> usize {
        self.1
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A bound Postgres wire listener, ready to [`run`](PgServer::run).
pub struct PgServer {
    listener: TcpListener,
    engine: Arc<Engine>,
    open_connections: Arc<AtomicUsize>,
    cancels: Arc<CancelRegistry>,
    running_queries: Arc<AtomicUsize>,
    access: Arc<Access>,
}

impl PgServer {
    /// Binds the listener; port 0 picks a free port (see [`Self::local_addr`]). `access` holds
    /// the TLS and password rules ([`Access::from_config`]).
    pub async fn bind(
        address: &str,
        engine: Arc<Engine>,
        access: Access,
    ) -> std::io::Result<PgServer> {
        let listener = TcpListener::bind(address).await?;
        Ok(PgServer {
            listener,
            engine,
            access: Arc::new(access),
            open_connections: Arc::new(AtomicUsize::new(0)),
            cancels: Arc::new(CancelRegistry::default()),
            running_queries: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown` is cancelled. Then it stops accepting, gives running
    /// queries up to `grace` to finish, and closes every connection.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> std::io::Result<()> {
        let mut connections = JoinSet::new();
        let address = self.local_addr()?;
        tracing::info!(%address, access = %self.access.describe(), "postgres wire protocol listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Running out of file descriptors must not end the server.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = socket.set_nodelay(true);
                    let open = ConnectionCount::new(&self.open_connections);
                    let over_limit = open.count() > self.engine.config().server.max_connections;
                    let connection = Arc::new(Connection::new(
                        self.engine.clone(),
                        self.cancels.clone(),
                        self.running_queries.clone(),
                        shutdown.clone(),
                        peer,
                        over_limit,
                        self.access.clone(),
                    ));
                    let handlers = ConnectionHandlers::new(connection);
                    let tls = self.access.tls();
                    connections.spawn(tracing::Instrument::instrument(
                        async move {
                            let _open = open;
                            tracing::debug!("connection opened");
                            if let Err(error) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                            tracing::debug!("connection closed");
                        },
                        tracing::debug_span!("connection", %peer),
                    ));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        let deadline = tokio::time::Instant::now() + grace;
        while self.running_queries.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let still_running = self.running_queries.load(Ordering::SeqCst);
        if still_running > 0 {
            tracing::warn!(
                still_running,
                "cancelling queries still running after the shutdown grace period"
            );
        }
        connections.shutdown().await;
        tracing::info!("postgres wire protocol listener stopped");
        Ok(())
    }
}
