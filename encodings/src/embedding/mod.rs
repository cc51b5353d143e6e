//! Embedding class: a vector added to the token embeddings (NoPE adds nothing).

pub mod learned;
pub mod nope;
pub mod sinusoidal;

use burn::prelude::*;

use crate::inspect::{AtDistance, Inspection};
use crate::registry::{EncodingClass, EncodingContext, PositionalEncoding};

/// Inspection of an embedding-class encoding: ‖PE(Δ)‖ per position Δ.
pub(crate) fn inspect_embedding(
    enc: &dyn PositionalEncoding,
    kind: &str,
    ctx: EncodingContext,
    distances: &[usize],
    device: &Device,
) -> Inspection {
    let mut out = Inspection::new(kind, EncodingClass::Embedding, ctx);
    let limit = enc.max_positions().unwrap_or(usize::MAX);
    out.distances = distances
        .iter()
        .filter(|&&d| d < limit)
        .map(|&d| {
            let norm = enc.position_embedding(d..d + 1, device).map(|pe| {
                let v = pe.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 embedding");
                v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
            });
            AtDistance { distance: d, matrices: None, bias: None, embedding_norm: Some(norm.unwrap_or(0.0)) }
        })
        .collect();
    out
}
