//! Bias class: a per-head function of (query m, key n) added to the attention logits.
//! Every bias is computed for a block of absolute query × key positions, so attention can be
//! evaluated in query chunks at any length without materialising `[heads, L, L]` at once.

pub mod alibi;
pub mod fire;
pub mod kerple;
pub mod t5;

use std::ops::Range;

use burn::prelude::*;

use crate::inspect::{AtDistance, Inspection};
use crate::registry::{EncodingClass, EncodingContext, PositionalEncoding};

/// Δ = m − n for every (query m, key n) of the block, `[queries, keys]`, row-major f32.
pub fn distances(queries: &Range<usize>, keys: &Range<usize>) -> Vec<f32> {
    queries.clone().flat_map(|m| keys.clone().map(move |n| m as f32 - n as f32)).collect()
}

/// `[queries, keys]` tensor of Δ = m − n.
pub fn distance_tensor(queries: &Range<usize>, keys: &Range<usize>, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(distances(queries, keys), [queries.len(), keys.len()]), device)
}

/// Inspection of a bias-class encoding: `b_h(Δ)` for a query at position Δ and a key at 0.
pub(crate) fn inspect_bias(
    enc: &dyn PositionalEncoding,
    kind: &str,
    ctx: EncodingContext,
    distances: &[usize],
    device: &Device,
) -> Inspection {
    let mut out = Inspection::new(kind, EncodingClass::Bias, ctx);
    out.distances = distances
        .iter()
        .map(|&d| {
            let b = enc.attention_bias(d..d + 1, 0..1, device).expect("bias-class encodings return a bias");
            let bias = b.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 bias");
            AtDistance {
                distance: d,
                matrices: None,
                bias: Some(bias.into_iter().map(f64::from).collect()),
                embedding_norm: None,
            }
        })
        .collect();
    out
}
