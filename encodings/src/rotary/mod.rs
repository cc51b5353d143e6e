//! Rotary class: a per-pair 2×2 map on q and k. Every rotary-class kind (rope, p-rope, hope-hf,
//! hope-hyp, xpos, scaled ropes, partial rotary) lowers to one [`RotarySpec`] — plain data a
//! fused kernel can read — and one [`RotaryEncoding`] module that applies it.
//!
//! The map of pair i at (re-centred) position p, on side σ (+1 query, −1 key), is
//! `x' = [[a, b], [c, d]] · x` with
//! - rotation: `[[cos pθ, −sin pθ], [sin pθ, cos pθ]] · mscale · ζ_i^(σp/B)` (xPos scale, 1 otherwise);
//! - hyperbolic (HoPE-Hyp): `e^(−σpθ') · B(σpθ_i)`, computed as `e_± = exp(−σp(θ' ∓ θ_i))`,
//!   `a = d = (e_+ + e_−)/2`, `b = c = (e_+ − e_−)/2` so no cosh/sinh ever overflows alone.
//!
//! Positions are re-centred per query block (see [`RotaryEncoding::apply_qk`]): scores depend on
//! m − n only, so subtracting the block's first query position is exact and keeps every factor
//! bounded. Angles are formed in f64 on the host, so f32 results are exact at positions of 1e6.

mod cache;
#[cfg(feature = "cube")]
pub mod fused;
pub mod hope_hf;
pub mod hope_hyp;
pub mod p_rope;
pub mod reference;

pub use cache::TableCache;
pub mod rope;
pub mod scaling;
pub mod xpos;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::softplus;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result};
use crate::inspect::{AtDistance, Inspection, PairInfo};
use crate::registry::{EncodingClass, EncodingContext, PositionalEncoding};

/// Whether `device` runs this crate's fused CubeCL kernels (a CubeCL device, compiled in).
pub fn fused_available(device: &Device) -> bool {
    #[cfg(feature = "cube")]
    return fused::is_cube(device);
    #[cfg(not(feature = "cube"))]
    {
        let _ = device;
        false
    }
}

/// Benchmark floor: `x·1.5` as a plain elementwise CubeCL kernel launched like the fused
/// rotary kernel; `None` where [`fused_available`] is false.
pub fn elementwise_floor(x: Tensor<4>) -> Option<Tensor<4>> {
    #[cfg(feature = "cube")]
    if fused::is_cube(&x.device()) {
        return Some(fused::elementwise_floor(x));
    }
    let _ = x;
    None
}

/// Fused forward then the backward kernel (Mᵀ) on its output, without autodiff bookkeeping:
/// the kernel-only cost of a training step's rotary map; `None` where not fused.
pub fn fused_forward_backward(
    enc: &RotaryEncoding,
    x: Tensor<4>,
    starts: &[i64],
    side: Side,
) -> Option<Tensor<4>> {
    #[cfg(feature = "cube")]
    if fused::is_cube(&x.device()) {
        let s = x.dims()[2];
        let y = fused::apply(enc, x, starts, side, s);
        return Some(fused::apply_transposed(enc, y, starts, side, s));
    }
    let _ = (enc, x, starts, side);
    None
}

/// Which channels form pair i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// GPT-NeoX / Hugging Face Llama: pair i = channels (i, i + r/2), r = rotary channels.
    #[default]
    Half,
    /// GPT-J / Meta / burn-nn: pair i = channels (2i, 2i + 1).
    Interleaved,
}

impl Layout {
    pub fn channels(self, pair: usize, rotary_dim: usize) -> [usize; 2] {
        match self {
            Layout::Half => [pair, pair + rotary_dim / 2],
            Layout::Interleaved => [2 * pair, 2 * pair + 1],
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Layout::Half => "half",
            Layout::Interleaved => "interleaved",
        }
    }
}

/// Query or key: the maps differ for HoPE-Hyp and xPos (damping/scale signs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Query,
    Key,
}

impl Side {
    pub fn sign(self) -> f64 {
        match self {
            Side::Query => 1.0,
            Side::Key => -1.0,
        }
    }
}

/// The 2×2 family of the pair maps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PairMap {
    Rotation,
    /// HoPE-Hyp; θ' fixed, or learnable starting at `init` (always > max θ_i).
    Hyperbolic {
        theta_prime: f64,
        learnable: bool,
    },
}

/// Eval-time dynamic NTK: the base grows with the current length ℓ once ℓ > `original_len`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicNtk {
    pub base: f64,
    pub factor: f64,
    pub original_len: usize,
}

/// Everything a kernel needs to apply a rotary-class encoding, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct RotarySpec {
    pub kind: &'static str,
    pub head_dim: usize,
    /// Channels in pairs (even, ≤ head_dim); the rest pass through (partial rotary).
    pub rotary_dim: usize,
    pub layout: Layout,
    /// θ_i of the unmodified grid, one per pair.
    pub base_theta: Vec<f64>,
    /// θ_i used by the map (after scaling); 0 where `rotated` is false.
    pub theta: Vec<f64>,
    pub rotated: Vec<bool>,
    pub map: PairMap,
    /// YaRN's attention factor, multiplied onto cos and sin (1 otherwise).
    pub attention_factor: f64,
    /// xPos: per-pair ζ_i and the scale base B.
    pub xpos: Option<(Vec<f64>, f64)>,
    pub dynamic: Option<DynamicNtk>,
}

/// Largest exponent any factor may reach inside one query block of the reference path. Not
/// overflow (e^40 would still fit) but accuracy: mapped in the pair basis, a HoPE-Hyp score is a
/// sum of e^{+φ}- and e^{−φ}-scaled terms, so f32 cancellation grows quickly with φ. Measured on
/// a trained quick HoPE-Hyp model (θ' + max θ_i ≈ 0.039) at 16× (L = 2048), perplexity against
/// the fused kernel (exact, in the boost's eigenbasis): query blocks with φ ≤ 20 off by 2.3e-3
/// (relative), φ ≤ 15 by 4e-6, φ ≤ 10 by 1e-7.
const LOG_BUDGET: f64 = 10.0;

/// The RoPE frequency grid θ_i = base^(−2i/dim), i < dim/2.
pub fn rope_grid(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2).map(|i| base.powf(-2.0 * i as f64 / dim as f64)).collect()
}

/// The registry entry of a rotary config whose `spec(ctx)` says everything: validating is
/// building the spec, and the module is a [`RotaryEncoding`] of it.
macro_rules! rotary_kind {
    ($config:ty, $kind:literal, $summary:literal) => {
        impl $crate::registry::EncodingKind for $config {
            const KIND: &'static str = $kind;
            const SUMMARY: &'static str = $summary;
            type Module = $crate::rotary::RotaryEncoding;

            fn validate(&self, ctx: &$crate::registry::EncodingContext) -> $crate::error::Result<()> {
                self.spec(ctx).map(|_| ())
            }

            fn init(
                &self,
                ctx: &$crate::registry::EncodingContext,
                device: &burn::prelude::Device,
            ) -> $crate::error::Result<$crate::rotary::RotaryEncoding> {
                Ok($crate::rotary::RotaryEncoding::new(self.spec(ctx)?, device))
            }
        }
    };
}
pub(crate) use rotary_kind;

/// Shared checks: an even head dimension and a base > 1.
pub(crate) fn check_rotary(ctx: &EncodingContext, rope_theta: f64) -> Result<()> {
    if ctx.head_dim < 2 || !ctx.head_dim.is_multiple_of(2) {
        return Err(ConfigError::new(
            "head_dim",
            format!("{} is not valid for a rotary encoding (allowed: even, ≥ 2)", ctx.head_dim),
        ));
    }
    crate::error::check_range("rope_theta", rope_theta, 1.0, f64::INFINITY, "> 1")
}

impl RotarySpec {
    /// A plain RoPE spec over `rotary_dim` channels, every pair rotated.
    pub fn rope(kind: &'static str, head_dim: usize, rotary_dim: usize, base: f64, layout: Layout) -> Self {
        let grid = rope_grid(base, rotary_dim);
        Self {
            kind,
            head_dim,
            rotary_dim,
            layout,
            rotated: vec![true; grid.len()],
            theta: grid.clone(),
            base_theta: grid,
            map: PairMap::Rotation,
            attention_factor: 1.0,
            xpos: None,
            dynamic: None,
        }
    }

    pub fn pairs(&self) -> usize {
        self.rotary_dim / 2
    }

    /// Keeps only the pairs where `keep(i)`; the others get angle 0 (identity).
    pub fn keep_pairs(mut self, keep: impl Fn(usize, f64) -> bool) -> Self {
        for i in 0..self.pairs() {
            let k = keep(i, self.base_theta[i]);
            self.rotated[i] = k;
            if !k {
                self.theta[i] = 0.0;
            }
        }
        self
    }

    /// θ_i for a context of `seq_len` tokens (differs from `theta` only under dynamic NTK).
    pub fn theta_at(&self, seq_len: usize) -> Vec<f64> {
        match self.dynamic {
            Some(dy) if seq_len > dy.original_len => {
                let r = self.rotary_dim as f64;
                let base = dy.base
                    * (dy.factor * seq_len as f64 / dy.original_len as f64 - (dy.factor - 1.0))
                        .powf(r / (r - 2.0));
                rope_grid(base, self.rotary_dim)
                    .into_iter()
                    .zip(&self.rotated)
                    .map(|(t, &k)| if k { t } else { 0.0 })
                    .collect()
            }
            _ => self.theta.clone(),
        }
    }

    /// The map `[[a, b], [c, d]]` of pair `i` at position `p` (f64), given θ_i and θ'.
    pub fn pair_map(&self, i: usize, theta_i: f64, p: f64, side: Side, theta_prime: f64) -> [[f64; 2]; 2] {
        let s = side.sign();
        match self.map {
            PairMap::Rotation => {
                let (sin, cos) = (p * theta_i).sin_cos();
                let mut g = self.attention_factor;
                if let Some((zeta, scale_base)) = &self.xpos {
                    g *= zeta[i].powf(s * p / scale_base);
                }
                [[g * cos, -g * sin], [g * sin, g * cos]]
            }
            PairMap::Hyperbolic { .. } => {
                let ep = (-s * p * (theta_prime - theta_i)).exp();
                let em = (-s * p * (theta_prime + theta_i)).exp();
                let (a, b) = ((ep + em) / 2.0, (ep - em) / 2.0);
                [[a, b], [b, a]]
            }
        }
    }

    /// Longest query block whose re-centred factors stay within e^±10; `None` = unbounded.
    pub fn query_block(&self, theta_prime: f64) -> Option<usize> {
        let rate = match (&self.map, &self.xpos) {
            (PairMap::Hyperbolic { .. }, _) => theta_prime + self.theta.iter().cloned().fold(0.0, f64::max),
            (PairMap::Rotation, Some((zeta, b))) => zeta.iter().map(|z| -z.ln() / b).fold(0.0, f64::max),
            _ => return None,
        };
        Some(((LOG_BUDGET / rate).floor() as usize).max(1))
    }
}

/// A rotary-class encoding as a Burn module. HoPE-Hyp's learnable damping is its only parameter:
/// θ' = max θ_i + softplus(raw) + 1e-6, so θ' > max θ_i holds for every value of `raw`.
#[derive(Module, Debug)]
pub struct RotaryEncoding {
    #[module(skip)]
    spec: RotarySpec,
    damping_raw: Option<Param<Tensor<1>>>,
    #[module(skip)]
    tables: TableCache,
    /// θ' as last read from the device (f64 bits; NaN = never): the re-centring guard of every
    /// `apply` uses it, so a forward reads θ' once (its position plan), not once per layer.
    #[module(skip)]
    theta_prime_seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

const DAMPING_EPS: f64 = 1e-6;

impl RotaryEncoding {
    pub fn new(spec: RotarySpec, device: &Device) -> Self {
        let damping_raw = match spec.map {
            PairMap::Hyperbolic { theta_prime, learnable: true } => {
                let margin = theta_prime - max_theta(&spec) - DAMPING_EPS;
                // inverse softplus of the margin
                let raw = if margin > 20.0 { margin } else { margin.exp_m1().ln() };
                Some(Param::from_tensor(Tensor::from_data(TensorData::new(vec![raw as f32], [1]), device)))
            }
            _ => None,
        };
        Self {
            spec,
            damping_raw,
            tables: TableCache::default(),
            theta_prime_seen: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(f64::NAN.to_bits())),
        }
    }

    pub fn spec(&self) -> &RotarySpec {
        &self.spec
    }

    /// θ' as a differentiable `[1]` tensor (HoPE-Hyp), `None` for other maps.
    pub fn theta_prime_tensor(&self, device: &Device) -> Option<Tensor<1>> {
        match (self.spec.map, &self.damping_raw) {
            (PairMap::Hyperbolic { .. }, Some(raw)) => {
                Some(softplus(raw.val(), 1.0).add_scalar(max_theta(&self.spec) + DAMPING_EPS))
            }
            (PairMap::Hyperbolic { theta_prime, .. }, None) => {
                Some(Tensor::from_data(TensorData::new(vec![theta_prime as f32], [1]), device))
            }
            _ => None,
        }
    }

    /// Current θ' on the host (HoPE-Hyp; 0 otherwise).
    pub fn theta_prime(&self) -> f64 {
        match (self.spec.map, &self.damping_raw) {
            (PairMap::Hyperbolic { .. }, Some(raw)) => {
                let r = raw.val().into_data().try_to_vec::<f32>().expect("f32 damping")[0] as f64;
                let sp = if r > 20.0 { r } else { r.exp().ln_1p() };
                let tp = max_theta(&self.spec) + sp + DAMPING_EPS;
                self.theta_prime_seen.store(tp.to_bits(), std::sync::atomic::Ordering::Relaxed);
                tp
            }
            (PairMap::Hyperbolic { theta_prime, .. }, None) => theta_prime,
            _ => 0.0,
        }
    }

    /// d(loss)/d(raw damping parameter) from `grads` (HoPE-Hyp with learnable θ').
    pub fn damping_grad(&self, grads: &burn::tensor::Gradients) -> Option<f64> {
        let g = self.damping_raw.as_ref()?.val().grad(grads)?;
        Some(g.into_data().convert::<f32>().try_to_vec::<f32>().ok()?[0] as f64)
    }

    /// Longest numerically safe query block (HoPE-Hyp, xPos); `None` = any length.
    pub fn query_block(&self) -> Option<usize> {
        self.spec.query_block(self.theta_prime())
    }

    /// [`Self::query_block`] from the θ' last read (reading it only if never read): for guards
    /// inside a forward whose plan has just read it. No device→host read per layer.
    pub fn query_block_seen(&self) -> Option<usize> {
        let seen = f64::from_bits(self.theta_prime_seen.load(std::sync::atomic::Ordering::Relaxed));
        if seen.is_nan() { self.query_block() } else { self.spec.query_block(seen) }
    }

    /// Applies the map to `x: [batch, heads, seq, head_dim]` whose token s of sequence b sits at
    /// (already re-centred) position `starts[b] + s` (`starts` of length 1 applies to all).
    /// `context_len` is the current context length (dynamic NTK reads it).
    /// Uses the fused kernel on CubeCL devices (f32) and the reference elsewhere.
    pub fn apply(&self, x: Tensor<4>, starts: &[i64], side: Side, context_len: usize) -> Tensor<4> {
        #[cfg(feature = "cube")]
        if fused::is_cube(&x.device()) && x.dtype() == burn::tensor::DType::F32 {
            reference::check_centred(self, starts, x.dims()[2], side);
            return fused::apply(self, x, starts, side, context_len);
        }
        reference::apply(self, x, starts, side, context_len)
    }

    /// Applies the maps to a query block and its keys, re-centred on each sequence's first query
    /// position `q_starts[b]` (exact: scores depend on m − n only). Keys start at `k_starts[b]`.
    pub fn apply_qk(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        q_starts: &[usize],
        k_starts: &[usize],
        context_len: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let q_rel = vec![0i64; q_starts.len()];
        let k_rel: Vec<i64> = if k_starts.len() == q_starts.len() {
            k_starts.iter().zip(q_starts).map(|(&k, &q)| k as i64 - q as i64).collect()
        } else {
            assert!(
                q_starts.len() == 1 || k_starts.len() == 1,
                "start offsets: one per sequence or one for all"
            );
            let n = q_starts.len().max(k_starts.len());
            (0..n)
                .map(|b| {
                    k_starts[b.min(k_starts.len() - 1)] as i64 - q_starts[b.min(q_starts.len() - 1)] as i64
                })
                .collect()
        };
        (self.apply(q, &q_rel, Side::Query, context_len), self.apply(k, &k_rel, Side::Key, context_len))
    }

    /// `M_i(Δ)` with `score_i = q_iᵀ M_i(Δ) k_i` (query at Δ, key at 0), per pair, in f64.
    pub fn score_matrices(&self, distance: usize, context_len: usize) -> Vec<[[f64; 2]; 2]> {
        let theta = self.spec.theta_at(context_len);
        let tp = self.theta_prime();
        (0..self.spec.pairs())
            .map(|i| {
                let a = self.spec.pair_map(i, theta[i], distance as f64, Side::Query, tp);
                let b = self.spec.pair_map(i, theta[i], 0.0, Side::Key, tp);
                // Aᵀ B
                let mut m = [[0.0; 2]; 2];
                for r in 0..2 {
                    for c in 0..2 {
                        m[r][c] = a[0][r] * b[0][c] + a[1][r] * b[1][c];
                    }
                }
                m
            })
            .collect()
    }
}

fn max_theta(spec: &RotarySpec) -> f64 {
    spec.theta.iter().cloned().fold(0.0, f64::max)
}

impl PositionalEncoding for RotaryEncoding {
    fn class(&self) -> EncodingClass {
        EncodingClass::Rotary
    }

    fn rotary(&self) -> Option<&RotaryEncoding> {
        Some(self)
    }

    fn inspect(&self, distances: &[usize], _device: &Device) -> Inspection {
        let s = &self.spec;
        let ctx = EncodingContext::new(s.head_dim, 0, None);
        let mut out = Inspection::new(s.kind, EncodingClass::Rotary, ctx);
        out.layout = Some(s.layout.name().to_string());
        out.pass_through_channels = s.head_dim - s.rotary_dim;
        out.pairs = (0..s.pairs())
            .map(|i| PairInfo {
                index: i,
                channels: s.layout.channels(i, s.rotary_dim),
                theta: s.theta[i],
                base_theta: s.base_theta[i],
                rotated: s.rotated[i],
            })
            .collect();
        let kept = s.rotated.iter().filter(|&&k| k).count();
        out.notes.push(format!("{kept} of {} pairs rotated", s.pairs()));
        if let PairMap::Hyperbolic { learnable, .. } = s.map {
            let tp = self.theta_prime();
            out.notes.push(format!(
                "theta' = {tp:.6e} ({}), max theta_i = {:.6e}, margin = {:.6e}",
                if learnable { "learnable" } else { "fixed" },
                max_theta(s),
                tp - max_theta(s)
            ));
        }
        if s.attention_factor != 1.0 {
            out.notes.push(format!("attention factor {:.6} on cos and sin", s.attention_factor));
        }
        if let Some(b) = self.query_block() {
            out.notes.push(format!("re-centred per query block of ≤ {b} positions"));
        }
        let ctx_len = distances.iter().copied().max().unwrap_or(0) + 1;
        out.distances = distances
            .iter()
            .map(|&d| AtDistance {
                distance: d,
                matrices: Some(self.score_matrices(d, ctx_len)),
                bias: None,
                embedding_norm: None,
            })
            .collect();
        out
    }
}
