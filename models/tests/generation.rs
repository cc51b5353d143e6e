//! Generation with a KV cache continues positions from the cache's length for every encoding:
//! its logits equal those of recomputing the whole sequence at each step.

use burn::module::Module;
use burn::prelude::*;
use pezoo_encodings::EncodingConfig;
use pezoo_models::{KvCache, Lm, ModelConfig};

mod common;
use common::Randomise;

#[test]
fn cached_generation_equals_recomputing_the_sequence_for_every_encoding() {
    let device = Device::flex();
    let mut rng = pezoo_models::corpus::SplitMix(3);
    let tokens: Vec<i64> = (0..2 * 22).map(|_| rng.below(256) as i64).collect();
    let prefix = |n: usize| {
        let v: Vec<i64> = (0..2).flat_map(|b| tokens[b * 22..b * 22 + n].to_vec()).collect();
        Tensor::<2, Int>::from_data(TensorData::new(v, [2, n]), &device)
    };
    for &kind in EncodingConfig::KINDS {
        let mut c: ModelConfig =
            toml::from_str("d_model = 24\nn_layers = 2\nn_heads = 2\nmax_seq_len = 24").unwrap();
        c.encoding = EncodingConfig::default_for(kind).unwrap();
        device.seed(6);
        let model = Lm::new(&c, &device).unwrap().map(&mut Randomise(0));
        // query blocks of 2: the prompt and the chunk of 5 are attended in several blocks
        let mut cache = KvCache::with_max_block(2);
        let mut len = 0;
        // a prompt of 9, single tokens, then a chunk of 5 and single tokens again: 22 positions
        for step in [9usize, 1, 1, 1, 5, 1, 1, 1, 1, 1] {
            let new = prefix(len + step).narrow(1, len, step);
            let cached = model.forward_cached(new, &mut cache).unwrap(); // [2, step, vocab]
            len += step;
            assert_eq!(cache.len(), len);
            let (full, _) = model.forward_full(prefix(len), 0, None, false);
            let want =
                full.narrow(1, len - step, step).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let got = cached.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                scale > 0.1 && err <= 1e-5 * scale,
                "{kind} at {len}: cached logits differ by {err} (scale {scale})"
            );
        }
    }
}

#[test]
fn a_cache_past_the_encodings_table_is_an_error() {
    let device = Device::flex();
    let mut c: ModelConfig =
        toml::from_str("d_model = 16\nn_layers = 1\nn_heads = 2\nmax_seq_len = 8").unwrap();
    c.encoding = EncodingConfig::default_for("learned").unwrap();
    let model = Lm::new(&c, &device).unwrap();
    let mut cache = KvCache::default();
    let t = |n: usize| Tensor::<2, Int>::from_data(TensorData::new(vec![1i64; n], [1, n]), &device);
    assert!(model.forward_cached(t(8), &mut cache).is_ok());
    assert!(model.forward_cached(t(1), &mut cache).is_err(), "position 8 of an 8-position table");
    assert_eq!(cache.len(), 8, "a refused step leaves the cache as it was");
}
