//! The one registry of encodings. Adding an encoding = one module implementing [`EncodingKind`]
//! plus one line in [`registry!`] below; no model code changes.

use std::fmt::Debug;
use std::ops::Range;

use burn::prelude::*;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{ConfigError, Result};
use crate::inspect::Inspection;
use crate::rotary::RotaryEncoding;

/// The shapes an encoding is built for (from the model config, or `zoo inspect` flags).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EncodingContext {
    /// Per-head dimension d.
    pub head_dim: usize,
    /// Number of attention heads H.
    pub n_heads: usize,
    /// Model width (embedding-class encodings add a `[seq, d_model]` table).
    pub d_model: usize,
    /// Training length L, used by encodings whose defaults depend on it (hope-hf, scaled ropes).
    pub train_len: Option<usize>,
}

impl EncodingContext {
    pub fn new(head_dim: usize, n_heads: usize, train_len: Option<usize>) -> Self {
        Self { head_dim, n_heads, d_model: head_dim * n_heads, train_len }
    }

    /// The training length, or an error naming `field` when neither config nor context has one.
    pub fn require_train_len(&self, explicit: Option<usize>, field: &str) -> Result<usize> {
        match explicit.or(self.train_len) {
            Some(l) if l >= 2 => Ok(l),
            Some(l) => Err(ConfigError::new(field, format!("{l} is out of range (allowed: ≥ 2)"))),
            None => Err(ConfigError::new(
                field,
                "is required (the training length L, ≥ 2; set it in the encoding or pass --train-len)",
            )),
        }
    }
}

/// How an encoding enters attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingClass {
    /// A per-pair 2×2 map on q and k.
    Rotary,
    /// A per-head additive bias on the attention logits.
    Bias,
    /// A vector added to the token embeddings (or nothing, for NoPE).
    Embedding,
}

/// A configuration type for one kind of encoding.
pub trait EncodingKind: Debug + Clone + Default + PartialEq + Serialize + DeserializeOwned {
    /// The `kind = "…"` tag.
    const KIND: &'static str;
    /// One line for listings.
    const SUMMARY: &'static str;
    /// The initialised (possibly learnable) encoding.
    type Module: PositionalEncoding;
    /// Checks the config against the shapes, without allocating tensors.
    fn validate(&self, ctx: &EncodingContext) -> Result<()>;
    /// Validates, then builds the module on `device`.
    fn init(&self, ctx: &EncodingContext, device: &Device) -> Result<Self::Module>;
    /// One set of parameters per layer (as the encoding's paper does), rather than one shared by
    /// every layer. Each module's doc says which its paper uses.
    const PER_LAYER: bool = false;
}

/// What an attention layer asks of an encoding. Each method has a no-op default, so an
/// encoding implements only what its class does.
pub trait PositionalEncoding: Debug + Send + Sync {
    fn class(&self) -> EncodingClass;

    /// Rotary class: the per-pair map applied to q and k.
    fn rotary(&self) -> Option<&RotaryEncoding> {
        None
    }

    /// Bias class: logits bias `[heads, queries, keys]` for absolute query and key positions.
    fn attention_bias(
        &self,
        _queries: Range<usize>,
        _keys: Range<usize>,
        _device: &Device,
    ) -> Option<Tensor<3>> {
        None
    }

    /// Bias class: whether the bias depends on the distance m − n only (not on m itself), so
    /// fused attention can read it from a `[heads, seq]` table ([`crate::attention`]).
    fn bias_by_distance(&self) -> bool {
        false
    }

    /// Bias class, FIRE: the module, whose MLP the fused kernel evaluates per score (its bias
    /// depends on the query position too, so no distance table holds it).
    fn fire(&self) -> Option<&crate::bias::fire::Fire> {
        None
    }

    /// Embedding class: `[positions, d_model]` added to the token embeddings.
    fn position_embedding(&self, _positions: Range<usize>, _device: &Device) -> Option<Tensor<2>> {
        None
    }

    /// The RMS of the token embeddings this encoding's position table was designed to be added
    /// to; the model rescales the table to its own embedding scale, keeping the ratio. `None` =
    /// added as is (e.g. a learned table, initialised at the embeddings' scale).
    fn content_rms(&self) -> Option<f64> {
        None
    }

    /// Hard limit on positions (learned absolute tables); `None` = unbounded.
    fn max_positions(&self) -> Option<usize> {
        None
    }

    /// What the encoding does at the given query–key distances (see [`Inspection`]).
    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection;
}

/// Checks that a sequence of `len` positions fits the encoding, with a one-line error.
pub fn check_positions(enc: &dyn PositionalEncoding, len: usize) -> Result<()> {
    match enc.max_positions() {
        Some(max) if len > max => Err(ConfigError::new(
            "max_len",
            format!("sequence of {len} positions exceeds the learned table (allowed: ≤ {max})"),
        )),
        _ => Ok(()),
    }
}

macro_rules! registry {
    ($($name:literal => $variant:ident($cfg:ty, $module:ty)),* $(,)?) => {
        /// Any encoding's configuration, tagged by `kind` in TOML/JSON.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum EncodingConfig {
            $( #[serde(rename = $name)] $variant($cfg), )*
        }

        /// Any initialised encoding; a Burn module (learnable parameters are `Param`s).
        /// One (or one per layer) per model, so the size difference between variants does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Encoding {
            $( $variant($module), )*
        }

        impl EncodingConfig {
            /// Every registered kind, in registry order.
            pub const KINDS: &'static [&'static str] = &[$($name),*];

            /// `(kind, summary)` for listings.
            pub fn catalogue() -> Vec<(&'static str, &'static str)> {
                vec![$( ($name, <$cfg as EncodingKind>::SUMMARY) ),*]
            }

            pub fn kind(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )* }
            }

            /// The default configuration of a kind.
            pub fn default_for(kind: &str) -> Result<Self> {
                match kind {
                    $( $name => Ok(Self::$variant(<$cfg>::default())), )*
                    other => Err(unknown_kind(other)),
                }
            }

            pub fn validate(&self, ctx: &EncodingContext) -> Result<()> {
                match self { $( Self::$variant(c) => c.validate(ctx), )* }
            }

            /// Whether a model holds one instance per layer ([`EncodingKind::PER_LAYER`]).
            pub fn per_layer(&self) -> bool {
                match self { $( Self::$variant(_) => <$cfg as EncodingKind>::PER_LAYER, )* }
            }

            pub fn init(&self, ctx: &EncodingContext, device: &Device) -> Result<Encoding> {
                match self { $( Self::$variant(c) => c.init(ctx, device).map(Encoding::$variant), )* }
            }
        }

        impl Encoding {
            /// The encoding behind the interface the attention layer uses.
            pub fn as_dyn(&self) -> &dyn PositionalEncoding {
                match self { $( Self::$variant(m) => m, )* }
            }
        }
    };
}

use crate::{bias, embedding, rotary};

registry! {
    "nope" => Nope(embedding::nope::NopeConfig, embedding::nope::Nope),
    "sinusoidal" => Sinusoidal(embedding::sinusoidal::SinusoidalConfig, embedding::sinusoidal::Sinusoidal),
    "learned" => Learned(embedding::learned::LearnedConfig, embedding::learned::LearnedAbsolute),
    "rope" => Rope(rotary::rope::RopeConfig, RotaryEncoding),
    "p-rope" => PRope(rotary::p_rope::PRopeConfig, RotaryEncoding),
    "hope-hf" => HopeHf(rotary::hope_hf::HopeHfConfig, RotaryEncoding),
    "hope-hyp" => HopeHyp(rotary::hope_hyp::HopeHypConfig, RotaryEncoding),
    "xpos" => Xpos(rotary::xpos::XposConfig, RotaryEncoding),
    "alibi" => Alibi(bias::alibi::AlibiConfig, bias::alibi::Alibi),
    "t5" => T5(bias::t5::T5Config, bias::t5::T5Bias),
    "kerple" => Kerple(bias::kerple::KerpleConfig, bias::kerple::Kerple),
    "fire" => Fire(bias::fire::FireConfig, bias::fire::Fire),
}

fn unknown_kind(kind: &str) -> ConfigError {
    ConfigError::new(
        "kind",
        format!("unknown encoding `{kind}` (allowed: {})", EncodingConfig::KINDS.join(", ")),
    )
}

impl EncodingConfig {
    /// Parses a TOML table (`kind = "rope"` plus fields); errors name the field.
    pub fn from_toml(text: &str) -> Result<Self> {
        let value: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("toml", one_line(&e.to_string())))?;
        Self::from_table(value)
    }

    /// Parses an already-read TOML table (e.g. the `[encoding]` section of a model config).
    pub fn from_table(value: toml::Table) -> Result<Self> {
        match value.get("kind").and_then(|k| k.as_str()) {
            None => {
                return Err(ConfigError::new(
                    "kind",
                    format!("is required (allowed: {})", Self::KINDS.join(", ")),
                ));
            }
            Some(kind) if !Self::KINDS.contains(&kind) => return Err(unknown_kind(kind)),
            Some(_) => {}
        }
        toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new("toml", one_line(&e.to_string())))
    }

    /// A kind name (`rope`) with defaults, or a path to a TOML file.
    pub fn from_name_or_file(spec: &str) -> Result<Self> {
        if Self::KINDS.contains(&spec) {
            return Self::default_for(spec);
        }
        let path = std::path::Path::new(spec);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new("file", format!("cannot read {spec}: {e}")))?;
            return Self::from_toml(&text);
        }
        Err(unknown_kind(spec))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("encoding configs serialise to TOML")
    }
}

/// TOML errors span several lines (with a caret diagram); keep the message line.
fn one_line(msg: &str) -> String {
    let mut lines = msg.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid TOML").trim().to_string();
    match lines.next_back() {
        Some(last) if last.trim() != first => format!("{first}: {}", last.trim()),
        _ => first,
    }
}
