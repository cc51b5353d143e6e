//! The small decoder-only LM.

use burn::nn::Initializer;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Gelu, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;
use pezoo_encodings::{Encoding, check_positions};

use crate::attention::{Attention, LayerCapture};
use crate::config::{MlpKind, ModelConfig, ModelError};

#[derive(Module, Debug)]
pub struct Mlp {
    up: Linear,
    gate: Option<Linear>,
    down: Linear,
    gelu: Gelu,
}

impl Mlp {
    fn new(c: &ModelConfig, device: &Device) -> Self {
        let (d, h) = (c.d_model, c.mlp_hidden());
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Self {
            up: lin(d, h),
            gate: (c.mlp == MlpKind::Swiglu).then(|| lin(d, h)),
            down: lin(h, d),
            gelu: Gelu::new(),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let up = self.up.forward(x.clone());
        let hidden = match &self.gate {
            Some(g) => silu(g.forward(x)) * up,
            None => self.gelu.forward(up),
        };
        self.down.forward(hidden)
    }
}

#[derive(Module, Debug)]
pub struct Block {
    norm1: RmsNorm,
    attn: Attention,
    norm2: RmsNorm,
    mlp: Mlp,
}

/// What a forward pass returns besides the logits, when asked (analysis): one entry per layer.
#[derive(Debug, Default)]
pub struct Captured {
    pub layers: Vec<LayerCapture>,
}

#[derive(Module, Debug)]
pub struct Lm {
    embed: Embedding,
    encoding: Encoding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Option<Linear>,
    #[module(skip)]
    config: ModelConfig,
}

impl Lm {
    /// Validates the config and builds the model on `device`.
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let c = config;
        let norm = || RmsNormConfig::new(c.d_model).with_epsilon(c.norm_eps).init(device);
        let blocks = (0..c.n_layers)
            .map(|_| Block {
                norm1: norm(),
                attn: Attention::new(c.d_model, c.n_heads, device),
                norm2: norm(),
                mlp: Mlp::new(c, device),
            })
            .collect();
        Ok(Self {
            // GPT-2's N(0, 0.02): with tied embeddings the initial logits stay near zero
            // (initial loss ≈ ln vocab) instead of N(0, 1)'s ≈ √d-sized logits.
            embed: EmbeddingConfig::new(c.vocab_size, c.d_model)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device),
            encoding: c.encoding.init(&c.encoding_context(), device)?,
            blocks,
            norm: norm(),
            head: (!c.tie_embeddings)
                .then(|| LinearConfig::new(c.d_model, c.vocab_size).with_bias(false).init(device)),
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// Checks that `len` positions from `start` are valid for this model's encoding.
    pub fn check_len(&self, start: usize, len: usize) -> Result<(), ModelError> {
        Ok(check_positions(self.encoding.as_dyn(), start + len)?)
    }

    /// `tokens: [batch, seq]` starting at absolute position `start` → logits `[batch, seq, vocab]`.
    /// `max_block` bounds the query block of attention (memory at long lengths).
    pub fn forward_full(
        &self,
        tokens: Tensor<2, Int>,
        start: usize,
        max_block: Option<usize>,
        capture: bool,
    ) -> (Tensor<3>, Captured) {
        let [_, s] = tokens.dims();
        let device = tokens.device();
        let enc = self.encoding.as_dyn();
        let mut x = self.embed.forward(tokens); // [batch, seq, d_model]
        if let Some(pe) = enc.position_embedding(start..start + s, &device) {
            x = x + pe.unsqueeze_dim::<3>(0);
        }
        let mut captured = Captured::default();
        for blk in &self.blocks {
            let (a, p) = blk.attn.forward(blk.norm1.forward(x.clone()), enc, start, max_block, capture);
            x = x + a;
            x = x.clone() + blk.mlp.forward(blk.norm2.forward(x));
            captured.layers.extend(p);
        }
        let x = self.norm.forward(x);
        let logits = match &self.head {
            Some(h) => h.forward(x),
            None => x.matmul(self.embed.weight.val().transpose().unsqueeze_dim::<3>(0)),
        };
        (logits, captured)
    }

    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.forward_full(tokens, 0, None, false).0
    }

    /// Mean next-token cross-entropy of `inputs → targets` (`[batch, seq]` each), and the logits
    /// flattened to `[batch·seq, vocab]`.
    pub fn loss(&self, inputs: Tensor<2, Int>, targets: Tensor<2, Int>) -> (Tensor<1>, Tensor<2>) {
        let [b, s] = inputs.dims();
        let logits = self.forward(inputs).reshape([b * s, self.config.vocab_size]);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), targets.reshape([b * s]));
        (loss, logits)
    }
}
