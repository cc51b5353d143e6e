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
        for (pass, f) in products {
            let t = median(&device, 2, a.reps, f)?;
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
    let mut model = pezoo_models::Lm::new(&cfg, &ad)?.with_grad_clip(t.grad_clip);
    let mut optim = crate::train::optimizer(&t);
    let mut rng = pezoo_models::corpus::SplitMix(1);
    let items: Vec<Vec<u32>> =
        (0..a.shape.batch).map(|_| (0..=a.shape.seq).map(|_| rng.below(256) as u32).collect()).collect();
    let batch = pezoo_models::LmBatcher.batch(items, &ad);
    let mut step = || {
        let out = TrainStep::step(&model, batch.clone());
        model = TrainStep::optimize(model.clone(), &mut optim, 3e-4.into(), out.grads);
    };
    let t = median(&ad, a.warmup, a.steps, &mut step)?;
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
