//! A rule's SQL, planned by DataFusion once against the stream's columns and then evaluated on
//! each micro-batch of decoded records, with the per-key state that grouped rules keep.
//!
//! DataFusion gives the analyzed logical plan (types coerced, names resolved) and the physical
//! expressions and accumulators; the sidecar runs them itself instead of executing a plan, so
//! that aggregates live on from batch to batch:
//! - a per-record rule is `Projection <- Filter? <- scan`: each matching record is an alert;
//! - a grouped rule is `Projection <- Filter(HAVING)? <- Aggregate <- Filter(WHERE)? <- scan`:
//!   each group (key) keeps one accumulator per aggregate, updated with the group's rows of
//!   each batch; after a batch, the HAVING of every group that got rows is evaluated, and a
//!   group whose condition holds fires once (or again after the cooldown).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{Int32Type, Int64Type, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Accumulator, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use crate::decode::{META_OFFSET, META_PARTITION, META_TOPIC};

mod window;

/// One alert: what a rule's SELECT gave for one record or one group, with a stable id.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `<rule>/<key>/<topic>-<partition>-<offset>` for a per-record rule (the record that
    /// raised it), `<rule>/<key>/<n>` for the n-th firing of a grouped rule's key. The same
    /// alert delivered again has the same id.
    pub id: String,
    pub rule: Arc<str>,
    pub key: String,
    /// RFC 3339, UTC.
    pub fired_at: String,
    /// The rule's output columns, in SELECT order.
    pub columns: Vec<(String, Value)>,
    /// The record that raised it: topic, partition, offset.
    pub source: Position,
}

/// Where a record is in Kafka.
pub type Position = (Arc<str>, i32, i64);

/// The Kafka position columns of a batch of records.
struct Positions {
    topics: arrow::array::StringArray,
    partitions: arrow::array::Int32Array,
    offsets: arrow::array::Int64Array,
}

impl Positions {
    fn of(batch: &RecordBatch) -> Result<Positions, String> {
        let topics = batch
            .column_by_name(META_TOPIC)
            .and_then(|c| c.as_string_opt::<i32>().cloned());
        let partitions = batch
            .column_by_name(META_PARTITION)
            .and_then(|c| c.as_primitive_opt::<Int32Type>().cloned());
        let offsets = batch
            .column_by_name(META_OFFSET)
            .and_then(|c| c.as_primitive_opt::<Int64Type>().cloned());
        match (topics, partitions, offsets) {
            (Some(topics), Some(partitions), Some(offsets)) => Ok(Positions {
                topics,
                partitions,
                offsets,
            }),
            _ => Err("the records lack their Kafka position columns".into()),
        }
    }

    fn at(&self, row: usize) -> Position {
        (
            Arc::from(self.topics.value(row)),
            self.partitions.value(row),
            self.offsets.value(row),
        )
    }
}

impl Alert {
    /// The alert as a JSON value (members in no particular order).
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        for (name, value) in self.members() {
            object.insert(name.to_string(), value);
        }
        Value::Object(object)
    }

    /// The alert as JSON text: its own fields, then the rule's columns in SELECT order.
    pub fn to_json_text(&self) -> String {
        let mut text = String::from("{");
        for (i, (name, value)) in self.members().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&Value::String(name.to_string()).to_string());
            text.push(':');
            text.push_str(&value.to_string());
        }
        text.push('}');
        text
    }

    /// The value of output column `name`.
    pub fn column(&self, name: &str) -> Option<&Value> {
        self.columns
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, value)| value)
    }

    fn members(&self) -> impl Iterator<Item = (&str, Value)> {
        [
            ("alert_id", Value::String(self.id.clone())),
            ("rule", Value::String(self.rule.to_string())),
            ("key", Value::String(self.key.clone())),
            ("fired_at", Value::String(self.fired_at.clone())),
        ]
        .into_iter()
        .chain(
            self.columns
                .iter()
                .map(|(name, value)| (name.as_str(), value.clone())),
        )
    }
}

/// What a rule keeps besides its plan.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub name: Arc<str>,
    /// The pipeline named in FROM.
    pub source: String,
    pub sql: String,
    pub key: String,
    pub cooldown: Option<Duration>,
    pub state_ttl: Duration,
    /// The event-time window the rule groups by.
    pub window: Option<WindowSettings>,
}

/// A windowed rule's window and how long it waits for records.
#[derive(Debug, Clone)]
pub struct WindowSettings {
    pub window: fjord_config::TimeWindow,
    pub watermark_delay: Duration,
    pub allowed_lateness: Duration,
    pub idle_timeout: Option<Duration>,
}

type Expr = Arc<dyn PhysicalExpr>;

struct Aggregate {
    function: Arc<AggregateFunctionExpr>,
    arguments: Vec<Expr>,
    /// `FILTER (WHERE ...)`.
    filter: Option<Expr>,
}

enum Plan {
    PerRecord {
        filter: Option<Expr>,
        projection: Vec<(String, Expr)>,
    },
    Grouped(GroupedPlan),
    Windowed(GroupedPlan, window::WindowPlan),
}

struct GroupedPlan {
    filter: Option<Expr>,
    /// The group expressions that make a key (a windowed rule's window columns are not
    /// among them).
    groups: Vec<Expr>,
    converter: RowConverter,
    aggregates: Vec<Aggregate>,
    /// Group columns then aggregate columns, as HAVING and the projection see them.
    aggregate_schema: SchemaRef,
    having: Option<Expr>,
    projection: Vec<(String, Expr)>,
}

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    last_seen: SystemTime,
    firings: u64,
    last_fired: Option<SystemTime>,
}

/// A rule being evaluated: its plan for the current stream columns and its state.
pub struct RuleEngine {
    settings: RuleSettings,
    plan: Plan,
    groups: HashMap<OwnedRow, Group>,
    /// Per-record rules with a cooldown: when each key last fired.
    last_fired: HashMap<String, SystemTime>,
    last_expiry: SystemTime,
    /// A windowed rule's open windows and watermark.
    windows: window::Windows,
    /// Records a windowed rule found too late for their window, not yet taken.
    late: Vec<LateRecord>,
}

impl RuleEngine {
    /// Plans the rule against `schema` (the decoded records: fields, then the Kafka metadata
    /// columns). Errors name what is wrong (an unknown column, a type mismatch).
    pub async fn new(settings: RuleSettings, schema: SchemaRef) -> Result<RuleEngine, String> {
        let plan = plan(&settings, schema).await?;
        Ok(RuleEngine {
            settings,
            plan,
            groups: HashMap::new(),
            last_fired: HashMap::new(),
            last_expiry: SystemTime::now(),
            windows: window::Windows::default(),
            late: Vec::new(),
        })
    }

    /// Plans again for a stream that gained columns; the state stays.
    pub async fn replan(&mut self, schema: SchemaRef) -> Result<(), String> {
        let plan = plan(&self.settings, schema).await?;
        if let (Some(old), Some(new)) = (self.plan.grouped(), plan.grouped()) {
            let (old, new) = (&old.aggregates, &new.aggregates);
            let types = |aggregates: &[Aggregate]| {
                aggregates
                    .iter()
                    .map(|a| a.function.field().data_type().clone())
                    .collect::<Vec<_>>()
            };
            if types(old) != types(new) {
                return Err("the rule's aggregates changed type with the stream's columns".into());
            }
        }
        self.plan = plan;
        Ok(())
    }

    pub fn settings(&self) -> &RuleSettings {
        &self.settings
    }

    /// Keys with state (grouped rules), or windows held (windowed rules).
    pub fn keys_held(&self) -> usize {
        self.groups.len() + self.windows.held()
    }

    /// For a per-record rule with a cooldown: when keys last fired, as an earlier run
    /// delivered their alerts, so that a restart does not fire them again too soon.
    pub fn remember_firings(&mut self, firings: impl IntoIterator<Item = (String, SystemTime)>) {
        if self.settings.cooldown.is_none() || !matches!(self.plan, Plan::PerRecord { .. }) {
            return;
        }
        for (key, at) in firings {
            let last = self.last_fired.entry(key).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// The records found too late for their window since the last call.
    pub fn take_late(&mut self) -> Vec<LateRecord> {
        std::mem::take(&mut self.late)
    }

    /// Evaluates one batch of records (in the schema the rule was planned for), in order;
    /// returns the alerts it raises.
    pub fn process(&mut self, batch: &RecordBatch, now: SystemTime) -> Result<Vec<Alert>, String> {
        self.expire(now);
        let fired_at = time_text(now);
        let result = match &self.plan {
            Plan::PerRecord { .. } => self.process_records(batch, now, &fired_at),
            Plan::Grouped(_) => self.process_groups(batch, now, &fired_at),
            Plan::Windowed(plan, window) => {
                self.windows
                    .process(&self.settings, plan, window, batch, now, &mut self.late)
            }
        };
        result.map_err(|error| format!("rule `{}`: {error}", self.settings.name))
    }

    /// Lets time pass without records: a windowed rule with an idle timeout closes the
    /// windows the clock carries its watermark past. Other rules give nothing.
    pub fn tick(&mut self, now: SystemTime) -> Result<Vec<Alert>, String> {
        let Plan::Windowed(plan, window) = &self.plan else {
            return Ok(Vec::new());
        };
        self.windows
            .tick(&self.settings, plan, window, now)
            .map_err(|error| format!("rule `{}`: {error}", self.settings.name))
    }

    fn expire(&mut self, now: SystemTime) {
        if now
            .duration_since(self.last_expiry)
            .is_ok_and(|since| since < Duration::from_secs(1))
        {
            return;
        }
        self.last_expiry = now;
        let ttl = self.settings.state_ttl;
        let fresh = |at: SystemTime| now.duration_since(at).map_or(true, |age| age < ttl);
        self.groups.retain(|_, group| fresh(group.last_seen));
        let cooldown = self.settings.cooldown.unwrap_or_default();
        self.last_fired
            .retain(|_, at| now.duration_since(*at).map_or(true, |age| age < cooldown));
    }

    fn process_records(
        &mut self,
        batch: &RecordBatch,
        now: SystemTime,
        fired_at: &str,
    ) -> Result<Vec<Alert>, String> {
        let Plan::PerRecord { filter, projection } = &self.plan else {
            unreachable!("checked by the caller")
        };
        let batch = apply_filter(filter.as_ref(), batch)?;
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let rows = project(projection, &batch)?;
        let positions = Positions::of(&batch)?;
        let mut alerts = Vec::new();
        for (row, columns) in rows.into_iter().enumerate() {
            let key = key_of(&columns, &self.settings.key);
            if self.settings.cooldown.is_some() {
                let last = self.last_fired.get(&key).copied();
                if !may_fire(last, self.settings.cooldown, now) {
                    continue;
                }
                self.last_fired.insert(key.clone(), now);
            }
            let source = positions.at(row);
            alerts.push(Alert {
                id: format!(
                    "{}/{key}/{}-{}-{}",
                    self.settings.name, source.0, source.1, source.2
                ),
                rule: self.settings.name.clone(),
                key,
                fired_at: fired_at.to_string(),
                columns,
                source,
            });
        }
        Ok(alerts)
    }

    fn process_groups(
        &mut self,
        batch: &RecordBatch,
        now: SystemTime,
        fired_at: &str,
    ) -> Result<Vec<Alert>, String> {
        let Plan::Grouped(GroupedPlan {
            filter,
            groups,
            converter,
            aggregates,
            aggregate_schema,
            having,
            projection,
        }) = &self.plan
        else {
            unreachable!("checked by the caller")
        };
        let batch = apply_filter(filter.as_ref(), batch)?;
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let group_columns = groups
            .iter()
            .map(|expr| evaluate(expr, &batch))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = converter
            .convert_columns(&group_columns)
            .map_err(|error| error.to_string())?;
        // Row numbers of each group, groups in order of their first row.
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut members: HashMap<OwnedRow, Vec<u32>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let owned = row.owned();
            members
                .entry(owned)
                .or_insert_with_key(|owned| {
                    order.push(owned.clone());
                    Vec::new()
                })
                .push(i as u32);
        }
        let inputs = aggregate_inputs(aggregates, &batch)?;
        let cooldown = self.settings.cooldown;
        let positions = Positions::of(&batch)?;
        let mut fired: Vec<(OwnedRow, Vec<ScalarValue>, u64, Position)> = Vec::new();
        for key in &order {
            let rows = members.remove(key).unwrap_or_default();
            if !self.groups.contains_key(key) {
                let accumulators = aggregates
                    .iter()
                    .map(|a| a.function.create_accumulator())
                    .collect::<datafusion::common::Result<Vec<_>>>()
                    .map_err(|error| error.to_string())?;
                self.groups.insert(
                    key.clone(),
                    Group {
                        accumulators,
                        last_seen: now,
                        firings: 0,
                        last_fired: None,
                    },
                );
            }
            let group = self.groups.get_mut(key).expect("inserted above");
            group.last_seen = now;
            let key_columns = converter
                .convert_rows([key.row()])
                .map_err(|error| error.to_string())?;
            // While the key may fire, its records go in one at a time and HAVING is checked
            // after each, so that it fires at the very record that makes it true, however
            // the records were batched. The rest go in at once.
            let mut next = 0;
            while next < rows.len() {
                if !may_fire(group.last_fired, cooldown, now) {
                    let indices = UInt32Array::from(rows[next..].to_vec());
                    update(&mut group.accumulators, &inputs, Rows::Take(&indices))?;
                    break;
                }
                update(
                    &mut group.accumulators,
                    &inputs,
                    Rows::One(rows[next] as usize),
                )?;
                next += 1;
                let values = group
                    .accumulators
                    .iter_mut()
                    .map(|accumulator| accumulator.evaluate())
                    .collect::<datafusion::common::Result<Vec<_>>>()
                    .map_err(|error| error.to_string())?;
                let holds = match having {
                    Some(having) => {
                        let row = aggregate_rows(
                            aggregate_schema,
                            key_columns.clone(),
                            vec![values.clone()],
                        )?;
                        let holds = evaluate(having, &row)?;
                        let holds = holds
                            .as_boolean_opt()
                            .ok_or("HAVING is not a boolean condition")?;
                        holds.is_valid(0) && holds.value(0)
                    }
                    None => true,
                };
                if holds {
                    group.firings += 1;
                    group.last_fired = Some(now);
                    let source = positions.at(rows[next - 1] as usize);
                    fired.push((key.clone(), values, group.firings, source));
                }
            }
        }
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        let key_columns = converter
            .convert_rows(fired.iter().map(|(key, ..)| key.row()))
            .map_err(|error| error.to_string())?;
        let firing = aggregate_rows(
            aggregate_schema,
            key_columns,
            fired.iter().map(|(_, values, ..)| values.clone()).collect(),
        )?;
        let rows = project(projection, &firing)?;
        Ok(rows
            .into_iter()
            .zip(fired)
            .map(|(columns, (_, _, n, source))| {
                let key = key_of(&columns, &self.settings.key);
                Alert {
                    id: format!("{}/{key}/{n}", self.settings.name),
                    rule: self.settings.name.clone(),
                    key,
                    fired_at: fired_at.to_string(),
                    columns,
                    source,
                }
            })
            .collect())
    }
}

impl Plan {
    fn grouped(&self) -> Option<&GroupedPlan> {
        match self {
            Plan::PerRecord { .. } => None,
            Plan::Grouped(plan) | Plan::Windowed(plan, _) => Some(plan),
        }
    }
}

/// A record a windowed rule could not count: later than its window's allowed lateness (or
/// without an event time).
#[derive(Debug, Clone, PartialEq)]
pub struct LateRecord {
    /// `<rule>/<topic>-<partition>-<offset>`.
    pub id: String,
    pub rule: Arc<str>,
    pub reason: String,
    /// The record's event time and the watermark it met, RFC 3339 (UTC).
    pub event_time: Option<String>,
    pub watermark: Option<String>,
    pub source: Position,
    /// The record's fields as a JSON object's text.
    pub record: String,
}

impl LateRecord {
    /// The late record as JSON text, as its topic receives it.
    pub fn to_json_text(&self) -> String {
        serde_json::json!({
            "late_id": self.id,
            "rule": self.rule.as_ref(),
            "reason": self.reason,
            "event_time": self.event_time,
            "watermark": self.watermark,
            "topic": self.source.0.as_ref(),
            "partition": self.source.1,
            "offset": self.source.2,
            "record": self.record,
        })
        .to_string()
    }
}

/// An aggregate's evaluated arguments and FILTER mask.
type AggregateInput = (Vec<ArrayRef>, Option<ArrayRef>);

/// Each aggregate's arguments (and FILTER mask) over a whole batch.
fn aggregate_inputs(
    aggregates: &[Aggregate],
    batch: &RecordBatch,
) -> Result<Vec<AggregateInput>, String> {
    let mut inputs = Vec::with_capacity(aggregates.len());
    for aggregate in aggregates {
        let arguments = aggregate
            .arguments
            .iter()
            .map(|expr| evaluate(expr, batch))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = match &aggregate.filter {
            Some(expr) => Some(evaluate(expr, batch)?),
            None => None,
        };
        inputs.push((arguments, filter));
    }
    Ok(inputs)
}

/// `now` as RFC 3339 with milliseconds, UTC: an alert's `fired_at`.
fn time_text(now: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Which rows of a batch go into a group's accumulators.
enum Rows<'a> {
    One(usize),
    Take(&'a UInt32Array),
}

/// Feeds `rows` of each aggregate's evaluated arguments (and FILTER mask) to its accumulator.
fn update(
    accumulators: &mut [Box<dyn Accumulator>],
    inputs: &[AggregateInput],
    rows: Rows<'_>,
) -> Result<(), String> {
    let pick = |array: &ArrayRef| -> Result<ArrayRef, String> {
        match rows {
            Rows::One(row) => Ok(array.slice(row, 1)),
            Rows::Take(indices) => take(array, indices, None).map_err(|error| error.to_string()),
        }
    };
    for ((arguments, filter), accumulator) in inputs.iter().zip(accumulators.iter_mut()) {
        let mut values = arguments.iter().map(pick).collect::<Result<Vec<_>, _>>()?;
        if let Some(filter) = filter {
            let mask = pick(filter)?;
            let mask = mask.as_boolean();
            values = values
                .iter()
                .map(|array| arrow::compute::filter(array, mask))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| error.to_string())?;
        }
        accumulator
            .update_batch(&values)
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Whether a key that last fired at `last` may fire at `now`.
fn may_fire(last: Option<SystemTime>, cooldown: Option<Duration>, now: SystemTime) -> bool {
    match (last, cooldown) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(last), Some(cooldown)) => now
            .duration_since(last)
            .is_ok_and(|since| since >= cooldown),
    }
}

/// Rows of the aggregate's output: the groups' key columns, then one value per aggregate.
fn aggregate_rows(
    schema: &SchemaRef,
    mut columns: Vec<ArrayRef>,
    rows: Vec<Vec<ScalarValue>>,
) -> Result<RecordBatch, String> {
    let groups = columns.len();
    for (i, field) in schema.fields().iter().enumerate().skip(groups) {
        let values = rows.iter().map(|row| row[i - groups].clone());
        let array = if rows.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(values).map_err(|error| error.to_string())?
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|error| format!("cannot assemble the groups' values: {error}"))
}

/// The alert key: the key column's value as text (JSON text for non-strings).
fn key_of(columns: &[(String, Value)], key: &str) -> String {
    match columns
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
    {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn evaluate(expr: &Expr, batch: &RecordBatch) -> Result<ArrayRef, String> {
    expr.evaluate(batch)
        .and_then(|value| value.into_array(batch.num_rows()))
        .map_err(|error| error.to_string())
}

fn apply_filter(filter: Option<&Expr>, batch: &RecordBatch) -> Result<RecordBatch, String> {
    let Some(filter) = filter else {
        return Ok(batch.clone());
    };
    let mask = evaluate(filter, batch)?;
    let mask = mask
        .as_boolean_opt()
        .ok_or("WHERE is not a boolean condition")?;
    filter_record_batch(batch, mask).map_err(|error| error.to_string())
}

/// The projection's rows as JSON objects (nulls kept), columns in SELECT order.
fn project(
    projection: &[(String, Expr)],
    batch: &RecordBatch,
) -> Result<Vec<Vec<(String, Value)>>, String> {
    let mut fields = Vec::with_capacity(projection.len());
    let mut columns = Vec::with_capacity(projection.len());
    for (name, expr) in projection {
        let column = evaluate(expr, batch)?;
        fields.push(arrow::datatypes::Field::new(
            name,
            column.data_type().clone(),
            true,
        ));
        columns.push(column);
    }
    let output = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|error| error.to_string())?;
    let rows = json_rows(&output)?;
    // serde_json's maps sort their members: take them in SELECT order.
    Ok(rows
        .into_iter()
        .map(|mut row| {
            projection
                .iter()
                .map(|(name, _)| (name.clone(), row.remove(name).unwrap_or(Value::Null)))
                .collect()
        })
        .collect())
}

/// A batch's rows as JSON objects, nulls kept.
fn json_rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, String> {
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|error| format!("cannot write the rows as JSON: {error}"))?;
    let text = writer.into_inner();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&text).map_err(|error| error.to_string())
}

/// Plans `settings.sql` against a table of `schema` named after the source pipeline.
async fn plan(settings: &RuleSettings, schema: SchemaRef) -> Result<Plan, String> {
    let context = SessionContext::new();
    // A windowed rule's table has the window columns too, after the stream's: GROUP BY names
    // them where the rule had its window call, and they are filled in per window.
    let stream_columns = schema.fields().len();
    let schema = match &settings.window {
        None => schema,
        Some(_) => {
            let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
            for name in fjord_config::WINDOW_COLUMNS {
                if schema.field_with_name(name).is_ok() {
                    return Err(format!(
                        "the stream has a field `{name}`, which a windowed rule uses for its \
                         window"
                    ));
                }
                fields.push(Arc::new(arrow::datatypes::Field::new(
                    name,
                    crate::decode::timestamp_type(),
                    true,
                )));
            }
            Arc::new(Schema::new(fields))
        }
    };
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])
        .map_err(|error| error.to_string())?;
    context
        .register_table(settings.source.as_str(), Arc::new(table))
        .map_err(|error| error.to_string())?;
    let state = context.state();
    let logical = state
        .create_logical_plan(&settings.sql)
        .await
        .map_err(|error| error.strip_backtrace())?;
    let logical = state
        .analyzer()
        .execute_and_check(logical, state.config_options(), |_, _| {})
        .map_err(|error| error.strip_backtrace())?;
    let physical = |expr: &datafusion::prelude::Expr, schema: &DFSchema| {
        state
            .create_physical_expr(expr.clone(), schema)
            .map_err(|error| error.strip_backtrace())
    };

    let LogicalPlan::Projection(top) = &logical else {
        return Err(format!("unexpected plan for a rule: {}", logical.display()));
    };
    let projection = top
        .expr
        .iter()
        .zip(top.schema.fields())
        .map(|(expr, field)| Ok((field.name().clone(), physical(expr, top.input.schema())?)))
        .collect::<Result<Vec<_>, String>>()?;
    let mut input = top.input.as_ref();
    let mut having = None;
    if let LogicalPlan::Filter(filter) = input
        && matches!(filter.input.as_ref(), LogicalPlan::Aggregate(_))
    {
        having = Some(physical(&filter.predicate, filter.input.schema())?);
        input = filter.input.as_ref();
    }
    let aggregate = match input {
        LogicalPlan::Aggregate(aggregate) => {
            input = aggregate.input.as_ref();
            Some(aggregate)
        }
        _ => None,
    };
    let mut filter = None;
    if let LogicalPlan::Filter(where_) = input {
        filter = Some(physical(&where_.predicate, where_.input.schema())?);
        input = where_.input.as_ref();
    }
    while let LogicalPlan::SubqueryAlias(alias) = input {
        input = alias.input.as_ref();
    }
    if !matches!(input, LogicalPlan::TableScan(_)) {
        return Err(format!(
            "a rule is evaluated record batch by record batch, and this part of its plan \
             cannot be: {}",
            input.display()
        ));
    }
    let Some(aggregate) = aggregate else {
        return Ok(Plan::PerRecord { filter, projection });
    };
    let input_schema = aggregate.input.schema();
    let mut groups = Vec::new();
    let mut slots = Vec::new();
    for (i, expr) in aggregate.group_expr.iter().enumerate() {
        let expr = physical(expr, input_schema)?;
        match expr.as_any().downcast_ref::<Column>() {
            Some(column) if settings.window.is_some() && column.index() >= stream_columns => {
                slots.push(i);
            }
            _ => groups.push(expr),
        }
    }
    let arrow_input = input_schema.as_arrow();
    let sort_fields = groups
        .iter()
        .map(|expr| {
            expr.data_type(arrow_input)
                .map(SortField::new)
                .map_err(|error| error.strip_backtrace())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let converter = RowConverter::new(sort_fields).map_err(|error| error.to_string())?;
    let mut aggregates = Vec::new();
    for expr in &aggregate.aggr_expr {
        let (function, filter, ordering) =
            datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                expr,
                input_schema,
                arrow_input,
                state.execution_props(),
            )
            .map_err(|error| error.strip_backtrace())?;
        if !ordering.is_empty() {
            return Err("ordered aggregates are not supported in rules".into());
        }
        aggregates.push(Aggregate {
            arguments: function.expressions(),
            function,
            filter,
        });
    }
    // Only the window columns of the grouped rows know their window.
    let before_grouping = filter.iter().chain(
        aggregates
            .iter()
            .flat_map(|a| a.arguments.iter().chain(&a.filter)),
    );
    for expr in before_grouping {
        if collect_columns(expr)
            .iter()
            .any(|column| column.index() >= stream_columns)
        {
            return Err(format!(
                "{} are known per window, after grouping: use them in SELECT or HAVING, not \
                 in WHERE or an aggregate's argument",
                fjord_config::WINDOW_COLUMNS.join(" and ")
            ));
        }
    }
    let grouped = GroupedPlan {
        filter,
        groups,
        converter,
        aggregates,
        aggregate_schema: Arc::new(aggregate.schema.as_arrow().clone()),
        having,
        projection,
    };
    let Some(window) = &settings.window else {
        return Ok(Plan::Grouped(grouped));
    };
    let [start, end] = slots[..] else {
        return Err("the window columns are missing from the rule's grouping".into());
    };
    // The event time, planned as a projection of the stream.
    let time_sql = format!(
        "SELECT {} FROM {}",
        window.window.time,
        settings.source.as_str()
    );
    let time_plan = state
        .create_logical_plan(&time_sql)
        .await
        .map_err(|error| {
            format!(
                "the window's time `{}`: {}",
                window.window.time,
                error.strip_backtrace()
            )
        })?;
    let LogicalPlan::Projection(time_projection) = &time_plan else {
        return Err(format!(
            "the window's time `{}` is not an expression",
            window.window.time
        ));
    };
    let time = physical(&time_projection.expr[0], time_projection.input.schema())?;
    Ok(Plan::Windowed(
        grouped,
        window::WindowPlan::new(window, time, [start, end])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("visitor_id", DataType::Utf8, true),
            Field::new("cat_id", DataType::Utf8, true),
            Field::new("interaction_type", DataType::Utf8, true),
            Field::new("duration_seconds", DataType::Float64, true),
            Field::new(META_TOPIC, DataType::Utf8, true),
            Field::new(META_PARTITION, DataType::Int32, true),
            Field::new(META_OFFSET, DataType::Int64, true),
        ]))
    }

    /// Records (visitor, cat, type, seconds) at offsets from `first`.
    fn batch(records: &[(&str, &str, &str, f64)], first: i64) -> RecordBatch {
        let n = records.len();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.2))),
                Arc::new(Float64Array::from_iter_values(records.iter().map(|r| r.3))),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n("t", n))),
                Arc::new(Int32Array::from_iter_values(std::iter::repeat_n(0, n))),
                Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
            ],
        )
        .unwrap()
    }

    fn settings(sql: &str, key: &str, cooldown: Option<Duration>) -> RuleSettings {
        RuleSettings {
            name: "r".into(),
            source: "cat_interactions".into(),
            sql: sql.into(),
            key: key.into(),
            cooldown,
            state_ttl: Duration::from_secs(3600),
            window: None,
        }
    }

    async fn engine(sql: &str, key: &str, cooldown: Option<Duration>) -> RuleEngine {
        RuleEngine::new(settings(sql, key, cooldown), schema())
            .await
            .unwrap()
    }

    const DETECTIVE: &str = "SELECT visitor_id, COUNT(DISTINCT cat_id) AS cats_liked \
        FROM cat_interactions WHERE interaction_type = 'like' \
        GROUP BY visitor_id HAVING COUNT(DISTINCT cat_id) > 3";

    #[tokio::test]
    async fn a_grouped_rule_fires_once_per_key_when_its_condition_becomes_true() {
        let mut rule = engine(DETECTIVE, "visitor_id", None).await;
        let t = SystemTime::now();
        // Three distinct cats liked (one twice), a pet that does not count.
        let first = batch(
            &[
                ("ann", "c1", "like", 1.0),
                ("ann", "c2", "like", 1.0),
                ("ann", "c2", "like", 1.0),
                ("ann", "c9", "pet", 1.0),
                ("ann", "c3", "like", 1.0),
                ("bob", "c1", "like", 1.0),
            ],
            0,
        );
        assert_eq!(rule.process(&first, t).unwrap(), vec![]);
        // The fourth distinct cat, in a later batch: the state carried over.
        let second = batch(&[("bob", "c2", "like", 1.0), ("ann", "c4", "like", 1.0)], 6);
        let alerts = rule.process(&second, t).unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].id, "r/ann/1");
        assert_eq!(alerts[0].key, "ann");
        assert_eq!(
            alerts[0].column("cats_liked").unwrap(),
            &serde_json::json!(4)
        );
        // Later likes keep the condition true but never fire again.
        let third = batch(&[("ann", "c5", "like", 1.0), ("ann", "c6", "like", 1.0)], 8);
        assert_eq!(rule.process(&third, t).unwrap(), vec![]);
        assert_eq!(rule.keys_held(), 2);
    }

    #[tokio::test]
    async fn repeated_evaluation_keeps_running_values_for_every_aggregate() {
        let mut rule = engine(
            "SELECT visitor_id, count(*) AS n, count(DISTINCT cat_id) AS cats, \
             sum(duration_seconds) AS total, avg(duration_seconds) AS mean, \
             min(cat_id) AS first_cat, max(duration_seconds) AS longest \
             FROM cat_interactions GROUP BY visitor_id",
            "visitor_id",
            Some(Duration::ZERO),
        )
        .await;
        let t = SystemTime::now();
        // A zero cooldown: every record fires, with the values as of that record.
        let alerts = rule
            .process(
                &batch(&[("ann", "c2", "pet", 2.0), ("ann", "c1", "pet", 4.0)], 0),
                t,
            )
            .unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].column("n").unwrap(), &serde_json::json!(1));
        assert_eq!(alerts[0].column("mean").unwrap(), &serde_json::json!(2.0));
        assert_eq!(alerts[1].column("n").unwrap(), &serde_json::json!(2));
        assert_eq!(alerts[1].column("mean").unwrap(), &serde_json::json!(3.0));
        let alerts = rule
            .process(&batch(&[("ann", "c2", "pet", 9.0)], 2), t)
            .unwrap();
        assert_eq!(alerts[0].column("n").unwrap(), &serde_json::json!(3));
        assert_eq!(alerts[0].column("cats").unwrap(), &serde_json::json!(2));
        assert_eq!(alerts[0].column("total").unwrap(), &serde_json::json!(15.0));
        assert_eq!(alerts[0].column("mean").unwrap(), &serde_json::json!(5.0));
        assert_eq!(
            alerts[0].column("first_cat").unwrap(),
            &serde_json::json!("c1")
        );
        assert_eq!(
            alerts[0].column("longest").unwrap(),
            &serde_json::json!(9.0)
        );
        assert_eq!(alerts[0].id, "r/ann/3");
    }

    #[tokio::test]
    async fn a_key_fires_at_the_record_that_makes_it_true_however_records_are_batched() {
        let likes: Vec<_> = ["c1", "c2", "c3", "c4", "c5", "c6"]
            .iter()
            .map(|cat| ("ann", *cat, "like", 1.0))
            .collect();
        let t = SystemTime::now();
        let mut whole = engine(DETECTIVE, "visitor_id", None).await;
        let alerts = whole.process(&batch(&likes, 0), t).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            alerts[0].column("cats_liked").unwrap(),
            &serde_json::json!(4)
        );
        let mut split = engine(DETECTIVE, "visitor_id", None).await;
        let mut again = split.process(&batch(&likes[..2], 0), t).unwrap();
        again.extend(split.process(&batch(&likes[2..], 2), t).unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].columns, alerts[0].columns);
        assert_eq!(again[0].id, alerts[0].id);
    }

    #[tokio::test]
    async fn a_per_record_rule_fires_for_each_match_with_the_records_position_as_id() {
        let mut rule = engine(
            "SELECT cat_id, 'LONG_VISIT' AS alert_type, duration_seconds AS seconds \
             FROM cat_interactions AS i WHERE i.duration_seconds > 60",
            "cat_id",
            None,
        )
        .await;
        let alerts = rule
            .process(
                &batch(
                    &[
                        ("ann", "c1", "pet", 90.0),
                        ("ann", "c2", "pet", 5.0),
                        ("bob", "c1", "play", 61.0),
                    ],
                    40,
                ),
                SystemTime::now(),
            )
            .unwrap();
        let ids: Vec<_> = alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["r/c1/t-0-40", "r/c1/t-0-42"]);
        assert_eq!(
            alerts[0].to_json_text(),
            format!(
                r#"{{"alert_id":"r/c1/t-0-40","rule":"r","key":"c1","fired_at":"{}","cat_id":"c1","alert_type":"LONG_VISIT","seconds":90.0}}"#,
                alerts[0].fired_at
            )
        );
    }

    #[tokio::test]
    async fn a_cooldown_holds_back_alerts_for_a_key_until_it_passes() {
        let mut rule = engine(
            "SELECT cat_id FROM cat_interactions WHERE duration_seconds > 60",
            "cat_id",
            Some(Duration::from_secs(600)),
        )
        .await;
        let t = SystemTime::now();
        let long = |offset| batch(&[("ann", "c1", "pet", 90.0)], offset);
        assert_eq!(rule.process(&long(0), t).unwrap().len(), 1);
        assert_eq!(
            rule.process(&long(1), t + Duration::from_secs(60))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            rule.process(&long(2), t + Duration::from_secs(601))
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_cooldown_remembered_from_an_earlier_run_holds() {
        let mut rule = engine(
            "SELECT cat_id FROM cat_interactions WHERE duration_seconds > 60",
            "cat_id",
            Some(Duration::from_secs(600)),
        )
        .await;
        let t = SystemTime::now();
        // c1 fired five minutes ago, before a restart; c2 fired long ago.
        rule.remember_firings([
            ("c1".to_string(), t - Duration::from_secs(300)),
            ("c2".to_string(), t - Duration::from_secs(3000)),
        ]);
        let alerts = rule
            .process(
                &batch(&[("ann", "c1", "pet", 90.0), ("ann", "c2", "pet", 90.0)], 0),
                t,
            )
            .unwrap();
        let keys: Vec<_> = alerts.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["c2"]);
        let later = rule
            .process(
                &batch(&[("ann", "c1", "pet", 90.0)], 2),
                t + Duration::from_secs(301),
            )
            .unwrap();
        assert_eq!(later.len(), 1, "the cooldown ran out");
    }

    #[tokio::test]
    async fn state_is_dropped_after_its_ttl_without_records() {
        let mut rule = engine(DETECTIVE, "visitor_id", None).await;
        let t = SystemTime::now();
        rule.process(&batch(&[("ann", "c1", "like", 1.0)], 0), t)
            .unwrap();
        assert_eq!(rule.keys_held(), 1);
        rule.process(
            &batch(&[("bob", "c1", "like", 1.0)], 1),
            t + Duration::from_secs(3601),
        )
        .unwrap();
        assert_eq!(rule.keys_held(), 1, "ann's state outlived the TTL");
    }

    #[tokio::test]
    async fn planning_errors_name_the_problem() {
        let error = RuleEngine::new(
            settings(
                "SELECT cat_id FROM cat_interactions WHERE weight > 3",
                "cat_id",
                None,
            ),
            schema(),
        )
        .await
        .err()
        .unwrap();
        assert!(error.contains("weight"), "{error}");
    }
}
