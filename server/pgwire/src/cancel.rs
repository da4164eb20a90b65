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
    current: Mutex<Current>,
}

#[derive(Debug, Default)]
struct Current {
    token: Arc<CancellationToken>,
    /// Whether a statement timeout's timer may cancel `token`: such a token is never reused.
    timed: bool,
}

/// One query's cancellation: by a cancel request, or by `statement_timeout`.
#[derive(Debug, Clone)]
pub(crate) struct QueryToken {
    token: Arc<CancellationToken>,
    timer: Option<Arc<Timer>>,
}

#[derive(Debug)]
struct Timer {
    timed_out: AtomicBool,
    // When the last token clone goes (the query and its row stream are done), the timer ends.
    _done: DropGuard,
}

impl QueryToken {
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Whether the statement timeout ended the query (rather than a cancel request).
    pub(crate) fn timed_out(&self) -> bool {
        self.timer
            .as_ref()
            .is_some_and(|timer| timer.timed_out.load(Ordering::SeqCst))
    }
}

impl QueryCancel {
    /// The token of the query that starts now, cancelled by a cancel request from now on, and
    /// after `timeout` if given. The previous query's token serves again when nothing holds it
    /// any more (no row stream of a suspended portal) and nothing cancelled it: a connection
    /// running many short statements then makes no new token for each.
    pub(crate) fn start_query(&self, timeout: Option<Duration>) -> QueryToken {
        let token = {
            let mut current = self.current.lock();
            let reusable = timeout.is_none()
                && !current.timed
                && Arc::strong_count(&current.token) == 1
                && !current.token.is_cancelled();
            if !reusable {
                *current = Current {
                    token: Arc::default(),
                    timed: timeout.is_some(),
                };
            }
            current.token.clone()
        };
        let timer = timeout.map(|timeout| {
            let done = CancellationToken::new();
            let timer = Arc::new(Timer {
                timed_out: AtomicBool::new(false),
                _done: done.clone().drop_guard(),
            });
            let (token, fired) = (token.as_ref().clone(), Arc::downgrade(&timer));
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {
                        if let Some(timer) = fired.upgrade() {
                            timer.timed_out.store(true, Ordering::SeqCst);
                        }
                        token.cancel();
                    }
                    _ = done.cancelled() => {}
                }
            });
            timer
        });
        QueryToken { token, timer }
    }

    pub(crate) fn cancel(&self) {
        self.current.lock().token.cancel();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_free_token_serves_again_and_a_held_or_cancelled_one_does_not() {
        let cancel = QueryCancel::default();
        let first = cancel.start_query(None);
        let first_token = Arc::as_ptr(&first.token);
        drop(first);
        let second = cancel.start_query(None);
        assert_eq!(Arc::as_ptr(&second.token), first_token, "nothing held it");
        // `second` is still held (a suspended portal's rows): the next query gets its own token,
        // and a cancel request reaches that query only.
        let third = cancel.start_query(None);
        assert!(!Arc::ptr_eq(&second.token, &third.token));
        cancel.cancel();
        assert!(third.token.is_cancelled());
        assert!(!second.token.is_cancelled());
        drop((second, third));
        assert!(!cancel.start_query(None).token.is_cancelled());
    }

    #[tokio::test]
    async fn a_token_under_a_statement_timeout_is_never_reused() {
        let cancel = QueryCancel::default();
        let timed = cancel.start_query(Some(Duration::from_secs(60)));
        let timed_token = timed.token.as_ref().clone();
        drop(timed);
        let next = cancel.start_query(None);
        next.token.cancel();
        assert!(
            !timed_token.is_cancelled(),
            "the timed query's token served again"
        );
        assert!(!next.timed_out());
        let expiring = cancel.start_query(Some(Duration::from_millis(1)));
        expiring.cancelled().await;
        assert!(expiring.timed_out());
    }
}
