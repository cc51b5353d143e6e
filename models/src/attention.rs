//! Causal multi-head self-attention that takes any encoding: rotary maps on q/k (re-centred per
//! query block), a bias on the logits, or nothing (embedding class acts on the input). Runs the
//! fused kernel when the plan says so (CubeCL devices), else the reference tensor ops.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use pezoo_encodings::{PositionalEncoding, attention};

use crate::layers::{linear, linear_cols};
use crate::plan::PositionPlan;

/// What one layer exposes for analysis.
#[derive(Debug)]
pub struct LayerCapture {
    /// Attention probabilities `[batch, heads, seq, seq]` (zero above the diagonal).
    pub probs: Tensor<4>,
    /// Queries and keys before the encoding's map, `[batch, heads, seq, head_dim]`.
    pub q: Tensor<4>,
    pub k: Tensor<4>,
}

#[derive(Module, Debug)]
pub struct Attention {
    qkv: Linear,
    out: Linear,
    n_heads: usize,
}

impl Attention {
    pub fn new(d_model: usize, n_heads: usize, device: &Device) -> Self {
        Self {
            qkv: LinearConfig::new(d_model, 3 * d_model).with_bias(false).init(device),
            out: LinearConfig::new(d_model, d_model).with_bias(false).init(device),
            n_heads,
        }
    }

    /// `x: [batch, seq, d_model]` whose first token sits at absolute position
    /// `plan.start + plan.past`, attended in the plan's query blocks. With `capture`, also returns the probabilities and
    /// the un-encoded q and k. With `cache` (generation), `x` holds the `plan.seq − plan.past`
    /// new tokens; their un-encoded keys and values are appended to the cache, and they attend
    /// to all of it (encodings are applied afresh at every step, so HoPE-Hyp re-centres).
    pub fn forward(
        &self,
        x: Tensor<3>,
        enc: &dyn PositionalEncoding,
        plan: &PositionPlan,
        capture: bool,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> (Tensor<3>, Option<LayerCapture>) {
        let [b, s_new, d] = x.dims();
        let (h, dh) = (self.n_heads, d / self.n_heads);
        let device = x.device();
        let f = plan.fused_layers;
        // q, k, v each from its columns of the qkv weight, `[batch, heads, seq, head_dim]`: the
        // split's backward fills three `[d, 3d]` weight gradients, not three `[3, b, h, s, dh]`.
        let heads = |t: Tensor<3>| t.reshape([b, s_new, h, dh]).swap_dims(1, 2);
        let proj = |i: usize, scale: f64| heads(linear_cols(&self.qkv, x.clone(), i * d, d, scale, f));
        // q scaled through its weight (d² values) rather than its values or the scores (b·s²).
        let q = proj(0, 1.0 / (dh as f64).sqrt());
        let q_raw = capture.then(|| proj(0, 1.0));
        let (k, v) = (proj(1, 1.0), proj(2, 1.0));
        let (k, v) = match cache {
            Some(c) => {
                let (k, v) = match c.take() {
                    Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
                    None => (k, v),
                };
                *c = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let s = plan.seq; // keys
        debug_assert_eq!((k.dims()[2], s_new), (s, s - plan.past), "the plan covers the cache");
        let start = plan.start;
        if plan.fused && !capture {
            let y = attention::encoded(q, k, v, enc, start, plan.table.clone())
                .expect("the plan picked the fused path for this device and encoding"); // [b, h, s, dh]
            return (linear(&self.out, y.swap_dims(1, 2).reshape([b, s_new, d]), f), None);
        }
        let rotary = enc.rotary();

        let mut outs = Vec::new();
        let mut probs = Vec::new();
        for (i, blk) in plan.blocks.iter().enumerate() {
            let (q0, nq, nk) = (blk.q0, blk.nq, blk.nk);
            let qc = if nq == s_new { q.clone() } else { q.clone().narrow(2, q0 - plan.past, nq) };
            let (kc, vc) = if nk == s {
                (k.clone(), v.clone())
            } else {
                (k.clone().narrow(2, 0, nk), v.clone().narrow(2, 0, nk))
            };
            let (qc, kc) = match rotary {
                Some(r) => r.apply_qk(qc, kc, &[start + q0], &[start], start + s),
                None => (qc, kc),
            };
            let mut scores = qc.matmul(kc.transpose()); // [b, h, nq, nk]
            if let Some(bias) = plan.bias(i, enc, &device) {
                scores = scores + bias;
            }
            let p = softmax(scores.mask_fill(plan.mask(i), f32::NEG_INFINITY), 3);
            outs.push(p.clone().matmul(vc)); // [b, h, nq, dh]
            if capture {
                let p = if nk < s {
                    Tensor::cat(vec![p, Tensor::zeros([b, h, nq, s - nk], &device)], 3)
                } else {
                    p
                };
                probs.push(p);
            }
        }
        let y = if outs.len() == 1 { outs.pop().unwrap() } else { Tensor::cat(outs, 2) };
        let y = linear(&self.out, y.swap_dims(1, 2).reshape([b, s_new, d]), f);
        let capture = q_raw.map(|q| LayerCapture { probs: Tensor::cat(probs, 2), q, k });
        (y, capture)
    }
}
