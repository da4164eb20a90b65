//! `[ingest.rules.<name>]`: SQL alert rules that the sidecar evaluates continuously over the
//! records of one pipeline, and the check that a rule's SQL can be evaluated that way.
//!
//! The check is structural (it runs where no records have been seen, so column types are not
//! known yet): one SELECT over one pipeline, no joins, subqueries, ordering, limits or window
//! functions, and aggregates only of the kinds that are kept per key incrementally. The
//! sidecar plans the rule against the stream's columns when it starts.

use std::ops::ControlFlow;
use std::time::Duration;

use serde::Deserialize;
use sqlparser::ast::{
    Expr, FunctionArguments, GroupByExpr, ObjectNamePart, SelectItem, SetExpr, Statement,
    TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Names of the fields every alert carries besides the rule's own columns.
pub const ALERT_FIELDS: [&str; 4] = ["alert_id", "rule", "key", "fired_at"];

/// Aggregates a rule may use: each is kept per key and updated with each batch of records.
const INCREMENTAL_AGGREGATES: [&str; 5] = ["count", "sum", "avg", "min", "max"];

/// Aggregates that exist but are not kept incrementally by the sidecar.
const OTHER_AGGREGATES: [&str; 22] = [
    "array_agg",
    "string_agg",
    "median",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "percentile_cont",
    "corr",
    "covar_pop",
    "covar_samp",
    "bit_and",
];

/// The event-time windows a rule may group by.
const TIME_WINDOWS: [&str; 3] = ["tumble", "hop", "session"];

/// Most windows one record may fall in (HOP's size over its slide).
const MAX_HOPS: u64 = 100;

/// The columns a windowed rule's SELECT and HAVING see for the window of a group.
pub const WINDOW_COLUMNS: [&str; 2] = ["window_start", "window_end"];

/// One alert rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A SELECT over one pipeline of `[ingest.pipelines]` (named in FROM): each row it gives is
    /// an alert. With GROUP BY, its aggregates are kept per group and a row is given when the
    /// group's HAVING becomes true.
    pub sql: String,
    /// The output column naming what an alert is about (a cat, a visitor): firing once per key
    /// and the cooldown go by it, and Kafka alerts are keyed by it.
    pub key: String,
    /// After an alert for a key, further alerts for that key wait this long. Default: none, so
    /// a grouped rule fires once per key and a plain rule on every matching record.
    pub cooldown: Option<String>,
    /// A key's state (aggregates, when it last fired) is dropped after this long without
    /// records. Default: "1d".
    #[serde(default = "default_state_ttl")]
    pub state_ttl: String,
    /// Kafka topic that receives the alerts as JSON, keyed by `key`. Default: none.
    pub kafka_topic: Option<String>,
    /// Where a rule that has never run starts reading: "earliest" (everything the topics
    /// still hold) or "latest" (records that arrive from now on). Default: "earliest".
    #[serde(default)]
    pub start_from: StartFrom,
    /// `[ingest.rules.<name>.postgres]`: a table of a Postgres catalog the alerts are upserted
    /// into. Default: none.
    pub postgres: Option<PostgresSinkConfig>,
    /// An HTTP(S) URL each batch of alerts is POSTed to, as a JSON array; retried with backoff
    /// until it answers 2xx. Default: none.
    pub webhook_url: Option<String>,
    /// Windowed rules: how far the watermark trails the latest event time seen, so that
    /// records this much out of order still count. A window's result is given when the
    /// watermark passes its end. Default: "5s".
    #[serde(default = "default_watermark_delay")]
    pub watermark_delay: String,
    /// Windowed rules: how long after a window's result was given a record for it still
    /// updates it (and gives the result again, as a new revision). Default: "0s".
    #[serde(default = "default_allowed_lateness")]
    pub allowed_lateness: String,
    /// Windowed rules: once no record has come for this long, event time is taken to pass as
    /// the clock does, so that a stream that stops still closes its last windows. Default:
    /// none (windows close only as later records come).
    pub idle_timeout: Option<String>,
    /// Windowed rules: the Kafka topic that receives records later than the allowed lateness,
    /// with the rule and the reason, so that none is dropped silently. Required for windows.
    pub late_events_topic: Option<String>,
}

/// A Postgres table that receives a rule's alerts by upsert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// A `[catalogs]` entry of type postgres.
    pub catalog: String,
    /// `schema.table`; it must exist, with a primary key or unique constraint on `key`.
    pub table: String,
    /// The columns an alert replaces a row by. Default: the rule's `key`.
    #[serde(default)]
    pub key: Vec<String>,
}

impl PostgresSinkConfig {
    /// (schema, table).
    pub fn table_parts(&self) -> Option<(&str, &str)> {
        self.table.split_once('.').filter(|(schema, table)| {
            !schema.is_empty() && !table.is_empty() && !table.contains('.')
        })
    }
}

fn default_state_ttl() -> String {
    "1d".into()
}

fn default_watermark_delay() -> String {
    "5s".into()
}

fn default_allowed_lateness() -> String {
    "0s".into()
}

/// Where a new rule starts reading its topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

impl StartFrom {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// How a rule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Filters and projections: each matching record gives an alert.
    PerRecord,
    /// GROUP BY with aggregates kept per group: an alert when a group's HAVING becomes true.
    Grouped,
    /// GROUP BY an event-time window (TUMBLE, HOP, SESSION) and keys: an alert per group and
    /// window when the window closes.
    Windowed,
}

/// How an event-time window groups records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `TUMBLE(time, size)`: back-to-back windows of `size`.
    Tumble { size: Duration },
    /// `HOP(time, slide, size)`: windows of `size` starting every `slide`.
    Hop { slide: Duration, size: Duration },
    /// `SESSION(time, gap)`: a key's records less than `gap` apart share a window.
    Session { gap: Duration },
}

/// The window a rule groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    pub kind: WindowKind,
    /// SQL text of the event-time expression (the window function's first argument).
    pub time: String,
}

/// What the structural check learned about a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleShape {
    /// The pipeline named in FROM.
    pub source: String,
    pub kind: RuleKind,
    pub window: Option<TimeWindow>,
    /// The SQL the sidecar plans: the rule's own, with a window call in GROUP BY replaced by
    /// the columns `window_start, window_end`.
    pub sql: String,
}

impl RuleConfig {
    pub fn cooldown(&self) -> Option<std::time::Duration> {
        self.cooldown.as_deref().and_then(crate::parse_duration)
    }

    pub fn state_ttl(&self) -> Duration {
        crate::parse_duration(&self.state_ttl).unwrap_or(Duration::from_secs(86400))
    }

    pub fn watermark_delay(&self) -> Duration {
        crate::parse_duration(&self.watermark_delay).unwrap_or(Duration::from_secs(5))
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout.as_deref().and_then(crate::parse_duration)
    }

    pub fn allowed_lateness(&self) -> Duration {
        crate::parse_duration(&self.allowed_lateness).unwrap_or_default()
    }

    /// The rule's shape; an error says why the SQL cannot be evaluated continuously.
    pub fn shape(&self) -> Result<RuleShape, String> {
        analyze(&self.sql, &self.key)
    }
}

/// Checks that `sql` is one SELECT that can be evaluated record batch by record batch, with
/// `key` among its output columns.
pub fn analyze(sql: &str, key: &str) -> Result<RuleShape, String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|error| format!("the SQL does not parse: {error}"))?;
    let [statement] = statements.as_slice() else {
        return Err(format!(
            "a rule is one SELECT statement, not {}",
            statements.len()
        ));
    };
    let Statement::Query(query) = statement else {
        return Err("a rule is a SELECT statement".into());
    };
    if query.with.is_some() {
        return Err("WITH is not supported in a rule: write the SELECT over the pipeline".into());
    }
    if query.order_by.is_some() {
        return Err("ORDER BY has no meaning for alerts, which are given as records arrive".into());
    }
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return Err("LIMIT, OFFSET and FETCH have no meaning on an endless stream".into());
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(
            "a rule is a single SELECT (no UNION, INTERSECT or EXCEPT): write one rule per branch"
                .into(),
        );
    };
    if select.distinct.is_some() {
        return Err(
            "SELECT DISTINCT would keep every row ever seen; use GROUP BY the key instead".into(),
        );
    }
    let [from] = select.from.as_slice() else {
        return Err("FROM must name exactly one pipeline".into());
    };
    if !from.joins.is_empty() {
        return Err("joins are not supported in rules yet: a rule reads one pipeline".into());
    }
    let source = match &from.relation {
        TableFactor::Table { name, args, .. } if args.is_none() && name.0.len() == 1 => {
            match &name.0[0] {
                ObjectNamePart::Identifier(ident) => ident.value.clone(),
                _ => return Err("FROM must name a pipeline".into()),
            }
        }
        TableFactor::Table { name, .. } => {
            return Err(format!(
                "FROM `{name}`: name a pipeline of [ingest.pipelines] (one bare name)"
            ));
        }
        _ => return Err("FROM must name a pipeline of [ingest.pipelines]".into()),
    };
    if !select.named_window.is_empty() || select.qualify.is_some() {
        return Err("window functions (OVER, QUALIFY) are not supported in rules".into());
    }

    // Every expression of the statement: subqueries, window functions and aggregates.
    let mut found = Found::default();
    if let ControlFlow::Break(reason) = statement.visit(&mut found) {
        return Err(reason);
    }

    let group_by = match &select.group_by {
        GroupByExpr::All(_) => {
            return Err("GROUP BY ALL is not supported in rules: name the key".into());
        }
        GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err("ROLLUP, CUBE and GROUPING SETS are not supported in rules".into());
            }
            exprs
        }
    };
    let mut window = None;
    let mut window_at = None;
    for (i, expr) in group_by.iter().enumerate() {
        if let Expr::Function(function) = expr
            && let Some(name) = function_name(&function.name)
        {
            if name == "date_bin" {
                return Err("GROUP BY date_bin(...) never closes its bins; group by \
                     TUMBLE(time, INTERVAL '...') for windows that give their result when they end"
                    .into());
            }
            if TIME_WINDOWS.contains(&name.as_str()) {
                if window.is_some() {
                    return Err("a rule groups by one time window at most".into());
                }
                window = Some(time_window(&name, function)?);
                window_at = Some(i);
            }
        }
    }
    let grouped = !group_by.is_empty() || found.aggregates || select.having.is_some();
    if grouped && group_by.is_empty() {
        return Err(format!(
            "a rule that aggregates needs GROUP BY its key (`{key}`): its state is kept per key"
        ));
    }

    // Output columns: the key among them, none named like the alert's own fields.
    let mut names = Vec::new();
    let mut key_expr = None;
    let mut wildcard = false;
    for item in &select.projection {
        let (name, expr) = match item {
            SelectItem::UnnamedExpr(expr) => (output_name(expr), Some(expr)),
            SelectItem::ExprWithAlias { expr, alias } => (Some(alias.value.clone()), Some(expr)),
            _ => {
                wildcard = true;
                (None, None)
            }
        };
        if let Some(name) = name {
            if ALERT_FIELDS.contains(&name.as_str()) {
                return Err(format!(
                    "the output column `{name}` is reserved for the alert's own fields ({}): \
                     rename it with AS",
                    ALERT_FIELDS.join(", ")
                ));
            }
            if name == key {
                key_expr = expr;
            }
            names.push(name);
        }
    }
    if grouped && wildcard {
        return Err("SELECT * cannot be used with GROUP BY: name the columns".into());
    }
    match key_expr {
        None if !wildcard => {
            return Err(format!(
                "key `{key}` is not an output column of the rule's SELECT (it has {})",
                names.join(", ")
            ));
        }
        Some(expr) if grouped => {
            let by_key = group_by
                .iter()
                .any(|group| group == expr || output_name(group).is_some_and(|name| name == key));
            if !by_key {
                return Err(format!(
                    "key `{key}` must be one of the GROUP BY expressions: state is kept per key"
                ));
            }
        }
        _ => {}
    }
    let sql = match window_at {
        None => sql.to_string(),
        Some(at) => {
            // The window call becomes the two columns it stands for, which the sidecar fills
            // in per window.
            let mut statement = statement.clone();
            if let Statement::Query(query) = &mut statement
                && let SetExpr::Select(select) = query.body.as_mut()
                && let GroupByExpr::Expressions(exprs, _) = &mut select.group_by
            {
                let columns = WINDOW_COLUMNS.map(|name| Expr::Identifier(name.into()));
                exprs.splice(at..=at, columns);
            }
            statement.to_string()
        }
    };
    let kind = match (&window, grouped) {
        (Some(_), _) => RuleKind::Windowed,
        (None, true) => RuleKind::Grouped,
        (None, false) => RuleKind::PerRecord,
    };
    Ok(RuleShape {
        source,
        kind,
        window,
        sql,
    })
}

/// The window of `TUMBLE(time, size)`, `HOP(time, slide, size)` or `SESSION(time, gap)`.
fn time_window(name: &str, function: &sqlparser::ast::Function) -> Result<TimeWindow, String> {
    let usage = match name {
        "tumble" => "TUMBLE(time, INTERVAL '1' MINUTE)",
        "hop" => "HOP(time, slide, size), e.g. HOP(time, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)",
        _ => "SESSION(time, gap), e.g. SESSION(time, INTERVAL '30' SECOND)",
    };
    let arguments: Vec<&Expr> = match &function.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|arg| match arg {
                sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(
                    expr,
                )) => Ok(expr),
                _ => Err(format!("write the window as {usage}")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("write the window as {usage}")),
    };
    let want = if name == "hop" { 3 } else { 2 };
    if arguments.len() != want {
        return Err(format!("write the window as {usage}"));
    }
    let durations = arguments[1..]
        .iter()
        .map(|expr| interval(expr).map_err(|reason| format!("{name}: {reason}; write {usage}")))
        .collect::<Result<Vec<_>, _>>()?;
    let kind = match name {
        "tumble" => WindowKind::Tumble { size: durations[0] },
        "hop" => {
            let (slide, size) = (durations[0], durations[1]);
            if size < slide {
                return Err(format!(
                    "hop: the size ({size:?}) is shorter than the slide ({slide:?}), so some \
                     records would fall in no window; write {usage}"
                ));
            }
            if size.as_millis() / slide.as_millis().max(1) > MAX_HOPS as u128 {
                return Err(format!(
                    "hop: a record would fall in more than {MAX_HOPS} windows; use a longer slide"
                ));
            }
            WindowKind::Hop { slide, size }
        }
        _ => WindowKind::Session { gap: durations[0] },
    };
    Ok(TimeWindow {
        kind,
        time: arguments[0].to_string(),
    })
}

/// A positive whole number of milliseconds from `INTERVAL '1' MINUTE`, `INTERVAL '90 seconds'`
/// or a duration string such as '5m'.
fn interval(expr: &Expr) -> Result<Duration, String> {
    let text = |expr: &Expr| match expr {
        Expr::Value(value) => match &value.value {
            sqlparser::ast::Value::SingleQuotedString(text) => Some(text.clone()),
            sqlparser::ast::Value::Number(number, _) => Some(number.clone()),
            _ => None,
        },
        _ => None,
    };
    let duration = match expr {
        Expr::Interval(interval) if interval.last_field.is_none() => {
            let value = text(&interval.value).ok_or("the interval is not a constant")?;
            let value = match &interval.leading_field {
                Some(field) => format!("{value} {field}"),
                None => value,
            };
            interval_text(&value)
        }
        _ => text(expr).and_then(|value| crate::parse_duration(&value)),
    };
    match duration {
        Some(duration) if duration.as_millis() >= 1 => Ok(duration),
        Some(_) => Err(format!("`{expr}` is not a positive interval")),
        None => Err(format!(
            "`{expr}` is not an interval in milliseconds, seconds, minutes, hours or days"
        )),
    }
}

/// `1 minute`, `90 seconds`, `2 HOURS`.
fn interval_text(text: &str) -> Option<Duration> {
    let mut words = text.split_whitespace();
    let number: f64 = words.next()?.parse().ok()?;
    let unit = words.next()?.to_lowercase();
    if words.next().is_some() || !number.is_finite() || number < 0.0 {
        return None;
    }
    let seconds = match unit.as_str() {
        "ms" | "millisecond" | "milliseconds" => number / 1000.0,
        "s" | "sec" | "second" | "seconds" => number,
        "min" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        "d" | "day" | "days" => number * 86400.0,
        _ => return None,
    };
    Some(Duration::from_millis((seconds * 1000.0).round() as u64))
}

/// The column name an unaliased expression gets.
fn output_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(ident.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|ident| ident.value.clone()),
        _ => None,
    }
}

fn function_name(name: &sqlparser::ast::ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(ident) => Some(ident.value.to_lowercase()),
        _ => None,
    }
}

/// Walks a rule's expressions, stopping at the first construct a rule cannot have.
#[derive(Default)]
struct Found {
    aggregates: bool,
}

impl Visitor for Found {
    type Break = String;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                ControlFlow::Break("subqueries are not supported in rules".into())
            }
            Expr::Function(function) => {
                let Some(name) = function_name(&function.name) else {
                    return ControlFlow::Continue(());
                };
                if function.over.is_some() {
                    return ControlFlow::Break(format!(
                        "window functions (`{name}(...) OVER`) are not supported in rules"
                    ));
                }
                if OTHER_AGGREGATES.contains(&name.as_str()) {
                    return ControlFlow::Break(format!(
                        "the aggregate `{name}` is not kept incrementally; rules have COUNT, \
                         COUNT(DISTINCT), SUM, AVG, MIN and MAX"
                    ));
                }
                if INCREMENTAL_AGGREGATES.contains(&name.as_str()) {
                    self.aggregates = true;
                    if let FunctionArguments::List(list) = &function.args
                        && list.duplicate_treatment
                            == Some(sqlparser::ast::DuplicateTreatment::Distinct)
                        && name != "count"
                    {
                        return ControlFlow::Break(format!(
                            "`{name}(DISTINCT ...)` is not supported in rules; only COUNT takes \
                             DISTINCT"
                        ));
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETECTIVE: &str = "SELECT visitor_id, COUNT(DISTINCT cat_id) AS cats_liked \
        FROM cat_interactions WHERE interaction_type = 'like' \
        GROUP BY visitor_id HAVING COUNT(DISTINCT cat_id) > 3";

    #[test]
    fn the_scenario_rules_are_accepted() {
        assert_eq!(
            analyze(DETECTIVE, "visitor_id"),
            Ok(RuleShape {
                source: "cat_interactions".into(),
                kind: RuleKind::Grouped,
                window: None,
                sql: DETECTIVE.into(),
            })
        );
        let guardian = "SELECT cat_id, 'LOW_ACTIVITY' AS alert_type, activity_level \
                 FROM cat_wellness WHERE activity_level < 2";
        assert_eq!(
            analyze(guardian, "cat_id"),
            Ok(RuleShape {
                source: "cat_wellness".into(),
                kind: RuleKind::PerRecord,
                window: None,
                sql: guardian.into(),
            })
        );
        assert!(
            analyze(
                "SELECT * FROM cat_wellness WHERE hours_since_last_drink > 8",
                "cat_id"
            )
            .is_ok()
        );
    }

    #[test]
    fn window_functions_become_window_columns_with_their_durations() {
        let shape = analyze(
            "SELECT cat_id, window_start, avg(body_temp_c) AS temp FROM cat_wellness \
             GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), cat_id HAVING avg(body_temp_c) > 39",
            "cat_id",
        )
        .unwrap();
        assert_eq!(shape.kind, RuleKind::Windowed);
        assert_eq!(
            shape.window,
            Some(TimeWindow {
                kind: WindowKind::Tumble {
                    size: Duration::from_secs(60)
                },
                time: "event_time".into(),
            })
        );
        assert!(
            shape
                .sql
                .contains("GROUP BY window_start, window_end, cat_id HAVING"),
            "{}",
            shape.sql
        );
        let window = |sql: &str| analyze(sql, "k").unwrap().window.unwrap().kind;
        assert_eq!(
            window(
                "SELECT k, count(*) FROM s GROUP BY k, \
                 hop(to_timestamp(ts), INTERVAL '30 seconds', INTERVAL '2' MINUTES)"
            ),
            WindowKind::Hop {
                slide: Duration::from_secs(30),
                size: Duration::from_secs(120)
            }
        );
        assert_eq!(
            window("SELECT k, count(*) FROM s GROUP BY k, session(ts, '500ms')"),
            WindowKind::Session {
                gap: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn rules_that_cannot_run_on_a_stream_are_refused_with_the_reason() {
        let refused = |sql: &str, key: &str, reason: &str| {
            let error = analyze(sql, key).expect_err(sql);
            assert!(error.contains(reason), "{sql}: {error}");
        };
        refused(
            "SELECT cat_id FROM cat_wellness ORDER BY cat_id",
            "cat_id",
            "ORDER BY",
        );
        refused("SELECT cat_id FROM cat_wellness LIMIT 3", "cat_id", "LIMIT");
        refused(
            "SELECT a.cat_id FROM w a JOIN x b ON a.cat_id = b.cat_id",
            "cat_id",
            "joins",
        );
        refused("SELECT cat_id FROM w, x", "cat_id", "exactly one pipeline");
        refused("SELECT cat_id FROM s.w", "cat_id", "one bare name");
        refused(
            "SELECT cat_id FROM w WHERE cat_id IN (SELECT 1)",
            "cat_id",
            "subqueries",
        );
        refused(
            "SELECT cat_id, rank() OVER (ORDER BY x) FROM w",
            "cat_id",
            "window functions",
        );
        refused("SELECT DISTINCT cat_id FROM w", "cat_id", "DISTINCT");
        refused("SELECT count(*) AS n FROM w", "n", "GROUP BY its key");
        refused(
            "SELECT cat_id, median(x) FROM w GROUP BY cat_id",
            "cat_id",
            "`median`",
        );
        refused(
            "SELECT cat_id, sum(DISTINCT x) FROM w GROUP BY cat_id",
            "cat_id",
            "only COUNT",
        );
        refused(
            "SELECT cat_id, count(*) FROM w GROUP BY cat_id, name",
            "visitor_id",
            "not an output column",
        );
        refused(
            "SELECT name, cat_id FROM w GROUP BY name",
            "cat_id",
            "GROUP BY expressions",
        );
        refused("SELECT cat_id, 1 AS rule FROM w", "cat_id", "reserved");
        refused(
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, date_bin(INTERVAL '1' MINUTE, ts)",
            "cat_id",
            "TUMBLE",
        );
        refused(
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, tumble(ts)",
            "cat_id",
            "TUMBLE(time, INTERVAL '1' MINUTE)",
        );
        refused(
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, tumble(ts, INTERVAL '1' MONTH)",
            "cat_id",
            "not an interval",
        );
        refused(
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, hop(ts, INTERVAL '5' MINUTE, INTERVAL '1' MINUTE)",
            "cat_id",
            "shorter than the slide",
        );
        refused(
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, hop(ts, '1s', '1h')",
            "cat_id",
            "more than 100 windows",
        );
        refused(
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, tumble(ts, '1m'), session(ts, '1m')",
            "cat_id",
            "one time window",
        );
        refused("SELECT 1; SELECT 2", "x", "one SELECT statement");
        refused(
            "SELECT cat_id FROM w UNION SELECT cat_id FROM v",
            "cat_id",
            "UNION",
        );
        refused("INSERT INTO t VALUES (1)", "x", "SELECT statement");
        refused("SELEC cat_id", "x", "does not parse");
    }
}
