//! RoPE per-pair activation (`zoo analyze`, rotary models): each pair's contribution
//! `c_i(m, n) = q_i(m)ᵀ M_i(m−n) k_i(n) / √head_dim` to the attention logits, from the layer's
//! un-encoded q and k and the encoding's exact `M_i(Δ)` (f64, host).
//!
//! Per pair: mean ‖q_i‖ and ‖k_i‖; the mean and variance of `c_i` per distance bucket
//! (Δ = 0, 1, 2–3, 4–7, …); its **U-contrast** — for the queries in the last quarter of the window
//! (as the U-score), keys binned by relative position n/m into 10 bins,
//! `(bin 0 + bin 9)/2 − (bin 4 + bin 5)/2` of the mean contribution (logit units: the logit's
//! U-contrast is the sum over pairs); and flags:
//! - `activated`: the pair carries the U — U-contrast > 0 and at least twice the uniform share
//!   (2/pairs) of the sum of the positive U-contrasts;
//! - `position_independent`: the map barely matters — `positional_share`, the mean
//!   |c_i − c⁰_i| over the mean |c⁰_i| with c⁰_i = q_iᵀ M_i(0) k_i (the same q, k with no
//!   relative position), is ≤ 0.1. Unrotated pairs score 0; low-frequency pairs (θ_i·L ≪ 1) near 0;
//! - `hope_hf_dropped`: θ_i < 2π/L_train, the pairs HoPE-HF would not rotate at this length.
//!
//! Channels of partial rotary that belong to no pair are not reported.

use crate::run::results::{LayerPairs, PairStats};

/// Distance bucket of Δ: 0 → 0, 1 → 1, 2–3 → 2, 4–7 → 3, …
pub fn bucket(d: usize) -> usize {
    if d == 0 { 0 } else { d.ilog2() as usize + 1 }
}

/// What the encoding says about its pairs: channels, θ_i (in the map), rotated, θ_i of the base grid.
#[derive(Debug, Clone)]
pub struct PairSpec {
    pub channels: [usize; 2],
    pub theta: f64,
    pub base_theta: f64,
    pub rotated: bool,
}

/// An encoding's pairs and maps for a window of s tokens.
#[derive(Debug, Clone)]
pub struct PairTables {
    pub pairs: Vec<PairSpec>,
    /// `mats[Δ][i]` = M_i(Δ) for Δ in 0..s.
    pub mats: Vec<Vec<[[f64; 2]; 2]>>,
    pub head_dim: usize,
    pub train_len: usize,
}

/// Statistics for `count` (batch·head) sequences of length `s`: `q`, `k` flattened as
/// `[count][s][head_dim]`.
pub fn pair_stats(q: &[f32], k: &[f32], count: usize, s: usize, t: &PairTables, layer: usize) -> LayerPairs {
    let (pairs, mats, head_dim, train_len) = (&t.pairs, &t.mats, t.head_dim, t.train_len);
    let (np, nb) = (pairs.len(), bucket(s.saturating_sub(1)) + 1);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let (mut sum, mut sq, mut cnt) = (vec![0f64; np * nb], vec![0f64; np * nb], vec![0usize; nb]);
    let (mut rel, mut n_q) = (vec![0f64; np * 10], 0usize);
    let (mut qn, mut kn) = (vec![0f64; np], vec![0f64; np]);
    let mut c = vec![0f64; np];
    let (mut abs_pos, mut abs_c0) = (vec![0f64; np], vec![0f64; np]);
    for w in 0..count {
        let row = |t: usize| (w * s + t) * head_dim;
        for m in 0..s {
            let (qm, km) = (row(m), row(m));
            for (i, p) in pairs.iter().enumerate() {
                let [a, b] = p.channels;
                qn[i] += (q[qm + a] as f64).hypot(q[qm + b] as f64);
                kn[i] += (k[km + a] as f64).hypot(k[km + b] as f64);
            }
            let last_quarter = m >= 3 * s / 4 && m >= 10;
            let mut rel_q = vec![0f64; if last_quarter { np * 10 } else { 0 }];
            for n in 0..=m {
                let (d, kr) = (m - n, row(n));
                let bk = bucket(d);
                cnt[bk] += 1;
                for (i, p) in pairs.iter().enumerate() {
                    let [a, b] = p.channels;
                    let (qa, qb, ka, kb) =
                        (q[qm + a] as f64, q[qm + b] as f64, k[kr + a] as f64, k[kr + b] as f64);
                    let bilinear = |m: &[[f64; 2]; 2]| {
                        scale * (qa * (m[0][0] * ka + m[0][1] * kb) + qb * (m[1][0] * ka + m[1][1] * kb))
                    };
                    c[i] = bilinear(&mats[d][i]);
                    let c0 = bilinear(&mats[0][i]);
                    abs_pos[i] += (c[i] - c0).abs();
                    abs_c0[i] += c0.abs();
                    sum[i * nb + bk] += c[i];
                    sq[i * nb + bk] += c[i] * c[i];
                }
                if last_quarter {
                    let r = ((n * 10) / (m + 1)).min(9);
                    for i in 0..np {
                        rel_q[i * 10 + r] += c[i];
                    }
                }
            }
            if last_quarter {
                // mean contribution per bin for this query (bins hold ~(m+1)/10 keys each)
                let mut per_bin = [0usize; 10];
                for n in 0..=m {
                    per_bin[((n * 10) / (m + 1)).min(9)] += 1;
                }
                for i in 0..np {
                    for r in 0..10 {
                        rel[i * 10 + r] += rel_q[i * 10 + r] / per_bin[r].max(1) as f64;
                    }
                }
                n_q += 1;
            }
        }
    }
    let rows = (count * s).max(1) as f64;
    let total_keys = cnt.iter().sum::<usize>().max(1) as f64;
    let mut out: Vec<PairStats> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let by_mean: Vec<f64> = (0..nb).map(|b| sum[i * nb + b] / cnt[b].max(1) as f64).collect();
            let by_var: Vec<f64> = (0..nb)
                .map(|b| (sq[i * nb + b] / cnt[b].max(1) as f64 - by_mean[b].powi(2)).max(0.0))
                .collect();
            let mean = (0..nb).map(|b| sum[i * nb + b]).sum::<f64>() / total_keys;
            let bin = |r: usize| rel[i * 10 + r] / n_q.max(1) as f64;
            let positional_share = abs_pos[i] / abs_c0[i].max(1e-300);
            PairStats {
                pair: i,
                theta: p.theta,
                rotated: p.rotated,
                hope_hf_dropped: p.base_theta < std::f64::consts::TAU / train_len as f64,
                q_norm: qn[i] / rows,
                k_norm: kn[i] / rows,
                mean,
                by_distance_mean: by_mean,
                by_distance_var: by_var,
                u_contrast: (bin(0) + bin(9)) / 2.0 - (bin(4) + bin(5)) / 2.0,
                u_share: 0.0,
                positional_share,
                activated: false,
                position_independent: abs_c0[i] > 0.0 && positional_share <= 0.1,
            }
        })
        .collect();
    let positive: f64 = out.iter().map(|p| p.u_contrast.max(0.0)).sum();
    for p in &mut out {
        p.u_share = if positive > 0.0 { p.u_contrast / positive } else { 0.0 };
        p.activated = p.u_contrast > 0.0 && p.u_share >= 2.0 / np.max(1) as f64;
    }
    LayerPairs {
        layer,
        distance_buckets: (0..nb).map(|b| if b == 0 { 0 } else { 1 << (b - 1) }).collect(),
        total_u_contrast: out.iter().map(|p| p.u_contrast).sum(),
        pairs: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope_pairs(dh: usize, base: f64) -> Vec<PairSpec> {
        (0..dh / 2)
            .map(|i| {
                let t = base.powf(-2.0 * i as f64 / dh as f64);
                PairSpec { channels: [i, i + dh / 2], theta: t, base_theta: t, rotated: true }
            })
            .collect()
    }

    /// M_i(Δ) = R(Δθ_i)ᵀ, independently of the encodings crate.
    fn tables(pairs: Vec<PairSpec>, s: usize) -> PairTables {
        let mats = (0..s)
            .map(|d| {
                pairs
                    .iter()
                    .map(|p| {
                        let (sn, cs) = (d as f64 * p.theta).sin_cos();
                        [[cs, sn], [-sn, cs]]
                    })
                    .collect()
            })
            .collect();
        PairTables { head_dim: 2 * pairs.len(), pairs, mats, train_len: 64 }
    }

    #[test]
    fn a_unit_pair_contributes_the_cosine_of_its_angle() {
        let (dh, s) = (8, 40);
        let pairs = rope_pairs(dh, 100.0);
        // q = k = e_0 at every position: only pair 0 contributes, c_0 = cos(Δθ_0)/√dh
        let mut q = vec![0f32; s * dh];
        for m in 0..s {
            q[m * dh] = 1.0;
        }
        let st = pair_stats(&q, &q, 1, s, &tables(pairs.clone(), s), 0);
        assert_eq!(st.distance_buckets, vec![0, 1, 2, 4, 8, 16, 32]);
        let p0 = &st.pairs[0];
        assert!((p0.q_norm - 1.0).abs() < 1e-12 && st.pairs[1].q_norm == 0.0);
        for (b, &lo) in st.distance_buckets.iter().enumerate() {
            let hi = if lo == 0 { 1 } else { (2 * lo).min(s) };
            // every (m, n) with Δ in [lo, hi): s − Δ of them
            let (mut num, mut den) = (0.0, 0.0);
            for d in lo..hi {
                num += (s - d) as f64 * (d as f64).cos(); // θ_0 = base⁰ = 1
                den += (s - d) as f64;
            }
            let want = num / den / (dh as f64).sqrt();
            assert!(
                (p0.by_distance_mean[b] - want).abs() < 1e-9,
                "bucket {b}: {} vs {want}",
                p0.by_distance_mean[b]
            );
        }
        assert!(st.pairs[1..].iter().all(|p| p.mean == 0.0 && !p.activated));
        // θ_0 = 1 ≥ 2π/64: HoPE-HF keeps it; the lowest pair θ_3 = 100^(−3/4) ≈ 0.03 < 0.098 is dropped
        assert!(!p0.hope_hf_dropped && st.pairs[3].hope_hf_dropped);
    }

    #[test]
    fn the_pair_that_carries_a_sink_is_activated_and_a_slow_pair_is_position_independent() {
        let (dh, s) = (8, 64);
        let pairs = rope_pairs(dh, 1e6); // pair 3: θ = 1e−4.5, M ≈ I over 64 positions
        let (mut q, mut k) = (vec![0f32; s * dh], vec![0f32; s * dh]);
        for m in 0..s {
            // pair 3 (channels 3, 7): constant q, k large at the first keys (an attention sink)
            q[m * dh + 3] = 1.0;
            k[m * dh + 3] = if m < 4 { 8.0 } else { 1.0 };
            // pair 1 (channels 1, 5): constant q and k, a pure content channel
            q[m * dh + 1] = 1.0;
            k[m * dh + 1] = 2.0;
        }
        let st = pair_stats(&q, &k, 1, s, &tables(pairs.clone(), s), 0);
        let flags: Vec<(bool, bool)> =
            st.pairs.iter().map(|p| (p.activated, p.position_independent)).collect();
        assert!(flags[3].0 && st.pairs[3].u_contrast > 0.0, "{:?}", st.pairs[3]);
        assert!(!flags[1].0 && !flags[0].0 && !flags[2].0, "{flags:?}");
        assert!(st.pairs[3].u_share > 0.99);
        // pair 1 rotates (θ_1 ≈ 0.03, cos(0.03·63) ≈ −0.3): position matters, and its U-contrast
        // is negative (the middle, Δ ≈ 28, beats the start, Δ ≈ 56)
        assert!(!st.pairs[1].position_independent && st.pairs[1].u_contrast < 0.0, "{:?}", st.pairs[1]);
        // a frozen pair (θ = 1e−6) is a content channel: |c − c⁰| ≤ (1 − cos 6.3e−5)·|c⁰|
        let (dh2, pairs2) = (8, rope_pairs(8, 1e12)); // every pair but 0 nearly frozen
        let mut q2 = vec![0f32; s * dh2];
        for m in 0..s {
            q2[m * dh2 + 2] = 1.0;
        }
        let st2 = pair_stats(&q2, &q2, 1, s, &tables(pairs2.clone(), s), 0);
        let p2 = &st2.pairs[2];
        assert!(p2.position_independent && p2.positional_share < 1e-8, "{p2:?}");
        assert!((p2.mean - 1.0 / 8f64.sqrt()).abs() < 1e-6);
        assert!(st.pairs[1].positional_share > 0.1, "{:?}", st.pairs[1]);
    }
}
