//! A required (NOT NULL) column of an Iceberg table refuses nulls, as PostgreSQL's NOT NULL
//! constraint does: `23502 null value in column "c" of relation "t" violates not-null
//! constraint`, and nothing is written.
//!
//! DataFusion only notices a null bound for a non-nullable column where a batch is built with the
//! table's schema (a VALUES row), with a message naming `column1`; a null computed by a query
//! (`INSERT ... SELECT CASE ... END`) passes unchecked into the Parquet writer, which then
//! writes a required column with gaps in it. So every insert's rows pass through
//! `fjord_not_null(value)` for each required column their input could leave null: the function
//! checks the batch and returns it unchanged, typed non-nullable.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Values, Volatility, WriteOp,
};

use crate::error::{EngineError, sqlstate};

/// `plan` with its rows checked against the target's required columns, if it is an insert into
/// a table that has any the input could leave null; otherwise `plan` as it was.
pub(crate) fn check_required_columns(plan: LogicalPlan) -> Result<LogicalPlan> {
    let LogicalPlan::Dml(dml) = &plan else {
        return Ok(plan);
    };
    if !matches!(dml.op, WriteOp::Insert(_)) {
        return Ok(plan);
    }
    let target = dml.target.schema();
    let input = &nullable_values(dml.input.as_ref().clone())?;
    let fields = input.schema().fields();
    let unchecked =
        |(have, want): (&FieldRef, &FieldRef)| have.is_nullable() && !want.is_nullable();
    if fields.len() != target.fields().len() || !fields.iter().zip(target.fields()).any(unchecked) {
        return Ok(plan);
    }
    let relation = dml.table_name.table().to_string();
    map_inserted_columns(dml, input, |column, have, want| {
        if unchecked((have, want)) {
            let check = ScalarUDF::new_from_impl(NotNull {
                column: want.name().clone(),
                relation: relation.clone(),
                signature: Signature::any(1, Volatility::Immutable),
            });
            Arc::new(check).call(vec![column]).alias(have.name())
        } else {
            column
        }
    })
}

/// The insert `dml` with `input` as its rows, each column passed through `map` (given the
/// column, its field and the target table's field in the same position).
pub(crate) fn map_inserted_columns(
    dml: &DmlStatement,
    input: &LogicalPlan,
    map: impl Fn(Expr, &FieldRef, &FieldRef) -> Expr,
) -> Result<LogicalPlan> {
    let columns = input
        .schema()
        .iter()
        .zip(dml.target.schema().fields())
        .map(|((qualifier, have), want)| {
            map(Expr::Column(Column::from((qualifier, have))), have, want)
        })
        .collect::<Vec<_>>();
    let projected = LogicalPlanBuilder::from(input.clone())
        .project(columns)?
        .build()?;
    Ok(LogicalPlan::Dml(DmlStatement {
        input: Arc::new(projected),
        ..dml.clone()
    }))
}

/// `plan` with the rows of its VALUES lists typed nullable. DataFusion types an INSERT's VALUES
/// list with the target table's fields, non-nullable ones included, so a NULL there would fail
/// where the batch is built, with a message naming `column1` instead of the table's column.
fn nullable_values(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut changed = false;
    plan.transform_up(|node| {
        if let LogicalPlan::Values(values) = &node
            && values
                .schema
                .fields()
                .iter()
                .any(|field| !field.is_nullable())
        {
            changed = true;
            let fields = values
                .schema
                .iter()
                .map(|(qualifier, field)| {
                    (
                        qualifier.cloned(),
                        Arc::new(field.as_ref().clone().with_nullable(true)),
                    )
                })
                .collect::<Vec<_>>();
            let schema = DFSchema::new_with_metadata(fields, values.schema.metadata().clone())?;
            return Ok(Transformed::yes(LogicalPlan::Values(Values {
                schema: Arc::new(schema),
                values: values.values.clone(),
            })));
        }
        if changed {
            node.recompute_schema().map(Transformed::yes)
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|transformed| transformed.data)
}

/// `fjord_not_null(value)`: `value`, or error 23502 naming the column if a row is null.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NotNull {
    column: String,
    relation: String,
    signature: Signature,
}

impl ScalarUDFImpl for NotNull {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "fjord_not_null"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            self.name(),
            args.arg_fields[0].data_type().clone(),
            false,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let value =
            args.args.into_iter().next().ok_or_else(|| {
                DataFusionError::Internal("fjord_not_null takes one argument".into())
            })?;
        let has_null = match &value {
            ColumnarValue::Array(array) => array.logical_null_count() > 0,
            ColumnarValue::Scalar(scalar) => scalar.is_null() && args.number_rows > 0,
        };
        if has_null {
            return Err(DataFusionError::External(Box::new(EngineError::new(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    self.column, self.relation
                ),
            ))));
        }
        Ok(value)
    }
}
