//! `zoo compare`: trains each encoding for each seed, runs eval and analyze, and writes
//! `report.md` with tables (mean ± spread over seeds), CSVs of every number and SVG plots.
//! Re-running skips finished runs and steps, and resumes interrupted training.

use std::path::{Path, PathBuf};

use crate::analyze::{AnalyzeArgs, AnalyzeResult};
use crate::copy::CopyCell;
use crate::eval::{EvalArgs, LengthResult};
use crate::passkey::PasskeyCell;
use crate::sweep::{RunLock, Shard, SlurmArgs, SweepPlan};
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
    /// Train each run data-parallel on these devices (`zoo train --devices`); evaluation runs
    /// on the first.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<String>,
    /// Override the preset's data (a file or directory of .txt / .jsonl files, optionally .gz).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override the preset's tokenizer: bytes | bpe:<vocab> | a path to a tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Evaluate perplexity on this corpus instead of each run's held-out split.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Print the plan (one line per run: index, encoding, seed, directory) and exit.
    #[arg(long)]
    pub list: bool,
    /// Run only the runs of shard i of n (`i/n`, 0 ≤ i < n: the runs whose index is i mod n)
    /// or `slurm` (from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT); shards may run at once
    /// on a shared filesystem. Then `zoo compare` without --shard writes the report.
    #[arg(long, conflicts_with = "slurm")]
    pub shard: Option<String>,
    #[command(flatten)]
    pub slurm: SlurmArgs,
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

/// Runs the sweep (or its shard) and writes the report; `None` for `--list`, `--slurm` and
/// `--shard`, which write no report.
pub fn run(a: CompareArgs) -> Result<Option<PathBuf>> {
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
    // evaluation runs on the first training device (`all`: the one `auto` picks, cuda:0); the
    // list itself is checked where it trains (a Slurm plan is written where it may not exist)
    let eval_device = match a.devices.as_deref().map(str::trim) {
        Some("all") => "auto".to_string(),
        Some(list) => list.split(',').next().unwrap_or("auto").trim().to_string(),
        None => a.device.clone(),
    };
    let runs = crate::sweep::plan(&a.encodings, a.seeds, &a.out);
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    if a.list {
        println!("{} runs in {}:", runs.len(), a.out.display());
        for r in &runs {
            println!("{:>4}  {}  seed {}  {}", r.index, r.encoding, r.seed, r.dir.display());
        }
        return Ok(None);
    }
    let absolute = |p: &Option<PathBuf>| p.as_ref().map(std::path::absolute).transpose();
    let sweep = SweepPlan {
        preset: preset.clone(),
        encodings: a.encodings.clone(),
        seeds: a.seeds,
        lengths: a.lengths.clone(),
        data: absolute(&a.data)?,
        tokenizer: a.tokenizer.as_deref().map(crate::sweep::absolute_tokenizer).transpose()?,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    sweep.check_or_save(&a.out)?;
    let preset_path = a.out.join("preset.toml");
    write_atomic(&preset_path, preset.as_bytes())?;
    if a.slurm.slurm {
        let submit =
            crate::sweep::write_sbatch(&a.out, &zoo_args(&a, &sweep, &preset_path)?, runs.len(), &a.slurm)?;
        println!(
            "wrote {0}/sweep.sbatch ({1} array tasks) and {0}/report.sbatch; submit with:\n{submit}",
            a.out.display(),
            runs.len()
        );
        if a.slurm.gpus_per_task > 1 && a.devices.is_none() {
            println!(
                "note: --gpus-per-task {} without --devices: each run trains on one of them; add --devices all to train data-parallel on all",
                a.slurm.gpus_per_task
            );
        }
        return Ok(None);
    }
    let total = runs.len();
    let mut results = Vec::new();
    for planned in runs.iter().filter(|r| shard.is_none_or(|s| s.holds(r))) {
        let (enc, seed, run) = (&planned.encoding, planned.seed, &planned.dir);
        if crate::signals::stop_requested() {
            bail!("stopped by a signal before {enc} seed {seed}; the same command continues the sweep");
        }
        let _lock = RunLock::acquire(run)?;
        if run.join("config.toml").exists() {
            crate::eval::load_run(run)?; // results of another format are not reused
        }
        let finished = run.join("model.safetensors").exists();
        println!(
            "[{}/{total}] {enc} seed {seed}: {}",
            planned.index + 1,
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
                devices: a.devices.clone(),
                resume: run.join("checkpoint").exists(),
                tui: false,
            })?;
            if crate::signals::stop_requested() {
                bail!(
                    "stopped by a signal after training {enc} seed {seed}; the same command continues the sweep"
                );
            }
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
            device: eval_device.clone(),
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
                device: eval_device.clone(),
            })?;
        }
        if shard.is_some() {
            continue;
        }
        let read = |name: &str| -> Result<String> {
            std::fs::read_to_string(run.join(name))
                .with_context(|| format!("reading {}", run.join(name).display()))
        };
        results.push(RunResults {
            encoding: enc.clone(),
            seed,
            eval: serde_json::from_str(&read(&eval_json)?)?,
            passkey: serde_json::from_str(&read(&passkey_json)?)?,
            copy: serde_json::from_str(&read(&copy_json)?)?,
            analyze: serde_json::from_str(&read("analyze.json")?)?,
            tokens_per_s: tokens_per_s(run),
        });
    }
    if let Some(s) = shard {
        println!(
            "shard {}/{} done; once every shard is, `zoo compare` with the same arguments and no --shard writes the report",
            s.index, s.count
        );
        return Ok(None);
    }
    let report = crate::report::write(&a.out, &a.preset, &a.encodings, &a.lengths, &results, a.seeds)?;
    println!("report: {}", report.display());
    Ok(Some(report))
}

/// The `zoo compare` arguments that reproduce this sweep from any directory (absolute paths;
/// the preset as the file saved in --out).
fn zoo_args(a: &CompareArgs, sweep: &SweepPlan, preset: &Path) -> Result<Vec<String>> {
    let join = |v: Vec<String>| v.join(",");
    let mut args = vec![
        "compare".to_string(),
        "--preset".into(),
        std::path::absolute(preset)?.display().to_string(),
        "--encodings".into(),
        join(a.encodings.clone()),
        "--seeds".into(),
        a.seeds.to_string(),
        "--lengths".into(),
        join(a.lengths.iter().map(|l| l.to_string()).collect()),
        "--out".into(),
        std::path::absolute(&a.out)?.display().to_string(),
    ];
    match &a.devices {
        Some(d) => args.extend(["--devices".into(), d.clone()]),
        None => args.extend(["--device".into(), a.device.clone()]),
    }
    for (flag, value) in [
        ("--data", sweep.data.as_ref().map(|p| p.display().to_string())),
        ("--tokenizer", sweep.tokenizer.clone()),
        (
            "--eval-data",
            a.eval_data.as_ref().map(std::path::absolute).transpose()?.map(|p| p.display().to_string()),
        ),
    ] {
        if let Some(v) = value {
            args.extend([flag.to_string(), v]);
        }
    }
    Ok(args)
}

pub(crate) fn summarise(v: &[f64]) -> String {
    let (m, s) = mean_spread(v);
    if m.is_nan() { "–".into() } else { format!("{m:.3} ± {s:.3}") }
}
