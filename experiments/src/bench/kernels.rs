//! `zoo bench kernels`: the fused rotary kernels vs the reference and vs a plain elementwise op.

use anyhow::{Result, bail};
use burn::prelude::*;
use pezoo_encodings::rotary::{elementwise_floor, fused_available, fused_forward_backward, reference};
use pezoo_encodings::{EncodingConfig, EncodingContext, Side};
use serde::Serialize;

use super::{KernelArgs, median};

#[derive(Serialize)]
struct KernelRow {
    shape: [usize; 4],
    fused_fwd_ms: f64,
    fused_fwd_bwd_ms: f64,
    /// Forward + backward kernels alone (no autodiff bookkeeping), comparable to the floor.
    fused_kernels_fwd_bwd_ms: f64,
    reference_fwd_ms: f64,
    reference_fwd_bwd_ms: f64,
    floor_fwd_ms: f64,
    floor_fwd_bwd_ms: f64,
    speedup_fwd: f64,
    speedup_fwd_bwd: f64,
    fused_over_floor_fwd: f64,
    fused_over_floor_fwd_bwd: f64,
}

pub(super) fn parse_shape(s: &str) -> Result<[usize; 4]> {
    let v: Vec<usize> =
        s.split('x').map(|p| p.trim().parse()).collect::<Result<_, _>>().map_err(|_| {
            anyhow::anyhow!("--sizes: `{s}` is not batch×heads×seq×head_dim (e.g. 8x8x512x64)")
        })?;
    match v[..] {
        [b, h, s, d] if b * h * s * d > 0 => Ok([b, h, s, d]),
        _ => bail!("--sizes: `{s}` is not batch×heads×seq×head_dim (e.g. 8x8x512x64)"),
    }
}

pub fn kernels(a: KernelArgs) -> Result<()> {
    let (device, picked) = crate::device::select(&a.device)?;
    let config = EncodingConfig::from_name_or_file(&a.encoding)?;
    let mut rows = Vec::new();
    for size in &a.sizes {
        let [b, h, s, d] = parse_shape(size)?;
        let ctx = EncodingContext::new(d, h, Some(s));
        let enc = config.init(&ctx, &device)?;
        let Some(rot) = enc.as_dyn().rotary().cloned() else {
            bail!(
                "--encoding: `{}` is not rotary-class (allowed: rope, p-rope, hope-hf, hope-hyp, xpos)",
                config.kind()
            )
        };
        let ad = device.clone().autodiff();
        let rot_ad = config.init(&ctx, &ad)?.as_dyn().rotary().cloned().expect("rotary");
        let x = Tensor::<4>::random([b, h, s, d], burn::tensor::Distribution::Default, &device);
        let xa = Tensor::<4>::random([b, h, s, d], burn::tensor::Distribution::Default, &ad).require_grad();
        // Backward passes return the input's gradient (what training reads).
        let grad = |y: Tensor<4>| {
            let mut g = y.sum().backward();
            xa.grad_remove(&mut g)
        };
        let ms = |f: &mut dyn FnMut() -> Box<dyn std::any::Any>| {
            median(&device, a.warmup, a.reps, f).map(|t| t * 1e3)
        };
        let fused_fwd = ms(&mut || Box::new(rot.apply(x.clone(), &[0], Side::Query, s)))?;
        let ref_fwd = ms(&mut || Box::new(reference::apply(&rot, x.clone(), &[0], Side::Query, s)))?;
        let fused_fb = ms(&mut || Box::new(grad(rot_ad.apply(xa.clone(), &[0], Side::Query, s))))?;
        let ref_fb = ms(&mut || Box::new(grad(reference::apply(&rot_ad, xa.clone(), &[0], Side::Query, s))))?;
        // The floor: a plain elementwise x·c over the same tensor, launched like the fused kernel
        // (Burn's lazy Fusion would otherwise skip a bare `mul_scalar` whose output is never
        // read); forward+backward is two such passes (an elementwise map's backward is one more).
        let kernels_fb = if fused_available(&device) {
            ms(&mut || Box::new(fused_forward_backward(&rot, x.clone(), &[0], Side::Query)))?
        } else {
            f64::NAN
        };
        let (floor_fwd, floor_fb) = if fused_available(&device) {
            let floor = |t: Tensor<4>| elementwise_floor(t).expect("CubeCL device");
            let f = ms(&mut || Box::new(floor(x.clone())))?;
            let fb = ms(&mut || Box::new(floor(floor(x.clone()))))?;
            (f, fb)
        } else {
            let f = ms(&mut || Box::new(x.clone().mul_scalar(1.5)))?;
            (f, 2.0 * f)
        };
        rows.push(KernelRow {
            shape: [b, h, s, d],
            fused_fwd_ms: fused_fwd,
            fused_fwd_bwd_ms: fused_fb,
            fused_kernels_fwd_bwd_ms: kernels_fb,
            reference_fwd_ms: ref_fwd,
            reference_fwd_bwd_ms: ref_fb,
            floor_fwd_ms: floor_fwd,
            floor_fwd_bwd_ms: floor_fb,
            speedup_fwd: ref_fwd / fused_fwd,
            speedup_fwd_bwd: ref_fb / fused_fb,
            fused_over_floor_fwd: fused_fwd / floor_fwd,
            fused_over_floor_fwd_bwd: kernels_fb / floor_fb,
        });
    }
    if a.json {
        println!("{}", serde_json::json!({ "device": picked, "encoding": config.kind(), "rows": rows }));
        return Ok(());
    }
    println!(
        "device {picked}, encoding {}, median of {} after {} warm-up (ms)",
        config.kind(),
        a.reps,
        a.warmup
    );
    println!("  fused/ref: fused forward (autodiff forward+backward, same plumbing as ref)");
    println!(
        "  kern+bw: fused forward kernel + backward kernel alone; floor: elementwise x·c (two passes for +bw)"
    );
    println!(
        "{:>16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>7} {:>7} | {:>7} {:>7}",
        "shape",
        "fused",
        "fused+bw",
        "kern+bw",
        "ref",
        "ref+bw",
        "floor",
        "floor+bw",
        "ref/fus",
        "+bw",
        "fus/flr",
        "+bw"
    );
    for r in &rows {
        println!(
            "{:>16} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} | {:>7.2} {:>7.2} | {:>7.2} {:>7.2}",
            format!("{}x{}x{}x{}", r.shape[0], r.shape[1], r.shape[2], r.shape[3]),
            r.fused_fwd_ms,
            r.fused_fwd_bwd_ms,
            r.fused_kernels_fwd_bwd_ms,
            r.reference_fwd_ms,
            r.reference_fwd_bwd_ms,
            r.floor_fwd_ms,
            r.floor_fwd_bwd_ms,
            r.speedup_fwd,
            r.speedup_fwd_bwd,
            r.fused_over_floor_fwd,
            r.fused_over_floor_fwd_bwd
        );
    }
    Ok(())
}
