//! xPos (Sun et al. 2023): RoPE plus a per-pair scale ζ_i = (2i/d + 0.4)/1.4, q·ζ^(m/B),
//! k·ζ^(−n/B), so the score decays as ζ^((m−n)/B). Positions are re-centred per query block.

use serde::{Deserialize, Serialize};

use super::rope::default_theta;
use super::{Layout, RotarySpec, check_rotary};
use crate::error::{Result, check_range};
use crate::registry::EncodingContext;

fn default_scale_base() -> f64 {
    512.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XposConfig {
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub layout: Layout,
    /// B, the decay length scale.
    #[serde(default = "default_scale_base")]
    pub scale_base: f64,
}

impl Default for XposConfig {
    fn default() -> Self {
        Self { rope_theta: default_theta(), layout: Layout::Half, scale_base: default_scale_base() }
    }
}

impl XposConfig {
    pub fn spec(&self, ctx: &EncodingContext) -> Result<RotarySpec> {
        check_rotary(ctx, self.rope_theta)?;
        check_range("scale_base", self.scale_base, 0.0, f64::INFINITY, "> 0")?;
        let d = ctx.head_dim as f64;
        let zeta = (0..ctx.head_dim / 2).map(|i| (2.0 * i as f64 / d + 0.4) / 1.4).collect();
        let mut spec = RotarySpec::rope("xpos", ctx.head_dim, ctx.head_dim, self.rope_theta, self.layout);
        spec.xpos = Some((zeta, self.scale_base));
        Ok(spec)
    }
}

super::rotary_kind!(XposConfig, "xpos", "RoPE with a per-pair exponential decay (Sun et al. 2023)");
