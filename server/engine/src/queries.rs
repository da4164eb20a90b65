//! Every statement the server runs, while it runs and for a while after: for
//! `system.runtime.queries`, the HTTP `/queries` page, `CALL system.runtime.kill_query` and
//! `pg_cancel_backend`. The front door registers each connection's cancel handle by its
//! process id; killing a query cancels its connection's running statement, as a cancel request
//! would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use parking_lot::Mutex;

/// Finished statements kept for `system.runtime.queries`.
const RECENT: usize = 200;
/// Statement text kept per query (characters).
const TEXT_LIMIT: usize = 2000;

/// Process ids handed to sessions (`pg_backend_pid()`), by every front door: unique in a server
/// process, never reused while it runs.
static NEXT_PID: std::sync::LazyLock<std::sync::atomic::AtomicI32> =
    std::sync::LazyLock::new(|| {
        std::sync::atomic::AtomicI32::new(1000 + (std::process::id() as i32 % 1000) * 1000)
    });

/// A new session's process id.
pub fn next_backend_pid() -> i32 {
    NEXT_PID.fetch_add(1, Ordering::Relaxed)
}

/// What happened to a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    Running,
    Finished,
    Failed,
    /// Cancelled, killed, timed out, or its client stopped reading.
    Cancelled,
}

impl QueryState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::Running => "RUNNING",
            QueryState::Finished => "FINISHED",
            QueryState::Failed => "FAILED",
            QueryState::Cancelled => "CANCELLED",
        }
    }
}

/// One statement, as `system.runtime.queries` shows it.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// Counts statements since start; [`QueryRecord::id`] is what users see.
    pub sequence: u64,
    pub state: QueryState,
    pub user: Arc<str>,
    /// The client's `application_name`.
    pub source: Arc<str>,
    /// The connection's process id (`pg_backend_pid()`); 0 for the server's own statements.
    pub backend_pid: i32,
    /// The statement, as it may be logged (`CREATE CATALOG` without its settings).
    pub query: Arc<str>,
    pub created: SystemTime,
    pub ended: Option<SystemTime>,
    pub rows: u64,
    /// The catalogs its tables are in.
    pub catalogs: Vec<String>,
    pub error: Option<String>,
}

impl QueryRecord {
    /// The query id, Trino-style: when it started (UTC) and its sequence number,
    /// `20261204_140500_00042`.
    pub fn id(&self) -> String {
        format!(
            "{}_{:05}",
            chrono::DateTime::<chrono::Utc>::from(self.created).format("%Y%m%d_%H%M%S"),
            self.sequence
        )
    }
}

/// The sequence number in a query id (its last `_` part).
fn sequence_of(id: &str) -> Option<u64> {
    id.rsplit('_').next()?.parse().ok()
}

/// A connection that runs statements: who, and how to cancel its running one.
struct Backend {
    user: String,
    cancel: Arc<dyn Fn() + Send + Sync>,
}

/// Why a query could not be killed.
#[derive(Debug, PartialEq, Eq)]
pub enum KillError {
    NotRunning,
    NotYours,
}

#[derive(Default)]
pub struct QueryLog {
    sequence: AtomicU64,
    running: Mutex<BTreeMap<u64, QueryRecord>>,
    recent: Mutex<VecDeque<QueryRecord>>,
    backends: Mutex<HashMap<i32, Backend>>,
}

impl std::fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryLog")
            .field("running", &self.running.lock().len())
            .finish()
    }
}

impl QueryLog {
    /// Records a statement that starts now; the handle records how it ends. Called for every
    /// statement, so it only counts, reads the clock and shares `sql` (copied only when it
    /// must be shortened or has settings to hide).
    pub fn begin(
        self: &Arc<Self>,
        (backend_pid, user, source): (i32, Arc<str>, Arc<str>),
        sql: &Arc<str>,
        catalogs: Vec<String>,
    ) -> QueryHandle {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let query = match crate::commands::loggable(sql) {
            std::borrow::Cow::Borrowed(_) => match sql.char_indices().nth(TEXT_LIMIT) {
                Some((end, _)) => Arc::from(format!("{}...", &sql[..end])),
                None => sql.clone(),
            },
            std::borrow::Cow::Owned(logged) => Arc::from(logged),
        };
        let record = QueryRecord {
            sequence,
            state: QueryState::Running,
            user,
            source,
            backend_pid,
            query,
            created: SystemTime::now(),
            ended: None,
            rows: 0,
            catalogs,
            error: None,
        };
        self.running.lock().insert(sequence, record);
        QueryHandle {
            log: self.clone(),
            sequence,
            rows: 0,
            ended: false,
        }
    }

    fn end(&self, sequence: u64, state: QueryState, rows: u64, error: Option<String>) {
        let Some(mut record) = self.running.lock().remove(&sequence) else {
            return;
        };
        record.state = state;
        record.rows = rows;
        record.error = error;
        record.ended = Some(SystemTime::now());
        let mut recent = self.recent.lock();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// Running statements (oldest first), then finished ones (newest first).
    pub fn snapshot(&self) -> Vec<QueryRecord> {
        // Sequence order is start order.
        let mut records: Vec<QueryRecord> = self.running.lock().values().cloned().collect();
        records.extend(self.recent.lock().iter().rev().cloned());
        records
    }

    /// A connection starts: `cancel` cancels its running statement.
    pub fn register_backend(&self, pid: i32, user: &str, cancel: Arc<dyn Fn() + Send + Sync>) {
        self.backends.lock().insert(
            pid,
            Backend {
                user: user.to_string(),
                cancel,
            },
        );
    }

    pub fn unregister_backend(&self, pid: i32) {
        self.backends.lock().remove(&pid);
    }

    /// `pg_cancel_backend(pid)` by `user` (`admin`: may cancel anyone's): whether there was such
    /// a connection.
    pub fn cancel_backend(&self, pid: i32, user: &str, admin: bool) -> Result<bool, KillError> {
        let cancel = match self.backends.lock().get(&pid) {
            Some(backend) if admin || backend.user == user => backend.cancel.clone(),
            Some(_) => return Err(KillError::NotYours),
            None => return Ok(false),
        };
        cancel();
        Ok(true)
    }

    /// `CALL system.runtime.kill_query(query_id => id)` by `user`.
    pub fn kill(&self, id: &str, user: &str, admin: bool) -> Result<(), KillError> {
        let running = sequence_of(id).and_then(|sequence| {
            self.running
                .lock()
                .get(&sequence)
                .filter(|record| record.backend_pid != 0 && record.id() == id)
                .map(|record| (record.backend_pid, record.user.clone()))
        });
        let Some((pid, owner)) = running else {
            return Err(KillError::NotRunning);
        };
        if !admin && &*owner != user {
            return Err(KillError::NotYours);
        }
        match self.cancel_backend(pid, user, true) {
            Ok(true) => Ok(()),
            _ => Err(KillError::NotRunning),
        }
    }
}

/// A running statement's entry; dropping it before [`QueryHandle::finish`] or
/// [`QueryHandle::fail`] records it as cancelled.
pub struct QueryHandle {
    log: Arc<QueryLog>,
    sequence: u64,
    rows: u64,
    ended: bool,
}

impl QueryHandle {
    pub fn finish(mut self) {
        self.ended = true;
        self.log
            .end(self.sequence, QueryState::Finished, self.rows, None);
    }

    pub fn fail(mut self, message: &str) {
        self.ended = true;
        self.log.end(
            self.sequence,
            QueryState::Failed,
            self.rows,
            Some(message.to_string()),
        );
    }

    /// `stream`, counting its rows into this entry, which ends with the stream.
    pub fn track(self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        self.track_all(vec![stream])
            .pop()
            .unwrap_or_else(|| unreachable!("one stream in, one out"))
    }

    /// `streams` (the partitions of one result), counting their rows into this entry, which
    /// ends when the last of them ends: failed if one failed, cancelled if one was dropped
    /// before its end.
    pub fn track_all(
        self,
        streams: Vec<SendableRecordBatchStream>,
    ) -> Vec<SendableRecordBatchStream> {
        let shared = Arc::new(Shared {
            handle: Mutex::new(Some(self)),
            open: AtomicU64::new(streams.len() as u64),
            rows: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        streams
            .into_iter()
            .map(|stream| {
                Box::pin(Tracked {
                    schema: stream.schema(),
                    inner: stream,
                    shared: shared.clone(),
                    ended: false,
                }) as SendableRecordBatchStream
            })
            .collect()
    }
}

impl Drop for QueryHandle {
    fn drop(&mut self) {
        if !self.ended {
            self.log
                .end(self.sequence, QueryState::Cancelled, self.rows, None);
        }
    }
}

/// The entry of a result read as one or more streams.
struct Shared {
    handle: Mutex<Option<QueryHandle>>,
    /// Streams not yet ended or dropped.
    open: AtomicU64,
    rows: AtomicU64,
    /// The first way a stream ended other than finishing: failed (with the error) or
    /// cancelled (`None`).
    outcome: Mutex<Option<Option<String>>>,
}

impl Shared {
    /// One stream ended: with `failure` (`Some(None)`: dropped before its end).
    fn close(&self, failure: Option<Option<String>>) {
        if let Some(failure) = failure {
            self.outcome.lock().get_or_insert(failure);
        }
        if self.open.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some(mut handle) = self.handle.lock().take() else {
            return;
        };
        handle.rows = self.rows.load(Ordering::Relaxed);
        match self.outcome.lock().take() {
            None => handle.finish(),
            Some(Some(error)) => handle.fail(&error),
            // Dropping it records it as cancelled.
            Some(None) => drop(handle),
        }
    }
}

struct Tracked {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    shared: Arc<Shared>,
    ended: bool,
}

impl Stream for Tracked {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if self.ended {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                self.shared
                    .rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
            Poll::Ready(Some(Err(error))) => {
                self.ended = true;
                self.shared.close(Some(Some(error.to_string())));
            }
            Poll::Ready(None) => {
                self.ended = true;
                self.shared.close(None);
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.close(Some(None));
        }
    }
}

impl RecordBatchStream for Tracked {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_recorded_and_killed_by_id() {
        let log = Arc::new(QueryLog::default());
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cancelled.clone();
        log.register_backend(
            7,
            "ann",
            Arc::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let handle = log.begin(
            (7, "ann".into(), "psql".into()),
            &Arc::from("SELECT 1"),
            vec!["iceberg".into()],
        );
        let id = log.snapshot()[0].id();
        assert_eq!(log.snapshot()[0].state, QueryState::Running);
        assert_eq!(log.kill(&id, "bob", false), Err(KillError::NotYours));
        assert!(!cancelled.load(Ordering::SeqCst));
        assert_eq!(log.kill(&id, "bob", true), Ok(()));
        assert!(cancelled.load(Ordering::SeqCst));
        drop(handle);
        let record = &log.snapshot()[0];
        assert_eq!(record.state, QueryState::Cancelled);
        assert!(record.ended.is_some());
        assert_eq!(log.kill(&id, "ann", false), Err(KillError::NotRunning));
        let secret = log.begin(
            (7, "ann".into(), "".into()),
            &Arc::from("CREATE CATALOG c USING postgres WITH (password = 'pw-123')"),
            vec![],
        );
        secret.finish();
        assert!(!log.snapshot()[0].query.contains("pw-123"));
    }

    fn batches(rows: &[usize]) -> SendableRecordBatchStream {
        use datafusion::arrow::array::Int32Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let batches: Vec<DfResult<RecordBatch>> = rows
            .iter()
            .map(|&count| {
                Ok(RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int32Array::from(vec![1; count]))],
                )?)
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        ))
    }

    #[tokio::test]
    async fn a_partitioned_result_ends_with_its_last_stream() {
        use futures::StreamExt;
        let log = Arc::new(QueryLog::default());
        let handle = log.begin((0, "ann".into(), "".into()), &Arc::from("SELECT n"), vec![]);
        let mut streams = handle.track_all(vec![batches(&[2, 3]), batches(&[4])]);
        let second = streams.pop().unwrap();
        let mut first = streams.pop().unwrap();
        while first.next().await.is_some() {}
        assert_eq!(log.snapshot()[0].state, QueryState::Running);
        let rows: usize = second
            .map(|batch| batch.unwrap().num_rows())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .sum();
        assert_eq!(rows, 4);
        let record = &log.snapshot()[0];
        assert_eq!(record.state, QueryState::Finished);
        assert_eq!(record.rows, 9);

        // A partition dropped before its end: the statement was cancelled.
        let handle = log.begin((0, "ann".into(), "".into()), &Arc::from("SELECT n"), vec![]);
        let mut streams = handle.track_all(vec![batches(&[2]), batches(&[1])]);
        let mut first = streams.remove(0);
        while first.next().await.is_some() {}
        drop(streams);
        assert_eq!(log.snapshot()[0].state, QueryState::Cancelled);
        assert_eq!(log.snapshot()[0].rows, 2);
    }
}
