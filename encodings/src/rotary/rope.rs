//! RoPE (Su et al. 2021), both layouts, with Hugging Face's `partial_rotary_factor` (rotate the
//! first r·d channels with the spectrum compressed to them) and eval-time `rope_scaling`.

use serde::{Deserialize, Serialize};

use super::scaling::RopeScaling;
use super::{Layout, RotarySpec, check_rotary};
use crate::error::{ConfigError, Result, check_range};
use crate::registry::EncodingContext;

pub(crate) fn default_theta() -> f64 {
    10_000.0
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeConfig {
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub layout: Layout,
    /// Fraction r of channels rotated (NeoX `rotary_pct`), in (0, 1].
    #[serde(default = "one")]
    pub partial_rotary_factor: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
}

impl Default for RopeConfig {
    fn default() -> Self {
        Self {
            rope_theta: default_theta(),
            layout: Layout::Half,
            partial_rotary_factor: 1.0,
            rope_scaling: None,
        }
    }
}

impl RopeConfig {
    pub fn spec(&self, ctx: &EncodingContext) -> Result<RotarySpec> {
        check_rotary(ctx, self.rope_theta)?;
        check_range("partial_rotary_factor", self.partial_rotary_factor, 0.0, 1.0, "0 < r ≤ 1")?;
        let rotary_dim = ((self.partial_rotary_factor * ctx.head_dim as f64).floor() as usize) & !1;
        if rotary_dim < 2 {
            return Err(ConfigError::new(
                "partial_rotary_factor",
                format!(
                    "{} rotates no pair of head_dim {} (allowed: r·head_dim ≥ 2)",
                    self.partial_rotary_factor, ctx.head_dim
                ),
            ));
        }
        let spec = RotarySpec::rope("rope", ctx.head_dim, rotary_dim, self.rope_theta, self.layout);
        match &self.rope_scaling {
            Some(s) => s.apply(spec, self.rope_theta, ctx),
            None => Ok(spec),
        }
    }
}

super::rotary_kind!(
    RopeConfig,
    "rope",
    "rotary (Su et al. 2021); partial_rotary_factor, rope_scaling = linear|ntk|dynamic|yarn|llama3"
);
