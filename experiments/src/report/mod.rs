//! `report.md`, its CSVs and SVG plots for `zoo compare`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::run::results::{AnalyzeResult, RunResults};
use crate::write_atomic;
use plots::{Axes, Heatmap, Series, heatmaps, lines};

mod csvs;
mod findings;
pub mod plots;

/// Mean of `f` over the runs of `enc` where it is defined and finite.
fn mean_over(runs: &[RunResults], enc: &str, f: impl Fn(&RunResults) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> =
        runs.iter().filter(|r| r.encoding == enc).filter_map(f).filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(crate) fn values(runs: &[RunResults], enc: &str, f: impl Fn(&RunResults) -> Option<f64>) -> Vec<f64> {
    runs.iter().filter(|r| r.encoding == enc).filter_map(f).collect()
}

pub(crate) fn ppl(r: &RunResults, m: usize) -> Option<f64> {
    r.eval.iter().find(|e| e.multiple == m).map(|e| e.ppl)
}

fn length_of(r: &RunResults, m: usize) -> Option<usize> {
    r.eval.iter().find(|e| e.multiple == m).map(|e| e.length)
}

fn mean<I: IntoIterator<Item = f64>>(it: I) -> Option<f64> {
    let v: Vec<f64> = it.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Wilson score interval (95%, z = 1.96) for k successes in n trials: (lo, hi).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (z, n_, p) = (1.96f64, n as f64, k as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n_)) / (1.0 + z * z / n_);
    let half = z / (1.0 + z * z / n_) * (p * (1.0 - p) / n_ + z * z / (4.0 * n_ * n_)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// (correct, trials) of a run's passkey prompts at multiple `m`, over every depth.
pub(crate) fn passkey_counts(r: &RunResults, m: usize) -> Option<(usize, usize)> {
    let len = length_of(r, m)?;
    let cells: Vec<_> = r.passkey.iter().filter(|c| c.length == len).collect();
    (!cells.is_empty()).then(|| (cells.iter().map(|c| c.correct).sum(), cells.iter().map(|c| c.trials).sum()))
}

/// (exact spans, trials) of a run's copy prompts at multiple `m`, over every distance.
pub(crate) fn copy_counts(r: &RunResults, m: usize) -> Option<(usize, usize)> {
    let len = length_of(r, m)?;
    let cells: Vec<_> = r.copy.iter().filter(|c| c.length == len).collect();
    (!cells.is_empty()).then(|| {
        let k = cells.iter().map(|c| (c.accuracy * c.trials as f64).round() as usize).sum();
        (k, cells.iter().map(|c| c.trials).sum())
    })
}

/// Counts pooled over an encoding's seeds.
pub(crate) fn pooled(
    runs: &[RunResults],
    enc: &str,
    m: usize,
    f: fn(&RunResults, usize) -> Option<(usize, usize)>,
) -> (usize, usize) {
    runs.iter()
        .filter(|r| r.encoding == enc)
        .filter_map(|r| f(r, m))
        .fold((0, 0), |(a, b), (k, n)| (a + k, b + n))
}

/// A retrieval table: accuracy pooled over seeds and prompts, its 95% Wilson interval and n;
/// one line instead when every cell is zero.
fn retrieval_table(
    md: &mut String,
    encodings: &[String],
    cols: &[usize],
    runs: &[RunResults],
    f: fn(&RunResults, usize) -> Option<(usize, usize)>,
) {
    let cells: Vec<Vec<(usize, usize)>> =
        encodings.iter().map(|e| cols.iter().map(|&m| pooled(runs, e, m, f)).collect()).collect();
    let n_min = cells.iter().flatten().map(|c| c.1).filter(|&n| n > 0).min().unwrap_or(0);
    if n_min == 0 {
        md.push_str("No prompts were scored (every length was skipped).\n\n");
        return;
    }
    if cells.iter().flatten().all(|c| c.0 == 0) {
        let (_, hi) = wilson(0, n_min);
        let _ = writeln!(
            md,
            "Every cell is 0 (n ≥ {n_min} prompts per cell, pooled over seeds; 95% Wilson upper bound {hi:.3}).\n"
        );
        return;
    }
    let _ = writeln!(md, "| encoding |{}", cols.iter().map(|m| format!(" {m}× |")).collect::<String>());
    let _ = writeln!(md, "|---|{}", "---|".repeat(cols.len()));
    for (e, row) in encodings.iter().zip(&cells) {
        let cells: String = row
            .iter()
            .map(|&(k, n)| {
                if n == 0 {
                    return " – |".to_string();
                }
                let (lo, hi) = wilson(k, n);
                format!(" {:.3} [{lo:.2}, {hi:.2}] n={n} |", k as f64 / n as f64)
            })
            .collect();
        let _ = writeln!(md, "| {e} |{cells}");
    }
    md.push('\n');
}

pub(crate) fn passkey(r: &RunResults, m: usize) -> Option<f64> {
    let len = length_of(r, m)?;
    mean(r.passkey.iter().filter(|c| c.length == len).map(|c| c.accuracy))
}

pub(crate) fn copy(r: &RunResults, m: usize) -> Option<f64> {
    let len = length_of(r, m)?;
    mean(r.copy.iter().filter(|c| c.length == len).map(|c| c.accuracy))
}

pub(crate) fn u_score(r: &RunResults, m: usize) -> Option<f64> {
    analysis(r, m).map(|a| a.mean_u_score)
}

/// The run's analysis at `m`× its training length.
fn analysis(r: &RunResults, m: usize) -> Option<&AnalyzeResult> {
    let train = r.eval.first().map(|e| e.length / e.multiple)?;
    r.analyze.iter().find(|a| a.length == m * train)
}

/// Attention mass on the first tenth of the keys over the middle (bins 4–5), mean over layers: the
/// "start" arm of the U alone (attention sinks), which a purely local pattern lacks.
fn start_ratio(r: &RunResults, m: usize) -> Option<f64> {
    let a = analysis(r, m)?;
    mean(
        a.layers
            .iter()
            .map(|l| 2.0 * l.relative_bins[0] / (l.relative_bins[4] + l.relative_bins[5]).max(1e-12)),
    )
}

/// A markdown table: one row per encoding, one column per multiple, mean ± half-range over seeds
/// (a cell over fewer than `seeds` values says how many).
fn table(
    md: &mut String,
    encodings: &[String],
    cols: &[usize],
    runs: &[RunResults],
    seeds: u64,
    f: impl Fn(&RunResults, usize) -> Option<f64>,
) {
    let _ = writeln!(md, "| encoding |{}", cols.iter().map(|m| format!(" {m}× |")).collect::<String>());
    let _ = writeln!(md, "|---|{}", "---|".repeat(cols.len()));
    for e in encodings {
        let cells: String = cols
            .iter()
            .map(|&m| {
                let v: Vec<f64> =
                    values(runs, e, |r| f(r, m)).into_iter().filter(|x| x.is_finite()).collect();
                let n = if v.is_empty() || v.len() as u64 == seeds {
                    String::new()
                } else {
                    format!(" (n={})", v.len())
                };
                format!(" {}{n} |", summarise(&v))
            })
            .collect();
        let _ = writeln!(md, "| {e} |{cells}");
    }
    md.push('\n');
}

/// Writes `report.md`, the CSVs and the plots into `out`; returns the report's path.
pub fn write(
    out: &Path,
    preset: &str,
    encodings: &[String],
    lengths: &[usize],
    analyzed: &[usize],
    runs: &[RunResults],
    seeds: u64,
) -> Result<PathBuf> {
    csvs::write_csvs(out, runs, encodings, lengths)?;
    let first_analyzed = analyzed.iter().copied().min().unwrap_or(1);
    plot_all(out, encodings, lengths, first_analyzed, runs, seeds)?;
    let mut md = format!(
        "# pezoo compare — preset `{preset}`\n\n{} encodings × {seeds} seed(s). Perplexity and attention: \
         mean ± half-range over the {seeds} seeds. Retrieval: pooled counts with 95% Wilson intervals \
         (prompts pooled over seeds as if independent: the interval ignores seed-to-seed variance, \
         so read differences between encodings against the per-seed rows of `results.csv` too). \
         Every number: the CSVs here (`summary.csv`: per encoding, with intervals); per run: \
         `<encoding>/seed<k>/`.\n\n",
        encodings.len()
    );
    let per_cell =
        format!("Each cell: mean ± half-range over the seeds (n = {seeds} per cell unless marked).\n\n");
    md.push_str("## Perplexity vs length (× training length)\n\n");
    md.push_str(&per_cell);
    table(&mut md, encodings, lengths, runs, seeds, ppl);
    md.push_str(&findings::perplexity(encodings, lengths, runs));
    md.push_str("Training throughput (tokens/s, mean over seeds; the compute path that ran):");
    for e in encodings {
        let tps = mean_over(runs, e, |r| Some(r.tokens_per_s)).unwrap_or(f64::NAN);
        let mut paths: Vec<&str> =
            runs.iter().filter(|r| &r.encoding == e).map(|r| r.compute_path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        let _ = write!(md, " {e} {tps:.0} ({});", paths.join(", "));
    }
    md.push_str("\n\n![perplexity vs length](ppl_vs_length.svg)\n![loss by position](per_position.svg)\n\n");
    md.push_str(
        "## Passkey retrieval (exact match over every depth and seed; [95% Wilson interval], n prompts)\n\n",
    );
    retrieval_table(&mut md, encodings, lengths, runs, passkey_counts);
    md.push_str(&findings::retrieval(encodings, lengths, runs, passkey_counts));
    md.push_str("![passkey accuracy: length × depth](passkey.svg)\n\n");
    md.push_str(
        "## Copy task (exact span over every distance and seed; [95% Wilson interval], n prompts)\n\n",
    );
    retrieval_table(&mut md, encodings, lengths, runs, copy_counts);
    md.push_str(&findings::retrieval(encodings, lengths, runs, copy_counts));
    md.push_str("![copy accuracy vs distance](copy.svg)\n\n");
    md.push_str(
        "## Attention by distance: the U-score\n\n(bins 0 + 9) / (bins 4 + 5) of the attention mass by \
         relative key position, last-quarter queries, mean over layers; > 1: U-shaped.\n\n",
    );
    md.push_str(&per_cell);
    table(&mut md, encodings, analyzed, runs, seeds, u_score);
    md.push_str(&findings::u_shape(encodings, analyzed, runs));
    md.push_str(
        "Its start arm alone, bin 0 / mean(bins 4, 5) (attention sinks; a purely local pattern has none):\n\n",
    );
    table(&mut md, encodings, analyzed, runs, seeds, start_ratio);
    md.push_str(
        "Shape per layer (seed 0; `u-shaped`, `local`, `start`, `flat`: see `experiments/src/analyze/mod.rs`):\n\n",
    );
    for r in runs.iter().filter(|r| r.seed == 0) {
        let per_len: Vec<String> = r
            .analyze
            .iter()
            .map(|a| {
                let shapes: Vec<&str> = a.layers.iter().map(|l| l.shape.as_str()).collect();
                format!("L={}: {}", a.length, shapes.join(", "))
            })
            .collect();
        let _ = writeln!(md, "- {}: {}", r.encoding, per_len.join("; "));
    }
    md.push('\n');
    md.push_str("![attention by distance](attention_by_distance.svg)\n\n");
    pair_section(&mut md, runs, first_analyzed);
    let path = out.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// Rotary runs, seed 0 at `m`× the training length (the shortest analysed): which pairs carry
/// the U, which are content channels.
fn pair_section(md: &mut String, runs: &[RunResults], m: usize) {
    let rows: Vec<String> = runs
        .iter()
        .filter(|r| r.seed == 0)
        .filter_map(|r| Some((r, analysis(r, m)?)))
        .flat_map(|(r, a)| {
            a.pairs.iter().map(move |l| {
                let list = |f: &dyn Fn(&crate::run::results::PairStats) -> bool| {
                    let v: Vec<String> =
                        l.pairs.iter().filter(|p| f(p)).map(|p| p.pair.to_string()).collect();
                    if v.is_empty() { "–".to_string() } else { v.join(" ") }
                };
                format!(
                    "| {} | {} | {} | {} | {} |",
                    r.encoding,
                    l.layer,
                    list(&|p| p.activated),
                    list(&|p| p.position_independent),
                    list(&|p| p.hope_hf_dropped)
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        md,
        "## RoPE per-pair activation (seed 0, {m}× the training length)\n\nActivated: the pair carries the U \
         (≥ 2/pairs of the positive U-contrast). Position-independent: the map changes the pair's \
         logit contribution by ≤ 10%. Definitions: `experiments/src/analyze/pairs.rs`; numbers: `pairs.csv`.\n\n\
         | encoding | layer | activated | position-independent | HoPE-HF would drop |\n|---|---|---|---|---|\n",
    );
    md.push_str(&rows.join("\n"));
    md.push('\n');
}

/// (x, y) points of one curve.
type Points = Vec<(f64, f64)>;

/// The mean over seeds of per-seed curves at each x any of them has, and the seeds' min–max
/// band there (points are matched by x, so a seed missing a point leaves the others' in place).
fn mean_and_band(curves: &[Points]) -> (Points, Vec<(f64, f64, f64)>) {
    let mut at: Vec<(f64, Vec<f64>)> = Vec::new();
    for &(x, y) in curves.iter().flatten().filter(|(x, y)| x.is_finite() && y.is_finite()) {
        match at.iter_mut().find(|(ax, _)| *ax == x) {
            Some((_, v)) => v.push(y),
            None => at.push((x, vec![y])),
        }
    }
    at.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line = at.iter().map(|(x, v)| (*x, v.iter().sum::<f64>() / v.len() as f64)).collect();
    let band = at
        .iter()
        .map(|(x, v)| {
            (
                *x,
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        })
        .collect();
    (line, band)
}

fn plot_all(
    out: &Path,
    encodings: &[String],
    lengths: &[usize],
    analyzed: usize,
    runs: &[RunResults],
    seeds: u64,
) -> Result<()> {
    // every line is the mean over seeds, its band the seeds' min–max
    let series = |f: &dyn Fn(&RunResults) -> Option<Points>| -> Vec<Series> {
        encodings
            .iter()
            .map(|e| {
                let curves: Vec<Points> = runs.iter().filter(|r| &r.encoding == e).filter_map(f).collect();
                let (line, band) = mean_and_band(&curves);
                Series::new(e.as_str(), line).with_band(band)
            })
            .collect()
    };
    let spread =
        if seeds > 1 { format!(" (mean of {seeds} seeds; band: min–max)") } else { " (1 seed)".into() };
    let axes = |title: &str, x: &str, y: &str, log_x: bool, log_y: bool| Axes {
        title: format!("{title}{spread}"),
        x: x.into(),
        y: y.into(),
        log_x,
        log_y,
        ..Axes::default()
    };
    let ppl_pts =
        |r: &RunResults| Some(lengths.iter().filter_map(|&m| Some((m as f64, ppl(r, m)?))).collect());
    lines(
        &out.join("ppl_vs_length.svg"),
        &Axes {
            x_ticks: Some(lengths.iter().map(|&m| m as f64).collect()),
            x_suffix: "×".into(),
            ..axes(
                "perplexity vs length",
                "length (× training length, log scale)",
                "perplexity (log scale)",
                true,
                true,
            )
        },
        &series(&ppl_pts),
    )?;
    // loss by position at the longest length every run reached; bucket centres in tokens
    let longest = lengths.iter().rev().copied().find(|&m| runs.iter().all(|r| length_of(r, m).is_some()));
    if let Some(m) = longest {
        let per_pos = |r: &RunResults| {
            let l = r.eval.iter().find(|l| l.multiple == m)?;
            let w = l.length as f64 / l.per_position.len() as f64;
            Some(l.per_position.iter().enumerate().map(|(b, &v)| ((b as f64 + 0.5) * w, v)).collect())
        };
        let title = format!("loss by position at {m}×");
        lines(
            &out.join("per_position.svg"),
            &axes(&title, "position", "loss (nats)", false, false),
            &series(&per_pos),
        )?;
        let copy_pts = |r: &RunResults| {
            let len = length_of(r, m)?;
            Some(r.copy.iter().filter(|c| c.length == len).map(|c| (c.distance as f64, c.accuracy)).collect())
        };
        let title = format!("copy accuracy vs distance at {m}×");
        lines(
            &out.join("copy.svg"),
            &axes(&title, "span distance (tokens, log scale)", "exact match", true, false),
            &series(&copy_pts),
        )?;
    }
    let by_d = |r: &RunResults| {
        let a = analysis(r, analyzed)?;
        Some(a.by_distance.iter().enumerate().skip(1).map(|(d, &w)| (d as f64, w)).collect())
    };
    lines(
        &out.join("attention_by_distance.svg"),
        &axes(
            &format!("attention weight by distance at {analyzed}×"),
            "distance Δ (log scale)",
            "weight (log scale)",
            true,
            true,
        ),
        &series(&by_d),
    )?;
    let maps: Vec<Heatmap> = encodings
        .iter()
        .map(|e| {
            let first = runs.iter().find(|r| &r.encoding == e);
            let lens: Vec<usize> =
                lengths.iter().filter_map(|&m| first.and_then(|r| length_of(r, m))).collect();
            // the depths of the grid, in order (every length has the same ones)
            let depths: Vec<f64> = first
                .map(|r| {
                    r.passkey.iter().filter(|c| Some(&c.length) == lens.first()).map(|c| c.depth).collect()
                })
                .unwrap_or_default();
            let values = lens
                .iter()
                .map(|&len| {
                    depths
                        .iter()
                        .map(|&d| {
                            let acc = |r: &RunResults| {
                                r.passkey.iter().find(|c| c.length == len && c.depth == d).map(|c| c.accuracy)
                            };
                            mean_over(runs, e, acc).unwrap_or(f64::NAN)
                        })
                        .collect()
                })
                .collect();
            Heatmap {
                title: e.clone(),
                rows: lens.iter().map(|l| l.to_string()).collect(),
                cols: depths.iter().map(|d| format!("{d}")).collect(),
                values,
            }
        })
        .collect();
    heatmaps(&out.join("passkey.svg"), "passkey accuracy", "length", "depth", &maps)
}

/// Mean ± half-range of the finite values (`–` without any).
pub(crate) fn summarise(v: &[f64]) -> String {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "–".into();
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    format!("{m:.3} ± {:.3}", (hi - lo) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::{mean_and_band, wilson};

    #[test]
    fn curves_average_by_x_with_the_seeds_min_max_as_band() {
        // seed 1 lacks x = 2: the mean there is seed 0's alone
        let (line, band) =
            mean_and_band(&[vec![(1.0, 2.0), (2.0, 4.0), (4.0, 6.0)], vec![(1.0, 4.0), (4.0, 10.0)]]);
        assert_eq!(line, [(1.0, 3.0), (2.0, 4.0), (4.0, 8.0)]);
        assert_eq!(band, [(1.0, 2.0, 4.0), (2.0, 4.0, 4.0), (4.0, 6.0, 10.0)]);
    }

    #[test]
    fn wilson_intervals_match_published_values() {
        // 10/20: [0.2993, 0.7007]; 0/20: [0, 0.1611]; 20/20: [0.8389, 1] (Wilson 1927, z = 1.96)
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 5e-4 && (a.1 - b.1).abs() < 5e-4;
        assert!(close(wilson(10, 20), (0.2993, 0.7007)), "{:?}", wilson(10, 20));
        assert!(close(wilson(0, 20), (0.0, 0.1611)), "{:?}", wilson(0, 20));
        assert!(close(wilson(20, 20), (0.8389, 1.0)), "{:?}", wilson(20, 20));
        assert!(wilson(0, 0).0.is_nan());
    }
}
