//! `report.md` and its SVG plots (plotters) for `zoo compare`.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::compare::summarise;
use crate::train::write_atomic;

/// One (encoding, seed, length) measurement.
#[derive(Debug, Clone)]
pub struct Point {
    pub encoding: String,
    pub multiple: usize,
    pub ppl: f64,
    pub passkey: f64,
    pub tokens_per_s: f64,
}

fn values(points: &[Point], enc: &str, multiple: Option<usize>, f: impl Fn(&Point) -> f64) -> Vec<f64> {
    points.iter().filter(|p| p.encoding == enc && multiple.is_none_or(|m| p.multiple == m)).map(f).collect()
}

/// Writes `report.md` and `ppl_vs_length.svg` into `out`; returns the report's path.
pub fn write(
    out: &Path,
    preset: &str,
    encodings: &[String],
    lengths: &[usize],
    points: &[Point],
    seeds: u64,
) -> Result<PathBuf> {
    let svg = out.join("ppl_vs_length.svg");
    plot(&svg, encodings, lengths, points)?;
    let mut md = format!(
        "# pezoo compare — preset `{preset}`\n\n{} encodings × {seeds} seed(s). Mean ± half-range over seeds. \
         Every number: `results.csv`; per run: `<encoding>/seed<k>/`.\n\n## Perplexity vs length (× training length)\n\n",
        encodings.len()
    );
    md.push_str("| encoding |");
    for m in lengths {
        md.push_str(&format!(" {m}× |"));
    }
    md.push_str(" tokens/s |\n|---|");
    md.push_str(&"---|".repeat(lengths.len() + 1));
    md.push('\n');
    for e in encodings {
        md.push_str(&format!("| {e} |"));
        for &m in lengths {
            md.push_str(&format!(" {} |", summarise(&values(points, e, Some(m), |p| p.ppl))));
        }
        let tps = values(points, e, Some(lengths[0]), |p| p.tokens_per_s);
        md.push_str(&format!(" {:.0} |\n", tps.iter().sum::<f64>() / tps.len().max(1) as f64));
    }
    md.push_str("\n![perplexity vs length](ppl_vs_length.svg)\n\n## Passkey accuracy (mean over depths)\n\n| encoding |");
    for m in lengths {
        md.push_str(&format!(" {m}× |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(lengths.len()));
    md.push('\n');
    for e in encodings {
        md.push_str(&format!("| {e} |"));
        for &m in lengths {
            md.push_str(&format!(" {} |", summarise(&values(points, e, Some(m), |p| p.passkey))));
        }
        md.push('\n');
    }
    let path = out.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

fn plot(path: &Path, encodings: &[String], lengths: &[usize], points: &[Point]) -> Result<()> {
    let mean = |e: &str, m: usize| {
        let v: Vec<f64> =
            values(points, e, Some(m), |p| p.ppl).into_iter().filter(|x| x.is_finite()).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let all: Vec<f64> =
        encodings.iter().flat_map(|e| lengths.iter().filter_map(move |&m| mean(e, m))).collect();
    let (lo, hi) = all.iter().fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if all.is_empty() { (1.0, 10.0) } else { (lo.max(1e-3) * 0.9, hi * 1.1) };
    let xmax = *lengths.iter().max().unwrap_or(&1) as f64;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("perplexity vs length", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((1f64..xmax.max(2.0)).log_scale(), (lo..hi).log_scale())
        .map_err(|e| anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("length (× training length)")
        .y_desc("perplexity")
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    for (i, e) in encodings.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series: Vec<(f64, f64)> =
            lengths.iter().filter_map(|&m| mean(e, m).map(|p| (m as f64, p))).collect();
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|e| anyhow!("plot: {e}"))?
            .label(e.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    root.present().map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}
