//! Causal multi-head self-attention that takes any encoding: rotary maps on q/k (re-centred per
//! query block), a bias on the logits, or nothing (embedding class acts on the input).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use pezoo_encodings::PositionalEncoding;

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

/// `[1, 1, q, k]` additive causal mask for queries at `q0..q0+q` and keys at `0..k` (relative).
fn causal_mask(q0: usize, q: usize, k: usize, device: &Device) -> Tensor<4> {
    let v: Vec<f32> =
        (0..q).flat_map(|i| (0..k).map(move |j| if j > q0 + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_data(TensorData::new(v, [1, 1, q, k]), device)
}

impl Attention {
    pub fn new(d_model: usize, n_heads: usize, device: &Device) -> Self {
        Self {
            qkv: LinearConfig::new(d_model, 3 * d_model).with_bias(false).init(device),
            out: LinearConfig::new(d_model, d_model).with_bias(false).init(device),
            n_heads,
        }
    }

    /// `x: [batch, seq, d_model]` whose first token sits at absolute position `start`.
    /// With `capture`, also returns the probabilities and the un-encoded q and k.
    /// Queries are processed in blocks of at most `max_block` (memory) and of the encoding's
    /// numerically safe block (HoPE-Hyp, xPos).
    pub fn forward(
        &self,
        x: Tensor<3>,
        enc: &dyn PositionalEncoding,
        start: usize,
        max_block: Option<usize>,
        capture: bool,
    ) -> (Tensor<3>, Option<LayerCapture>) {
        let [b, s, d] = x.dims();
        let (h, dh) = (self.n_heads, d / self.n_heads);
        let device = x.device();
        let qkv = self.qkv.forward(x).reshape([b, s, 3, h, dh]).permute([2, 0, 3, 1, 4]); // [3, b, h, s, dh]
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, h, s, dh]);
        let (q, k, v) = (part(0), part(1), part(2));
        let rotary = enc.rotary();
        let safe = rotary.and_then(|r| r.query_block());
        let block = [Some(s), safe, max_block].into_iter().flatten().min().unwrap_or(s).max(1);
        let scale = 1.0 / (dh as f64).sqrt();

        let mut outs = Vec::new();
        let mut probs = Vec::new();
        for q0 in (0..s).step_by(block) {
            let (nq, nk) = ((s - q0).min(block), q0 + (s - q0).min(block)); // keys 0..q0+nq
            let qc = q.clone().narrow(2, q0, nq);
            let (kc, vc) = (k.clone().narrow(2, 0, nk), v.clone().narrow(2, 0, nk));
            let (qc, kc) = match rotary {
                Some(r) => r.apply_qk(qc, kc, &[start + q0], &[start], start + s),
                None => (qc, kc),
            };
            let mut scores = qc.matmul(kc.transpose()).mul_scalar(scale); // [b, h, nq, nk]
            if let Some(bias) = enc.attention_bias(start + q0..start + q0 + nq, start..start + nk, &device) {
                scores = scores + bias.unsqueeze_dim::<4>(0);
            }
            let p = softmax(scores + causal_mask(q0, nq, nk, &device), 3);
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
        let y = self.out.forward(y.swap_dims(1, 2).reshape([b, s, d]));
        (y, capture.then(|| LayerCapture { probs: Tensor::cat(probs, 2), q, k }))
    }
}
