//! Bias- and embedding-class references against closed forms computed here in f64.

mod common;

use burn::prelude::*;
use common::*;
use pezoo_encodings::{Encoding, EncodingContext, check_positions};

fn bias(enc: &Encoding, q: std::ops::Range<usize>, k: std::ops::Range<usize>, dev: &Device) -> Tensor<3> {
    enc.as_dyn().attention_bias(q, k, dev).expect("bias class")
}

#[test]
fn alibi_slopes_follow_the_paper_for_any_head_count() {
    let pow2 = |n: usize| (1..=n).map(|h| 2f64.powf(-8.0 * h as f64 / n as f64)).collect::<Vec<_>>();
    let eight = pow2(8);
    let cases: Vec<(usize, Vec<f64>)> = vec![
        (8, eight.clone()),
        (4, pow2(4)),
        // 6 heads: the 4-head slopes, then slopes 1 and 3 (0-based 0, 2) of the 8-head set
        (6, [pow2(4), vec![eight[0], eight[2]]].concat()),
        // 12 heads: the 8-head slopes, then 16-head slopes 0, 2, 4, 6
        (12, [eight.clone(), (0..4).map(|j| pow2(16)[2 * j]).collect()].concat()),
    ];
    for (h, want) in cases {
        let enc = build("kind = \"alibi\"", &EncodingContext::new(8, h, None), &device());
        let b = host(bias(&enc, 5..9, 0..9, &device()));
        for head in 0..h {
            for (qi, m) in (5..9).enumerate() {
                for n in 0..9 {
                    let got = b[(head * 4 + qi) * 9 + n] as f64;
                    let exp = -want[head] * (m as f64 - n as f64);
                    assert!((got - exp).abs() < 1e-5, "H={h} head {head} m={m} n={n}: {got} vs {exp}");
                }
            }
        }
    }
}

/// T5's `_relative_position_bucket(bidirectional=False)`, written out independently.
fn t5_bucket_ref(delta: i64) -> usize {
    let n = delta.max(0) as f64;
    if n < 16.0 {
        n as usize
    } else {
        let v = 16.0 + ((n / 16.0).ln() / (128f64 / 16.0).ln() * 16.0).floor();
        (v as usize).min(31)
    }
}

#[test]
fn t5_bias_reads_the_table_by_bucket_and_its_gradient_counts_hits() {
    let _rng = rng_lock();
    let (h, q, k) = (3, 5..205, 0..205);
    let ad = ad_device();
    let enc = build("kind = \"t5\"", &EncodingContext::new(8, h, None), &ad);
    let Encoding::T5(t5) = &enc else { unreachable!() };
    let table = host(t5.table());
    let b = bias(&enc, q.clone(), k.clone(), &ad);
    let got = host(b.clone());
    let (nq, nk) = (q.len(), k.len());
    let mut hits = vec![0f64; 32];
    for (qi, m) in q.clone().enumerate() {
        for (ki, n) in k.clone().enumerate() {
            let bucket = t5_bucket_ref(m as i64 - n as i64);
            hits[bucket] += 1.0;
            for head in 0..h {
                assert_eq!(
                    got[(head * nq + qi) * nk + ki],
                    table[head * 32 + bucket],
                    "bucket of Δ={}",
                    m as i64 - n as i64
                );
            }
        }
    }
    assert!(hits.iter().all(|&c| c > 0.0), "every bucket exercised");
    let grads = b.sum().backward();
    let g = host(t5.table().grad(&grads).expect("table gradient"));
    for head in 0..h {
        for bucket in 0..32 {
            assert_eq!(g[head * 32 + bucket] as f64, hits[bucket]);
        }
    }
}

#[test]
fn kerple_log_and_power_match_and_their_gradients_are_analytic() {
    let ctx = EncodingContext::new(8, 2, None);
    let ad = ad_device();
    for variant in ["log", "power"] {
        let enc = build(&format!("kind = \"kerple\"\nvariant = \"{variant}\""), &ctx, &ad);
        let Encoding::Kerple(kp) = &enc else { unreachable!() };
        let (r1, r2) = kp.params();
        let (r1h, r2h) = (host(r1.clone()), host(r2.clone()));
        assert!((r1h[0] - 1.0).abs() < 1e-6 && (r2h[0] - 1.0).abs() < 1e-6, "init r1 = r2 = 1");
        let b = bias(&enc, 0..6, 0..6, &ad);
        let got = host(b.clone());
        let mut dr1 = 0.0;
        for m in 0..6 {
            for n in 0..6 {
                let d = (m as f64 - n as f64).max(0.0);
                let (kern, want) = match variant {
                    "log" => ((1.0 + d).ln(), -(1.0 + d).ln()),
                    _ => (d, -d),
                };
                dr1 += -kern;
                assert!((got[m * 6 + n] as f64 - want).abs() < 1e-5, "{variant} Δ={d}");
            }
        }
        // d(sum)/d r1 = Σ −kernel, per head
        let grads = b.sum().backward();
        let raw_grad = host(kp.r1_raw_grad(&grads).expect("raw r1 gradient"));
        let sig = 1.0 - (-(1.0 - 1e-4f64)).exp(); // softplus' at softplus⁻¹(1 − ε)
        assert!(
            (raw_grad[0] as f64 - dr1 * sig).abs() < 1e-3 * dr1.abs(),
            "{variant}: {} vs {}",
            raw_grad[0],
            dr1 * sig
        );
    }
}

#[test]
fn fire_matches_its_formula_and_c_gradient_matches_finite_differences() {
    let _rng = rng_lock();
    let ctx = EncodingContext::new(8, 2, Some(4));
    let dev = device();
    let fire =
        |c: f64, dev: &Device| build(&format!("kind = \"fire\"\nmlp_width = 4\ninit_c = {c:?}"), &ctx, dev);
    // the MLP is random: check the *input* normalisation through two distances with equal input
    // ψ(Δ)/ψ(max(m, L)) — e.g. the bias is 0-distance invariant: Δ = 0 gives MLP(0) for any m.
    dev.seed(1);
    let enc = fire(0.1, &dev);
    let b = host(bias(&enc, 0..10, 0..10, &dev));
    for m in 1..10 {
        for head in 0..2 {
            assert!(
                (b[(head * 10 + m) * 10 + m] - b[head * 100]).abs() < 1e-6,
                "Δ=0 is position-independent"
            );
        }
    }
    // for m < L the normaliser is fixed, so b(m, n) depends on Δ only
    assert!((b[3 * 10 + 1] - b[2 * 10]).abs() < 1e-6, "b(3,1) = b(2,0) below the threshold");
    // beyond L the normaliser grows with m: b(9,0) uses ψ(9)/ψ(9) = 1 = b(5,0)'s ψ(5)/ψ(5)
    assert!((b[9 * 10] - b[5 * 10]).abs() < 1e-6, "normalised distance 1 at n = 0 for m ≥ L");
    // every entry against the closed form in f64, from the module's own MLP weights:
    // b_h(m, n) = W2·relu(W1·x + b1) + b2 with x = ψ(m − n)/ψ(max(m, L)), ψ(x) = ln(|c·x| + 1)
    let Encoding::Fire(f) = &enc else { unreachable!() };
    let vals = |t: Tensor<2>| host(t).into_iter().map(f64::from).collect::<Vec<_>>();
    let (w1, w2) = (vals(f.fc1.weight.val()), vals(f.fc2.weight.val())); // [1, 4], [4, 2]
    let b1 = host(f.fc1.bias.as_ref().unwrap().val());
    let b2 = host(f.fc2.bias.as_ref().unwrap().val());
    let psi = |x: f64| (0.1 * x).abs().ln_1p();
    for m in 0..10usize {
        for n in 0..10usize {
            let x = psi(m as f64 - n as f64) / (psi((m as f64).max(4.0)) + 1e-6);
            for head in 0..2 {
                let want: f64 =
                    (0..4).map(|j| (w1[j] * x + b1[j] as f64).max(0.0) * w2[j * 2 + head]).sum::<f64>()
                        + b2[head] as f64;
                let got = b[(head * 10 + m) * 10 + n] as f64;
                assert!((got - want).abs() < 1e-5, "FIRE b_{head}({m}, {n}) = {got}, closed form {want}");
            }
        }
    }

    // gradient w.r.t. c by central differences (same seed → same MLP)
    let loss = |c: f64| {
        dev.seed(1);
        host(bias(&fire(c, &dev), 0..12, 0..12, &dev).sum())[0] as f64
    };
    let h = 1e-3;
    let fd = (loss(0.1 + h) - loss(0.1 - h)) / (2.0 * h);
    let ad = ad_device();
    ad.seed(1);
    let enc = fire(0.1, &ad);
    let Encoding::Fire(f) = &enc else { unreachable!() };
    let grads = bias(&enc, 0..12, 0..12, &ad).sum().backward();
    let g = host(f.c().grad(&grads).expect("c gradient"))[0] as f64;
    assert!((g - fd).abs() < 2e-2 * fd.abs().max(1e-2), "autodiff {g} vs finite differences {fd}");
}

#[test]
fn sinusoidal_and_learned_embeddings() {
    let _rng = rng_lock();
    let ctx = EncodingContext { head_dim: 4, n_heads: 2, d_model: 8, train_len: Some(16) };
    let dev = device();
    let enc = build("kind = \"sinusoidal\"", &ctx, &dev);
    let pe = host(enc.as_dyn().position_embedding(1000..1003, &dev).unwrap());
    for (r, p) in (1000..1003).enumerate() {
        for i in 0..4 {
            let a = p as f64 / 10_000f64.powf(2.0 * i as f64 / 8.0);
            assert!((pe[r * 8 + 2 * i] as f64 - a.sin()).abs() < 1e-6);
            assert!((pe[r * 8 + 2 * i + 1] as f64 - a.cos()).abs() < 1e-6);
        }
    }
    let learned = build("kind = \"learned\"", &ctx, &dev);
    assert_eq!(learned.as_dyn().position_embedding(0..16, &dev).unwrap().dims(), [16, 8]);
    assert!(check_positions(learned.as_dyn(), 16).is_ok());
    let err = check_positions(learned.as_dyn(), 17).unwrap_err().to_string();
    assert!(err.contains("max_len") && err.contains("≤ 16"), "{err}");
    let nope = build("kind = \"nope\"", &ctx, &dev);
    assert!(nope.as_dyn().position_embedding(0..4, &dev).is_none());
    assert!(nope.as_dyn().attention_bias(0..4, 0..4, &dev).is_none() && nope.as_dyn().rotary().is_none());
}
