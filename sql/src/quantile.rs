//! `quantile_cont(x, p)`: the exact quantile with linear interpolation, as DuckDB's
//! function of that name and numpy's `percentile(method="linear")` compute it.
//!
//! Why our own: DataFusion 55's `percentile_cont` (which it also answers to as
//! `quantile_cont`) truncates its interpolation weight to six decimals (apache/datafusion
//! issue 25266), so a p90 could be off by up to a millionth of the gap between its two
//! neighbours; docs/metrics.md promises exact quantiles. The engine registers this aggregate
//! under DuckDB's name in every session it creates (which replaces DataFusion's alias),
//! so the metric definitions keep running unchanged in DuckDB (`chatlake bench metrics`).
//!
//! When it can go: once a DataFusion release contains the fix of issue 25266 (its
//! `percentile_cont` interpolating with the full f64 weight), drop the registration in
//! `engine.rs` and this file; the definitions' `quantile_cont(x, p)` then resolves to
//! DataFusion's own alias. The test `quantile_cont_is_exact` tells: it checks that
//! `percentile_cont` still differs, and fails once a DataFusion upgrade makes it exact.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListArray, RecordBatch};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Signature, Volatility,
};
use std::sync::Arc;

/// The aggregate `quantile_cont(x, p)`: `p` a literal in [0, 1], NULLs of `x` ignored,
/// NULL for a group without values.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct QuantileCont {
    signature: Signature,
}

impl Default for QuantileCont {
    fn default() -> Self {
        QuantileCont {
            signature: Signature::uniform(2, vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

/// The aggregate, ready to register.
pub fn quantile_cont() -> AggregateUDF {
    AggregateUDF::from(QuantileCont::default())
}

fn plan_error(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

/// The literal `p` of a call.
fn fraction(args: &AccumulatorArgs) -> Result<f64> {
    let expr = args
        .exprs
        .get(1)
        .ok_or_else(|| plan_error("quantile_cont takes two arguments: (value, fraction)".into()))?;
    let not_literal =
        || plan_error("quantile_cont's fraction must be a literal between 0 and 1".into());
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let value = match expr.evaluate(&empty).map_err(|_| not_literal())? {
        ColumnarValue::Scalar(s) => s,
        ColumnarValue::Array(_) => return Err(not_literal()),
    };
    match value {
        ScalarValue::Float64(Some(p)) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(not_literal()),
    }
}

impl AggregateUDFImpl for QuantileCont {
    fn name(&self) -> &str {
        "quantile_cont"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Field::new_list_field(DataType::Float64, true);
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            DataType::List(Arc::new(item)),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return Err(DataFusionError::NotImplemented(
                "quantile_cont(DISTINCT …)".into(),
            ));
        }
        Ok(Box::new(QuantileAccumulator {
            values: Vec::new(),
            p: fraction(&args)?,
        }))
    }
}

/// Every value of the group, kept until the end.
#[derive(Debug)]
struct QuantileAccumulator {
    values: Vec<f64>,
    p: f64,
}

fn floats(array: &ArrayRef) -> Result<&Float64Array> {
    array.as_primitive_opt::<Float64Type>().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "quantile_cont expects Float64 values, got {}",
            array.data_type()
        ))
    })
}

impl Accumulator for QuantileAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            self.values.extend(floats(v)?.iter().flatten());
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(state) = states.first() else {
            return Ok(());
        };
        let lists = state.as_list_opt::<i32>().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "quantile_cont's state must be a list, got {}",
                state.data_type()
            ))
        })?;
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                let part = lists.value(i);
                self.values.extend(floats(&part)?.iter().flatten());
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = Float64Array::from(std::mem::take(&mut self.values));
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::from_lengths([values.len()]),
            Arc::new(values),
            None,
        )?;
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.values.sort_unstable_by(f64::total_cmp);
        Ok(ScalarValue::Float64(linear_quantile(&self.values, self.p)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<f64>()
    }
}

/// The quantile `p` of `sorted` with linear interpolation between the two closest
/// ranks: `h = (n − 1)·p`, `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋ + 1] − x[⌊h⌋])`, in f64 as DuckDB
/// computes it (numpy's `linear` method agrees to the last bit or two).
pub fn linear_quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * p;
    let lo = h.floor();
    // `h` is in [0, n − 1], so `lo` is a valid index (clamped against rounding).
    let i = (lo as usize).min(last);
    let below = sorted[i];
    match sorted.get(i + 1) {
        Some(above) if h > lo => Some(below + (h - lo) * (above - below)),
        _ => Some(below),
    }
}

#[cfg(test)]
mod tests {
    use super::linear_quantile;

    /// `quantile_cont` in a session of the engine is ours and exact, where DataFusion's
    /// `percentile_cont` truncates the weight. When the second assertion fails,
    /// DataFusion has fixed issue 25266: remove this module and its registration.
    #[tokio::test]
    async fn quantile_cont_is_exact() {
        let ctx = datafusion::prelude::SessionContext::new();
        crate::engine::register_portable_functions(&ctx);
        // Ten irregular values: h = 9 · 0.9 = 8.1, a weight of 0.1 (0.099999 truncated).
        let xs: Vec<f64> = (0..10_i32)
            .map(|i| f64::from(i * i * 7919 + 13) * 1.125)
            .collect();
        let values = xs
            .iter()
            .map(|x| format!("({x:?})"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT quantile_cont(x, 0.9) AS ours, quantile_cont(x, 0.5) AS median, \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS theirs \
             FROM (VALUES {values}) AS t(x)"
        );
        let batches = ctx
            .sql(&sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let col = |name: &str| {
            use datafusion::arrow::array::AsArray;
            batches[0]
                .column_by_name(name)
                .expect(name)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0)
        };
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(Some(col("ours")), linear_quantile(&sorted, 0.9));
        assert_eq!(Some(col("median")), linear_quantile(&sorted, 0.5));
        assert_ne!(
            col("theirs"),
            col("ours"),
            "DataFusion's percentile_cont is exact now: quantile.rs can go"
        );
    }

    #[test]
    fn interpolates_between_the_closest_ranks() {
        assert_eq!(linear_quantile(&[], 0.5), None);
        assert_eq!(linear_quantile(&[7.0], 0.9), Some(7.0));
        // h = 3 · 0.5 = 1.5: halfway between 2 and 4.
        assert_eq!(linear_quantile(&[1.0, 2.0, 4.0, 8.0], 0.5), Some(3.0));
        // h = 3 · 1 = 3: the largest; h = 0: the smallest.
        assert_eq!(linear_quantile(&[1.0, 2.0, 4.0, 8.0], 1.0), Some(8.0));
        assert_eq!(linear_quantile(&[1.0, 2.0, 4.0, 8.0], 0.0), Some(1.0));
        // h = 9 · 0.9 = 8.1: x[8] + 0.1·(x[9] − x[8]), with the weight as f64 computes it
        // (DataFusion 55's percentile_cont would use 0.099999).
        let xs: Vec<f64> = (0..10).map(|i| f64::from(i * i) * 1000.0).collect();
        let h = 9.0 * 0.9_f64;
        let want = xs[8] + (h - h.floor()) * (xs[9] - xs[8]);
        assert_eq!(linear_quantile(&xs, 0.9), Some(want));
        assert!((want - (64_000.0 + 0.1 * 17_000.0)).abs() < 1e-9, "{want}");
    }
}
