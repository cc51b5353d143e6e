//! A run's configuration: `[model]` (pezoo-models), `[train]`, `[data]`, one TOML file.

use std::path::PathBuf;

use anyhow::{Result, bail};
use pezoo_models::ModelConfig;
use pezoo_models::corpus::SyntheticStyle;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps in total.
    pub steps: usize,
    /// Optimizer steps between checkpoints (one burn-train "epoch").
    pub checkpoint_every: usize,
    /// Peak learning rate (after linear warm-up), then cosine to `min_lr`.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables.
    pub grad_clip: f64,
    pub seed: u64,
    /// Validation batches at each checkpoint.
    pub valid_batches: usize,
    /// Print a progress line every this many steps.
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 16,
            grad_accum: 1,
            steps: 600,
            checkpoint_every: 150,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 50,
            weight_decay: 0.1,
            grad_clip: 1.0,
            seed: 42,
            valid_batches: 8,
            log_every: 25,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A file or a directory of `.txt` / `.jsonl` files (optionally `.gz`); unset = the
    /// embedded synthetic corpus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `bytes` | `bpe:<vocab>` (learned on the training split, saved as the run's
    /// `tokenizer.json`) | a path to a Hugging Face `tokenizer.json` (copied into the run).
    #[serde(skip_serializing_if = "is_bytes")]
    pub tokenizer: String,
    /// The string field of each `.jsonl` line that holds a document's text.
    #[serde(skip_serializing_if = "is_text")]
    pub text_field: String,
    /// Synthetic corpus: number of documents and bytes per document.
    pub synthetic_docs: usize,
    pub synthetic_doc_len: usize,
    /// Synthetic corpus: `mixed` (local grammar, facts recalled at each document's end) or
    /// `retrieval` (dense in facts recalled and spans copied within a few sentences).
    #[serde(skip_serializing_if = "is_mixed")]
    pub synthetic_style: SyntheticStyle,
}

fn is_mixed(s: &SyntheticStyle) -> bool {
    *s == SyntheticStyle::Mixed
}

// Defaults are not written out, so runs from before these fields resume with the same config.
fn is_bytes(s: &str) -> bool {
    s == "bytes"
}
fn is_text(s: &str) -> bool {
    s == "text"
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: None,
            tokenizer: "bytes".into(),
            text_field: "text".into(),
            synthetic_docs: 300,
            synthetic_doc_len: 3000,
            synthetic_style: SyntheticStyle::Mixed,
        }
    }
}

/// The run-directory format `zoo train` writes: bumped when a saved run would mean something
/// else to this code (2: per-layer KERPLE, data keyed by sample; 3: sinusoidal's table rescaled
/// to the embeddings' scale).
pub const RUN_FORMAT: u32 = 3;

fn format_before_versioning() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// [`RUN_FORMAT`] of the code that wrote a run's `config.toml` (absent: 1). Config files
    /// written by hand need not set it.
    #[serde(default = "format_before_versioning")]
    pub format: u32,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub data: DataConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            format: RUN_FORMAT,
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            data: DataConfig::default(),
        }
    }
}

fn range_err(field: &str, value: impl std::fmt::Display, allowed: &str) -> anyhow::Error {
    anyhow::anyhow!("train.{field}: {value} is out of range (allowed: {allowed})")
}

impl RunConfig {
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let msg: Vec<&str> = e.message().lines().collect();
            let at = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            anyhow::anyhow!(
                "{origin}{}: {}",
                at.map_or(String::new(), |l| format!(" line {l}")),
                msg.join(" ")
            )
        })
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        for (field, v) in [
            ("batch_size", t.batch_size),
            ("grad_accum", t.grad_accum),
            ("steps", t.steps),
            ("checkpoint_every", t.checkpoint_every),
            ("valid_batches", t.valid_batches),
            ("log_every", t.log_every),
        ] {
            if v == 0 {
                return Err(range_err(field, 0, "≥ 1"));
            }
        }
        if !(t.lr > 0.0 && t.lr <= 1.0) {
            return Err(range_err("lr", t.lr, "0 < lr ≤ 1"));
        }
        if !(t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return Err(range_err("min_lr", t.min_lr, "0 ≤ min_lr ≤ lr"));
        }
        if t.checkpoint_every > t.steps {
            return Err(range_err(
                "checkpoint_every",
                t.checkpoint_every,
                &format!("1 ≤ checkpoint_every ≤ steps = {}", t.steps),
            ));
        }
        if t.warmup_steps >= t.steps {
            return Err(range_err("warmup_steps", t.warmup_steps, &format!("< steps = {}", t.steps)));
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay < 1.0) {
            return Err(range_err("weight_decay", t.weight_decay, "0 ≤ weight_decay < 1"));
        }
        if !(t.grad_clip >= 0.0 && t.grad_clip.is_finite()) {
            return Err(range_err("grad_clip", t.grad_clip, "≥ 0 (0 disables)"));
        }
        if self.data.path.is_none() && (self.data.synthetic_docs < 10 || self.data.synthetic_doc_len < 200) {
            bail!(
                "data.synthetic_docs ≥ 10 and data.synthetic_doc_len ≥ 200 are required (the validation split is every 10th document)"
            );
        }
        if self.data.path.is_some() && self.data.synthetic_style != SyntheticStyle::Mixed {
            bail!(
                "data.synthetic_style: applies to the embedded synthetic corpus only (allowed with data.path: leave it unset)"
            );
        }
        pezoo_models::TokenizerSpec::parse(&self.data.tokenizer)?;
        if self.data.text_field.is_empty() {
            bail!("data.text_field: empty (allowed: the name of a string field of the .jsonl lines)");
        }
        self.model.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_style_with_a_data_path_is_refused() {
        let mut c = RunConfig::default();
        c.data.synthetic_style = SyntheticStyle::Retrieval;
        c.validate().expect("the embedded corpus takes a style");
        c.data.path = Some("books".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("data.synthetic_style:"), "{err}");
    }

    /// Every shipped configuration (presets and the papers' recipes) parses and validates.
    #[test]
    fn every_shipped_config_is_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for dir in [root.clone(), root.join("papers")] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "toml") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let cfg = RunConfig::from_toml(&text, &p.display().to_string()).unwrap();
                    cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    n += 1;
                }
            }
        }
        assert!(n >= 6, "{n} configs");
    }
}
