//! `zoo compare`: trains each encoding for each seed, runs eval and analyze, and writes
//! `report.md` with tables (mean ± spread over seeds), CSVs of every number and SVG plots.
//! Re-running skips finished runs and steps, and resumes interrupted training.

use std::path::{Path, PathBuf};

use crate::analyze::{AnalyzeArgs, AnalyzeResult};
use crate::copy::CopyCell;
use crate::eval::{EvalArgs, LengthResult};
use crate::passkey::PasskeyCell;
use crate::train::{TrainArgs, write_atomic};
use anyhow::{Context, Result, bail};
use clap::Args;

const PRESETS: &[(&str, &str)] = &[
    ("micro", include_str!("../configs/micro.toml")),
    ("quick", include_str!("../configs/quick.toml")),
    ("small", include_str!("../configs/small.toml")),
];

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// micro (a minute) | quick (well under an hour on 2 cores) | small (a real experiment) |
    /// a run configuration file (e.g. experiments/configs/papers/hope-hyp-scaled.toml).
    #[arg(long, default_value = "quick")]
    pub preset: String,
    #[arg(long, value_delimiter = ',', default_value = "nope,rope,hope-hf,hope-hyp,alibi,p-rope")]
    pub encodings: Vec<String>,
    /// Number of seeds per encoding (seeds 0, 1, …).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Evaluation lengths as multiples of the training length.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub lengths: Vec<usize>,
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Override the preset's data (a file or directory of .txt / .jsonl files, optionally .gz).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override the preset's tokenizer: bytes | bpe:<vocab> | a path to a tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Evaluate perplexity on this corpus instead of each run's held-out split.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
}

/// Everything measured for one (encoding, seed) run.
#[derive(Debug)]
pub struct RunResults {
    pub encoding: String,
    pub seed: u64,
    pub eval: Vec<LengthResult>,
    pub passkey: Vec<PasskeyCell>,
    pub copy: Vec<CopyCell>,
    pub analyze: Vec<AnalyzeResult>,
    pub tokens_per_s: f64,
}

/// Mean training tokens/s from a run's `metrics.csv`.
fn tokens_per_s(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap_or_default();
    let v: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(",train,"))
        .filter_map(|l| l.rsplit(',').next()?.parse().ok())
        .collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn mean_spread(v: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    (m, (hi - lo) / 2.0)
}

pub fn run(a: CompareArgs) -> Result<PathBuf> {
    let preset: String = match PRESETS.iter().find(|(n, _)| *n == a.preset) {
        Some((_, text)) => text.to_string(),
        None if Path::new(&a.preset).is_file() => {
            let text =
                std::fs::read_to_string(&a.preset).with_context(|| format!("--preset {}", a.preset))?;
            crate::train::RunConfig::from_toml(&text, &a.preset)?.validate()?;
            text
        }
        None => {
            bail!("--preset: unknown preset `{}` (allowed: micro, quick, small, or a config file)", a.preset)
        }
    };
    if a.seeds == 0 || a.encodings.is_empty() {
        bail!("--seeds and --encodings: at least one of each is required");
    }
    for e in &a.encodings {
        pezoo_encodings::EncodingConfig::from_name_or_file(e)?;
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let preset_path = a.out.join("preset.toml");
    write_atomic(&preset_path, preset.as_bytes())?;
    let total = a.encodings.len() as u64 * a.seeds;
    let mut runs = Vec::new();
    let mut done = 0;
    for enc in &a.encodings {
        for seed in 0..a.seeds {
            done += 1;
            let run = a.out.join(enc.replace(['/', '.'], "_")).join(format!("seed{seed}"));
            if run.join("config.toml").exists() {
                crate::eval::load_run(&run)?; // results of another format are not reused
            }
            let finished = run.join("model.safetensors").exists();
            println!(
                "[{done}/{total}] {enc} seed {seed}: {}",
                if finished { "trained, skipping" } else { "training" }
            );
            if !finished {
                crate::train::run(TrainArgs {
                    config: Some(preset_path.clone()),
                    encoding: Some(enc.clone()),
                    data: a.data.clone(),
                    tokenizer: a.tokenizer.clone(),
                    steps: None,
                    seed: Some(seed),
                    out: run.clone(),
                    device: a.device.clone(),
                    resume: run.join("checkpoint").exists(),
                    tui: false,
                })?;
            }
            let has = |f: &str| finished && run.join(f).exists();
            let eval = EvalArgs {
                run: run.clone(),
                lengths: a.lengths.clone(),
                tokens: 8192,
                data: a.eval_data.clone(),
                text_field: None,
                rope_scaling: None,
                factor: None,
                buckets: 16,
                query_block: 512,
                device: a.device.clone(),
                // ≥ 20 prompts per reported cell (per run: 3 depths × 10; copy: 8 per distance)
                passkey_trials: 10,
                depths: vec![0.0, 0.5, 1.0],
                copy_trials: 8,
            };
            let sfx = crate::eval::output_suffix(&eval);
            let (eval_json, passkey_json, copy_json) =
                (format!("eval{sfx}.json"), format!("passkey{sfx}.json"), format!("copy{sfx}.json"));
            if !(has(&eval_json) && has(&passkey_json) && has(&copy_json)) {
                crate::eval::run(eval)?;
            }
            if !has("analyze.json") {
                crate::analyze::run(AnalyzeArgs {
                    run: run.clone(),
                    lengths: vec![1, 2],
                    windows: 4,
                    device: a.device.clone(),
                })?;
            }
            let read = |name: &str| -> Result<String> {
                std::fs::read_to_string(run.join(name))
                    .with_context(|| format!("reading {}", run.join(name).display()))
            };
            runs.push(RunResults {
                encoding: enc.clone(),
                seed,
                eval: serde_json::from_str(&read(&eval_json)?)?,
                passkey: serde_json::from_str(&read(&passkey_json)?)?,
                copy: serde_json::from_str(&read(&copy_json)?)?,
                analyze: serde_json::from_str(&read("analyze.json")?)?,
                tokens_per_s: tokens_per_s(&run),
            });
        }
    }
    let report = crate::report::write(&a.out, &a.preset, &a.encodings, &a.lengths, &runs, a.seeds)?;
    println!("report: {}", report.display());
    Ok(report)
}

pub(crate) fn summarise(v: &[f64]) -> String {
    let (m, s) = mean_spread(v);
    if m.is_nan() { "–".into() } else { format!("{m:.3} ± {s:.3}") }
}
