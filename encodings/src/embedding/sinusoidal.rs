//! Sinusoidal absolute encoding (Vaswani et al. 2017): PE(p, 2i) = sin(p·b^(−2i/d)),
//! PE(p, 2i+1) = cos(…), added to the token embeddings. Angles are formed in f64 on the host,
//! or by the rotary family's angle kernel on CubeCL devices (reduced mod 2π exactly, as RoPE's).
//! The paper (§3.4) multiplies the token embeddings by √d_model, i.e. (with their usual
//! N(0, 1/d) initialisation) content of unit RMS per entry beside position entries in [−1, 1]
//! (RMS 1/√2). pezoo keeps that ratio at the scale every encoding shares: the model rescales
//! this table to its embeddings' RMS ([`PositionalEncoding::content_rms`] = 1), so position no
//! longer outweighs content ~35× at initialisation, and no encoding starts from another scale.

use std::ops::Range;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result, check_range};
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

fn default_base() -> f64 {
    10_000.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinusoidalConfig {
    #[serde(default = "default_base")]
    pub base: f64,
}

impl Default for SinusoidalConfig {
    fn default() -> Self {
        Self { base: default_base() }
    }
}

#[derive(Module, Debug)]
pub struct Sinusoidal {
    #[module(skip)]
    base: f64,
    #[module(skip)]
    ctx: EncodingContext,
}

impl EncodingKind for SinusoidalConfig {
    const KIND: &'static str = "sinusoidal";
    const SUMMARY: &'static str = "fixed sin/cos absolute embedding (Vaswani et al. 2017)";
    type Module = Sinusoidal;

    fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        check_range("base", self.base, 1.0, f64::INFINITY, "> 1")?;
        if ctx.d_model < 2 || !ctx.d_model.is_multiple_of(2) {
            return Err(ConfigError::new(
                "d_model",
                format!("{} is not valid (allowed: even, ≥ 2)", ctx.d_model),
            ));
        }
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, _device: &Device) -> Result<Sinusoidal> {
        self.validate(ctx)?;
        Ok(Sinusoidal { base: self.base, ctx: *ctx })
    }
}

impl PositionalEncoding for Sinusoidal {
    fn class(&self) -> EncodingClass {
        EncodingClass::Embedding
    }

    fn content_rms(&self) -> Option<f64> {
        Some(1.0)
    }

    fn position_embedding(&self, positions: Range<usize>, device: &Device) -> Option<Tensor<2>> {
        let d = self.ctx.d_model;
        #[cfg(feature = "cube")]
        if crate::rotary::fused_available(device) && positions.end <= 1 << 24 {
            // the angle kernel (to 2²⁴; the host loop below in f64 beyond)
            let omega: Vec<f64> = (0..d / 2).map(|i| self.base.powf(-2.0 * i as f64 / d as f64)).collect();
            return Some(crate::rotary::fused::sinusoidal_table(&omega, positions, device));
        }
        let n = positions.len();
        let mut v = Vec::with_capacity(n * d);
        for p in positions {
            for i in 0..d / 2 {
                let (s, c) = (p as f64 * self.base.powf(-2.0 * i as f64 / d as f64)).sin_cos();
                v.push(s as f32);
                v.push(c as f32);
            }
        }
        Some(Tensor::from_data(TensorData::new(v, [n, d]), device))
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        super::inspect_embedding(self, "sinusoidal", self.ctx, distances, device)
    }
}
