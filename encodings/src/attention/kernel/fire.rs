//! FIRE inside the attention kernels: its MLP per score and the gradient to its weights, c and
//! threshold, accumulated per row.

use cubecl::prelude::*;

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
pub(super) fn fire_norm<F: Float>(fire: &Tensor<F>, o: usize, pos: f32, #[comptime] width: usize) -> f32 {
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
pub(super) fn fire_bias<F: Float>(
    fire: &Tensor<F>,
    o: usize,
    d: f32,
    norm: f32,
    #[comptime] width: usize,
) -> f32 {
    let c = f32::cast_from(fire[o + 3 * width + 1]).abs();
    fire_mlp::<F>(fire, o, (c * d + 1.0).ln() / norm, width)
}

/// Adds one score's share (logit gradient `ds` at distance `d`) to FIRE's row gradient
/// `g = [w1 (W), b1 (W), w2_h (W), b2_h, A, B]`, with A = Σ g_x·∂ψ(d)/∂c and B = Σ g_x·ψ(d)
/// (g_x: the gradient to the MLP input), which [`fire_row_grad_at`] turns into dc and dL_thr.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn fire_grad_at<F: Float>(
    fire: &Tensor<F>,
    o: usize,
    d: f32,
    norm: f32,
    ds: f32,
    g: &mut Array<f32>,
    #[comptime] go: usize,
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
            g[go + 2 * width + k] += ds * a;
            g[go + k] += ga * x;
            g[go + width + k] += ga;
            gx += ga * w1;
        }
    }
    g[go + 3 * width] += ds;
    g[go + 3 * width + 1] += gx * d * sign(cr) / (c * d + 1.0);
    g[go + 3 * width + 2] += gx * psi;
}

/// Turns the row sums A, B of [`fire_grad_at`] into dc and dL_thr: x = ψ(d)/N with
/// N = ψ(M) + ε, M = max(pos, L_thr), so ∂x/∂c = ψ'_c(d)/N − ψ(d)·ψ'_c(M)/N² and
/// ∂x/∂L_thr = −ψ(d)·ψ'(M)/N² where L_thr > pos (Burn's `max_pair` routes ties to pos).
#[cube]
pub(super) fn fire_row_grad_at<F: Float>(
    fire: &Tensor<F>,
    o: usize,
    pos: f32,
    norm: f32,
    g: &mut Array<f32>,
    #[comptime] go: usize,
    #[comptime] width: usize,
) {
    let cr = f32::cast_from(fire[o + 3 * width + 1]);
    let c = cr.abs();
    let thr = f32::cast_from(fire[o + 3 * width + 2]);
    let mut m = pos;
    if thr > pos {
        m = thr;
    }
    let (a, b) = (g[go + 3 * width + 1], g[go + 3 * width + 2]);
    let n2 = norm * norm;
    g[go + 3 * width + 1] = a / norm - b * m * sign(cr) / ((c * m + 1.0) * n2);
    let mut gt = 0.0f32;
    if thr > pos {
        gt = -b * c / ((c * m + 1.0) * n2);
    }
    g[go + 3 * width + 2] = gt;
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
