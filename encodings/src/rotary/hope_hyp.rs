//! HoPE-Hyp (Dai et al. 2025, arXiv 2509.05218): per pair a Lorentz boost B(mθ_i) and a damping
//! e^(−mθ'), q' = e^(−mθ')B(mθ_i)q, k' = e^(mθ')B(−mθ_i)k, so q'ᵀk' = e^(−Δθ') qᵀB(Δθ_i)k,
//! which decays with Δ iff θ' > max θ_i (enforced). The paper gives no defaults; ours keep the
//! encoding usable at the training length L:
//! - θ_i = s·b^(−2i/d) with angle scale s = 2/L (so max θ_i·L = 2: cosh stays < 4 at Δ = L);
//! - θ' = max θ_i + δ with δ = 1/L (the slowest envelope e^(−Δδ) is e^(−1) at Δ = L).
//!
//! The paper reports sensitivity to θ' (its "scaling factor" ablation): larger θ' makes attention
//! more local. The absolute form overflows f32 within tens of positions; every application here
//! is re-centred per query block (see the rotary module).

use serde::{Deserialize, Serialize};

use super::rope::default_theta;
use super::{Layout, PairMap, RotarySpec, check_rotary};
use crate::error::{ConfigError, Result, check_range};
use crate::registry::EncodingContext;

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopeHypConfig {
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub layout: Layout,
    /// s in θ_i = s·b^(−2i/d); default 2/L.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angle_scale: Option<f64>,
    /// θ' (initial value when learnable); must exceed max θ_i. Default max θ_i + `damping_margin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta_prime: Option<f64>,
    /// δ = θ' − max θ_i when `theta_prime` is not given; default 1/L.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damping_margin: Option<f64>,
    /// Learn θ' (kept > max θ_i by a softplus parametrisation).
    #[serde(default = "yes")]
    pub learnable: bool,
    /// Training length L for the defaults (defaults to the model's training length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_len: Option<usize>,
}

impl Default for HopeHypConfig {
    fn default() -> Self {
        Self {
            rope_theta: default_theta(),
            layout: Layout::Half,
            angle_scale: None,
            theta_prime: None,
            damping_margin: None,
            learnable: true,
            train_len: None,
        }
    }
}

impl HopeHypConfig {
    pub fn spec(&self, ctx: &EncodingContext) -> Result<RotarySpec> {
        check_rotary(ctx, self.rope_theta)?;
        let len = || ctx.require_train_len(self.train_len, "train_len").map(|l| l as f64);
        let scale = match self.angle_scale {
            Some(s) => s,
            None => 2.0 / len()?,
        };
        check_range("angle_scale", scale, 0.0, f64::INFINITY, "> 0")?;
        let mut spec = RotarySpec::rope("hope-hyp", ctx.head_dim, ctx.head_dim, self.rope_theta, self.layout);
        spec.base_theta.iter_mut().for_each(|t| *t *= scale);
        spec.theta = spec.base_theta.clone();
        let max_theta = spec.theta[0];
        let theta_prime = match (self.theta_prime, self.damping_margin) {
            (Some(tp), _) => {
                if !(tp.is_finite() && tp > max_theta) {
                    return Err(ConfigError::new(
                        "theta_prime",
                        format!(
                            "{tp} is out of range (allowed: > max theta_i = {max_theta:.6e}, or the score grows with distance)"
                        ),
                    ));
                }
                tp
            }
            (None, margin) => {
                let m = match margin {
                    Some(m) => m,
                    None => 1.0 / len()?,
                };
                check_range("damping_margin", m, 0.0, f64::INFINITY, "> 0")?;
                max_theta + m
            }
        };
        spec.map = PairMap::Hyperbolic { theta_prime, learnable: self.learnable };
        Ok(spec)
    }
}

super::rotary_kind!(
    HopeHypConfig,
    "hope-hyp",
    "hyperbolic rotary: Lorentz boost + damping e^(-Δθ') (Dai et al. 2025)"
);
