//! Scoring a model on text: the mean next-token loss per position over non-overlapping windows
//! (training's validation and `zoo eval`'s perplexity).

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::{Lm, LmBatcher, SequentialWindows};

/// Mean next-token cross-entropy (nats) over up to `max_windows` non-overlapping windows.
pub fn mean_loss(model: &Lm, tokens: &Arc<Vec<u32>>, seq: usize, max_windows: usize, device: &Device) -> f64 {
    let (per_pos, n) = position_losses(model, tokens, seq, max_windows, None, device);
    if n == 0 { f64::NAN } else { per_pos.iter().sum::<f64>() / per_pos.len() as f64 }
}

/// Mean loss at each position 0..seq over the windows, and the number of windows used.
pub fn position_losses(
    model: &Lm,
    tokens: &Arc<Vec<u32>>,
    seq: usize,
    max_windows: usize,
    query_block: Option<usize>,
    device: &Device,
) -> (Vec<f64>, usize) {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let windows = SequentialWindows::new(tokens.clone(), seq, max_windows);
    let mut sums = vec![0f64; seq];
    let per_batch = (8 * 256 / seq).max(1);
    let items: Vec<Vec<u32>> = (0..windows.len()).map(|i| windows.get(i).expect("in range")).collect();
    for chunk in items.chunks(per_batch) {
        let batch = LmBatcher.batch(chunk.to_vec(), device);
        let [b, s] = batch.targets.dims();
        let (logits, _) = model.forward_full(batch.inputs, 0, query_block, false);
        let logp = log_softmax(logits, 2); // [b, s, vocab]
        let nll = logp.gather(2, batch.targets.reshape([b, s, 1])).neg().reshape([b, s]);
        let v = nll.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 losses");
        for (i, x) in v.iter().enumerate() {
            sums[i % s] += *x as f64;
        }
    }
    let n = items.len();
    (sums.into_iter().map(|x| x / n.max(1) as f64).collect(), n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BYTE_VOCAB, ModelConfig};
    use burn::module::{Module, ModuleMapper, Param};

    /// Zeroes every float parameter: zero embeddings and norm gains give zero logits.
    struct Zero;
    impl ModuleMapper for Zero {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.zeros_like())
        }
    }

    /// A model with zero logits predicts uniformly: loss ln(vocab) at every position, whatever
    /// the text, the window count or the encoding — a perplexity computable by hand.
    #[test]
    fn a_uniform_model_has_perplexity_equal_to_the_vocabulary() {
        let device = Device::flex();
        for kind in ["rope", "alibi"] {
            let toml = format!(
                "d_model = 16\nn_layers = 1\nn_heads = 2\nmax_seq_len = 32\n[encoding]\nkind = \"{kind}\"\n"
            );
            let cfg: ModelConfig = toml::from_str(&toml).unwrap();
            let model = Lm::new(&cfg, &device).unwrap().map(&mut Zero);
            let tokens = Arc::new((0..200u32).map(|i| (i * 37) % 256).collect::<Vec<u32>>());
            let (per_pos, n) = position_losses(&model, &tokens, 32, 4, Some(8), &device);
            assert_eq!((per_pos.len(), n), (32, 4));
            let want = (BYTE_VOCAB as f64).ln();
            assert!(per_pos.iter().all(|l| (l - want).abs() < 1e-5), "{kind}: {per_pos:?} vs {want}");
            let ppl = mean_loss(&model, &tokens, 32, 100, &device).exp();
            assert!((ppl - BYTE_VOCAB as f64).abs() < 1e-2, "{kind}: ppl {ppl}");
        }
    }
}
