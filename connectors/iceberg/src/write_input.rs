//! The input of an insert, kept apart from iceberg-datafusion's partition projection.
//!
//! iceberg-datafusion computes partition values with a physical expression that reads the
//! columns of its input batch by position but declares no child expressions. When DataFusion's
//! projection pushdown merges that projection with the insert's own (which fills the columns an
//! `INSERT INTO t (a, b)` leaves out), the expression is handed the unprojected rows and
//! partitions by the wrong column, or fails ("unsupported data type Utf8"). This node passes
//! batches through unchanged and refuses to swap with a projection, so the two stay separate.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

#[derive(Debug)]
pub(crate) struct WriteInputExec {
    input: Arc<dyn ExecutionPlan>,
}

impl WriteInputExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        WriteInputExec { input }
    }
}

impl DisplayAs for WriteInputExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WriteInputExec")
    }
}

impl ExecutionPlan for WriteInputExec {
    fn name(&self) -> &str {
        "WriteInputExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(WriteInputExec::new(children.remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
