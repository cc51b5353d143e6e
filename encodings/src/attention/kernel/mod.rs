//! The CubeCL kernels of fused causal attention: f32 accumulation and an online softmax, so
//! nothing of size L² is ever stored.
//!
//! A workgroup takes one (batch · head) and a tile of consecutive rows — queries in forward and
//! dQ, keys in dK/dV — and each lane holds `rpl` rows of the tile ([`tile_rows`]), so every key
//! (or query) the loop loads is used for `rpl` rows:
//! - [`forward_kernel`]: each row streams keys 0..=i, keeps the running max, sum and output row,
//!   writes `out[i]` and the row's log-sum-exp;
//! - backward (FlashAttention-2's recomputation, with `δ_i = ⟨dO_i, O_i⟩` from the host):
//!   `p_ij = exp(s_ij − lse_i)`, `ds_ij = p_ij (⟨dO_i, v_j⟩ − δ_i)`; [`dq_kernel`]: row i sums
//!   `ds_ij k_j`; [`dkv_kernel`]: key row j sums `ds_ij q_i` and `p_ij dO_i`; [`dbias_kernel`]:
//!   thread (b, h, Δ) sums `ds_ij` over the diagonal i − j = Δ (bias by distance).
//!
//! q arrives scaled (1/√d applied by the caller); `bias` is a `[heads, ≥ seq]` table indexed by
//! distance (`has_bias`) or FIRE's per-head MLP rows (`fire` = its width; see [`fire`]);
//! growing maps (HoPE-Hyp, xPos) are applied per tile by [`map`].

mod backward;
mod fire;
mod forward;
mod map;

use cubecl::prelude::*;

pub(super) use backward::{dbias_kernel, dkv_kernel, dq_kernel};
pub(super) use forward::forward_kernel;
pub(super) use map::tile_map_kernel;

/// ⟨a[ao..ao + dim], b⟩ of two local rows.
#[cube]
fn dot_local(a: &Array<f32>, b: &Array<f32>, #[comptime] ao: usize, #[comptime] dim: usize) -> f32 {
    let mut s = 0.0f32;
    #[unroll]
    for c in 0..dim {
        s += a[ao + c] * b[c];
    }
    s
}

/// Copies `x[o..o + dim]` into a local row: loaded once, used by every row of the lane.
#[cube]
fn load_row<F: Float>(x: &Tensor<F>, o: usize, out: &mut Array<f32>, #[comptime] dim: usize) {
    #[unroll]
    for c in 0..dim {
        out[c] = f32::cast_from(x[o + c]);
    }
}

/// A workgroup takes one (batch, head) and a tile of consecutive rows (queries, or keys in
/// dK/dV), so the loop over the other side is the same for the whole workgroup.
/// Each lane holds `rpl` rows (row `first + r · lanes + lane`) and loads each key (or query) of
/// the loop once for all of them: loads per score drop `rpl`-fold. On lavapipe (Mesa 22) every
/// load inside a loop is a per-lane scalar gather — ~90 % of the kernel's time at `rpl` = 1 —
/// so it takes many rows per lane; on a GPU `rpl` = 1 keeps the registers per thread low
/// (`launch::layout` chooses).
/// The workgroup's `(bh, first row, last row)` with `last < seq`: `lanes · rpl` rows.
#[cube]
fn tile_rows(seq: usize, #[comptime] rpl: usize) -> (usize, usize, usize) {
    let bh = usize::cast_from(CUBE_POS_Y);
    let rows = usize::cast_from(CUBE_DIM_X) * rpl;
    let first = usize::cast_from(CUBE_POS_X) * rows;
    let mut last = first + rows - 1;
    if last >= seq {
        last = seq - 1;
    }
    (bh, first, last)
}

/// This lane's `r`-th row, clamped to `last` (a ragged last tile: computed, never written),
/// and whether it is real.
#[cube]
fn lane_row(first: usize, last: usize, r: usize) -> (usize, bool) {
    let i = first + r * usize::cast_from(CUBE_DIM_X) + usize::cast_from(UNIT_POS_X);
    (select(i <= last, i, last), i <= last)
}
