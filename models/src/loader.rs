//! The training data loader burn-train iterates: one batch = one optimizer step
//! (`batch_size × grad_accum` windows; the step splits it into micro-batches), one epoch = one
//! checkpoint interval, fresh windows every epoch, and exactly `steps` steps in all (the last
//! epoch is shorter when `checkpoint_every` does not divide `steps`).
//!
//! burn-train calls [`DataLoader::iter`] once per epoch; the loader counts epochs and steps
//! itself, from where a resumed run starts. An [`EarlyStop`] (a signal) ends an epoch after its
//! current step; epochs otherwise end at multiples of `checkpoint_every`. Window starts are a pure function of the seed and the
//! window's global sample index over the run ([`window_start`]): a resumed run sees the windows
//! an uninterrupted one would, and the data does not depend on `checkpoint_every`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

    /// Epochs left for a run that has done `done` steps: epochs end at multiples of
    /// `steps_per_epoch` and at `steps`, so a run stopped mid-epoch finishes that epoch short.
    pub fn epochs_after(&self, done: usize) -> usize {
        if done >= self.steps { 0 } else { self.epochs() - done / self.steps_per_epoch }
    }

    /// The step (exclusive) at which the epoch that starts at step `from` ends.
    pub fn epoch_end(&self, from: usize) -> usize {
        ((from / self.steps_per_epoch + 1) * self.steps_per_epoch).min(self.steps)
    }

    pub fn items_per_step(&self) -> usize {
        self.batch_size * self.grad_accum
    }
}

/// Ends training early at a step boundary (a signal, a time limit): once `requested` is set,
/// the epoch under way ends after its current step (burn-train then validates and writes a
/// checkpoint at that step), and the next epoch calls `halt` (which interrupts the Learner)
/// and serves nothing.
#[derive(Clone)]
pub struct EarlyStop {
    pub requested: Arc<AtomicBool>,
    pub halt: Arc<dyn Fn() + Send + Sync>,
}

/// Called at the end of each epoch served, with the epoch (1-based) and the run's steps done —
/// before burn-train writes that epoch's checkpoint, so the checkpoint's step can be recorded.
pub type EpochEnd = Arc<dyn Fn(usize, usize) + Send + Sync>;

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
    stop: Option<EarlyStop>,
    on_epoch_end: Option<EpochEnd>,
    device: Device,
}

impl TrainLoader {
    /// `first_epoch`: 1, or the checkpoint a resumed run continues from + 1; `done`: the
    /// steps that checkpoint holds (0 for a new run).
    pub fn new(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        plan: StepPlan,
        seed: u64,
        (first_epoch, done): (usize, usize),
        device: &Device,
    ) -> Self {
        assert!(tokens.len() > seq_len + 1, "token stream shorter than one window");
        Self {
            tokens,
            seq_len,
            plan,
            seed,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch.max(1))),
            served: Arc::new(AtomicUsize::new(done.min(plan.steps))),
            stop: None,
            on_epoch_end: None,
            device: device.clone(),
        }
    }

    /// Stops early when `stop.requested` is set (see [`EarlyStop`]).
    pub fn with_early_stop(mut self, stop: EarlyStop) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Calls `f(epoch, steps done)` at the end of each epoch served.
    pub fn on_epoch_end(mut self, f: EpochEnd) -> Self {
        self.on_epoch_end = Some(f);
        self
    }

    /// Optimizer steps handed out so far over the run — the last one possibly unfinished (a
    /// shared counter: read it after training to see how far a run got, whatever renderer ran).
    pub fn served(&self) -> Arc<AtomicUsize> {
        self.served.clone()
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.requested.load(Ordering::SeqCst))
    }

    /// Window start of sequence `item` of global optimizer step `step` (0-based over the run).
    pub fn start(&self, step: usize, item: usize) -> usize {
        let n_starts = self.tokens.len() - self.seq_len; // 0 ..= len − (seq_len + 1)
        window_start(self.seed, 0, step * self.plan.items_per_step() + item, n_starts)
    }

    /// The batch of global optimizer step `step`.
    pub fn batch(&self, step: usize) -> LmBatch {
        let items = (0..self.plan.items_per_step())
            .map(|i| {
                let s = self.start(step, i);
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
    from: usize,
    step: usize,
    end: usize,
    ended: bool,
}

impl Iterator for EpochIter<'_> {
    type Item = Result<LmBatch, DatasetError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        // a stop ends the epoch after a step at least (an empty epoch would checkpoint twice)
        if self.step >= self.end || (self.step > self.from && self.loader.stop_requested()) {
            self.ended = true;
            if self.step > self.from
                && let Some(f) = &self.loader.on_epoch_end
            {
                f(self.epoch, self.step);
            }
            return None;
        }
        let batch = self.loader.batch(self.step);
        self.step += 1;
        self.loader.served.store(self.step, Ordering::SeqCst);
        Some(Ok(batch))
    }
}

impl DataLoaderIterator<LmBatch> for EpochIter<'_> {
    fn progress(&self) -> Progress {
        let per = self.loader.plan.items_per_step();
        Progress::new((self.step - self.from) * per, (self.end - self.from) * per, Some("sequences".into()))
    }
}

impl DataLoader<LmBatch> for TrainLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let from = self.served.load(Ordering::SeqCst);
        let mut end = self.plan.epoch_end(from);
        if let Some(stop) = self.stop.as_ref().filter(|s| s.requested.load(Ordering::SeqCst)) {
            (stop.halt)(); // stopped between epochs: the last checkpoint is at this very step
            end = from;
        }
        Box::new(EpochIter { loader: self, epoch, from, step: from, end, ended: false })
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
            stop: self.stop.clone(),
            on_epoch_end: self.on_epoch_end.clone(),
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
