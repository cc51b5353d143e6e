//! The forward kernel: output rows and their log-sum-exp.

use cubecl::prelude::*;

use super::fire::{fire_bias, fire_norm};
use super::map::{map_row, tile_len};
use super::{dot_local, lane_row, load_row, tile_rows};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    kt: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] rpl: usize,
    #[comptime] has_bias: bool,
    #[comptime] mapped: bool,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] scaled: bool,
    #[comptime] fire: usize,
    #[define(F)] _dtype: ElemType,
) {
    let seq = q.shape(2);
    let (bh, first, last) = tile_rows(seq, rpl);
    let h = bh % q.shape(1);
    let base = bh * seq * dim;
    let blen = bias.shape(1);
    let fo = h * blen; // FIRE: this head's row of `bias`
    let tile = tile_len::<F>(scal, seq, mapped, hyperbolic);
    let mut raw = Array::<f32>::new(comptime!(rpl * dim));
    let mut qr = Array::<f32>::new(comptime!(rpl * dim));
    let mut acc = Array::<f32>::new(comptime!(rpl * dim));
    let mut kk = Array::<f32>::new(dim);
    let mut vv = Array::<f32>::new(dim);
    let mut m = Array::<f32>::new(rpl);
    let mut l = Array::<f32>::new(rpl);
    let mut norm = Array::<f32>::new(rpl);
    #[unroll]
    for r in 0..rpl {
        let (i, _) = lane_row(first, last, r);
        #[unroll]
        for c in 0..dim {
            raw[r * dim + c] = f32::cast_from(q[(bh * seq + i) * dim + c]);
            qr[r * dim + c] = raw[r * dim + c];
            acc[r * dim + c] = 0.0f32;
        }
        m[r] = f32::new(-3.0e38);
        l[r] = 0.0f32;
        // FIRE: the row's normaliser (`scal[0]`: the first token's absolute position)
        norm[r] = 1.0f32;
        if comptime!(fire > 0) {
            norm[r] = fire_norm::<F>(bias, fo, f32::cast_from(scal[0]) + f32::cast_from(i), fire);
        }
    }
    // Keys 0..=last for every lane (uniform); a row masks keys past it. Key 0 comes first, so
    // `m` is a real score before any masked key (−1e30) is seen, and masked keys weigh 0.
    for t in 0..last / tile + 1 {
        let j0 = t * tile;
        if mapped {
            // re-centred on the key tile's first position: q at i − j0, keys at j − j0
            #[unroll]
            for r in 0..rpl {
                let (i, _) = lane_row(first, last, r);
                let p = select(i >= j0, f32::cast_from(i) - f32::cast_from(j0), 0.0f32);
                map_row::<F>(
                    &raw,
                    &mut qr,
                    table,
                    scal,
                    p,
                    comptime!(r * dim),
                    dim,
                    false,
                    false,
                    interleaved,
                    hyperbolic,
                    scaled,
                );
            }
        }
        let mut j1 = j0 + tile;
        if j1 > last + 1 {
            j1 = last + 1;
        }
        for j in j0..j1 {
            let ko = base + j * dim;
            load_row::<F>(kt, ko, &mut kk, dim);
            load_row::<F>(v, ko, &mut vv, dim);
            #[unroll]
            for r in 0..rpl {
                let (i, _) = lane_row(first, last, r);
                let seen = j <= i;
                let dist = i - select(seen, j, i); // 0 when masked: never wraps
                let mut s = dot_local(&qr, &kk, comptime!(r * dim), dim);
                if has_bias {
                    s += f32::cast_from(bias[h * blen + dist]);
                }
                if comptime!(fire > 0) {
                    s += fire_bias::<F>(bias, fo, f32::cast_from(dist), norm[r], fire);
                }
                s = select(seen, s, -1.0e30f32);
                if s > m[r] {
                    let corr = (m[r] - s).exp();
                    l[r] *= corr;
                    #[unroll]
                    for c in 0..dim {
                        acc[r * dim + c] *= corr;
                    }
                    m[r] = s;
                }
                let p = (s - m[r]).exp();
                l[r] += p;
                #[unroll]
                for c in 0..dim {
                    acc[r * dim + c] += p * vv[c];
                }
            }
        }
    }
    #[unroll]
    for r in 0..rpl {
        let (i, real) = lane_row(first, last, r);
        if real {
            let row = bh * seq + i;
            let inv = 1.0f32 / l[r];
            #[unroll]
            for c in 0..dim {
                out[row * dim + c] = F::cast_from(acc[r * dim + c] * inv);
            }
            lse[row] = F::cast_from(m[r] + l[r].ln());
        }
    }
}
