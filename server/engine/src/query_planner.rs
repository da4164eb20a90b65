//! The physical planner with fjord's own logical nodes: statements pushed whole to a Postgres
//! catalog (`fjord_postgres::PostgresQuery`) become binary COPY reads, and aggregations a plan
//! needs twice are computed once (`shared_subplans`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::Result;
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

#[derive(Debug, Default)]
pub(crate) struct FjordQueryPlanner;

#[async_trait]
impl QueryPlanner for FjordQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(fjord_postgres::PostgresQueryPlanner),
            Arc::new(crate::shared_subplans::SharedSubplanPlanner),
        ])
        .create_physical_plan(logical_plan, session_state)
        .await
    }
}
