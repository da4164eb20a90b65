//! Cancel requests: a client opens a second connection and sends the process id and secret key
//! it received at startup; the matching connection's running query is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The cancellation handle of one connection's current query.
#[derive(Debug, Default)]
pub(crate) struct QueryCancel {
    current: Mutex<CancellationToken>,
}

/// One query's cancellation: by a cancel request, or by `statement_timeout`.
#[derive(Debug, Clone)]
pub(crate) struct QueryToken {
    token: CancellationToken,
    timed_out: Arc<AtomicBool>,
    // When the last clone goes (the query and its row stream are done), the timeout timer ends.
    _done: Arc<DropGuard>,
}

impl QueryToken {
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Whether the statement timeout ended the query (rather than a cancel request).
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }
}

impl QueryCancel {
    /// A fresh token for the query that starts now, cancelled after `timeout` if given.
    pub(crate) fn start_query(&self, timeout: Option<Duration>) -> QueryToken {
        let token = CancellationToken::new();
        *self.current.lock() = token.clone();
        let done = CancellationToken::new();
        let timed_out = Arc::new(AtomicBool::new(false));
        if let Some(timeout) = timeout {
            let (token, done, timed_out) = (token.clone(), done.clone(), timed_out.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {
                        timed_out.store(true, Ordering::SeqCst);
                        token.cancel();
                    }
                    _ = done.cancelled() => {}
                }
            });
        }
        QueryToken {
            token,
            timed_out,
            _done: Arc::new(done.drop_guard()),
        }
    }

    pub(crate) fn cancel(&self) {
        self.current.lock().cancel();
    }
}

/// (process id, secret key bytes) as sent in BackendKeyData.
type CancelKey = (i32, Vec<u8>);

/// Every live connection by its cancel key.
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    connections: Mutex<HashMap<CancelKey, Weak<QueryCancel>>>,
}

impl CancelRegistry {
    pub(crate) fn register(&self, pid: i32, secret: Vec<u8>, cancel: Weak<QueryCancel>) {
        let mut connections = self.connections.lock();
        connections.retain(|_, cancel| cancel.strong_count() > 0);
        connections.insert((pid, secret), cancel);
    }

    /// Cancels the query of the connection with this key; unknown keys are ignored, as
    /// PostgreSQL does, so that a guessed key reveals nothing.
    pub(crate) fn cancel(&self, pid: i32, secret: &[u8]) {
        let target = self
            .connections
            .lock()
            .get(&(pid, secret.to_vec()))
            .and_then(Weak::upgrade);
        match target {
            Some(cancel) => {
                tracing::info!(pid, "cancel request");
                cancel.cancel();
            }
            None => tracing::debug!(pid, "cancel request for an unknown connection"),
        }
    }
}
