//! FIRE (Li et al. 2024): logit += MLP(ψ(m − n) / ψ(max(m, L_thr))), ψ(x) = ln(|c·x| + 1),
//! MLP 1 → width → ReLU → H, with c and L_thr = |ℓ·L₀| learned (ℓ starts at 1), following the
//! paper's reference code. The bias depends on the query position m through the normaliser:
//! `zoo inspect` reports it for a query at position Δ and a key at 0.
//!
//! Sharing: one MLP for all layers, like T5's table (the paper discusses layerwise sharing as
//! a cost/quality choice; pezoo shares, so FIRE adds the same few parameters at any depth).

use std::ops::Range;

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result, check_range};
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

fn default_width() -> usize {
    32
}
fn default_c() -> f64 {
    0.1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FireConfig {
    #[serde(default = "default_width")]
    pub mlp_width: usize,
    #[serde(default = "default_c")]
    pub init_c: f64,
    /// L₀, the initial threshold; default the training length, else 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_threshold: Option<f64>,
}

impl Default for FireConfig {
    fn default() -> Self {
        Self { mlp_width: default_width(), init_c: default_c(), init_threshold: None }
    }
}

const EPS: f64 = 1e-6;

#[derive(Module, Debug)]
pub struct Fire {
    /// The MLP 1 → width → ReLU → heads (public: analyses and tests read its weights).
    pub fc1: Linear,
    pub fc2: Linear,
    c: Param<Tensor<1>>,
    threshold_multiplier: Param<Tensor<1>>,
    #[module(skip)]
    init_threshold: f64,
    #[module(skip)]
    ctx: EncodingContext,
}

impl EncodingKind for FireConfig {
    const KIND: &'static str = "fire";
    const SUMMARY: &'static str = "learned MLP of log-normalised distance (Li et al. 2024)";
    type Module = Fire;

    fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        if ctx.n_heads == 0 {
            return Err(ConfigError::new("n_heads", "0 is out of range (allowed: ≥ 1)"));
        }
        if self.mlp_width == 0 {
            return Err(ConfigError::new("mlp_width", "0 is out of range (allowed: ≥ 1)"));
        }
        check_range("init_c", self.init_c, 0.0, f64::INFINITY, "> 0")?;
        if let Some(t) = self.init_threshold {
            check_range("init_threshold", t, 0.0, f64::INFINITY, "> 0")?;
        }
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, device: &Device) -> Result<Fire> {
        self.validate(ctx)?;
        let scalar =
            |v: f64| Param::from_tensor(Tensor::<1>::from_data(TensorData::new(vec![v as f32], [1]), device));
        Ok(Fire {
            fc1: LinearConfig::new(1, self.mlp_width).init(device),
            fc2: LinearConfig::new(self.mlp_width, ctx.n_heads).init(device),
            c: scalar(self.init_c),
            threshold_multiplier: scalar(1.0),
            init_threshold: self.init_threshold.or(ctx.train_len.map(|l| l as f64)).unwrap_or(512.0),
            ctx: *ctx,
        })
    }
}

impl Fire {
    /// The learned log-scale c (a parameter).
    pub fn c(&self) -> Tensor<1> {
        self.c.val()
    }

    /// The MLP's hidden width W.
    pub fn width(&self) -> usize {
        self.fc1.weight.dims()[1]
    }

    /// Everything the fused kernel needs, one row per head, differentiable:
    /// `[heads, 3W + 3]` = `[w1 (W), b1 (W), w2_h (W), b2_h, c, L_thr]`.
    pub fn kernel_rows(&self) -> Tensor<2> {
        let (h, w) = (self.ctx.n_heads, self.width());
        let device = self.c.val().device();
        let b1 = self.fc1.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([w], &device));
        let b2 = self.fc2.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([h], &device));
        let shared = Tensor::cat(vec![self.fc1.weight.val(), b1.reshape([1, w])], 1).expand([h, 2 * w]);
        let threshold = self.threshold_multiplier.val().mul_scalar(self.init_threshold).abs();
        let scalars = Tensor::cat(vec![self.c.val(), threshold], 0).reshape([1, 2]).expand([h, 2]);
        // fc2.weight: [W, heads]
        Tensor::cat(vec![shared, self.fc2.weight.val().transpose(), b2.reshape([h, 1]), scalars], 1)
    }
}

impl PositionalEncoding for Fire {
    fn class(&self) -> EncodingClass {
        EncodingClass::Bias
    }

    fn attention_bias(
        &self,
        queries: Range<usize>,
        keys: Range<usize>,
        device: &Device,
    ) -> Option<Tensor<3>> {
        let (q, k) = (queries.len(), keys.len());
        let c = self.c.val().reshape([1, 1]);
        let psi = |x: Tensor<2>| (x * c.clone()).abs().add_scalar(1.0).log();
        let dist = super::distance_tensor(&queries, &keys, device); // [q, k]
        let m: Vec<f32> = queries.clone().map(|m| m as f32).collect();
        let m = Tensor::<2>::from_data(TensorData::new(m, [q, 1]), device);
        let threshold = self.threshold_multiplier.val().mul_scalar(self.init_threshold).abs().reshape([1, 1]);
        let normaliser = psi(m.max_pair(threshold.expand([q, 1]))).add_scalar(EPS); // [q, 1]
        let x = (psi(dist) / normaliser).reshape([q, k, 1]);
        let y = self.fc2.forward(relu(self.fc1.forward(x))); // [q, k, heads]
        Some(y.permute([2, 0, 1]))
    }

    fn fire(&self) -> Option<&Fire> {
        Some(self)
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        super::inspect_bias(self, "fire", self.ctx, distances, device)
    }
}
