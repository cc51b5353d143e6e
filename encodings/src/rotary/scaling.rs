//! Eval-time RoPE scaling with Hugging Face's names and formulas (`modeling_rope_utils`):
//! `rope_scaling = { rope_type = "yarn", factor = 4.0, original_max_position_embeddings = 512 }`.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::{DynamicNtk, RotarySpec};
use crate::error::{ConfigError, Result, check_range};
use crate::registry::EncodingContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeType {
    /// Position interpolation (PI): θ_i / s.
    Linear,
    /// NTK-aware: base · s^(d/(d−2)).
    Ntk,
    /// Dynamic NTK: the NTK base grows with the current length ℓ > L.
    Dynamic,
    /// YaRN: per-pair ramp between interpolation and extrapolation, plus an attention factor.
    Yarn,
    /// Llama 3: low frequencies / s, high kept, a smooth band between.
    Llama3,
}

fn beta_fast() -> f64 {
    32.0
}
fn beta_slow() -> f64 {
    1.0
}
fn low_freq_factor() -> f64 {
    1.0
}
fn high_freq_factor() -> f64 {
    4.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub rope_type: RopeType,
    /// s = L_eval / L (≥ 1).
    pub factor: f64,
    /// L, the length the model was trained at (defaults to the context's training length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    #[serde(default = "beta_fast")]
    pub beta_fast: f64,
    #[serde(default = "beta_slow")]
    pub beta_slow: f64,
    /// YaRN: overrides 0.1·ln s + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    #[serde(default = "low_freq_factor")]
    pub low_freq_factor: f64,
    #[serde(default = "high_freq_factor")]
    pub high_freq_factor: f64,
}

impl RopeScaling {
    pub fn new(rope_type: RopeType, factor: f64) -> Self {
        Self {
            rope_type,
            factor,
            original_max_position_embeddings: None,
            beta_fast: beta_fast(),
            beta_slow: beta_slow(),
            attention_factor: None,
            low_freq_factor: low_freq_factor(),
            high_freq_factor: high_freq_factor(),
        }
    }

    pub fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(ConfigError::new(
                "rope_scaling.factor",
                format!("{} is out of range (allowed: ≥ 1)", self.factor),
            ));
        }
        match self.rope_type {
            RopeType::Yarn => {
                check_range("rope_scaling.beta_slow", self.beta_slow, 0.0, f64::INFINITY, "> 0")?;
                if self.beta_fast <= self.beta_slow {
                    return Err(ConfigError::new(
                        "rope_scaling.beta_fast",
                        format!(
                            "{} is out of range (allowed: > beta_slow = {})",
                            self.beta_fast, self.beta_slow
                        ),
                    ));
                }
                if let Some(a) = self.attention_factor {
                    check_range("rope_scaling.attention_factor", a, 0.0, f64::INFINITY, "> 0")?;
                }
            }
            RopeType::Llama3 => {
                check_range("rope_scaling.low_freq_factor", self.low_freq_factor, 0.0, f64::INFINITY, "> 0")?;
                if self.high_freq_factor <= self.low_freq_factor {
                    return Err(ConfigError::new(
                        "rope_scaling.high_freq_factor",
                        format!(
                            "{} is out of range (allowed: > low_freq_factor = {})",
                            self.high_freq_factor, self.low_freq_factor
                        ),
                    ));
                }
            }
            _ => {}
        }
        if matches!(self.rope_type, RopeType::Yarn | RopeType::Dynamic | RopeType::Llama3) {
            self.original_len(ctx)?;
        }
        Ok(())
    }

    fn original_len(&self, ctx: &EncodingContext) -> Result<usize> {
        ctx.require_train_len(
            self.original_max_position_embeddings,
            "rope_scaling.original_max_position_embeddings",
        )
    }

    /// Rescales the spec's frequencies (θ_i of the full grid, over `spec.rotary_dim`).
    pub fn apply(&self, mut spec: RotarySpec, base: f64, ctx: &EncodingContext) -> Result<RotarySpec> {
        self.validate(ctx)?;
        let s = self.factor;
        let dim = spec.rotary_dim as f64;
        let grid = &spec.base_theta;
        let theta: Vec<f64> = match self.rope_type {
            RopeType::Linear => grid.iter().map(|t| t / s).collect(),
            RopeType::Ntk => super::rope_grid(base * s.powf(dim / (dim - 2.0)), spec.rotary_dim),
            RopeType::Dynamic => {
                spec.dynamic = Some(DynamicNtk { base, factor: s, original_len: self.original_len(ctx)? });
                grid.clone()
            }
            RopeType::Yarn => {
                let l = self.original_len(ctx)? as f64;
                let corr = |rot: f64| dim * (l / (rot * 2.0 * PI)).ln() / (2.0 * base.ln());
                let low = corr(self.beta_fast).floor().max(0.0);
                let mut high = corr(self.beta_slow).ceil().min(dim - 1.0);
                if low == high {
                    high += 0.001;
                }
                spec.attention_factor =
                    self.attention_factor.unwrap_or(if s <= 1.0 { 1.0 } else { 0.1 * s.ln() + 1.0 });
                grid.iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (t / s) * (1.0 - extrapolation) + t * extrapolation
                    })
                    .collect()
            }
            RopeType::Llama3 => {
                let l = self.original_len(ctx)? as f64;
                let low_wl = l / self.low_freq_factor;
                let high_wl = l / self.high_freq_factor;
                grid.iter()
                    .map(|&t| {
                        let wl = 2.0 * PI / t;
                        if wl < high_wl {
                            t
                        } else if wl > low_wl {
                            t / s
                        } else {
                            let smooth = (l / wl - self.low_freq_factor)
                                / (self.high_freq_factor - self.low_freq_factor);
                            (1.0 - smooth) * t / s + smooth * t
                        }
                    })
                    .collect()
            }
        };
        spec.theta = theta.into_iter().zip(&spec.rotated).map(|(t, &k)| if k { t } else { 0.0 }).collect();
        Ok(spec)
    }
}
