//! The small decoder-only LM.

use burn::module::ParamGroup;
use burn::nn::Initializer;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Gelu, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use pezoo_encodings::{Encoding, check_positions, layers};

use crate::attention::{Attention, LayerCapture};
use crate::config::{MlpKind, ModelConfig, ModelError};
use crate::layers::{linear, rms_norm};
use crate::plan::PositionPlan;

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

    fn forward(&self, x: Tensor<3>, fused: bool) -> Tensor<3> {
        let up = linear(&self.up, x.clone(), fused);
        let hidden = match &self.gate {
            Some(g) => layers::swiglu(linear(g, x, fused), up, fused),
            None => self.gelu.forward(up),
        };
        linear(&self.down, hidden, fused)
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
    /// One encoding shared by every layer, or one per layer (`EncodingConfig::per_layer`).
    encodings: Vec<Encoding>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Option<Linear>,
    #[module(skip)]
    config: ModelConfig,
    /// Global gradient-norm clip applied by the training step; 0 = none.
    #[module(skip)]
    pub(crate) grad_clip: f64,
    /// Attention and the layer ops (products, SwiGLU, RMSNorm) through the fused kernels where
    /// the device and encoding allow (default); off = the reference tensor ops everywhere
    /// (comparisons, debugging).
    #[module(skip)]
    fused_attention: bool,
}

/// Each layer's un-encoded keys and values `[batch, heads, len, head_dim]` so far, for
/// [`Lm::forward_cached`]. Positions are implied: the cache holds tokens `0..len`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
    /// Longest query block of a step (a long prompt is attended in blocks).
    max_block: usize,
}

impl Default for KvCache {
    fn default() -> Self {
        Self { layers: Vec::new(), len: 0, max_block: 512 }
    }
}

impl KvCache {
    /// A cache whose steps attend in query blocks of at most `max_block` (≥ 1).
    pub fn with_max_block(max_block: usize) -> Self {
        Self { max_block: max_block.max(1), ..Self::default() }
    }

    /// Tokens seen so far (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Standard deviation of the token embeddings at initialisation (GPT-2's).
pub const EMBED_STD: f64 = 0.02;

/// Parameters that take weight decay: the weight matrices and the embeddings (module paths;
/// `Lm::decay_group`). Norm gains, biases and every encoding parameter take none.
pub const DECAY_PATTERN: &str =
    r"^(embed\.weight|head\.weight|blocks\.\d+\.(attn\.(qkv|out)|mlp\.(up|gate|down))\.weight)$";

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
        let n_enc = if c.encoding.per_layer() { c.n_layers } else { 1 };
        let encodings = (0..n_enc)
            .map(|_| c.encoding.init(&c.encoding_context(), device))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            // GPT-2's N(0, 0.02) for every encoding: with tied embeddings the initial logits
            // stay near zero (initial loss ≈ ln vocab).
            embed: EmbeddingConfig::new(c.vocab_size, c.d_model)
                .with_initializer(Initializer::Normal { mean: 0.0, std: EMBED_STD })
                .init(device),
            encodings,
            blocks,
            norm: norm(),
            head: (!c.tie_embeddings)
                .then(|| LinearConfig::new(c.d_model, c.vocab_size).with_bias(false).init(device)),
            config: c.clone(),
            grad_clip: 0.0,
            fused_attention: true,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The encoding (the first layer's, when each layer has its own).
    pub fn encoding(&self) -> &Encoding {
        &self.encodings[0]
    }

    /// Layer `i`'s encoding.
    pub fn layer_encoding(&self, i: usize) -> &Encoding {
        &self.encodings[i.min(self.encodings.len() - 1)]
    }

    /// The training step clips the global gradient norm to `max_norm` (0 = no clip).
    pub fn with_grad_clip(mut self, max_norm: f64) -> Self {
        self.grad_clip = max_norm;
        self
    }

    /// Whether attention may use the fused kernel (default true; see [`PositionPlan`]).
    pub fn with_fused_attention(mut self, fused: bool) -> Self {
        self.fused_attention = fused;
        self
    }

    /// Whether a forward of this model on `device` runs the fused attention kernel.
    pub fn attention_fused(&self, device: &Device) -> bool {
        self.fused_attention
            && pezoo_encodings::attention::available(device)
            && pezoo_encodings::attention::supports(self.encoding().as_dyn(), device)
    }

    /// The compute path a forward on `device` runs, as the banner and the report name it:
    /// `fused attention` (one CubeCL kernel with the encoding inside), `fused rotary` (the
    /// rotary kernel, reference attention) or `reference` (plain tensor ops).
    pub fn compute_path(&self, device: &Device) -> &'static str {
        if self.attention_fused(device) {
            "fused attention"
        } else if self.encoding().as_dyn().rotary().is_some()
            && pezoo_encodings::rotary::fused_available(device)
        {
            "fused rotary"
        } else {
            "reference"
        }
    }

    /// The parameters that take weight decay ([`DECAY_PATTERN`]).
    pub fn decay_group() -> ParamGroup {
        ParamGroup::from_regex(DECAY_PATTERN).expect("DECAY_PATTERN is a valid regex")
    }

    /// Checks that `len` positions from `start` are valid for this model's encoding.
    pub fn check_len(&self, start: usize, len: usize) -> Result<(), ModelError> {
        Ok(check_positions(self.encoding().as_dyn(), start + len)?)
    }

    /// The first block's input: token embeddings plus the position embedding of an
    /// embedding-class encoding, `[batch, seq, d_model]`. When the encoding states the content
    /// RMS it was designed beside (sinusoidal: 1, Vaswani et al.'s √d-scaled embeddings), its
    /// table is scaled by `EMBED_STD / content_rms`: the paper's content-to-position ratio at the
    /// scale every encoding's residual stream starts at (embeddings and head stay as for all).
    pub fn input_embedding(&self, tokens: Tensor<2, Int>, start: usize) -> Tensor<3> {
        let [_, s] = tokens.dims();
        let device = tokens.device();
        let enc = self.encoding().as_dyn();
        let x = self.embed.forward(tokens); // [batch, seq, d_model]
        match enc.position_embedding(start..start + s, &device) {
            Some(pe) => {
                let pe = match enc.content_rms() {
                    Some(rms) => pe.mul_scalar(EMBED_STD / rms),
                    None => pe,
                };
                x + pe.unsqueeze_dim::<3>(0)
            }
            None => x,
        }
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
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let enc = self.encoding().as_dyn();
        let mut x = self.input_embedding(tokens, start);
        let fuse = self.fused_attention && !capture;
        let plan = PositionPlan::new(start, s, max_block, enc, self.encodings.len() == 1, fuse, &device)
            .with_fused_layers(self.fused_attention);
        let f = plan.fused_layers;
        let mut captured = Captured::default();
        for (i, blk) in self.blocks.iter().enumerate() {
            let enc = self.layer_encoding(i).as_dyn();
            let (a, p) = blk.attn.forward(rms_norm(&blk.norm1, x.clone(), f), enc, &plan, capture, None);
            x = x + a;
            x = x.clone() + blk.mlp.forward(rms_norm(&blk.norm2, x, f), f);
            captured.layers.extend(p);
        }
        (self.logits(rms_norm(&self.norm, x, f), b, s), captured)
    }

    /// Generation with a KV cache: `tokens: [batch, new]` continue the `cache.len()` tokens
    /// already seen (positions `cache.len()..`) → logits `[batch, new, vocab]`; the cache grows
    /// by `new`. Equal to [`Lm::forward_full`] on the whole sequence, at the new positions
    /// (except with dynamic NTK scaling, whose angles depend on the current length).
    pub fn forward_cached(
        &self,
        tokens: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>, ModelError> {
        let [b, s] = tokens.dims();
        let past = cache.len;
        self.check_len(0, past + s)?;
        let device = tokens.device();
        let enc = self.encoding().as_dyn();
        let mut x = self.input_embedding(tokens, past);
        let plan = PositionPlan::continuation(
            past,
            s,
            Some(cache.max_block),
            enc,
            self.encodings.len() == 1,
            &device,
        )
        .with_fused_layers(self.fused_attention);
        let f = plan.fused_layers;
        cache.layers.resize(self.blocks.len(), None);
        for (i, (blk, kv)) in self.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            let enc = self.layer_encoding(i).as_dyn();
            let (a, _) = blk.attn.forward(rms_norm(&blk.norm1, x.clone(), f), enc, &plan, false, Some(kv));
            x = x + a;
            x = x.clone() + blk.mlp.forward(rms_norm(&blk.norm2, x, f), f);
        }
        cache.len += s;
        Ok(self.logits(rms_norm(&self.norm, x, f), b, s))
    }

    fn logits(&self, x: Tensor<3>, b: usize, s: usize) -> Tensor<3> {
        let (d, f) = (self.config.d_model, self.fused_attention);
        match &self.head {
            Some(h) => linear(h, x, f),
            // Tied head as one 2-D matmul: [b·s, d] × [d, vocab] (the embedding read transposed).
            None => layers::matmul(x.reshape([b * s, d]), self.embed.weight.val().transpose(), f).reshape([
                b,
                s,
                self.config.vocab_size,
            ]),
        }
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
