//! `zoo bench attention`: the fused attention kernel (encoding inside) against Burn's attention
//! on the same tensors, by length — median time and the device memory the pass reserves,
//! forward and forward + backward.
//!
//! Reference: the encoding's own map on q and k (rotary class), then
//! `burn::tensor::module::attention` (causal, with the `[1, heads, L, L]` bias of the bias class):
//! what Burn runs — its unfused fallback under autodiff, its flash kernel (no bias) in inference
//! where it has one. Fused: [`pezoo_encodings::attention::encoded`]. Both build their position
//! data (bias matrix / distance table) inside the timed call, as one forward of a layer does.
//!
//! Memory: the bytes the device allocator reserves beyond what it held before the pass (after a
//! cleanup), read right after it — the pool keeps its pages for reuse, so this is the pass's peak
//! reservation. `None` where the backend reports no pools (flex, ndarray).

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use pezoo_encodings::{Encoding, EncodingConfig, EncodingContext, PositionalEncoding, attention};
use serde::Serialize;

use super::{AttentionArgs, median};

#[derive(Serialize)]
struct Row {
    encoding: String,
    seq: usize,
    fused_fwd_ms: f64,
    fused_fwd_bwd_ms: f64,
    reference_fwd_ms: Option<f64>,
    reference_fwd_bwd_ms: Option<f64>,
    /// reference time / fused time (> 1: fused faster).
    reference_over_fused_fwd: Option<f64>,
    reference_over_fused_fwd_bwd: Option<f64>,
    fused_fwd_memory_mib: Option<f64>,
    fused_fwd_bwd_memory_mib: Option<f64>,
    reference_fwd_memory_mib: Option<f64>,
    reference_fwd_bwd_memory_mib: Option<f64>,
    /// reference memory / fused memory.
    memory_ratio_fwd: Option<f64>,
    memory_ratio_fwd_bwd: Option<f64>,
    /// "ok: agrees with fused within …" (max |fused − reference| over the output and dq, dk,
    /// dv; the reference is timed only when ≤ 1e-3), or why it was not timed.
    reference_status: String,
}

/// max |fused − reference| over the output and dq, dk, dv of one forward + backward on the same
/// N(0, 1) tensors, or why the reference failed on this device (e.g. a buffer past its
/// allocation limit). An error when the fused side is not finite.
fn agreement(a: &AttentionArgs, enc: &Encoding, ad: &Device, s: usize) -> Result<Result<f64, String>> {
    let shape = [a.batch, a.heads, s, a.head_dim];
    let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
    let rand = || Tensor::<4>::random(shape, normal, ad);
    let (q, k, v, w) = (rand().mul_scalar(1.0 / (a.head_dim as f64).sqrt()), rand(), rand(), rand());
    let run = |attn: Attn| {
        let (q, k, v) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
        let y = attn(q.clone(), k.clone(), v.clone(), enc.as_dyn());
        let g = (y.clone() * w.clone()).sum().backward();
        let grads = [q.grad(&g), k.grad(&g), v.grad(&g)].map(|x| x.expect("tracked input"));
        (y.inner(), grads)
    };
    let read = |x: Tensor<4>| x.try_into_data().map(|d| d.try_to_vec::<f32>().expect("f32"));
    let (fy, fg) = run(fused);
    let fused_vals: Vec<Vec<f32>> = std::iter::once(fy)
        .chain(fg)
        .map(|x| read(x).map_err(|e| anyhow::anyhow!("the fused kernel failed: {}", super::root_cause(&e))))
        .collect::<Result<_>>()?;
    if fused_vals.iter().flatten().any(|x| !x.is_finite()) {
        bail!("the fused kernel returned a non-finite value at L = {s}");
    }
    let (ry, rg) = run(reference);
    let mut diff = 0f64;
    for (f, r) in fused_vals.iter().zip(std::iter::once(ry).chain(rg)) {
        let r = match read(r) {
            Ok(r) => r,
            Err(e) => return Ok(Err(super::root_cause(&e))),
        };
        if r.iter().any(|x| !x.is_finite()) {
            return Ok(Ok(f64::NAN));
        }
        diff = f.iter().zip(&r).fold(diff, |m, (x, y)| m.max((x - y).abs() as f64));
    }
    Ok(Ok(diff))
}

/// The reference: the encoding's map, then Burn's attention (q pre-scaled: `scale = 1`).
fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, enc: &dyn PositionalEncoding) -> Tensor<4> {
    let [_, heads, s, _] = q.dims();
    let device = q.device();
    let (q, k) = match enc.rotary() {
        Some(r) => r.apply_qk(q, k, &[0], &[0], s),
        None => (q, k),
    };
    let bias = enc.attention_bias(0..s, 0..s, &device).map(|b| b.reshape([1, heads, s, s]));
    let options = AttentionModuleOptions { scale: Some(1.0), softcap: None, is_causal: true };
    burn_attention(q, k, v, None, bias, options)
}

fn fused(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, enc: &dyn PositionalEncoding) -> Tensor<4> {
    attention::encoded(q, k, v, enc, 0, None).expect("checked: fused on this device")
}

/// MiB the allocator reserves for `f`'s result and everything it allocated on the way.
fn memory_mib<T>(device: &Device, f: impl FnOnce() -> T) -> Option<f64> {
    let _ = device.sync(); // drain queued frees (Fusion) before the cleanup
    device.memory_cleanup();
    let before = device.memory_pool_usage()?.bytes_reserved;
    let keep = f();
    let _ = device.sync();
    let after = device.memory_pool_usage()?.bytes_reserved;
    drop(keep);
    let _ = device.sync();
    device.memory_cleanup();
    Some(after.saturating_sub(before) as f64 / (1u64 << 20) as f64)
}

type Attn = fn(Tensor<4>, Tensor<4>, Tensor<4>, &dyn PositionalEncoding) -> Tensor<4>;

/// (median ms, MiB) of a forward, and of a forward + backward returning dq, dk, dv.
fn measure(
    a: &AttentionArgs,
    enc: [&Encoding; 2],
    attn: Attn,
    devs: [&Device; 2],
    s: usize,
) -> Result<[(f64, Option<f64>); 2]> {
    let shape = [a.batch, a.heads, s, a.head_dim];
    let rand = |dev: &Device| Tensor::<4>::random(shape, burn::tensor::Distribution::Default, dev);
    let scale = 1.0 / (a.head_dim as f64).sqrt();
    let (dev, ad) = (devs[0], devs[1]);
    let (q, k, v) = (rand(dev).mul_scalar(scale), rand(dev), rand(dev));
    let mut fwd = || attn(q.clone(), k.clone(), v.clone(), enc[0].as_dyn());
    let ms = median(dev, a.warmup, a.reps, &mut fwd)? * 1e3;
    let mem = memory_mib(dev, fwd);
    let (qa, ka, va) =
        (rand(ad).mul_scalar(scale).require_grad(), rand(ad).require_grad(), rand(ad).require_grad());
    let w = rand(ad);
    let mut fb = || {
        let y = attn(qa.clone(), ka.clone(), va.clone(), enc[1].as_dyn());
        let mut g = (y * w.clone()).sum().backward();
        [qa.grad_remove(&mut g), ka.grad_remove(&mut g), va.grad_remove(&mut g)]
    };
    let ms_fb = median(ad, a.warmup, a.reps, &mut fb)? * 1e3;
    let mem_fb = memory_mib(ad, fb);
    Ok([(ms, mem), (ms_fb, mem_fb)])
}

pub fn attention(a: AttentionArgs) -> Result<()> {
    let (device, picked) = crate::device::select(&a.device)?;
    if !attention::available(&device) {
        bail!("--device: `{picked}` runs no fused attention (allowed: a CubeCL device, e.g. wgpu)");
    }
    if let Some(&bad) = a.lengths.iter().find(|&&l| l == 0) {
        bail!("--lengths: {bad} is out of range (allowed: ≥ 1)");
    }
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for name in &a.encodings {
        let config = EncodingConfig::from_name_or_file(name)?;
        for &s in &a.lengths {
            let ctx = EncodingContext::new(a.head_dim, a.heads, Some(s));
            let enc = [config.init(&ctx, &device)?, config.init(&ctx, &ad)?];
            if !attention::supports(enc[0].as_dyn(), &device) {
                bail!("--encodings: `{}` has no fused attention", config.kind());
            }
            let [enc0, enc1] = &enc;
            let [f, fb] = measure(&a, [enc0, enc1], fused, [&device, &ad], s)?;
            // [b, h, L, L] f32: scores, probabilities, bias and their gradients (≈ 6 live), and
            // FIRE's two [L, L, W] hidden activations (kept for the backward)
            let per_head = 6 + 2 * enc0.as_dyn().fire().map_or(0, |f| f.width());
            let need = (per_head * a.batch * a.heads * s * s * 4) as f64 / (1u64 << 30) as f64;
            let block = enc0.as_dyn().rotary().and_then(|r| r.query_block()).filter(|&b| b < s);
            let (mut r, mut rb) = (None, None);
            let status;
            if let Some(b) = block {
                status = format!(
                    "skipped: a growing map needs query blocks of ≤ {b} (the reference runs it whole)"
                );
            } else if need > a.max_reference_gib {
                status = format!("skipped: would need ~{need:.1} GiB (--max-reference-gib)");
            } else {
                match agreement(&a, enc1, &ad, s)? {
                    Err(why) => status = format!("failed on this device: {why}"),
                    Ok(d) if d.is_nan() || d > 1e-3 => {
                        status = format!("dropped: differs from fused by {d:e}")
                    }
                    Ok(d) => match measure(&a, [enc0, enc1], reference, [&device, &ad], s) {
                        Err(why) => status = format!("failed on this device: {why}"),
                        Ok([f, b]) => {
                            (r, rb) = (Some(f), Some(b));
                            status = format!("ok: agrees with fused within {d:.1e}");
                        }
                    },
                }
            }
            if !status.starts_with("ok") {
                eprintln!("reference at L = {s}: {status}");
            }
            // below 1 MiB the allocator's page reuse decides the reading: no ratio
            let ratio = |x: Option<f64>, y: Option<f64>| Some(x? / y.filter(|&y| y >= 1.0)?);
            rows.push(Row {
                encoding: config.kind().to_string(),
                seq: s,
                fused_fwd_ms: f.0,
                fused_fwd_bwd_ms: fb.0,
                reference_fwd_ms: r.map(|r| r.0),
                reference_fwd_bwd_ms: rb.map(|r| r.0),
                reference_over_fused_fwd: r.map(|r| r.0 / f.0),
                reference_over_fused_fwd_bwd: rb.map(|r| r.0 / fb.0),
                fused_fwd_memory_mib: f.1,
                fused_fwd_bwd_memory_mib: fb.1,
                reference_fwd_memory_mib: r.and_then(|r| r.1),
                reference_fwd_bwd_memory_mib: rb.and_then(|r| r.1),
                memory_ratio_fwd: ratio(r.and_then(|r| r.1), f.1),
                memory_ratio_fwd_bwd: ratio(rb.and_then(|r| r.1), fb.1),
                reference_status: status,
            });
            let last = rows.last().expect("pushed");
            if !a.json {
                print_row(last, rows.len() == 1, &picked, &a);
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "device": picked, "batch": a.batch, "heads": a.heads,
            "head_dim": a.head_dim, "reps": a.reps, "rows": rows })
        );
    }
    Ok(())
}

fn print_row(r: &Row, first: bool, picked: &str, a: &AttentionArgs) {
    let opt = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.2}"));
    if first {
        println!(
            "device {picked}, batch {} heads {} head_dim {}, median of {} after {} warm-up; time ms, memory MiB reserved",
            a.batch, a.heads, a.head_dim, a.reps, a.warmup
        );
        println!(
            "{:>10} {:>6} | {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} | {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7}",
            "encoding",
            "L",
            "fused",
            "ref",
            "ref/fus",
            "fused+bw",
            "ref+bw",
            "ref/fus",
            "mem",
            "ref mem",
            "ratio",
            "mem+bw",
            "ref+bw",
            "ratio"
        );
    }
    println!(
        "{:>10} {:>6} | {:>9.2} {:>9} {:>7} | {:>9.2} {:>9} {:>7} | {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7}",
        r.encoding,
        r.seq,
        r.fused_fwd_ms,
        opt(r.reference_fwd_ms),
        opt(r.reference_over_fused_fwd),
        r.fused_fwd_bwd_ms,
        opt(r.reference_fwd_bwd_ms),
        opt(r.reference_over_fused_fwd_bwd),
        opt(r.fused_fwd_memory_mib),
        opt(r.reference_fwd_memory_mib),
        opt(r.memory_ratio_fwd),
        opt(r.fused_fwd_bwd_memory_mib),
        opt(r.reference_fwd_bwd_memory_mib),
        opt(r.memory_ratio_fwd_bwd)
    );
}
