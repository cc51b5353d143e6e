//! HoPE-HF (Chen et al., ACL 2025, arXiv 2410.21216): RoPE keeping only the pairs that complete
//! a full period inside the training window (θ_i ≥ 2π/L); the lower frequencies — the
//! "activated" components behind the U-shaped attention — are passed through unrotated.
//! Kept pairs K = ⌊(d/2)·ln(L/2π)/ln b⌋ + 1, capped at d/2.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::rope::default_theta;
use super::{Layout, RotarySpec, check_rotary};
use crate::error::Result;
use crate::registry::EncodingContext;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopeHfConfig {
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub layout: Layout,
    /// Training length L (defaults to the model's training sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_len: Option<usize>,
}

impl Default for HopeHfConfig {
    fn default() -> Self {
        Self { rope_theta: default_theta(), layout: Layout::Half, train_len: None }
    }
}

impl HopeHfConfig {
    pub fn spec(&self, ctx: &EncodingContext) -> Result<RotarySpec> {
        check_rotary(ctx, self.rope_theta)?;
        let l = ctx.require_train_len(self.train_len, "train_len")? as f64;
        let threshold = 2.0 * PI / l;
        Ok(RotarySpec::rope("hope-hf", ctx.head_dim, ctx.head_dim, self.rope_theta, self.layout)
            .keep_pairs(|_, theta| theta >= threshold))
    }
}

super::rotary_kind!(
    HopeHfConfig,
    "hope-hf",
    "RoPE without the pairs whose wavelength exceeds train_len (Chen et al. 2025)"
);
