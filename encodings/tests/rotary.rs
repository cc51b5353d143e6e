//! Rotary-class references against closed forms computed here, independently, in f64.

mod common;

use common::*;
use pezoo_encodings::{EncodingContext, RotaryEncoding, Side};

const B: f64 = 10_000.0;

/// Channels of pair i under a layout over r rotary channels.
fn chans(interleaved: bool, i: usize, r: usize) -> (usize, usize) {
    if interleaved { (2 * i, 2 * i + 1) } else { (i, i + r / 2) }
}

/// Rotates each pair of `x` (one head vector) by `pos·θ_i`; channels ≥ r pass through.
fn rotate(x: &[f32], pos: f64, theta: &[f64], r: usize, interleaved: bool) -> Vec<f64> {
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (i, &t) in theta.iter().enumerate() {
        let (a, b) = chans(interleaved, i, r);
        let (s, c) = (pos * t).sin_cos();
        let (x1, x2) = (x[a] as f64, x[b] as f64);
        y[a] = x1 * c - x2 * s;
        y[b] = x1 * s + x2 * c;
    }
    y
}

fn rotary(enc: &pezoo_encodings::Encoding) -> &RotaryEncoding {
    enc.as_dyn().rotary().expect("rotary class")
}

/// Applies `enc` on random x [batch, 3, seq, d] and checks every vector against `want(b, s, x)`.
#[allow(clippy::too_many_arguments)]
fn check_apply(
    enc: &RotaryEncoding,
    batch: usize,
    seq: usize,
    d: usize,
    starts: &[i64],
    side: Side,
    want: impl Fn(usize, usize, &[f32]) -> Vec<f64>,
    what: &str,
) {
    let dev = device();
    let heads = 3;
    let x = random_vec(&mut rng(7), batch * heads * seq * d);
    let y = host(enc.apply(tensor4(x.clone(), [batch, heads, seq, d], &dev), starts, side, seq));
    for b in 0..batch {
        for h in 0..heads {
            for s in 0..seq {
                let o = ((b * heads + h) * seq + s) * d;
                assert_close(
                    &y[o..o + d],
                    &want(b, starts[b.min(starts.len() - 1)] as usize + s, &x[o..o + d]),
                    1e-5,
                    what,
                );
            }
        }
    }
}

#[test]
fn rope_rotates_pairs_in_both_layouts_with_per_sequence_offsets() {
    let d = 10; // not a power of two
    let ctx = EncodingContext::new(d, 3, Some(64));
    for layout in ["half", "interleaved"] {
        let enc = build(&format!("kind = \"rope\"\nlayout = \"{layout}\""), &ctx, &device());
        let theta: Vec<f64> = (0..d / 2).map(|i| B.powf(-2.0 * i as f64 / d as f64)).collect();
        let il = layout == "interleaved";
        check_apply(
            rotary(&enc),
            2,
            7,
            d,
            &[0, 123_457],
            Side::Query,
            |_, p, x| rotate(x, p as f64, &theta, d, il),
            layout,
        );
    }
}

#[test]
fn rope_angles_are_exact_in_f32_at_position_1e6() {
    let d = 64;
    let ctx = EncodingContext::new(d, 1, None);
    let enc = build("kind = \"rope\"", &ctx, &device());
    // unit vector (1, 0) in every pair → (cos mθ_i, sin mθ_i)
    let mut x = vec![0f32; d];
    x[..d / 2].fill(1.0);
    let m = 1_000_000i64;
    let y = host(rotary(&enc).apply(tensor4(x, [1, 1, 1, d], &device()), &[m], Side::Query, 1));
    for i in 0..d / 2 {
        let a = m as f64 * B.powf(-2.0 * i as f64 / d as f64);
        assert!((y[i] as f64 - a.cos()).abs() < 1e-5, "cos pair {i}: {} vs {}", y[i], a.cos());
        assert!((y[i + d / 2] as f64 - a.sin()).abs() < 1e-5, "sin pair {i}");
    }
}

/// q·k summed over heads' vectors, after applying the encoding at absolute positions m and n.
fn score(enc: &RotaryEncoding, q: &[f32], k: &[f32], m: usize, n: usize) -> f64 {
    let dev = device();
    let d = q.len();
    let (qt, kt) = (tensor4(q.to_vec(), [1, 1, 1, d], &dev), tensor4(k.to_vec(), [1, 1, 1, d], &dev));
    let (q2, k2) = enc.apply_qk(qt, kt, &[m], &[n], m + 1);
    host(q2).iter().zip(host(k2)).map(|(a, b)| *a as f64 * b as f64).sum()
}

#[test]
fn rope_scores_depend_only_on_distance_up_to_1e6() {
    let d = 32;
    let ctx = EncodingContext::new(d, 1, None);
    let enc = build("kind = \"rope\"", &ctx, &device());
    let enc = rotary(&enc);
    let mut r = rng(3);
    let (q, k) = (random_vec(&mut r, d), random_vec(&mut r, d));
    for &(m, n) in &[(5usize, 2usize), (40, 0), (17, 17)] {
        // absolute application, no re-centring: offsets up to 1e6 must not move the score
        let base = {
            let dev = device();
            let qa = host(enc.apply(tensor4(q.clone(), [1, 1, 1, d], &dev), &[m as i64], Side::Query, 1));
            let ka = host(enc.apply(tensor4(k.clone(), [1, 1, 1, d], &dev), &[n as i64], Side::Key, 1));
            qa.iter().zip(&ka).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
        };
        let theta: Vec<f64> = (0..d / 2).map(|i| B.powf(-2.0 * i as f64 / d as f64)).collect();
        let want: f64 = rotate(&q, m as f64, &theta, d, false)
            .iter()
            .zip(rotate(&k, n as f64, &theta, d, false))
            .map(|(a, b)| a * b)
            .sum();
        assert!((base - want).abs() < 1e-4, "closed form {base} vs {want}");
        for off in [1usize, 999, 65_537, 1_000_000] {
            let dev = device();
            let qa =
                host(enc.apply(tensor4(q.clone(), [1, 1, 1, d], &dev), &[(m + off) as i64], Side::Query, 1));
            let ka =
                host(enc.apply(tensor4(k.clone(), [1, 1, 1, d], &dev), &[(n + off) as i64], Side::Key, 1));
            let s: f64 = qa.iter().zip(&ka).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((s - base).abs() < 1e-4, "offset {off}: {s} vs {base}");
        }
    }
}

#[test]
fn half_and_interleaved_agree_under_the_channel_permutation() {
    let d = 14;
    let ctx = EncodingContext::new(d, 1, Some(64));
    let half = build("kind = \"rope\"\nlayout = \"half\"", &ctx, &device());
    let inter = build("kind = \"rope\"\nlayout = \"interleaved\"", &ctx, &device());
    let x = random_vec(&mut rng(11), d);
    // perm: interleaved channel 2i ← half channel i, 2i+1 ← i + d/2
    let perm: Vec<usize> = (0..d).map(|c| if c % 2 == 0 { c / 2 } else { c / 2 + d / 2 }).collect();
    let xp: Vec<f32> = perm.iter().map(|&c| x[c]).collect();
    let yh = host(rotary(&half).apply(tensor4(x, [1, 1, 1, d], &device()), &[37], Side::Query, 1));
    let yi = host(rotary(&inter).apply(tensor4(xp, [1, 1, 1, d], &device()), &[37], Side::Query, 1));
    for c in 0..d {
        assert!((yi[c] - yh[perm[c]]).abs() < 1e-6, "channel {c}");
    }
}

#[test]
fn hope_hf_keeps_the_pairs_of_the_design_table() {
    for &(b, d, l, kept) in &[
        (1e4f64, 64usize, 512usize, 16usize),
        (1e4, 64, 1024, 18),
        (1e4, 64, 2048, 21),
        (1e4, 64, 4096, 23),
        (1e4, 128, 4096, 46),
        (5e5, 128, 4096, 32),
    ] {
        let ctx = EncodingContext::new(d, 1, Some(l));
        let enc = build(&format!("kind = \"hope-hf\"\nrope_theta = {b:?}"), &ctx, &device());
        let spec = rotary(&enc).spec();
        let n = spec.rotated.iter().filter(|&&k| k).count();
        assert_eq!(n, kept, "b={b} d={d} L={l}");
        // the formula of the paper, too
        let f = (((d / 2) as f64 * (l as f64 / (2.0 * std::f64::consts::PI)).ln() / b.ln()).floor() as usize
            + 1)
        .min(d / 2);
        assert_eq!(n, f);
        // kept = a prefix; dropped pairs are the identity
        assert!(spec.rotated[..kept].iter().all(|&k| k) && spec.rotated[kept..].iter().all(|&k| !k));
    }
    // dropped pairs pass through unchanged, kept ones rotate
    let d = 16;
    let ctx = EncodingContext::new(d, 1, Some(64));
    let enc = build("kind = \"hope-hf\"", &ctx, &device());
    let theta: Vec<f64> = (0..d / 2)
        .map(|i| B.powf(-2.0 * i as f64 / d as f64))
        .map(|t| if t >= 2.0 * std::f64::consts::PI / 64.0 { t } else { 0.0 })
        .collect();
    assert!(theta.contains(&0.0) && theta[0] > 0.0);
    check_apply(
        rotary(&enc),
        1,
        9,
        d,
        &[1000],
        Side::Key,
        |_, p, x| rotate(x, p as f64, &theta, d, false),
        "hope-hf",
    );
}

#[test]
fn p_rope_differs_from_partial_rotary() {
    let d = 16;
    let ctx = EncodingContext::new(d, 1, None);
    let prope = build("kind = \"p-rope\"\np = 0.5", &ctx, &device());
    let partial = build("kind = \"rope\"\npartial_rotary_factor = 0.5", &ctx, &device());
    // p-RoPE: original grid, first 4 of 8 pairs rotated, over all 16 channels (half layout)
    let tp: Vec<f64> =
        (0..d / 2).map(|i| if i < 4 { B.powf(-2.0 * i as f64 / d as f64) } else { 0.0 }).collect();
    check_apply(
        rotary(&prope),
        1,
        5,
        d,
        &[3],
        Side::Query,
        |_, p, x| rotate(x, p as f64, &tp, d, false),
        "p-rope",
    );
    // partial: first 8 channels, spectrum compressed θ_i = b^(−2i/8), pairs (i, i+4)
    let tq: Vec<f64> = (0..4).map(|i| B.powf(-2.0 * i as f64 / 8.0)).collect();
    check_apply(
        rotary(&partial),
        1,
        5,
        d,
        &[3],
        Side::Query,
        |_, p, x| rotate(x, p as f64, &tq, 8, false),
        "partial",
    );
    assert_ne!(rotary(&prope).spec().theta[1], rotary(&partial).spec().theta[1]);
}

fn theta_of(toml: &str, d: usize, l: usize) -> (Vec<f64>, f64) {
    let ctx = EncodingContext::new(d, 1, Some(l));
    let enc = build(toml, &ctx, &device());
    let s = rotary(&enc).spec();
    (s.theta.clone(), s.attention_factor)
}

#[test]
fn scaled_rope_frequencies_match_the_formulas() {
    let (d, l, s) = (64usize, 512usize, 4.0f64);
    let grid: Vec<f64> = (0..d / 2).map(|i| B.powf(-((2 * i) as f64) / d as f64)).collect();
    let rel = |a: &[f64], b: &[f64], what: &str| {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1e-30), "{what} pair {i}: {x} vs {y}");
        }
    };
    let cfg = |t: &str| format!("kind = \"rope\"\nrope_scaling = {{ rope_type = \"{t}\", factor = {s:?} }}");

    let (pi, _) = theta_of(&cfg("linear"), d, l);
    rel(&pi, &grid.iter().map(|t| t / s).collect::<Vec<_>>(), "PI");

    let (ntk, _) = theta_of(&cfg("ntk"), d, l);
    let b2 = B * s.powf(d as f64 / (d as f64 - 2.0));
    rel(&ntk, &(0..d / 2).map(|i| 1.0 / b2.powf((2 * i) as f64 / d as f64)).collect::<Vec<_>>(), "NTK");

    // YaRN (HF _compute_yarn_parameters, beta_fast 32, beta_slow 1, truncate)
    let (yarn, af) = theta_of(&cfg("yarn"), d, l);
    let dimf = d as f64;
    let cd = |rot: f64| (dimf * (l as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * B.ln());
    let (lo, hi) = (cd(32.0).floor().max(0.0), cd(1.0).ceil().min(dimf - 1.0));
    let want: Vec<f64> = (0..d / 2)
        .map(|i| {
            let pos_freq = B.powf((2 * i) as f64 / dimf);
            let ramp = (((i as f64) - lo) / (hi - lo)).clamp(0.0, 1.0);
            let extra = 1.0 - ramp;
            (1.0 / (s * pos_freq)) * (1.0 - extra) + (1.0 / pos_freq) * extra
        })
        .collect();
    rel(&yarn, &want, "YaRN");
    assert!((af - (0.1 * s.ln() + 1.0)).abs() < 1e-12);
    assert!(yarn[0] == grid[0] && (yarn[d / 2 - 1] - grid[d / 2 - 1] / s).abs() < 1e-15, "YaRN ends");

    // Llama 3 (factor 8, low 1, high 4) with original length 8192, against its wavelength bands
    let (ll, _) = theta_of(
        "kind = \"rope\"\nrope_theta = 500000.0\nrope_scaling = { rope_type = \"llama3\", factor = 8.0, original_max_position_embeddings = 8192 }",
        128,
        8192,
    );
    for (i, t) in ll.iter().enumerate() {
        let base = 500_000f64.powf(-((2 * i) as f64) / 128.0);
        let wl = 2.0 * std::f64::consts::PI / base;
        let want = if wl < 8192.0 / 4.0 {
            base
        } else if wl > 8192.0 {
            base / 8.0
        } else {
            let sm = (8192.0 / wl - 1.0) / 3.0;
            (1.0 - sm) * base / 8.0 + sm * base
        };
        assert!((t - want).abs() <= 1e-12 * want, "llama3 pair {i}");
    }

    // dynamic NTK: unchanged up to L, then the NTK base for the current length
    let ctx = EncodingContext::new(d, 1, Some(l));
    let enc = build(&cfg("dynamic"), &ctx, &device());
    let spec = rotary(&enc).spec();
    rel(&spec.theta_at(l), &grid, "dynamic ≤ L");
    let cur = 3 * l;
    let b3 = B * (s * cur as f64 / l as f64 - (s - 1.0)).powf(dimf / (dimf - 2.0));
    rel(
        &spec.theta_at(cur),
        &(0..d / 2).map(|i| b3.powf(-((2 * i) as f64) / dimf)).collect::<Vec<_>>(),
        "dynamic",
    );
}

#[test]
fn xpos_scales_scores_by_zeta_to_the_distance() {
    let d = 8;
    let ctx = EncodingContext::new(d, 1, None);
    let enc = build("kind = \"xpos\"\nscale_base = 64.0", &ctx, &device());
    let mut r = rng(5);
    let (q, k) = (random_vec(&mut r, d), random_vec(&mut r, d));
    let theta: Vec<f64> = (0..d / 2).map(|i| B.powf(-2.0 * i as f64 / d as f64)).collect();
    for &(m, n) in &[(10usize, 3usize), (100_000, 99_000), (1_000_000, 0)] {
        let delta = (m - n) as f64;
        let qr = rotate(&q, m as f64, &theta, d, false);
        let kr = rotate(&k, n as f64, &theta, d, false);
        let want: f64 = (0..d / 2)
            .map(|i| {
                let z = (2.0 * i as f64 / d as f64 + 0.4) / 1.4;
                let g = z.powf(delta / 64.0);
                g * (qr[i] * kr[i] + qr[i + d / 2] * kr[i + d / 2])
            })
            .sum();
        let got = score(rotary(&enc), &q, &k, m, n);
        assert!(
            got.is_finite() && (got - want).abs() < 1e-4 * (1.0 + want.abs()),
            "Δ={delta}: {got} vs {want}"
        );
    }
}

/// ½e^(−Δ(θ'−θ))(q1+q2)(k1+k2) + ½e^(−Δ(θ'+θ))(q1−q2)(k1−k2), summed over pairs.
fn hyp_score(q: &[f32], k: &[f32], delta: f64, theta: &[f64], tp: f64) -> f64 {
    let h = q.len() / 2;
    (0..h)
        .map(|i| {
            let (q1, q2, k1, k2) = (q[i] as f64, q[i + h] as f64, k[i] as f64, k[i + h] as f64);
            0.5 * (-delta * (tp - theta[i])).exp() * (q1 + q2) * (k1 + k2)
                + 0.5 * (-delta * (tp + theta[i])).exp() * (q1 - q2) * (k1 - k2)
        })
        .sum()
}

#[test]
fn hope_hyp_score_is_the_relative_closed_form_and_finite_to_1e6() {
    let d = 12;
    let ctx = EncodingContext::new(d, 1, None);
    for learnable in [false, true] {
        let toml =
            format!("kind = \"hope-hyp\"\nangle_scale = 0.05\ntheta_prime = 0.06\nlearnable = {learnable}");
        let enc = build(&toml, &ctx, &device());
        let enc = rotary(&enc);
        let theta: Vec<f64> = (0..d / 2).map(|i| 0.05 * B.powf(-2.0 * i as f64 / d as f64)).collect();
        assert!((enc.theta_prime() - 0.06).abs() < 1e-6, "θ' = {}", enc.theta_prime());
        let mut r = rng(9);
        let (q, k) = (random_vec(&mut r, d), random_vec(&mut r, d));
        for &(m, n) in &[
            (0usize, 0usize),
            (7, 2),
            (300, 0),
            (1_000_000, 999_950),
            (1_000_000, 0),
            (1_000_000, 1_000_000),
        ] {
            let got = score(enc, &q, &k, m, n);
            let want = hyp_score(&q, &k, (m - n) as f64, &theta, enc.theta_prime());
            assert!(got.is_finite(), "m={m} n={n}: not finite");
            assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "m={m} n={n}: {got} vs {want}");
        }
        // keys far in the past underflow to exactly their (vanishing) true contribution
        assert!(score(enc, &q, &k, 1_000_000, 0).abs() < 1e-30);
    }
}

#[test]
fn hope_hyp_defaults_follow_the_training_length() {
    let ctx = EncodingContext::new(64, 1, Some(256));
    let enc = build("kind = \"hope-hyp\"", &ctx, &device());
    let enc = rotary(&enc);
    let s = enc.spec();
    assert!((s.theta[0] - 2.0 / 256.0).abs() < 1e-15);
    assert!((enc.theta_prime() - 3.0 / 256.0).abs() < 1e-6);
    // the reference's blocks (factors within e^±10) span 2× the training length
    assert!(enc.query_block().unwrap() >= 256 * 2);
}

#[test]
fn hope_hyp_damping_gradient_matches_finite_differences() {
    let d = 6;
    let ctx = EncodingContext::new(d, 1, None);
    let (theta_prime, h) = (0.3f64, 1e-3f64);
    let mut r = rng(21);
    let (q, k) = (random_vec(&mut r, 2 * d * 5), random_vec(&mut r, 2 * d * 5));
    let loss = |tp: f64, dev: &burn::prelude::Device| {
        let toml = format!("kind = \"hope-hyp\"\nangle_scale = 0.2\ntheta_prime = {tp:?}");
        let enc = build(&toml, &ctx, dev);
        let re = rotary(&enc).clone();
        let (q2, k2) = re.apply_qk(
            tensor4(q.clone(), [1, 2, 5, d], dev),
            tensor4(k.clone(), [1, 2, 5, d], dev),
            &[3],
            &[0],
            8,
        );
        let s = q2.matmul(k2.transpose()).sum();
        (enc, s)
    };
    let f = |tp: f64| host(loss(tp, &device()).1)[0] as f64;
    let fd = (f(theta_prime + h) - f(theta_prime - h)) / (2.0 * h);
    let ad = ad_device();
    let (enc, s) = loss(theta_prime, &ad);
    let grads = s.backward();
    let raw_grad = rotary(&enc).damping_grad(&grads).expect("θ' is learnable");
    // θ' = max θ + softplus(raw) + ε → dθ'/draw = sigmoid(raw) = 1 − e^(−softplus(raw))
    let sp = theta_prime - 0.2 - 1e-6;
    let dtheta = raw_grad / (1.0 - (-sp).exp());
    assert!((dtheta - fd).abs() < 2e-2 * fd.abs().max(1.0), "autodiff {dtheta} vs finite differences {fd}");
    assert!(fd.abs() > 1e-3, "the test must exercise a non-zero gradient");
}
