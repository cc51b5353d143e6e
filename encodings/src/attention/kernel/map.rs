//! Growing rotary-class maps (HoPE-Hyp, xPos) inside the attention kernels: the pair map of a
//! row at a position, the tile length that keeps its factors finite, and the pre-mapping kernel.

use cubecl::prelude::*;

/// The pair map of a growing rotary-class encoding (HoPE-Hyp, xPos) applied in-kernel to the
/// row `x` at position `p` (side and transpose as the rotary kernel: same table and formulas;
/// HoPE-Hyp's output in the boost's eigenbasis, see below). Channels past the pairs pass through.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn map_row<F: Float>(
    x: &Array<f32>,
    out: &mut Array<f32>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    p: f32,
    #[comptime] o: usize,
    #[comptime] dim: usize,
    #[comptime] key_side: bool,
    #[comptime] transpose: bool,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] scaled: bool,
) {
    let pairs = table.shape(0);
    let sigma = if key_side { -1.0f32 } else { 1.0f32 };
    // Loops over channels and pairs are unrolled (bounds comptime): lavapipe caps the loop
    // iterations of one invocation at 65535 in all, so only the loops over keys may run long.
    #[unroll]
    for c in 0..dim {
        if c >= 2 * pairs {
            out[o + c] = x[o + c];
        }
    }
    #[unroll]
    for slot in 0..comptime!(dim / 2) {
        if slot < pairs {
            let slot = slot.runtime();
            let mut c1 = slot;
            let mut c2 = slot + pairs;
            if interleaved {
                c1 = 2 * slot;
                c2 = 2 * slot + 1;
            }
            let t = slot * 4;
            let x1 = x[o + c1];
            let x2 = x[o + c2];
            if hyperbolic {
                let theta = f32::cast_from(table[t]);
                let tp = f32::cast_from(scal[0]);
                let ep = (-sigma * p * (tp - theta)).exp();
                let em = (-sigma * p * (tp + theta)).exp();
                // In the boost's orthonormal eigenbasis H = [[1, 1], [1, −1]]/√2 the map is
                // diag(e_+, e_−): rows are stored in that basis (M = D·H), so a dot product of two
                // mapped rows multiplies each eigen-part by its own factor and never adds a part
                // scaled by e^40 to one scaled by e^−40 (f32 would lose the small one). Mᵀ = H·D.
                if transpose {
                    let u = x1 * ep;
                    let v = x2 * em;
                    out[o + c1] = (u + v) * 0.707_106_77f32;
                    out[o + c2] = (u - v) * 0.707_106_77f32;
                } else {
                    out[o + c1] = (x1 + x2) * ep * 0.707_106_77f32;
                    out[o + c2] = (x1 - x2) * em * 0.707_106_77f32;
                }
            } else {
                let fa = f32::cast_from(table[t]);
                let fb = f32::cast_from(table[t + 1]);
                let fc = f32::cast_from(table[t + 2]);
                let angle = crate::rotary::fused::exact_angle(p, fa, fb, fc);
                let mut g = f32::cast_from(scal[1]);
                if scaled {
                    g *= (sigma * p * f32::cast_from(table[t + 3])).exp();
                }
                let cs = angle.cos() * g;
                let mut sn = angle.sin() * g;
                if transpose {
                    sn = -sn;
                }
                out[o + c1] = cs * x1 - sn * x2;
                out[o + c2] = sn * x1 + cs * x2;
            }
        }
    }
}

/// Tile length T of the growing maps: HoPE-Hyp's from the current θ' on the device,
/// ⌊40 / (θ' + max θ_i)⌋ with `scal[2]` = max θ_i (so a learnt θ' never leaves a stale T, and
/// factors stay within e^±40); xPos's fixed T in `scal[2]`; the whole sequence otherwise.
#[cube]
pub(super) fn tile_len<F: Float>(
    scal: &Tensor<F>,
    seq: usize,
    #[comptime] mapped: bool,
    #[comptime] hyperbolic: bool,
) -> usize {
    let mut t = seq;
    if mapped {
        let mut tf = f32::cast_from(scal[2]);
        if hyperbolic {
            tf = (40.0f32 / (f32::cast_from(scal[0]) + tf)).floor();
        }
        if tf < f32::cast_from(seq) {
            t = usize::cast_from(tf);
        }
        if t < 1 {
            t = 1;
        }
    }
    t
}

/// Maps every row of `x: [b, h, s, d]` at its position within its tile, `s mod T`: the side the
/// attention kernels read pre-mapped (keys in forward and dQ, queries in dK/dV).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_map_kernel<F: Float>(
    x: &Tensor<F>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] key_side: bool,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] scaled: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= out.len() / dim {
        terminate!();
    }
    let seq = x.shape(2);
    let tile = tile_len::<F>(scal, seq, true, hyperbolic);
    let p = f32::cast_from((row % seq) % tile);
    let mut raw = Array::<f32>::new(dim);
    let mut mapped = Array::<f32>::new(dim);
    #[unroll]
    for c in 0..dim {
        raw[c] = f32::cast_from(x[row * dim + c]);
    }
    map_row::<F>(
        &raw,
        &mut mapped,
        table,
        scal,
        p,
        0usize,
        dim,
        key_side,
        false,
        interleaved,
        hyperbolic,
        scaled,
    );
    #[unroll]
    for c in 0..dim {
        out[row * dim + c] = F::cast_from(mapped[c]);
    }
}
