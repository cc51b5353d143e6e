//! The training data loader burn-train iterates: one batch = one optimizer step
//! (`batch_size × grad_accum` windows; the step splits it into micro-batches), one epoch = one
//! checkpoint interval, fresh windows every epoch, and exactly `steps` steps in all (the last
//! epoch is shorter when `checkpoint_every` does not divide `steps`).
//!
//! burn-train calls [`DataLoader::iter`] once per epoch; the loader counts epochs and steps
//! itself, from where a resumed run starts. An [`EarlyStop`] (a signal) ends an epoch after its
//! current step; epochs otherwise end at multiples of `checkpoint_every`. Window starts are a pure function of the seed and the
//! window's global sample index over the run ([`window_start`]): a resumed run sees the windows
//! an uninterrupted one would, and the data does not depend on `checkpoint_every` nor on the
//! number of devices a step is spread over.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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
///
/// Data parallelism: burn-train's multi-device strategies [`DataLoader::slice`] the loader per
/// device. A slice serves its part of *every* step's sequences (the fraction `start/n ..
/// end/n` of the step, `n` = [`DataLoader::num_items`]), weighted by its share of the step, so
/// the devices' gradients sum to the single-device gradient of the same global batch. Every
/// copy shares one step counter and one decision per step: all devices run a step or none does.
/// Epochs are opened (planned, or halted after a stop) by the main copy only — the one serving
/// the step's first sequences, on the device burn-train validates and checkpoints on — after
/// its checkpoint; the other copies wait for it (with DDP they run in their own threads).
pub struct TrainLoader {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    plan: StepPlan,
    seed: u64,
    /// The epoch the next `iter()` of this copy serves (1-based), shared by its `to_device`
    /// copies; each slice counts its own.
    next_epoch: Arc<AtomicUsize>,
    /// Steps served (started) over the run, and the epoch under way: shared by every copy.
    served: Arc<AtomicUsize>,
    current: Arc<(Mutex<EpochState>, Condvar)>,
    /// The sequences of each step this copy serves (all of them unless sliced).
    items: Range<usize>,
    stop: Option<EarlyStop>,
    on_epoch_end: Option<EpochEnd>,
    device: Device,
}

/// The epoch under way, as planned by the main copy.
#[derive(Debug, Clone, Copy, Default)]
struct EpochState {
    epoch: usize,
    from: usize,
    end: usize,
    closed: bool,
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
        let first_epoch = first_epoch.max(1);
        Self {
            tokens,
            seq_len,
            plan,
            seed,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch)),
            served: Arc::new(AtomicUsize::new(done.min(plan.steps))),
            current: Arc::new((
                Mutex::new(EpochState { epoch: first_epoch - 1, ..Default::default() }),
                Condvar::new(),
            )),
            items: 0..plan.items_per_step(),
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

    /// Calls `f(epoch, steps done)` at the end of each epoch served (once, whichever copy ends
    /// it first).
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

    fn state(&self) -> std::sync::MutexGuard<'_, EpochState> {
        self.current.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The copy that opens epochs: the one serving each step's first sequences.
    fn is_main(&self) -> bool {
        self.items.start == 0
    }

    /// Window start of sequence `item` of global optimizer step `step` (0-based over the run).
    pub fn start(&self, step: usize, item: usize) -> usize {
        let n_starts = self.tokens.len() - self.seq_len; // 0 ..= len − (seq_len + 1)
        window_start(self.seed, 0, step * self.plan.items_per_step() + item, n_starts)
    }

    /// This copy's batch of global optimizer step `step` (the whole step unless sliced).
    pub fn batch(&self, step: usize) -> LmBatch {
        let items = self
            .items
            .clone()
            .map(|i| {
                let s = self.start(step, i);
                self.tokens[s..s + self.seq_len + 1].to_vec()
            })
            .collect();
        let mut batch = LmBatcher.batch(items, &self.device);
        // micro-batches of at most `batch_size` sequences, as on one device (a device's share
        // needs fewer of them: with DDP every backward is an all-reduce)
        batch.micro_batches = self.items.len().div_ceil(self.plan.batch_size.max(1)).max(1);
        batch.loss_weight = self.items.len() as f64 / self.plan.items_per_step() as f64;
        batch
    }

    fn copy(&self, next_epoch: Arc<AtomicUsize>, items: Range<usize>, device: &Device) -> Self {
        Self {
            tokens: self.tokens.clone(),
            seq_len: self.seq_len,
            plan: self.plan,
            seed: self.seed,
            next_epoch,
            served: self.served.clone(),
            current: self.current.clone(),
            items,
            stop: self.stop.clone(),
            on_epoch_end: self.on_epoch_end.clone(),
            device: device.clone(),
        }
    }
}

struct EpochIter<'a> {
    loader: &'a TrainLoader,
    epoch: usize,
    step: usize,
    from: usize,
    end: usize,
    ended: bool,
}

impl Iterator for EpochIter<'_> {
    type Item = Result<LmBatch, DatasetError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let loader = self.loader;
        {
            // one decision per step for every copy: the first to reach a step after a stop
            // request ends the epoch there (at least one step in: an empty epoch would
            // checkpoint twice), unless another copy has already started that step
            let mut st = loader.state();
            if st.epoch != self.epoch {
                // the main copy has opened the next epoch: this one ended (at a step every
                // copy has served, since all run each step)
                self.ended = true;
                return None;
            }
            let started = loader.served.load(Ordering::SeqCst);
            if self.step < st.end && self.step > st.from && self.step >= started && loader.stop_requested() {
                st.end = self.step;
            }
            self.end = st.end;
            if self.step >= st.end {
                self.ended = true;
                if !st.closed && self.step > st.from {
                    st.closed = true;
                    if let Some(f) = &loader.on_epoch_end {
                        f(st.epoch, st.end); // before any copy returns: the checkpoint follows
                    }
                }
                return None;
            }
            loader.served.fetch_max(self.step + 1, Ordering::SeqCst);
        }
        let batch = loader.batch(self.step);
        self.step += 1;
        Some(Ok(batch))
    }
}

impl DataLoaderIterator<LmBatch> for EpochIter<'_> {
    fn progress(&self) -> Progress {
        let per = self.loader.items.len();
        Progress::new((self.step - self.from) * per, (self.end - self.from) * per, Some("sequences".into()))
    }
}

impl DataLoader<LmBatch> for TrainLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let mut st = self.state();
        if self.is_main() {
            assert_eq!(st.epoch + 1, epoch, "the main training loader opens epochs in order");
            let from = self.served.load(Ordering::SeqCst);
            let mut end = self.plan.epoch_end(from);
            if self.stop_requested() {
                (self.stop.as_ref().expect("requested").halt)(); // the last checkpoint is at this step
                end = from;
            }
            *st = EpochState { epoch, from, end, closed: false };
            self.current.1.notify_all();
        } else {
            // wait for the main copy to open this epoch (it validates and checkpoints first)
            while st.epoch < epoch {
                st = self.current.1.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            assert_eq!(st.epoch, epoch, "a copy of the training loader fell an epoch behind");
        }
        let (from, end) = (st.from, st.end);
        Box::new(EpochIter { loader: self, epoch, step: from, from, end, ended: false })
    }

    fn num_items(&self) -> usize {
        self.plan.steps_per_epoch.min(self.plan.steps) * self.items.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<LmBatch>> {
        Arc::new(self.copy(self.next_epoch.clone(), self.items.clone(), device))
    }

    /// The fraction `start/n .. end/n` (`n` = [`Self::num_items`]) of every step's sequences,
    /// on the same step counter (see [`TrainLoader`]).
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<LmBatch>> {
        let n = self.num_items().max(1);
        let at = |i: usize| self.items.start + i.min(n) * self.items.len() / n;
        let items = at(start)..at(end.max(start));
        assert!(
            !items.is_empty(),
            "TrainLoader::slice({start}, {end}): a device would get no sequence of a step"
        );
        let epoch = Arc::new(AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)));
        Arc::new(self.copy(epoch, items, &self.device))
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
