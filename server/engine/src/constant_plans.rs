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

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};

/// Distinct statements a session keeps; more clear the set and start again.
const CAPACITY: usize = 64;

/// A planned constant statement, ready to run again.
#[derive(Debug)]
pub(crate) struct ConstantPlan {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    /// Result column names as Postgres gives them (see `column_names`).
    names: Option<Arc<[String]>>,
}

impl ConstantPlan {
    pub(crate) fn new(
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        names: Option<Arc<[String]>>,
    ) -> Self {
        ConstantPlan { plan, task, names }
    }

    pub(crate) fn names(&self) -> Option<Arc<[String]>> {
        self.names.clone()
    }

    pub(crate) fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.plan.schema()
    }

    /// Runs the plan again, from a fresh copy of its operators' state.
    pub(crate) fn execute(&self) -> datafusion::error::Result<SendableRecordBatchStream> {
        let plan = reset_plan_states(self.plan.clone())?;
        execute_stream(plan, self.task.clone())
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
