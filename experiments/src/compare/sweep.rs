//! A sweep over (encoding × seed): the plan `zoo compare` runs, its shards (`--shard i/n`, Slurm
//! array tasks), a lock per run directory so concurrent shards never work on the same run, and
//! the sbatch scripts that run a sweep as an array job.

use std::fmt::Write as _;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::write_atomic;

/// One run of the plan: its index (the order a sequential compare runs them in), encoding,
/// seed and directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub index: usize,
    pub encoding: String,
    pub seed: u64,
    pub dir: PathBuf,
}

/// Every run of a sweep, encoding-major.
pub fn plan(encodings: &[String], seeds: u64, out: &Path) -> Vec<PlannedRun> {
    let pairs = encodings.iter().flat_map(|e| (0..seeds).map(move |s| (e, s)));
    pairs
        .enumerate()
        .map(|(index, (e, seed))| PlannedRun {
            index,
            encoding: e.clone(),
            seed,
            dir: out.join(e.replace(['/', '.'], "_")).join(format!("seed{seed}")),
        })
        .collect()
}

/// A shard `i/n`: the runs whose index is i mod n (0 ≤ i < n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `i/n`, or `slurm` (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` of
    /// `SLURM_ARRAY_TASK_COUNT`).
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_with(s, |k| std::env::var(k).ok())
    }

    /// [`Shard::parse`] with the environment given by `env`.
    pub fn parse_with(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |k: &str| env(k).and_then(|v| v.trim().parse::<usize>().ok());
        let (index, count) = if s == "slurm" {
            let (Some(id), Some(count)) = (num("SLURM_ARRAY_TASK_ID"), num("SLURM_ARRAY_TASK_COUNT")) else {
                bail!(
                    "--shard slurm: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set (not in a Slurm array job?)"
                );
            };
            let min = num("SLURM_ARRAY_TASK_MIN").unwrap_or(0);
            let Some(index) = id.checked_sub(min) else {
                bail!("--shard slurm: SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}");
            };
            (index, count)
        } else {
            let parsed = s.split_once('/').and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)));
            parsed.ok_or_else(|| anyhow::anyhow!("--shard {s}: expected i/n (e.g. 0/4) or slurm"))?
        };
        if count == 0 || index >= count {
            bail!("--shard {s}: shard {index} of {count} is out of range (allowed: i/n with 0 ≤ i < n)");
        }
        Ok(Self { index, count })
    }

    pub fn holds(&self, run: &PlannedRun) -> bool {
        run.index % self.count == self.index
    }
}

/// What defines a sweep, saved as `sweep.json` in its directory: shards and later runs of
/// `zoo compare` on the same directory must agree on it (the run indices and every run's
/// training depend on it). The preset's `[eval]` and `[analyze]`, `--lengths` and another
/// evaluation corpus may change: those stages re-run where their saved settings differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPlan {
    pub preset: String,
    pub encodings: Vec<String>,
    pub seeds: u64,
    pub data: Option<PathBuf>,
    pub tokenizer: Option<String>,
}

/// A tokenizer spec with a `tokenizer.json` path made absolute (`bytes`, `bpe:N` as they are).
pub fn absolute_tokenizer(spec: &str) -> Result<String> {
    Ok(match pezoo_models::TokenizerSpec::parse(spec)? {
        pezoo_models::TokenizerSpec::File(p) => std::path::absolute(&p)?.display().to_string(),
        _ => spec.to_string(),
    })
}

impl SweepPlan {
    /// Saves the plan in `out` (never over another: processes started together agree on the
    /// first one written), or checks it against the one saved there.
    pub fn check_or_save(&self, out: &Path) -> Result<()> {
        let path = out.join("sweep.json");
        if !path.exists() {
            let mut tmp = tempfile::NamedTempFile::new_in(out)
                .with_context(|| format!("writing {}", path.display()))?;
            std::io::Write::write_all(&mut tmp, serde_json::to_string_pretty(self)?.as_bytes())?;
            if tmp.persist_noclobber(&path).is_ok() {
                return Ok(());
            }
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let saved: SweepPlan =
            serde_json::from_str(&text).with_context(|| format!("{}: not a sweep plan", path.display()))?;
        if let Some((field, there, here)) = self.first_difference(&saved) {
            bail!(
                "--out {}: holds a sweep with another plan ({field}: {there} in its sweep.json, {here} here); \
                 use the same settings or another --out",
                out.display()
            );
        }
        Ok(())
    }

    fn first_difference(&self, saved: &SweepPlan) -> Option<(&'static str, String, String)> {
        let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
        [
            (
                "--preset",
                !same_training(&self.preset, &saved.preset),
                "another run".to_string(),
                "this one".to_string(),
            ),
            ("--encodings", self.encodings != saved.encodings, show(&saved.encodings), show(&self.encodings)),
            ("--seeds", self.seeds != saved.seeds, show(&saved.seeds), show(&self.seeds)),
            ("--data", self.data != saved.data, show(&saved.data), show(&self.data)),
            ("--tokenizer", self.tokenizer != saved.tokenizer, show(&saved.tokenizer), show(&self.tokenizer)),
        ]
        .into_iter()
        .find_map(|(name, differs, there, here)| differs.then_some((name, there, here)))
    }
}

/// Whether two presets train the same runs (their `[eval]` and `[analyze]` may differ).
fn same_training(a: &str, b: &str) -> bool {
    let training = |t: &str| crate::run::RunConfig::from_toml(t, "preset").ok().map(|c| c.training());
    a == b || training(a).is_some_and(|x| Some(x) == training(b))
}

/// An exclusive lock on a run directory (`.lock`), held while a process trains or evaluates the
/// run; released when dropped or when the process dies (a killed shard's run can be resumed).
pub struct RunLock {
    _file: File,
}

impl RunLock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = crate::run::RunDir::new(dir).lock_file();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => bail!(
                "{}: another process is working on this run (it holds {}); wait for it or stop it",
                dir.display(),
                path.display()
            ),
            Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// `zoo compare --slurm`: what the sbatch scripts ask Slurm for.
#[derive(Args, Debug, Clone, Default)]
pub struct SlurmArgs {
    /// Write sweep.sbatch (an array job, one task per run) and report.sbatch into --out, and
    /// print the commands that submit them.
    #[arg(long)]
    pub slurm: bool,
    /// Slurm partition (`#SBATCH --partition`).
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Time limit per task (`#SBATCH --time`, e.g. 04:00:00); the task checkpoints and requeues
    /// itself shortly before it.
    #[arg(long, requires = "slurm", default_value = "04:00:00")]
    pub time: String,
    /// GPUs per task (`#SBATCH --gpus-per-task`; 0: none).
    #[arg(long, requires = "slurm", default_value_t = 1)]
    pub gpus_per_task: u32,
    /// Slurm account (`#SBATCH --account`).
    #[arg(long, requires = "slurm")]
    pub account: Option<String>,
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn header(s: &SlurmArgs, name: &str, workdir: &Path) -> String {
    let mut h = format!("#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --time={}\n", s.time);
    if let Some(p) = &s.partition {
        let _ = writeln!(h, "#SBATCH --partition={p}");
    }
    if let Some(a) = &s.account {
        let _ = writeln!(h, "#SBATCH --account={a}");
    }
    if s.gpus_per_task > 0 {
        let _ = writeln!(h, "#SBATCH --gpus-per-task={}", s.gpus_per_task);
    }
    let _ =
        writeln!(h, "#SBATCH --ntasks=1\n#SBATCH --open-mode=append\n#SBATCH --chdir={}", workdir.display());
    h
}

/// Writes `sweep.sbatch` (an array of `runs` tasks, task i running `zoo compare … --shard
/// i/runs`, one log per task in `logs/`) and `report.sbatch` (`zoo compare …`: fills in what is
/// missing and writes the report) into `out`; returns the shell commands that submit them, the
/// report after every task has succeeded. Tasks run in the current directory, so that relative
/// paths in the preset mean what they mean here.
pub fn write_sbatch(out: &Path, zoo_args: &[String], runs: usize, s: &SlurmArgs) -> Result<String> {
    // #SBATCH lines are not shell: a value with spaces or quotes cannot be written there
    let unusable = |v: &str| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"');
    for (flag, v) in [
        ("--partition", s.partition.as_deref()),
        ("--account", s.account.as_deref()),
        ("--time", Some(&*s.time)),
    ] {
        if let Some(v) = v.filter(|v| unusable(v)) {
            bail!("{flag} {v:?}: not usable in an #SBATCH line (allowed: a value without spaces or quotes)");
        }
    }
    let out = std::path::absolute(out)?;
    let workdir = std::env::current_dir().context("the working directory")?;
    for dir in [&out, &workdir] {
        if unusable(&dir.display().to_string()) {
            bail!("{}: a path with spaces or quotes cannot go in an #SBATCH line", dir.display());
        }
    }
    std::fs::create_dir_all(out.join("logs"))?;
    let exe = std::env::current_exe().context("locating the zoo binary")?;
    let command: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(zoo_args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect();
    let command = command.join(" ");
    // SIGTERM 3 minutes before the time limit reaches the batch shell, which forwards it to zoo
    // (it finishes its step and checkpoints; in a batch job a repeated signal is the same
    // request) and requeues the task; on preemption Slurm requeues it itself. A requeued task
    // resumes its run from the checkpoint.
    let sweep = format!(
        "{}#SBATCH --array=0-{}\n#SBATCH --output={}/logs/%A_%a.out\n#SBATCH --requeue\n#SBATCH --signal=B:TERM@180\n\n\
         {command} --shard \"${{SLURM_ARRAY_TASK_ID}}/{runs}\" &\n\
         pid=$!\n\
         trap 'kill -TERM $pid; wait $pid; scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\" || true; exit 0' TERM\n\
         wait $pid\n",
        header(s, "pezoo-sweep", &workdir),
        runs - 1,
        out.display(),
    );
    let report = format!(
        "{}#SBATCH --output={}/logs/report_%j.out\n\n{command}\n",
        header(s, "pezoo-report", &workdir),
        out.display()
    );
    let (sweep_path, report_path) = (out.join("sweep.sbatch"), out.join("report.sbatch"));
    write_atomic(&sweep_path, sweep.as_bytes())?;
    write_atomic(&report_path, report.as_bytes())?;
    Ok(format!(
        "jid=$(sbatch --parsable {})\nsbatch --dependency=afterok:$jid {}",
        shell_quote(&sweep_path.display().to_string()),
        shell_quote(&report_path.display().to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_plan_and_bad_shards_are_refused() {
        let encodings: Vec<String> = ["rope", "alibi", "hope-hyp"].map(String::from).to_vec();
        let runs = plan(&encodings, 3, Path::new("out"));
        assert_eq!(runs.len(), 9);
        assert_eq!((runs[4].encoding.as_str(), runs[4].seed), ("alibi", 1));
        assert_eq!(runs[4].dir, Path::new("out/alibi/seed1"));
        for n in 1..=10 {
            let mut seen = vec![0; runs.len()];
            for i in 0..n {
                let shard = Shard::parse(&format!("{i}/{n}")).unwrap();
                runs.iter().filter(|r| shard.holds(r)).for_each(|r| seen[r.index] += 1);
            }
            assert!(seen.iter().all(|&c| c == 1), "{n} shards cover every run once: {seen:?}");
        }
        for bad in ["3/2", "2/2", "0/0", "1", "a/b", "-1/2"] {
            let err = Shard::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--shard {bad}:")), "{err}");
        }
    }

    #[test]
    fn a_sweep_directory_refuses_another_plan() {
        let dir = tempfile::tempdir().unwrap();
        let p = SweepPlan {
            preset: "[model]\n".into(),
            encodings: vec!["rope".into()],
            seeds: 3,
            data: None,
            tokenizer: None,
        };
        p.check_or_save(dir.path()).unwrap();
        p.check_or_save(dir.path()).unwrap();
        let other = SweepPlan { seeds: 2, ..p.clone() };
        let err = other.check_or_save(dir.path()).unwrap_err().to_string();
        assert!(err.contains("--seeds: 3 in its sweep.json, 2 here"), "{err}");
        // what is measured after training may change; what trains may not
        let measured = SweepPlan { preset: "[model]\n[eval]\nlengths = [1, 4]\n".into(), ..p.clone() };
        measured.check_or_save(dir.path()).unwrap();
        let trained = SweepPlan { preset: "[model]\nd_model = 64\n".into(), ..p.clone() };
        let err = trained.check_or_save(dir.path()).unwrap_err().to_string();
        assert!(err.contains("--preset: another run"), "{err}");
    }

    #[test]
    fn a_run_directory_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("rope/seed0");
        let held = RunLock::acquire(&run).unwrap();
        let err = RunLock::acquire(&run).err().expect("a second holder is refused").to_string();
        assert!(err.contains("another process is working on this run"), "{err}");
        drop(held);
        RunLock::acquire(&run).expect("released on drop");
    }

    #[test]
    fn slurm_shards_come_from_the_array_environment() {
        let env = |id: &'static str, min: &'static str| {
            move |k: &str| match k {
                "SLURM_ARRAY_TASK_ID" => Some(id.to_string()),
                "SLURM_ARRAY_TASK_MIN" => Some(min.to_string()),
                "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
                _ => None,
            }
        };
        assert_eq!(Shard::parse_with("slurm", env("3", "0")).unwrap(), Shard { index: 3, count: 4 });
        assert_eq!(Shard::parse_with("slurm", env("12", "10")).unwrap(), Shard { index: 2, count: 4 });
        let below = Shard::parse_with("slurm", env("1", "5")).unwrap_err().to_string();
        assert!(below.contains("below SLURM_ARRAY_TASK_MIN 5"), "{below}");
        let none = Shard::parse_with("slurm", |_| None).unwrap_err().to_string();
        assert!(none.contains("not set"), "{none}");
    }

    #[test]
    fn sbatch_scripts_hold_an_array_over_the_runs_and_parse_as_bash() {
        let dir = tempfile::tempdir().unwrap();
        let s = SlurmArgs {
            slurm: true,
            partition: Some("gpu".into()),
            time: "01:00:00".into(),
            ..Default::default()
        };
        let args: Vec<String> =
            ["compare", "--preset", "it's.toml", "--seeds", "3"].map(String::from).to_vec();
        let submit = write_sbatch(dir.path(), &args, 12, &s).unwrap();
        let sweep = std::fs::read_to_string(dir.path().join("sweep.sbatch")).unwrap();
        let report = std::fs::read_to_string(dir.path().join("report.sbatch")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        for line in [
            "#SBATCH --array=0-11".to_string(),
            "#SBATCH --requeue".into(),
            "#SBATCH --signal=B:TERM@180".into(),
            "#SBATCH --time=01:00:00".into(),
            "#SBATCH --partition=gpu".into(),
            format!("#SBATCH --chdir={}", cwd.display()),
            format!("#SBATCH --output={}/logs/%A_%a.out", dir.path().display()),
        ] {
            assert!(sweep.lines().any(|l| l == line), "{line} in\n{sweep}");
        }
        assert!(
            sweep.contains("--preset 'it'\\''s.toml' --seeds 3 --shard \"${SLURM_ARRAY_TASK_ID}/12\" &"),
            "{sweep}"
        );
        assert!(!report.contains("--shard") && !report.contains("--array"), "{report}");
        assert!(submit.contains("--dependency=afterok:$jid") && submit.contains("report.sbatch"), "{submit}");
        for script in ["sweep.sbatch", "report.sbatch"] {
            let ok =
                std::process::Command::new("bash").arg("-n").arg(dir.path().join(script)).status().unwrap();
            assert!(ok.success(), "{script} parses as bash");
        }
        // values that an #SBATCH line cannot hold are refused, naming the flag
        let bad = SlurmArgs { account: Some("a b".into()), ..s };
        let err = write_sbatch(dir.path(), &args, 12, &bad).unwrap_err().to_string();
        assert!(err.starts_with("--account \"a b\""), "{err}");
    }
}
