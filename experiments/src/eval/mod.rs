//! `zoo eval`: perplexity and bits per byte vs length on held-out text (or any corpus, `--data`),
//! with per-position loss curves, from a training run directory, through the run's tokenizer;
//! eval-time RoPE scaling applies to rope models.

pub mod copy;
pub mod passkey;
pub mod perplexity;
pub mod retrieval;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use pezoo_encodings::EncodingConfig;
use pezoo_encodings::rotary::scaling::{RopeScaling, RopeType};
use pezoo_models::Tokens;

use crate::run::results::{EvalOutput, EvalSpec};
use crate::run::{EvalSettings, RunConfig, RunDir};

/// `zoo eval`'s flags. The settings flags override the run's `[eval]` (from its config file;
/// defaults: [`EvalSettings`]).
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A `zoo train --out` directory (config.toml + model.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// Evaluation lengths as multiples of the training length [eval.lengths].
    #[arg(long, value_delimiter = ',')]
    pub lengths: Option<Vec<usize>>,
    /// Tokens of text per length (windows = tokens / length, at least one) [eval.tokens].
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Evaluate on this corpus (a file or directory of .txt / .jsonl, optionally .gz) instead of
    /// the run's held-out split; results are saved with the corpus's name as a suffix.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The .jsonl field holding the text (default: the run's data.text_field).
    #[arg(long)]
    pub text_field: Option<String>,
    /// Eval-time RoPE scaling for rope models: linear | ntk | dynamic | yarn | llama3.
    #[arg(long)]
    pub rope_scaling: Option<String>,
    /// The scaling factor s (default: the largest evaluated multiple).
    #[arg(long)]
    pub factor: Option<f64>,
    /// Position buckets of the per-position loss curve [eval.buckets].
    #[arg(long)]
    pub buckets: Option<usize>,
    /// Longest query block of attention (memory at long lengths; HoPE-Hyp re-centres positions
    /// per block, so it is part of the result's settings).
    #[arg(long, default_value_t = 512)]
    pub query_block: usize,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Passkey trials per (length, depth); 0 skips the passkey grid [eval.passkey_trials].
    #[arg(long)]
    pub passkey_trials: Option<usize>,
    /// Passkey depths (0 = start, 1 = just before the question) [eval.depths].
    #[arg(long, value_delimiter = ',')]
    pub depths: Option<Vec<f64>>,
    /// Copy-task spans per (length, distance); 0 skips the copy task [eval.copy_trials].
    #[arg(long)]
    pub copy_trials: Option<usize>,
}

impl EvalArgs {
    /// The evaluation these flags ask of a run configured as `cfg` (flags over its `[eval]`):
    /// what a saved `eval<suffix>.json` must match to be reused.
    pub fn spec(&self, cfg: &RunConfig) -> Result<EvalSpec> {
        let b = cfg.eval.clone();
        let settings = EvalSettings {
            lengths: self.lengths.clone().unwrap_or(b.lengths),
            tokens: self.tokens.unwrap_or(b.tokens),
            buckets: self.buckets.unwrap_or(b.buckets),
            passkey_trials: self.passkey_trials.unwrap_or(b.passkey_trials),
            depths: self.depths.clone().unwrap_or(b.depths),
            copy_trials: self.copy_trials.unwrap_or(b.copy_trials),
        };
        settings.validate().map_err(|e| {
            // name the flag beside the field: the value came from one or the other
            let msg = e.to_string();
            match msg.strip_prefix("eval.").and_then(|m| m.split_once(':')) {
                Some((field, rest)) => anyhow::anyhow!("eval.{field} (--{}):{rest}", field.replace('_', "-")),
                None => e,
            }
        })?;
        let longest = *settings.lengths.iter().max().expect("validated: not empty") as f64;
        let data = self.data.as_ref().map(std::path::absolute).transpose().context("--data")?;
        Ok(EvalSpec {
            // the field read from another corpus (the run's own split is read as it trained)
            text_field: data.as_ref().map(|_| self.text_field.clone().unwrap_or(cfg.data.text_field.clone())),
            data,
            query_block: self.query_block,
            factor: self.rope_scaling.as_ref().map(|_| self.factor.unwrap_or(longest)),
            rope_scaling: self.rope_scaling.clone(),
            settings,
        })
    }
}

/// What `zoo eval` appends to its output files' names: `_<corpus>` for `--data`, `_<scaling>`
/// for `--rope-scaling`.
pub fn output_suffix(a: &EvalArgs) -> String {
    let mut s = String::new();
    if let Some(d) = &a.data {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = name.split('.').next().unwrap_or_default();
        let clean: String =
            stem.chars().map(|c| if c.is_alphanumeric() || c == '-' { c } else { '_' }).collect();
        s.push('_');
        s.push_str(&clean);
    }
    if let Some(r) = &a.rope_scaling {
        s.push('_');
        s.push_str(r);
    }
    s
}

/// Evaluates the run as `a` asks and saves the result as `eval<suffix>.json` (see
/// [`output_suffix`]).
pub fn run(a: EvalArgs) -> Result<EvalOutput> {
    let dir = RunDir::new(&a.run);
    let mut cfg = dir.load_config()?;
    let spec = a.spec(&cfg)?;
    let st = &spec.settings;
    let train_len = cfg.model.max_seq_len;
    if let Some(kind) = &spec.rope_scaling {
        let rope_type: RopeType =
            serde_json::from_value(serde_json::Value::String(kind.clone())).map_err(|_| {
                anyhow::anyhow!("--rope-scaling: `{kind}` (allowed: linear, ntk, dynamic, yarn, llama3)")
            })?;
        let EncodingConfig::Rope(rope) = &mut cfg.model.encoding else {
            bail!("--rope-scaling applies to rope models; this run uses `{}`", cfg.model.encoding.kind());
        };
        let mut s = RopeScaling::new(rope_type, spec.factor.expect("set with rope_scaling"));
        s.original_max_position_embeddings = Some(train_len);
        rope.rope_scaling = Some(s);
        cfg.model.validate()?;
    }
    let tok = dir.tokenizer(&cfg)?;
    let (name, docs) = perplexity::eval_text(&a, &cfg)?;
    let text = Tokens::from_docs(&docs, &tok);
    if text.ids.len() < train_len + 1 {
        bail!(
            "{}{name}: {} tokens of text is shorter than one window ({} tokens at the training length)",
            if a.data.is_some() { "--data " } else { "" },
            text.ids.len(),
            train_len + 1
        );
    }
    let (device, picked) = crate::device::select(&a.device)?;
    let model = dir.load_model(&cfg, &device)?;
    println!(
        "eval {} ({}, {}) on {picked}: {name}, {} tokens ({} bytes of text), train length {train_len}",
        a.run.display(),
        cfg.model.encoding.kind(),
        model.compute_path(&device),
        text.ids.len(),
        text.bytes.iter().map(|&b| b as u64).sum::<u64>()
    );
    let perplexity = perplexity::by_length(&model, &text, train_len, st, a.query_block, &device);
    let (mut passkey_trials, mut copy_trials) = (st.passkey_trials, st.copy_trials);
    if (passkey_trials > 0 || copy_trials > 0) && !tok.concatenates(retrieval::JOINTS) {
        println!(
            "passkey and copy skipped: this tokenizer does not tokenise text pieces independently (e.g. it prefixes every encoding), so assembled prompts would not be the tokens of their text"
        );
        (passkey_trials, copy_trials) = (0, 0);
    }
    let subject =
        retrieval::Subject { model: &model, tok: &tok, query_block: Some(a.query_block), device: &device };
    let lens: Vec<usize> = perplexity.iter().map(|r| r.length).collect();
    let mut passkey = Vec::new();
    if passkey_trials > 0 {
        passkey = passkey::passkey_grid(subject, &lens, &st.depths, passkey_trials, cfg.train.seed);
        println!("passkey accuracy (rows: length, columns: depth {:?})", st.depths);
        for &len in &lens {
            let row: Vec<String> =
                passkey.iter().filter(|c| c.length == len).map(|c| format!("{:.2}", c.accuracy)).collect();
            println!("{len:>8}  {}", row.join("  "));
        }
    }
    let mut copy = Vec::new();
    if copy_trials > 0 {
        copy = copy::copy_grid(subject, &lens, copy_trials, cfg.train.seed);
        println!("copy accuracy (exact span) by distance");
        for &len in &lens {
            let row: Vec<String> = copy
                .iter()
                .filter(|c| c.length == len)
                .map(|c| format!("{}:{:.2}", c.distance, c.accuracy))
                .collect();
            println!("{len:>8}  {}", row.join("  "));
        }
    }
    let out = EvalOutput {
        spec,
        device: picked,
        compute_path: model.compute_path(&device).to_string(),
        perplexity,
        passkey,
        copy,
    };
    dir.write_eval(&output_suffix(&a), &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(run: &str) -> EvalArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            eval: EvalArgs,
        }
        let argv = ["zoo"].into_iter().chain(run.split_whitespace());
        Cli::try_parse_from(argv).expect("flags parse").eval
    }

    /// Flags override the run's `[eval]`, field by field; the rest is the run's.
    #[test]
    fn the_spec_is_the_flags_over_the_runs_eval_settings() {
        let mut cfg = RunConfig::default();
        cfg.eval.tokens = 1000;
        cfg.data.text_field = "body".into();
        let spec = args("--run r --lengths 1,3 --copy-trials 0").spec(&cfg).unwrap();
        let want =
            EvalSettings { lengths: vec![1, 3], tokens: 1000, copy_trials: 0, ..EvalSettings::default() };
        assert_eq!(spec.settings, want);
        assert_eq!((spec.data, spec.text_field, spec.rope_scaling, spec.factor), (None, None, None, None));
        assert_eq!(spec.query_block, 512);
        // another corpus: its path absolute, the field it is read with; scaling: the factor
        // defaults to the longest length
        let spec = args("--run r --data books.txt --rope-scaling yarn").spec(&cfg).unwrap();
        assert!(spec.data.as_ref().is_some_and(|p| p.is_absolute() && p.ends_with("books.txt")));
        assert_eq!(spec.text_field.as_deref(), Some("body"));
        assert_eq!((spec.rope_scaling.as_deref(), spec.factor), (Some("yarn"), Some(8.0)));
        let err = args("--run r --depths 0.5,2").spec(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("eval.depths (--depths): 2 is out of range"), "{err}");
        let err = args("--run r --passkey-trials 3 --lengths 0").spec(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("eval.lengths (--lengths):"), "{err}");
    }
}
