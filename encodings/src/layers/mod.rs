//! The model's layer ops fused on flex (CPU): the linear products, SwiGLU and RMSNorm, forward
//! and backward, as one autodiff node each. On every other device (and with `fused = false`)
//! they are the reference tensor ops, so results are the same up to f32 rounding.
//!
//! Why (issue 9, `docs/performance.md`): on flex each tensor op allocates its output through a
//! zero-fill and a copy, and its elementwise kernels run on one thread. A profile of `zoo bench
//! train` had ~27 % of the main thread in the matmuls' output allocation alone, and SiLU's
//! backward (a sigmoid recomputed through four ops) ~14 %. Here a product writes straight into an
//! uninitialised buffer (gemm, parallel as flex's own), SwiGLU is one parallel pass each way with
//! a vectorisable exp, and RMSNorm one pass per row each way. They live beside the flex attention
//! kernel, whose gemm wrapper and exp they share.

#[cfg(feature = "flex")]
mod backend;
#[cfg(feature = "flex")]
mod flex;

use burn::prelude::*;
use burn::tensor::activation::silu;

/// Whether the fused layer ops run on `device` (flex, compiled in).
pub fn available(device: &Device) -> bool {
    crate::attention::on_flex(device)
}

#[cfg(feature = "flex")]
fn fused_f32<const D: usize>(fused: bool, ts: &[&Tensor<D>]) -> bool {
    fused && available(&ts[0].device()) && ts.iter().all(|t| t.dtype() == burn::tensor::DType::F32)
}

/// `a · b` for `a: [m, k]`, `b: [k, n]` (any strides: a transposed view is read in place).
pub fn matmul(a: Tensor<2>, b: Tensor<2>, fused: bool) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if fused_f32(fused, &[&a, &b]) {
        use backend::LayerBackend;
        use burn::backend::Dispatch;
        let [(m, k), (k2, n)] = [a.dims(), b.dims()].map(|[r, c]| (r, c));
        assert_eq!(k, k2, "matmul: [{m}, {k}] · [{k2}, {n}]");
        return Tensor::from_dispatch(Dispatch::layer_matmul(a.into_dispatch(), b.into_dispatch()));
    }
    let _ = fused;
    a.matmul(b)
}

/// A linear map of the last dimension, `x: [.., d_in]` · `weight: [d_in, d_out]` (Burn's
/// `Linear` layout), as one 2-D product over all rows: the weight's gradient is then one
/// `xᵀ · dy` product, not one per batch entry summed afterwards.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, fused: bool) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    assert_eq!(dims[D - 1], d_in, "linear: input's last dimension against the weight's rows");
    let rows = dims[..D - 1].iter().product();
    let mut out = dims;
    out[D - 1] = d_out;
    matmul(x.reshape([rows, d_in]), weight, fused).reshape(out)
}

/// `silu(gate) · up`, elementwise (SwiGLU's gating).
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>, fused: bool) -> Tensor<D> {
    assert_eq!(gate.dims(), up.dims(), "swiglu: gate and up of one shape");
    #[cfg(feature = "flex")]
    if fused_f32(fused, &[&gate, &up]) {
        use backend::LayerBackend;
        use burn::backend::Dispatch;
        let y = Dispatch::layer_swiglu(gate.into_dispatch(), up.into_dispatch());
        return Tensor::from_dispatch(y);
    }
    let _ = fused;
    silu(gate) * up
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · gamma` (Burn's `RmsNorm`).
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64, fused: bool) -> Tensor<D> {
    let dims = x.dims();
    assert_eq!(gamma.dims()[0], dims[D - 1], "rms_norm: gamma against the last dimension");
    #[cfg(feature = "flex")]
    if fused_f32(fused, &[&x]) && gamma.dtype() == burn::tensor::DType::F32 {
        use backend::LayerBackend;
        use burn::backend::Dispatch;
        let d = dims[D - 1];
        let x = x.reshape([dims.iter().product::<usize>() / d.max(1), d]);
        let y = Dispatch::layer_rms_norm(x.into_dispatch(), gamma.into_dispatch(), eps);
        return Tensor::<2>::from_dispatch(y).reshape(dims);
    }
    let _ = fused;
    rms_norm_reference(x, gamma, eps)
}

/// Burn's `RmsNorm::forward` for f32 inputs, as tensor ops (Burn also casts other dtypes to f32
/// for the mean; this reference takes the mean in the input's dtype).
pub fn rms_norm_reference<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    (x / rms) * gamma.unsqueeze()
}
