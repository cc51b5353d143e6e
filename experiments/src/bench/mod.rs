//! `zoo bench kernels` and `zoo bench train`: medians over repeated runs after warm-up, with a
//! device sync before reading the clock. Run on a release build (`cargo run --release`).

mod attention;
mod kernels;
mod train;

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use clap::{Args, Subcommand};

pub use train::gemm_shapes;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Fused rotary kernels vs the reference and vs a plain elementwise op (the memory floor).
    Kernels(KernelArgs),
    /// Fused attention with the encoding inside vs Burn's attention: time and peak device memory
    /// by length, forward and forward + backward.
    Attention(AttentionArgs),
    /// Training tokens/s of the LM (`zoo train`'s step and optimizer, no data loading).
    Train(TrainBenchArgs),
    /// GFLOP/s of the matmuls of `bench train`'s step, shape by shape (to compare the backend's
    /// GEMM with PyTorch's on the same shapes: `experiments/scripts/torch_gemm.py`).
    Gemm(GemmArgs),
}

/// The benchmark model's shape (defaults: `../shared/bench/torch_lm.py`'s).
#[derive(Args, Debug)]
pub struct ShapeArgs {
    #[arg(long, default_value_t = 256)]
    pub d: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

#[derive(Args, Debug)]
pub struct GemmArgs {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
}

#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Shapes batch×heads×seq×head_dim, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8x8x512x64,4x16x2048x128")]
    pub sizes: Vec<String>,
    /// Encoding to apply (a rotary-class kind or TOML file).
    #[arg(long, default_value = "rope")]
    pub encoding: String,
    #[arg(long, default_value = "wgpu")]
    pub device: String,
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// Encodings (kinds or TOML files), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "rope,alibi")]
    pub encodings: Vec<String>,
    /// Sequence lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048,4096,8192")]
    pub lengths: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    #[arg(long, default_value = "wgpu")]
    pub device: String,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Skip the reference where its `[batch, heads, L, L]` tensors would need more than this.
    #[arg(long, default_value_t = 12.0)]
    pub max_reference_gib: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value = "rope")]
    pub encoding: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels(a) => kernels::kernels(a),
        BenchCommand::Attention(a) => attention::attention(a),
        BenchCommand::Train(a) => train::train(a),
        BenchCommand::Gemm(a) => train::gemm(a),
    }
}

/// Median seconds of `f` over `reps` runs after `warmup`, syncing the device each time. `f`'s
/// result is kept alive until after the sync, so a lazy backend (Fusion) cannot skip the work.
/// A device failure during the work (e.g. an allocation past the device's limit) is an error,
/// never a time.
pub(super) fn median<T>(
    device: &Device,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> T,
) -> Result<f64> {
    let mut run = || -> Result<f64> {
        let t0 = Instant::now();
        let keep = f();
        device.sync().map_err(|e| anyhow::anyhow!("the device failed: {}", root_cause(&e)))?;
        let dt = t0.elapsed().as_secs_f64();
        drop(keep);
        Ok(dt)
    };
    for _ in 0..warmup {
        run()?;
    }
    let mut t = (0..reps.max(1)).map(|_| run()).collect::<Result<Vec<f64>>>()?;
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

/// The innermost cause of a (multi-line) device error, e.g. `can't allocate buffer of size: N`.
pub(super) fn root_cause(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let skip = |l: &&str| {
        l.is_empty()
            || l.ends_with(':')
            || l.starts_with("No backtrace")
            || l.starts_with("skipped")
            || l.starts_with('(')
    };
    text.lines().map(str::trim).rev().find(|l| !skip(l)).unwrap_or("unknown").to_string()
}
