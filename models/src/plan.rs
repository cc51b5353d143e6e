//! The position plan: what the positions of one forward need, built once and shared by every
//! layer — the query blocks (bounded by memory and by the encoding's numerically safe block),
//! each block's causal mask (built on the device, no host table) and, for an encoding shared
//! across layers, each block's attention bias (FIRE's MLP and T5's bucketing run once, not once
//! per layer). On CubeCL devices, for the encodings the fused attention kernel handles
//! (`pezoo_encodings::attention::supports`), the plan is one block with no mask and at most a
//! `[heads, seq]` distance-bias table: the kernel never materialises `[seq, seq]`.

use burn::prelude::*;
use pezoo_encodings::{PositionalEncoding, attention};

/// Queries `q0..q0 + nq` attend to keys `0..nk` (indices from the plan's first key: the forward's
/// first token, or position 0 with a KV cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBlock {
    pub q0: usize,
    pub nq: usize,
    pub nk: usize,
}

#[derive(Debug, Clone)]
pub struct PositionPlan {
    /// Absolute position of the first key.
    pub start: usize,
    /// Keys in the forward (with a KV cache: cached + new).
    pub seq: usize,
    /// Keys before the first query (the KV cache's length; 0 without a cache).
    pub past: usize,
    pub blocks: Vec<QueryBlock>,
    /// Per block: `true` above the diagonal (keys after the query), `[1, 1, nq, nk]`.
    masks: Vec<Tensor<4, Bool>>,
    /// Per block, for a bias-class encoding shared across layers: `[1, heads, nq, nk]`.
    biases: Option<Vec<Tensor<4>>>,
    /// Attention runs through the fused kernel (`pezoo_encodings::attention`).
    pub fused: bool,
    /// Fused path, shared encoding: its `[heads, seq]` distance-bias table, built once.
    pub table: Option<Tensor<2>>,
    /// The layers' products, SwiGLU and RMSNorm through `pezoo_encodings::layers`' fused
    /// kernels where the device has them (flex); off = reference tensor ops.
    pub fused_layers: bool,
}

/// `true` where key j lies after query q0 + i: `[1, 1, nq, nk]`, built from two aranges.
fn future_mask(b: QueryBlock, device: &Device) -> Tensor<4, Bool> {
    let q = Tensor::<1, Int>::arange(b.q0 as i64..(b.q0 + b.nq) as i64, device).reshape([1, 1, b.nq, 1]);
    let k = Tensor::<1, Int>::arange(0..b.nk as i64, device).reshape([1, 1, 1, b.nk]);
    k.greater(q)
}

impl PositionPlan {
    /// Plans a forward of `seq` tokens from absolute position `start`, in query blocks of at
    /// most `max_block` (memory) and of the encoding's safe block (HoPE-Hyp, xPos re-centring).
    /// `shared`: the encoding every layer uses, when there is one (its bias is built here).
    /// `fuse`: take the fused kernel where the device and encoding allow it.
    pub fn new(
        start: usize,
        seq: usize,
        max_block: Option<usize>,
        enc: &dyn PositionalEncoding,
        shared: bool,
        fuse: bool,
        device: &Device,
    ) -> Self {
        if fuse && attention::available(device) && attention::supports(enc, device) {
            return Self {
                start,
                seq,
                past: 0,
                blocks: vec![QueryBlock { q0: 0, nq: seq, nk: seq }],
                masks: Vec::new(),
                biases: None,
                fused: true,
                table: if shared { attention::distance_bias(enc, seq, device) } else { None },
                fused_layers: fuse,
            };
        }
        Self::reference(start, 0, seq, max_block, enc, shared, device)
    }

    /// The same plan with the layer ops fused (or not): see [`PositionPlan::fused_layers`].
    pub fn with_fused_layers(mut self, fused: bool) -> Self {
        self.fused_layers = fused;
        self
    }

    /// Plans `new` tokens that continue `past` cached ones from position 0 (generation with a
    /// KV cache): queries `past..past + new` attend to keys `0..past + new`, through the
    /// reference path (a step's few queries gain nothing from the kernel).
    pub fn continuation(
        past: usize,
        new: usize,
        max_block: Option<usize>,
        enc: &dyn PositionalEncoding,
        shared: bool,
        device: &Device,
    ) -> Self {
        Self::reference(0, past, past + new, max_block, enc, shared, device)
    }

    /// Query blocks over queries `past..seq`, each against keys `0..q0 + nq`.
    fn reference(
        start: usize,
        past: usize,
        seq: usize,
        max_block: Option<usize>,
        enc: &dyn PositionalEncoding,
        shared: bool,
        device: &Device,
    ) -> Self {
        let new = seq - past;
        let safe = enc.rotary().and_then(|r| r.query_block());
        let block = [Some(new), safe, max_block].into_iter().flatten().min().unwrap_or(new).max(1);
        let blocks: Vec<QueryBlock> = (past..seq)
            .step_by(block)
            .map(|q0| {
                let nq = (seq - q0).min(block);
                QueryBlock { q0, nq, nk: q0 + nq }
            })
            .collect();
        let masks = blocks.iter().map(|&b| future_mask(b, device)).collect();
        let biases = shared
            .then(|| blocks.iter().map(|&b| block_bias(enc, start, b, device)).collect())
            .and_then(|v: Vec<Option<Tensor<4>>>| v.into_iter().collect::<Option<Vec<_>>>());
        Self { start, seq, past, blocks, masks, biases, fused: false, table: None, fused_layers: false }
    }

    pub fn mask(&self, block: usize) -> Tensor<4, Bool> {
        self.masks[block].clone()
    }

    /// The block's bias: the shared one, else `enc`'s (a per-layer encoding), else none.
    pub fn bias(&self, block: usize, enc: &dyn PositionalEncoding, device: &Device) -> Option<Tensor<4>> {
        match &self.biases {
            Some(b) => Some(b[block].clone()),
            None => block_bias(enc, self.start, self.blocks[block], device),
        }
    }
}

fn block_bias(
    enc: &dyn PositionalEncoding,
    start: usize,
    b: QueryBlock,
    device: &Device,
) -> Option<Tensor<4>> {
    enc.attention_bias(start + b.q0..start + b.q0 + b.nq, start..start + b.nk, device)
        .map(|t| t.unsqueeze_dim::<4>(0))
}
