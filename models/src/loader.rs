//! The training data loader burn-train iterates: one batch = one optimizer step
//! (`batch_size × grad_accum` windows; the step splits it into micro-batches), one epoch = one
//! checkpoint interval, fresh windows every epoch, and exactly `steps` steps in all (the last
//! epoch is shorter when `checkpoint_every` does not divide `steps`).
//!
//! burn-train calls [`DataLoader::iter`] once per epoch; the loader counts epochs itself, from
//! the epoch a resumed run starts at. Window starts are a pure function of the seed and the
//! window's global sample index over the run ([`window_start`]): a resumed run sees the windows
//! an uninterrupted one would, and the data does not depend on `checkpoint_every`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::prelude::*;

use crate::data::{LmBatch, LmBatcher, window_start};

/// What a run's training loader serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPlan {
    /// Optimizer steps in the whole run.
    pub steps: usize,
    /// Steps per epoch (checkpoint interval).
    pub steps_per_epoch: usize,
    /// Sequences per micro-batch, and micro-batches per step.
    pub batch_size: usize,
    pub grad_accum: usize,
}

impl StepPlan {
    pub fn epochs(&self) -> usize {
        self.steps.div_ceil(self.steps_per_epoch)
    }

    /// Steps in epoch `epoch` (1-based): full epochs, then the remainder.
    pub fn steps_in(&self, epoch: usize) -> usize {
        let done = (epoch - 1) * self.steps_per_epoch;
        self.steps.saturating_sub(done).min(self.steps_per_epoch)
    }

    pub fn items_per_step(&self) -> usize {
        self.batch_size * self.grad_accum
    }
}

/// Windows of `seq_len + 1` tokens, drawn per epoch, batched per optimizer step.
pub struct TrainLoader {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    plan: StepPlan,
    seed: u64,
    /// The epoch the next `iter()` serves (1-based), shared by every `to_device` copy.
    next_epoch: Arc<AtomicUsize>,
    /// Optimizer steps handed out so far over the run (resumed runs start at the checkpoint's).
    served: Arc<AtomicUsize>,
    device: Device,
}

impl TrainLoader {
    /// `first_epoch`: 1, or the checkpoint a resumed run continues from + 1.
    pub fn new(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        plan: StepPlan,
        seed: u64,
        first_epoch: usize,
        device: &Device,
    ) -> Self {
        assert!(tokens.len() > seq_len + 1, "token stream shorter than one window");
        let first_epoch = first_epoch.max(1);
        Self {
            tokens,
            seq_len,
            plan,
            seed,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch)),
            served: Arc::new(AtomicUsize::new(((first_epoch - 1) * plan.steps_per_epoch).min(plan.steps))),
            device: device.clone(),
        }
    }

    /// Optimizer steps handed out so far over the run — the last one possibly unfinished (a
    /// shared counter: read it after training to see how far a run got, whatever renderer ran).
    pub fn served(&self) -> Arc<AtomicUsize> {
        self.served.clone()
    }

    /// Window start of sequence `item` of step `step` (0-based within `epoch`, 1-based).
    pub fn start(&self, epoch: usize, step: usize, item: usize) -> usize {
        let n_starts = self.tokens.len() - self.seq_len; // 0 ..= len − (seq_len + 1)
        let global_step = (epoch - 1) * self.plan.steps_per_epoch + step;
        window_start(self.seed, 0, global_step * self.plan.items_per_step() + item, n_starts)
    }

    /// The batch of step `step` of `epoch`.
    pub fn batch(&self, epoch: usize, step: usize) -> LmBatch {
        let items = (0..self.plan.items_per_step())
            .map(|i| {
                let s = self.start(epoch, step, i);
                self.tokens[s..s + self.seq_len + 1].to_vec()
            })
            .collect();
        let mut batch = LmBatcher.batch(items, &self.device);
        batch.micro_batches = self.plan.grad_accum;
        batch
    }
}

struct EpochIter<'a> {
    loader: &'a TrainLoader,
    epoch: usize,
    step: usize,
    steps: usize,
}

impl Iterator for EpochIter<'_> {
    type Item = Result<LmBatch, DatasetError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.step >= self.steps {
            return None;
        }
        let batch = self.loader.batch(self.epoch, self.step);
        self.step += 1;
        self.loader.served.fetch_add(1, Ordering::SeqCst);
        Some(Ok(batch))
    }
}

impl DataLoaderIterator<LmBatch> for EpochIter<'_> {
    fn progress(&self) -> Progress {
        let per = self.loader.plan.items_per_step();
        Progress::new(self.step * per, self.steps * per, Some("sequences".into()))
    }
}

impl DataLoader<LmBatch> for TrainLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        Box::new(EpochIter { loader: self, epoch, step: 0, steps: self.plan.steps_in(epoch) })
    }

    fn num_items(&self) -> usize {
        self.plan.steps_per_epoch.min(self.plan.steps) * self.plan.items_per_step()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<LmBatch>> {
        Arc::new(Self {
            tokens: self.tokens.clone(),
            seq_len: self.seq_len,
            plan: self.plan,
            seed: self.seed,
            next_epoch: self.next_epoch.clone(),
            served: self.served.clone(),
            device: device.clone(),
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<LmBatch>> {
        // Data-parallel strategies slice loaders per device; the step plan is global (one
        // process, one device), and serving the whole loader per device would silently repeat
        // data, so this is refused rather than approximated.
        panic!("TrainLoader::slice({start}, {end}): data-parallel training is not supported yet")
    }
}

/// Expected fraction of a stream of `n` tokens covered by `draws` windows of `w` tokens at
/// uniform starts 0..=n−w: (1/n) Σ_p 1 − (1 − c_p/S)^draws, with S = n − w + 1 starts and c_p
/// the starts whose window covers token p (c_p = w for the n − 2(w − 1) interior tokens).
pub fn expected_coverage(n: usize, w: usize, draws: usize) -> f64 {
    assert!(w >= 1 && n >= 2 * w, "expected_coverage: a stream of at least two windows");
    let starts = (n - w + 1) as f64;
    let term = |c: f64| 1.0 - (1.0 - c / starts).powf(draws as f64);
    // tokens p < w − 1 are covered by p + 1 starts; the last w − 1 symmetrically
    let edges: f64 = (0..w - 1).map(|p| 2.0 * term((p + 1) as f64)).sum();
    (edges + (n - 2 * (w - 1)) as f64 * term(w as f64)) / n as f64
}
