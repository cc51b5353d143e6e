//! A run directory: every file a run holds and the type each holds. `zoo train` writes the
//! configuration, tokenizer, metrics, checkpoints and model; `zoo eval` and `zoo analyze` add
//! their results with the settings that produced them; `zoo compare` reads them back as types.
//!
//! ```text
//! <run>/config.toml           RunConfig: what trained, and the [eval] / [analyze] settings
//!       tokenizer.json        the learned or given tokenizer (absent for bytes)
//!       metrics.csv           MetricRow per logged step (train and valid)
//!       checkpoint/           burn-train's {model,optim,scheduler}-<epoch>.bpk, steps.json
//!       data.json             DataFingerprint: the tokens trained on, checked on --resume
//!       model.safetensors     the final weights: present once training finished
//!       train.json            TrainRecord: devices, compute path, parameters, valid loss
//!       eval<sfx>.json        EvalOutput: its settings, perplexity per length, passkey, copy
//!       ppl_vs_length<sfx>.csv
//!       analyze.json          AnalyzeOutput: its settings, attention by distance, U-score, pairs
//!       .lock                 held while a `zoo compare` works on the run
//! ```

pub mod checkpoints;
pub mod config;
pub mod results;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use pezoo_models::{Lm, Tokenizer, TokenizerSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use config::{AnalyzeSettings, EvalSettings, RUN_FORMAT, RunConfig};
pub use results::{AnalyzeOutput, EvalOutput, TrainRecord};

use crate::write_atomic;

/// A run directory (see the module docs for its files).
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir(PathBuf);

/// One row of `metrics.csv`: a progress line of training or a validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub step: usize,
    /// `train` or `valid`.
    pub split: String,
    pub loss: f64,
    pub perplexity: f64,
    pub lr: Option<f64>,
    /// Training rows: tokens per second since the previous line.
    pub tokens_per_s: Option<f64>,
}

/// The header of `metrics.csv` (the fields of [`MetricRow`]).
pub const METRICS_HEADER: &str = "step,split,loss,perplexity,lr,tokens_per_s";

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn config_file(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn tokenizer_file(&self) -> PathBuf {
        self.0.join("tokenizer.json")
    }
    pub fn metrics_file(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.0.join("checkpoint")
    }
    /// The step each checkpoint holds ([`checkpoints`]).
    pub fn steps_file(&self) -> PathBuf {
        self.checkpoint_dir().join("steps.json")
    }
    /// What the run trains on ([`checkpoints::DataFingerprint`]), checked on `--resume`.
    pub fn data_file(&self) -> PathBuf {
        self.0.join("data.json")
    }
    pub fn model_file(&self) -> PathBuf {
        self.0.join("model.safetensors")
    }
    pub fn train_file(&self) -> PathBuf {
        self.0.join("train.json")
    }
    /// `eval<suffix>.json` (the suffix names another corpus or an eval-time RoPE scaling).
    pub fn eval_file(&self, suffix: &str) -> PathBuf {
        self.0.join(format!("eval{suffix}.json"))
    }
    pub fn ppl_csv_file(&self, suffix: &str) -> PathBuf {
        self.0.join(format!("ppl_vs_length{suffix}.csv"))
    }
    pub fn analyze_file(&self) -> PathBuf {
        self.0.join("analyze.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.0.join(".lock")
    }

    /// Whether training finished (the final weights are saved).
    pub fn is_trained(&self) -> bool {
        self.model_file().exists()
    }

    /// The run's configuration; a run written by another run format is refused.
    pub fn load_config(&self) -> Result<RunConfig> {
        let path = self.config_file();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--run: cannot read {}", path.display()))?;
        let cfg = RunConfig::from_toml(&text, &path.display().to_string())?;
        if cfg.format != RUN_FORMAT {
            bail!(
                "{}: written by another pezoo (run format {}; this one reads {RUN_FORMAT}); retrain it (delete the directory or choose another)",
                self.0.display(),
                cfg.format
            );
        }
        Ok(cfg)
    }

    /// The final model, on `device`.
    pub fn load_model(&self, cfg: &RunConfig, device: &Device) -> Result<Lm> {
        let mut model = Lm::new(&cfg.model, device)?;
        let weights = self.model_file();
        if !weights.exists() {
            bail!(
                "--run: {} is missing (the run has not finished; `zoo train --resume` completes it)",
                weights.display()
            );
        }
        model
            .load_from(&mut SafetensorsStore::from_file(&weights))
            .map_err(|e| anyhow::anyhow!("loading {}: {e:?}", weights.display()))?;
        Ok(model)
    }

    /// Saves the final model (a temporary file, then a rename: present means complete).
    pub fn save_model(&self, model: &Lm) -> Result<()> {
        let path = self.model_file();
        let tmp = self.0.join("model.safetensors.tmp");
        model
            .save_into(&mut SafetensorsStore::from_file(&tmp))
            .map_err(|e| anyhow::anyhow!("saving {}: {e:?}", path.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("saving {}", path.display()))
    }

    /// The tokenizer the run was trained with (its `tokenizer.json`, unless bytes), checked
    /// against the model's vocabulary.
    pub fn tokenizer(&self, cfg: &RunConfig) -> Result<Tokenizer> {
        let tok = match TokenizerSpec::parse(&cfg.data.tokenizer)? {
            TokenizerSpec::Bytes => Tokenizer::Bytes,
            _ => Tokenizer::from_file(&self.tokenizer_file())?,
        };
        if tok.vocab_size() != cfg.model.vocab_size {
            bail!(
                "{}: the tokenizer has {} tokens but model.vocab_size is {}",
                self.0.display(),
                tok.vocab_size(),
                cfg.model.vocab_size
            );
        }
        Ok(tok)
    }

    /// The rows of `metrics.csv` (none if it is absent; unreadable rows are skipped).
    pub fn metrics(&self) -> Vec<MetricRow> {
        let Ok(mut reader) = csv::Reader::from_path(self.metrics_file()) else { return Vec::new() };
        reader.deserialize().filter_map(|r| r.ok()).collect()
    }

    /// Keeps the rows of `metrics.csv` up to `step` (a resumed run rewrites what follows).
    pub fn truncate_metrics(&self, step: usize) -> Result<()> {
        let path = self.metrics_file();
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let mut keep = String::new();
        for (i, line) in text.lines().enumerate() {
            let row_step = line.split(',').next().and_then(|s| s.parse::<usize>().ok());
            if i == 0 || row_step.is_some_and(|s| s <= step) {
                keep.push_str(line);
                keep.push('\n');
            }
        }
        write_atomic(&path, keep.as_bytes())
    }

    /// What training recorded at its end; `None` for runs from before the record.
    pub fn train_record(&self) -> Option<TrainRecord> {
        read_json(&self.train_file())
    }

    pub fn write_train_record(&self, r: &TrainRecord) -> Result<()> {
        write_json(&self.train_file(), r)
    }

    /// The evaluation saved under `suffix`; `None` if absent or unreadable (e.g. written by an
    /// older pezoo), which callers treat as not evaluated.
    pub fn eval(&self, suffix: &str) -> Option<EvalOutput> {
        read_json(&self.eval_file(suffix))
    }

    /// Saves an evaluation, and its perplexity table as CSV.
    pub fn write_eval(&self, suffix: &str, e: &EvalOutput) -> Result<()> {
        let mut csv = ::csv::Writer::from_writer(Vec::new());
        csv.write_record(["multiple", "length", "windows", "loss", "ppl", "bits_per_byte"])?;
        for r in &e.perplexity {
            csv.serialize((r.multiple, r.length, r.windows, r.loss, r.ppl, r.bits_per_byte))?;
        }
        let csv = csv.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
        write_atomic(&self.ppl_csv_file(suffix), &csv)?;
        write_json(&self.eval_file(suffix), e)
    }

    /// Removes what was measured on an earlier model (evaluations, analysis, the training
    /// record): training is about to make another, and a result must never outlive its model.
    pub fn clear_results(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.0) else { return Ok(()) };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let result = (name.starts_with("eval") && name.ends_with(".json"))
                || (name.starts_with("ppl_vs_length") && name.ends_with(".csv"))
                || name == "analyze.json"
                || name == "train.json";
            if result && path.is_file() {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The analysis saved; `None` if absent or unreadable.
    pub fn analyze(&self) -> Option<AnalyzeOutput> {
        read_json(&self.analyze_file())
    }

    pub fn write_analyze(&self, a: &AnalyzeOutput) -> Result<()> {
        write_json(&self.analyze_file(), a)
    }
}

/// `None` for an absent file; an unreadable one (an older format, or a NaN written as `null`)
/// is `None` too, with a note: it will be measured again.
fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text)
        .map_err(|e| println!("note: {} is not readable here ({e}); measuring again", path.display()))
        .ok()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_read_back_as_rows_and_truncate_at_a_step() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        let text = format!(
            "{METRICS_HEADER}\n25,train,3.5,33.1,0.003,1200.5\n50,train,3.0,20.1,0.002,1300.5\n50,valid,3.1,22.2,,\n75,train,2.5,12.2,0.001,1250\n"
        );
        std::fs::write(run.metrics_file(), text).unwrap();
        let rows = run.metrics();
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[2].split.as_str(), rows[2].loss, rows[2].tokens_per_s), ("valid", 3.1, None));
        assert_eq!(rows[3].tokens_per_s, Some(1250.0));
        run.truncate_metrics(50).unwrap();
        let steps: Vec<usize> = run.metrics().iter().map(|r| r.step).collect();
        assert_eq!(steps, [25, 50, 50]);
    }

    #[test]
    fn an_unreadable_result_reads_as_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        assert!(run.eval("").is_none());
        std::fs::write(run.eval_file(""), "[]").unwrap(); // the list an older pezoo wrote
        assert!(run.eval("").is_none());
        std::fs::write(run.analyze_file(), "{").unwrap();
        assert!(run.analyze().is_none());
    }

    #[test]
    fn clearing_results_keeps_what_trains() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        std::fs::create_dir_all(run.checkpoint_dir()).unwrap();
        let kept = [run.config_file(), run.metrics_file(), run.tokenizer_file(), run.steps_file()];
        let gone = [
            run.eval_file(""),
            run.eval_file("_books"),
            run.ppl_csv_file(""),
            run.analyze_file(),
            run.train_file(),
        ];
        for f in kept.iter().chain(&gone) {
            std::fs::write(f, "x").unwrap();
        }
        run.clear_results().unwrap();
        assert!(kept.iter().all(|f| f.exists()) && gone.iter().all(|f| !f.exists()));
    }
}
