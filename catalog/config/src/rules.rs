//! `[ingest.rules.<name>]`: SQL alert rules that the sidecar evaluates continuously over the
//! records of one pipeline, and the check that a rule's SQL can be evaluated that way.
//!
//! The check is structural (it runs where no records have been seen, so column types are not
//! known yet): one SELECT over one pipeline, no joins, subqueries, ordering, limits or window
//! functions, and aggregates only of the kinds that are kept per key incrementally. The
//! sidecar plans the rule against the stream's columns when it starts.

use std::ops::ControlFlow;

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

/// Window functions over event time, which rules do not have yet.
const TIME_WINDOWS: [&str; 4] = ["tumble", "hop", "session", "date_bin"];

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
}

/// What the structural check learned about a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleShape {
    /// The pipeline named in FROM.
    pub source: String,
    pub kind: RuleKind,
}

impl RuleConfig {
    pub fn cooldown(&self) -> Option<std::time::Duration> {
        self.cooldown.as_deref().and_then(crate::parse_duration)
    }

    pub fn state_ttl(&self) -> std::time::Duration {
        crate::parse_duration(&self.state_ttl).unwrap_or(std::time::Duration::from_secs(86400))
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
    for expr in group_by {
        if let Expr::Function(function) = expr
            && let Some(name) = function_name(&function.name)
            && TIME_WINDOWS.contains(&name.as_str())
        {
            return Err(format!(
                "time windows (`{name}`) are not supported in rules yet"
            ));
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
    Ok(RuleShape {
        source,
        kind: if grouped {
            RuleKind::Grouped
        } else {
            RuleKind::PerRecord
        },
    })
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
                kind: RuleKind::Grouped
            })
        );
        assert_eq!(
            analyze(
                "SELECT cat_id, 'LOW_ACTIVITY' AS alert_type, activity_level \
                 FROM cat_wellness WHERE activity_level < 2",
                "cat_id"
            ),
            Ok(RuleShape {
                source: "cat_wellness".into(),
                kind: RuleKind::PerRecord
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
            "SELECT cat_id, avg(t) FROM w GROUP BY cat_id, tumble(event_time, INTERVAL '1' MINUTE)",
            "cat_id",
            "time windows",
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
