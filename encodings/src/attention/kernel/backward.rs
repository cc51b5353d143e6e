//! The backward kernels: dQ with the encoding's parameter shares, dK/dV, and the distance-bias
//! gradient.

use cubecl::prelude::*;

use super::fire::{fire_bias, fire_grad_at, fire_norm, fire_row_grad_at};
use super::map::{map_row, tile_len};
use super::{dot_local, lane_row, load_row, tile_rows};

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dq_kernel<F: Float>(
    q: &Tensor<F>,
    kt: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    delta: &Tensor<F>,
    dq: &mut Tensor<F>,
    dparam: &mut Tensor<F>,
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
    let rotated = 2 * table.shape(0);
    let tile = tile_len::<F>(scal, seq, mapped, hyperbolic);
    let np = comptime!(3 * fire + 3);
    let mut raw = Array::<f32>::new(comptime!(rpl * dim));
    let mut qr = Array::<f32>::new(comptime!(rpl * dim));
    let mut dor = Array::<f32>::new(comptime!(rpl * dim));
    let mut acc = Array::<f32>::new(comptime!(rpl * dim));
    let mut dqt = Array::<f32>::new(comptime!(rpl * dim));
    let mut back = Array::<f32>::new(comptime!(rpl * dim));
    let mut kk = Array::<f32>::new(dim);
    let mut vv = Array::<f32>::new(dim);
    let mut li = Array::<f32>::new(rpl);
    let mut di = Array::<f32>::new(rpl);
    let mut norm = Array::<f32>::new(rpl);
    // d logit/dθ' = −Δ · (rotated part of the logit) for HoPE-Hyp's damping
    let mut g_tp = Array::<f32>::new(rpl);
    // FIRE's row gradients (see `fire_grad_at`)
    let mut gfire = Array::<f32>::new(comptime!(rpl * np));
    #[unroll]
    for r in 0..rpl {
        let (i, _) = lane_row(first, last, r);
        let row = bh * seq + i;
        #[unroll]
        for c in 0..dim {
            raw[r * dim + c] = f32::cast_from(q[row * dim + c]);
            qr[r * dim + c] = raw[r * dim + c];
            dor[r * dim + c] = f32::cast_from(dout[row * dim + c]);
            acc[r * dim + c] = 0.0f32;
        }
        li[r] = f32::cast_from(lse[row]);
        di[r] = f32::cast_from(delta[row]);
        // FIRE: the row's normaliser (`scal[0]`: the first token's absolute position)
        norm[r] = 1.0f32;
        if comptime!(fire > 0) {
            norm[r] = fire_norm::<F>(bias, fo, f32::cast_from(scal[0]) + f32::cast_from(i), fire);
        }
        g_tp[r] = 0.0f32;
        #[unroll]
        for c in 0..np {
            gfire[r * np + c] = 0.0f32;
        }
    }
    for t in 0..last / tile + 1 {
        let j0 = t * tile;
        if mapped {
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
                #[unroll]
                for c in 0..dim {
                    dqt[r * dim + c] = 0.0f32;
                }
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
                // a masked key: p = 0, so ds = 0 and it adds nothing below
                s = select(seen, s, -1.0e30f32);
                let p = (s - li[r]).exp();
                let ds = p * (dot_local(&dor, &vv, comptime!(r * dim), dim) - di[r]);
                if comptime!(fire > 0) {
                    fire_grad_at::<F>(
                        bias,
                        fo,
                        f32::cast_from(dist),
                        norm[r],
                        ds,
                        &mut gfire,
                        comptime!(r * np),
                        fire,
                    );
                }
                if mapped {
                    if hyperbolic {
                        let mut srot = 0.0f32;
                        #[unroll]
                        for c in 0..dim {
                            if c < rotated {
                                srot += qr[r * dim + c] * kk[c];
                            }
                        }
                        g_tp[r] -= ds * f32::cast_from(dist) * srot;
                    }
                    #[unroll]
                    for c in 0..dim {
                        dqt[r * dim + c] += ds * kk[c];
                    }
                } else {
                    #[unroll]
                    for c in 0..dim {
                        acc[r * dim + c] += ds * kk[c];
                    }
                }
            }
        }
        if mapped {
            // back through this tile's query map: Mᵀ
            #[unroll]
            for r in 0..rpl {
                let (i, _) = lane_row(first, last, r);
                let p = select(i >= j0, f32::cast_from(i) - f32::cast_from(j0), 0.0f32);
                map_row::<F>(
                    &dqt,
                    &mut back,
                    table,
                    scal,
                    p,
                    comptime!(r * dim),
                    dim,
                    false,
                    true,
                    interleaved,
                    hyperbolic,
                    scaled,
                );
                #[unroll]
                for c in 0..dim {
                    acc[r * dim + c] += back[r * dim + c];
                }
            }
        }
    }
    #[unroll]
    for r in 0..rpl {
        let (i, real) = lane_row(first, last, r);
        if real {
            let row = bh * seq + i;
            #[unroll]
            for c in 0..dim {
                dq[row * dim + c] = F::cast_from(acc[r * dim + c]);
            }
            if comptime!(fire > 0) {
                let pos = f32::cast_from(scal[0]) + f32::cast_from(i);
                fire_row_grad_at::<F>(bias, fo, pos, norm[r], &mut gfire, comptime!(r * np), fire);
                #[unroll]
                for c in 0..np {
                    dparam[row * np + c] = F::cast_from(gfire[r * np + c]);
                }
            } else {
                dparam[row] = F::cast_from(g_tp[r]);
            }
        }
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dkv_kernel<F: Float>(
    qt: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<F>,
    delta: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
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
    let seq = qt.shape(2);
    // this workgroup's keys j = first..=last; each lane holds `rpl` of them
    let (bh, first, last) = tile_rows(seq, rpl);
    let h = bh % qt.shape(1);
    let base = bh * seq * dim;
    let blen = bias.shape(1);
    let fo = h * blen; // FIRE: this head's row of `bias`
    let tile = tile_len::<F>(scal, seq, mapped, hyperbolic);
    let mut raw = Array::<f32>::new(comptime!(rpl * dim));
    let mut kr = Array::<f32>::new(comptime!(rpl * dim));
    let mut vr = Array::<f32>::new(comptime!(rpl * dim));
    let mut dkr = Array::<f32>::new(comptime!(rpl * dim));
    let mut dkt = Array::<f32>::new(comptime!(rpl * dim));
    let mut back = Array::<f32>::new(comptime!(rpl * dim));
    let mut dvr = Array::<f32>::new(comptime!(rpl * dim));
    let mut qq = Array::<f32>::new(dim);
    let mut dd = Array::<f32>::new(dim);
    #[unroll]
    for r in 0..rpl {
        let (j, _) = lane_row(first, last, r);
        let row = bh * seq + j;
        #[unroll]
        for c in 0..dim {
            raw[r * dim + c] = f32::cast_from(k[row * dim + c]);
            kr[r * dim + c] = raw[r * dim + c];
            vr[r * dim + c] = f32::cast_from(v[row * dim + c]);
            dkr[r * dim + c] = 0.0f32;
            dvr[r * dim + c] = 0.0f32;
        }
    }
    // queries first..seq for every lane (uniform); a key masks queries before it
    for t in first / tile..(seq - 1) / tile + 1 {
        let i0 = t * tile;
        let mut i1 = i0 + tile;
        if i1 > seq {
            i1 = seq;
        }
        if mapped {
            // re-centred on the query tile's first position: queries at i − i0, keys at j − i0;
            // a key past the tile sees none of its queries: mapped at 0 (j − i0 could pass the
            // tile length T, where a key factor would overflow, and 0 · ∞ is NaN)
            #[unroll]
            for r in 0..rpl {
                let (j, _) = lane_row(first, last, r);
                let p = select(j < i1, f32::cast_from(j) - f32::cast_from(i0), 0.0f32);
                map_row::<F>(
                    &raw,
                    &mut kr,
                    table,
                    scal,
                    p,
                    comptime!(r * dim),
                    dim,
                    true,
                    false,
                    interleaved,
                    hyperbolic,
                    scaled,
                );
                #[unroll]
                for c in 0..dim {
                    dkt[r * dim + c] = 0.0f32;
                }
            }
        }
        let mut ia = i0;
        if ia < first {
            ia = first;
        }
        for i in ia..i1 {
            let qo = base + i * dim;
            load_row::<F>(qt, qo, &mut qq, dim);
            load_row::<F>(dout, qo, &mut dd, dim);
            let qi = bh * seq + i;
            let lse_i = f32::cast_from(lse[qi]);
            let delta_i = f32::cast_from(delta[qi]);
            let mut norm = 1.0f32;
            if comptime!(fire > 0) {
                let pos = f32::cast_from(scal[0]) + f32::cast_from(i);
                norm = fire_norm::<F>(bias, fo, pos, fire);
            }
            #[unroll]
            for r in 0..rpl {
                let (j, _) = lane_row(first, last, r);
                let seen = i >= j;
                let dist = i - select(seen, j, i); // 0 when masked: never wraps
                let mut s = dot_local(&kr, &qq, comptime!(r * dim), dim);
                if has_bias {
                    s += f32::cast_from(bias[h * blen + dist]);
                }
                if comptime!(fire > 0) {
                    s += fire_bias::<F>(bias, fo, f32::cast_from(dist), norm, fire);
                }
                // a masked query: p = 0, so it adds nothing below
                s = select(seen, s, -1.0e30f32);
                let p = (s - lse_i).exp();
                let ds = p * (dot_local(&vr, &dd, comptime!(r * dim), dim) - delta_i);
                #[unroll]
                for c in 0..dim {
                    dvr[r * dim + c] += p * dd[c];
                }
                if mapped {
                    #[unroll]
                    for c in 0..dim {
                        dkt[r * dim + c] += ds * qq[c];
                    }
                } else {
                    #[unroll]
                    for c in 0..dim {
                        dkr[r * dim + c] += ds * qq[c];
                    }
                }
            }
        }
        if mapped {
            #[unroll]
            for r in 0..rpl {
                let (j, _) = lane_row(first, last, r);
                let p = select(j < i1, f32::cast_from(j) - f32::cast_from(i0), 0.0f32);
                map_row::<F>(
                    &dkt,
                    &mut back,
                    table,
                    scal,
                    p,
                    comptime!(r * dim),
                    dim,
                    true,
                    true,
                    interleaved,
                    hyperbolic,
                    scaled,
                );
                #[unroll]
                for c in 0..dim {
                    dkr[r * dim + c] += back[r * dim + c];
                }
            }
        }
    }
    #[unroll]
    for r in 0..rpl {
        let (j, real) = lane_row(first, last, r);
        if real {
            let row = bh * seq + j;
            #[unroll]
            for c in 0..dim {
                dk[row * dim + c] = F::cast_from(dkr[r * dim + c]);
                dv[row * dim + c] = F::cast_from(dvr[r * dim + c]);
            }
        }
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dbias_kernel<F: Float>(
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
        #[unroll]
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
