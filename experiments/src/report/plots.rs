//! SVG plots (plotters): line charts with optional log axes, and heatmap panels.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line of a chart, optionally with a band (e.g. the spread over seeds) around it.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// (x, low, high), drawn as a translucent area in the line's colour.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, band: Vec::new() }
    }

    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = band;
        self
    }
}

/// Title and axes of a line chart. Log axes place values by their logarithm (points ≤ 0 are
/// dropped) with ticks at round values (1, 2, 5 × 10^k); `x_ticks` puts the x ticks exactly at
/// these values instead (e.g. the evaluated length multiples), labelled with `x_suffix`.
#[derive(Debug, Clone, Default)]
pub struct Axes {
    pub title: String,
    pub x: String,
    pub y: String,
    pub log_x: bool,
    pub log_y: bool,
    pub x_ticks: Option<Vec<f64>>,
    pub x_suffix: String,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Round tick values within [lo, hi] (data units): multiples of 1, 2 or 5 × 10^k on a linear
/// axis (at most 8); on a log axis the powers of ten, with 2× and 5× (then every digit) added
/// while fewer than 3 ticks fall in the range, and linear ones for a range narrower still.
pub fn nice_ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    if log && lo > 0.0 {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        for mantissas in [&[1.0][..], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]] {
            let t: Vec<f64> = (a..=b)
                .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
                .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
                .collect();
            if t.len() > 10 {
                // many decades: every k-th power of ten, at most 10 ticks
                let k = t.len().div_ceil(10);
                return t.into_iter().step_by(k).collect();
            }
            if t.len() >= 3 {
                return t;
            }
        }
        // a range narrower than one digit step: round values as on a linear axis (a log axis
        // is nearly linear over it)
    }
    let span = (hi - lo).max(1e-12);
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * 10f64.powf((span / 8.0).log10().floor()))
        .find(|st| span / st <= 8.0)
        .unwrap_or(span);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A line chart of `series` into the SVG file `path`; the legend sits right of the plot, so it
/// never covers data.
pub fn lines(path: &Path, axes: &Axes, series: &[Series]) -> Result<()> {
    let tx = |v: f64| if axes.log_x { (v > 0.0).then(|| v.log10()) } else { Some(v) };
    let ty = |v: f64| if axes.log_y { (v > 0.0).then(|| v.log10()) } else { Some(v) };
    let finite = |x: f64, y: f64| x.is_finite() && y.is_finite();
    let data: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| finite(*x, *y))
                .filter_map(|&(x, y)| Some((tx(x)?, ty(y)?)))
                .collect()
        })
        .collect();
    // on a log axis a band's low end ≤ 0 (a seed at 0) is drawn at the lowest positive value
    // plotted, not dropped (which would join its neighbours across it)
    let floor = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])))
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let bands: Vec<Vec<(f64, f64, f64)>> = series
        .iter()
        .map(|s| {
            s.band
                .iter()
                .filter(|(x, lo, hi)| finite(*x, *lo) && hi.is_finite())
                .map(|&(x, lo, hi)| if axes.log_y && lo <= 0.0 { (x, floor, hi) } else { (x, lo, hi) })
                .filter_map(|(x, lo, hi)| Some((tx(x)?, ty(lo)?, ty(hi)?)))
                .collect()
        })
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in data.iter().flatten() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    for &(x, lo, hi) in bands.iter().flatten() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(lo), y1.max(hi));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f64, b: f64| {
        let p = ((b - a) * 0.05).max(1e-9);
        (a - p, b + p)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let inv = |log: bool, v: f64| if log { 10f64.powf(v) } else { v };
    let ticks = |log: bool, lo: f64, hi: f64, given: Option<&Vec<f64>>| -> Vec<f64> {
        let t = match given {
            Some(t) => t.clone(),
            None => nice_ticks(inv(log, lo), inv(log, hi), log),
        };
        t.into_iter().filter_map(|v| if log { (v > 0.0).then(|| v.log10()) } else { Some(v) }).collect()
    };
    let (kx, ky) = (ticks(axes.log_x, x0, x1, axes.x_ticks.as_ref()), ticks(axes.log_y, y0, y1, None));
    let labelled = series.len() > 1 || series.iter().any(|s| !s.label.is_empty());
    let legend_w = if labelled {
        let chars = series.iter().map(|s| s.label.chars().count()).max().unwrap_or(0) as u32;
        (40 + 7 * chars).clamp(90, 300)
    } else {
        0
    };
    let height = if labelled { 460.max(60 + 22 * series.len() as u32) } else { 460 };
    let root = SVGBackend::new(path, (760 + legend_w, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(760);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&axes.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(Ticked::new(x0..x1, kx), Ticked::new(y0..y1, ky))
        .map_err(err)?;
    let label = |log: bool, suffix: &str, v: f64| format!("{}{suffix}", short(inv(log, v)));
    chart
        .configure_mesh()
        .x_desc(axes.x.as_str())
        .y_desc(axes.y.as_str())
        .x_label_formatter(&|v| label(axes.log_x, &axes.x_suffix, *v))
        .y_label_formatter(&|v| label(axes.log_y, "", *v))
        .draw()
        .map_err(err)?;
    for (i, (pts, band)) in data.into_iter().zip(bands).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if band.len() >= 2 {
            let outline: Vec<(f64, f64)> =
                band.iter().map(|b| (b.0, b.2)).chain(band.iter().rev().map(|b| (b.0, b.1))).collect();
            chart
                .draw_series(std::iter::once(Polygon::new(outline, color.mix(0.18).filled())))
                .map_err(err)?;
        }
        chart.draw_series(LineSeries::new(pts, color.stroke_width(2))).map_err(err)?;
    }
    if labelled {
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let y = 40 + 22 * i as i32;
            legend_area.draw(&PathElement::new(vec![(4, y), (24, y)], color.stroke_width(3))).map_err(err)?;
            let style =
                TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            legend_area.draw(&Text::new(s.label.clone(), (30, y), style)).map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// A linear f64 axis whose ticks (and grid lines) are exactly the given values.
struct Ticked {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        let ticks = ticks.into_iter().filter(|t| range.contains(t)).collect();
        Self { inner: range.into(), ticks }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // the mesh asks for bold points, then light ones between them: only the ticks given
        if hint.weight().allow_light_points() && hint.bold_points() < hint.max_num_points() {
            return Vec::new();
        }
        self.ticks.clone()
    }
}

/// At most 4 significant digits, no trailing zeros: 1.2589 → "1.259", 2.0 → "2", 1500 → "1500".
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    trim(format!("{v:.digits$}"))
}

/// "1.500" → "1.5", "2.000" → "2".
fn trim(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// One heatmap: `values[row][col]` in [0, 1].
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub values: Vec<Vec<f64>>,
}

/// Heatmap panels side by side (white = 0, dark blue = 1; the value printed in each cell).
pub fn heatmaps(path: &Path, title: &str, row_desc: &str, col_desc: &str, maps: &[Heatmap]) -> Result<()> {
    let per_row = maps.len().clamp(1, 3);
    let grid_rows = maps.len().div_ceil(per_row).max(1);
    let root = SVGBackend::new(path, (300 * per_row as u32, 40 + 260 * grid_rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    for (panel, m) in root.split_evenly((grid_rows, per_row)).iter().zip(maps) {
        let (nr, nc) = (m.rows.len().max(1), m.cols.len().max(1));
        let mut chart = ChartBuilder::on(panel)
            .caption(&m.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d((0..nc).into_segmented(), (0..nr).into_segmented())
            .map_err(err)?;
        let label = |names: &[String], v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(col_desc)
            .y_desc(row_desc)
            .x_labels(nc + 1)
            .y_labels(nr + 1)
            .x_label_formatter(&|v| label(&m.cols, v))
            .y_label_formatter(&|v| label(&m.rows, v))
            .draw()
            .map_err(err)?;
        for (r, row) in m.values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let shown = if v.is_finite() { format!("{v:.2}") } else { "–".into() };
                let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
                let fill =
                    RGBColor((255.0 - 222.0 * v) as u8, (255.0 - 173.0 * v) as u8, (255.0 - 80.0 * v) as u8);
                use SegmentValue::{CenterOf, Exact};
                let cell = [(Exact(c), Exact(r)), (Exact(c + 1), Exact(r + 1))];
                chart.draw_series(std::iter::once(Rectangle::new(cell, fill.filled()))).map_err(err)?;
                let ink = if v > 0.5 { WHITE } else { BLACK };
                let style =
                    ("sans-serif", 12).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(shown, (CenterOf(c), CenterOf(r)), style)))
                    .map_err(err)?;
            }
        }
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9 * y.abs().max(1.0))
    }

    #[test]
    fn ticks_fall_on_round_values() {
        let t = nice_ticks(0.9, 1100.0, true);
        assert!(close(&t, &[1.0, 10.0, 100.0, 1000.0]), "{t:?}");
        let t = nice_ticks(1e-20, 2.0, true); // 21 decades: every third power of ten
        assert_eq!(t.len(), 7, "{t:?}");
        let exponents: Vec<f64> = t.iter().map(|v| v.log10()).collect();
        assert!(close(&exponents, &[-20.0, -17.0, -14.0, -11.0, -8.0, -5.0, -2.0]), "{t:?}");
        let t = nice_ticks(1.5, 9.0, true); // 2 and 5 only: every digit
        assert!(close(&t, &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]), "{t:?}");
        let t = nice_ticks(44.2, 47.9, true); // narrower than a digit: linear steps of 0.5
        assert!(close(&t, &[44.5, 45.0, 45.5, 46.0, 46.5, 47.0, 47.5]), "{t:?}");
        let t = nice_ticks(-0.05, 1.05, false);
        assert!(close(&t, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
        assert_eq!(
            (short(1.2589), short(2.0), short(1500.0), short(0.60000000001)),
            ("1.259".into(), "2".into(), "1500".into(), "0.6".into())
        );
    }

    /// Bands are drawn as polygons, ticks sit at the values asked for with their suffix, and
    /// the legend lies right of the plot area.
    #[test]
    fn a_chart_draws_bands_exact_ticks_and_an_outside_legend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let axes = Axes {
            title: "t".into(),
            log_x: true,
            log_y: true,
            x_ticks: Some(vec![1.0, 2.0, 4.0, 8.0, 16.0]), // 16: beyond the data, not drawn
            x_suffix: "×".into(),
            ..Axes::default()
        };
        let s = Series::new("a", vec![(1.0, 10.0), (2.0, 12.0), (4.0, 15.0), (8.0, 30.0)]).with_band(vec![
            (1.0, 9.0, 11.0),
            (2.0, 11.0, 13.0),
            (4.0, 14.0, 16.0),
            (8.0, 25.0, 35.0),
        ]);
        lines(&path, &axes, &[s, Series::new("b", vec![(1.0, 11.0), (8.0, 20.0)])]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).map(str::trim).collect();
        for l in ["1×", "2×", "4×", "8×", "10", "20", "30", "a", "b"] {
            assert!(texts.contains(&l), "no label {l}: {texts:?}");
        }
        assert!(!texts.iter().any(|t| t.contains("1.259") || *t == "3×" || *t == "16×"), "{texts:?}");
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("polygon")).count(), 1, "one band");
        let plot_right = 760.0;
        for n in doc
            .descendants()
            .filter(|n| n.has_tag_name("text") && ["a", "b"].contains(&n.text().unwrap_or("").trim()))
        {
            let x: f64 = n.attribute("x").unwrap().parse().unwrap();
            assert!(x > plot_right, "legend label at x = {x}, inside the plot");
        }
    }
}
