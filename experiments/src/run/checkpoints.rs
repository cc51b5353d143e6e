//! Checkpoints of a run: burn-train's `checkpoint/{model,optim,scheduler}-<epoch>.bpk` and the
//! step each one holds (`checkpoint/steps.json`: epochs end at multiples of `checkpoint_every`,
//! or early when a signal stops the run), and what the run trains on (`data.json`).

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::{RunDir, write_atomic};

/// The latest epoch whose model, optimizer and scheduler checkpoints all load (a run killed
/// while writing one falls back to the previous, which burn-train keeps). Each checkpoint
/// skipped is named, with the file and why.
pub fn last_checkpoint(run: &RunDir) -> Option<usize> {
    let dir = run.checkpoint_dir();
    let mut epochs: Vec<usize> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            e.ok()?.file_name().to_str()?.strip_prefix("model-")?.strip_suffix(".bpk")?.parse().ok()
        })
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.into_iter().find(|e| {
        let p = |n: &str| dir.join(format!("{n}-{e}.bpk"));
        let problem = burn::store::ModuleRecord::load(p("model"))
            .err()
            .map(|err| (p("model"), format!("{err:?}")))
            .or_else(|| {
                burn::optim::OptimizerRecord::load(p("optim"))
                    .err()
                    .map(|err| (p("optim"), format!("{err:?}")))
            })
            .or_else(|| {
                burn::lr_scheduler::LrSchedulerRecord::load(p("scheduler"))
                    .err()
                    .map(|err| (p("scheduler"), format!("{err:?}")))
            });
        let problem = problem.or_else(|| {
            recorded_steps(run)
                .is_some_and(|r| !r.contains_key(e))
                .then(|| (run.steps_file(), "no step recorded for this checkpoint".to_string()))
        });
        if let Some((file, why)) = &problem {
            let why = why.lines().next().unwrap_or_default();
            println!(
                "checkpoint {e} is incomplete or corrupt ({}: {why}); trying the previous one",
                file.display()
            );
        }
        problem.is_none()
    })
}

type StepRecord = std::collections::BTreeMap<usize, usize>;

/// The recorded steps per checkpoint: `None` for runs from before the record (no file).
fn recorded_steps(run: &RunDir) -> Option<StepRecord> {
    let text = std::fs::read_to_string(run.steps_file()).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_default()) // unreadable: no checkpoint is usable
}

/// The optimizer steps checkpoint `epoch` holds, as recorded at the end of its epoch; for runs
/// from before the record, `epoch × checkpoint_every`. `None`: a record exists but lacks this
/// checkpoint (its write failed), so the checkpoint is not used.
pub fn checkpoint_step(run: &RunDir, t: &TrainConfig, epoch: usize) -> Option<usize> {
    match recorded_steps(run) {
        Some(record) => record.get(&epoch).map(|&s| s.min(t.steps)),
        None => Some((epoch * t.checkpoint_every).min(t.steps)),
    }
}

/// Removes the checkpoint files and step records after checkpoint `epoch` (left by an earlier
/// attempt that went further): a resumed run rewrites those epochs, at other steps.
pub fn drop_checkpoints_after(run: &RunDir, epoch: usize) -> Result<()> {
    let dir = run.checkpoint_dir();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let later = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
            let (_, rest) = n.split_once('-')?;
            rest.strip_suffix(".bpk")?.parse::<usize>().ok()
        });
        if later.is_some_and(|e| e > epoch) && path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    if let Some(mut record) = recorded_steps(run) {
        record.retain(|&e, _| e <= epoch);
        write_atomic(&run.steps_file(), serde_json::to_string(&record)?.as_bytes())?;
    }
    Ok(())
}

/// Records that epoch `epoch` ended at step `step` (before burn-train writes its checkpoint).
pub fn record_epoch_end(run: &RunDir, epoch: usize, step: usize) -> Result<()> {
    let path = run.steps_file();
    let mut map = recorded_steps(run).unwrap_or_default();
    map.insert(epoch, step);
    std::fs::create_dir_all(run.checkpoint_dir())?;
    write_atomic(&path, serde_json::to_string(&map)?.as_bytes())
}

/// The tokens a run trains and validates on, recorded when it starts: a resumed run must read
/// the same ones. The configuration alone does not pin them: a corpus file edited in place, or
/// the embedded generator of another pezoo, would resume the run on other text without a word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub train_tokens: usize,
    pub valid_tokens: usize,
    /// FNV-1a (64 bit) over the token ids of the training split, then the validation split.
    pub fnv1a: String,
}

impl DataFingerprint {
    pub fn of(train: &[u32], valid: &[u32]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in train.iter().chain(valid).flat_map(|t| t.to_le_bytes()) {
            h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Self { train_tokens: train.len(), valid_tokens: valid.len(), fnv1a: format!("{h:016x}") }
    }
}

/// Records the data a fresh run starts on.
pub fn record_data(run: &RunDir, data: &DataFingerprint) -> Result<()> {
    write_atomic(&run.data_file(), serde_json::to_string_pretty(data)?.as_bytes())
}

/// On `--resume`: an error naming both fingerprints when the data differ from the recorded;
/// a run from before the record is resumed with a note (its data cannot be checked).
pub fn check_data(run: &RunDir, now: &DataFingerprint) -> Result<()> {
    let path = run.data_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "note: {} is absent (a run from an older pezoo): the data it started on cannot be \
                 checked; those it resumes on are recorded from now on",
                path.display()
            );
            return record_data(run, now);
        }
        Err(e) => bail!("--resume: cannot read {}: {e}", path.display()),
    };
    let was: DataFingerprint = serde_json::from_str(&text)
        .with_context(|| format!("--resume: {} is not readable", path.display()))?;
    if &was != now {
        bail!(
            "--resume: the data differ from those the run started on ({}: {} train / {} valid tokens, \
             fingerprint {}; now {} / {}, {}): the corpus, its generator or the tokenizer changed; \
             resume on the same data, or choose another --out",
            path.display(),
            was.train_tokens,
            was.valid_tokens,
            was.fnv1a,
            now.train_tokens,
            now.valid_tokens,
            now.fnv1a
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64 of known inputs (the published offset basis and prime); a resume on other
    /// tokens (one changed, or one more) is refused with both fingerprints; an older run
    /// without the record resumes and gets one.
    #[test]
    fn resuming_on_other_data_is_refused() {
        // FNV-1a 64 of the empty input is the offset basis; of the byte 'a' (0x61) the
        // published 0xaf63dc4c8601ec8c (a token 0x61 hashes its 4 little-endian bytes)
        assert_eq!(DataFingerprint::of(&[], &[]).fnv1a, "cbf29ce484222325");
        let a = DataFingerprint::of(&[0x61], &[]).fnv1a;
        let mut h: u64 = 0xaf63dc4c8601ec8c;
        for _ in 0..3 {
            h = h.wrapping_mul(0x0100_0000_01b3); // three zero bytes: xor 0, multiply
        }
        assert_eq!(a, format!("{h:016x}"));
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        let data = DataFingerprint::of(&[5, 7, 9, 11], &[3, 4]);
        check_data(&run, &data).unwrap(); // no record yet: accepted and recorded
        assert!(run.data_file().exists());
        check_data(&run, &data).unwrap();
        for other in
            [DataFingerprint::of(&[5, 7, 9, 12], &[3, 4]), DataFingerprint::of(&[5, 7, 9, 11], &[3, 4, 1])]
        {
            let err = check_data(&run, &other).unwrap_err().to_string();
            assert!(
                err.contains("data.json") && err.contains(&data.fnv1a) && err.contains(&other.fnv1a),
                "{err}"
            );
        }
        // the split point matters too: the same ids split differently hash alike but count apart
        assert_ne!(DataFingerprint::of(&[1, 2], &[3]), DataFingerprint::of(&[1], &[2, 3]));
    }

    /// Checkpoint steps come from the record (runs from before it: epoch × checkpoint_every); a
    /// checkpoint the record lacks is not resumable; resuming from checkpoint e removes later
    /// checkpoint files and records (an earlier attempt's, at other steps).
    #[test]
    fn checkpoint_steps_are_recorded_and_later_checkpoints_dropped_on_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        let dir = run.checkpoint_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let t = TrainConfig { steps: 300, checkpoint_every: 100, ..Default::default() };
        assert_eq!(checkpoint_step(&run, &t, 2), Some(200), "no record: the old rule");
        assert_eq!(checkpoint_step(&run, &t, 4), Some(300), "capped at steps");
        record_epoch_end(&run, 1, 37).unwrap();
        record_epoch_end(&run, 2, 100).unwrap();
        record_epoch_end(&run, 3, 200).unwrap();
        assert_eq!(checkpoint_step(&run, &t, 1), Some(37));
        assert_eq!(checkpoint_step(&run, &t, 2), Some(100));
        assert_eq!(checkpoint_step(&run, &t, 4), None, "not recorded: not resumable");
        for f in ["model-2.bpk", "optim-2.bpk", "scheduler-3.bpk", "model-10.bpk"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        drop_checkpoints_after(&run, 2).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["model-2.bpk", "optim-2.bpk", "steps.json"]);
        assert_eq!(checkpoint_step(&run, &t, 3), None, "its record went with it");
        assert_eq!(checkpoint_step(&run, &t, 2), Some(100));
    }
}
