//! KERPLE (Chi et al. 2022): logit += −r1·ln(1 + r2·Δ) (log) or −r1·Δ^r2 (power), r1, r2 > 0
//! learned per head (power: r2 ≤ 2). Constraints hold by parametrisation: r = softplus(raw) + ε,
//! power r2 = 2·sigmoid(raw). Initialised at r1 = 1, r2 = 1.
//!
//! Sharing: per layer, as in the paper's GPT-NeoX implementation (each attention layer owns its
//! r1, r2 per head), so a model holds one instance per layer (`PER_LAYER`).

use std::ops::Range;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softplus};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result};
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KerpleVariant {
    #[default]
    Log,
    Power,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KerpleConfig {
    #[serde(default)]
    pub variant: KerpleVariant,
}

const EPS: f64 = 1e-4;
/// softplus⁻¹(1 − ε)
fn inv_softplus(y: f64) -> f64 {
    y.exp_m1().ln()
}

#[derive(Module, Debug)]
pub struct Kerple {
    r1_raw: Param<Tensor<1>>,
    r2_raw: Param<Tensor<1>>,
    #[module(skip)]
    variant: KerpleVariant,
    #[module(skip)]
    ctx: EncodingContext,
}

impl EncodingKind for KerpleConfig {
    const KIND: &'static str = "kerple";
    const SUMMARY: &'static str = "learned log or power distance kernel per head (Chi et al. 2022)";
    type Module = Kerple;
    const PER_LAYER: bool = true;

    fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        if ctx.n_heads == 0 {
            return Err(ConfigError::new("n_heads", "0 is out of range (allowed: ≥ 1)"));
        }
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, device: &Device) -> Result<Kerple> {
        self.validate(ctx)?;
        let h = ctx.n_heads;
        let full = |v: f64| Param::from_tensor(Tensor::<1>::full([h], v as f32, device));
        let r2 = match self.variant {
            KerpleVariant::Log => inv_softplus(1.0 - EPS),
            KerpleVariant::Power => 0.0, // 2·sigmoid(0) = 1
        };
        Ok(Kerple {
            r1_raw: full(inv_softplus(1.0 - EPS)),
            r2_raw: full(r2),
            variant: self.variant,
            ctx: *ctx,
        })
    }
}

impl Kerple {
    /// (r1, r2) per head, as tensors `[heads]`.
    pub fn params(&self) -> (Tensor<1>, Tensor<1>) {
        let r1 = softplus(self.r1_raw.val(), 1.0).add_scalar(EPS);
        let r2 = match self.variant {
            KerpleVariant::Log => softplus(self.r2_raw.val(), 1.0).add_scalar(EPS),
            KerpleVariant::Power => sigmoid(self.r2_raw.val()).mul_scalar(2.0),
        };
        (r1, r2)
    }
}

impl Kerple {
    /// Gradient of the raw r1 parameter (tests check it against the analytic derivative).
    pub fn r1_raw_grad(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>> {
        self.r1_raw.val().grad(grads)
    }
}

impl PositionalEncoding for Kerple {
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
        let h = self.ctx.n_heads;
        let dist = super::distance_tensor(&queries, &keys, device).clamp_min(0.0).unsqueeze_dim::<3>(0); // [1, q, k]
        let (r1, r2) = self.params();
        let (r1, r2) = (r1.reshape([h, 1, 1]), r2.reshape([h, 1, 1]));
        let kernel = match self.variant {
            KerpleVariant::Log => (dist * r2).add_scalar(1.0).log(),
            KerpleVariant::Power => {
                // Δ^r2 with 0^r2 = 0 and a finite gradient at Δ = 0.
                let positive = dist.clone().greater_elem(0.0).float();
                let safe = dist + positive.clone().neg().add_scalar(1.0); // Δ, or 1 where Δ = 0
                (safe.log() * r2).exp() * positive
            }
        };
        Some((kernel * r1).neg()) // [heads, q, k]
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        super::inspect_bias(self, "kerple", self.ctx, distances, device)
    }
}
