//! The reference rotary path in plain Burn tensor ops (differentiable; used on every backend
//! without a fused kernel, and the oracle the kernels are tested against).

use burn::prelude::*;

use super::{PairMap, RotaryEncoding, Side};

/// Per-pair coefficients, two tables `[starts, 1, seq, pairs]` for positions `starts[j] + s`:
/// for a rotation (with xPos scale / YaRN factor) `(g·cos, g·sin)` — its map is
/// `[[a, −c], [c, a]]`, so two tables suffice; for HoPE-Hyp the boost's eigenvalues `(e₊, e₋)`.
/// Tables that depend on no parameter are cached by the encoding (same shape, start, side and
/// context → the same tensors, built and uploaded once).
fn coefficients(
    enc: &RotaryEncoding,
    starts: &[i64],
    seq: usize,
    side: Side,
    context_len: usize,
    device: &Device,
) -> [Tensor<4>; 2] {
    let spec = enc.spec();
    let half = spec.pairs();
    let nb = starts.len();
    let theta = spec.theta_at(context_len);
    let shape = [nb, 1, seq, half];
    let n = nb * seq * half;
    match (spec.map, enc.theta_prime_tensor(device)) {
        (PairMap::Hyperbolic { .. }, Some(theta_prime)) => {
            // e_± = exp(−σp·θ' ± σp·θ_i): θ' stays a tensor so its gradient flows.
            let s = side.sign();
            let mut sp = Vec::with_capacity(nb * seq);
            let mut spt = Vec::with_capacity(n);
            for &start in starts {
                for t in 0..seq {
                    let p = s * (start + t as i64) as f64;
                    sp.push(p as f32);
                    spt.extend(theta.iter().map(|th| (p * th) as f32));
                }
            }
            let sp = Tensor::<4>::from_data(TensorData::new(sp, [nb, 1, seq, 1]), device);
            let spt = Tensor::<4>::from_data(TensorData::new(spt, shape), device);
            let damp = sp * theta_prime.reshape([1, 1, 1, 1]); // [nb, 1, seq, 1]
            let ep = (spt.clone() - damp.clone()).exp();
            let em = (spt.neg() - damp).exp();
            [ep, em] // applied in the boost's eigenbasis by `apply` (well conditioned)
        }
        _ => enc.cached_tables(starts, seq, side, context_len, device, || {
            let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for &start in starts {
                for t in 0..seq {
                    let p = (start + t as i64) as f64;
                    for (i, &th) in theta.iter().enumerate() {
                        let [[a, _], [c, _]] = spec.pair_map(i, th, p, side, 0.0);
                        cos.push(a as f32);
                        sin.push(c as f32);
                    }
                }
            }
            [cos, sin].map(|v| Tensor::from_data(TensorData::new(v, shape), device))
        }),
    }
}

/// A norm-preserving map's coefficients `(a, c)` (its pair map `[[a, −c], [c, a]]`) for
/// positions `0..seq` of both sides, as one `[4 · seq, pairs]` table (`a_q, c_q, a_k, c_k`): for a
/// kernel that applies the map itself (the flex attention). Cached like [`apply`]'s tables.
pub(crate) fn rotation_table(
    enc: &RotaryEncoding,
    seq: usize,
    context_len: usize,
    device: &Device,
) -> Tensor<2> {
    assert!(enc.query_block_seen().is_none(), "rotation tables are for norm-preserving maps");
    let pairs = enc.spec().pairs();
    let [aq, cq] = coefficients(enc, &[0], seq, Side::Query, context_len, device);
    let [ak, ck] = coefficients(enc, &[0], seq, Side::Key, context_len, device);
    Tensor::cat(vec![aq, cq, ak, ck], 0).reshape([4 * seq, pairs])
}

/// Growing factors (HoPE-Hyp, xPos) are bounded only for re-centred positions: the query side
/// may go forward, the key side back, by at most a safe block. Panics otherwise (a caller bug
/// that would silently produce inf/NaN).
pub fn check_centred(enc: &RotaryEncoding, starts: &[i64], seq: usize, side: Side) {
    if let Some(block) = enc.query_block_seen() {
        let (lo, hi) = (*starts.iter().min().unwrap(), starts.iter().max().unwrap() + seq as i64 - 1);
        let growing = match side {
            Side::Query => -lo,
            Side::Key => hi,
        };
        // blocks are sized for accuracy (factors within e^±LOG_BUDGET); overflow only past e^±80
        let limit = (80.0 / super::LOG_BUDGET) as i64 * block as i64;
        assert!(
            growing <= limit,
            "{}: positions {lo}..={hi} on the {side:?} side are not re-centred (use apply_qk)",
            enc.spec().kind
        );
    }
}

/// `x: [batch, heads, seq, head_dim]` → same shape, pairs mapped, pass-through channels kept.
pub fn apply(
    enc: &RotaryEncoding,
    x: Tensor<4>,
    starts: &[i64],
    side: Side,
    context_len: usize,
) -> Tensor<4> {
    let spec = enc.spec();
    let [batch, heads, seq, dim] = x.dims();
    assert_eq!(dim, spec.head_dim, "head_dim of the input differs from the encoding's");
    assert!(starts.len() == 1 || starts.len() == batch, "start offsets: one per sequence or one for all");
    check_centred(enc, starts, seq, side);
    let device = x.device();
    let (r, half) = (spec.rotary_dim, spec.pairs());
    let [a, c] = coefficients(enc, starts, seq, side, context_len, &device);

    let pass = (r < dim).then(|| x.clone().narrow(3, r, dim - r));
    let rot = if r < dim { x.narrow(3, 0, r) } else { x };
    let (x1, x2) = match spec.layout {
        super::Layout::Half => (rot.clone().narrow(3, 0, half), rot.narrow(3, half, half)),
        super::Layout::Interleaved => {
            let t = rot.reshape([batch, heads, seq, half, 2]);
            (
                t.clone().narrow(4, 0, 1).reshape([batch, heads, seq, half]),
                t.narrow(4, 1, 1).reshape([batch, heads, seq, half]),
            )
        }
    };
    let (y1, y2) = if matches!(spec.map, PairMap::Hyperbolic { .. }) {
        // a = e_+, d = e_−: (x1 ± x2)/2 scale by e_±, without the cancellation of a·x1 + b·x2
        let u = (x1.clone() + x2.clone()) * a;
        let v = (x1 - x2) * c;
        ((u.clone() + v.clone()).mul_scalar(0.5), (u - v).mul_scalar(0.5))
    } else {
        // [[a, −c], [c, a]]: y1 = a·x1 − c·x2, y2 = c·x1 + a·x2
        (x1.clone() * a.clone() - x2.clone() * c.clone(), x1 * c + x2 * a) // [batch, heads, seq, half]
    };
    let out = match spec.layout {
        super::Layout::Half => Tensor::cat(vec![y1, y2], 3),
        super::Layout::Interleaved => {
            Tensor::cat(vec![y1.unsqueeze_dim::<5>(4), y2.unsqueeze_dim::<5>(4)], 4)
                .reshape([batch, heads, seq, r])
        }
    };
    match pass {
        Some(p) => Tensor::cat(vec![out, p], 3),
        None => out,
    }
}
