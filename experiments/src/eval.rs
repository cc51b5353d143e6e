//! `zoo eval`: perplexity and bits per byte vs length on held-out text (or any corpus, `--data`),
//! with per-position loss curves, from a training run directory, through the run's tokenizer;
//! eval-time RoPE scaling applies to rope models.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::log_softmax;
use clap::Args;
use pezoo_encodings::EncodingConfig;
use pezoo_encodings::rotary::scaling::{RopeScaling, RopeType};
use pezoo_models::{Lm, LmBatcher, SequentialWindows, Tokens};
use serde::{Deserialize, Serialize};

use crate::train::RunConfig;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A `zoo train --out` directory (config.toml + model.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// Evaluation lengths as multiples of the training length.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub lengths: Vec<usize>,
    /// Tokens of text per length (windows = tokens / length, at least one).
    #[arg(long, default_value_t = 16_384)]
    pub tokens: usize,
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
    /// Position buckets of the per-position loss curve.
    #[arg(long, default_value_t = 16)]
    pub buckets: usize,
    /// Longest query block of attention (memory at long lengths).
    #[arg(long, default_value_t = 512)]
    pub query_block: usize,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Passkey trials per (length, depth); 0 skips the passkey grid.
    #[arg(long, default_value_t = 4)]
    pub passkey_trials: usize,
    /// Passkey depths (0 = start, 1 = just before the question).
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,1")]
    pub depths: Vec<f64>,
    /// Copy-task spans per (length, distance); 0 skips the copy task.
    #[arg(long, default_value_t = 8)]
    pub copy_trials: usize,
}

#[derive(Debug, Serialize, Deserialize)]
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

/// Mean next-token cross-entropy (nats) over up to `max_windows` non-overlapping windows.
pub fn mean_loss(model: &Lm, tokens: &Arc<Vec<u32>>, seq: usize, max_windows: usize, device: &Device) -> f64 {
    let (per_pos, n) = position_losses(model, tokens, seq, max_windows, None, device);
    if n == 0 { f64::NAN } else { per_pos.iter().sum::<f64>() / per_pos.len() as f64 }
}

/// Mean loss at each position 0..seq over the windows, and the number of windows used.
pub fn position_losses(
    model: &Lm,
    tokens: &Arc<Vec<u32>>,
    seq: usize,
    max_windows: usize,
    query_block: Option<usize>,
    device: &Device,
) -> (Vec<f64>, usize) {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let windows = SequentialWindows::new(tokens.clone(), seq, max_windows);
    let mut sums = vec![0f64; seq];
    let per_batch = (8 * 256 / seq).max(1);
    let items: Vec<Vec<u32>> = (0..windows.len()).map(|i| windows.get(i).expect("in range")).collect();
    for chunk in items.chunks(per_batch) {
        let batch = LmBatcher.batch(chunk.to_vec(), device);
        let [b, s] = batch.targets.dims();
        let (logits, _) = model.forward_full(batch.inputs, 0, query_block, false);
        let logp = log_softmax(logits, 2); // [b, s, vocab]
        let nll = logp.gather(2, batch.targets.reshape([b, s, 1])).neg().reshape([b, s]);
        let v = nll.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 losses");
        for (i, x) in v.iter().enumerate() {
            sums[i % s] += *x as f64;
        }
    }
    let n = items.len();
    (sums.into_iter().map(|x| x / n.max(1) as f64).collect(), n)
}

pub fn load_run(run: &std::path::Path) -> Result<RunConfig> {
    let path = run.join("config.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("--run: cannot read {}", path.display()))?;
    let cfg = RunConfig::from_toml(&text, &path.display().to_string())?;
    let current = crate::train::config::RUN_FORMAT;
    if cfg.format != current {
        bail!(
            "{}: written by another pezoo (run format {}; this one reads {current}); retrain it (delete the directory or choose another)",
            run.display(),
            cfg.format
        );
    }
    Ok(cfg)
}

pub fn load_model(run: &std::path::Path, cfg: &RunConfig, device: &Device) -> Result<Lm> {
    let mut model = Lm::new(&cfg.model, device)?;
    let weights = run.join("model.safetensors");
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

/// The text evaluated: `--data` (all of it; only the held-out split if it is the run's own
/// training data) or the run's held-out split.
fn eval_text(a: &EvalArgs, cfg: &RunConfig) -> Result<(String, Vec<String>)> {
    let Some(path) = &a.data else {
        return Ok(("held-out split".into(), crate::train::corpus(cfg)?.valid));
    };
    let field = a.text_field.as_deref().unwrap_or(&cfg.data.text_field);
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    if let (Some(train), Some(eval)) = (cfg.data.path.as_deref().and_then(canon), canon(path)) {
        if train == eval {
            println!("--data {} is the run's training data: evaluating its held-out split", path.display());
            return Ok(("held-out split".into(), crate::train::corpus(cfg)?.valid));
        }
        if train.starts_with(&eval) || eval.starts_with(&train) {
            bail!(
                "--data {}: overlaps the run's training data {} (evaluate other text, or omit --data for the held-out split)",
                path.display(),
                train.display()
            );
        }
    }
    let mut docs = pezoo_models::corpus::documents(path, field).context("--data")?;
    // Documents the run trained on are not evaluated (e.g. a copy of a training file).
    let hash = |d: &str| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        d.hash(&mut h);
        h.finish()
    };
    let seen: std::collections::HashSet<u64> =
        crate::train::corpus(cfg)?.train.iter().map(|d| hash(d)).collect();
    let before = docs.len();
    docs.retain(|d| !seen.contains(&hash(d)));
    if docs.len() < before {
        println!(
            "--data: {} of {before} documents are training documents of the run: left out",
            before - docs.len()
        );
    }
    if docs.is_empty() {
        bail!("--data {}: every document is one the run trained on", path.display());
    }
    Ok((path.display().to_string(), docs))
}

/// Bits per byte of `n` windows of `len` (+1) tokens from the start of `tokens` whose mean loss
/// is `loss` nats: Σ nats / Σ bytes of the targets / ln 2.
pub fn bits_per_byte(tokens: &Tokens, len: usize, n: usize, loss: f64) -> Option<f64> {
    let bytes = target_bytes(tokens, len, n);
    (bytes > 0).then(|| loss * (len * n) as f64 / bytes as f64 / std::f64::consts::LN_2)
}

/// Bytes of text the targets of the first `n` windows of `len` (+1) tokens stand for (the
/// windows of [`SequentialWindows`]: window i's targets are tokens i·len + 1 ..= (i + 1)·len).
pub fn target_bytes(tokens: &Tokens, len: usize, n: usize) -> u64 {
    (0..n).flat_map(|i| &tokens.bytes[i * len + 1..=(i + 1) * len]).map(|&b| b as u64).sum()
}

pub fn run(a: EvalArgs) -> Result<Vec<LengthResult>> {
    let mut cfg = load_run(&a.run)?;
    let train_len = cfg.model.max_seq_len;
    if a.lengths.is_empty() || a.lengths.contains(&0) {
        bail!("--lengths: multiples of the training length must be ≥ 1");
    }
    if let Some(kind) = &a.rope_scaling {
        let rope_type: RopeType =
            serde_json::from_value(serde_json::Value::String(kind.clone())).map_err(|_| {
                anyhow::anyhow!("--rope-scaling: `{kind}` (allowed: linear, ntk, dynamic, yarn, llama3)")
            })?;
        let EncodingConfig::Rope(rope) = &mut cfg.model.encoding else {
            bail!("--rope-scaling applies to rope models; this run uses `{}`", cfg.model.encoding.kind());
        };
        let mut s = RopeScaling::new(rope_type, a.factor.unwrap_or(*a.lengths.iter().max().unwrap() as f64));
        s.original_max_position_embeddings = Some(train_len);
        rope.rope_scaling = Some(s);
        cfg.model.validate()?;
    }
    let tok = crate::train::run_tokenizer(&a.run, &cfg)?;
    let (name, docs) = eval_text(&a, &cfg)?;
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
    let model = load_model(&a.run, &cfg, &device)?;
    let tokens = Arc::new(text.ids.clone());
    println!(
        "eval {} ({}) on {picked}: {name}, {} tokens ({} bytes of text), train length {train_len}",
        a.run.display(),
        cfg.model.encoding.kind(),
        tokens.len(),
        text.bytes.iter().map(|&b| b as u64).sum::<u64>()
    );
    let suffix = output_suffix(&a);
    let mut results = Vec::new();
    for &k in &a.lengths {
        let len = k * train_len;
        if let Err(e) = model.check_len(0, len) {
            println!("{:>4}× {len:>6}: skipped ({e})", k);
            continue;
        }
        if tokens.len() < len + 1 {
            println!("{:>4}× {len:>6}: skipped (held-out text has {} tokens)", k, tokens.len());
            continue;
        }
        let max_windows = (a.tokens / len).max(1);
        let (per_pos, n) = position_losses(&model, &tokens, len, max_windows, Some(a.query_block), &device);
        let loss = per_pos.iter().sum::<f64>() / len as f64;
        let b = a.buckets.clamp(1, len);
        let per_position: Vec<f64> = (0..b)
            .map(|i| {
                let (lo, hi) = (i * len / b, ((i + 1) * len / b).max(i * len / b + 1));
                per_pos[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
            })
            .collect();
        let bpb = bits_per_byte(&text, len, n, loss);
        println!(
            "{:>4}× {len:>6}: loss {loss:.4}  ppl {:>10.3}  bits/byte {:.4}  ({n} windows)",
            k,
            loss.exp(),
            bpb.unwrap_or(f64::NAN)
        );
        results.push(LengthResult {
            multiple: k,
            length: len,
            windows: n,
            loss,
            ppl: loss.exp(),
            bits_per_byte: bpb,
            bytes: target_bytes(&text, len, n),
            per_position,
        });
    }
    let (mut passkey_trials, mut copy_trials) = (a.passkey_trials, a.copy_trials);
    if (passkey_trials > 0 || copy_trials > 0) && !tok.concatenates(crate::retrieval::JOINTS) {
        println!(
            "passkey and copy skipped: this tokenizer does not tokenise text pieces independently (e.g. it prefixes every encoding), so assembled prompts would not be the tokens of their text"
        );
        (passkey_trials, copy_trials) = (0, 0);
        for name in ["passkey", "copy"] {
            crate::train::write_atomic(&a.run.join(format!("{name}{suffix}.json")), b"[]")?;
        }
    }
    let subject = crate::retrieval::Subject {
        model: &model,
        tok: &tok,
        query_block: Some(a.query_block),
        device: &device,
    };
    if passkey_trials > 0 {
        let lens: Vec<usize> = results.iter().map(|r| r.length).collect();
        let cells = crate::passkey::passkey_grid(subject, &lens, &a.depths, passkey_trials, cfg.train.seed);
        println!("passkey accuracy (rows: length, columns: depth {:?})", a.depths);
        for &len in &lens {
            let row: Vec<String> =
                cells.iter().filter(|c| c.length == len).map(|c| format!("{:.2}", c.accuracy)).collect();
            println!("{len:>8}  {}", row.join("  "));
        }
        let json = serde_json::to_string_pretty(&cells)?;
        crate::train::write_atomic(&a.run.join(format!("passkey{suffix}.json")), json.as_bytes())?;
    }
    if copy_trials > 0 {
        let lens: Vec<usize> = results.iter().map(|r| r.length).collect();
        let cells = crate::copy::copy_grid(subject, &lens, copy_trials, cfg.train.seed);
        println!("copy accuracy (exact span) by distance");
        for &len in &lens {
            let row: Vec<String> = cells
                .iter()
                .filter(|c| c.length == len)
                .map(|c| format!("{}:{:.2}", c.distance, c.accuracy))
                .collect();
            println!("{len:>8}  {}", row.join("  "));
        }
        let json = serde_json::to_string_pretty(&cells)?;
        crate::train::write_atomic(&a.run.join(format!("copy{suffix}.json")), json.as_bytes())?;
    }
    let json = serde_json::to_string_pretty(&results)?;
    crate::train::write_atomic(&a.run.join(format!("eval{suffix}.json")), json.as_bytes())?;
    let mut csv = ::csv::Writer::from_writer(Vec::new());
    csv.write_record(["multiple", "length", "windows", "loss", "ppl", "bits_per_byte"])?;
    for r in &results {
        csv.serialize((r.multiple, r.length, r.windows, r.loss, r.ppl, r.bits_per_byte))?;
    }
    let csv = csv.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    crate::train::write_atomic(&a.run.join(format!("ppl_vs_length{suffix}.csv")), &csv)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, ModuleMapper, Param};
    use pezoo_models::{BYTE_VOCAB, ModelConfig};

    /// Zeroes every float parameter: zero embeddings and norm gains give zero logits.
    struct Zero;
    impl ModuleMapper for Zero {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.zeros_like())
        }
    }

    #[test]
    fn bits_per_byte_counts_the_text_the_targets_stand_for() {
        // ids a b c d e f g ⟨eos⟩ h i j k ⟨eos⟩; windows of 4 targets: 1..=4, 5..=8, 9..=12
        let t = Tokens::from_docs(&["abcdefg".into(), "hijk".into()], &pezoo_models::Tokenizer::Bytes);
        assert_eq!(t.ids.len(), 13);
        // targets b c d e | f g ⟨eos⟩ h | i j k ⟨eos⟩: 4 + 3 + 3 bytes for 12 targets
        let want = 2.0 * 12.0 / 10.0 / std::f64::consts::LN_2;
        assert!((bits_per_byte(&t, 4, 3, 2.0).unwrap() - want).abs() < 1e-12);
        assert!((bits_per_byte(&t, 4, 1, 2.0).unwrap() - 2.0 / std::f64::consts::LN_2).abs() < 1e-12);
    }

    /// A model with zero logits predicts uniformly: loss ln(vocab) at every position, whatever
    /// the text, the window count or the encoding — a perplexity computable by hand.
    #[test]
    fn a_uniform_model_has_perplexity_equal_to_the_vocabulary() {
        let device = crate::device::cpu();
        for kind in ["rope", "alibi"] {
            let toml = format!(
                "d_model = 16\nn_layers = 1\nn_heads = 2\nmax_seq_len = 32\n[encoding]\nkind = \"{kind}\"\n"
            );
            let cfg: ModelConfig = toml::from_str(&toml).unwrap();
            let model = Lm::new(&cfg, &device).unwrap().map(&mut Zero);
            let tokens = Arc::new((0..200u32).map(|i| (i * 37) % 256).collect::<Vec<u32>>());
            let (per_pos, n) = position_losses(&model, &tokens, 32, 4, Some(8), &device);
            assert_eq!((per_pos.len(), n), (32, 4));
            let want = (BYTE_VOCAB as f64).ln();
            assert!(per_pos.iter().all(|l| (l - want).abs() < 1e-5), "{kind}: {per_pos:?} vs {want}");
            let ppl = mean_loss(&model, &tokens, 32, 100, &device).exp();
            assert!((ppl - BYTE_VOCAB as f64).abs() < 1e-2, "{kind}: ppl {ppl}");
        }
    }
}
