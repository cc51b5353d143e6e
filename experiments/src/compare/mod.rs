//! `zoo compare`: trains each encoding for each seed, runs eval and analyze, and writes
//! `report.md` with tables (mean ± spread over seeds), CSVs of every number and SVG plots.
//! Re-running skips finished runs and steps, and resumes interrupted training.

use std::path::{Path, PathBuf};

pub mod sweep;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::analyze::AnalyzeArgs;
use crate::eval::EvalArgs;
use crate::run::results::{AnalyzeOutput, EvalOutput, RunResults, mean_tokens_per_s};
use crate::run::{AnalyzeSettings, EvalSettings, RunConfig, RunDir};
use crate::train::TrainArgs;
use crate::write_atomic;
use sweep::{RunLock, Shard, SlurmArgs, SweepPlan};

const PRESETS: &[(&str, &str)] = &[
    ("micro", include_str!("../../configs/micro.toml")),
    ("quick", include_str!("../../configs/quick.toml")),
    ("small", include_str!("../../configs/small.toml")),
    ("retrieval", include_str!("../../configs/retrieval.toml")),
];

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// micro (a minute) | quick (well under an hour on 2 cores) | retrieval (learns passkey and
    /// copy; 8–13 min per run) | small (a real experiment) | a run configuration file (e.g.
    /// experiments/configs/papers/hope-hyp-scaled.toml).
    #[arg(long, default_value = "quick")]
    pub preset: String,
    #[arg(long, value_delimiter = ',', default_value = "nope,rope,hope-hf,hope-hyp,alibi,p-rope")]
    pub encodings: Vec<String>,
    /// Number of seeds per encoding (seeds 0, 1, …).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Evaluation lengths as multiples of the training length (default: the preset's
    /// eval.lengths). Other evaluation settings are the preset's `[eval]` and `[analyze]`.
    #[arg(long, value_delimiter = ',')]
    pub lengths: Option<Vec<usize>>,
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

/// Runs the sweep (or its shard) and writes the report; `None` for `--list`, `--slurm` and
/// `--shard`, which write no report.
pub fn run(a: CompareArgs) -> Result<Option<PathBuf>> {
    let preset: String = match PRESETS.iter().find(|(n, _)| *n == a.preset) {
        Some((_, text)) => text.to_string(),
        None if Path::new(&a.preset).is_file() => {
            std::fs::read_to_string(&a.preset).with_context(|| format!("--preset {}", a.preset))?
        }
        None => {
            bail!("--preset: unknown preset `{}` (allowed: micro, quick, small, or a config file)", a.preset)
        }
    };
    let preset_cfg = RunConfig::from_toml(&preset, &a.preset)?;
    preset_cfg.validate()?;
    // what each run is evaluated and analysed with: the preset's [eval] (lengths: --lengths)
    // and [analyze]; saved results are reused only for the same settings
    let mut eval_settings = preset_cfg.eval.clone();
    if let Some(l) = &a.lengths {
        eval_settings.lengths = l.clone();
        eval_settings.validate().context("--lengths")?;
    }
    let stages =
        Stages { eval: eval_settings, analyze: preset_cfg.analyze.clone(), eval_data: a.eval_data.clone() };
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
    let runs = sweep::plan(&a.encodings, a.seeds, &a.out);
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
        data: absolute(&a.data)?,
        tokenizer: a.tokenizer.as_deref().map(sweep::absolute_tokenizer).transpose()?,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    sweep.check_or_save(&a.out)?;
    let preset_path = a.out.join("preset.toml");
    write_atomic(&preset_path, preset.as_bytes())?;
    if a.slurm.slurm {
        let submit = sweep::write_sbatch(&a.out, &zoo_args(&a, &sweep, &preset_path)?, runs.len(), &a.slurm)?;
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
        let dir = RunDir::new(run);
        if dir.config_file().exists() {
            dir.load_config()?; // results of another format are not reused
        }
        let finished = dir.is_trained();
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
                resume: dir.checkpoint_dir().exists(),
                tui: false,
            })?;
            if crate::signals::stop_requested() {
                bail!(
                    "stopped by a signal after training {enc} seed {seed}; the same command continues the sweep"
                );
            }
        }
        let (eval, analyze) = stages.run(&dir, finished, &eval_device)?;
        if shard.is_none() {
            results.push(RunResults {
                encoding: enc.clone(),
                seed,
                eval: eval.perplexity,
                passkey: eval.passkey,
                copy: eval.copy,
                analyze: analyze.lengths,
                tokens_per_s: mean_tokens_per_s(&dir.metrics()),
                compute_path: dir.train_record().map_or_else(|| "unrecorded".into(), |r| r.compute_path),
            });
        }
    }
    if let Some(s) = shard {
        println!(
            "shard {}/{} done; once every shard is, `zoo compare` with the same arguments and no --shard writes the report",
            s.index, s.count
        );
        return Ok(None);
    }
    let report = crate::report::write(
        &a.out,
        &a.preset,
        &a.encodings,
        &stages.eval.lengths,
        &stages.analyze.lengths,
        &results,
        a.seeds,
    )?;
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
        "--out".into(),
        std::path::absolute(&a.out)?.display().to_string(),
    ];
    if let Some(l) = &a.lengths {
        args.extend(["--lengths".into(), join(l.iter().map(|l| l.to_string()).collect())]);
    }
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

/// The stages after training, with the settings the sweep asks for.
struct Stages {
    eval: EvalSettings,
    analyze: AnalyzeSettings,
    eval_data: Option<PathBuf>,
}

impl Stages {
    /// Evaluates and analyses a trained run, reusing a saved result only when it was measured
    /// with these settings on this model (`trained_before`: the model is not the one just trained).
    fn run(&self, dir: &RunDir, trained_before: bool, device: &str) -> Result<(EvalOutput, AnalyzeOutput)> {
        let st = &self.eval;
        let eval = EvalArgs {
            run: dir.path().to_path_buf(),
            lengths: Some(st.lengths.clone()),
            tokens: Some(st.tokens),
            buckets: Some(st.buckets),
            passkey_trials: Some(st.passkey_trials),
            depths: Some(st.depths.clone()),
            copy_trials: Some(st.copy_trials),
            data: self.eval_data.clone(),
            text_field: None,
            rope_scaling: None,
            factor: None,
            query_block: 512,
            device: device.to_string(),
        };
        let want = eval.spec(&dir.load_config()?)?;
        let eval = match dir.eval(&crate::eval::output_suffix(&eval)) {
            Some(saved) if trained_before && saved.spec == want => saved,
            _ => crate::eval::run(eval)?,
        };
        let analyze = match dir.analyze() {
            Some(saved) if trained_before && saved.settings == self.analyze => saved,
            _ => crate::analyze::run(AnalyzeArgs {
                run: dir.path().to_path_buf(),
                lengths: Some(self.analyze.lengths.clone()),
                windows: Some(self.analyze.windows),
                device: device.to_string(),
            })?,
        };
        Ok((eval, analyze))
    }
}
