//! Where a connection's statements run.
//!
//! Each connection reads and writes its socket on a thread of its own, as a PostgreSQL backend
//! does: a message wakes exactly the thread that waits for it, with no hand-off between a
//! shared I/O driver and worker threads. That hand-off, not the work per message, is what
//! bounded `SELECT 1` throughput with many clients on a shared runtime.
//!
//! Statement work runs on the server's shared runtime, which has a worker per core: planning
//! (it reads catalogs, and a Postgres connection it opens must outlive this connection) and
//! execution (DataFusion spreads a query over the runtime's workers). A query's batches are
//! forwarded to the connection's thread through a small channel; dropping the forwarded stream
//! (the client cancelled, or went away) stops the query. Statements the session has planned
//! before as constants (`SELECT 1`, the health checks pools send) need neither, and run on the
//! connection's thread.

use std::future::Future;

use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fjord_engine::{EngineError, Outcome, sqlstate};
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Batches that may wait between a query and its connection's thread.
const FORWARDED_BATCHES: usize = 2;

/// The shared runtime, as seen from a connection's thread.
#[derive(Clone, Debug)]
pub(crate) struct Compute {
    handle: Handle,
}

/// Aborts the task when dropped: work for a client that stopped waiting stops too.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Compute {
    pub(crate) fn new(handle: Handle) -> Self {
        Compute { handle }
    }

    /// Runs `work` on the shared runtime and waits for its outcome here, forwarding the rows
    /// of a query. Dropping the returned future stops the work.
    pub(crate) async fn run(
        &self,
        work: impl Future<Output = Result<Outcome, EngineError>> + Send + 'static,
    ) -> Result<Outcome, EngineError> {
        let outcome = self.complete(work).await?;
        Ok(match outcome {
            Outcome::Rows { stream, tag } => Outcome::Rows {
                stream: self.forward(stream),
                tag,
            },
            other => other,
        })
    }

    /// Runs `work` on the shared runtime and waits for its result here.
    pub(crate) async fn complete<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        let mut task = AbortOnDrop(self.handle.spawn(work));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(error) if error.is_cancelled() => Err(EngineError::new(
                sqlstate::QUERY_CANCELED,
                "canceling statement due to user request",
            )),
            Err(error) => Err(EngineError::new(
                sqlstate::INTERNAL_ERROR,
                format!("internal error: {error}"),
            )),
        }
    }

    /// `stream`, polled on the shared runtime, its batches handed over through a channel.
    fn forward(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let (sender, receiver) = tokio::sync::mpsc::channel(FORWARDED_BATCHES);
        let task = self.handle.spawn(async move {
            let mut stream = stream;
            loop {
                tokio::select! {
                    // Nobody reads any more: stop the query now, not at its next batch.
                    _ = sender.closed() => break,
                    item = stream.next() => match item {
                        Some(item) => {
                            if sender.send(item).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        let batches = futures::stream::unfold(
            (receiver, AbortOnDrop(task)),
            |(mut receiver, task)| async move {
                let item = receiver.recv().await?;
                Some((item, (receiver, task)))
            },
        );
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }
}
