//! Statements that read no table and call only immutable functions, such as `SELECT 1` and the
//! other health checks that connection pools and BI tools send before every use of a
//! connection. Their physical plan stays valid for as long as the session's settings do, so a
//! session plans each one once and runs the same plan again (reset, as DataFusion allows for
//! plan reuse) instead of parsing, planning and optimizing it on every call.
//!
//! Anything that could make a reused plan stale is excluded: table scans (a plan pins the
//! snapshots it read), placeholders, stable and volatile functions (`now()`, `random()`),
//! subqueries, joins and sorts. Every statement that is not a query (SET, USE, DDL, ...) clears
//! the session's plans, so settings that planning read are never out of date.
//!
//! Such a statement gives the same rows every time it runs in a session, so a plan also keeps
//! the rows of its first complete run when they are small, and answers with them after that:
//! a health check costs a copy of a few pointers instead of running operators again. A run that
//! fails, or is dropped before its end, keeps nothing.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ExecutionPlan, RecordBatchStream, SendableRecordBatchStream, execute_stream,
};
use futures::{Stream, StreamExt};

/// Distinct statements a session keeps; more clear the set and start again.
const CAPACITY: usize = 64;

/// The most memory a plan's kept rows may take; larger results run again each time.
const KEPT_ROWS_BYTES: usize = 64 * 1024;

/// A planned constant statement, ready to run again.
#[derive(Debug)]
pub(crate) struct ConstantPlan {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    /// Result column names as Postgres gives them (see `column_names`).
    names: Option<Arc<[String]>>,
    /// The rows of the first run that ended without error, if they were small.
    rows: OnceLock<Vec<RecordBatch>>,
}

impl ConstantPlan {
    pub(crate) fn new(
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        names: Option<Arc<[String]>>,
    ) -> Self {
        ConstantPlan {
            plan,
            task,
            names,
            rows: OnceLock::new(),
        }
    }

    pub(crate) fn names(&self) -> Option<Arc<[String]>> {
        self.names.clone()
    }

    pub(crate) fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// The statement's rows: those kept from an earlier run, or the plan run again from a
    /// fresh copy of its operators' state (keeping its rows if they are small).
    pub(crate) fn execute(
        self: &Arc<Self>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        if let Some(rows) = self.rows.get() {
            let rows = rows.clone().into_iter().map(Ok);
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                self.schema(),
                futures::stream::iter(rows),
            )));
        }
        let plan = reset_plan_states(self.plan.clone())?;
        Ok(Box::pin(Keeping {
            stream: execute_stream(plan, self.task.clone())?,
            plan: self.clone(),
            rows: Some(Vec::new()),
            bytes: 0,
        }))
    }
}

/// A run's rows on their way to the client, remembered for the plan if the run completes and
/// they fit in [`KEPT_ROWS_BYTES`].
struct Keeping {
    stream: SendableRecordBatchStream,
    plan: Arc<ConstantPlan>,
    /// `None` once the rows cannot be kept (too large, or the run failed).
    rows: Option<Vec<RecordBatch>>,
    bytes: usize,
}

impl Stream for Keeping {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.stream.poll_next_unpin(cx);
        let this = &mut *self;
        match &next {
            Poll::Ready(Some(Ok(batch))) => {
                this.bytes += batch.get_array_memory_size();
                if this.bytes > KEPT_ROWS_BYTES {
                    this.rows = None;
                } else if let Some(rows) = this.rows.as_mut() {
                    rows.push(batch.clone());
                }
            }
            Poll::Ready(Some(Err(_))) => this.rows = None,
            Poll::Ready(None) => {
                if let Some(rows) = this.rows.take() {
                    let _ = this.plan.rows.set(rows);
                }
            }
            Poll::Pending => {}
        }
        next
    }
}

impl RecordBatchStream for Keeping {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}

/// One session's constant plans, by statement text.
#[derive(Debug, Default)]
pub(crate) struct ConstantPlans {
    plans: HashMap<Arc<str>, Arc<ConstantPlan>>,
}

impl ConstantPlans {
    pub(crate) fn get(&self, sql: &str) -> Option<Arc<ConstantPlan>> {
        self.plans.get(sql).cloned()
    }

    pub(crate) fn insert(&mut self, sql: &str, plan: Arc<ConstantPlan>) {
        if self.plans.len() >= CAPACITY {
            self.plans.clear();
        }
        self.plans.insert(Arc::from(sql), plan);
    }

    pub(crate) fn clear(&mut self) {
        self.plans.clear();
    }
}

/// Whether `plan` is a query whose physical plan may run again unchanged.
pub(crate) fn is_constant(plan: &LogicalPlan) -> bool {
    let mut constant = true;
    let _ = plan.apply_with_subqueries(|node| {
        let allowed = matches!(
            node,
            LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::EmptyRelation(_)
                | LogicalPlan::Values(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::Distinct(_)
        );
        if !allowed {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|expression| {
            expression.apply(|inner| {
                let fixed = match inner {
                    Expr::Placeholder(_)
                    | Expr::ScalarVariable(..)
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..) => false,
                    Expr::ScalarFunction(function) => {
                        function.func.signature().volatility == Volatility::Immutable
                    }
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    constant = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })?;
        Ok(if constant {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    constant
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    use super::*;

    async fn plan(sql: &str) -> Arc<ConstantPlan> {
        let context = SessionContext::new();
        let state = context.state();
        let logical = state.create_logical_plan(sql).await.unwrap();
        assert!(is_constant(&logical), "{sql} should be constant");
        let physical = state.create_physical_plan(&logical).await.unwrap();
        Arc::new(ConstantPlan::new(
            physical,
            Arc::new(TaskContext::from(&state)),
            None,
        ))
    }

    async fn run(plan: &Arc<ConstantPlan>) -> datafusion::error::Result<Vec<RecordBatch>> {
        plan.execute()?.try_collect().await
    }

    #[tokio::test]
    async fn small_rows_of_a_complete_run_are_kept_and_answered_again() {
        let plan = plan("SELECT 1 AS one, 'two' AS two UNION ALL SELECT 3, 'four'").await;
        let first = run(&plan).await.unwrap();
        assert!(
            plan.rows.get().is_some(),
            "the first complete run keeps its rows"
        );
        let again = run(&plan).await.unwrap();
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&first)
                .unwrap()
                .to_string(),
            datafusion::arrow::util::pretty::pretty_format_batches(&again)
                .unwrap()
                .to_string()
        );
        assert_eq!(again.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    }

    #[tokio::test]
    async fn large_failed_or_abandoned_runs_keep_nothing() {
        let large = plan("SELECT repeat('x', 100000) AS wide").await;
        run(&large).await.unwrap();
        assert!(
            large.rows.get().is_none(),
            "rows past the limit are not kept"
        );

        let failing =
            plan("SELECT CAST(x AS INT) AS n FROM (VALUES ('not a number')) AS t(x)").await;
        assert!(run(&failing).await.is_err());
        assert!(failing.rows.get().is_none(), "a failed run keeps nothing");

        let abandoned = plan("SELECT 1 AS one").await;
        drop(abandoned.execute().unwrap());
        assert!(
            abandoned.rows.get().is_none(),
            "a dropped run keeps nothing"
        );
        assert_eq!(run(&abandoned).await.unwrap()[0].num_rows(), 1);
        assert!(abandoned.rows.get().is_some());
    }
}
