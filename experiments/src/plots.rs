//! SVG plots (plotters): line charts with optional log axes, and heatmap panels.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points }
    }
}

/// Title and axes of a line chart. Log axes plot log10 of the values (points ≤ 0 are dropped).
#[derive(Debug, Clone, Default)]
pub struct Axes {
    pub title: String,
    pub x: String,
    pub y: String,
    pub log_x: bool,
    pub log_y: bool,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// A line chart of `series` into the SVG file `path`.
pub fn lines(path: &Path, axes: &Axes, series: &[Series]) -> Result<()> {
    let tx = |v: f64| if axes.log_x { (v > 0.0).then(|| v.log10()) } else { Some(v) };
    let ty = |v: f64| if axes.log_y { (v > 0.0).then(|| v.log10()) } else { Some(v) };
    let data: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .filter_map(|&(x, y)| Some((tx(x)?, ty(y)?)))
                .collect()
        })
        .collect();
    let all = data.iter().flatten();
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f64, b: f64| {
        let p = ((b - a) * 0.05).max(1e-9);
        (a - p, b + p)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&axes.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let fmt =
        |log: bool| move |v: &f64| if log { format!("{:.3}", 10f64.powf(*v)) } else { format!("{v:.3}") };
    let (fx, fy) = (fmt(axes.log_x), fmt(axes.log_y));
    chart
        .configure_mesh()
        .x_desc(axes.x.as_str())
        .y_desc(axes.y.as_str())
        .x_label_formatter(&|v| trim(fx(v)))
        .y_label_formatter(&|v| trim(fy(v)))
        .draw()
        .map_err(err)?;
    for (i, (s, pts)) in series.iter().zip(data).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    if series.len() > 1 || series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
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
