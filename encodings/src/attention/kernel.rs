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
//! q arrives scaled (1/√d applied by the caller); `bias` is a `[heads, ≥ seq]` table indexed by
//! distance (`has_bias`) or FIRE's per-head MLP rows (`fire` = its width; see `fire_mlp`).

use cubecl::prelude::*;

/// The pair map of a growing rotary-class encoding (HoPE-Hyp, xPos) applied in-kernel to the
/// row `x` at position `p` (side and transpose as the rotary kernel: same table and formulas;
/// HoPE-Hyp's output in the boost's eigenbasis, see below). Channels past the pairs pass through.
#[cube]
#[allow(clippy::too_many_arguments)]
fn map_row<F: Float>(
    x: &Array<f32>,
    out: &mut Array<f32>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    p: f32,
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
            out[c] = x[c];
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
            let x1 = x[c1];
            let x2 = x[c2];
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
                    out[c1] = (u + v) * 0.707_106_77f32;
                    out[c2] = (u - v) * 0.707_106_77f32;
                } else {
                    out[c1] = (x1 + x2) * ep * 0.707_106_77f32;
                    out[c2] = (x1 - x2) * em * 0.707_106_77f32;
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
                out[c1] = cs * x1 - sn * x2;
                out[c2] = sn * x1 + cs * x2;
            }
        }
    }
}

/// ⟨a, x[o..o + dim]⟩.
#[cube]
fn dot<F: Float>(a: &Array<f32>, x: &Tensor<F>, o: usize, #[comptime] dim: usize) -> f32 {
    let mut s = 0.0f32;
    #[unroll]
    for c in 0..dim {
        s += a[c] * f32::cast_from(x[o + c]);
    }
    s
}

/// FIRE's MLP at input `x` for the head row starting at `o` of `fire: [heads, 3W + 3]`
/// (`[w1 (W), b1 (W), w2_h (W), b2_h, c, L_thr]`): `b2 + Σ_k w2_k · relu(w1_k x + b1_k)`.
#[cube]
fn fire_mlp<F: Float>(fire: &Tensor<F>, o: usize, x: f32, #[comptime] width: usize) -> f32 {
    let mut y = f32::cast_from(fire[o + 3 * width]);
    #[unroll]
    for k in 0..width {
        let a = f32::cast_from(fire[o + k]) * x + f32::cast_from(fire[o + width + k]);
        if a > 0.0 {
            y += f32::cast_from(fire[o + 2 * width + k]) * a;
        }
    }
    y
}

/// FIRE's normaliser for a query at absolute position `pos`: ψ(max(pos, L_thr)) + ε,
/// ψ(y) = ln(|c|·y + 1) (y ≥ 0).
#[cube]
fn fire_norm<F: Float>(fire: &Tensor<F>, o: usize, pos: f32, #[comptime] width: usize) -> f32 {
    let c = f32::cast_from(fire[o + 3 * width + 1]).abs();
    let thr = f32::cast_from(fire[o + 3 * width + 2]);
    let mut m = pos;
    if thr > pos {
        m = thr;
    }
    (c * m + 1.0).ln() + 1.0e-6f32
}

/// FIRE's logit bias at distance `d` for a row with normaliser `norm`.
#[cube]
fn fire_bias<F: Float>(fire: &Tensor<F>, o: usize, d: f32, norm: f32, #[comptime] width: usize) -> f32 {
    let c = f32::cast_from(fire[o + 3 * width + 1]).abs();
    fire_mlp::<F>(fire, o, (c * d + 1.0).ln() / norm, width)
}

/// Adds one score's share (logit gradient `ds` at distance `d`) to FIRE's row gradient
/// `g = [w1 (W), b1 (W), w2_h (W), b2_h, A, B]`, with A = Σ g_x·∂ψ(d)/∂c and B = Σ g_x·ψ(d)
/// (g_x: the gradient to the MLP input), which [`fire_row_grad`] turns into dc and dL_thr.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fire_grad<F: Float>(
    fire: &Tensor<F>,
    o: usize,
    d: f32,
    norm: f32,
    ds: f32,
    g: &mut Array<f32>,
    #[comptime] width: usize,
) {
    let cr = f32::cast_from(fire[o + 3 * width + 1]);
    let c = cr.abs();
    let psi = (c * d + 1.0).ln();
    let x = psi / norm;
    let mut gx = 0.0f32;
    #[unroll]
    for k in 0..width {
        let w1 = f32::cast_from(fire[o + k]);
        let a = w1 * x + f32::cast_from(fire[o + width + k]);
        if a > 0.0 {
            let ga = ds * f32::cast_from(fire[o + 2 * width + k]);
            g[2 * width + k] += ds * a;
            g[k] += ga * x;
            g[width + k] += ga;
            gx += ga * w1;
        }
    }
    g[3 * width] += ds;
    g[3 * width + 1] += gx * d * sign(cr) / (c * d + 1.0);
    g[3 * width + 2] += gx * psi;
}

/// Turns the row sums A, B of [`fire_grad`] into dc and dL_thr: x = ψ(d)/N with
/// N = ψ(M) + ε, M = max(pos, L_thr), so ∂x/∂c = ψ'_c(d)/N − ψ(d)·ψ'_c(M)/N² and
/// ∂x/∂L_thr = −ψ(d)·ψ'(M)/N² where L_thr > pos (Burn's `max_pair` routes ties to pos).
#[cube]
fn fire_row_grad<F: Float>(
    fire: &Tensor<F>,
    o: usize,
    pos: f32,
    norm: f32,
    g: &mut Array<f32>,
    #[comptime] width: usize,
) {
    let cr = f32::cast_from(fire[o + 3 * width + 1]);
    let c = cr.abs();
    let thr = f32::cast_from(fire[o + 3 * width + 2]);
    let mut m = pos;
    if thr > pos {
        m = thr;
    }
    let (a, b) = (g[3 * width + 1], g[3 * width + 2]);
    let n2 = norm * norm;
    g[3 * width + 1] = a / norm - b * m * sign(cr) / ((c * m + 1.0) * n2);
    let mut gt = 0.0f32;
    if thr > pos {
        gt = -b * c / ((c * m + 1.0) * n2);
    }
    g[3 * width + 2] = gt;
}

/// sign(x) with sign(0) = 0 (Burn's `abs` gradient).
#[cube]
fn sign(x: f32) -> f32 {
    let mut s = 0.0f32;
    if x > 0.0f32 {
        s = 1.0f32;
    }
    if x < 0.0f32 {
        s = -1.0f32;
    }
    s
}

/// Tile length T of the growing maps: HoPE-Hyp's from the current θ' on the device,
/// ⌊40 / (θ' + max θ_i)⌋ with `scal[2]` = max θ_i (so a learnt θ' never leaves a stale T, and
/// factors stay within e^±40); xPos's fixed T in `scal[2]`; the whole sequence otherwise.
#[cube]
fn tile_len<F: Float>(
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
pub(super) fn tile_map_kernel<F: Float>(
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
    map_row::<F>(&raw, &mut mapped, table, scal, p, dim, key_side, false, interleaved, hyperbolic, scaled);
    #[unroll]
    for c in 0..dim {
        out[row * dim + c] = F::cast_from(mapped[c]);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    kt: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<F>,
    table: &Tensor<F>,
    scal: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    #[comptime] dim: usize,
    #[comptime] has_bias: bool,
    #[comptime] mapped: bool,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] scaled: bool,
    #[comptime] fire: usize,
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
    let fo = h * blen; // FIRE: this head's row of `bias`
    let tile = tile_len::<F>(scal, seq, mapped, hyperbolic);
    let mut raw = Array::<f32>::new(dim);
    let mut qr = Array::<f32>::new(dim);
    let mut acc = Array::<f32>::new(dim);
    #[unroll]
    for c in 0..dim {
        raw[c] = f32::cast_from(q[row * dim + c]);
        qr[c] = raw[c];
        acc[c] = 0.0f32;
    }
    // FIRE: the row's normaliser (`scal[0]`: the first token's absolute position)
    let mut norm = 1.0f32;
    if comptime!(fire > 0) {
        norm = fire_norm::<F>(bias, fo, f32::cast_from(scal[0]) + f32::cast_from(i), fire);
    }
    let mut m = f32::new(-3.0e38);
    let mut l = 0.0f32;
    for t in 0..i / tile + 1 {
        let j0 = t * tile;
        if mapped {
            // re-centred on the key tile's first position: q at i − j0, keys at j − j0
            map_row::<F>(
                &raw,
                &mut qr,
                table,
                scal,
                f32::cast_from(i - j0),
                dim,
                false,
                false,
                interleaved,
                hyperbolic,
                scaled,
            );
        }
        let mut j1 = j0 + tile;
        if j1 > i + 1 {
            j1 = i + 1;
        }
        for j in j0..j1 {
            let ko = base + j * dim;
            let mut s = dot::<F>(&qr, kt, ko, dim);
            if has_bias {
                s += f32::cast_from(bias[h * blen + i - j]);
            }
            if comptime!(fire > 0) {
                s += fire_bias::<F>(bias, fo, f32::cast_from(i - j), norm, fire);
            }
            if s > m {
                let corr = (m - s).exp();
                l *= corr;
                #[unroll]
                for c in 0..dim {
                    acc[c] *= corr;
                }
                m = s;
            }
            let p = (s - m).exp();
            l += p;
            #[unroll]
            for c in 0..dim {
                acc[c] += p * f32::cast_from(v[ko + c]);
            }
        }
    }
    let inv = 1.0f32 / l;
    #[unroll]
    for c in 0..dim {
        out[row * dim + c] = F::cast_from(acc[c] * inv);
    }
    lse[row] = F::cast_from(m + l.ln());
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn dq_kernel<F: Float>(
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
    #[comptime] has_bias: bool,
    #[comptime] mapped: bool,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] scaled: bool,
    #[comptime] fire: usize,
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
    let fo = h * blen; // FIRE: this head's row of `bias`
    let rotated = 2 * table.shape(0);
    let tile = tile_len::<F>(scal, seq, mapped, hyperbolic);
    let mut raw = Array::<f32>::new(dim);
    let mut qr = Array::<f32>::new(dim);
    let mut dor = Array::<f32>::new(dim);
    let mut acc = Array::<f32>::new(dim);
    let mut dqt = Array::<f32>::new(dim);
    let mut back = Array::<f32>::new(dim);
    #[unroll]
    for c in 0..dim {
        raw[c] = f32::cast_from(q[row * dim + c]);
        qr[c] = raw[c];
        dor[c] = f32::cast_from(dout[row * dim + c]);
        acc[c] = 0.0f32;
    }
    let li = f32::cast_from(lse[row]);
    let di = f32::cast_from(delta[row]);
    // FIRE: the row's normaliser (`scal[0]`: the first token's absolute position)
    let mut norm = 1.0f32;
    if comptime!(fire > 0) {
        norm = fire_norm::<F>(bias, fo, f32::cast_from(scal[0]) + f32::cast_from(i), fire);
    }
    // d logit/dθ' = −Δ · (rotated part of the logit) for HoPE-Hyp's damping
    let mut g_tp = 0.0f32;
    // FIRE's row gradient (see `fire_grad`)
    let mut gfire = Array::<f32>::new(comptime!(3 * fire + 3));
    #[unroll]
    for c in 0..comptime!(3 * fire + 3) {
        gfire[c] = 0.0f32;
    }
    for t in 0..i / tile + 1 {
        let j0 = t * tile;
        if mapped {
            map_row::<F>(
                &raw,
                &mut qr,
                table,
                scal,
                f32::cast_from(i - j0),
                dim,
                false,
                false,
                interleaved,
                hyperbolic,
                scaled,
            );
            #[unroll]
            for c in 0..dim {
                dqt[c] = 0.0f32;
            }
        }
        let mut j1 = j0 + tile;
        if j1 > i + 1 {
            j1 = i + 1;
        }
        for j in j0..j1 {
            let ko = base + j * dim;
            let mut s = dot::<F>(&qr, kt, ko, dim);
            if has_bias {
                s += f32::cast_from(bias[h * blen + i - j]);
            }
            if comptime!(fire > 0) {
                s += fire_bias::<F>(bias, fo, f32::cast_from(i - j), norm, fire);
            }
            let p = (s - li).exp();
            let ds = p * (dot::<F>(&dor, v, ko, dim) - di);
            if comptime!(fire > 0) {
                fire_grad::<F>(bias, fo, f32::cast_from(i - j), norm, ds, &mut gfire, fire);
            }
            if mapped {
                if hyperbolic {
                    let mut srot = 0.0f32;
                    #[unroll]
                    for c in 0..dim {
                        if c < rotated {
                            srot += qr[c] * f32::cast_from(kt[ko + c]);
                        }
                    }
                    g_tp -= ds * f32::cast_from(i - j) * srot;
                }
                #[unroll]
                for c in 0..dim {
                    dqt[c] += ds * f32::cast_from(kt[ko + c]);
                }
            } else {
                #[unroll]
                for c in 0..dim {
                    acc[c] += ds * f32::cast_from(kt[ko + c]);
                }
            }
        }
        if mapped {
            // back through this tile's query map: Mᵀ
            map_row::<F>(
                &dqt,
                &mut back,
                table,
                scal,
                f32::cast_from(i - j0),
                dim,
                false,
                true,
                interleaved,
                hyperbolic,
                scaled,
            );
            #[unroll]
            for c in 0..dim {
                acc[c] += back[c];
            }
        }
    }
    #[unroll]
    for c in 0..dim {
        dq[row * dim + c] = F::cast_from(acc[c]);
    }
    if comptime!(fire > 0) {
        let pos = f32::cast_from(scal[0]) + f32::cast_from(i);
        fire_row_grad::<F>(bias, fo, pos, norm, &mut gfire, fire);
        let np = comptime!(3 * fire + 3);
        #[unroll]
        for c in 0..np {
            dparam[row * np + c] = F::cast_from(gfire[c]);
        }
    } else {
        dparam[row] = F::cast_from(g_tp);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn dkv_kernel<F: Float>(
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
    #[comptime] has_bias: bool,
    #[comptime] mapped: bool,
    #[comptime] interleaved: bool,
    #[comptime] hyperbolic: bool,
    #[comptime] scaled: bool,
    #[comptime] fire: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let seq = qt.shape(2);
    let j = row % seq;
    let bh = row / seq;
    let h = bh % qt.shape(1);
    let base = bh * seq * dim;
    let blen = bias.shape(1);
    let fo = h * blen; // FIRE: this head's row of `bias`
    let tile = tile_len::<F>(scal, seq, mapped, hyperbolic);
    let mut raw = Array::<f32>::new(dim);
    let mut kr = Array::<f32>::new(dim);
    let mut vr = Array::<f32>::new(dim);
    let mut dkr = Array::<f32>::new(dim);
    let mut dkt = Array::<f32>::new(dim);
    let mut back = Array::<f32>::new(dim);
    let mut dvr = Array::<f32>::new(dim);
    #[unroll]
    for c in 0..dim {
        raw[c] = f32::cast_from(k[row * dim + c]);
        kr[c] = raw[c];
        vr[c] = f32::cast_from(v[row * dim + c]);
        dkr[c] = 0.0f32;
        dvr[c] = 0.0f32;
    }
    for t in j / tile..(seq - 1) / tile + 1 {
        let i0 = t * tile;
        if mapped {
            // re-centred on the query tile's first position: queries at i − i0, this key at j − i0
            let p = f32::cast_from(j) - f32::cast_from(i0);
            map_row::<F>(&raw, &mut kr, table, scal, p, dim, true, false, interleaved, hyperbolic, scaled);
            #[unroll]
            for c in 0..dim {
                dkt[c] = 0.0f32;
            }
        }
        let mut i1 = i0 + tile;
        if i1 > seq {
            i1 = seq;
        }
        let mut ia = i0;
        if ia < j {
            ia = j;
        }
        for i in ia..i1 {
            let qo = base + i * dim;
            let mut s = dot::<F>(&kr, qt, qo, dim);
            if has_bias {
                s += f32::cast_from(bias[h * blen + i - j]);
            }
            if comptime!(fire > 0) {
                let pos = f32::cast_from(scal[0]) + f32::cast_from(i);
                let norm = fire_norm::<F>(bias, fo, pos, fire);
                s += fire_bias::<F>(bias, fo, f32::cast_from(i - j), norm, fire);
            }
            let qi = bh * seq + i;
            let p = (s - f32::cast_from(lse[qi])).exp();
            let ds = p * (dot::<F>(&vr, dout, qo, dim) - f32::cast_from(delta[qi]));
            #[unroll]
            for c in 0..dim {
                dvr[c] += p * f32::cast_from(dout[qo + c]);
            }
            if mapped {
                #[unroll]
                for c in 0..dim {
                    dkt[c] += ds * f32::cast_from(qt[qo + c]);
                }
            } else {
                #[unroll]
                for c in 0..dim {
                    dkr[c] += ds * f32::cast_from(qt[qo + c]);
                }
            }
        }
        if mapped {
            let p = f32::cast_from(j) - f32::cast_from(i0);
            map_row::<F>(&dkt, &mut back, table, scal, p, dim, true, true, interleaved, hyperbolic, scaled);
            #[unroll]
            for c in 0..dim {
                dkr[c] += back[c];
            }
        }
    }
    #[unroll]
    for c in 0..dim {
        dk[row * dim + c] = F::cast_from(dkr[c]);
        dv[row * dim + c] = F::cast_from(dvr[c]);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn dbias_kernel<F: Float>(
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
