//! The input of an insert, kept apart from iceberg-datafusion's partition projection.
//!
//! iceberg-datafusion computes partition values with a physical expression that reads the
//! columns of its input batch by position but declares no child expressions. When DataFusion's
//! projection pushdown merges that projection with the insert's own (which fills the columns an
//! `INSERT INTO t (a, b)` leaves out), the expression is handed the unprojected rows and
//! partitions by the wrong column, or fails ("unsupported data type Utf8"). This node refuses to
//! swap with a projection, so the two stay separate.
//!
//! It also hands the writer strings as `Utf8`: the lake's tables show them as `Utf8View` (see
//! `read`), so that is what an insert's rows arrive as, and iceberg's partition values and
//! Parquet writer take the plain type.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::read;

#[derive(Debug)]
pub(crate) struct WriteInputExec {
    input: Arc<dyn ExecutionPlan>,
    /// The input's schema with views as plain types; `None` when that changes nothing.
    plain: Option<SchemaRef>,
    properties: Arc<PlanProperties>,
}

impl WriteInputExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let schema = input.schema();
        let plain = read::without_views(&schema);
        let (plain, properties) = if plain == *schema {
            (None, input.properties().clone())
        } else {
            let plain = Arc::new(plain);
            let properties = PlanProperties::new(
                EquivalenceProperties::new(plain.clone()),
                input.properties().output_partitioning().clone(),
                input.properties().emission_type,
                input.properties().boundedness,
            );
            (Some(plain), Arc::new(properties))
        };
        WriteInputExec {
            input,
            plain,
            properties,
        }
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
        &self.properties
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
        let input = self.input.execute(partition, context)?;
        let Some(plain) = self.plain.clone() else {
            return Ok(input);
        };
        let schema = plain.clone();
        let batches = input.map(move |batch| {
            let batch = batch?;
            read::conform(batch.columns().to_vec(), batch.num_rows(), &plain)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
