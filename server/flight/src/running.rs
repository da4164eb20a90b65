//! Statements that GetFlightInfo started and DoGet reads: one entry per statement, holding the
//! stream of each partition of its result until that partition's endpoint is fetched, and the
//! token that cancels it (CancelFlightInfo, `kill_query`, the client's session ending).
//!
//! A ticket names its statement and partition: 16 random bytes, then the partition's index as
//! four big-endian bytes. Each endpoint may be fetched once; an endpoint not fetched within
//! [`UNREAD_TTL`] is dropped, which stops its part of the statement.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use fjord_engine::{EngineError, Session};
use futures::{FutureExt, Stream};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How long an endpoint may wait to be fetched.
pub(crate) const UNREAD_TTL: Duration = Duration::from_secs(10 * 60);

const HANDLE_LEN: usize = 16;

/// A statement id and a partition index, as a ticket carries them.
pub(crate) fn ticket_bytes(id: &[u8; HANDLE_LEN], partition: u32) -> Vec<u8> {
    let mut bytes = id.to_vec();
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

/// The statement id and partition of a ticket's bytes.
pub(crate) fn parse_ticket(bytes: &[u8]) -> Option<([u8; HANDLE_LEN], u32)> {
    if bytes.len() != HANDLE_LEN + 4 {
        return None;
    }
    let id: [u8; HANDLE_LEN] = bytes[..HANDLE_LEN].try_into().ok()?;
    let partition = u32::from_be_bytes(bytes[HANDLE_LEN..].try_into().ok()?);
    Some((id, partition))
}

struct Entry {
    user: String,
    /// One per endpoint; taken by its DoGet.
    streams: Vec<Option<SendableRecordBatchStream>>,
    /// The schema announced in the `FlightInfo`, which every partition's rows are given.
    schema: SchemaRef,
    cancel: CancellationToken,
    /// When the session's `statement_timeout` ends it.
    deadline: Option<Instant>,
    /// Partitions being read now.
    reading: usize,
    /// Until when the unread partitions wait.
    expires: Instant,
    /// The session the statement runs in: a one-call session lives as long as its statement
    /// (it is registered as a backend for `kill_query` while it does).
    _session: Session,
}

impl Entry {
    fn finished(&self) -> bool {
        self.reading == 0 && self.streams.iter().all(Option::is_none)
    }
}

/// The statements started and not yet read to their end.
#[derive(Clone, Default)]
pub(crate) struct Running {
    entries: Arc<Mutex<HashMap<[u8; HANDLE_LEN], Entry>>>,
}

/// Why a partition cannot be read.
pub(crate) enum Unreadable {
    Unknown,
    NotYours,
    Taken,
}

impl Running {
    /// Records a started statement of `user` with its partitions' `streams`; its id, and when
    /// its endpoints expire.
    pub(crate) fn insert(
        &self,
        user: &str,
        session: Session,
        schema: SchemaRef,
        streams: Vec<SendableRecordBatchStream>,
        cancel: CancellationToken,
        timeout: Option<Duration>,
    ) -> Result<([u8; HANDLE_LEN], SystemTime), Status> {
        let id = random_id()?;
        self.sweep();
        let now = Instant::now();
        let mut entries = self.entries.lock();
        entries.insert(
            id,
            Entry {
                user: user.to_string(),
                streams: streams.into_iter().map(Some).collect(),
                schema,
                cancel,
                deadline: timeout.map(|timeout| now + timeout),
                reading: 0,
                expires: now + UNREAD_TTL,
                _session: session,
            },
        );
        Ok((id, SystemTime::now() + UNREAD_TTL))
    }

    /// Forgets the statements whose unread endpoints waited too long; dropping their streams
    /// stops them.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<Entry> = {
            let mut entries = self.entries.lock();
            let ids: Vec<[u8; HANDLE_LEN]> = entries
                .iter()
                .filter(|(_, entry)| entry.reading == 0 && entry.expires <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| entries.remove(id)).collect()
        };
        if !expired.is_empty() {
            tracing::info!(
                statements = expired.len(),
                "flight sql: dropped statements whose endpoints were never fetched"
            );
        }
        // Dropped outside the lock: a stream's drop may cancel work in Postgres.
        drop(expired);
    }

    /// Partition `partition` of statement `id` for `user` to read: its rows in the announced
    /// schema, ending with an error if the statement is cancelled meanwhile.
    pub(crate) fn take(
        &self,
        id: &[u8; HANDLE_LEN],
        partition: u32,
        user: &str,
    ) -> Result<(SchemaRef, Reading), Unreadable> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(id).ok_or(Unreadable::Unknown)?;
        if entry.user != user {
            return Err(Unreadable::NotYours);
        }
        let stream = entry
            .streams
            .get_mut(partition as usize)
            .ok_or(Unreadable::Unknown)?
            .take()
            .ok_or(Unreadable::Taken)?;
        entry.reading += 1;
        let reading = Reading {
            inner: Some(stream),
            cancelled: entry.cancel.clone().cancelled_owned().boxed(),
            timeout: entry
                .deadline
                .map(|deadline| Box::pin(tokio::time::sleep_until(deadline.into()))),
            done: false,
            _guard: ReadGuard {
                running: self.clone(),
                id: *id,
            },
        };
        Ok((entry.schema.clone(), reading))
    }

    /// Cancels statement `id` of `user` (any user's for an admin): whether it was still
    /// running.
    pub(crate) fn cancel(
        &self,
        id: &[u8; HANDLE_LEN],
        user: &str,
        admin: bool,
    ) -> Result<bool, Unreadable> {
        let (unread, _ended) = {
            let mut entries = self.entries.lock();
            let Some(entry) = entries.get_mut(id) else {
                return Ok(false);
            };
            if entry.user != user && !admin {
                return Err(Unreadable::NotYours);
            }
            entry.cancel.cancel();
            // Partitions nobody reads yet stop at once.
            let unread: Vec<_> = entry.streams.iter_mut().filter_map(Option::take).collect();
            let ended = if entry.finished() {
                entries.remove(id)
            } else {
                None
            };
            (unread, ended)
        };
        // Dropped outside the lock: a stream's drop may cancel work in Postgres.
        drop(unread);
        Ok(true)
    }

    fn done_reading(&self, id: &[u8; HANDLE_LEN]) {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(id) {
            entry.reading -= 1;
            if entry.finished() {
                entries.remove(id);
            }
        }
    }
}

fn random_id() -> Result<[u8; HANDLE_LEN], Status> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; HANDLE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Status::internal("no secure random source"))?;
    Ok(bytes)
}

struct ReadGuard {
    running: Running,
    id: [u8; HANDLE_LEN],
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.running.done_reading(&self.id);
    }
}

/// One partition being read. Cancelling its statement, or its session's `statement_timeout`,
/// ends it with 57014 (so a client never takes a cut-short result for a whole one) and drops
/// the partition's stream, which stops its work, in Postgres too.
pub(crate) struct Reading {
    inner: Option<SendableRecordBatchStream>,
    cancelled: futures::future::BoxFuture<'static, ()>,
    /// The session's `statement_timeout`, counted from the statement's start.
    timeout: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    /// Counts the read as ended when dropped.
    _guard: ReadGuard,
}

impl Stream for Reading {
    type Item = Result<RecordBatch, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let reason = if self.cancelled.poll_unpin(cx).is_ready() {
            Some("canceling statement due to user request")
        } else if self
            .timeout
            .as_mut()
            .is_some_and(|timeout| timeout.as_mut().poll(cx).is_ready())
        {
            Some("canceling statement due to statement timeout")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.done = true;
            self.inner = None;
            return Poll::Ready(Some(Err(EngineError::new(
                fjord_engine::sqlstate::QUERY_CANCELED,
                reason,
            ))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(Ok(batch))),
            Poll::Ready(Some(Err(error))) => {
                self.done = true;
                self.inner = None;
                Poll::Ready(Some(Err(EngineError::from(error))))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
