//! The model configuration (TOML), validated with one-line errors naming the field.

use pezoo_encodings::{EncodingConfig, EncodingContext};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("model.{field}: {message}")]
    Field { field: &'static str, message: String },
    #[error(transparent)]
    Encoding(#[from] pezoo_encodings::ConfigError),
}

fn field(field: &'static str, message: impl Into<String>) -> ModelError {
    ModelError::Field { field, message: message.into() }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// down(silu(gate(x)) · up(x)), hidden 8d/3 by default.
    #[default]
    Swiglu,
    /// down(gelu(up(x))), hidden 4d by default.
    Gelu,
}

fn default_vocab() -> usize {
    crate::BYTE_VOCAB
}
fn default_d() -> usize {
    128
}
fn default_layers() -> usize {
    4
}
fn default_heads() -> usize {
    4
}
fn default_len() -> usize {
    256
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn default_encoding() -> EncodingConfig {
    EncodingConfig::default_for("rope").expect("rope is registered")
}

/// A decoder-only LM: embedding, `n_layers` pre-norm blocks (RMSNorm, causal MHA with the
/// configured encoding, SwiGLU/GELU MLP), final norm, tied or untied head. Linear layers have no
/// bias (as in Llama and the PyTorch baseline in `shared/bench`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_d")]
    pub d_model: usize,
    #[serde(default = "default_layers")]
    pub n_layers: usize,
    #[serde(default = "default_heads")]
    pub n_heads: usize,
    #[serde(default)]
    pub mlp: MlpKind,
    /// MLP hidden width; default ⌊8d/3⌋ (SwiGLU) or 4d (GELU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_hidden: Option<usize>,
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    /// Training length L (the encodings' `train_len` default).
    #[serde(default = "default_len")]
    pub max_seq_len: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_encoding")]
    pub encoding: EncodingConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    pub fn mlp_hidden(&self) -> usize {
        self.mlp_hidden.unwrap_or(match self.mlp {
            MlpKind::Swiglu => 8 * self.d_model / 3,
            MlpKind::Gelu => 4 * self.d_model,
        })
    }

    pub fn encoding_context(&self) -> EncodingContext {
        EncodingContext {
            head_dim: self.head_dim(),
            n_heads: self.n_heads,
            d_model: self.d_model,
            train_len: Some(self.max_seq_len),
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(field(name, "0 is out of range (allowed: ≥ 1)"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(field(
                "n_heads",
                format!(
                    "{} does not divide d_model = {} (allowed: a divisor of d_model)",
                    self.n_heads, self.d_model
                ),
            ));
        }
        if self.mlp_hidden == Some(0) {
            return Err(field("mlp_hidden", "0 is out of range (allowed: ≥ 1)"));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(field(
                "norm_eps",
                format!("{} is out of range (allowed: 0 < eps < 1)", self.norm_eps),
            ));
        }
        self.encoding.validate(&self.encoding_context())?;
        Ok(())
    }

    /// Parameter count (exact for the configured shapes).
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        let h = self.mlp_hidden();
        let mlp = match self.mlp {
            MlpKind::Swiglu => 3 * d * h,
            MlpKind::Gelu => 2 * d * h,
        };
        let block = 4 * d * d + mlp + 2 * d;
        let head = if self.tie_embeddings { 0 } else { d * self.vocab_size };
        self.vocab_size * d + self.n_layers * block + d + head
    }
}
