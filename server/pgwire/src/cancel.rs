//! Cancel requests: a client opens a second connection and sends the process id and secret key
//! it received at startup; the matching connection's running query is cancelled.

use std::collections::HashMap;
use std::sync::Weak;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// The cancellation handle of one connection's current query.
#[derive(Debug, Default)]
pub(crate) struct QueryCancel {
    current: Mutex<CancellationToken>,
}

impl QueryCancel {
    /// A fresh token for the query that starts now.
    pub(crate) fn start_query(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.current.lock() = token.clone();
        token
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
