//! Fused causal attention (wgpu; lavapipe in CI) against a dense reference on flex: softmax of
//! `q kᵀ` plus the encoding's full `[heads, L, L]` bias under a causal mask, with the encoding's
//! reference rotary map — forward, log-sum-exp and every gradient (q, k, v and the encoding's
//! parameters), on odd shapes, with NaN-poisoned outputs.
#![cfg(feature = "wgpu")]

mod common;

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::DeviceKind;
use burn::tensor::activation::softmax;
use common::*;
use pezoo_encodings::rotary::{fused, reference};
use pezoo_encodings::{Encoding, EncodingContext, PositionalEncoding, attention};

const CASES: &[&str] = &[
    "kind = \"nope\"",
    "kind = \"alibi\"",
    "kind = \"t5\"",
    "kind = \"kerple\"",
    "kind = \"kerple\"\nvariant = \"power\"",
    "kind = \"rope\"",
    "kind = \"rope\"\nlayout = \"interleaved\"\npartial_rotary_factor = 0.5",
    "kind = \"rope\"\nrope_scaling = { rope_type = \"yarn\", factor = 4.0 }",
    "kind = \"hope-hf\"",
    "kind = \"p-rope\"\np = 0.5",
];

fn gpu() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

/// Sets every float parameter to seeded uniform values in [−1, 1) (so biases and their
/// gradients are far from their initial values and from zero), tracked for gradients.
struct Randomise(u64);

impl ModuleMapper for Randomise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.0 += 1;
        let seed = self.0;
        param.map(|t| {
            let (shape, device, tracked) = (t.shape(), t.device(), t.is_require_grad());
            let v = random_vec(&mut rng(100 + seed), shape.num_elements());
            let t = Tensor::<D>::from_data(TensorData::new(v, shape), &device);
            if tracked { t.require_grad() } else { t }
        })
    }
}

fn encoding(toml: &str, ctx: &EncodingContext, dev: &Device) -> Encoding {
    build(toml, ctx, dev).map(&mut Randomise(0))
}

/// Gradients of every float parameter, in module order.
fn param_grads(enc: &Encoding, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
    struct Collect<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1.push(param.val().grad(self.0).map(host).unwrap_or_default());
        }
    }
    let mut c = Collect(grads, Vec::new());
    enc.visit(&mut c);
    c.1
}

/// The dense reference: q, k mapped by the reference rotary code from position `start`, scores
/// plus the encoding's `[heads, L, L]` bias, causal mask, softmax, times v.
fn dense(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, enc: &dyn PositionalEncoding, start: usize) -> Tensor<4> {
    let [_, _, s, _] = q.dims();
    let device = q.device();
    let (q, k) = match enc.rotary() {
        Some(r) => (
            reference::apply(r, q, &[start as i64], pezoo_encodings::Side::Query, start + s),
            reference::apply(r, k, &[start as i64], pezoo_encodings::Side::Key, start + s),
        ),
        None => (q, k),
    };
    let mut scores = q.matmul(k.transpose());
    if let Some(b) = enc.attention_bias(start..start + s, start..start + s, &device) {
        scores = scores + b.unsqueeze_dim::<4>(0);
    }
    let future: Vec<bool> = (0..s).flat_map(|i| (0..s).map(move |j| j > i)).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(future, [s, s]), &device);
    softmax(scores.mask_fill(mask.unsqueeze::<4>(), f32::NEG_INFINITY), 3).matmul(v)
}

fn qkv(b: usize, h: usize, s: usize, d: usize, seed: u64) -> [Vec<f32>; 3] {
    let n = b * h * s * d;
    // q pre-scaled as the model does (1/√d), so logits are O(1) and the softmax is not one-hot.
    let q = random_vec(&mut rng(seed), n).into_iter().map(|x| 2.0 * x).collect();
    [q, random_vec(&mut rng(seed + 1), n), random_vec(&mut rng(seed + 2), n)]
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn fused_attention_matches_the_dense_reference() {
    fused::POISON.store(true, std::sync::atomic::Ordering::Relaxed);
    let (g, c) = (gpu(), device());
    assert!(attention::available(&g) && !attention::available(&c));
    let (b, h) = (2, 3);
    for &d in &[10usize, 64] {
        let ctx = EncodingContext::new(d, h, Some(64));
        for toml in CASES {
            let (fe, re) = (encoding(toml, &ctx, &g), encoding(toml, &ctx, &c));
            assert!(attention::supports(fe.as_dyn()), "{toml} is fused");
            for &(s, start) in &[(1usize, 0usize), (7, 1_000_000), (129, 3), (333, 0)] {
                let [q, k, v] = qkv(b, h, s, d, s as u64 + d as u64);
                let t = |x: &Vec<f32>, dev: &Device| tensor4(x.clone(), [b, h, s, d], dev);
                let got = attention::encoded(t(&q, &g), t(&k, &g), t(&v, &g), fe.as_dyn(), start, None)
                    .expect("fused on wgpu");
                let want = dense(t(&q, &c), t(&k, &c), t(&v, &c), re.as_dyn(), start);
                assert_close(&host(got), &f64s(&host(want)), 2e-5, &format!("{toml} d={d} s={s}"));
            }
        }
    }
}

#[test]
fn log_sum_exp_is_that_of_the_masked_logits() {
    let (g, c) = (gpu(), device());
    let (b, h, s, d) = (2, 3, 129, 12);
    let [q, k, v] = qkv(b, h, s, d, 9);
    let table: Vec<f32> = random_vec(&mut rng(4), h * (s + 5));
    let bias = |dev: &Device| Tensor::<2>::from_data(TensorData::new(table.clone(), [h, s + 5]), dev);
    let t = |x: &Vec<f32>, dev: &Device| tensor4(x.clone(), [b, h, s, d], dev);
    let (_, lse) = attention::causal_with_lse(t(&q, &g), t(&k, &g), t(&v, &g), Some(bias(&g)));
    // host: logsumexp over j ≤ i of ⟨q_i, k_j⟩ + table[h, i − j], in f64
    let mut want = Vec::new();
    for bh in 0..b * h {
        let hh = bh % h;
        for i in 0..s {
            let logits: Vec<f64> = (0..=i)
                .map(|j| {
                    let dot: f64 =
                        (0..d).map(|c| q[(bh * s + i) * d + c] as f64 * k[(bh * s + j) * d + c] as f64).sum();
                    dot + table[hh * (s + 5) + i - j] as f64
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            want.push(m + logits.iter().map(|x| (x - m).exp()).sum::<f64>().ln());
        }
    }
    assert_close(&host(lse), &want, 2e-5, "lse");
    let _ = c;
}

#[test]
fn fused_gradients_match_the_dense_reference() {
    fused::POISON.store(true, std::sync::atomic::Ordering::Relaxed);
    let (g, c) = (gpu().autodiff(), device().autodiff());
    let (b, h, d) = (2, 3, 10);
    let ctx = EncodingContext::new(d, h, Some(64));
    for toml in CASES {
        for &(s, start) in &[(7usize, 5usize), (129, 0)] {
            let [q, k, v] = qkv(b, h, s, d, 40 + s as u64);
            let w = random_vec(&mut rng(7), b * h * s * d);
            let run = |dev: &Device, fused_path: bool| {
                let enc = encoding(toml, &ctx, dev);
                let t = |x: &Vec<f32>| tensor4(x.clone(), [b, h, s, d], dev).require_grad();
                let (qt, kt, vt) = (t(&q), t(&k), t(&v));
                let y = if fused_path {
                    attention::encoded(qt.clone(), kt.clone(), vt.clone(), enc.as_dyn(), start, None).unwrap()
                } else {
                    dense(qt.clone(), kt.clone(), vt.clone(), enc.as_dyn(), start)
                };
                let grads = (y * tensor4(w.clone(), [b, h, s, d], dev)).sum().backward();
                let mut out = vec![qt.grad(&grads), kt.grad(&grads), vt.grad(&grads)]
                    .into_iter()
                    .map(|x| host(x.expect("input gradient")))
                    .collect::<Vec<_>>();
                out.extend(param_grads(&enc, &grads));
                out
            };
            let (got, want) = (run(&g, true), run(&c, false));
            assert_eq!(got.len(), want.len(), "{toml}: gradient count");
            for (i, (gf, gr)) in got.iter().zip(&want).enumerate() {
                let what = format!("{toml} s={s}: gradient {i}");
                assert!(!gr.is_empty() && gr.iter().any(|x| x.abs() > 1e-4), "{what} must be exercised");
                let scale = gr.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
                let want: Vec<f64> = f64s(gr);
                for (j, (a, r)) in gf.iter().zip(&want).enumerate() {
                    let err = (*a as f64 - r).abs();
                    assert!(err <= 1e-4 * (1.0 + scale), "{what}[{j}]: fused {a} vs reference {r}");
                }
                assert_eq!(gf.len(), want.len(), "{what}: length");
            }
        }
    }
}

#[test]
fn a_later_token_changes_no_earlier_output() {
    let g = gpu();
    let (b, h, s, d) = (1, 3, 33, 12);
    let ctx = EncodingContext::new(d, h, Some(64));
    let enc = encoding("kind = \"t5\"", &ctx, &g);
    let [q, k, v] = qkv(b, h, s, d, 77);
    let run = |k: &Vec<f32>, v: &Vec<f32>| {
        let t = |x: &Vec<f32>| tensor4(x.clone(), [b, h, s, d], &g);
        host(attention::encoded(t(&q), t(k), t(v), enc.as_dyn(), 0, None).unwrap())
    };
    let base = run(&k, &v);
    let (mut k2, mut v2) = (k.clone(), v.clone());
    let last = 20; // change key/value 20 of every head
    for hh in 0..h {
        for c in 0..d {
            k2[(hh * s + last) * d + c] += 3.0;
            v2[(hh * s + last) * d + c] -= 2.0;
        }
    }
    let changed = run(&k2, &v2);
    for hh in 0..h {
        for i in 0..s {
            let row = |x: &Vec<f32>| x[(hh * s + i) * d..(hh * s + i + 1) * d].to_vec();
            if i < last {
                assert_eq!(row(&base), row(&changed), "head {hh} row {i} saw a later token");
            } else {
                assert_ne!(row(&base), row(&changed), "head {hh} row {i} must see token {last}");
            }
        }
    }
}
