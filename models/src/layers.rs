//! Burn's `Linear` and `RmsNorm` applied through `pezoo_encodings::layers`: fused kernels on
//! flex when `fused` (the model's compute path), the reference tensor ops everywhere else.

use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use pezoo_encodings::layers;

/// `l` applied to `x: [.., d_in]`, as one 2-D product over all rows.
pub fn linear<const D: usize>(l: &Linear, x: Tensor<D>, fused: bool) -> Tensor<D> {
    let [_, d_out] = l.weight.dims();
    linear_cols(l, x, 0, d_out, 1.0, fused)
}

/// Output columns `c0..c0 + n` of `l` applied to `x`, times `scale` (one of q, k, v from a
/// joint projection): the product with those columns of the weight only, the scale applied to
/// them (and the bias) rather than to the output.
pub fn linear_cols<const D: usize>(
    l: &Linear,
    x: Tensor<D>,
    c0: usize,
    n: usize,
    scale: f64,
    fused: bool,
) -> Tensor<D> {
    let [_, d_out] = l.weight.dims();
    let cols = |t: Tensor<2>| if c0 == 0 && n == d_out { t } else { t.narrow(1, c0, n) };
    let scaled = |t: Tensor<2>| if scale == 1.0 { t } else { t.mul_scalar(scale) };
    let y = layers::linear(x, scaled(cols(l.weight.val())), fused);
    match &l.bias {
        Some(b) => {
            let b = if c0 == 0 && n == d_out { b.val() } else { b.val().narrow(0, c0, n) };
            y + (if scale == 1.0 { b } else { b.mul_scalar(scale) }).unsqueeze()
        }
        None => y,
    }
}

/// `n` applied to `x: [.., d]`.
pub fn rms_norm<const D: usize>(n: &RmsNorm, x: Tensor<D>, fused: bool) -> Tensor<D> {
    layers::rms_norm(x, n.gamma.val(), n.epsilon, fused)
}
