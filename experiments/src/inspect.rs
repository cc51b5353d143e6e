//! `zoo inspect`: what an encoding does, as a table or stable JSON.

use anyhow::{Context, Result};
use clap::Args;
use pezoo_encodings::{EncodingConfig, EncodingContext, inspect};

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
    /// Seed for learnable encodings' initial values (t5, fire).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    let report = inspect(&config, &ctx, &args.distances, &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
