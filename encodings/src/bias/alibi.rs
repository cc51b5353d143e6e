//! ALiBi (Press et al. 2022): logit += −slope_h·(m − n). Slopes 2^(−8h/H), h = 1…H, for H a
//! power of two; otherwise the paper's rule: the slopes of the closest smaller power of two,
//! then every other slope of twice that many. Fixed, and the same in every layer (the paper).

use std::ops::Range;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result};
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlibiConfig {}

/// ALiBi slopes for `heads` heads, as in the reference implementation.
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|i| start.powi(i as i32)).collect()
    }
    if heads.is_power_of_two() {
        return pow2(heads);
    }
    let closest = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    let mut slopes = pow2(closest);
    slopes.extend(alibi_slopes(2 * closest).into_iter().step_by(2).take(heads - closest));
    slopes
}

#[derive(Module, Debug)]
pub struct Alibi {
    #[module(skip)]
    slopes: Vec<f64>,
    #[module(skip)]
    ctx: EncodingContext,
}

impl Alibi {
    pub fn slopes(&self) -> &[f64] {
        &self.slopes
    }
}

impl EncodingKind for AlibiConfig {
    const KIND: &'static str = "alibi";
    const SUMMARY: &'static str = "linear distance penalty per head (Press et al. 2022)";
    type Module = Alibi;

    fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        if ctx.n_heads == 0 {
            return Err(ConfigError::new("n_heads", "0 is out of range (allowed: ≥ 1)"));
        }
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, _device: &Device) -> Result<Alibi> {
        self.validate(ctx)?;
        Ok(Alibi { slopes: alibi_slopes(ctx.n_heads), ctx: *ctx })
    }
}

impl PositionalEncoding for Alibi {
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
        let h = self.slopes.len();
        let slopes: Vec<f32> = self.slopes.iter().map(|&s| -s as f32).collect();
        let slopes = Tensor::<3>::from_data(TensorData::new(slopes, [h, 1, 1]), device);
        let dist = super::distance_tensor(&queries, &keys, device).unsqueeze_dim::<3>(0);
        Some(slopes * dist) // [heads, queries, keys]
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        let mut out = super::inspect_bias(self, "alibi", self.ctx, distances, device);
        out.notes.push(format!("slopes {:?}", self.slopes));
        out
    }
}
