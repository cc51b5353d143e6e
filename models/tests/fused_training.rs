//! The same tiny model trained a few steps through the fused attention — on every compiled CubeCL
//! device (wgpu on lavapipe in CI) and on flex (its CPU kernel) — and through the reference path
//! on flex, from the same initial weights, reaches the same losses.
#![cfg(any(
    feature = "flex",
    feature = "wgpu",
    feature = "vulkan",
    feature = "webgpu",
    feature = "metal",
    feature = "cuda",
    feature = "rocm",
    feature = "cpu"
))]

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use pezoo_encodings::{EncodingConfig, rotary::fused_available};
use pezoo_models::{Corpus, Lm, LmBatcher, ModelConfig, RandomWindows, token_stream};

mod common;
use common::Randomise;

fn losses(model: Lm, items: &[Vec<u32>], dev: &Device) -> Vec<f32> {
    use burn::data::dataloader::batcher::Batcher;
    let mut model = model;
    let mut optim = AdamWConfig::new().init();
    let mut out = Vec::new();
    for _ in 0..3 {
        let batch = LmBatcher.batch(items.to_vec(), dev);
        let (loss, _) = model.loss(batch.inputs, batch.targets);
        out.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    out
}

/// Whether `model` runs the fused kernel on `dev`: every kind on a CubeCL device; on flex all but
/// HoPE-Hyp, xPos and FIRE (asserted both ways).
fn fused_here(model: &Lm, dev: &Device, kind: &str) -> bool {
    let want = fused_available(dev) || !["hope-hyp", "xpos", "fire"].contains(&kind);
    assert_eq!(model.attention_fused(dev), want, "{kind}: fused attention on {dev:?}");
    want
}

fn fused_and_reference_training_agree(gpu: Device) {
    use burn::data::dataset::Dataset;
    let corpus = Corpus::synthetic(2, 20, 600);
    let windows = RandomWindows::new(
        std::sync::Arc::new(token_stream(&corpus.train, &pezoo_models::Tokenizer::Bytes)),
        24,
        4,
        1,
    );
    let items: Vec<Vec<u32>> = (0..4).map(|i| windows.get(i).unwrap()).collect();
    let cpu = Device::flex().autodiff();
    let gpu = gpu.autodiff();
    for kind in ["rope", "hope-hyp", "nope", "alibi", "t5", "kerple", "fire"] {
        let mut c: ModelConfig =
            toml::from_str("d_model = 24\nn_layers = 2\nn_heads = 2\nmax_seq_len = 24").unwrap();
        c.encoding = EncodingConfig::default_for(kind).unwrap();
        if let EncodingConfig::Rope(r) = &mut c.encoding {
            r.layout = pezoo_encodings::Layout::Interleaved;
        }
        cpu.seed(4);
        let model = Lm::new(&c, &cpu).unwrap().with_fused_attention(false);
        let on_gpu = model.clone().fork(&gpu).with_fused_attention(true);
        if !fused_here(&on_gpu, &gpu, kind) {
            continue;
        }
        assert!(
            !on_gpu.clone().with_fused_attention(false).attention_fused(&gpu),
            "the switch forces the reference"
        );
        assert!(!model.attention_fused(&cpu), "the reference side runs the reference");
        let (a, b) = (losses(model, &items, &cpu), losses(on_gpu, &items, &gpu));
        for (s, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 2e-3 * x.abs(), "{kind} step {s}: reference {x} vs fused {y}");
        }
        assert!(a[2] < a[0] - 0.1, "{kind}: training moves ({a:?})");
    }
}

/// What `zoo eval` relies on at long lengths: for every encoding that extrapolates, the same
/// weights give the same logits and loss on wgpu (fused attention) and flex (reference) at 16×
/// the training length (the kernel's tiles, HoPE-Hyp's re-centring and FIRE's normaliser all
/// past their 1× range).
fn fused_and_reference_agree_at_16x_the_training_length(gpu: Device) {
    use burn::module::Module;
    let cpu = Device::flex();
    let (train_len, s) = (24usize, 16 * 24);
    let mut rng = pezoo_models::corpus::SplitMix(9);
    let tokens: Vec<i64> = (0..2 * (s + 1)).map(|_| rng.below(256) as i64).collect();
    for &kind in EncodingConfig::KINDS {
        let mut c: ModelConfig =
            toml::from_str(&format!("d_model = 24\nn_layers = 2\nn_heads = 2\nmax_seq_len = {train_len}"))
                .unwrap();
        c.encoding = EncodingConfig::default_for(kind).unwrap();
        cpu.seed(5);
        let model = Lm::new(&c, &cpu).unwrap().map(&mut Randomise(0)).with_fused_attention(false);
        if model.check_len(0, s).is_err() {
            continue; // a learned table has no position 16× out
        }
        let run = |m: &Lm, dev: &Device| {
            let t = |o: usize| {
                let v: Vec<i64> =
                    (0..2).flat_map(|b| tokens[b * (s + 1) + o..b * (s + 1) + o + s].to_vec()).collect();
                Tensor::<2, Int>::from_data(TensorData::new(v, [2, s]), dev)
            };
            let (loss, logits) = m.loss(t(0), t(1));
            (loss.into_scalar::<f32>(), logits.into_data().convert::<f32>().try_to_vec::<f32>().unwrap())
        };
        let on_gpu = model.clone().fork(&gpu).with_fused_attention(true);
        if !fused_here(&on_gpu, &gpu, kind) {
            continue;
        }
        let ((lr, xr), (lf, xf)) = (run(&model, &cpu), run(&on_gpu, &gpu));
        let scale = xr.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = xr.iter().zip(&xf).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-3 * scale, "{kind}: logits differ by {err} (scale {scale})");
        assert!((lr - lf).abs() <= 1e-4 * lr, "{kind}: loss reference {lr} vs fused {lf}");
    }
}

pezoo_encodings::cube_tests!(
    fused_and_reference_training_agree,
    fused_and_reference_agree_at_16x_the_training_length
);

pezoo_encodings::cube_tests!(@on "flex", flex, Device::flex();
    fused_and_reference_training_agree,
    fused_and_reference_agree_at_16x_the_training_length
);
