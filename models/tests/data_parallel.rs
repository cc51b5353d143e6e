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
            assert_eq!(b.micro_batches, 1, "2 sequences fit one micro-batch of batch_size 3");
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

/// A loader over a byte-valued stream (the tiny model's vocabulary), on `dev`.
fn byte_loader(plan: StepPlan, seed: u64, dev: &Device) -> TrainLoader {
    let tokens = Arc::new((0..3_000u32).map(|i| (i * 31 + i / 7) % 256).collect());
    TrainLoader::new(tokens, 12, plan, seed, (1, 0), dev)
}

#[test]
fn device_gradients_weighted_by_their_share_sum_to_the_whole_batch_gradient() {
    let dev = Device::flex().autodiff();
    dev.seed(3);
    let m = Lm::new(&tiny(), &dev).unwrap();
    let plan = StepPlan { steps: 4, steps_per_epoch: 4, batch_size: 4, grad_accum: 2 };
    let single = byte_loader(plan, 5, &dev);
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

/// A barrier that panics instead of hanging when a party never arrives (a copy that served
/// another number of steps than the others).
struct Lockstep {
    state: Mutex<(usize, usize)>, // (generation, arrived)
    cv: std::sync::Condvar,
    parties: usize,
}

impl Lockstep {
    fn wait(&self, what: &str) {
        let mut st = self.state.lock().unwrap();
        let generation = st.0;
        st.1 += 1;
        if st.1 == self.parties {
            *st = (generation + 1, 0);
            self.cv.notify_all();
            return;
        }
        while st.0 == generation {
            let (next, timeout) = self.cv.wait_timeout(st, std::time::Duration::from_secs(10)).unwrap();
            st = next;
            assert!(!timeout.timed_out() || st.0 != generation, "{what}: a device never joined the step");
        }
    }
}

/// burn-train's DDP runs each device's loop in its own thread, every step ending in an
/// all-reduce (here a barrier) and the main device validating and checkpointing between epochs
/// (here a sleep) while the others race ahead: every device must still serve the same steps in
/// every epoch, and a stop must end all of them at one step, halted by the main device only.
#[test]
fn threads_in_lockstep_serve_the_same_steps_per_epoch_and_stop_together() {
    let plan = StepPlan { steps: 23, steps_per_epoch: 5, batch_size: 2, grad_accum: 2 };
    let requested = Arc::new(AtomicBool::new(false));
    let halted_by = Arc::new(Mutex::new(Vec::new()));
    let ends = Arc::new(Mutex::new(Vec::new()));
    let (h, e) = (halted_by.clone(), ends.clone());
    let l = loader(plan)
        .with_early_stop(EarlyStop {
            requested: requested.clone(),
            halt: Arc::new(move || {
                h.lock().unwrap().push(std::thread::current().name().unwrap().to_string())
            }),
        })
        .on_epoch_end(Arc::new(move |epoch, step| e.lock().unwrap().push((epoch, step))));
    let dev = Device::flex();
    let slices = split_dataloader(Arc::new(l), &[dev.clone(), dev.clone(), dev]);
    let step = Arc::new(Lockstep { state: Mutex::new((0, 0)), cv: std::sync::Condvar::new(), parties: 3 });
    let handles: Vec<_> = slices
        .into_iter()
        .enumerate()
        .map(|(k, slice)| {
            let (step, requested) = (step.clone(), requested.clone());
            std::thread::Builder::new()
                .name(format!("device{k}"))
                .spawn(move || {
                    let mut per_epoch = Vec::new();
                    for _ in 0..6 {
                        let mut served = 0;
                        for b in slice.iter() {
                            b.unwrap();
                            served += 1;
                            step.wait("a step");
                            if k == 1 {
                                std::thread::sleep(std::time::Duration::from_millis(1));
                            }
                            if k == 0 && per_epoch.len() == 3 && served == 2 {
                                requested.store(true, Ordering::SeqCst); // mid-epoch 4
                            }
                        }
                        per_epoch.push(served);
                        if k == 0 {
                            std::thread::sleep(std::time::Duration::from_millis(20)); // validation
                        }
                    }
                    per_epoch
                })
                .unwrap()
        })
        .collect();
    let served: Vec<Vec<usize>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // The stop lands at step 2 or 3 of epoch 4: whether another device started step 3 before
    // device 0 set the request is a race (it lost it once under CI load); what must hold is that
    // every device stops at the same step.
    let stopped = served[0][3];
    assert!(stopped == 2 || stopped == 3, "stopped at step {stopped} of epoch 4");
    assert_eq!(served[0], [5, 5, 5, stopped, 0, 0], "three whole epochs, the stopped one, then halted ones");
    assert!(served.iter().all(|s| *s == served[0]), "every device served the same steps: {served:?}");
    assert_eq!(*ends.lock().unwrap(), vec![(1, 5), (2, 10), (3, 15), (4, 15 + stopped)]);
    let halts = halted_by.lock().unwrap();
    assert!(!halts.is_empty() && halts.iter().all(|t| t == "device0"), "halted by {halts:?}");
}

#[test]
fn the_sharded_optimizer_step_clips_the_norm_of_the_summed_gradient() {
    use burn::optim::{MultiGradientsParams, SgdConfig};
    let dev = Device::flex().autodiff();
    dev.seed(8);
    let m = Lm::new(&tiny(), &dev).unwrap();
    let plan = StepPlan { steps: 1, steps_per_epoch: 1, batch_size: 4, grad_accum: 1 };
    let single = byte_loader(plan, 2, &dev);
    let whole = TrainStep::step(&m, single.batch(0)).grads;
    let norm: f64 = grads(&m, &whole).iter().flatten().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let max = norm / 3.0;
    let slices = split_dataloader(Arc::new(single), &[dev.clone(), dev.clone()]);
    let parts: Vec<_> = slices
        .iter()
        .map(|s| (TrainStep::step(&m, s.iter().next().unwrap().unwrap()).grads, dev.clone()))
        .collect();
    let clipped = m.clone().with_grad_clip(max);
    let a = TrainStep::optimize(clipped.clone(), &mut SgdConfig::new().init(), 1.0.into(), whole);
    let b = TrainStep::optimize_multi(
        clipped,
        &mut SgdConfig::new().init(),
        1.0.into(),
        MultiGradientsParams { grads: parts },
    );
    let values = |m: &Lm| -> Vec<f32> {
        struct V(Vec<f32>);
        impl ModuleVisitor for V {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.extend(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
            }
        }
        let mut v = V(Vec::new());
        m.visit(&mut v);
        v.0
    };
    let (before, x, y) = (values(&m), values(&a), values(&b));
    let moved: f64 = before.iter().zip(&x).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>().sqrt();
    assert!((moved - max).abs() < 1e-3 * max, "the single step moved {moved}, the clip is {max}");
    for (u, v) in x.iter().zip(&y) {
        assert!((u - v).abs() <= 1e-6 + 1e-4 * u.abs(), "{u} vs {v}");
    }
}
