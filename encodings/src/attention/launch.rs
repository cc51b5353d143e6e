//! Host side of the attention kernels: contiguous inputs, outputs (NaN-poisoned in tests), and
//! the launches.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::Shape;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, kernel::into_contiguous, ops::numeric::empty_device_dtype};
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

use super::backend::Flags;
use super::kernel::{dbias_kernel, dkv_kernel, dq_kernel, forward_kernel, tile_map_kernel};

/// An output of `shape`, NaN-filled when the tests' poison switch is on (feature `test-hooks`:
/// an unwritten element then fails), else uninitialised.
fn output(like: &CubeTensor, shape: Shape) -> CubeTensor {
    use burn::backend::ops::FloatTensorOps;
    let out = empty_device_dtype(like.client.clone(), like.device.clone(), shape, like.dtype);
    if crate::rotary::fused::poisoned() {
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

/// The kernels' inputs, contiguous. `bias`: a `[heads, ≥ seq]` distance table
/// (`flags.has_bias`), FIRE's rows `[heads, 3W + 3]` (`flags.fire`), else a placeholder;
/// `table`: the rotary kernel's per-pair table; `scal`: [θ', attention factor, T or max θ_i]
/// with `flags.mapped` (see `tile_len`), [first position, 1, 1] with `flags.fire`.
pub struct Inputs {
    pub q: CubeTensor,
    pub k: CubeTensor,
    pub v: CubeTensor,
    pub bias: CubeTensor,
    pub table: CubeTensor,
    pub scal: CubeTensor,
    pub flags: Flags,
}

impl Inputs {
    fn dim(&self) -> usize {
        self.q.meta.shape()[3]
    }

    /// `x` mapped within its tiles ([`tile_map_kernel`]) when the map runs in-kernel, else `x`.
    fn tiled(&self, x: &CubeTensor, key_side: bool) -> CubeTensor {
        if !self.flags.mapped {
            return x.clone();
        }
        let out = output(x, x.meta.shape().clone());
        let (count, cube_dim) = grid(x, out.meta.num_elements() / self.dim());
        let f = self.flags;
        tile_map_kernel::launch(
            &x.client.clone(),
            count,
            cube_dim,
            x.clone().into_tensor_arg(),
            self.table.clone().into_tensor_arg(),
            self.scal.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            self.dim(),
            key_side,
            f.interleaved,
            f.hyperbolic,
            f.scaled,
            dtype_to_storage_type(x.dtype),
        );
        out
    }
}

/// Makes every tensor contiguous.
pub fn contiguous(ts: [CubeTensor; 6]) -> [CubeTensor; 6] {
    ts.map(into_contiguous)
}

/// `(out [b, h, s, d], lse [b, h, s])`.
pub fn forward(x: Inputs) -> (CubeTensor, CubeTensor) {
    let kt = x.tiled(&x.k, true);
    let out = output(&x.q, x.q.meta.shape().clone());
    let lse = output(&x.q, rows(&x.q));
    let n = lse.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let (dim, f) = (x.dim(), x.flags);
    forward_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        x.q.into_tensor_arg(),
        kt.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        x.table.into_tensor_arg(),
        x.scal.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dim,
        f.has_bias,
        f.mapped,
        f.interleaved,
        f.hyperbolic,
        f.scaled,
        f.fire,
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

/// dQ and, per row, the row's share of the parameter gradient, `[b, h, s, P]`
/// ([`Flags::params_per_row`]): FIRE's row gradient, or dL/dθ' (zero unless hyperbolic).
pub fn backward_q(x: Inputs, g: Grads) -> (CubeTensor, CubeTensor) {
    let kt = x.tiled(&x.k, true);
    let dq = output(&x.q, x.q.meta.shape().clone());
    let s = x.q.meta.shape();
    let dparam = output(&x.q, Shape::new([s[0], s[1], s[2], x.flags.params_per_row()]));
    let n = g.lse.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let (dim, f) = (x.dim(), x.flags);
    dq_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        x.q.into_tensor_arg(),
        kt.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        x.table.into_tensor_arg(),
        x.scal.into_tensor_arg(),
        g.dout.into_tensor_arg(),
        g.lse.into_tensor_arg(),
        g.delta.into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        dparam.clone().into_tensor_arg(),
        dim,
        f.has_bias,
        f.mapped,
        f.interleaved,
        f.hyperbolic,
        f.scaled,
        f.fire,
        dtype,
    );
    (dq, dparam)
}

pub fn backward_kv(x: Inputs, g: Grads) -> (CubeTensor, CubeTensor) {
    let qt = x.tiled(&x.q, false);
    let dk = output(&x.k, x.k.meta.shape().clone());
    let dv = output(&x.v, x.v.meta.shape().clone());
    let n = g.lse.meta.num_elements();
    let (count, cube_dim) = grid(&x.q, n);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let (dim, f) = (x.dim(), x.flags);
    dkv_kernel::launch(
        &x.q.client.clone(),
        count,
        cube_dim,
        qt.into_tensor_arg(),
        x.k.into_tensor_arg(),
        x.v.into_tensor_arg(),
        x.bias.into_tensor_arg(),
        x.table.into_tensor_arg(),
        x.scal.into_tensor_arg(),
        g.dout.into_tensor_arg(),
        g.lse.into_tensor_arg(),
        g.delta.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        dim,
        f.has_bias,
        f.mapped,
        f.interleaved,
        f.hyperbolic,
        f.scaled,
        f.fire,
        dtype,
    );
    (dk, dv)
}

/// `[b, h, s]`: the logit gradient summed over each diagonal (distance Δ = 0..s). Only for
/// unmapped attention (a bias-class encoding has no rotary map).
pub fn backward_bias(x: Inputs, g: Grads) -> CubeTensor {
    assert!(!x.flags.mapped, "distance biases come without in-kernel maps");
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
