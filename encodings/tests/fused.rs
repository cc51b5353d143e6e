//! Fused CubeCL kernels against the reference (flex), forward and every gradient, for each
//! rotary-class encoding × layout × offsets × partial/full, on odd sizes, with outputs
//! NaN-poisoned before each launch so an unwritten element fails — on every compiled CubeCL
//! device (`cube_tests!`; wgpu on lavapipe in CI).
#![cfg(feature = "cube")]

mod common;

use burn::prelude::*;
use common::*;
use pezoo_encodings::rotary::{fused, reference};
use pezoo_encodings::{EncodingContext, RotaryEncoding, Side};

const CASES: &[&str] = &[
    "kind = \"rope\"",
    "kind = \"rope\"\nlayout = \"interleaved\"",
    "kind = \"rope\"\npartial_rotary_factor = 0.5",
    "kind = \"rope\"\nlayout = \"interleaved\"\npartial_rotary_factor = 0.5\nrope_scaling = { rope_type = \"yarn\", factor = 4.0 }",
    "kind = \"rope\"\nrope_scaling = { rope_type = \"dynamic\", factor = 2.0 }",
    "kind = \"hope-hf\"",
    "kind = \"hope-hf\"\nlayout = \"interleaved\"",
    "kind = \"p-rope\"\np = 0.5",
    "kind = \"xpos\"\nlayout = \"interleaved\"",
    "kind = \"hope-hyp\"",
    "kind = \"hope-hyp\"\nlayout = \"interleaved\"\nangle_scale = 0.3\ntheta_prime = 0.4\nlearnable = false",
];

fn rotary(toml: &str, ctx: &EncodingContext, dev: &Device) -> RotaryEncoding {
    build(toml, ctx, dev).as_dyn().rotary().unwrap().clone()
}

/// Positions valid for the case: growing maps (xPos, HoPE-Hyp) need re-centred positions.
fn starts(toml: &str, side: Side) -> Vec<i64> {
    let growing = toml.contains("xpos") || toml.contains("hope-hyp");
    match (growing, side) {
        (false, Side::Query) => vec![0, 1_000_000],
        (false, Side::Key) => vec![3, 999_937],
        (true, Side::Query) => vec![0, 5],
        (true, Side::Key) => vec![-1_000_000, -60],
    }
}

fn fused_forward_matches_the_reference(gpu: Device) {
    fused::POISON.store(true, std::sync::atomic::Ordering::Relaxed);
    let (g, c) = (gpu.clone(), device());
    assert!(fused::is_cube(&g) && fused::is_cube(&g.clone().autodiff()) && !fused::is_cube(&c));
    for &d in &[10usize, 12] {
        let ctx = EncodingContext::new(d, 3, Some(16));
        for toml in CASES {
            let (fe, re) = (rotary(toml, &ctx, &g), rotary(toml, &ctx, &c));
            for &seq in &[1usize, 7, 129] {
                for side in [Side::Query, Side::Key] {
                    let st = starts(toml, side);
                    let x = random_vec(&mut rng(seq as u64), 2 * 3 * seq * d);
                    let got = host(fused::apply(&fe, tensor4(x.clone(), [2, 3, seq, d], &g), &st, side, 64));
                    let want = host(reference::apply(&re, tensor4(x, [2, 3, seq, d], &c), &st, side, 64));
                    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    assert_close_rows(&got, &want, d, 2e-5, &format!("{toml} d={d} seq={seq} {side:?}"));
                    // the public entry point takes the fused path on CubeCL devices
                    if seq == 7 {
                        let x = random_vec(&mut rng(3), 2 * 3 * seq * d);
                        let via = host(fe.apply(tensor4(x.clone(), [2, 3, seq, d], &g), &st, side, 64));
                        let direct = host(fused::apply(&fe, tensor4(x, [2, 3, seq, d], &g), &st, side, 64));
                        assert_eq!(via, direct);
                    }
                }
            }
        }
    }
}

fn fused_gradients_match_the_reference(gpu: Device) {
    fused::POISON.store(true, std::sync::atomic::Ordering::Relaxed);
    let (g, c) = (gpu.clone().autodiff(), device().autodiff());
    let (b, h, seq, d) = (2, 3, 7, 10);
    let ctx = EncodingContext::new(d, h, Some(16));
    for toml in CASES {
        for side in [Side::Query, Side::Key] {
            let st = starts(toml, side);
            let x = random_vec(&mut rng(11), b * h * seq * d);
            let w = random_vec(&mut rng(12), b * h * seq * d);
            let run = |dev: &Device, fused_path: bool| {
                let enc = rotary(toml, &ctx, dev);
                let xt = tensor4(x.clone(), [b, h, seq, d], dev).require_grad();
                let y = if fused_path {
                    fused::apply(&enc, xt.clone(), &st, side, 64)
                } else {
                    reference::apply(&enc, xt.clone(), &st, side, 64)
                };
                let grads = (y * tensor4(w.clone(), [b, h, seq, d], dev)).sum().backward();
                (host(xt.grad(&grads).unwrap()), enc.damping_grad(&grads))
            };
            let (gx_f, gt_f) = run(&g, true);
            let (gx_r, gt_r) = run(&c, false);
            let want: Vec<f64> = gx_r.iter().map(|&v| v as f64).collect();
            assert_close_rows(&gx_f, &want, d, 2e-5, &format!("d/dx {toml} {side:?}"));
            assert_eq!(gt_f.is_some(), gt_r.is_some(), "{toml}: θ' gradient presence");
            if let (Some(a), Some(r)) = (gt_f, gt_r) {
                assert!(
                    (a - r).abs() <= 1e-4 * (1.0 + r.abs()),
                    "d/dθ' {toml} {side:?}: fused {a} vs reference {r}"
                );
                assert!(r.abs() > 1e-6, "the θ' gradient must be exercised");
            }
        }
    }
}

fn fused_angles_are_exact_at_position_1e6(gpu: Device) {
    let d = 64;
    let ctx = EncodingContext::new(d, 1, None);
    let enc = rotary("kind = \"rope\"", &ctx, &gpu.clone());
    let mut x = vec![0f32; d];
    x[..d / 2].fill(1.0);
    for m in [1_000_000i64, 4_194_303, 16_000_000] {
        let y =
            host(fused::apply(&enc, tensor4(x.clone(), [1, 1, 1, d], &gpu.clone()), &[m], Side::Query, 1));
        for i in 0..d / 2 {
            let a = m as f64 * 10_000f64.powf(-2.0 * i as f64 / d as f64);
            assert!((y[i] as f64 - a.cos()).abs() < 1e-5, "m={m} cos pair {i}: {} vs {}", y[i], a.cos());
            assert!((y[i + d / 2] as f64 - a.sin()).abs() < 1e-5, "m={m} sin pair {i}");
        }
    }
}

fn fused_handles_non_contiguous_inputs(gpu: Device) {
    let (g, c) = (gpu.clone(), device());
    let ctx = EncodingContext::new(10, 3, Some(16));
    let (fe, re) = (rotary("kind = \"rope\"", &ctx, &g), rotary("kind = \"rope\"", &ctx, &c));
    let x = random_vec(&mut rng(5), 2 * 7 * 3 * 10);
    // [batch, seq, heads, dim] → swap to [batch, heads, seq, dim]: a strided view
    let xg = tensor4(x.clone(), [2, 7, 3, 10], &g).swap_dims(1, 2);
    let xc = tensor4(x, [2, 7, 3, 10], &c).swap_dims(1, 2);
    let got = host(fused::apply(&fe, xg, &[4], Side::Key, 8));
    let want: Vec<f64> =
        host(reference::apply(&re, xc, &[4], Side::Key, 8)).iter().map(|&v| v as f64).collect();
    assert_close(&got, &want, 2e-5, "strided");
}

/// The sinusoidal table from the angle kernel (what wgpu runs) against sin/cos of p·b^(−2i/d) in
/// f64, at odd pair counts, near 0, at 1e6 and just below 2²⁴ (the kernel's range), NaN-poisoned.
fn fused_sinusoidal_table_matches_the_closed_form(gpu: Device) {
    fused::POISON.store(true, std::sync::atomic::Ordering::Relaxed);
    for (d, base) in [(10usize, 10_000.0f64), (66, 500.0)] {
        let ctx = EncodingContext::new(d, 1, None);
        let toml = format!("kind = \"sinusoidal\"\nbase = {base:?}");
        let enc = build(&toml, &ctx, &gpu.clone());
        for range in [0..333usize, 1_000_000..1_000_007, 16_777_200..16_777_216] {
            let got = host(enc.as_dyn().position_embedding(range.clone(), &gpu.clone()).expect("a table"));
            let want: Vec<f64> = range
                .clone()
                .flat_map(|p| {
                    (0..d / 2).flat_map(move |i| {
                        let a = p as f64 * base.powf(-2.0 * i as f64 / d as f64);
                        [a.sin(), a.cos()]
                    })
                })
                .collect();
            assert_close(&got, &want, 1e-5, &format!("d={d} positions {range:?}"));
        }
    }
}

pezoo_encodings::cube_tests!(
    fused_forward_matches_the_reference,
    fused_gradients_match_the_reference,
    fused_angles_are_exact_at_position_1e6,
    fused_handles_non_contiguous_inputs,
    fused_sinusoidal_table_matches_the_closed_form,
);
