//! The fused layer ops on flex (`pezoo_encodings::layers`) against independent f64 closed forms
//! (forward and gradients) and against the reference tensor ops' autodiff, on odd shapes that
//! span several parallel chunks (with a partial last one), strided operands, and NaN-poisoned
//! outputs (an element a kernel fails to write shows as NaN).
#![cfg(feature = "flex")]

mod common;

use burn::prelude::*;
use common::*;
use pezoo_encodings::layers;

fn poison() {
    pezoo_encodings::hooks::POISON.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn t2(v: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `a [m, k] · b [k, n]` in f64.
fn product(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    c
}

fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..c * r).map(|i| a[(i % r) * c + i / r]).collect()
}

#[test]
fn products_match_f64_for_strided_operands_and_both_gradients() {
    poison();
    let ad = ad_device();
    // 37·53·29 runs single-threaded; 203·197·211 > 192³ takes gemm's parallel path; 61·4099·37
    // splits its long inner dimension into parts summed afterwards, and 4099·37·61 does so in
    // dB = aᵀ · G (inner dimension m, the left operand a transposed view)
    for (m, k, n) in [(37, 53, 29), (203, 197, 211), (61, 4099, 37), (4099, 37, 61)] {
        let mut r = rng(m as u64);
        let (a, bt, g) = (random_vec(&mut r, m * k), random_vec(&mut r, n * k), random_vec(&mut r, m * n));
        let b = transpose(&f64s(&bt), n, k); // [k, n]
        // a as a column slice (from column 3) of a wider matrix, b as the transpose of [n, k]:
        // neither contiguous, a starting at a non-zero offset
        let wide: Vec<f32> = a.chunks(k).flat_map(|row| [&[7.0f32; 3][..], row].concat()).collect();
        let a_t = t2(&wide, [m, k + 3], &ad).narrow(1, 3, k).require_grad();
        let b_t = t2(&bt, [n, k], &ad).require_grad();
        let y = layers::matmul(a_t.clone(), b_t.clone().transpose(), true);
        let want = product(&f64s(&a), &b, m, k, n);
        // f32 sums of `inner` terms of size ~1: error ~ √inner · ε · |partial sums|
        let tol = |inner: usize| 1e-6 * (inner as f64).sqrt().max(10.0);
        assert_close(&host(y.clone()), &want, tol(k), &format!("a·b {m}×{k}×{n}"));
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let y1 = one.install(|| layers::matmul(a_t.clone(), b_t.clone().transpose(), true));
        assert!(host(y.clone()) == host(y1), "{m}×{k}×{n}: the same bits on one thread");
        // loss = Σ y ⊙ G: dA = G bᵀ, dB = aᵀ G (here for bᵀ: G ᵀ a)
        let grads = (y * t2(&g, [m, n], &ad)).sum().backward();
        let da = host(a_t.grad(&grads).unwrap()); // [m, k]: the leaf is the strided slice
        let gf = f64s(&g);
        assert_close(&da, &product(&gf, &transpose(&b, k, n), m, n, k), tol(n), "dA");
        let dbt = host(b_t.grad(&grads).unwrap()); // [n, k]
        assert_close(&dbt, &product(&transpose(&gf, m, n), &f64s(&a), n, m, k), tol(m), "dBᵀ");
    }
}

#[test]
fn linear_folds_leading_dims_into_rows() {
    poison();
    let dev = device();
    let mut r = rng(3);
    let (x, w) = (random_vec(&mut r, 3 * 5 * 7), random_vec(&mut r, 7 * 11));
    let x3: Tensor<3> = Tensor::from_data(TensorData::new(x.clone(), [3, 5, 7]), &dev);
    let y = layers::linear(x3, t2(&w, [7, 11], &dev), true);
    assert_eq!(y.dims(), [3, 5, 11]);
    assert_close(&host(y), &product(&f64s(&x), &f64s(&w), 15, 7, 11), 1e-5, "linear");
}

/// σ, silu and silu′ in f64.
fn sig(g: f64) -> f64 {
    1.0 / (1.0 + (-g).exp())
}

#[test]
fn swiglu_matches_f64_forward_and_gradients_across_chunks() {
    poison();
    let ad = ad_device();
    let shape = [3, 7001]; // 21 003 values: two chunks of 16 384, the second partial
    let n = shape[0] * shape[1];
    let mut r = rng(11);
    // arguments up to ±12, and a few far out (exp's clamp at ±87): still exact to f32
    let mut gate: Vec<f32> = random_vec(&mut r, n).iter().map(|v| 12.0 * v).collect();
    gate[..4].copy_from_slice(&[-100.0, -88.5, 90.0, 0.0]);
    let (up, dy) = (random_vec(&mut r, n), random_vec(&mut r, n));
    let (g_t, u_t) = (t2(&gate, shape, &ad).require_grad(), t2(&up, shape, &ad).require_grad());
    let y = layers::swiglu(g_t.clone(), u_t.clone(), true);
    let want: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| g as f64 * sig(g as f64) * u as f64).collect();
    assert_close(&host(y.clone()), &want, 2e-6, "silu(g)·u");
    let grads = (y * t2(&dy, shape, &ad)).sum().backward();
    let (dg, du) = (host(g_t.grad(&grads).unwrap()), host(u_t.grad(&grads).unwrap()));
    let want_dg: Vec<f64> = (0..n)
        .map(|i| {
            let (g, s) = (gate[i] as f64, sig(gate[i] as f64));
            dy[i] as f64 * up[i] as f64 * s * (1.0 + g * (1.0 - s))
        })
        .collect();
    let want_du: Vec<f64> = (0..n).map(|i| dy[i] as f64 * gate[i] as f64 * sig(gate[i] as f64)).collect();
    assert_close(&dg, &want_dg, 2e-6, "d gate");
    assert_close(&du, &want_du, 2e-6, "d up");
}

#[test]
fn rms_norm_matches_f64_forward_and_the_reference_gradients() {
    poison();
    let ad = ad_device();
    let (rows, d) = (701, 29); // 20 329 values: chunks of 564 rows, the last partial
    let mut r = rng(21);
    let x: Vec<f32> = random_vec(&mut r, rows * d).iter().map(|v| 3.0 * v).collect();
    let (gamma, dy) = (random_vec(&mut r, d), random_vec(&mut r, rows * d));
    let eps = 1e-5;
    let run = |fused: bool| {
        let x_t = t2(&x, [rows, d], &ad).require_grad();
        let g_t = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [d]), &ad).require_grad();
        let y = layers::rms_norm(x_t.clone(), g_t.clone(), eps, fused);
        let grads = (y.clone() * t2(&dy, [rows, d], &ad)).sum().backward();
        (host(y), host(x_t.grad(&grads).unwrap()), host(g_t.grad(&grads).unwrap()))
    };
    let (y, dx, dg) = run(true);
    let want: Vec<f64> = x
        .chunks(d)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64 + eps).sqrt();
            row.iter().zip(&gamma).map(move |(&v, &g)| v as f64 * inv * g as f64).collect::<Vec<_>>()
        })
        .collect();
    assert_close(&y, &want, 2e-6, "rms_norm");
    // the gradients against Burn's autodiff of the reference ops (an independent derivation)
    let (y_ref, dx_ref, dg_ref) = run(false);
    assert_close(&y, &f64s(&y_ref), 2e-6, "rms_norm vs reference");
    assert_close(&dx, &f64s(&dx_ref), 1e-5, "dx");
    assert_close(&dg, &f64s(&dg_ref), 1e-4, "d gamma");
    // and the same bits on one thread (the d gamma partials are summed in chunk order)
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let (y2, dx2, dg2) = one.install(|| run(true));
    assert!(y == y2 && dx == dx2 && dg == dg2, "fused RMSNorm gives the same bits on one thread");
}
