//! T5 relative bias (Raffel et al. 2020), causal: a learned scalar per head per bucket of
//! Δ = max(m − n, 0); exact buckets below `num_buckets/2`, log-spaced up to `max_distance`.
//!
//! Sharing: one table for all layers, as in the paper (§2.1: "we share the position embedding
//! parameters across all layers"; Hugging Face computes it in layer 0 and passes it on).

use std::ops::Range;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result};
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct T5Config {
    #[serde(default = "default_buckets")]
    pub num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub max_distance: usize,
}

impl Default for T5Config {
    fn default() -> Self {
        Self { num_buckets: default_buckets(), max_distance: default_max_distance() }
    }
}

/// T5's unidirectional bucket of a distance Δ (negative Δ, the future, maps to bucket 0).
pub fn t5_bucket(delta: i64, num_buckets: usize, max_distance: usize) -> usize {
    let d = delta.max(0) as f64;
    let max_exact = (num_buckets / 2) as f64;
    if d < max_exact {
        return d as usize;
    }
    let large = max_exact
        + ((d / max_exact).ln() / (max_distance as f64 / max_exact).ln() * (num_buckets as f64 - max_exact))
            .floor();
    (large as usize).min(num_buckets - 1)
}

#[derive(Module, Debug)]
pub struct T5Bias {
    /// `[heads, buckets]`
    table: Param<Tensor<2>>,
    #[module(skip)]
    num_buckets: usize,
    #[module(skip)]
    max_distance: usize,
    #[module(skip)]
    ctx: EncodingContext,
}

impl EncodingKind for T5Config {
    const KIND: &'static str = "t5";
    const SUMMARY: &'static str = "learned per-head bias per log-spaced distance bucket (Raffel et al. 2020)";
    type Module = T5Bias;

    fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        if ctx.n_heads == 0 {
            return Err(ConfigError::new("n_heads", "0 is out of range (allowed: ≥ 1)"));
        }
        if self.num_buckets < 2 {
            return Err(ConfigError::new(
                "num_buckets",
                format!("{} is out of range (allowed: ≥ 2)", self.num_buckets),
            ));
        }
        if self.max_distance <= self.num_buckets / 2 {
            return Err(ConfigError::new(
                "max_distance",
                format!(
                    "{} is out of range (allowed: > num_buckets/2 = {})",
                    self.max_distance,
                    self.num_buckets / 2
                ),
            ));
        }
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, device: &Device) -> Result<T5Bias> {
        self.validate(ctx)?;
        let table = Tensor::random([ctx.n_heads, self.num_buckets], Distribution::Normal(0.0, 0.02), device);
        Ok(T5Bias {
            table: Param::from_tensor(table),
            num_buckets: self.num_buckets,
            max_distance: self.max_distance,
            ctx: *ctx,
        })
    }
}

impl T5Bias {
    pub fn table(&self) -> Tensor<2> {
        self.table.val()
    }
}

impl PositionalEncoding for T5Bias {
    fn class(&self) -> EncodingClass {
        EncodingClass::Bias
    }

    fn bias_by_distance(&self) -> bool {
        true
    }

    fn attention_bias(
        &self,
        queries: Range<usize>,
        keys: Range<usize>,
        device: &Device,
    ) -> Option<Tensor<3>> {
        let (q, k) = (queries.len(), keys.len());
        let buckets: Vec<i64> = super::distances(&queries, &keys)
            .into_iter()
            .map(|d| t5_bucket(d as i64, self.num_buckets, self.max_distance) as i64)
            .collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(buckets, [q * k]), device);
        let heads = self.ctx.n_heads;
        Some(self.table.val().select(1, idx).reshape([heads, q, k]))
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        super::inspect_bias(self, "t5", self.ctx, distances, device)
    }
}
