//! Token windows and batches for Burn's data loaders.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;

use crate::corpus::SplitMix;
use crate::tokenizer::Tokenizer;

/// A token stream and the UTF-8 bytes of text each token stands for (0 for separators), so that
/// a loss over any stretch of it converts to bits per byte.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub bytes: Vec<u32>,
}

impl Tokens {
    /// Documents tokenised and joined by the tokenizer's document separator.
    pub fn from_docs(docs: &[String], tok: &Tokenizer) -> Self {
        let mut out = Self::default();
        for d in docs {
            let (ids, bytes) = tok.encode_with_bytes(d);
            out.ids.extend(ids);
            out.bytes.extend(bytes);
            out.ids.push(tok.eos());
            out.bytes.push(0);
        }
        out
    }
}

/// Documents tokenised and joined by the tokenizer's document separator (ids only).
pub fn token_stream(docs: &[String], tok: &Tokenizer) -> Vec<u32> {
    Tokens::from_docs(docs, tok).ids
}

/// Start of window `index` of draw `epoch`: uniform over the `n_starts` possible starts, a pure
/// function of (seed, epoch, index). Training numbers its windows by their global sample index
/// over the whole run (epoch 0), so every step draws fresh windows, a resumed run draws exactly
/// the windows an uninterrupted one would, and the data does not depend on checkpoint cadence.
pub fn window_start(seed: u64, epoch: usize, index: usize, n_starts: usize) -> usize {
    let epoch_key = SplitMix(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
    let mut rng = SplitMix(epoch_key ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    rng.below(n_starts)
}

/// `len` windows of `seq_len + 1` tokens at seeded uniform offsets of the stream; window i of
/// epoch e is [`window_start`]`(seed, e, i, …)`.
#[derive(Debug, Clone)]
pub struct RandomWindows {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    len: usize,
    seed: u64,
    epoch: usize,
}

impl RandomWindows {
    pub fn new(tokens: Arc<Vec<u32>>, seq_len: usize, len: usize, seed: u64) -> Self {
        assert!(tokens.len() > seq_len + 1, "token stream shorter than one window");
        Self { tokens, seq_len, len, seed, epoch: 0 }
    }

    /// The same windows' draw for another epoch.
    pub fn with_epoch(mut self, epoch: usize) -> Self {
        self.epoch = epoch;
        self
    }

    /// Number of distinct window starts (0 ..= len − (seq_len + 1)).
    pub fn n_starts(&self) -> usize {
        self.tokens.len() - self.seq_len
    }

    pub fn start(&self, index: usize) -> usize {
        window_start(self.seed, self.epoch, index, self.n_starts())
    }
}

impl Dataset<Vec<u32>> for RandomWindows {
    fn get(&self, index: usize) -> Result<Vec<u32>, DatasetError> {
        assert!(index < self.len, "index out of bounds for RandomWindows: {index} >= {}", self.len);
        let start = self.start(index);
        Ok(self.tokens[start..start + self.seq_len + 1].to_vec())
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// Non-overlapping windows of `seq_len + 1` tokens from the start of the stream (evaluation).
#[derive(Debug, Clone)]
pub struct SequentialWindows {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    len: usize,
}

impl SequentialWindows {
    pub fn new(tokens: Arc<Vec<u32>>, seq_len: usize, max_windows: usize) -> Self {
        let len = ((tokens.len().saturating_sub(1)) / seq_len).min(max_windows);
        Self { tokens, seq_len, len }
    }
}

impl Dataset<Vec<u32>> for SequentialWindows {
    fn get(&self, index: usize) -> Result<Vec<u32>, DatasetError> {
        assert!(index < self.len, "index out of bounds for SequentialWindows: {index} >= {}", self.len);
        Ok(self.tokens[index * self.seq_len..(index + 1) * self.seq_len + 1].to_vec())
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[derive(Debug, Clone)]
pub struct LmBatch {
    /// `[batch, seq]`
    pub inputs: Tensor<2, Int>,
    /// `[batch, seq]`, the inputs shifted by one
    pub targets: Tensor<2, Int>,
    /// Micro-batches the training step splits `batch` into (gradient accumulation); 1 = none.
    pub micro_batches: usize,
    /// The weight of this batch's mean loss in its optimizer step's gradient: 1 on one device;
    /// with data parallelism, the batch's share of the step's sequences.
    pub loss_weight: f64,
}

#[derive(Debug, Clone, Default)]
pub struct LmBatcher;

impl Batcher<Vec<u32>, LmBatch> for LmBatcher {
    fn batch(&self, items: Vec<Vec<u32>>, device: &Device) -> LmBatch {
        let (b, s) = (items.len(), items[0].len() - 1);
        let mut inp = Vec::with_capacity(b * s);
        let mut tgt = Vec::with_capacity(b * s);
        for w in &items {
            inp.extend(w[..s].iter().map(|&t| t as i64));
            tgt.extend(w[1..].iter().map(|&t| t as i64));
        }
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inp, [b, s]), device),
            targets: Tensor::from_data(TensorData::new(tgt, [b, s]), device),
            micro_batches: 1,
            loss_weight: 1.0,
        }
    }
}
