//! `zoo bench train` (tokens/s of `zoo train`'s step) and `zoo bench gemm` (its matmuls).

use anyhow::Result;
use burn::prelude::*;
use pezoo_encodings::EncodingConfig;

use super::{GemmArgs, ShapeArgs, TrainBenchArgs, median};

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

pub fn gemm(a: GemmArgs) -> Result<()> {
    let (device, picked) = crate::device::select(&a.device)?;
    let rand = |shape: [usize; 3]| Tensor::<3>::random(shape, burn::tensor::Distribution::Default, &device);
    for (name, b, m, k, n) in gemm_shapes(&a.shape) {
        let (x, y, dc) = (rand([b, m, k]), rand([b, k, n]), rand([b, m, n]));
        let products: [(&str, Product); 3] = [
            ("fwd", Box::new(|| x.clone().matmul(y.clone()))),
            ("dA", Box::new(|| dc.clone().matmul(y.clone().swap_dims(1, 2)))),
            ("dB", Box::new(|| x.clone().swap_dims(1, 2).matmul(dc.clone()))),
        ];
        // The model's own path for the linear layers (batch 1): `layers::matmul`, fused on flex,
        // the transposed operands read in place.
        let layer = |x: &Tensor<3>, y: &Tensor<3>| {
            let two = |t: &Tensor<3>| t.clone().squeeze_dim::<2>(0);
            let (x, y) = (two(x), two(y));
            move || pezoo_encodings::layers::matmul(x.clone(), y.clone(), true)
        };
        let fused: [Option<Box<dyn Fn() -> Tensor<2>>>; 3] = match b {
            1 => [
                Some(Box::new(layer(&x, &y))),
                Some(Box::new(layer(&dc, &y.clone().swap_dims(1, 2)))),
                Some(Box::new(layer(&x.clone().swap_dims(1, 2), &dc))),
            ],
            _ => [None, None, None],
        };
        for ((pass, f), fused) in products.into_iter().zip(fused) {
            let t = median(&device, 2, a.reps, f)?;
            let tf = fused.map(|f| median(&device, 2, a.reps, f)).transpose()?;
            let gflops = 2.0 * (b * m * k * n) as f64 / t / 1e9;
            println!(
                "{}",
                serde_json::json!({"device": picked, "name": name, "pass": pass, "batch": b, "m": m, "k": k,
                    "n": n, "ms": t * 1e3, "gflops": gflops, "layer_ms": tf.map(|t| t * 1e3)})
            );
        }
    }
    Ok(())
}

pub fn train(a: TrainBenchArgs) -> Result<()> {
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
    // `zoo train`'s own step: TrainStep, then its optimize (global clip, grouped AdamW).
    let t = crate::run::RunConfig::default().train;
    let model = pezoo_models::Lm::new(&cfg, &ad)?.with_grad_clip(t.grad_clip);
    let mut rng = pezoo_models::corpus::SplitMix(1);
    let items: Vec<Vec<u32>> =
        (0..a.shape.batch).map(|_| (0..=a.shape.seq).map(|_| rng.below(256) as u32).collect()).collect();
    let batch = pezoo_models::LmBatcher.batch(items, &ad);
    // The model's own path, then (where it is fused) the reference path, alternated in one run.
    let mut variants = vec![model.clone()];
    if model.attention_fused(&ad) {
        variants.push(model.clone().with_fused_attention(false));
    }
    let mut timed = Vec::new();
    for model in variants {
        let path = model.compute_path(&ad);
        let mut model = model;
        let mut optim = crate::train::optimizer(&t);
        let mut step = || {
            let out = TrainStep::step(&model, batch.clone());
            model = TrainStep::optimize(model.clone(), &mut optim, 3e-4.into(), out.grads);
        };
        let s = median(&ad, a.warmup, a.steps, &mut step)?;
        timed.push((path, s, (a.shape.batch * a.shape.seq) as f64 / s));
    }
    let params = cfg.num_params();
    let (path, step_s, tokens) = timed[0];
    let reference = timed.get(1).map(|r| r.2);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"device": picked, "compute_path": path, "encoding": cfg.encoding.kind(), "params": params,
                "d": a.shape.d, "layers": a.layers, "heads": a.shape.heads, "seq": a.shape.seq,
                "batch": a.shape.batch, "step_s_median": step_s, "tokens_per_s": tokens,
                "reference_tokens_per_s": reference, "fused_over_reference": reference.map(|r| tokens / r)})
        );
    } else {
        println!(
            "device {picked} ({path}) encoding {} params {params} d={} layers={} heads={} seq={} batch={}: step {:.3}s median, {:.0} tokens/s",
            cfg.encoding.kind(),
            a.shape.d,
            a.layers,
            a.shape.heads,
            a.shape.seq,
            a.shape.batch,
            step_s,
            tokens
        );
        if let Some(r) = reference {
            println!("reference path: {r:.0} tokens/s; fused / reference = {:.2}×", tokens / r);
        }
    }
    Ok(())
}
