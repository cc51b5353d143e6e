//! The same tiny model trained a few steps on wgpu (fused attention and rotary kernels) and on
//! flex (the reference path), from the same initial weights, reaches the same losses.
#![cfg(feature = "wgpu")]

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use pezoo_encodings::EncodingConfig;
use pezoo_models::{Corpus, Lm, LmBatcher, ModelConfig, RandomWindows, token_stream};

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

#[test]
fn fused_and_reference_training_agree() {
    use burn::data::dataset::Dataset;
    let corpus = Corpus::synthetic(2, 20, 600);
    let windows = RandomWindows::new(std::sync::Arc::new(token_stream(&corpus.train)), 24, 4, 1);
    let items: Vec<Vec<u32>> = (0..4).map(|i| windows.get(i).unwrap()).collect();
    let cpu = Device::flex().autodiff();
    let gpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    for kind in ["rope", "hope-hyp", "nope", "alibi", "t5", "kerple", "fire"] {
        let mut c: ModelConfig =
            toml::from_str("d_model = 24\nn_layers = 2\nn_heads = 2\nmax_seq_len = 24").unwrap();
        c.encoding = EncodingConfig::default_for(kind).unwrap();
        if let EncodingConfig::Rope(r) = &mut c.encoding {
            r.layout = pezoo_encodings::Layout::Interleaved;
        }
        cpu.seed(4);
        let model = Lm::new(&c, &cpu).unwrap();
        let on_gpu = model.clone().fork(&gpu);
        assert!(on_gpu.attention_fused(&gpu), "{kind}: wgpu runs the fused attention kernel");
        assert!(
            !on_gpu.clone().with_fused_attention(false).attention_fused(&gpu),
            "the switch forces the reference"
        );
        assert!(!model.attention_fused(&cpu), "flex runs the reference");
        let (a, b) = (losses(model, &items, &cpu), losses(on_gpu, &items, &gpu));
        for (s, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 2e-3 * x.abs(), "{kind} step {s}: reference {x} vs fused {y}");
        }
        assert!(a[2] < a[0] - 0.1, "{kind}: training moves ({a:?})");
    }
}
