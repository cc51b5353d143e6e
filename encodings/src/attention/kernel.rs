//! The CubeCL kernels of fused causal attention: one thread per row, f32 accumulation, an online
//! softmax, so nothing of size L² is ever stored.
//!
//! - forward: thread (b, h, i) streams keys 0..=i, keeps the running max, sum and output row,
//!   writes `out[i]` and the row's log-sum-exp;
//! - backward (FlashAttention-2's recomputation, with `δ_i = ⟨dO_i, O_i⟩` from the host):
//!   `p_ij = exp(s_ij − lse_i)`, `ds_ij = p_ij (⟨dO_i, v_j⟩ − δ_i)`;
//!   dQ: thread i sums `ds_ij k_j`; dK/dV: thread j sums `ds_ij q_i` and `p_ij dO_i`;
//!   d bias: thread (b, h, Δ) sums `ds_ij` over the diagonal i − j = Δ (bias by distance).
//!
//! q arrives scaled (1/√d applied by the caller); `bias: [heads, ≥ seq]` is indexed by distance.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::Shape;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, kernel::into_contiguous, ops::numeric::empty_device_dtype};
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

/// Logit of a (query, key) pair: ⟨q_i, k_j⟩ + bias[h, i − j].
#[cube]
fn logit<F: Float>(
    qr: &Array<f32>,
    k: &Tensor<F>,
    ko: usize,
    bias: &Tensor<F>,
    bo: usize,
    #[comptime] dim: usize,
    #[comptime] has_bias: bool,
) -> f32 {
    let mut s = 0.0f32;
    for c in 0..dim {
        s += qr[c] * f32::cast_from(k[ko + c]);
    }
    if has_bias {
        s += f32::cast_from(bias[bo]);
    }
    s
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] has_bias: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let seq = q.shape(2);
    let i = row % seq;
    let bh = row / seq;
    let h = bh % q.shape(1);
    let base = bh * seq * dim;
    let blen = bias.shape(1);
    let mut qr = Array::<f32>::new(dim);
    let mut acc = Array::<f32>::new(dim);
    for c in 0..dim {
        qr[c] = f32::cast_from(q[row * dim + c]);
    }
    // Key 0 (always visible) starts the running max, sum and output row.
    let mut m = logit::<F>(&qr, k, base, bias, h * blen + i, dim, has_bias);
    let mut l = 1.0f32;
    for c in 0..dim {
        acc[c] = f32::cast_from(v[base + c]);
    }
    for j in 1..i + 1 {
        let ko = base + j * dim;
        let s = logit::<F>(&qr, k, ko, bias, h * blen + i - j, dim, has_bias);
        if s > m {
            let corr = (m - s).exp();
            l *= corr;
            for c in 0..dim {
                acc[c] *= corr;
            }
            m = s;
        }
        let p = (s - m).exp();
        l += p;
        for c in 0..dim {
            acc[c] += p * f32::cast_from(v[ko + c]);
        }
    }
    let inv = 1.0f32 / l;
    for c in 0..dim {
        out[row * dim + c] = F::cast_from(acc[c] * inv);
    }
    lse[row] = F::cast_from(m + l.ln());
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    delta: &Tensor<F>,
    dq: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] has_bias: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let seq = q.shape(2);
    let i = row % seq;
    let bh = row / seq;
    let h = bh % q.shape(1);
    let base = bh * seq * dim;
    let blen = bias.shape(1);
    let mut qr = Array::<f32>::new(dim);
    let mut dor = Array::<f32>::new(dim);
    let mut acc = Array::<f32>::new(dim);
    for c in 0..dim {
        qr[c] = f32::cast_from(q[row * dim + c]);
        dor[c] = f32::cast_from(dout[row * dim + c]);
        acc[c] = 0.0f32;
    }
    let li = f32::cast_from(lse[row]);
    let di = f32::cast_from(delta[row]);
    for j in 0..i + 1 {
        let ko = base + j * dim;
        let s = logit::<F>(&qr, k, ko, bias, h * blen + i - j, dim, has_bias);
        let p = (s - li).exp();
        let mut dp = 0.0f32;
        for c in 0..dim {
            dp += dor[c] * f32::cast_from(v[ko + c]);
        }
        let ds = p * (dp - di);
        for c in 0..dim {
            acc[c] += ds * f32::cast_from(k[ko + c]);
        }
    }
    for c in 0..dim {
        dq[row * dim + c] = F::cast_from(acc[c]);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dkv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    delta: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] has_bias: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let seq = q.shape(2);
    let j = row % seq;
    let bh = row / seq;
    let h = bh % q.shape(1);
    let base = bh * seq * dim;
    let blen = bias.shape(1);
    let mut kr = Array::<f32>::new(dim);
    let mut vr = Array::<f32>::new(dim);
    let mut dkr = Array::<f32>::new(dim);
    let mut dvr = Array::<f32>::new(dim);
    for c in 0..dim {
        kr[c] = f32::cast_from(k[row * dim + c]);
        vr[c] = f32::cast_from(v[row * dim + c]);
        dkr[c] = 0.0f32;
        dvr[c] = 0.0f32;
    }
    for i in j..seq {
        let qo = base + i * dim;
        let mut s = 0.0f32;
        let mut dp = 0.0f32;
        for c in 0..dim {
            s += f32::cast_from(q[qo + c]) * kr[c];
            dp += f32::cast_from(dout[qo + c]) * vr[c];
        }
        if has_bias {
            s += f32::cast_from(bias[h * blen + i - j]);
        }
        let qi = bh * seq + i;
        let p = (s - f32::cast_from(lse[qi])).exp();
        let ds = p * (dp - f32::cast_from(delta[qi]));
        for c in 0..dim {
            dvr[c] += p * f32::cast_from(dout[qo + c]);
            dkr[c] += ds * f32::cast_from(q[qo + c]);
        }
    }
    for c in 0..dim {
        dk[row * dim + c] = F::cast_from(dkr[c]);
        dv[row * dim + c] = F::cast_from(dvr[c]);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dbias_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    delta: &Tensor<F>,
    dbias: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= dbias.len() {
        terminate!();
    }
    let seq = q.shape(2);
    let dist = row % seq;
    let bh = row / seq;
    let h = bh % q.shape(1);
    let base = bh * seq * dim;
    let b = f32::cast_from(bias[h * bias.shape(1) + dist]);
    let mut acc = 0.0f32;
    for i in dist..seq {
        let qo = base + i * dim;
        let ko = base + (i - dist) * dim;
        let mut s = b;
        let mut dp = 0.0f32;
        for c in 0..dim {
            s += f32::cast_from(q[qo + c]) * f32::cast_from(k[ko + c]);
            dp += f32::cast_from(dout[qo + c]) * f32::cast_from(v[ko + c]);
        }
        let qi = bh * seq + i;
        let p = (s - f32::cast_from(lse[qi])).exp();
        acc += p * (dp - f32::cast_from(delta[qi]));
    }
    dbias[row] = F::cast_from(acc);
}

/// An output of `shape`, NaN-filled when the rotary module's `POISON` switch is on (tests: an
/// unwritten element then fails), else uninitialised.
fn output(like: &CubeTensor, shape: Shape) -> CubeTensor {
    use burn::backend::ops::FloatTensorOps;
    let out = empty_device_dtype(like.client.clone(), like.device.clone(), shape, like.dtype);
    if crate::rotary::fused::POISON.load(std::sync::atomic::Ordering::Relaxed) {
        let nan = <CubeBackend as FloatTensorOps<CubeBackend>>::float_mul_scalar(out, f32::NAN.into());
        return into_contiguous(nan);
    }
    out
}

/// `[batch, heads, seq]`: one value per row of `q`.
fn rows(q: &CubeTensor) -> Shape {
    let s = q.meta.shape();
    Shape::new([s[0], s[1], s[2]])
}

fn grid(q: &CubeTensor, threads: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(&q.client, threads);
    (calculate_cube_count_elemwise(&q.client, threads, cube_dim), cube_dim)
}

/// The inputs every kernel reads, contiguous.
pub struct Inputs {
    pub q: CubeTensor,
    pub k: CubeTensor,
    pub v: CubeTensor,
    pub bias: CubeTensor,
    pub has_bias: bool,
}

impl Inputs {
    pub fn new(q: CubeTensor, k: CubeTensor, v: CubeTensor, bias: CubeTensor, has_bias: bool) -> Self {
        let c = into_contiguous;
        Self { q: c(q), k: c(k), v: c(v), bias: c(bias), has_bias }
    }

    fn dim(&self) -> usize {
        self.q.meta.shape()[3]
    }
}

/// `(out [b, h, s, d], lse [b, h, s])`.
pub fn forward(x: Inputs) -> (CubeTensor, CubeTensor) {
    let out = output(&x.q, x.q.meta.shape().clone());
    let lse = output(&x.q, rows(&x.q));
    let n = lse.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let dim = x.dim();
    forward_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        x.q.into_tensor_arg(),
        x.k.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dim,
        x.has_bias,
        dtype,
    );
    (out, lse)
}

/// Saved forward state and the output gradient.
pub struct Grads {
    pub dout: CubeTensor,
    pub lse: CubeTensor,
    /// `δ_i = ⟨dO_i, O_i⟩`, `[b, h, s]`.
    pub delta: CubeTensor,
}

impl Grads {
    pub fn new(dout: CubeTensor, lse: CubeTensor, delta: CubeTensor) -> Self {
        let c = into_contiguous;
        Self { dout: c(dout), lse: c(lse), delta: c(delta) }
    }
}

pub fn backward_q(x: Inputs, g: Grads) -> CubeTensor {
    let dq = output(&x.q, x.q.meta.shape().clone());
    let n = g.lse.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let dim = x.dim();
    dq_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        x.q.into_tensor_arg(),
        x.k.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        g.dout.into_tensor_arg(),
        g.lse.into_tensor_arg(),
        g.delta.into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        dim,
        x.has_bias,
        dtype,
    );
    dq
}

pub fn backward_kv(x: Inputs, g: Grads) -> (CubeTensor, CubeTensor) {
    let dk = output(&x.k, x.k.meta.shape().clone());
    let dv = output(&x.v, x.v.meta.shape().clone());
    let n = g.lse.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let dim = x.dim();
    dkv_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        x.q.into_tensor_arg(),
        x.k.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        g.dout.into_tensor_arg(),
        g.lse.into_tensor_arg(),
        g.delta.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        dim,
        x.has_bias,
        dtype,
    );
    (dk, dv)
}

/// `[b, h, s]`: the logit gradient summed over each diagonal (distance Δ = 0..s).
pub fn backward_bias(x: Inputs, g: Grads) -> CubeTensor {
    let db = output(&x.q, rows(&x.q));
    let n = db.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let dim = x.dim();
    dbias_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        x.q.into_tensor_arg(),
        x.k.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        g.dout.into_tensor_arg(),
        g.lse.into_tensor_arg(),
        g.delta.into_tensor_arg(),
        db.clone().into_tensor_arg(),
        dim,
        dtype,
    );
    db
}
