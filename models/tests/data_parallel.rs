//! Data parallelism's parts, against the single-device run they must reproduce: the loader's
//! slices serve disjoint parts of every step (together exactly the single loader's batch) and
//! stop in lockstep, and the devices' weighted gradients sum to the whole batch's gradient.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::DataLoader;
use burn::data::dataloader::split::split_dataloader;
use burn::module::{ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::train::TrainStep;
use pezoo_encodings::EncodingConfig;
use pezoo_models::{EarlyStop, Lm, LmBatch, ModelConfig, StepPlan, TrainLoader};

fn rows(b: &LmBatch) -> Vec<Vec<i64>> {
    let [n, s] = b.inputs.dims();
    let v = b.inputs.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
    (0..n).map(|i| v[i * s..(i + 1) * s].to_vec()).collect()
}

fn loader(plan: StepPlan) -> TrainLoader {
    let tokens = Arc::new((0..4_000u32).map(|i| (i * 7 + i / 13) % 251).collect::<Vec<_>>());
    TrainLoader::new(tokens, 11, plan, 9, (1, 0), &Device::flex())
}

/// Runs one epoch as burn-train's multi-device step does (each slice's next batch in turn),
/// calling `during(step)` after slice 0 has served that step; returns each step's batches.
fn epoch_in_lockstep(slices: &[Arc<dyn DataLoader<LmBatch>>], during: impl Fn(usize)) -> Vec<Vec<LmBatch>> {
    let mut its: Vec<_> = slices.iter().map(|s| s.iter()).collect();
    let mut steps = Vec::new();
    loop {
        let mut step = Vec::new();
        for (k, it) in its.iter_mut().enumerate() {
            if let Some(b) = it.next() {
                step.push(b.unwrap());
            }
            if k == 0 {
                during(steps.len());
            }
        }
        if step.is_empty() {
            return steps;
        }
        assert_eq!(step.len(), slices.len(), "step {}: every device runs it or none does", steps.len());
        steps.push(step);
    }
}

#[test]
fn slices_serve_disjoint_parts_of_every_step_that_make_the_single_batch() {
    let plan = StepPlan { steps: 30, steps_per_epoch: 20, batch_size: 3, grad_accum: 2 };
    let whole = loader(plan);
    let dev = Device::flex();
    let slices = split_dataloader(Arc::new(loader(plan)), &[dev.clone(), dev.clone(), dev]);
    let epochs = [epoch_in_lockstep(&slices, |_| ()), epoch_in_lockstep(&slices, |_| ())];
    assert_eq!((epochs[0].len(), epochs[1].len()), (20, 10), "epochs end at 20 and at 30 steps");
    for (s, step) in epochs.iter().flatten().enumerate() {
        let parts: Vec<Vec<Vec<i64>>> = step.iter().map(rows).collect();
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2], "6 sequences over 3 devices");
        assert_eq!(parts.concat(), rows(&whole.batch(s)), "step {s}: the slices make the single batch");
        for b in step {
            assert!((b.loss_weight - 1.0 / 3.0).abs() < 1e-12);
            assert_eq!(b.micro_batches, 2);
        }
    }
    assert_eq!(slices[0].iter().count(), 0, "the run is over");
    assert_eq!(whole.batch(0).loss_weight, 1.0);
}

#[test]
fn a_stop_ends_every_slice_at_the_same_step_and_records_it_once() {
    let plan = StepPlan { steps: 50, steps_per_epoch: 40, batch_size: 4, grad_accum: 1 };
    let requested = Arc::new(AtomicBool::new(false));
    let ends = Arc::new(Mutex::new(Vec::new()));
    let e = ends.clone();
    let l = loader(plan)
        .with_early_stop(EarlyStop { requested: requested.clone(), halt: Arc::new(|| ()) })
        .on_epoch_end(Arc::new(move |epoch, step| e.lock().unwrap().push((epoch, step))));
    let served = l.served();
    let dev = Device::flex();
    let slices = split_dataloader(Arc::new(l), &[dev.clone(), dev]);
    // the stop arrives after device 0 took step 7 and before device 1 did: device 1 still runs
    // step 7 (its gradient is half of that step's), and both end there
    let steps = epoch_in_lockstep(&slices, |s| {
        if s == 7 {
            requested.store(true, Ordering::SeqCst)
        }
    });
    assert_eq!(steps.len(), 8);
    assert_eq!(*ends.lock().unwrap(), vec![(1, 8)], "one record, at the step reached");
    assert_eq!(served.load(Ordering::SeqCst), 8);
    assert!(epoch_in_lockstep(&slices, |_| ()).is_empty(), "the next epoch halts");
}

fn tiny() -> ModelConfig {
    let mut c: ModelConfig =
        toml::from_str("d_model = 24\nn_layers = 2\nn_heads = 3\nmax_seq_len = 12").unwrap();
    c.encoding = EncodingConfig::default_for("kerple").unwrap(); // encoding parameters too
    c
}

fn grads(m: &Lm, g: &GradientsParams) -> Vec<Vec<f32>> {
    struct Collect<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.push(g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
            }
        }
    }
    let mut c = Collect(g, Vec::new());
    m.visit(&mut c);
    c.1
}

#[test]
fn device_gradients_weighted_by_their_share_sum_to_the_whole_batch_gradient() {
    let dev = Device::flex().autodiff();
    dev.seed(3);
    let m = Lm::new(&tiny(), &dev).unwrap();
    let plan = StepPlan { steps: 4, steps_per_epoch: 4, batch_size: 4, grad_accum: 2 };
    let single = TrainLoader::new(
        Arc::new((0..3_000u32).map(|i| (i * 31 + i / 7) % 256).collect()),
        12,
        plan,
        5,
        (1, 0),
        &dev,
    );
    let whole = TrainStep::step(&m, single.batch(2));
    let slices = split_dataloader(Arc::new(single), &[dev.clone(), dev.clone()]);
    let parts: Vec<LmBatch> = slices.iter().map(|s| s.iter().nth(2).unwrap().unwrap()).collect();
    let mut acc = GradientsAccumulator::<Lm>::new();
    let mut losses = Vec::new();
    for p in parts {
        let out = TrainStep::step(&m, p);
        losses.push(out.item.loss.into_scalar::<f32>() as f64);
        acc.accumulate(&m, out.grads);
    }
    let (a, b) = (grads(&m, &whole.grads), grads(&m, &acc.grads()));
    assert_eq!(a.len(), b.len());
    let mut biggest = 0f32;
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-6 + 1e-3 * u.abs(), "{u} vs {v}");
            biggest = biggest.max(u.abs());
        }
    }
    assert!(biggest > 1e-3, "the gradient is not trivially zero");
    // each device reports its own batch's mean loss; equal shares average to the whole's
    let whole_loss = whole.item.loss.into_scalar::<f32>() as f64;
    assert!(((losses[0] + losses[1]) / 2.0 - whole_loss).abs() < 1e-5, "{losses:?} vs {whole_loss}");
    assert!((losses[0] - losses[1]).abs() > 1e-4, "the halves are different data");
}
