//! `zoo`: the pezoo command line.

use pezoo_experiments::{analyze, bench, compare, device, eval, generate, inspect, train};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "zoo", version, about = "A zoo of positional encodings for small language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what an encoding does: per-pair θ_i, kept pairs, M_i(Δ) or per-head bias b_h(Δ).
    Inspect(inspect::InspectArgs),
    /// Train the LM with any encoding on any device (burn-train Learner, checkpoints, resume).
    Train(train::TrainArgs),
    /// Perplexity vs length (and per-position loss) of a trained run on held-out text.
    Eval(eval::EvalArgs),
    /// Continue a prompt with a trained run (KV cache; greedy or sampled).
    Generate(generate::GenerateArgs),
    /// Attention by distance and the U-score (HoPE-HF's analysis) of a trained run.
    Analyze(analyze::AnalyzeArgs),
    /// Train each encoding × seed, evaluate, and write report.md with tables and SVG plots.
    Compare(compare::CompareArgs),
    /// Benchmarks (run a release build): fused kernels, training throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// List the backends compiled into this binary and what `--device auto` picks.
    Devices,
}

/// Burn builds incidental tensors on `Device::default()` (e.g. optimizer state when a
/// checkpoint is loaded, before it moves to the training device), and with wgpu compiled in
/// that default initialises a GPU adapter — on a machine without a display Mesa then prints
/// `XDG_RUNTIME_DIR is invalid or not set`. Point the default at the CPU backend unless the
/// user chose one (`BURN_DEVICE`); `--device` still picks where models run.
#[allow(unsafe_code)]
fn default_device_on_cpu() {
    if std::env::var_os("BURN_DEVICE").is_none() {
        let cpu = if cfg!(feature = "flex") {
            "flex"
        } else if cfg!(feature = "ndarray") {
            "ndarray"
        } else {
            return;
        };
        // SAFETY: called first thing in `main`, before any other thread exists, so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("BURN_DEVICE", cpu) };
    }
}

/// On a machine without a display, probing wgpu's adapters makes Mesa's Wayland client print
/// `error: XDG_RUNTIME_DIR is invalid or not set` although nothing is wrong (no compositor is
/// wanted). When the variable is unset, point it at a private, empty directory: the probe then
/// finds no compositor quietly.
#[allow(unsafe_code)]
fn quiet_display_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() || cfg!(not(target_os = "linux")) {
        return;
    }
    #[cfg(unix)]
    let made = {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        // this process's uid: the owner of /proc/self (Linux only, as is this function's use)
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
        let dir = std::env::temp_dir().join(format!("pezoo-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // only a real directory (not a link someone planted) of this user's, private, as the
        // variable's readers require
        let ok = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
        ok.then_some(dir)
    };
    #[cfg(not(unix))]
    let made: Option<std::path::PathBuf> = None;
    if let Some(dir) = made {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
    }
}

/// glibc gives large freed blocks back to the kernel (those above its adaptive mmap threshold,
/// and the heap top past its trim threshold): a training step frees and reallocates tensors of
/// 4–13 MiB hundreds of times, and many came back as fresh zeroed pages (page faults were ~14% of
/// `zoo bench train`'s profile on flex). Keep freed memory for reuse instead — requests below
/// 32 MiB from the heap, no trimming, 64 MiB of slack — which raised flex's training throughput
/// ~14% (docs/performance.md); results are unchanged (buffers are zero-filled either way). The
/// process keeps its peak heap until it exits. Left alone when `PEZOO_KEEP_FREED_MEMORY=0`, and
/// per parameter when the user set it (`MALLOC_*_` or a `glibc.malloc.` tunable).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("PEZOO_KEEP_FREED_MEMORY") == "0" {
        return;
    }
    let tunables = var("GLIBC_TUNABLES");
    let user_left = |env: &str, tunable: &str| {
        std::env::var_os(env).is_none() && !tunables.contains(&format!("glibc.malloc.{tunable}"))
    };
    // SAFETY: mallopt changes parameters that malloc reads without a lock, so it must run before
    // any other thread exists: it is called first thing in `main`. A rejected value (returns 0,
    // e.g. the threshold under the hugetlb tunable) leaves glibc's default in place.
    unsafe {
        if user_left("MALLOC_MMAP_THRESHOLD_", "mmap_threshold") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's 64-bit maximum
        }
        if user_left("MALLOC_TRIM_THRESHOLD_", "trim_threshold") {
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // never trim
        }
        if user_left("MALLOC_TOP_PAD_", "top_pad") {
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    default_device_on_cpu();
    quiet_display_probe();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Inspect(_) | Command::Devices) {
        // `zoo inspect … | head`: for these read-only commands a closed stdout ends the program
        // quietly (println! panics on EPIPE; Rust ignores SIGPIPE). Commands that write runs
        // keep the default: a closed pipe there must not look like success.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
            if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
                std::process::exit(0);
            }
            default_hook(info)
        }));
    }
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Train(a) => train::run(a).map(|_| ()),
        Command::Eval(a) => eval::run(a).map(|_| ()),
        Command::Generate(a) => generate::run(a),
        Command::Analyze(a) => analyze::run(a).map(|_| ()),
        Command::Compare(a) => compare::run(a).map(|_| ()),
        Command::Bench(b) => bench::run(b),
        Command::Devices => devices(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn devices() -> anyhow::Result<()> {
    for (name, on) in device::compiled() {
        println!("{name:<8} {}", if on { "compiled" } else { "-" });
    }
    let (_, picked) = device::select("auto")?;
    println!("auto ->  {picked}");
    for (name, on) in device::compiled() {
        if on && !matches!(name, "flex" | "ndarray" | "cpu") {
            let found = device::enumerate(name);
            println!("{name}: {} device(s)", found.len());
            for (i, d) in found.iter().enumerate() {
                println!("  {name}:{i:<3} {d:?}");
            }
        }
    }
    Ok(())
}
