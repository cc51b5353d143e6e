//! The CubeCL kernel: one thread per (row, pair slot) of `x: [batch, heads, seq, head_dim]`.
//!
//! Angles are formed in-kernel from the position and the per-pair frequency, exactly in f32:
//! with f = θ_i/2π split on the host into f_a + f_b (12 significant bits each) + f_c, and the
//! position p = 4096·p₁ + p₀ (|p₀|, |p₁| < 4096), every product p₀·f_a, (4096·p₁)·f_a, p₀·f_b,
//! (4096·p₁)·f_b is exact in f32, so its fractional part is exact; p·f_c is tiny. The angle in
//! turns is the fractional part of their sum: accurate to ~1e-6 rad at p = 1e6 and beyond
//! (exact integers in f32 reach 2^24).
//!
//! HoPE-Hyp: `e_± = exp(−σp(θ' ∓ θ_i))`, `a = d = (e_+ + e_−)/2`, `b = c = (e_+ − e_−)/2`, with
//! positions re-centred by the caller (`RotaryEncoding::apply_qk`), so no factor overflows.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::Shape;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, kernel::into_contiguous, ops::numeric::empty_device_dtype};
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

/// The angle p·θ_i in radians, reduced mod 2π exactly in f32 (see the module doc): `fa, fb, fc`
/// are the host's split of θ_i/2π. Shared with the attention kernels' in-kernel maps.
#[cube]
pub(crate) fn exact_angle(p: f32, fa: f32, fb: f32, fc: f32) -> f32 {
    let p1 = (p / 4096.0f32).floor();
    let p0 = p - p1 * 4096.0f32;
    let q1 = p1 * 4096.0f32;
    let ta = p0 * fa;
    let tb = q1 * fa;
    let tc = p0 * fb;
    let td = q1 * fb;
    let turns = (ta - ta.floor()) + (tb - tb.floor()) + (tc - tc.floor()) + (td - td.floor()) + p * fc;
    (turns - turns.floor()) * 6.283_185_5f32
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn rotary_kernel<F: Float>(
    x: &Tensor<F>,
    table: &Tensor<f32>, // [pairs, 4]: f_a, f_b, f_c, xpos log-scale (rotation) | θ_i, 0, 0, 0
    pos: &Tensor<f32>,   // [1 or batch, seq]
    scal: &Tensor<f32>,  // [θ', attention factor]
    out: &mut Tensor<F>,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] key_side: bool,
    #[comptime] transpose: bool,
    #[comptime] scaled: bool,
    #[define(F)] _dtype: ElemType,
) {
    let dim = x.shape(3);
    let slots = dim / 2;
    let heads = x.shape(1);
    let seq = x.shape(2);
    let idx = ABSOLUTE_POS;
    if idx >= out.len() / (2 * heads) {
        terminate!();
    }
    // One thread per (batch, position, pair slot); the map is built once and applied to every
    // head, so sin/cos/exp are amortised over the heads.
    let slot = idx % slots;
    let bs = idx / slots;
    let s = bs % seq;
    let b = bs / seq;
    let pairs = table.shape(0);
    let head_stride = seq * dim;
    let row0 = (b * heads * seq + s) * dim;
    if slot >= pairs {
        // pass-through channels (partial rotary)
        let c = 2 * pairs + 2 * (slot - pairs);
        for h in 0..heads {
            let base = row0 + h * head_stride;
            out[base + c] = x[base + c];
            out[base + c + 1] = x[base + c + 1];
        }
        terminate!();
    }
    let mut c1 = slot;
    let mut c2 = slot + pairs;
    if interleaved {
        c1 = 2 * slot;
        c2 = 2 * slot + 1;
    }
    let mut pb = b;
    if pos.shape(0) == 1 {
        pb = 0usize;
    }
    let p = pos[pb * seq + s];
    let sigma = if key_side { -1.0f32 } else { 1.0f32 };
    let t = slot * 4;
    let (ma, mb, mc, md) = if hyperbolic {
        let theta = table[t];
        let tp = scal[0];
        let ep = (-sigma * p * (tp - theta)).exp();
        let em = (-sigma * p * (tp + theta)).exp();
        // carried as (e_+, 0, 0, e_−); applied in the boost's eigenbasis below
        (ep, 0.0f32, 0.0f32, em)
    } else {
        let fa = table[t];
        let fb = table[t + 1];
        let fc = table[t + 2];
        let angle = exact_angle(p, fa, fb, fc);
        let mut g = scal[1];
        if scaled {
            g *= (sigma * p * table[t + 3]).exp();
        }
        let cs = angle.cos() * g;
        let sn = angle.sin() * g;
        (cs, -sn, sn, cs)
    };
    let (mb, mc) = if transpose { (mc, mb) } else { (mb, mc) };
    for h in 0..heads {
        let base = row0 + h * head_stride;
        let x1 = f32::cast_from(x[base + c1]);
        let x2 = f32::cast_from(x[base + c2]);
        if hyperbolic {
            // (x1 ± x2)/2 scale by e_±: well conditioned even when e_+ and e_− differ by many
            // orders of magnitude (a·x1 + b·x2 would cancel).
            let u = (x1 + x2) * ma;
            let v = (x1 - x2) * md;
            out[base + c1] = F::cast_from((u + v) * 0.5f32);
            out[base + c2] = F::cast_from((u - v) * 0.5f32);
        } else {
            out[base + c1] = F::cast_from(ma * x1 + mb * x2);
            out[base + c2] = F::cast_from(mc * x1 + md * x2);
        }
    }
}

/// The memory-bound floor for benchmarks: `out = x·c`, one thread per element, launched like the
/// rotary kernel (so both pay the same launch and memory path).
#[cube(launch)]
fn scale_kernel<F: Float>(x: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    out[i] = x[i] * F::new(1.5f32);
}

pub fn launch_scale(x: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let dtype = x.dtype;
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), x.meta.shape().clone(), dtype);
    let n = out.meta.num_elements();
    let cube_dim = CubeDim::new(&x.client, n);
    let cube_count = calculate_cube_count_elemwise(&x.client, n, cube_dim);
    scale_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dtype_to_storage_type(dtype),
    );
    out
}

/// The sinusoidal table: `out[p, 2i] = sin(pos_p·ω_i)`, `out[p, 2i + 1] = cos(pos_p·ω_i)`, the
/// angle exact as the rotary maps' (`table: [pairs, 4]`, the split of ω_i/2π; `pos: [n]`).
#[cube(launch)]
fn sinusoidal_kernel<F: Float>(
    table: &Tensor<F>,
    pos: &Tensor<F>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let idx = ABSOLUTE_POS;
    if idx >= out.len() {
        terminate!();
    }
    let d = out.shape(1);
    let c = idx % d;
    let t = (c / 2) * 4;
    let p = f32::cast_from(pos[idx / d]);
    let angle =
        exact_angle(p, f32::cast_from(table[t]), f32::cast_from(table[t + 1]), f32::cast_from(table[t + 2]));
    if c % 2 == 1 {
        out[idx] = F::cast_from(angle.cos());
    } else {
        out[idx] = F::cast_from(angle.sin());
    }
}

/// `[n, 2·pairs]` from `table: [pairs, 4]` and `pos: [n]` ([`sinusoidal_kernel`]).
pub fn launch_sinusoidal(table: CubeTensor, pos: CubeTensor) -> CubeTensor {
    use burn::backend::ops::FloatTensorOps;
    let (table, pos) = (into_contiguous(table), into_contiguous(pos));
    let shape = Shape::new([pos.meta.shape()[0], 2 * table.meta.shape()[0]]);
    let mut out = empty_device_dtype(table.client.clone(), table.device.clone(), shape, table.dtype);
    if crate::hooks::poisoned() {
        out = into_contiguous(<CubeBackend as FloatTensorOps<CubeBackend>>::float_mul_scalar(
            out,
            f32::NAN.into(),
        ));
    }
    let n = out.meta.num_elements();
    let cube_dim = CubeDim::new(&table.client, n);
    let cube_count = calculate_cube_count_elemwise(&table.client, n, cube_dim);
    let dtype = dtype_to_storage_type(table.dtype);
    sinusoidal_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        table.into_tensor_arg(),
        pos.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dtype,
    );
    out
}

#[allow(clippy::too_many_arguments)]
pub fn launch(
    x: CubeTensor,
    table: CubeTensor,
    pos: CubeTensor,
    scal: CubeTensor,
    interleaved: bool,
    hyperbolic: bool,
    key_side: bool,
    transpose: bool,
    scaled: bool,
) -> CubeTensor {
    use burn::backend::ops::FloatTensorOps;
    let (x, table, pos, scal) =
        (into_contiguous(x), into_contiguous(table), into_contiguous(pos), into_contiguous(scal));
    let shape: Shape = x.meta.shape().clone();
    let shape_heads = shape[1].max(1);
    let dtype = x.dtype;
    let out = if crate::hooks::poisoned() {
        let nan = <CubeBackend as FloatTensorOps<CubeBackend>>::float_mul_scalar(x.clone(), f32::NAN.into());
        into_contiguous(nan)
    } else {
        empty_device_dtype(x.client.clone(), x.device.clone(), shape, dtype)
    };
    let threads = out.meta.num_elements() / (2 * shape_heads);
    let cube_dim = CubeDim::new(&x.client, threads);
    let cube_count = calculate_cube_count_elemwise(&x.client, threads, cube_dim);
    rotary_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        table.into_tensor_arg(),
        pos.into_tensor_arg(),
        scal.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        interleaved,
        hyperbolic,
        key_side,
        transpose,
        scaled,
        dtype_to_storage_type(dtype),
    );
    out
}
