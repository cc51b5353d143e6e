//! The typed contents of a run's result files (see [`super`]): what `zoo eval` and `zoo analyze`
//! measure, with the settings that produced it, and what training records at its end.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::{AnalyzeSettings, EvalSettings};

/// What an evaluation measured: its settings, and which text and positions it used. A saved
/// evaluation is reused only when this is what is asked now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    pub settings: EvalSettings,
    /// `--data`: another corpus (absolute path); `None`: the run's held-out split.
    pub data: Option<PathBuf>,
    pub text_field: Option<String>,
    /// Eval-time RoPE scaling (`linear`, `ntk`, …) and its factor.
    pub rope_scaling: Option<String>,
    pub factor: Option<f64>,
    /// The longest query block (HoPE-Hyp's reference re-centres positions per block).
    pub query_block: usize,
}

/// `eval<suffix>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOutput {
    pub spec: EvalSpec,
    /// Where it ran and the model's compute path there (recorded, not matched).
    pub device: String,
    pub compute_path: String,
    /// Perplexity and bits per byte per evaluated length (lengths beyond the encoding's table
    /// or the text are left out).
    pub perplexity: Vec<LengthResult>,
    /// Empty when skipped (no trials, or a tokenizer that cannot assemble prompts).
    pub passkey: Vec<PasskeyCell>,
    pub copy: Vec<CopyCell>,
}

/// `analyze.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeOutput {
    pub settings: AnalyzeSettings,
    pub lengths: Vec<AnalyzeResult>,
}

/// `train.json`: how a finished run trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// The devices it trained on (several: data-parallel).
    pub devices: Vec<String>,
    /// The compute path of the model's attention and encoding on them (`fused attention`,
    /// `fused rotary`, `reference`).
    pub compute_path: String,
    pub params: usize,
    pub valid_loss: f64,
    /// Seconds of the last (or only) training attempt.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthResult {
    pub multiple: usize,
    pub length: usize,
    pub windows: usize,
    pub loss: f64,
    pub ppl: f64,
    /// Total loss over the evaluated targets in bits, over the UTF-8 bytes of text they stand
    /// for: comparable across tokenizers.
    #[serde(default)]
    pub bits_per_byte: Option<f64>,
    /// UTF-8 bytes of text the evaluated targets stand for (the `--tokens` budget is in tokens,
    /// so tokenizers cover different amounts of text).
    #[serde(default)]
    pub bytes: u64,
    /// Mean loss per position bucket (bucket i covers positions [i·L/B, (i+1)·L/B)).
    pub per_position: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasskeyCell {
    pub length: usize,
    pub depth: f64,
    pub trials: usize,
    pub correct: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyCell {
    pub length: usize,
    pub distance: usize,
    pub trials: usize,
    /// Fraction of spans reproduced exactly.
    pub accuracy: f64,
    /// Fraction of the span's tokens predicted given the correct prefix.
    pub token_accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerProfile {
    pub layer: usize,
    /// Relative-position bins (0 = sequence start … 9 = next to the query), last-quarter queries.
    pub relative_bins: Vec<f64>,
    pub u_score: f64,
    pub local: bool,
    /// `u-shaped`, `local`, `start` or `flat` (see the module docs).
    #[serde(default)]
    pub shape: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeResult {
    pub length: usize,
    /// Mean weight per distance Δ = 0..L−1, averaged over layers.
    pub by_distance: Vec<f64>,
    pub layers: Vec<LayerProfile>,
    pub mean_u_score: f64,
    /// Rotary models: per-pair activation per layer (see [`crate::analyze::pairs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<LayerPairs>,
}

/// The contribution statistics of one pair in one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    pub pair: usize,
    pub theta: f64,
    pub rotated: bool,
    pub hope_hf_dropped: bool,
    pub q_norm: f64,
    pub k_norm: f64,
    /// Mean of c_i over all causal (m, n).
    pub mean: f64,
    /// Mean and variance of c_i per distance bucket (see `distance_buckets`).
    pub by_distance_mean: Vec<f64>,
    pub by_distance_var: Vec<f64>,
    pub u_contrast: f64,
    pub u_share: f64,
    pub positional_share: f64,
    pub activated: bool,
    pub position_independent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPairs {
    pub layer: usize,
    /// Lower bound of each distance bucket: 0, 1, 2, 4, 8, …
    pub distance_buckets: Vec<usize>,
    pub pairs: Vec<PairStats>,
    /// Sum of the pairs' U-contrasts: the U-contrast of the rotary part of the logit.
    pub total_u_contrast: f64,
}

/// Everything measured for one (encoding, seed) run of a sweep, as the report reads it.
#[derive(Debug, Clone)]
pub struct RunResults {
    pub encoding: String,
    pub seed: u64,
    pub eval: Vec<LengthResult>,
    pub passkey: Vec<PasskeyCell>,
    pub copy: Vec<CopyCell>,
    pub analyze: Vec<AnalyzeResult>,
    /// Mean training tokens/s over the logged steps, and the compute path that ran.
    pub tokens_per_s: f64,
    pub compute_path: String,
}

/// Mean training tokens/s over the logged training rows of `metrics.csv` (NaN without any).
pub fn mean_tokens_per_s(rows: &[super::MetricRow]) -> f64 {
    let v: Vec<f64> = rows.iter().filter(|r| r.split == "train").filter_map(|r| r.tokens_per_s).collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}
