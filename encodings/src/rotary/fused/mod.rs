//! Fused rotary kernels (forward and backward) as a Burn backend extension, used automatically
//! by [`super::RotaryEncoding::apply`] on CubeCL devices (wgpu, vulkan, metal, cuda, rocm, cpu),
//! with or without autodiff and Fusion. One kernel family for every rotary-class encoding: the
//! pair map is built in-kernel from the per-pair table (rotation with optional xPos scale and
//! YaRN factor, or HoPE-Hyp boost + damping); comptime flags pick layout, map, side and transpose.
//!
//! Backward: d/dx is the transposed map (the same kernel, `transpose = true`); for HoPE-Hyp,
//! d out/dθ' = −σp·out, so dL/dθ' = −σ Σ p⟨g, out⟩ over the rotated channels.

mod kernel;

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::Shape;
use burn_cubecl::CubeBackend;

/// The NaN-poison switch of every kernel (tests only; see [`crate::hooks`]).
#[cfg(feature = "test-hooks")]
pub use crate::hooks::POISON;
pub(crate) use kernel::exact_angle;

use super::{PairMap, RotaryEncoding, Side};

#[backend_extension(Cube, Fusion, Autodiff)]
pub trait RotaryBackend: Backend {
    #[fusion(dtype = x, shape = x)]
    #[allow(clippy::too_many_arguments)]
    fn rotary_map(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        pos: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        interleaved: bool,
        hyperbolic: bool,
        key_side: bool,
        transpose: bool,
        scaled: bool,
    ) -> FloatTensor<Self>;

    /// Benchmark floor: a plain elementwise `x·1.5` launched like the rotary kernel. Not
    /// differentiable (benchmarks time its forward; the backward of an elementwise map is one
    /// more such pass).
    #[fusion(dtype = x, shape = x)]
    fn elementwise_floor(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The sinusoidal position table `[positions, 2·pairs]` from the angle split `table` and
    /// `pos: [positions]`; a constant (no backward).
    #[fusion(meta = |table, pos| TensorSpec::new(Shape::new([pos.shape[0], 2 * table.shape[0]]), table.dtype))]
    fn sinusoidal_table(table: FloatTensor<Self>, pos: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl RotaryBackend for CubeBackend {
    fn rotary_map(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        pos: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        interleaved: bool,
        hyperbolic: bool,
        key_side: bool,
        transpose: bool,
        scaled: bool,
    ) -> FloatTensor<Self> {
        kernel::launch(x, table, pos, scal, interleaved, hyperbolic, key_side, transpose, scaled)
    }

    fn elementwise_floor(x: FloatTensor<Self>) -> FloatTensor<Self> {
        kernel::launch_scale(x)
    }

    fn sinusoidal_table(table: FloatTensor<Self>, pos: FloatTensor<Self>) -> FloatTensor<Self> {
        kernel::launch_sinusoidal(table, pos)
    }
}

#[derive(Debug, Clone)]
struct Flags {
    interleaved: bool,
    hyperbolic: bool,
    key_side: bool,
    transpose: bool,
    scaled: bool,
}

impl<B: RotaryBackend, C: CheckpointStrategy> RotaryBackend for Autodiff<B, C> {
    fn elementwise_floor(_x: FloatTensor<Self>) -> FloatTensor<Self> {
        panic!("elementwise_floor is a benchmark primitive without a backward: call it outside autodiff")
    }

    fn sinusoidal_table(table: FloatTensor<Self>, pos: FloatTensor<Self>) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::sinusoidal_table(table.into_primitive(), pos.into_primitive()))
    }

    fn rotary_map(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        pos: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        interleaved: bool,
        hyperbolic: bool,
        key_side: bool,
        transpose: bool,
        scaled: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RotaryBackward;

        impl<B: RotaryBackend> Backward<B, 2> for RotaryBackward {
            type State = (NodeId, NodeId, NodeId, Option<FloatTensor<B>>, Flags);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
                let [node_x, node_scal] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (table_id, pos_id, scal_id, out, f) = ops.state;
                let table: FloatTensor<B> = ckpt.retrieve_node_output(table_id);
                let pos: FloatTensor<B> = ckpt.retrieve_node_output(pos_id);
                let scal: FloatTensor<B> = ckpt.retrieve_node_output(scal_id);
                if let (Some(node), Some(out)) = (node_scal, out) {
                    // dL/dθ' = −σ Σ p ⟨g, out⟩ over rotated channels; the attention factor has no
                    // gradient (it is a constant of the config).
                    let shape = out.shape();
                    let [b, h, s] = [shape[0], shape[1], shape[2]];
                    let r = 2 * table.shape()[0];
                    let prod = B::float_mul(g.clone(), out);
                    let prod = B::float_slice(
                        prod,
                        &[
                            burn::tensor::Slice::full(),
                            burn::tensor::Slice::full(),
                            burn::tensor::Slice::full(),
                            burn::tensor::Slice::new(0, Some(r as isize), 1),
                        ],
                    );
                    let per_pos = B::float_sum_dim(prod, 3); // [b, h, s, 1]
                    let nb = pos.shape()[0];
                    let p = B::float_reshape(pos.clone(), Shape::new([nb, 1, s, 1]));
                    let p = B::float_expand(p, Shape::new([b, h, s, 1]));
                    let total = B::float_sum(B::float_mul(per_pos, p)); // [1]
                    let sigma = if f.key_side { -1.0 } else { 1.0 };
                    let dtp = B::float_mul_scalar(B::float_reshape(total, Shape::new([1])), (-sigma).into());
                    let zero = B::float_mul_scalar(dtp.clone(), 0.0.into());
                    grads.register::<B>(node.id, B::float_cat(vec![dtp, zero], 0));
                }
                if let Some(node) = node_x {
                    let gx = B::rotary_map(
                        g,
                        table,
                        pos,
                        scal,
                        f.interleaved,
                        f.hyperbolic,
                        f.key_side,
                        !f.transpose,
                        f.scaled,
                    );
                    grads.register::<B>(node.id, gx);
                }
            }
        }

        let flags = Flags { interleaved, hyperbolic, key_side, transpose, scaled };
        let need_out = hyperbolic && scal.is_tracked();
        match RotaryBackward.prepare::<C>([x.node(), scal.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let ids = (prep.checkpoint(&table), prep.checkpoint(&pos), prep.checkpoint(&scal));
                let out = B::rotary_map(
                    x.into_primitive(),
                    table.into_primitive(),
                    pos.into_primitive(),
                    scal.into_primitive(),
                    interleaved,
                    hyperbolic,
                    key_side,
                    transpose,
                    scaled,
                );
                let kept = need_out.then(|| out.clone());
                prep.finish((ids.0, ids.1, ids.2, kept, flags), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotary_map(
                x.into_primitive(),
                table.into_primitive(),
                pos.into_primitive(),
                scal.into_primitive(),
                interleaved,
                hyperbolic,
                key_side,
                transpose,
                scaled,
            )),
        }
    }
}

/// [`RotaryBackend::elementwise_floor`] on a tensor (benchmarks; CubeCL devices, no autodiff).
pub fn elementwise_floor(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::elementwise_floor(x.into_dispatch()))
}

/// The sinusoidal table `[positions, 2·ω.len()]` (`sin, cos` of p·ω_i interleaved) through the
/// kernel (angles reduced mod 2π exactly, accurate to ~1e-6 rad up to position 2²⁴, as the rotary
/// maps'); `omega` in radians per position.
pub fn sinusoidal_table(omega: &[f64], positions: std::ops::Range<usize>, device: &Device) -> Tensor<2> {
    let table: Vec<f32> = omega
        .iter()
        .flat_map(|&w| {
            let f = w / (2.0 * std::f64::consts::PI);
            let (fa, fb) = (top12(f), top12(f - top12(f)));
            [fa as f32, fb as f32, (f - fa - fb) as f32, 0.0]
        })
        .collect();
    let n = positions.len();
    let pos: Vec<f32> = positions.map(|p| p as f32).collect();
    let table = Tensor::<2>::from_data(TensorData::new(table, [omega.len(), 4]), device);
    let pos = Tensor::<1>::from_data(TensorData::new(pos, [n]), device);
    Tensor::from_dispatch(Dispatch::sinusoidal_table(table.into_dispatch(), pos.into_dispatch()))
}

/// Whether `device` runs CubeCL kernels (directly or under autodiff).
pub fn is_cube(device: &Device) -> bool {
    matches!(device.as_dispatch().clone().inner(), DispatchDevice::Cube(_))
}

/// 12 significant bits of `v` (so products with 12-bit integers are exact in f32).
fn top12(v: f64) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    let q = 2f64.powi(v.abs().log2().floor() as i32 - 11);
    (v / q).round() * q
}

/// The fused path of [`RotaryEncoding::apply`] (same contract); the device must be CubeCL.
pub fn apply(
    enc: &RotaryEncoding,
    x: Tensor<4>,
    starts: &[i64],
    side: Side,
    context_len: usize,
) -> Tensor<4> {
    launch(enc, x, starts, side, context_len, false)
}

/// The transposed map Mᵀx — what the backward pass applies to the output gradient. Exposed for
/// benchmarks (kernel-only forward + backward) and tests.
pub fn apply_transposed(
    enc: &RotaryEncoding,
    x: Tensor<4>,
    starts: &[i64],
    side: Side,
    context_len: usize,
) -> Tensor<4> {
    launch(enc, x, starts, side, context_len, true)
}

/// The kernel's per-pair table `[pairs, 4]` (angle split f_a, f_b, f_c and xPos log-scale, or
/// θ_i for HoPE-Hyp) and its scalars `[θ' (differentiable), attention factor]`.
pub fn map_tensors(enc: &RotaryEncoding, context_len: usize, device: &Device) -> (Tensor<2>, Tensor<1>) {
    let spec = enc.spec();
    let theta = spec.theta_at(context_len);
    let hyperbolic = matches!(spec.map, PairMap::Hyperbolic { .. });
    let mut table = Vec::with_capacity(theta.len() * 4);
    for (i, &t) in theta.iter().enumerate() {
        if hyperbolic {
            table.extend([t as f32, 0.0, 0.0, 0.0]);
        } else {
            let f = t / (2.0 * std::f64::consts::PI);
            let fa = top12(f);
            let fb = top12(f - fa);
            let w = spec.xpos.as_ref().map_or(0.0, |(zeta, b)| zeta[i].ln() / b);
            table.extend([fa as f32, fb as f32, (f - fa - fb) as f32, w as f32]);
        }
    }
    let table = Tensor::<2>::from_data(TensorData::new(table, [theta.len(), 4]), device);
    let factor = Tensor::<1>::from_data(TensorData::new(vec![spec.attention_factor as f32], [1]), device);
    let tp = enc
        .theta_prime_tensor(device)
        .unwrap_or_else(|| Tensor::from_data(TensorData::new(vec![0f32], [1]), device));
    (table, Tensor::cat(vec![tp, factor], 0))
}

fn launch(
    enc: &RotaryEncoding,
    x: Tensor<4>,
    starts: &[i64],
    side: Side,
    context_len: usize,
    transpose: bool,
) -> Tensor<4> {
    let [batch, _, seq, _] = x.dims();
    assert!(starts.len() == 1 || starts.len() == batch, "start offsets: one per sequence or one for all");
    let pos: Vec<f32> = starts.iter().flat_map(|&p0| (0..seq).map(move |s| (p0 + s as i64) as f32)).collect();
    let pos = Tensor::<2>::from_data(TensorData::new(pos, [starts.len(), seq]), &x.device());
    let spec = enc.spec();
    assert_eq!(x.dims()[3], spec.head_dim, "head_dim of the input differs from the encoding's");
    let (table, scal) = map_tensors(enc, context_len, &x.device());
    Tensor::from_dispatch(Dispatch::rotary_map(
        x.into_dispatch(),
        table.into_dispatch(),
        pos.into_dispatch(),
        scal.into_dispatch(),
        spec.layout == super::Layout::Interleaved,
        matches!(spec.map, PairMap::Hyperbolic { .. }),
        side == Side::Key,
        transpose,
        spec.xpos.is_some(),
    ))
}
