//! Windowed rules: GROUP BY an event-time window (TUMBLE, HOP, SESSION) and keys, with the
//! result of each key's window given when the window closes.
//!
//! Time is the records' event time. The watermark is the latest event time seen, less the
//! rule's `watermark_delay`; a window closes when the watermark reaches its end, and its
//! result (if HAVING holds) is an alert with the id `<rule>/<key>/<window start>`. A window's
//! state stays for `allowed_lateness` after it closed: a record for it meanwhile updates it and
//! gives its result again, as `<rule>/<key>/<window start>/r<n>`. A record whose windows were
//! all closed for longer than that is a late record, kept with the reason in
//! [`LateRecord`]s; none is dropped silently.
//!
//! Tumbling and hopping windows take each batch's rows per key and window at once; session
//! windows take them one by one, since a record may join two sessions into one (their
//! accumulators merge through their intermediate state).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use arrow::row::OwnedRow;
use datafusion::logical_expr::Accumulator;
use fjord_config::WindowKind;

use super::{
    Aggregate, Alert, Expr, GroupedPlan, LateRecord, Position, Positions, Rows, RuleSettings,
    WindowSettings, aggregate_inputs, aggregate_rows, apply_filter, evaluate, json_rows, key_of,
    project, update,
};
use crate::decode::META_COLUMNS;

/// A windowed rule's window, in milliseconds of event time.
pub(super) struct WindowPlan {
    time: Expr,
    kind: Span,
    delay: i64,
    lateness: i64,
    /// After this long without records, event time is taken to pass as the clock does.
    idle: Option<std::time::Duration>,
    /// Where `window_start` and `window_end` are among the aggregate's group columns.
    slots: [usize; 2],
}

#[derive(Clone, Copy)]
enum Span {
    Tumble(i64),
    Hop { slide: i64, size: i64 },
    Session(i64),
}

fn millis(duration: std::time::Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

impl WindowPlan {
    pub(super) fn new(
        settings: &WindowSettings,
        time: Expr,
        slots: [usize; 2],
    ) -> Result<WindowPlan, String> {
        let positive = |duration: std::time::Duration| {
            let ms = millis(duration);
            if ms < 1 {
                Err("a window's durations are at least a millisecond".to_string())
            } else {
                Ok(ms)
            }
        };
        let kind = match settings.window.kind {
            WindowKind::Tumble { size } => Span::Tumble(positive(size)?),
            WindowKind::Hop { slide, size } => Span::Hop {
                slide: positive(slide)?,
                size: positive(size)?,
            },
            WindowKind::Session { gap } => Span::Session(positive(gap)?),
        };
        Ok(WindowPlan {
            time,
            kind,
            delay: millis(settings.watermark_delay),
            lateness: millis(settings.allowed_lateness),
            idle: settings.idle_timeout,
            slots,
        })
    }

    /// The (start, end) of the tumbling or hopping windows event time `t` falls in, latest
    /// first.
    fn windows_of(&self, t: i64) -> Vec<(i64, i64)> {
        match self.kind {
            Span::Tumble(size) => {
                let start = t.div_euclid(size) * size;
                vec![(start, start + size)]
            }
            Span::Hop { slide, size } => {
                let mut start = t.div_euclid(slide) * slide;
                let mut windows = Vec::new();
                while start + size > t {
                    windows.push((start, start + size));
                    start -= slide;
                }
                windows
            }
            Span::Session(_) => Vec::new(),
        }
    }
}

struct Window {
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Results given so far.
    results: u32,
    /// Updated since its last result.
    dirty: bool,
    /// The row of the batch being evaluated that last went into it.
    last_row: Option<usize>,
}

/// A windowed rule's state: the windows held per key and the latest event time.
#[derive(Default)]
pub(super) struct Windows {
    latest: Option<i64>,
    /// The last record: the latest event time then, when it was evaluated, and where it is.
    last_record: Option<(i64, std::time::SystemTime, Position)>,
    open: HashMap<OwnedRow, BTreeMap<i64, Window>>,
    /// (end, key, start) of every window held, in the order they close.
    by_end: BTreeSet<(i64, OwnedRow, i64)>,
}

/// A window due for its result.
struct Due {
    key: OwnedRow,
    start: i64,
    end: i64,
    values: Vec<datafusion::common::ScalarValue>,
    source: Position,
    /// Results the window gave before.
    results: u32,
}

impl Windows {
    /// Windows held, over all keys.
    pub(super) fn held(&self) -> usize {
        self.by_end.len()
    }

    fn watermark(&self, plan: &WindowPlan) -> Option<i64> {
        self.latest.map(|latest| latest.saturating_sub(plan.delay))
    }

    /// Evaluates one batch: each record goes into its key's windows (or is late), then the
    /// windows the watermark passed give their results.
    pub(super) fn process(
        &mut self,
        settings: &RuleSettings,
        plan: &GroupedPlan,
        window: &WindowPlan,
        batch: &RecordBatch,
        now: std::time::SystemTime,
        late: &mut Vec<LateRecord>,
    ) -> Result<Vec<Alert>, String> {
        let fired_at = &super::time_text(now);
        let batch = apply_filter(plan.filter.as_ref(), batch)?;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let times = event_times(&window.time, &batch)?;
        let key_columns = plan
            .groups
            .iter()
            .map(|expr| evaluate(expr, &batch))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = plan
            .converter
            .convert_columns(&key_columns)
            .map_err(|error| error.to_string())?;
        let inputs = aggregate_inputs(&plan.aggregates, &batch)?;
        // The watermark after each row: it only grows.
        let mut after = Vec::with_capacity(rows);
        let mut order: Vec<(OwnedRow, i64, i64)> = Vec::new();
        let mut members: HashMap<(OwnedRow, i64), Vec<u32>> = HashMap::new();
        // Late rows, why, and the watermark they met.
        let mut late_rows: Vec<(usize, String, Option<i64>)> = Vec::new();
        let mut touched: Vec<(OwnedRow, i64)> = Vec::new();
        for (row, time) in times.iter().enumerate() {
            let watermark = self.watermark(window);
            let Some(t) = *time else {
                late_rows.push((
                    row,
                    "the record has no event time (its window's time is null or not a timestamp)"
                        .into(),
                    watermark,
                ));
                after.push(watermark.unwrap_or(i64::MIN));
                continue;
            };
            let closed_since = |end: i64| watermark.is_some_and(|w| end + window.lateness <= w);
            let key = keys.row(row).owned();
            match window.kind {
                Span::Session(gap) => {
                    if closed_since(t + gap) {
                        late_rows.push((
                            row,
                            lateness_reason(t, t + gap, watermark, window),
                            watermark,
                        ));
                    } else {
                        let start = self.join_session(&key, t, gap, row, &plan.aggregates)?;
                        let accumulators = self
                            .open
                            .get_mut(&key)
                            .and_then(|sessions| sessions.get_mut(&start))
                            .map(|window| &mut window.accumulators)
                            .expect("joined above");
                        update(accumulators, &inputs, Rows::One(row))?;
                        touched.push((key, start));
                    }
                }
                Span::Tumble(_) | Span::Hop { .. } => {
                    let windows = window.windows_of(t);
                    let mut counted = false;
                    for (start, end) in &windows {
                        if closed_since(*end) {
                            continue;
                        }
                        counted = true;
                        members
                            .entry((key.clone(), *start))
                            .or_insert_with(|| {
                                order.push((key.clone(), *start, *end));
                                Vec::new()
                            })
                            .push(row as u32);
                    }
                    if !counted {
                        late_rows.push((
                            row,
                            lateness_reason(t, windows[0].1, watermark, window),
                            watermark,
                        ));
                    }
                }
            }
            self.latest = Some(self.latest.map_or(t, |latest| latest.max(t)));
            after.push(self.watermark(window).unwrap_or(i64::MIN));
        }
        for (key, start, end) in order {
            let rows = members.remove(&(key.clone(), start)).unwrap_or_default();
            let last = rows.last().copied().map(|row| row as usize);
            let held = self.window(&key, start, end, &plan.aggregates)?;
            update(
                &mut held.accumulators,
                &inputs,
                Rows::Take(&UInt32Array::from(rows)),
            )?;
            held.dirty = true;
            held.last_row = last;
            touched.push((key, start));
        }
        let positions = Positions::of(&batch)?;
        if !late_rows.is_empty() {
            late.extend(late_records(
                settings, &batch, &times, late_rows, &positions,
            )?);
        }
        // A window's result is raised by the record that closed it, or by the last that
        // updated it after that.
        let source = |end: i64, last_row: Option<usize>| {
            let closing = after.partition_point(|w| *w < end);
            let closing = (closing < after.len()).then_some(closing);
            let row = last_row.into_iter().chain(closing).max().unwrap_or(0);
            positions.at(row.min(rows - 1))
        };
        let alerts = self.close(settings, plan, window, source, fired_at);
        if let Some(latest) = self.latest {
            self.last_record = Some((latest, now, positions.at(rows - 1)));
        }
        for (key, start) in touched {
            if let Some(held) = self.open.get_mut(&key).and_then(|s| s.get_mut(&start)) {
                held.last_row = None;
            }
        }
        alerts
    }

    /// With `idle_timeout`: once no record has come for that long, the watermark moves on as
    /// if event time passed as the clock did since the last record, closing the windows it
    /// passes. Their alerts are raised after the last record (its offset + 1), which the rule
    /// has committed: an earlier run's are found by id in the alerts' topic.
    pub(super) fn tick(
        &mut self,
        settings: &RuleSettings,
        plan: &GroupedPlan,
        window: &WindowPlan,
        now: std::time::SystemTime,
    ) -> Result<Vec<Alert>, String> {
        let fired_at = &super::time_text(now);
        let (Some(idle), Some((latest, at, position))) = (window.idle, &self.last_record) else {
            return Ok(Vec::new());
        };
        let quiet = now.duration_since(*at).unwrap_or_default();
        if quiet < idle {
            return Ok(Vec::new());
        }
        let moved = latest.saturating_add(millis(quiet));
        if self.latest.is_some_and(|current| current >= moved) {
            return Ok(Vec::new());
        }
        self.latest = Some(moved);
        let (topic, partition, offset) = position.clone();
        let after_it = (topic, partition, offset + 1);
        self.close(settings, plan, window, |_, _| after_it.clone(), fired_at)
    }

    /// The window of `key` starting at `start`, made if new.
    fn window(
        &mut self,
        key: &OwnedRow,
        start: i64,
        end: i64,
        aggregates: &[Aggregate],
    ) -> Result<&mut Window, String> {
        let windows = self.open.entry(key.clone()).or_default();
        match windows.entry(start) {
            std::collections::btree_map::Entry::Occupied(held) => Ok(held.into_mut()),
            std::collections::btree_map::Entry::Vacant(vacant) => {
                let window = new_window(end, aggregates)?;
                self.by_end.insert((end, key.clone(), start));
                Ok(vacant.insert(window))
            }
        }
    }

    /// Puts event time `t` into `key`'s session: a new one, or the sessions it reaches merged
    /// into one. Returns the session's start.
    fn join_session(
        &mut self,
        key: &OwnedRow,
        t: i64,
        gap: i64,
        row: usize,
        aggregates: &[Aggregate],
    ) -> Result<i64, String> {
        let sessions = self.open.entry(key.clone()).or_default();
        let reached: Vec<i64> = sessions
            .range(..t.saturating_add(gap))
            .filter(|(_, session)| session.end > t)
            .map(|(start, _)| *start)
            .collect();
        let mut joined: Option<(i64, Window)> = None;
        for start in reached {
            let session = sessions.remove(&start).expect("listed above");
            self.by_end.remove(&(session.end, key.clone(), start));
            joined = Some(match joined {
                None => (start, session),
                Some((first, mut into)) => {
                    merge(&mut into.accumulators, session.accumulators)?;
                    into.end = into.end.max(session.end);
                    into.results = into.results.max(session.results);
                    (first.min(start), into)
                }
            });
        }
        let (start, mut session) = match joined {
            Some((start, session)) => (start.min(t), session),
            None => (t, new_window(t + gap, aggregates)?),
        };
        session.end = session.end.max(t.saturating_add(gap));
        session.dirty = true;
        session.last_row = Some(row);
        self.by_end.insert((session.end, key.clone(), start));
        sessions.insert(start, session);
        Ok(start)
    }

    /// Gives the results of the windows the watermark passed that have records not yet
    /// reported, and drops the windows closed for longer than the allowed lateness.
    /// `source(end, last row)` names the record an alert is raised by.
    fn close(
        &mut self,
        settings: &RuleSettings,
        plan: &GroupedPlan,
        window: &WindowPlan,
        source: impl Fn(i64, Option<usize>) -> Position,
        fired_at: &str,
    ) -> Result<Vec<Alert>, String> {
        let Some(watermark) = self.watermark(window) else {
            return Ok(Vec::new());
        };
        let passed: Vec<(i64, OwnedRow, i64)> = self
            .by_end
            .iter()
            .take_while(|(end, ..)| *end <= watermark)
            .cloned()
            .collect();
        let mut due = Vec::new();
        for (end, key, start) in passed {
            let windows = self.open.get_mut(&key).expect("held windows are indexed");
            let held = windows.get_mut(&start).expect("held windows are indexed");
            if held.dirty {
                let values = held
                    .accumulators
                    .iter_mut()
                    .map(|accumulator| accumulator.evaluate())
                    .collect::<datafusion::common::Result<Vec<_>>>()
                    .map_err(|error| error.to_string())?;
                let source = source(end, held.last_row);
                held.dirty = false;
                due.push(Due {
                    key: key.clone(),
                    start,
                    end,
                    values,
                    source,
                    results: held.results,
                });
            }
            if end + window.lateness <= watermark {
                windows.remove(&start);
                if windows.is_empty() {
                    self.open.remove(&key);
                }
                self.by_end.remove(&(end, key, start));
            }
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        // The groups' rows: key columns with the window columns in their places, then the
        // aggregates' values.
        let mut columns = plan
            .converter
            .convert_rows(due.iter().map(|d| d.key.row()))
            .map_err(|error| error.to_string())?;
        let [start_slot, end_slot] = window.slots;
        let timestamps = |values: Vec<i64>| -> arrow::array::ArrayRef {
            std::sync::Arc::new(
                TimestampMicrosecondArray::from(
                    values.into_iter().map(|ms| ms * 1000).collect::<Vec<_>>(),
                )
                .with_timezone("+00:00"),
            )
        };
        let mut slotted = [
            (
                start_slot,
                timestamps(due.iter().map(|d| d.start).collect()),
            ),
            (end_slot, timestamps(due.iter().map(|d| d.end).collect())),
        ];
        slotted.sort_by_key(|(slot, _)| *slot);
        for (slot, array) in slotted {
            columns.insert(slot, array);
        }
        let values: Vec<_> = due.iter().map(|d| d.values.clone()).collect();
        let groups = aggregate_rows(&plan.aggregate_schema, columns, values)?;
        let groups = apply_filter(plan.having.as_ref(), &with_row_numbers(&groups)?)?;
        let kept = groups
            .column(groups.num_columns() - 1)
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .values()
            .to_vec();
        let groups = groups
            .project(&(0..groups.num_columns() - 1).collect::<Vec<_>>())
            .map_err(|error| error.to_string())?;
        let rows = project(&plan.projection, &groups)?;
        let mut alerts = Vec::with_capacity(rows.len());
        for (columns, index) in rows.into_iter().zip(kept) {
            let due = &due[index as usize];
            let key = key_of(&columns, &settings.key);
            let results = due.results + 1;
            if let Some(held) = self
                .open
                .get_mut(&due.key)
                .and_then(|windows| windows.get_mut(&due.start))
            {
                held.results = results;
            }
            let mut id = format!("{}/{key}/{}", settings.name, rfc3339(due.start));
            if results > 1 {
                id.push_str(&format!("/r{results}"));
            }
            alerts.push(Alert {
                id,
                rule: settings.name.clone(),
                key,
                fired_at: fired_at.to_string(),
                columns,
                source: due.source.clone(),
            });
        }
        Ok(alerts)
    }
}

fn new_window(end: i64, aggregates: &[Aggregate]) -> Result<Window, String> {
    let accumulators = aggregates
        .iter()
        .map(|a| a.function.create_accumulator())
        .collect::<datafusion::common::Result<Vec<_>>>()
        .map_err(|error| error.to_string())?;
    Ok(Window {
        end,
        accumulators,
        results: 0,
        dirty: false,
        last_row: None,
    })
}

/// Merges the state of `from` into `into`, accumulator by accumulator.
fn merge(into: &mut [Box<dyn Accumulator>], from: Vec<Box<dyn Accumulator>>) -> Result<(), String> {
    for (into, mut from) in into.iter_mut().zip(from) {
        let state = from
            .state()
            .and_then(|values| {
                values
                    .iter()
                    .map(|value| value.to_array())
                    .collect::<datafusion::common::Result<Vec<_>>>()
            })
            .map_err(|error| error.to_string())?;
        into.merge_batch(&state)
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// `batch` with a last column numbering its rows.
fn with_row_numbers(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
        "__row",
        DataType::UInt32,
        false,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(UInt32Array::from_iter_values(
        0..batch.num_rows() as u32,
    )));
    RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .map_err(|error| error.to_string())
}

/// Each row's event time in milliseconds; null where it is missing or not a time.
fn event_times(expr: &Expr, batch: &RecordBatch) -> Result<Vec<Option<i64>>, String> {
    let array = evaluate(expr, batch)?;
    let zone = match array.data_type() {
        DataType::Timestamp(_, zone) => zone.clone(),
        _ => None,
    };
    let millis = arrow::compute::cast(&array, &DataType::Timestamp(TimeUnit::Millisecond, zone))
        .map_err(|error| format!("the window's time is not a timestamp: {error}"))?;
    Ok(millis
        .as_primitive::<TimestampMillisecondType>()
        .iter()
        .collect())
}

fn lateness_reason(t: i64, end: i64, watermark: Option<i64>, window: &WindowPlan) -> String {
    format!(
        "event time {} is too late: its window ended at {} and the watermark ({}) had passed \
         that by more than the allowed lateness of {} ms",
        rfc3339(t),
        rfc3339(end),
        watermark.map_or_else(String::new, rfc3339),
        window.lateness
    )
}

/// The late rows of `batch` as [`LateRecord`]s.
fn late_records(
    settings: &RuleSettings,
    batch: &RecordBatch,
    times: &[Option<i64>],
    rows: Vec<(usize, String, Option<i64>)>,
    positions: &Positions,
) -> Result<Vec<LateRecord>, String> {
    let fields: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| !META_COLUMNS.contains(&field.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let indices = UInt32Array::from_iter_values(rows.iter().map(|(row, ..)| *row as u32));
    let records = arrow::compute::take_record_batch(
        &batch.project(&fields).map_err(|error| error.to_string())?,
        &indices,
    )
    .map_err(|error| error.to_string())?;
    let records = json_rows(&records)?;
    Ok(rows
        .into_iter()
        .zip(records)
        .map(|((row, reason, watermark), record)| {
            let source = positions.at(row);
            LateRecord {
                id: format!("{}/{}-{}-{}", settings.name, source.0, source.1, source.2),
                rule: settings.name.clone(),
                reason,
                event_time: times[row].map(rfc3339),
                watermark: watermark.map(rfc3339),
                source,
                record: serde_json::Value::Object(record).to_string(),
            }
        })
        .collect())
}

/// Milliseconds since the epoch as RFC 3339, UTC.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema, SchemaRef};
    use fjord_config::TimeWindow;

    use super::super::{RuleEngine, RuleSettings, WindowSettings};
    use super::*;
    use crate::decode::{META_OFFSET, META_PARTITION, META_TOPIC, timestamp_type};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("cat_id", DataType::Utf8, true),
            Field::new("event_time", timestamp_type(), true),
            Field::new("body_temp_c", DataType::Float64, true),
            Field::new(META_TOPIC, DataType::Utf8, true),
            Field::new(META_PARTITION, DataType::Int32, true),
            Field::new(META_OFFSET, DataType::Int64, true),
        ]))
    }

    /// Milliseconds of 2026-11-03 10:mm:ss UTC.
    fn at(minute: i64, second: i64) -> i64 {
        1_793_700_000_000 + minute * 60_000 + second * 1000
    }

    /// Records (cat, event time in ms, temperature) at offsets from `first`.
    fn batch(records: &[(&str, i64, f64)], first: i64) -> RecordBatch {
        let n = records.len();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.1 * 1000))
                        .with_timezone("+00:00"),
                ),
                Arc::new(Float64Array::from_iter_values(records.iter().map(|r| r.2))),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n("t", n))),
                Arc::new(Int32Array::from_iter_values(std::iter::repeat_n(0, n))),
                Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
            ],
        )
        .unwrap()
    }

    async fn engine(sql: &str, delay: u64, lateness: u64) -> RuleEngine {
        let shape = fjord_config::analyze_rule(sql, "cat_id").unwrap();
        let window: TimeWindow = shape.window.unwrap();
        RuleEngine::new(
            RuleSettings {
                name: "r".into(),
                source: "cat_wellness".into(),
                sql: shape.sql,
                key: "cat_id".into(),
                cooldown: None,
                state_ttl: Duration::from_secs(3600),
                window: Some(WindowSettings {
                    window,
                    watermark_delay: Duration::from_secs(delay),
                    allowed_lateness: Duration::from_secs(lateness),
                    idle_timeout: Some(Duration::from_secs(30)),
                }),
            },
            schema(),
        )
        .await
        .unwrap()
    }

    const PER_MINUTE: &str = "SELECT cat_id, window_start, window_end, count(*) AS readings, \
        avg(body_temp_c) AS temp FROM cat_wellness \
        GROUP BY cat_id, TUMBLE(event_time, INTERVAL '1' MINUTE)";

    /// Out of order within the watermark delay, then one record too late.
    fn readings() -> Vec<(&'static str, i64, f64)> {
        vec![
            ("c1", at(0, 5), 38.0),
            ("c1", at(0, 50), 39.0),
            ("c2", at(0, 30), 40.0),
            ("c1", at(1, 5), 38.5),
            // Behind the latest time seen, not behind the watermark: it counts.
            ("c1", at(0, 58), 37.0),
            // The watermark passes 10:01:00: the first minute closes.
            ("c1", at(1, 12), 38.0),
            // For the closed minute: late.
            ("c1", at(0, 59), 50.0),
            // Closes the second minute.
            ("c2", at(2, 30), 39.0),
        ]
    }

    fn summary(alerts: &[Alert]) -> Vec<(String, serde_json::Value, serde_json::Value, i64)> {
        alerts
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    a.column("readings").cloned().unwrap(),
                    a.column("temp").cloned().unwrap(),
                    a.source.2,
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_tumbling_window_gives_its_result_when_the_watermark_passes_its_end() {
        let mut rule = engine(PER_MINUTE, 10, 0).await;
        let alerts = rule
            .process(&batch(&readings(), 0), SystemTime::now())
            .unwrap();
        assert_eq!(
            summary(&alerts),
            [
                (
                    "r/c1/2026-11-03T10:00:00.000Z".to_string(),
                    3.into(),
                    38.0.into(),
                    5
                ),
                (
                    "r/c2/2026-11-03T10:00:00.000Z".to_string(),
                    1.into(),
                    40.0.into(),
                    5
                ),
                (
                    "r/c1/2026-11-03T10:01:00.000Z".to_string(),
                    2.into(),
                    38.25.into(),
                    7
                ),
            ]
        );
        assert_eq!(
            alerts[0].column("window_start").unwrap(),
            &serde_json::json!("2026-11-03T10:00:00Z")
        );
        let late = rule.take_late();
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0].id, "r/t-0-6");
        assert_eq!(
            late[0].event_time.as_deref(),
            Some("2026-11-03T10:00:59.000Z")
        );
        assert_eq!(
            late[0].watermark.as_deref(),
            Some("2026-11-03T10:01:02.000Z")
        );
        assert!(late[0].reason.contains("too late"), "{}", late[0].reason);
        assert!(
            late[0].record.contains("\"body_temp_c\":50.0"),
            "{}",
            late[0].record
        );
        // The open window of c2 (10:02) is still held.
        assert_eq!(rule.keys_held(), 1);

        // Record by record, the same results and the same late record.
        let mut single = engine(PER_MINUTE, 10, 0).await;
        let mut again = Vec::new();
        for (offset, record) in readings().into_iter().enumerate() {
            again.extend(
                single
                    .process(&batch(&[record], offset as i64), SystemTime::now())
                    .unwrap(),
            );
        }
        assert_eq!(summary(&again), summary(&alerts));
        assert_eq!(single.take_late(), late);
    }

    #[tokio::test]
    async fn an_idle_stream_closes_its_last_windows_after_the_idle_timeout() {
        let mut rule = engine(PER_MINUTE, 10, 0).await;
        let t = SystemTime::now();
        let alerts = rule
            .process(
                &batch(&[("c1", at(0, 5), 38.0), ("c1", at(0, 40), 39.0)], 7),
                t,
            )
            .unwrap();
        assert_eq!(alerts, vec![]);
        // Quiet for 20 s: under the 30 s idle timeout, nothing moves.
        assert_eq!(rule.tick(t + Duration::from_secs(20)).unwrap(), vec![]);
        // 31 s: event time is taken to reach 10:01:11, past the minute's end plus the delay.
        let alerts = rule.tick(t + Duration::from_secs(31)).unwrap();
        assert_eq!(
            summary(&alerts),
            [(
                "r/c1/2026-11-03T10:00:00.000Z".to_string(),
                2.into(),
                38.5.into(),
                9
            )]
        );
        assert_eq!(rule.tick(t + Duration::from_secs(40)).unwrap(), vec![]);
    }

    #[tokio::test]
    async fn having_picks_the_windows_that_alert() {
        let mut rule = engine(
            "SELECT cat_id, window_start, avg(body_temp_c) AS temp FROM cat_wellness \
             GROUP BY cat_id, TUMBLE(event_time, INTERVAL '1' MINUTE) \
             HAVING avg(body_temp_c) > 38.5",
            10,
            0,
        )
        .await;
        let alerts = rule
            .process(&batch(&readings(), 0), SystemTime::now())
            .unwrap();
        let ids: Vec<_> = alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["r/c2/2026-11-03T10:00:00.000Z"]);
    }

    #[tokio::test]
    async fn a_record_within_the_allowed_lateness_gives_the_window_again() {
        let mut rule = engine(PER_MINUTE, 10, 30).await;
        let readings = readings();
        let t = SystemTime::now();
        let mut alerts = rule.process(&batch(&readings[..6], 0), t).unwrap();
        alerts.extend(rule.process(&batch(&readings[6..], 6), t).unwrap());
        // c1's first minute: its result, then again with the late 50.0 as revision 2.
        let summary = summary(&alerts);
        assert_eq!(summary[0].0, "r/c1/2026-11-03T10:00:00.000Z");
        assert!(
            summary.contains(&(
                "r/c1/2026-11-03T10:00:00.000Z/r2".to_string(),
                4.into(),
                41.0.into(),
                6
            )),
            "{summary:?}"
        );
        assert!(rule.take_late().is_empty());
    }

    #[tokio::test]
    async fn hopping_windows_count_a_record_in_each_window_it_falls_in() {
        let mut rule = engine(
            "SELECT cat_id, window_start, count(*) AS readings, avg(body_temp_c) AS temp \
             FROM cat_wellness GROUP BY cat_id, \
             HOP(event_time, INTERVAL '1' MINUTE, INTERVAL '2' MINUTES)",
            0,
            0,
        )
        .await;
        let alerts = rule
            .process(
                &batch(
                    &[
                        ("c1", at(0, 30), 38.0),
                        ("c1", at(1, 30), 40.0),
                        ("c1", at(3, 0), 39.0),
                    ],
                    0,
                ),
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(
            summary(&alerts),
            [
                // 09:59-10:01 and 10:00-10:02 hold the first record; the second falls in
                // 10:00-10:02 and 10:01-10:03.
                (
                    "r/c1/2026-11-03T09:59:00.000Z".to_string(),
                    1.into(),
                    38.0.into(),
                    1
                ),
                (
                    "r/c1/2026-11-03T10:00:00.000Z".to_string(),
                    2.into(),
                    39.0.into(),
                    2
                ),
                (
                    "r/c1/2026-11-03T10:01:00.000Z".to_string(),
                    1.into(),
                    40.0.into(),
                    2
                ),
            ]
        );
    }

    #[tokio::test]
    async fn sessions_grow_merge_and_close_after_the_gap() {
        let mut rule = engine(
            "SELECT cat_id, window_start, window_end, count(*) AS readings, \
             max(body_temp_c) AS temp FROM cat_wellness \
             GROUP BY cat_id, SESSION(event_time, INTERVAL '30' SECOND)",
            30,
            0,
        )
        .await;
        let t = SystemTime::now();
        // Two sessions of c1 (50 s apart), then a record between them joins them.
        let alerts = rule
            .process(
                &batch(&[("c1", at(0, 0), 38.0), ("c1", at(0, 50), 39.0)], 0),
                t,
            )
            .unwrap();
        assert_eq!(
            alerts,
            vec![],
            "nothing closed yet: the watermark is at 10:00:20"
        );
        let alerts = rule
            .process(
                &batch(&[("c1", at(0, 25), 40.0), ("c2", at(2, 0), 1.0)], 2),
                t,
            )
            .unwrap();
        assert_eq!(
            summary(&alerts),
            [(
                "r/c1/2026-11-03T10:00:00.000Z".to_string(),
                3.into(),
                40.0.into(),
                3
            )]
        );
        assert_eq!(
            alerts[0].column("window_end").unwrap(),
            &serde_json::json!("2026-11-03T10:01:20Z")
        );
    }
}
