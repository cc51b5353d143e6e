//! p-RoPE (Barbero et al., ICLR 2025): keep the highest-frequency fraction p of the RoPE grid
//! (pairs i < ⌊p·d/2⌋ keep θ_i = b^(−2i/d)); the rest are passed through. Unlike partial rotary,
//! the kept frequencies are the original ones, not a compressed spectrum.

use serde::{Deserialize, Serialize};

use super::rope::default_theta;
use super::{Layout, RotarySpec, check_rotary};
use crate::error::{Result, check_range};
use crate::registry::EncodingContext;

fn default_p() -> f64 {
    0.75
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PRopeConfig {
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub layout: Layout,
    /// Fraction of pairs kept, in (0, 1].
    #[serde(default = "default_p")]
    pub p: f64,
}

impl Default for PRopeConfig {
    fn default() -> Self {
        Self { rope_theta: default_theta(), layout: Layout::Half, p: default_p() }
    }
}

impl PRopeConfig {
    pub fn spec(&self, ctx: &EncodingContext) -> Result<RotarySpec> {
        check_rotary(ctx, self.rope_theta)?;
        check_range("p", self.p, 0.0, 1.0, "0 < p ≤ 1")?;
        let kept = (self.p * (ctx.head_dim / 2) as f64).floor() as usize;
        Ok(RotarySpec::rope("p-rope", ctx.head_dim, ctx.head_dim, self.rope_theta, self.layout)
            .keep_pairs(|i, _| i < kept))
    }
}

super::rotary_kind!(
    PRopeConfig,
    "p-rope",
    "RoPE keeping the top fraction p of frequencies (Barbero et al. 2025)"
);
