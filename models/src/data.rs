//! Token windows and batches for Burn's data loaders.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;

use crate::corpus::SplitMix;
use crate::tokenizer::{ByteTokenizer, EOS};

/// Documents tokenised and joined with EOS separators.
pub fn token_stream(docs: &[String]) -> Vec<u32> {
    let tok = ByteTokenizer;
    let mut out = Vec::with_capacity(docs.iter().map(|d| d.len() + 1).sum());
    for d in docs {
        out.extend(tok.encode(d));
        out.push(EOS);
    }
    out
}

/// `len` windows of `seq_len + 1` tokens at seeded pseudo-random offsets of the stream
/// (window i is the same on every run with the same seed).
#[derive(Debug, Clone)]
pub struct RandomWindows {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    len: usize,
    seed: u64,
}

impl RandomWindows {
    pub fn new(tokens: Arc<Vec<u32>>, seq_len: usize, len: usize, seed: u64) -> Self {
        assert!(tokens.len() > seq_len + 1, "token stream shorter than one window");
        Self { tokens, seq_len, len, seed }
    }
}

impl Dataset<Vec<u32>> for RandomWindows {
    fn get(&self, index: usize) -> Result<Vec<u32>, DatasetError> {
        assert!(index < self.len, "index out of bounds for RandomWindows: {index} >= {}", self.len);
        let mut rng = SplitMix(self.seed ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let start = rng.below(self.tokens.len() - self.seq_len - 1);
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
        }
    }
}
