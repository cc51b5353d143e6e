//! `zoo inspect`: what an encoding does, as a table or stable JSON.

use anyhow::{Context, Result};
use clap::Args;
use pezoo_encodings::{EncodingConfig, EncodingContext, inspect};

use crate::report::plots::{Axes, Series, lines};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Encoding kind (`rope`, `hope-hf`, …) with defaults, or a TOML file with `kind = "…"`.
    #[arg(long)]
    pub encoding: Option<String>,
    /// Per-head dimension d.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Number of heads (bias-class encodings are per head).
    #[arg(long, default_value_t = 1)]
    pub heads: usize,
    /// Training length L (hope-hf's cut-off, defaults of hope-hyp, learned table length).
    #[arg(long)]
    pub train_len: Option<usize>,
    /// Query–key distances Δ to show.
    #[arg(long, value_delimiter = ',', default_value = "0,1,7,100,4096")]
    pub distances: Vec<usize>,
    /// Machine-readable output (fields documented in `pezoo_encodings::inspect`).
    #[arg(long)]
    pub json: bool,
    /// List the registered encodings and exit.
    #[arg(long)]
    pub list: bool,
    /// Seed for learnable encodings' initial values (t5, fire) and the envelope's random q, k.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the score envelope instead: the logit vs distance Δ for q = k = 1 and for random
    /// q, k (HoPE-Hyp figs. 4–5; definitions in `pezoo_encodings::envelope`).
    #[arg(long)]
    pub envelope: bool,
    /// Envelope: largest distance (every Δ up to 128, then log-spaced).
    #[arg(long, default_value_t = 4096)]
    pub max_distance: usize,
    /// Envelope: random (q, k) draws.
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    /// Envelope: also write this SVG plot.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

pub fn run(args: InspectArgs) -> Result<()> {
    if args.list || args.encoding.is_none() {
        for (kind, summary) in EncodingConfig::catalogue() {
            println!("{kind:<12} {summary}");
        }
        if args.encoding.is_none() && !args.list {
            println!("\n(pass --encoding <kind or file.toml> to inspect one)");
        }
        return Ok(());
    }
    let spec = args.encoding.as_deref().unwrap_or_default();
    let config = EncodingConfig::from_name_or_file(spec)?;
    let ctx = EncodingContext::new(args.head_dim, args.heads, args.train_len);
    let device = crate::device::cpu();
    device.seed(args.seed);
    if args.envelope {
        return envelope(&args, &config, &ctx, &device);
    }
    let report = inspect(&config, &ctx, &args.distances, &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Every Δ up to 128, then steps of ~5% up to `max`.
pub fn envelope_distances(max: usize) -> Vec<usize> {
    let mut d: Vec<usize> = (0..=max.min(128)).collect();
    let mut x = 128.0f64;
    while (x as usize) < max {
        x = (x * 1.05).ceil();
        d.push((x as usize).min(max));
    }
    d
}

fn envelope(
    args: &InspectArgs,
    config: &EncodingConfig,
    ctx: &EncodingContext,
    device: &burn::prelude::Device,
) -> Result<()> {
    if args.samples == 0 {
        anyhow::bail!("--samples: 0 is out of range (allowed: ≥ 1)");
    }
    let dist = envelope_distances(args.max_distance);
    let env = pezoo_encodings::envelope(config, ctx, &dist, args.samples, args.seed, device)?;
    if let Some(path) = &args.plot {
        let mut series = Vec::new();
        for c in &env.curves {
            let head = if env.curves.len() > 1 { format!(" head {}", c.head) } else { String::new() };
            let pts = |v: &[f64]| env.distances.iter().map(|&d| d as f64).zip(v.iter().copied()).collect();
            let band = |sign: f64| -> Vec<f64> {
                c.random_mean.iter().zip(&c.random_std).map(|(m, s)| m + sign * s).collect()
            };
            series.push(Series::new(format!("q = k = 1{head}"), pts(&c.fixed)));
            series.push(Series::new(format!("k = q random{head}"), pts(&c.matched_mean)));
            series.push(Series::new(format!("random mean + std{head}"), pts(&band(1.0))));
            series.push(Series::new(format!("random mean − std{head}"), pts(&band(-1.0))));
        }
        let axes = Axes {
            title: format!("score envelope: {} (head_dim {})", env.kind, ctx.head_dim),
            x: "distance Δ".into(),
            y: "logit qᵀM(Δ)k".into(),
            ..Axes::default()
        };
        lines(path, &axes, &series)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&env).context("serialising the envelope")?);
        return Ok(());
    }
    println!("score envelope of {} ({} random draws)", env.kind, env.samples);
    for c in &env.curves {
        if env.curves.len() > 1 {
            println!("head {}", c.head);
        }
        println!("{:>9} {:>12} {:>12} {:>12} {:>12}", "Δ", "q=k=1", "k=q rand", "rand mean", "rand std");
        for (j, &d) in env.distances.iter().enumerate() {
            if d == 0 || d.is_power_of_two() || j + 1 == env.distances.len() {
                println!(
                    "{d:>9} {:>12.4} {:>12.4} {:>12.4} {:>12.4}",
                    c.fixed[j], c.matched_mean[j], c.random_mean[j], c.random_std[j]
                );
            }
        }
    }
    Ok(())
}
