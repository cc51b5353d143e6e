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
    if crate::hooks::poisoned() {
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

/// Rows per lane and lanes per workgroup (see `kernel::tile_rows`): a device whose widest plane
/// has ≤ 8 lanes — lavapipe, where every load in a loop is a per-lane gather (this also catches
/// cubecl-cpu and some mobile GPUs: their speed, not results) — takes up to 16 rows per
/// lane — loads per score that many times fewer — in workgroups of 8, as many as keep a lane's
/// unrolled row loops within [`CPU_LANE_FLOATS`]; a GPU one row per thread (uniform loads are
/// broadcast by the hardware, and many rows would spill its registers) in workgroups of 32. The
/// tests force other layouts through [`crate::hooks::ATTENTION_LAYOUT`].
fn layout(x: &CubeTensor) -> (usize, usize) {
    let dim = x.meta.shape()[3].max(1);
    if let Some(forced) = crate::hooks::attention_layout(dim) {
        return forced;
    }
    match x.client.properties().hardware.plane_size_max <= 8 {
        true => ((CPU_LANE_FLOATS / dim).clamp(1, 16), 8),
        false => (1, 32),
    }
}

/// `rows per lane · head_dim` on a CPU Vulkan device: the kernels unroll their loops over a
/// lane's rows and channels (lavapipe caps a loop's iterations at 65535), and the shader
/// compiler's time grows faster than linearly with that code — minutes per kernel at 16 · 64.
const CPU_LANE_FLOATS: usize = 128;

/// One workgroup per (tile of `lanes · rpl` rows, batch · head): `(rpl, count, dim)`.
fn row_tiles(x: &CubeTensor) -> (usize, CubeCount, CubeDim) {
    let s = x.meta.shape();
    let (rpl, lanes) = layout(x);
    let bh = s[0] * s[1];
    // the second grid dimension is capped at 65535 on some APIs (Vulkan's minimum, CUDA's y)
    assert!(bh <= 65_535, "fused attention: batch · heads = {bh} exceeds 65535 workgroups");
    let count = CubeCount::Static(s[2].div_ceil(lanes * rpl) as u32, bh as u32, 1);
    (rpl, count, CubeDim::new_1d(lanes as u32))
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

    /// What the unchecked launches rely on, checked on the host: q, k, v one contiguous
    /// `[b, h, s, d]`; the bias `[heads, ≥ s]` by distance or FIRE's `[heads, 3W + 3]` rows;
    /// the map table `[pairs ≤ d/2, 4]`; `scal` ≥ 3 values; and, for a backward, dout like q,
    /// lse and δ `[b, h, s]`. (`attention::launch` checks the same with readable messages
    /// first; these guard any other caller.)
    fn check(&self, g: Option<&Grads>) {
        let shape = self.q.meta.shape().clone();
        let dims = shape.to_vec();
        assert!(dims.len() == 4, "q: [b, h, s, d], got {dims:?}");
        for (name, t) in [("k", &self.k), ("v", &self.v)] {
            assert_eq!(t.meta.shape(), &shape, "{name}: the shape of q");
        }
        let (heads, seq, dim) = (dims[1], dims[2], dims[3]);
        let bias = self.bias.meta.shape().to_vec();
        let f = self.flags;
        if f.has_bias {
            assert!(bias.len() == 2 && bias[0] == heads && bias[1] >= seq, "bias table {bias:?}");
        }
        if f.fire > 0 {
            assert!(bias == [heads, f.params_per_row()], "FIRE rows {bias:?}");
        }
        let table = self.table.meta.shape().to_vec();
        if f.mapped {
            assert!(table.len() == 2 && table[1] == 4 && 2 * table[0] <= dim, "map table {table:?}");
        }
        assert!(self.scal.meta.num_elements() >= 3, "scal: 3 values");
        for t in [&self.q, &self.k, &self.v, &self.bias, &self.table, &self.scal] {
            assert!(t.is_contiguous(), "the kernels' inputs are contiguous");
            assert_eq!(t.dtype, self.q.dtype, "the kernels' inputs share q's dtype");
        }
        if let Some(g) = g {
            for t in [&g.dout, &g.lse, &g.delta] {
                assert!(t.is_contiguous(), "dout, lse and δ are contiguous");
                assert_eq!(t.dtype, self.q.dtype, "dout, lse and δ share q's dtype");
            }
            assert_eq!(g.dout.meta.shape(), &shape, "dout: the shape of q");
            let rows = rows(&self.q);
            assert_eq!(g.lse.meta.shape(), &rows, "lse: [b, h, s]");
            assert_eq!(g.delta.meta.shape(), &rows, "δ: [b, h, s]");
        }
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
    x.check(None);
    let kt = x.tiled(&x.k, true);
    let out = output(&x.q, x.q.meta.shape().clone());
    let lse = output(&x.q, rows(&x.q));
    let (rpl, count, cube_dim) = row_tiles(&x.q);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let (dim, f) = (x.dim(), x.flags);
    // SAFETY: every index the kernel reads or writes is in bounds: rows are clamped to the
    // tile's last row (`tile_rows`) and written only when real, keys run to that last row,
    // masked keys index the bias at distance 0, and the shapes are those `Inputs::check`
    // asserted above (q, k, v `[b, h, s, d]` contiguous; bias `[heads, ≥ s]`; table, scal).
    #[allow(unsafe_code)]
    unsafe {
        forward_kernel::launch_unchecked(
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
            rpl,
            f.has_bias,
            f.mapped,
            f.interleaved,
            f.hyperbolic,
            f.scaled,
            f.fire,
            dtype,
        )
    };
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
    x.check(Some(&g));
    let kt = x.tiled(&x.k, true);
    let dq = output(&x.q, x.q.meta.shape().clone());
    let s = x.q.meta.shape();
    let dparam = output(&x.q, Shape::new([s[0], s[1], s[2], x.flags.params_per_row()]));
    let (rpl, count, cube_dim) = row_tiles(&x.q);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let (dim, f) = (x.dim(), x.flags);
    // SAFETY: as in `forward` (shapes asserted by `Inputs::check` above, dout, lse and δ too):
    // rows clamped to the tile, written only when real, masked scores index the bias at 0.
    #[allow(unsafe_code)]
    unsafe {
        dq_kernel::launch_unchecked(
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
            rpl,
            f.has_bias,
            f.mapped,
            f.interleaved,
            f.hyperbolic,
            f.scaled,
            f.fire,
            dtype,
        )
    };
    (dq, dparam)
}

pub fn backward_kv(x: Inputs, g: Grads) -> (CubeTensor, CubeTensor) {
    x.check(Some(&g));
    let qt = x.tiled(&x.q, false);
    let dk = output(&x.k, x.k.meta.shape().clone());
    let dv = output(&x.v, x.v.meta.shape().clone());
    let (rpl, count, cube_dim) = row_tiles(&x.q);
    let dtype = dtype_to_storage_type(x.q.dtype);
    let (dim, f) = (x.dim(), x.flags);
    // SAFETY: as in `forward` (shapes asserted by `Inputs::check` above, dout, lse and δ too):
    // rows clamped to the tile, written only when real, masked scores index the bias at 0.
    #[allow(unsafe_code)]
    unsafe {
        dkv_kernel::launch_unchecked(
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
            rpl,
            f.has_bias,
            f.mapped,
            f.interleaved,
            f.hyperbolic,
            f.scaled,
            f.fire,
            dtype,
        )
    };
    (dk, dv)
}

/// `[b, h, s]`: the logit gradient summed over each diagonal (distance Δ = 0..s). Only for
/// unmapped attention (a bias-class encoding has no rotary map).
pub fn backward_bias(x: Inputs, g: Grads) -> CubeTensor {
    assert!(!x.flags.mapped, "distance biases come without in-kernel maps");
    x.check(Some(&g));
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
