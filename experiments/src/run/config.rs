//! A run's configuration, one TOML file: `[model]` (pezoo-models), `[train]`, `[data]` define
//! what trains; `[eval]` and `[analyze]` what is measured afterwards (saved with each result, so
//! a result is reused only for the same settings).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use pezoo_models::ModelConfig;
use pezoo_models::corpus::Corpus;
use pezoo_models::corpus::{LOOKUP_WITHIN, SyntheticStyle};
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
    /// `retrieval` (dense in facts recalled and spans copied within a few sentences) or `lookup`
    /// (one fact and one span pending at a time, recalled anywhere in a window).
    #[serde(skip_serializing_if = "is_mixed")]
    pub synthetic_style: SyntheticStyle,
    /// Lookup style: the longest wait of a fact or span for its recall, in sentences
    /// (log-uniform from 1; default 14, about a 128-token BPE window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_within: Option<usize>,
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
            recall_within: None,
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
    pub eval: EvalSettings,
    pub analyze: AnalyzeSettings,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            format: RUN_FORMAT,
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            data: DataConfig::default(),
            eval: EvalSettings::default(),
            analyze: AnalyzeSettings::default(),
        }
    }
}

/// `[eval]`: what `zoo eval` measures (its flags override these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Evaluation lengths as multiples of the training length.
    pub lengths: Vec<usize>,
    /// Tokens of text per length (windows = tokens / length, at least one).
    pub tokens: usize,
    /// Position buckets of the per-position loss curve.
    pub buckets: usize,
    /// Passkey prompts per (length, depth); 0 skips the passkey grid.
    pub passkey_trials: usize,
    /// Passkey depths (0 = start, 1 = just before the question).
    pub depths: Vec<f64>,
    /// Copy-task spans per (length, distance); 0 skips the copy task.
    pub copy_trials: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        // ≥ 20 prompts per reported cell over 3 seeds (passkey: 10 per depth; copy: 8 per distance)
        Self {
            lengths: vec![1, 2, 4, 8],
            tokens: 8192,
            buckets: 16,
            passkey_trials: 10,
            depths: vec![0.0, 0.5, 1.0],
            copy_trials: 8,
        }
    }
}

impl EvalSettings {
    pub fn validate(&self) -> Result<()> {
        check_multiples("eval.lengths", &self.lengths)?;
        if self.tokens == 0 {
            bail!("eval.tokens: 0 is out of range (allowed: ≥ 1)");
        }
        if self.buckets == 0 {
            bail!("eval.buckets: 0 is out of range (allowed: ≥ 1)");
        }
        if let Some(d) = self.depths.iter().find(|d| !(0.0..=1.0).contains(*d)) {
            bail!("eval.depths: {d} is out of range (allowed: 0 ≤ depth ≤ 1)");
        }
        if self.passkey_trials > 0 && self.depths.is_empty() {
            bail!("eval.depths: empty (allowed: depths in [0, 1], or eval.passkey_trials = 0)");
        }
        Ok(())
    }
}

/// `[analyze]`: what `zoo analyze` measures (its flags override these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzeSettings {
    /// Window lengths as multiples of the training length.
    pub lengths: Vec<usize>,
    /// Held-out windows per length.
    pub windows: usize,
}

impl Default for AnalyzeSettings {
    fn default() -> Self {
        Self { lengths: vec![1, 2], windows: 4 }
    }
}

impl AnalyzeSettings {
    pub fn validate(&self) -> Result<()> {
        check_multiples("analyze.lengths", &self.lengths)?;
        if self.windows == 0 {
            bail!("analyze.windows: 0 is out of range (allowed: ≥ 1)");
        }
        Ok(())
    }
}

fn check_multiples(field: &str, v: &[usize]) -> Result<()> {
    if v.is_empty() || v.contains(&0) {
        bail!("{field}: {v:?} is out of range (allowed: multiples of the training length, each ≥ 1)");
    }
    Ok(())
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

    /// The same run with the default `[eval]` and `[analyze]`: what decides the training.
    pub fn training(&self) -> Self {
        Self { eval: EvalSettings::default(), analyze: AnalyzeSettings::default(), ..self.clone() }
    }

    /// The corpus the run trains on (files, or the embedded synthetic one).
    pub fn corpus(&self) -> Result<Corpus> {
        let min = 4 * (self.model.max_seq_len + 1);
        Ok(match &self.data.path {
            Some(p) => Corpus::from_path(p, min, &self.data.text_field).context("data.path")?,
            None => Corpus::synthetic_within(
                self.data.synthetic_style,
                self.train.seed,
                self.data.synthetic_docs,
                self.data.synthetic_doc_len,
                self.data.recall_within.unwrap_or(LOOKUP_WITHIN),
            ),
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
        if let Some(w) = self.data.recall_within {
            if self.data.synthetic_style != SyntheticStyle::Lookup || self.data.path.is_some() {
                bail!("data.recall_within: applies to synthetic_style = \"lookup\" only (leave it unset)");
            }
            if !(1..=10_000).contains(&w) {
                bail!("data.recall_within: {w} is out of range (allowed: 1 ≤ sentences ≤ 10000)");
            }
        }
        pezoo_models::TokenizerSpec::parse(&self.data.tokenizer)?;
        if self.data.text_field.is_empty() {
            bail!("data.text_field: empty (allowed: the name of a string field of the .jsonl lines)");
        }
        self.eval.validate()?;
        self.analyze.validate()?;
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

    #[test]
    fn recall_within_is_for_the_lookup_style_and_in_range() {
        let mut c = RunConfig::default();
        c.data.recall_within = Some(4);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("data.recall_within: applies to"), "{err}");
        c.data.synthetic_style = SyntheticStyle::Lookup;
        c.validate().expect("lookup takes a wait");
        c.data.recall_within = Some(0);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("data.recall_within: 0 is out of range"), "{err}");
    }

    #[test]
    fn eval_and_analyze_settings_are_checked_and_left_out_of_the_training() {
        let text = "[eval]\nlengths = [1, 3]\ndepths = [0.5]\n[analyze]\nwindows = 2\n";
        let c = RunConfig::from_toml(text, "t").unwrap();
        assert_eq!((c.eval.lengths.as_slice(), c.eval.tokens, c.analyze.windows), (&[1, 3][..], 8192, 2));
        let plain = RunConfig { format: c.format, ..Default::default() };
        assert_eq!(c.training(), plain);
        assert_ne!(c, plain);
        for (bad, field) in [
            ("[eval]\nlengths = [0, 2]\n", "eval.lengths:"),
            ("[eval]\ndepths = [1.5]\n", "eval.depths:"),
            ("[analyze]\nwindows = 0\n", "analyze.windows:"),
        ] {
            let err = RunConfig::from_toml(bad, "t").unwrap().validate().unwrap_err().to_string();
            assert!(err.starts_with(field), "{bad}: {err}");
        }
        let err = RunConfig::from_toml("[eval]\nlength = [1]\n", "t").unwrap_err().to_string();
        assert!(err.contains("unknown field `length`"), "{err}");
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
