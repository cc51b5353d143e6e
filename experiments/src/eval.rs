//! Evaluation helpers shared by the commands.

use burn::prelude::*;
use pezoo_models::{Lm, LmBatcher, SequentialWindows};

/// Mean next-token cross-entropy (nats) over up to `max_windows` non-overlapping windows.
pub fn mean_loss(
    model: &Lm,
    tokens: &std::sync::Arc<Vec<u32>>,
    seq: usize,
    max_windows: usize,
    device: &Device,
) -> f64 {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let windows = SequentialWindows::new(tokens.clone(), seq, max_windows);
    let (mut total, mut n) = (0.0, 0usize);
    let items: Vec<Vec<u32>> = (0..windows.len()).map(|i| windows.get(i).expect("in range")).collect();
    for chunk in items.chunks(8) {
        let batch = LmBatcher.batch(chunk.to_vec(), device);
        let (loss, _) = model.loss(batch.inputs, batch.targets);
        total += loss.into_scalar::<f32>() as f64 * chunk.len() as f64;
        n += chunk.len();
    }
    total / n.max(1) as f64
}
