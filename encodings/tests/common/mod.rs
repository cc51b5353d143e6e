//! Test helpers: a CPU device, seeded random data, host copies.
#![allow(dead_code)]

use burn::prelude::*;
use pezoo_encodings::{Encoding, EncodingConfig, EncodingContext};
use rand::{Rng, SeedableRng, rngs::StdRng};

pub fn device() -> Device {
    Device::flex()
}

pub fn ad_device() -> Device {
    Device::flex().autodiff()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform in [−1, 1).
pub fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn tensor4(v: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

pub fn config(toml: &str) -> EncodingConfig {
    EncodingConfig::from_toml(toml).unwrap_or_else(|e| panic!("{toml}: {e}"))
}

pub fn build(toml: &str, ctx: &EncodingContext, device: &Device) -> Encoding {
    config(toml).init(ctx, device).unwrap_or_else(|e| panic!("{toml}: {e}"))
}

pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(err <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w} (err {err:e})");
    }
}

/// Like [`assert_close`], with the error measured against the largest |value| of each row of
/// `row` elements (one head vector): for maps with a large dynamic range (HoPE-Hyp, xPos) a
/// small component is the difference of large terms, and f32 is accurate relative to the row.
pub fn assert_close_rows(got: &[f32], want: &[f64], row: usize, tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (r, (g, w)) in got.chunks(row).zip(want.chunks(row)).enumerate() {
        let scale = 1.0 + w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in g.iter().zip(w).enumerate() {
            let err = (*g as f64 - w).abs();
            assert!(
                err <= tol * scale,
                "{what}[row {r}, {i}]: got {g}, want {w} (err {err:e}, row scale {scale:e})"
            );
        }
    }
}

/// Tests that draw from a device's seeded RNG and rely on the draws (re-initialising the same
/// weights) hold this lock: the RNG is per device and shared by the tests running in parallel.
pub static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
