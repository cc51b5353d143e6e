//! `zoo bench kernels` and `zoo bench train`: medians over repeated runs after warm-up, with a
//! device sync before reading the clock. Run on a release build (`cargo run --release`).

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::{Args, Subcommand};
use pezoo_encodings::rotary::{elementwise_floor, fused_available, fused_forward_backward, reference};
use pezoo_encodings::{EncodingConfig, EncodingContext, Side};
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Fused rotary kernels vs the reference and vs a plain elementwise op (the memory floor).
    Kernels(KernelArgs),
    /// Training tokens/s of the LM (`zoo train`'s step and optimizer, no data loading).
    Train(TrainBenchArgs),
    /// GFLOP/s of the matmuls of `bench train`'s step, shape by shape (to compare the backend's
    /// GEMM with PyTorch's on the same shapes: `experiments/scripts/torch_gemm.py`).
    Gemm(GemmArgs),
}

/// The benchmark model's shape (defaults: `../shared/bench/torch_lm.py`'s).
#[derive(Args, Debug)]
pub struct ShapeArgs {
    #[arg(long, default_value_t = 256)]
    pub d: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

#[derive(Args, Debug)]
pub struct GemmArgs {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
}

#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Shapes batch×heads×seq×head_dim, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8x8x512x64,4x16x2048x128")]
    pub sizes: Vec<String>,
    /// Encoding to apply (a rotary-class kind or TOML file).
    #[arg(long, default_value = "rope")]
    pub encoding: String,
    #[arg(long, default_value = "wgpu")]
    pub device: String,
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value = "rope")]
    pub encoding: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels(a) => kernels(a),
        BenchCommand::Train(a) => train(a),
        BenchCommand::Gemm(a) => gemm(a),
    }
}

/// The forward matmuls of one layer (plus the tied head) at `bench train`'s shape: name,
/// batch, m, k, n. `zoo bench gemm` also times each one's two backward products with their
/// transposed operands (dA = dC·Bᵀ: m×n·n×k; dB = Aᵀ·dC: k×m·m×n).
pub fn gemm_shapes(a: &ShapeArgs) -> Vec<(&'static str, usize, usize, usize, usize)> {
    let (t, d, h) = (a.batch * a.seq, a.d, 8 * a.d / 3);
    let (bh, s, dh) = (a.batch * a.heads, a.seq, a.d / a.heads);
    vec![
        ("qkv", 1, t, d, 3 * d),
        ("attn_out", 1, t, d, d),
        ("mlp_up", 1, t, d, h),
        ("mlp_down", 1, t, h, d),
        ("head", 1, t, d, pezoo_models::BYTE_VOCAB),
        ("scores", bh, s, dh, s),
        ("probs_v", bh, s, s, dh),
    ]
}

/// One timed matmul of `zoo bench gemm`.
type Product<'a> = Box<dyn Fn() -> Tensor<3> + 'a>;

fn gemm(a: GemmArgs) -> Result<()> {
    let (device, picked) = crate::device::select(&a.device)?;
    let rand = |shape: [usize; 3]| Tensor::<3>::random(shape, burn::tensor::Distribution::Default, &device);
    for (name, b, m, k, n) in gemm_shapes(&a.shape) {
        let (x, y, dc) = (rand([b, m, k]), rand([b, k, n]), rand([b, m, n]));
        let products: [(&str, Product); 3] = [
            ("fwd", Box::new(|| x.clone().matmul(y.clone()))),
            ("dA", Box::new(|| dc.clone().matmul(y.clone().swap_dims(1, 2)))),
            ("dB", Box::new(|| x.clone().swap_dims(1, 2).matmul(dc.clone()))),
        ];
        for (pass, f) in products {
            let t = median(&device, 2, a.reps, f);
            let gflops = 2.0 * (b * m * k * n) as f64 / t / 1e9;
            println!(
                "{}",
                serde_json::json!({"device": picked, "name": name, "pass": pass, "batch": b, "m": m, "k": k,
                    "n": n, "ms": t * 1e3, "gflops": gflops})
            );
        }
    }
    Ok(())
}

/// Median seconds of `f` over `reps` runs after `warmup`, syncing the device each time. `f`'s
/// result is kept alive until after the sync, so a lazy backend (Fusion) cannot skip the work.
fn median<T>(device: &Device, warmup: usize, reps: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..warmup {
        let keep = f();
        let _ = device.sync();
        drop(keep);
    }
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            let keep = f();
            let _ = device.sync();
            let dt = t0.elapsed().as_secs_f64();
            drop(keep);
            dt
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

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

fn parse_shape(s: &str) -> Result<[usize; 4]> {
    let v: Vec<usize> =
        s.split('x').map(|p| p.trim().parse()).collect::<Result<_, _>>().map_err(|_| {
            anyhow::anyhow!("--sizes: `{s}` is not batch×heads×seq×head_dim (e.g. 8x8x512x64)")
        })?;
    match v[..] {
        [b, h, s, d] if b * h * s * d > 0 => Ok([b, h, s, d]),
        _ => bail!("--sizes: `{s}` is not batch×heads×seq×head_dim (e.g. 8x8x512x64)"),
    }
}

fn kernels(a: KernelArgs) -> Result<()> {
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
        let ms = |f: &mut dyn FnMut() -> Box<dyn std::any::Any>| median(&device, a.warmup, a.reps, f) * 1e3;
        let fused_fwd = ms(&mut || Box::new(rot.apply(x.clone(), &[0], Side::Query, s)));
        let ref_fwd = ms(&mut || Box::new(reference::apply(&rot, x.clone(), &[0], Side::Query, s)));
        let fused_fb = ms(&mut || Box::new(grad(rot_ad.apply(xa.clone(), &[0], Side::Query, s))));
        let ref_fb = ms(&mut || Box::new(grad(reference::apply(&rot_ad, xa.clone(), &[0], Side::Query, s))));
        // The floor: a plain elementwise x·c over the same tensor, launched like the fused kernel
        // (Burn's lazy Fusion would otherwise skip a bare `mul_scalar` whose output is never
        // read); forward+backward is two such passes (an elementwise map's backward is one more).
        let kernels_fb = if fused_available(&device) {
            ms(&mut || Box::new(fused_forward_backward(&rot, x.clone(), &[0], Side::Query)))
        } else {
            f64::NAN
        };
        let (floor_fwd, floor_fb) = if fused_available(&device) {
            let floor = |t: Tensor<4>| elementwise_floor(t).expect("CubeCL device");
            let f = ms(&mut || Box::new(floor(x.clone())));
            let fb = ms(&mut || Box::new(floor(floor(x.clone()))));
            (f, fb)
        } else {
            let f = ms(&mut || Box::new(x.clone().mul_scalar(1.5)));
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

fn train(a: TrainBenchArgs) -> Result<()> {
    use burn::data::dataloader::batcher::Batcher;
    use burn::train::TrainStep;
    let (device, picked) = crate::device::select(&a.device)?;
    let mut cfg: pezoo_models::ModelConfig = toml::from_str("").expect("defaults");
    cfg.d_model = a.shape.d;
    cfg.n_layers = a.layers;
    cfg.n_heads = a.shape.heads;
    cfg.max_seq_len = a.shape.seq;
    cfg.encoding = EncodingConfig::from_name_or_file(&a.encoding)?;
    cfg.validate()?;
    let ad = device.clone().autodiff();
    ad.seed(0);
    // `zoo train`'s own step: TrainStep (global clip) and the grouped AdamW.
    let t = crate::train::RunConfig::default().train;
    let mut model = pezoo_models::Lm::new(&cfg, &ad)?.with_grad_clip(t.grad_clip);
    let mut optim = crate::train::optimizer(&t);
    let mut rng = pezoo_models::corpus::SplitMix(1);
    let items: Vec<Vec<u32>> =
        (0..a.shape.batch).map(|_| (0..=a.shape.seq).map(|_| rng.below(256) as u32).collect()).collect();
    let batch = pezoo_models::LmBatcher.batch(items, &ad);
    let mut step = || {
        let out = TrainStep::step(&model, batch.clone());
        model = optim.step(3e-4, model.clone(), out.grads);
    };
    let t = median(&ad, a.warmup, a.steps, &mut step);
    let tokens = (a.shape.batch * a.shape.seq) as f64 / t;
    let params = cfg.num_params();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"device": picked, "encoding": cfg.encoding.kind(), "params": params, "d": a.shape.d,
                "layers": a.layers, "heads": a.shape.heads, "seq": a.shape.seq, "batch": a.shape.batch,
                "step_s_median": t, "tokens_per_s": tokens})
        );
    } else {
        println!(
            "device {picked} encoding {} params {params} d={} layers={} heads={} seq={} batch={}: step {:.3}s median, {:.0} tokens/s",
            cfg.encoding.kind(),
            a.shape.d,
            a.layers,
            a.shape.heads,
            a.shape.seq,
            a.shape.batch,
            t,
            tokens
        );
    }
    Ok(())
}
