//! SQL cursors: `DECLARE name CURSOR FOR query`, then `FETCH`, `MOVE` and `CLOSE`.
//!
//! psycopg2's named cursors, SQLAlchemy's `stream_results` and psycopg 3's `ServerCursor` read
//! large results this way. A cursor keeps the query's record batch stream open in the session;
//! each `FETCH n` pulls just enough batches for `n` rows, so memory stays bounded by a batch
//! whatever the size of the result. Cursors read forward only (`NO SCROLL`).
//!
//! As in PostgreSQL, a cursor without `WITH HOLD` belongs to its transaction block: it can only
//! be declared inside one and `COMMIT` or `ROLLBACK` closes it. A `WITH HOLD` cursor survives
//! `COMMIT` (it keeps reading the table versions it started with) and is closed by `ROLLBACK`
//! of the transaction that declared it, by `CLOSE` or by `DISCARD ALL`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::commands::Movement;
use crate::error::{EngineError, sqlstate};

/// An open cursor: the rest of its query's result.
struct OpenCursor {
    stream: SendableRecordBatchStream,
    /// Rows of a batch already pulled from `stream` but not yet returned.
    pending: Option<RecordBatch>,
    /// Rows returned or skipped so far: the cursor stands after row `position`.
    position: u64,
}

impl OpenCursor {
    /// Up to `limit` (at least 1) of the next rows, `None` at the end of the result.
    async fn next_rows(&mut self, limit: u64) -> Result<Option<RecordBatch>, DataFusionError> {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        loop {
            if let Some(batch) = self.pending.take() {
                let rows = batch.num_rows();
                if rows == 0 {
                    continue;
                }
                let take = rows.min(limit);
                if take < rows {
                    self.pending = Some(batch.slice(take, rows - take));
                }
                self.position += take as u64;
                return Ok(Some(batch.slice(0, take)));
            }
            match self.stream.next().await {
                Some(batch) => self.pending = Some(batch?),
                None => return Ok(None),
            }
        }
    }

    /// Skips up to `rows` rows and returns how many there were.
    async fn skip(&mut self, mut rows: u64) -> Result<u64, DataFusionError> {
        let mut skipped = 0;
        while rows > 0 {
            match self.next_rows(rows).await? {
                Some(batch) => {
                    rows -= batch.num_rows() as u64;
                    skipped += batch.num_rows() as u64;
                }
                None => break,
            }
        }
        Ok(skipped)
    }
}

struct Entry {
    schema: SchemaRef,
    hold: bool,
    /// The transaction block that declared it (see [`Cursors::end_transaction`]).
    transaction: u64,
    cursor: Arc<tokio::sync::Mutex<OpenCursor>>,
}

/// A session's open cursors and its transaction block, which cursors depend on.
#[derive(Default)]
pub(crate) struct Cursors {
    open: HashMap<String, Entry>,
    in_transaction: bool,
    /// Counts transaction blocks, so that ROLLBACK knows which cursors it declared.
    transaction: u64,
}

impl Cursors {
    pub(crate) fn begin(&mut self) {
        if !self.in_transaction {
            self.in_transaction = true;
            self.transaction += 1;
        }
    }

    /// COMMIT closes the cursors without `WITH HOLD`; ROLLBACK also closes the held cursors
    /// that the rolled-back block declared.
    pub(crate) fn end_transaction(&mut self, committed: bool) {
        let transaction = self.transaction;
        let was_open = self.in_transaction;
        self.open.retain(|_, entry| {
            entry.hold && (committed || !was_open || entry.transaction != transaction)
        });
        self.in_transaction = false;
    }

    pub(crate) fn close_all(&mut self) {
        self.open.clear();
    }

    /// Opens cursor `name` over `stream`, the result of its query.
    pub(crate) fn declare(
        &mut self,
        name: &str,
        hold: bool,
        stream: SendableRecordBatchStream,
    ) -> Result<(), EngineError> {
        if !hold && !self.in_transaction {
            return Err(EngineError::new(
                sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                "DECLARE CURSOR can only be used in transaction blocks (BEGIN first, or declare it WITH HOLD)",
            ));
        }
        if self.open.contains_key(name) {
            return Err(EngineError::new(
                sqlstate::DUPLICATE_CURSOR,
                format!("cursor \"{name}\" already exists"),
            ));
        }
        self.open.insert(
            name.to_string(),
            Entry {
                schema: stream.schema(),
                hold,
                transaction: self.transaction,
                cursor: Arc::new(tokio::sync::Mutex::new(OpenCursor {
                    stream,
                    pending: None,
                    position: 0,
                })),
            },
        );
        Ok(())
    }

    /// The schema of the rows cursor `name` returns.
    pub(crate) fn schema(&self, name: &str) -> Result<SchemaRef, EngineError> {
        self.entry(name).map(|entry| entry.schema.clone())
    }

    pub(crate) fn close(&mut self, name: &str) -> Result<(), EngineError> {
        self.open
            .remove(name)
            .map(drop)
            .ok_or_else(|| missing(name))
    }

    fn entry(&self, name: &str) -> Result<&Entry, EngineError> {
        self.open.get(name).ok_or_else(|| missing(name))
    }

    /// `FETCH`: the rows `movement` covers, read lazily as the client takes them.
    pub(crate) fn fetch(
        &self,
        name: &str,
        movement: Movement,
    ) -> Result<SendableRecordBatchStream, EngineError> {
        let entry = self.entry(name)?;
        let schema = entry.schema.clone();
        let cursor = entry.cursor.clone();
        struct State {
            cursor: Arc<tokio::sync::Mutex<OpenCursor>>,
            movement: Movement,
            /// Rows still to return; `None` for all.
            remaining: Option<u64>,
            started: bool,
            done: bool,
        }
        let state = State {
            cursor,
            movement,
            remaining: None,
            started: false,
            done: false,
        };
        let rows = futures::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let cursor = state.cursor.clone();
            let mut cursor = cursor.lock().await;
            if !state.started {
                state.started = true;
                // Move to just before the first row to return.
                let (skip, remaining) = match state.movement {
                    Movement::Next(n) => (0, Some(n)),
                    Movement::All => (0, None),
                    Movement::Absolute(n) if n <= cursor.position => {
                        state.done = true;
                        return Some((Err(backward()), state));
                    }
                    Movement::Absolute(n) => (n - 1 - cursor.position, Some(1)),
                    Movement::Relative(0) => (0, Some(0)),
                    Movement::Relative(n) => (n - 1, Some(1)),
                    Movement::Last => {
                        state.done = true;
                        return match last_row(&mut cursor).await {
                            Ok(Some(batch)) => Some((Ok(batch), state)),
                            Ok(None) => None,
                            Err(error) => Some((Err(error), state)),
                        };
                    }
                };
                if let Err(error) = cursor.skip(skip).await {
                    state.done = true;
                    return Some((Err(error), state));
                }
                state.remaining = remaining;
            }
            if state.remaining == Some(0) {
                return None;
            }
            match cursor.next_rows(state.remaining.unwrap_or(u64::MAX)).await {
                Ok(Some(batch)) => {
                    if let Some(remaining) = state.remaining.as_mut() {
                        *remaining -= batch.num_rows() as u64;
                    }
                    Some((Ok(batch), state))
                }
                Ok(None) => None,
                Err(error) => {
                    state.done = true;
                    Some((Err(error), state))
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}

fn backward() -> DataFusionError {
    DataFusionError::External(Box::new(EngineError::new(
        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "cursor can only scan forward: fjord cursors do not move backward",
    )))
}

/// Reads the cursor to its end and keeps the last row.
async fn last_row(cursor: &mut OpenCursor) -> Result<Option<RecordBatch>, DataFusionError> {
    let mut last = None;
    while let Some(batch) = cursor.next_rows(u64::MAX).await? {
        if batch.num_rows() > 0 {
            last = Some(batch.slice(batch.num_rows() - 1, 1));
        }
    }
    Ok(last)
}

/// `MOVE`: reads a [`Cursors::fetch`] stream to its end and counts its rows.
pub(crate) async fn count_rows(mut stream: SendableRecordBatchStream) -> Result<u64, EngineError> {
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

fn missing(name: &str) -> EngineError {
    EngineError::new(
        sqlstate::INVALID_CURSOR_NAME,
        format!("cursor \"{name}\" does not exist"),
    )
}
