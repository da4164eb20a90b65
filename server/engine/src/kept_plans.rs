//! Prepared queries that read only Postgres tables keep their physical plan, parameters
//! unbound, and run it again with each execution's values: a point lookup by key through a
//! prepared statement then costs a Bind and a Postgres round trip, not a trip through
//! DataFusion's analyzer, optimizer and physical planner every time.
//!
//! A kept plan must give what planning afresh would. So only plans whose every operator can
//! run again are kept (DataFusion's dynamic filters are set once per plan, so a plan with a
//! join or top-n feeding them is not), only immutable functions may appear (`now()` is folded
//! while planning), and every leaf is a Postgres scan: an Iceberg scan pins the snapshot it
//! planned with. A Postgres scan confirms the table's shape as it starts and fails before any
//! row if the table changed; the plan is then dropped and the statement planned again.
//! Statements that change the session (SET, USE, DDL) and catalog changes drop kept plans too.
//!
//! Parameters are compared with columns in the statements sent to Postgres (`id = $1`); where
//! a parameter is used anywhere else, physical planning fails on it and the statement is run
//! the usual way, with its values bound before planning. A statement with parameters is kept
//! only if it filters, projects, and sorts or limits: the usual way sends aggregates, joins
//! and top-n (a sort with a limit) to Postgres whole, which cannot be done with values left
//! out.
//!
//! Clients that never name their statements (psycopg's first five runs of a statement, most
//! ORMs, psql) send the same text again and again. A session remembers its recent queries that
//! may keep their plan ([`RecentQueries`]), so the same text parsed again is the same prepared
//! statement, and from its second run on runs its kept plan. The same rules drop them: a
//! statement that changes the session forgets them all, a catalog change makes them stale, and
//! a statement whose table changed is forgotten and planned afresh.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use fjord_postgres::{PostgresScanExec, PostgresTable, StatementParameters};

/// Operators that run again from a fresh copy of their state (`reset_plan_states`) with the
/// same result as a new plan, given scans that can.
const RERUNNABLE: &[&str] = &[
    "PostgresScanExec",
    "CooperativeExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "RepartitionExec",
    "AggregateExec",
    "SortExec",
    "SortPreservingMergeExec",
    "GlobalLimitExec",
    "LocalLimitExec",
];

/// What a prepared statement knows about keeping its plan.
#[derive(Debug, Default)]
pub(crate) enum Kept {
    /// Not tried yet: the statement has not run twice.
    #[default]
    Untried,
    Plan(Arc<KeptPlan>),
    /// The statement cannot keep a plan.
    Never,
}

/// Distinct query texts a session remembers; more clear the set and start again.
const RECENT_CAPACITY: usize = 64;

/// A session's recent queries that may keep their plan, by text, each with the catalogs'
/// generation it was planned under.
#[derive(Debug, Default)]
pub(crate) struct RecentQueries {
    queries: HashMap<Arc<str>, (u64, crate::Prepared)>,
}

impl RecentQueries {
    /// The statement planned from `sql` before, if the catalogs have not changed since.
    pub(crate) fn get(&self, sql: &str, catalogs: u64) -> Option<crate::Prepared> {
        match self.queries.get(sql) {
            Some((generation, prepared)) if *generation == catalogs => Some(prepared.clone()),
            _ => None,
        }
    }

    pub(crate) fn insert(&mut self, sql: Arc<str>, catalogs: u64, prepared: crate::Prepared) {
        if self.queries.len() >= RECENT_CAPACITY && !self.queries.contains_key(&sql) {
            self.queries.clear();
        }
        self.queries.insert(sql, (catalogs, prepared));
    }

    pub(crate) fn remove(&mut self, sql: &str) {
        self.queries.remove(sql);
    }

    pub(crate) fn clear(&mut self) {
        self.queries.clear();
    }
}

/// Which settings and catalogs a kept plan was made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation {
    pub(crate) session: u64,
    pub(crate) catalogs: u64,
}

/// A physical plan ready to run again.
#[derive(Debug)]
pub(crate) struct KeptPlan {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    pub(crate) generation: Generation,
}

impl KeptPlan {
    /// `plan` if every operator in it can run again (see the module documentation).
    pub(crate) fn new(
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        generation: Generation,
    ) -> Option<KeptPlan> {
        let mut rerunnable = true;
        let _ = plan.apply(|node| {
            let scan = node.as_any().downcast_ref::<PostgresScanExec>();
            rerunnable = RERUNNABLE.contains(&node.name())
                && match scan {
                    Some(scan) => scan.can_run_again(),
                    None => !node.children().is_empty(),
                };
            Ok(if rerunnable {
                TreeNodeRecursion::Continue
            } else {
                TreeNodeRecursion::Stop
            })
        });
        rerunnable.then_some(KeptPlan {
            plan,
            task,
            generation,
        })
    }

    /// Whether every scan of the plan confirms its table's shape as it starts, so that each
    /// run sees a change. A plan made on shapes read just then does not, and is not kept.
    pub(crate) fn confirms_shapes(&self) -> bool {
        let mut confirms = true;
        let _ = self.plan.apply(|node| {
            if let Some(scan) = node.as_any().downcast_ref::<PostgresScanExec>() {
                confirms &= scan.confirms_shapes();
            }
            Ok(TreeNodeRecursion::Continue)
        });
        confirms
    }

    /// Runs the plan again with `parameters`, from a fresh copy of its operators' state.
    pub(crate) fn execute(
        &self,
        parameters: Option<ParamValues>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let plan = reset_plan_states(self.plan.clone())?;
        let task = match parameters {
            // The operators kept hold their functions already: the task needs the session's
            // settings and memory, and the values for the scans.
            Some(values) => Arc::new(TaskContext::new(
                None,
                self.task.session_id(),
                self.task
                    .session_config()
                    .clone()
                    .with_extension(Arc::new(StatementParameters(values))),
                HashMap::new(),
                HashMap::new(),
                HashMap::new(),
                self.task.runtime_env(),
            )),
            None => self.task.clone(),
        };
        execute_stream(plan, task)
    }
}

/// Whether a prepared query's logical `plan` may keep its physical plan: it reads only
/// Postgres tables, calls only immutable functions, and, if it has parameters, only filters,
/// projects, and sorts or limits (not both).
pub(crate) fn may_keep(plan: &LogicalPlan) -> bool {
    let mut parameters = false;
    let mut aggregates_or_joins = false;
    let mut sorts = false;
    let mut limits = false;
    let mut keep = true;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                keep = datafusion::datasource::source_as_provider(&scan.source)
                    .is_ok_and(|provider| provider.as_any().is::<PostgresTable>());
            }
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            }
            LogicalPlan::Limit(_) => limits = true,
            LogicalPlan::Sort(sort) => {
                sorts = true;
                limits |= sort.fetch.is_some();
            }
            LogicalPlan::Aggregate(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Union(_) => aggregates_or_joins = true,
            _ => keep = false,
        }
        if keep {
            let _ = node.apply_expressions(|expression| {
                expression.apply(|inner| {
                    match inner {
                        Expr::Placeholder(_) => parameters = true,
                        Expr::ScalarVariable(..) => keep = false,
                        Expr::ScalarFunction(function) => {
                            keep &= function.func.signature().volatility == Volatility::Immutable
                        }
                        _ => {}
                    }
                    Ok(if keep {
                        TreeNodeRecursion::Continue
                    } else {
                        TreeNodeRecursion::Stop
                    })
                })
            });
        }
        Ok(if keep {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    // With a sort, a limit makes a top-n, which the usual way sends to Postgres.
    keep && !(parameters && (aggregates_or_joins || (sorts && limits)))
}
