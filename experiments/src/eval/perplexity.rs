//! Perplexity and bits per byte by length, with per-position loss curves.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use pezoo_models::score::position_losses;
use pezoo_models::{Lm, Tokens};
use std::sync::Arc;

use super::EvalArgs;
use crate::run::results::LengthResult;
use crate::run::{EvalSettings, RunConfig};

/// Loss, perplexity, bits per byte and the per-position curve at each of `st.lengths` (multiples
/// of `train_len`); a length beyond the encoding's table or the text is skipped with a line.
pub fn by_length(
    model: &Lm,
    text: &Tokens,
    train_len: usize,
    st: &EvalSettings,
    query_block: usize,
    device: &Device,
) -> Vec<LengthResult> {
    let tokens = Arc::new(text.ids.clone());
    let mut results = Vec::new();
    for &k in &st.lengths {
        let len = k * train_len;
        if let Err(e) = model.check_len(0, len) {
            println!("{:>4}× {len:>6}: skipped ({e})", k);
            continue;
        }
        if tokens.len() < len + 1 {
            println!("{:>4}× {len:>6}: skipped (the text has {} tokens)", k, tokens.len());
            continue;
        }
        let max_windows = (st.tokens / len).max(1);
        let (per_pos, n) = position_losses(model, &tokens, len, max_windows, Some(query_block), device);
        let loss = per_pos.iter().sum::<f64>() / len as f64;
        let b = st.buckets.clamp(1, len);
        let per_position: Vec<f64> = (0..b)
            .map(|i| {
                let (lo, hi) = (i * len / b, ((i + 1) * len / b).max(i * len / b + 1));
                per_pos[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
            })
            .collect();
        let bpb = bits_per_byte(text, len, n, loss);
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
            bytes: target_bytes(text, len, n),
            per_position,
        });
    }
    results
}

/// The text evaluated: `--data` (all of it; only the held-out split if it is the run's own
/// training data) or the run's held-out split.
pub fn eval_text(a: &EvalArgs, cfg: &RunConfig) -> Result<(String, Vec<String>)> {
    let Some(path) = &a.data else {
        return Ok(("held-out split".into(), cfg.corpus()?.valid));
    };
    let field = a.text_field.as_deref().unwrap_or(&cfg.data.text_field);
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    if let (Some(train), Some(eval)) = (cfg.data.path.as_deref().and_then(canon), canon(path)) {
        if train == eval {
            println!("--data {} is the run's training data: evaluating its held-out split", path.display());
            return Ok(("held-out split".into(), cfg.corpus()?.valid));
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
    let seen: std::collections::HashSet<u64> = cfg.corpus()?.train.iter().map(|d| hash(d)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
