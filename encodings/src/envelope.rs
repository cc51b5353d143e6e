//! The score envelope (HoPE-Hyp paper, figs. 4–5): the attention logit as a function of the
//! query–key distance Δ, for fixed and for random q and k — for any encoding, no checkpoint.
//!
//! The logit of a query at position Δ and a key at 0 as attention forms it, with identity
//! projections: the content score scaled by 1/√d, then the bias added (so bias and content
//! have the sizes they have in the model):
//! - rotary: `(Σ_i q_iᵀ M_i(Δ) k_i + q·k over pass-through channels) / √head_dim`;
//! - bias: `q·k / √head_dim + b_h(Δ)`, one curve per head;
//! - embedding: `(q + p_Δ)·(k + p_0) / √d_model` with the added vectors p (q, k ∈ ℝ^d_model).
//!
//! Curves: `fixed` (q = k = 1, RoFormer's long-term-decay setting), `random_mean`/`random_std`
//! (q, k independent N(0, I), `samples` draws shared by every Δ) and `matched_mean` (k = q:
//! a token attending to itself at distance Δ).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::registry::{EncodingClass, EncodingConfig, EncodingContext};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeCurve {
    /// Head (bias class); 0 for the others.
    pub head: usize,
    pub fixed: Vec<f64>,
    pub random_mean: Vec<f64>,
    pub random_std: Vec<f64>,
    pub matched_mean: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub kind: String,
    pub class: EncodingClass,
    pub distances: Vec<usize>,
    pub samples: usize,
    pub curves: Vec<EnvelopeCurve>,
}

/// A standard normal stream (SplitMix64 + Box–Muller): reproducible from `seed`, no dependency.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn sample(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn vector(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.sample()).collect()
    }
}

/// One curve from `score(q, k, Δ index)` over the distances.
fn curve(
    head: usize,
    dim: usize,
    n_dist: usize,
    samples: usize,
    seed: u64,
    score: impl Fn(&[f64], &[f64], usize) -> f64,
) -> EnvelopeCurve {
    let ones = vec![1.0; dim];
    let fixed = (0..n_dist).map(|j| score(&ones, &ones, j)).collect();
    let mut rng = Normal(seed);
    let (mut sum, mut sq, mut matched) = (vec![0.0; n_dist], vec![0.0; n_dist], vec![0.0; n_dist]);
    for _ in 0..samples {
        let (q, k) = (rng.vector(dim), rng.vector(dim));
        for j in 0..n_dist {
            let s = score(&q, &k, j);
            sum[j] += s;
            sq[j] += s * s;
            matched[j] += score(&q, &q, j);
        }
    }
    let n = samples.max(1) as f64;
    let random_mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let random_std = sq.iter().zip(&random_mean).map(|(s, m)| (s / n - m * m).max(0.0).sqrt()).collect();
    EnvelopeCurve {
        head,
        fixed,
        random_mean,
        random_std,
        matched_mean: matched.iter().map(|s| s / n).collect(),
    }
}

/// The envelope of `config` at `distances` (see the module docs).
pub fn envelope(
    config: &EncodingConfig,
    ctx: &EncodingContext,
    distances: &[usize],
    samples: usize,
    seed: u64,
    device: &Device,
) -> Result<Envelope, ConfigError> {
    let enc = config.init(ctx, device)?;
    let enc = enc.as_dyn();
    let ins = enc.inspect(distances, device);
    let nd = ins.distances.len();
    let scale = 1.0 / (ctx.head_dim as f64).sqrt();
    let curves = match ins.class {
        EncodingClass::Rotary => {
            let pairs: Vec<[usize; 2]> = ins.pairs.iter().map(|p| p.channels).collect();
            let mut pass: Vec<usize> = (0..ctx.head_dim).collect();
            pass.retain(|c| !pairs.iter().any(|p| p.contains(c)));
            let mats: Vec<&Vec<[[f64; 2]; 2]>> =
                ins.distances.iter().map(|d| d.matrices.as_ref().expect("rotary matrices")).collect();
            vec![curve(0, ctx.head_dim, nd, samples, seed, |q, k, j| {
                let rotated: f64 = pairs
                    .iter()
                    .zip(mats[j])
                    .map(|(&[a, b], m)| {
                        q[a] * (m[0][0] * k[a] + m[0][1] * k[b]) + q[b] * (m[1][0] * k[a] + m[1][1] * k[b])
                    })
                    .sum();
                (rotated + pass.iter().map(|&c| q[c] * k[c]).sum::<f64>()) * scale
            })]
        }
        EncodingClass::Bias => (0..ctx.n_heads.max(1))
            .map(|h| {
                let bias: Vec<f64> =
                    ins.distances.iter().map(|d| d.bias.as_ref().map_or(0.0, |b| b[h])).collect();
                curve(h, ctx.head_dim, nd, samples, seed, |q, k, j| {
                    q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() * scale + bias[j]
                })
            })
            .collect(),
        EncodingClass::Embedding => {
            let d = ctx.d_model;
            let pe = |p: usize| -> Vec<f64> {
                enc.position_embedding(p..p + 1, device).map_or(vec![0.0; d], |t| {
                    t.into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .expect("f32")
                        .into_iter()
                        .map(f64::from)
                        .collect()
                })
            };
            let p0 = pe(0);
            let pd: Vec<Vec<f64>> = ins.distances.iter().map(|x| pe(x.distance)).collect();
            let scale = 1.0 / (d as f64).sqrt();
            vec![curve(0, d, nd, samples, seed, |q, k, j| {
                (0..d).map(|c| (q[c] + pd[j][c]) * (k[c] + p0[c])).sum::<f64>() * scale
            })]
        }
    };
    Ok(Envelope {
        kind: config.kind().to_string(),
        class: ins.class,
        distances: ins.distances.iter().map(|d| d.distance).collect(),
        samples,
        curves,
    })
}
