//! Helpers shared by the `zoo` binary's integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn zoo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zoo"));
    c.env("RUST_BACKTRACE", "0");
    c
}

pub fn run(args: &[&str]) -> Output {
    zoo().args(args).output().expect("zoo runs")
}

pub fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pezoo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub const MICRO: &str = r#"
[model]
d_model = 32
n_layers = 1
n_heads = 2
max_seq_len = 32
[train]
batch_size = 4
steps = 200
checkpoint_every = 20
warmup_steps = 5
log_every = 10
valid_batches = 2
[data]
synthetic_docs = 20
synthetic_doc_len = 800
"#;

/// Exit code 1, no panic, exactly one `error:` line, holding every needle.
#[allow(dead_code)] // not every test binary checks errors
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{}` lacks `{n}`", lines[0]);
    }
}
