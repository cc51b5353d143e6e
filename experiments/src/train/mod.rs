//! `zoo train`: trains the LM through burn-train's Learner on any device, with checkpoints,
//! resume, a resolved `config.toml`, `metrics.csv` and final `model.safetensors` in `--out`.

pub mod renderer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::tensor::distributed::{DistributedConfig, ReduceOperation};
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, MultiDeviceOptim, SupervisedTraining, TrainingStrategy,
};
use clap::Args;
use pezoo_encodings::EncodingConfig;
use pezoo_models::{
    Corpus, EarlyStop, Lm, LmBatcher, SequentialWindows, StepPlan, Tokenizer, TokenizerSpec, TrainLoader,
    expected_coverage, token_stream,
};

pub use crate::run::RunConfig;
use crate::run::checkpoints::{
    DataFingerprint, check_data, checkpoint_step, drop_checkpoints_after, last_checkpoint, record_data,
    record_epoch_end,
};
use crate::run::{RUN_FORMAT, RunDir, TrainRecord};
use crate::write_atomic;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Run configuration (TOML with [model], [train], [data]); defaults if omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the model's encoding: a kind (`hope-hf`) or a TOML file.
    #[arg(long)]
    pub encoding: Option<String>,
    /// Override [data].path: a file or a directory of .txt / .jsonl files (optionally .gz).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override [data].tokenizer: bytes | bpe:<vocab> | a path to a tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Override [train].steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override [train].seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory (config.toml, metrics.csv, checkpoint/, model.safetensors).
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// auto | flex | ndarray | wgpu | cuda | … , optionally indexed: cuda:1 (see `zoo devices`).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Data-parallel training on several devices of one backend: a list (cuda:0,cuda:1) or
    /// `all`. The global batch stays the config's (batch_size × grad_accum sequences per step,
    /// split evenly over the devices), so the run is the same run as on one device.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<String>,
    /// Continue from the last complete checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// burn-train's terminal UI (only when stdout is a terminal).
    #[arg(long)]
    pub tui: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub valid_loss: f64,
    pub seconds: f64,
    pub params: usize,
}

/// Resolves the run configuration from the file and the command-line overrides.
pub fn resolve(args: &TrainArgs) -> Result<RunConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?;
            RunConfig::from_toml(&text, &p.display().to_string())?
        }
        None => RunConfig::default(),
    };
    cfg.format = RUN_FORMAT; // a config file describes a run this code will write
    if let Some(e) = &args.encoding {
        cfg.model.encoding = EncodingConfig::from_name_or_file(e)?;
    }
    if let Some(d) = &args.data {
        cfg.data.path = Some(d.clone());
    }
    if let Some(s) = args.steps {
        if s == 0 {
            bail!("--steps: 0 is out of range (allowed: ≥ 1)");
        }
        cfg.train.steps = s;
        if cfg.train.warmup_steps > s / 10 {
            let w = s / 10;
            println!(
                "--steps {s}: warmup_steps {} → {w} (at most a tenth of the steps)",
                cfg.train.warmup_steps
            );
            cfg.train.warmup_steps = w;
        }
        if cfg.train.checkpoint_every > s {
            println!("--steps {s}: checkpoint_every {} → {s} (must be ≤ steps)", cfg.train.checkpoint_every);
            cfg.train.checkpoint_every = s;
        }
    }
    if let Some(s) = args.seed {
        cfg.train.seed = s;
    }
    if let Some(t) = &args.tokenizer {
        cfg.data.tokenizer = t.clone();
    }
    // Data paths are stored absolute, so `zoo eval` from any directory reads the same text.
    // (A relative path is relative to the working directory, as on the command line.)
    if let Some(p) = &cfg.data.path {
        cfg.data.path = Some(std::path::absolute(p).with_context(|| format!("data.path {}", p.display()))?);
    }
    if let TokenizerSpec::File(p) = TokenizerSpec::parse(&cfg.data.tokenizer)? {
        let abs = std::path::absolute(&p).with_context(|| format!("data.tokenizer {}", p.display()))?;
        cfg.data.tokenizer = abs.display().to_string();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// A new run's tokenizer: bytes, a BPE learned on the training split, or a `tokenizer.json`.
/// A resumed run reuses the `tokenizer.json` it saved.
pub fn new_tokenizer(cfg: &RunConfig, corpus: &Corpus, saved: Option<&Path>) -> Result<Tokenizer> {
    let spec = TokenizerSpec::parse(&cfg.data.tokenizer)?;
    if let Some(p) = saved.filter(|p| p.exists() && spec != TokenizerSpec::Bytes) {
        return Ok(Tokenizer::from_file(p)?);
    }
    Ok(match spec {
        TokenizerSpec::Bytes => Tokenizer::Bytes,
        TokenizerSpec::Bpe(vocab) => {
            let started = Instant::now();
            let tok = Tokenizer::learn_bpe(&corpus.train, vocab)?;
            println!(
                "learned a {vocab}-token byte-level BPE on the training split in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            tok
        }
        TokenizerSpec::File(p) => Tokenizer::from_file(&p).context("data.tokenizer")?,
    })
}

/// Entropy (nats) of the token frequencies: the loss of a model that ignores context.
pub fn unigram_entropy(tokens: &[u32]) -> f64 {
    let mut counts = std::collections::HashMap::<u32, usize>::new();
    for &t in tokens {
        *counts.entry(t).or_default() += 1;
    }
    let n = tokens.len() as f64;
    counts.values().map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum()
}

/// Warm-up (linear, from lr/warmup) then cosine to `min_lr`, over exactly `steps` optimizer
/// steps: the cosine's end is the last step, so the rate never rises after warm-up.
pub fn lr_schedule(t: &crate::run::config::TrainConfig) -> Result<ModuleLrScheduler> {
    let warm = t.warmup_steps.max(1).min(t.steps);
    // The cosine's first call is its iteration 0 (= lr) and its last, step `steps`, is
    // iteration steps − warm − 1: ending there at min_lr, it never turns back up.
    let cosine = (t.steps - warm).saturating_sub(1).max(1);
    SequentialLrSchedulerConfig::new(
        vec![
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(t.lr / warm as f64, t.lr, warm)),
            LrSchedulerConfig::Cosine(
                CosineAnnealingLrSchedulerConfig::new(t.lr, cosine).with_min_lr(t.min_lr),
            ),
        ],
        vec![warm],
    )
    .init()
    .map_err(|e| anyhow::anyhow!("learning-rate schedule: {e}"))
}

/// How a step is spread over several devices.
struct DataParallel {
    devices: usize,
    strategy: ExecutionStrategy,
    banner: String,
}

/// burn-train's strategy for `devices` (None for one): DDP (NCCL all-reduce, summing) on CUDA,
/// otherwise multi-device with the optimizer on the first device. Either way each device
/// computes its share of the step's sequences with its loss weighted by that share, so the
/// summed gradient is the single-device one; the clip and the optimizer step run once on it.
fn data_parallel(devices: &[(Device, String)], per_step: usize) -> Result<Option<DataParallel>> {
    let n = devices.len();
    if n == 1 {
        return Ok(None);
    }
    if !per_step.is_multiple_of(n) {
        bail!(
            "--devices: {n} devices cannot share a step of {per_step} sequences (train.batch_size × train.grad_accum) evenly; use a device count that divides {per_step}"
        );
    }
    let names: Vec<&str> = devices.iter().map(|(_, p)| p.as_str()).collect();
    let list: Vec<Device> = devices.iter().map(|(d, _)| d.clone()).collect();
    // the same device twice (`cuda,cuda:0` too): compared as devices, not as names
    let repeated = list.iter().enumerate().any(|(i, d)| list[..i].contains(d));
    let cuda = names.iter().all(|p| p.starts_with("cuda"));
    // NCCL needs distinct GPUs: a repeated device takes the multi-device path
    let (strategy, how) = if cuda && !repeated {
        let config = DistributedConfig { all_reduce_op: ReduceOperation::Sum };
        (ExecutionStrategy::ddp(list, config), "DDP (NCCL all-reduce)")
    } else {
        (
            ExecutionStrategy::multi(list, MultiDeviceOptim::OptimMainDevice),
            "multi-device (optimizer on the first)",
        )
    };
    let same = if repeated {
        "; a device listed twice shares its compute, so this exercises the path without a speed-up"
    } else {
        ""
    };
    let banner = format!(
        "data parallel over {n} devices ({}), {how}: global batch {per_step} sequences = {} per device × {n}, gradients summed and applied once per step{same}",
        names.join(", "),
        per_step / n
    );
    Ok(Some(DataParallel { devices: n, strategy, banner }))
}

/// AdamW with parameter groups: decay on weight matrices and embeddings only
/// ([`pezoo_models::DECAY_PATTERN`]); norms, biases and encoding parameters take none.
pub fn optimizer(t: &crate::run::config::TrainConfig) -> burn::optim::ModuleOptimizer {
    AdamWConfig::new().with_weight_decay(0.0).init().with_group(
        Lm::decay_group(),
        AdamWConfig::new().with_weight_decay(t.weight_decay as f32).build(),
        None,
    )
}

pub fn run(args: TrainArgs) -> Result<TrainSummary> {
    let mut cfg = resolve(&args)?;
    let out = args.out.clone();
    let run = RunDir::new(&out);
    let old_config = if args.resume && run.config_file().exists() {
        Some(run.load_config()?) // a run of another format is refused before anything loads
    } else {
        None
    };
    let resume_from = if args.resume { last_checkpoint(&run) } else { None };
    if args.resume && resume_from.is_none() {
        println!("--resume: no complete checkpoint in {}, starting from scratch", out.display());
        if run.checkpoint_dir().is_dir() {
            drop_checkpoints_after(&run, 0)?; // an earlier attempt's partial checkpoints
        }
    }
    if !args.resume && run.checkpoint_dir().exists() {
        bail!(
            "--out {} already holds a run: pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    // Everything that can fail on the data fails here, before the run directory is written.
    let corpus = cfg.corpus()?;
    let saved_tokenizer = run.tokenizer_file();
    let tok = new_tokenizer(&cfg, &corpus, resume_from.map(|_| saved_tokenizer.as_path()))?;
    cfg.model.vocab_size = tok.vocab_size();
    cfg.validate()?;
    let seq = cfg.model.max_seq_len;
    let train_tokens = Arc::new(token_stream(&corpus.train, &tok));
    let valid_tokens = Arc::new(token_stream(&corpus.valid, &tok));
    if train_tokens.len() < 2 * (seq + 1) || valid_tokens.len() < seq + 1 {
        bail!(
            "data: {} train and {} validation tokens are too few for max_seq_len = {seq}",
            train_tokens.len(),
            valid_tokens.len()
        );
    }
    let t = &cfg.train;
    let devices = match &args.devices {
        Some(list) => crate::device::select_many(list)?,
        None => vec![crate::device::select(&args.device)?],
    };
    let (device, picked) = devices[0].clone();
    let parallel = data_parallel(&devices, t.batch_size * t.grad_accum)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let resolved = toml::to_string(&cfg).context("serialising the resolved config")?;
    let plan = StepPlan {
        steps: t.steps,
        steps_per_epoch: t.checkpoint_every,
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
    };
    let fingerprint = DataFingerprint::of(&train_tokens, &valid_tokens);
    if let Some(e) = resume_from {
        // what trains must be the same; [eval] and [analyze] may change
        if let Some(old) = &old_config {
            let (o, n) = (old.training(), cfg.training());
            let differs = [
                ("[model]", o.model != n.model),
                ("[train]", o.train != n.train),
                ("[data]", o.data != n.data),
                ("format", o.format != n.format),
            ];
            if let Some((section, _)) = differs.iter().find(|(_, d)| *d) {
                bail!(
                    "--resume: {section} differs from the one in {} (resume with the same configuration, or choose another --out)",
                    run.config_file().display()
                );
            }
        }
        check_data(&run, &fingerprint)?; // an edited corpus or another generator: refused
        let step = checkpoint_step(&run, t, e).unwrap_or_default(); // recorded: see last_checkpoint
        drop_checkpoints_after(&run, e)?;
        println!("resuming from checkpoint {e} (step {step})");
        run.truncate_metrics(step)?;
    } else {
        let _ = std::fs::remove_file(run.metrics_file());
        record_data(&run, &fingerprint)?;
    }
    if let Some(json) = tok.to_json() {
        write_atomic(&saved_tokenizer, json.as_bytes())?;
    }
    write_atomic(&run.config_file(), resolved.as_bytes())?;
    run.clear_results()?; // measured on the model this run replaces

    let text_bytes: usize = corpus.train.iter().map(|d| d.len()).sum();
    println!(
        "tokenizer {}: {} tokens; {:.3} tokens per byte of training text",
        cfg.data.tokenizer,
        tok.vocab_size(),
        train_tokens.len() as f64 / text_bytes.max(1) as f64
    );
    println!("unigram entropy of the training tokens: {:.4} nats/token", unigram_entropy(&train_tokens));
    let items_per_step = plan.items_per_step();
    let seen = t.steps * items_per_step * seq;
    let coverage = expected_coverage(train_tokens.len(), seq + 1, t.steps * items_per_step);
    println!(
        "the run sees {seen} tokens = {:.2} epochs of the {}-token training split (expected coverage {:.1}%)",
        seen as f64 / train_tokens.len() as f64,
        train_tokens.len(),
        100.0 * coverage
    );
    let done = resume_from.and_then(|e| checkpoint_step(&run, t, e)).unwrap_or(0);
    let first_epoch = resume_from.map_or(1, |e| e + 1);
    // A signal (SIGINT, SIGTERM, SIGHUP) ends the epoch after the current step: burn-train validates
    // and checkpoints there, and the next epoch interrupts the Learner.
    let training_guard = crate::signals::Training::start();
    let interrupter = Interrupter::new();
    let halt = interrupter.clone();
    let record_run = run.clone();
    let dl_train = TrainLoader::new(train_tokens.clone(), seq, plan, t.seed, (first_epoch, done), &device)
        .with_early_stop(EarlyStop {
            requested: crate::signals::stop_flag(),
            halt: Arc::new(move || halt.stop(Some("signal"))),
        })
        .on_epoch_end(Arc::new(move |epoch, step| {
            // a checkpoint without its step is never resumed from (see `last_checkpoint`)
            if let Err(e) = record_epoch_end(&record_run, epoch, step) {
                eprintln!("warning: checkpoint {epoch} will not be resumable: {e:#}");
            }
        }));
    let valid = SequentialWindows::new(valid_tokens.clone(), seq, t.valid_batches * t.batch_size);
    let dl_valid = DataLoaderBuilder::new(LmBatcher).batch_size(t.batch_size).build(valid);

    for (d, _) in &devices {
        d.seed(t.seed);
    }
    let ad = device.clone().autodiff();
    let model = Lm::new(&cfg.model, &ad)?.with_grad_clip(t.grad_clip);
    let params = model.num_params(); // the LM's and the encoding's parameters
    let compute_path = model.compute_path(&ad);
    println!(
        "device {picked} | {compute_path} | encoding {} | {params} parameters | data {} ({} train / {} valid tokens) | {} steps × {} sequences × {} tokens",
        cfg.model.encoding.kind(),
        corpus.name,
        train_tokens.len(),
        valid_tokens.len(),
        t.steps,
        items_per_step,
        seq
    );

    if let Some(p) = &parallel {
        println!("{}", p.banner);
    }
    let served = dl_train.served();
    let mut training = SupervisedTraining::new(&out, Arc::new(dl_train), dl_valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .with_interrupter(interrupter)
        .num_epochs(first_epoch - 1 + plan.epochs_after(done));
    if let Some(e) = resume_from {
        training = training.checkpoint(e);
    }
    let events_per_step = parallel.as_ref().map_or(1, |p| p.devices);
    if let Some(p) = parallel {
        training = training.with_training_strategy(TrainingStrategy::Default(p.strategy));
    }
    use std::io::IsTerminal;
    if !(args.tui && std::io::stdout().is_terminal()) {
        training = training.renderer(Box::new(renderer::LineRenderer::new(
            run.metrics_file(),
            items_per_step,
            seq,
            t.log_every,
            plan,
            done,
            events_per_step,
        )));
    }
    let started = Instant::now();
    let learner = Learner::new(model, optimizer(t), lr_schedule(t)?);
    // A panic inside a step (out of memory, a caller bug) ends the run like an error: one line,
    // the step reached and how to resume.
    let result = crate::quiet_panics(|| training.launch(learner));
    drop(training_guard); // from here a signal exits at once
    let seconds = started.elapsed().as_secs_f64();
    let reached = served.load(std::sync::atomic::Ordering::SeqCst);
    let stopped = match &result {
        Err(panic) => Some(format!("by a panic: {panic}")),
        Ok(r) => match (&r.error, reached < t.steps) {
            (Some(err), _) => Some(format!("by an error: {err}")),
            (None, true) => Some(
                r.interrupted
                    .as_ref()
                    .and_then(|i| i.reason.clone())
                    .map_or("early".into(), |r| format!("({r})")),
            ),
            (None, false) => None,
        },
    };
    if let Some(why) = stopped {
        let resume = match last_checkpoint(&run) {
            Some(e) => {
                let step = checkpoint_step(&run, t, e).unwrap_or_default();
                format!("`--resume` continues from checkpoint {e} (step {step})")
            }
            None => "no complete checkpoint was written".into(),
        };
        let signalled = crate::signals::stop_requested();
        if signalled && matches!(&result, Ok(r) if r.error.is_none()) {
            bail!("training stopped by a signal after step {reached}/{}; {resume}", t.steps);
        }
        let why = if signalled { format!("{why} (after a stop signal)") } else { why };
        bail!("training stopped in step {reached}/{} {why}; {resume}", t.steps);
    }

    let Ok(result) = result else { unreachable!("a panic is reported above") };
    let model = result.model;
    run.save_model(&model)?;
    let valid_loss = pezoo_models::score::mean_loss(
        &model.valid(),
        &valid_tokens,
        seq,
        t.valid_batches * t.batch_size,
        &device,
    );
    run.write_train_record(&TrainRecord {
        devices: devices.iter().map(|(_, name)| name.clone()).collect(),
        compute_path: compute_path.to_string(),
        params,
        valid_loss,
        seconds,
    })?;
    println!(
        "done in {seconds:.1}s ({compute_path}, mean {:.0} tokens/s): valid loss {valid_loss:.4} (ppl {:.3}) → {}",
        crate::run::results::mean_tokens_per_s(&run.metrics()),
        valid_loss.exp(),
        run.model_file().display()
    );
    Ok(TrainSummary { out, valid_loss, seconds, params })
}
