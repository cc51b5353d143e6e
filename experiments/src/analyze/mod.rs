//! `zoo analyze`: attention by distance and the U-shape (HoPE-HF's analysis) from a trained run.
//!
//! Per layer, over held-out windows of length L (multiples of the training length):
//! - `by_distance[Δ]`: the mean attention weight a query puts on the key Δ positions back,
//!   averaged over heads, windows and the queries that have such a key;
//! - the **U-score**: for queries in the last quarter of the window, keys are placed by relative
//!   position r = n/m ∈ [0, 1] into 10 bins and the attention mass per bin is averaged; U-score =
//!   (bin 0 + bin 9) / (2 · mean of bins 4–5). Above 1: mass near the sequence start *and* near the
//!   query exceeds the middle (U-shaped); the `local` flag says whether bin 9 (nearest) dominates;
//! - `shape`: with middle = mean of bins 4–5, an arm is raised when its bin exceeds 1.5 × middle:
//!   `u-shaped` (both the start, bin 0, and the near end, bin 9), `local` (near end only),
//!   `start` (start only), `flat` (neither);
//! - rotary models: each pair's contribution to the logits and which pairs carry the U
//!   ([`pairs`]).

pub mod pairs;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use pezoo_encodings::RotaryEncoding;
use pezoo_models::{LmBatcher, SequentialWindows, token_stream};

use crate::run::results::{AnalyzeOutput, AnalyzeResult, LayerProfile, PairStats};
use crate::run::{AnalyzeSettings, RunDir};
use pairs::{PairSpec, PairTables, pair_stats};

/// `zoo analyze`'s flags; the settings flags override the run's `[analyze]`.
#[derive(Args, Debug, Clone)]
pub struct AnalyzeArgs {
    /// A `zoo train --out` directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Window lengths as multiples of the training length [analyze.lengths].
    #[arg(long, value_delimiter = ',')]
    pub lengths: Option<Vec<usize>>,
    /// Held-out windows per length [analyze.windows].
    #[arg(long)]
    pub windows: Option<usize>,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl AnalyzeArgs {
    /// The settings these flags ask of a run whose `[analyze]` is `base`.
    pub fn settings(&self, base: &AnalyzeSettings) -> Result<AnalyzeSettings> {
        let s = AnalyzeSettings {
            lengths: self.lengths.clone().unwrap_or_else(|| base.lengths.clone()),
            windows: self.windows.unwrap_or(base.windows),
        };
        s.validate()?;
        Ok(s)
    }
}

/// The shape of a relative-position profile (10 bins; see the module docs).
pub fn shape(bins: &[f64]) -> &'static str {
    let middle = (bins[4] + bins[5]) / 2.0;
    match (bins[0] > 1.5 * middle, bins[9] > 1.5 * middle) {
        (true, true) => "u-shaped",
        (false, true) => "local",
        (true, false) => "start",
        (false, false) => "flat",
    }
}

/// Mean attention by distance and relative-position bins from probabilities `[heads·windows][q][k]`
/// flattened as `p[(w * s + m) * s + n]` for `w` in 0..count.
pub fn profile(p: &[f32], count: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let mut by_d = vec![0f64; s];
    let mut n_d = vec![0usize; s];
    let mut bins = [0f64; 10];
    let mut n_q = 0usize;
    for w in 0..count {
        for m in 0..s {
            let row = &p[(w * s + m) * s..(w * s + m + 1) * s];
            for n in 0..=m {
                by_d[m - n] += row[n] as f64;
                n_d[m - n] += 1;
            }
            if m >= 3 * s / 4 && m >= 10 {
                let mut b = [0f64; 10];
                for n in 0..=m {
                    b[((n * 10) / (m + 1)).min(9)] += row[n] as f64;
                }
                for i in 0..10 {
                    bins[i] += b[i];
                }
                n_q += 1;
            }
        }
    }
    let by_d = by_d.iter().zip(&n_d).map(|(a, &c)| a / c.max(1) as f64).collect();
    let bins = bins.iter().map(|b| b / n_q.max(1) as f64).collect();
    (by_d, bins)
}

/// (bin 0 + bin 9) / (2 · mean of bins 4–5).
pub fn u_score(bins: &[f64]) -> f64 {
    (bins[0] + bins[9]) / (bins[4] + bins[5]).max(1e-12)
}

/// Analyses the run as `a` asks and saves the result as `analyze.json`.
pub fn run(a: AnalyzeArgs) -> Result<AnalyzeOutput> {
    let dir = RunDir::new(&a.run);
    let cfg = dir.load_config()?;
    let settings = a.settings(&cfg.analyze)?;
    let (device, picked) = crate::device::select(&a.device)?;
    let model = dir.load_model(&cfg, &device)?;
    let tok = dir.tokenizer(&cfg)?;
    let tokens = Arc::new(token_stream(&cfg.corpus()?.valid, &tok));
    println!("analyze {} ({}) on {picked}", a.run.display(), cfg.model.encoding.kind());
    let mut out = Vec::new();
    for &k in &settings.lengths {
        let s = k * cfg.model.max_seq_len;
        if model.check_len(0, s).is_err() || tokens.len() < s + 1 {
            println!("{k:>3}× {s:>6}: skipped (beyond the encoding's table or the held-out text)");
            continue;
        }
        use burn::data::dataloader::batcher::Batcher;
        use burn::data::dataset::Dataset;
        let windows = SequentialWindows::new(tokens.clone(), s, settings.windows);
        let items: Vec<Vec<u32>> = (0..windows.len()).map(|i| windows.get(i).expect("in range")).collect();
        let batch = LmBatcher.batch(items.clone(), &device);
        let (_, captured) = model.forward_full(batch.inputs, 0, Some(512), true);
        let mut layers = Vec::new();
        let mut pairs = Vec::new();
        let mut by_distance = vec![0f64; s];
        let rotary = model.encoding().as_dyn().rotary().map(|r| rotary_tables(r, s, cfg.model.max_seq_len));
        for (layer, cap) in captured.layers.into_iter().enumerate() {
            let probs = cap.probs;
            let [b, h, _, _] = probs.dims();
            if let Some(tables) = &rotary {
                let host = |t: burn::prelude::Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>();
                let (q, k) = (host(cap.q).expect("f32 q"), host(cap.k).expect("f32 k"));
                let st = pair_stats(&q, &k, b * h, s, tables, layer);
                let list = |f: fn(&PairStats) -> bool| -> Vec<usize> {
                    st.pairs.iter().filter(|p| f(p)).map(|p| p.pair).collect()
                };
                println!(
                    "      layer {layer}: activated pairs {:?}, position-independent {:?}, HoPE-HF drops {:?}",
                    list(|p| p.activated),
                    list(|p| p.position_independent),
                    list(|p| p.hope_hf_dropped)
                );
                pairs.push(st);
            }
            let p = probs.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 probabilities");
            let (by_d, bins) = profile(&p, b * h, s);
            for (acc, v) in by_distance.iter_mut().zip(&by_d) {
                *acc += v;
            }
            let u = u_score(&bins);
            let local = bins[9] >= bins.iter().cloned().fold(0.0, f64::max);
            let shape = shape(&bins).to_string();
            layers.push(LayerProfile { layer, relative_bins: bins, u_score: u, local, shape });
        }
        let n_layers = layers.len().max(1) as f64;
        by_distance.iter_mut().for_each(|v| *v /= n_layers);
        let mean_u = layers.iter().map(|l| l.u_score).sum::<f64>() / n_layers;
        let us: Vec<String> = layers.iter().map(|l| format!("{:.2} {}", l.u_score, l.shape)).collect();
        println!("{k:>3}× {s:>6}: U-score per layer [{}], mean {mean_u:.2}", us.join(", "));
        out.push(AnalyzeResult { length: s, by_distance, layers, mean_u_score: mean_u, pairs });
    }
    let out = AnalyzeOutput { settings, lengths: out };
    dir.write_analyze(&out)?;
    Ok(out)
}

/// The pairs of a rotary encoding and its exact `M_i(Δ)` for Δ in 0..s (context of s tokens).
fn rotary_tables(r: &RotaryEncoding, s: usize, train_len: usize) -> PairTables {
    let spec = r.spec();
    let theta = spec.theta_at(s);
    let specs = (0..spec.pairs())
        .map(|i| PairSpec {
            channels: spec.layout.channels(i, spec.rotary_dim),
            theta: theta[i],
            base_theta: spec.base_theta[i],
            rotated: spec.rotated[i],
        })
        .collect();
    let mats = (0..s).map(|d| r.score_matrices(d, s)).collect();
    PairTables { pairs: specs, mats, head_dim: spec.head_dim, train_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds causal attention rows from a weight function w(m, n), normalised per row.
    fn rows(s: usize, w: impl Fn(usize, usize) -> f64) -> Vec<f32> {
        let mut p = vec![0f32; s * s];
        for m in 0..s {
            let z: f64 = (0..=m).map(|n| w(m, n)).sum();
            for n in 0..=m {
                p[m * s + n] = (w(m, n) / z) as f32;
            }
        }
        p
    }

    #[test]
    fn uniform_attention_has_u_score_one_and_a_known_distance_profile() {
        let s = 40;
        let (by_d, bins) = profile(&rows(s, |_, _| 1.0), 1, s);
        // uniform over m+1 keys: the weight at distance Δ is the mean of 1/(m+1) over m ≥ Δ
        for d in 0..s {
            let want = (d..s).map(|m| 1.0 / (m + 1) as f64).sum::<f64>() / (s - d) as f64;
            assert!((by_d[d] - want).abs() < 1e-6, "Δ={d}");
        }
        assert!((u_score(&bins) - 1.0).abs() < 0.15, "uniform ≈ 1, got {}", u_score(&bins));
        assert_eq!(shape(&bins), "flat");
    }

    #[test]
    fn u_shaped_and_local_attention_are_told_apart() {
        let s = 64;
        // mass at the start and next to the query
        let u = |m: usize, n: usize| if n < 3 || m - n < 3 { 10.0 } else { 1.0 };
        let (_, bins) = profile(&rows(s, u), 1, s);
        assert!(u_score(&bins) > 3.0, "U-shaped: {}", u_score(&bins));
        assert_eq!(shape(&bins), "u-shaped");
        // purely local (exponential decay with distance): no mass at the start
        let local = |m: usize, n: usize| (-((m - n) as f64) / 2.0).exp();
        let (by_d, bins) = profile(&rows(s, local), 1, s);
        assert!(bins[0] < 1e-6 && bins[9] > 0.9, "{bins:?}");
        assert_eq!(shape(&bins), "local");
        let (_, bins) = profile(&rows(s, |_, n| if n < 3 { 10.0 } else { 1.0 }), 1, s);
        assert_eq!(shape(&bins), "start", "{bins:?}");
        assert!(by_d.windows(2).all(|w| w[0] >= w[1] - 1e-9), "monotone decay by distance");
    }
}
