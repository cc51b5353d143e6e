//! The training loop's parts, against independent math: fresh windows per epoch with the
//! coverage uniform sampling predicts, resume serves the same windows, exact step plans,
//! micro-batched gradients = whole-batch gradients, the global gradient-norm clip, per-layer
//! encodings, and the sinusoidal embedding's scale.

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::train::TrainStep;
use pezoo_encodings::EncodingConfig;
use pezoo_models::{Lm, LmBatch, ModelConfig, StepPlan, TrainLoader, clip_grad_norm, expected_coverage};

fn plan(steps: usize, per_epoch: usize) -> StepPlan {
    StepPlan { steps, steps_per_epoch: per_epoch, batch_size: 4, grad_accum: 1 }
}

fn stream(n: usize) -> Arc<Vec<u32>> {
    Arc::new((0..n as u32).map(|i| i % 251).collect())
}

#[test]
fn epochs_draw_fresh_windows_with_the_coverage_uniform_sampling_predicts() {
    let (n, seq) = (20_000, 31); // windows of 32 tokens
    let loader = TrainLoader::new(stream(n), seq, plan(100, 50), 7, (1, 0), &Device::flex());
    let starts = |epoch: usize| -> Vec<usize> {
        (0..50)
            .flat_map(|s| (0..4).map(move |i| (s, i)))
            .map(|(s, i)| loader.start((epoch - 1) * 50 + s, i))
            .collect()
    };
    let (e1, e2) = (starts(1), starts(2));
    let same = e1.iter().zip(&e2).filter(|(a, b)| a == b).count();
    assert!(same < 3, "epochs 1 and 2 share {same} of 200 window starts");
    assert!(e1.iter().chain(&e2).all(|&s| s + seq < n));
    // coverage of the union of both epochs' windows vs (1/n) Σ_p 1 − (1 − c_p/S)^draws
    let mut covered = vec![false; n];
    for &s in e1.iter().chain(&e2) {
        covered[s..s + seq + 1].iter_mut().for_each(|c| *c = true);
    }
    let measured = covered.iter().filter(|&&c| c).count() as f64 / n as f64;
    let expected = expected_coverage(n, seq + 1, 400);
    // 400 windows of 32 over 20k tokens: 1 − e^(−0.64) ≈ 0.47; the measured fraction's sd ≈ 0.01
    assert!((expected - (1.0 - (-400.0 * 32.0 / 20_000f64).exp())).abs() < 0.01, "{expected}");
    assert!((measured - expected).abs() < 0.04, "coverage {measured} vs expected {expected}");
}

#[test]
fn every_window_start_is_drawn_and_coverage_matches_enumeration() {
    // a stream of seq + 3 tokens has exactly 3 window starts; all are reachable
    let (seq, n) = (8, 11);
    let loader = TrainLoader::new(stream(n), seq, plan(50, 50), 1, (1, 0), &Device::flex());
    let seen: std::collections::BTreeSet<usize> = (0..50).map(|s| loader.start(s, 0)).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    // expected_coverage against brute force: enumerate every start sequence of 2 draws
    let (n, w) = (7, 3);
    let starts = n - w + 1;
    let mut total = 0.0;
    for a in 0..starts {
        for b in 0..starts {
            let covered = (0..n).filter(|&p| (a..a + w).contains(&p) || (b..b + w).contains(&p)).count();
            total += covered as f64 / n as f64;
        }
    }
    let brute = total / (starts * starts) as f64;
    assert!((expected_coverage(n, w, 2) - brute).abs() < 1e-12, "{} vs {brute}", expected_coverage(n, w, 2));
}

#[test]
fn the_loader_serves_exact_steps_and_a_resumed_loader_the_same_windows() {
    let dev = Device::flex();
    let p = plan(130, 100);
    assert_eq!((p.epochs(), p.epoch_end(0), p.epoch_end(100)), (2, 100, 130));
    assert_eq!((p.epochs_after(0), p.epochs_after(100), p.epochs_after(130)), (2, 1, 0));
    let tokens = stream(5_000);
    let fresh = TrainLoader::new(tokens.clone(), 15, p, 3, (1, 0), &dev);
    let count = |l: &TrainLoader| l.iter().count();
    assert_eq!(count(&fresh), 100, "epoch 1");
    let second: Vec<LmBatch> = fresh.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(second.len(), 30, "epoch 2 ends at step 130");
    // a run resumed after checkpoint 1 starts at epoch 2 and sees epoch 2's windows
    let resumed = TrainLoader::new(tokens.clone(), 15, p, 3, (2, 100), &dev);
    let again: Vec<LmBatch> = resumed.iter().collect::<Result<_, _>>().unwrap();
    let ids = |b: &LmBatch| b.inputs.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
    assert_eq!(again.len(), second.len());
    assert!(second.iter().zip(&again).all(|(a, b)| ids(a) == ids(b)));
    assert_eq!(resumed.served().load(std::sync::atomic::Ordering::SeqCst), 130, "steps counted over the run");
    // through iter(): epoch 2's batches are not epoch 1's
    let first: Vec<LmBatch> =
        TrainLoader::new(tokens.clone(), 15, p, 3, (1, 0), &dev).iter().collect::<Result<_, _>>().unwrap();
    let same = first.iter().zip(&second).filter(|(a, b)| ids(a) == ids(b)).count();
    assert_eq!(same, 0, "epoch 2 repeats {same} of epoch 1's batches");
    // the data does not depend on checkpoint cadence: global step 30 is the same batch
    let other = TrainLoader::new(tokens, 15, plan(130, 25), 3, (1, 0), &dev);
    let _ = other.iter().count();
    let epoch2: Vec<LmBatch> = other.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(ids(&epoch2[5]), ids(&fresh.batch(30)), "global step 30, whatever the epoch length");
}

/// A stop request ends the epoch after its current step (reporting where), the next epoch
/// halts the Learner and serves nothing, and a loader resumed from that step serves exactly
/// the uninterrupted run's remaining batches, its first epoch ending at the next boundary.
#[test]
fn a_stop_ends_the_epoch_at_a_step_and_resuming_there_serves_the_same_batches() {
    use pezoo_models::EarlyStop;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dev = Device::flex();
    let p = plan(130, 100);
    let tokens = stream(5_000);
    let ids = |b: &LmBatch| b.inputs.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
    let requested = Arc::new(AtomicBool::new(false));
    let halts = Arc::new(AtomicUsize::new(0));
    let ends = Arc::new(Mutex::new(Vec::new()));
    let (h, e) = (halts.clone(), ends.clone());
    let loader = TrainLoader::new(tokens.clone(), 15, p, 3, (1, 0), &dev)
        .with_early_stop(EarlyStop {
            requested: requested.clone(),
            halt: Arc::new(move || {
                h.fetch_add(1, Ordering::SeqCst);
            }),
        })
        .on_epoch_end(Arc::new(move |epoch, step| e.lock().unwrap().push((epoch, step))));
    let mut it = loader.iter();
    for _ in 0..37 {
        assert!(it.next().is_some());
    }
    requested.store(true, Ordering::SeqCst); // during step 37
    assert!(it.next().is_none(), "the epoch ends after the step under way");
    assert!(it.next().is_none());
    drop(it);
    assert_eq!(*ends.lock().unwrap(), vec![(1, 37)]);
    assert_eq!(loader.served().load(Ordering::SeqCst), 37);
    assert_eq!(halts.load(Ordering::SeqCst), 0, "the checkpoint at step 37 is still to be written");
    assert_eq!(loader.iter().count(), 0, "the next epoch serves nothing");
    assert_eq!(halts.load(Ordering::SeqCst), 1, "and halts the Learner");
    assert_eq!(ends.lock().unwrap().len(), 1, "an empty epoch is not an epoch end");
    assert_eq!(loader.served().load(Ordering::SeqCst), 37, "a halted epoch serves nothing");

    // a stop that arrives after an epoch began but before its first step: one step, then the end
    let flag = Arc::new(AtomicBool::new(false));
    let late = TrainLoader::new(tokens.clone(), 15, p, 3, (1, 0), &dev)
        .with_early_stop(EarlyStop { requested: flag.clone(), halt: Arc::new(|| panic!("not halted")) });
    let mut it = late.iter();
    flag.store(true, Ordering::SeqCst);
    assert!(it.next().is_some() && it.next().is_none(), "at least one step, so the checkpoint is new");
    drop(it);
    assert_eq!(late.served().load(Ordering::SeqCst), 1);

    // resumed from checkpoint 1 at step 37: epochs 37..100 and 100..130
    assert_eq!(p.epochs_after(37), 2);
    let resumed = TrainLoader::new(tokens.clone(), 15, p, 3, (2, 37), &dev);
    let rest: Vec<Vec<LmBatch>> = (0..2).map(|_| resumed.iter().collect::<Result<_, _>>().unwrap()).collect();
    assert_eq!((rest[0].len(), rest[1].len()), (63, 30));
    let whole = TrainLoader::new(tokens, 15, p, 3, (1, 0), &dev);
    let all: Vec<LmBatch> =
        (0..2).flat_map(|_| whole.iter().map(Result::unwrap).collect::<Vec<_>>()).collect();
    assert_eq!(all.len(), 130);
    for (k, b) in rest.iter().flatten().enumerate() {
        assert_eq!(ids(b), ids(&all[37 + k]), "step {}", 37 + k);
    }
}

/// Held by every test here that initialises a model: the flex device's random generator is
/// shared by the tests running in parallel, and the sinusoidal test needs two initialisations
/// from one seed with nothing drawn in between.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(kind: &str) -> ModelConfig {
    let mut c: ModelConfig =
        toml::from_str("d_model = 24\nn_layers = 2\nn_heads = 3\nmax_seq_len = 16").unwrap();
    c.encoding = EncodingConfig::default_for(kind).unwrap();
    c
}

fn batch(b: usize, s: usize, micro: usize, dev: &Device) -> LmBatch {
    let mut r = pezoo_models::corpus::SplitMix(11);
    let t: Vec<i64> = (0..b * (s + 1)).map(|_| r.below(256) as i64).collect();
    let w = Tensor::<2, Int>::from_data(TensorData::new(t, [b, s + 1]), dev);
    LmBatch {
        inputs: w.clone().narrow(1, 0, s),
        targets: w.narrow(1, 1, s),
        micro_batches: micro,
        loss_weight: 1.0,
    }
}

/// Every parameter's gradient as (id, values).
struct Collect<'a>(&'a GradientsParams, Vec<(String, Vec<f32>)>);
impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.0.get::<D>(p.id) {
            self.1.push((p.id.to_string(), g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()));
        }
    }
}

/// The global L2 norm of a set of gradients, in f64.
fn global_norm(grads: &[(String, Vec<f32>)]) -> f64 {
    grads.iter().flat_map(|(_, v)| v).map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn grads_of(m: &Lm, g: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    let mut c = Collect(g, Vec::new());
    m.visit(&mut c);
    c.1
}

#[test]
fn micro_batched_gradients_equal_the_whole_batch_gradient() {
    let _rng = rng_lock();
    let dev = Device::flex().autodiff();
    dev.seed(5);
    let m = Lm::new(&tiny("kerple"), &dev).unwrap();
    // 5 sequences in 4 uneven parts (2, 1, 1, 1): weighted by size, they make the whole
    let whole = TrainStep::step(&m, batch(5, 9, 1, &dev));
    let parts = TrainStep::step(&m, batch(5, 9, 4, &dev));
    let (a, b) = (grads_of(&m, &whole.grads), grads_of(&m, &parts.grads));
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 10, "every parameter has a gradient");
    for ((id, x), (_, y)) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-5 + 1e-3 * u.abs(), "param {id}: {u} vs {v}");
        }
    }
    let loss = |o: &burn::train::TrainOutput<pezoo_models::LmOutput>| {
        o.item.loss.clone().into_scalar::<f32>() as f64
    };
    assert!((loss(&whole) - loss(&parts)).abs() < 1e-5);
}

#[test]
fn the_clip_scales_every_gradient_to_the_global_norm() {
    let _rng = rng_lock();
    let dev = Device::flex().autodiff();
    dev.seed(6);
    let m = Lm::new(&tiny("rope"), &dev).unwrap();
    let out = TrainStep::step(&m, batch(2, 9, 1, &dev));
    let before = grads_of(&m, &out.grads);
    let norm = global_norm(&before);
    let mut g = out.grads;
    let max = norm / 4.0;
    let reported = clip_grad_norm(&m, &mut g, max).unwrap().into_scalar::<f32>() as f64;
    assert!((reported - norm).abs() < 1e-4 * norm, "norm {reported} vs {norm}");
    let after = grads_of(&m, &g);
    let clipped = global_norm(&after);
    assert!((clipped - max).abs() < 1e-4 * max, "clipped norm {clipped} vs {max}");
    for ((_, x), (_, y)) in before.iter().zip(&after) {
        for (u, v) in x.iter().zip(y) {
            assert!((*v as f64 - *u as f64 / 4.0).abs() < 1e-6 + 1e-4 * u.abs() as f64);
        }
    }
    // below the limit nothing changes
    let mut g2 = TrainStep::step(&m, batch(2, 9, 1, &dev)).grads;
    clip_grad_norm(&m, &mut g2, norm * 10.0);
    assert_eq!(grads_of(&m, &g2), before);
    // the step itself leaves the gradient alone (with data parallelism it is one device's part)
    let step = TrainStep::step(&m.clone().with_grad_clip(max), batch(2, 9, 1, &dev)).grads;
    assert_eq!(grads_of(&m, &step), before);
    // the optimizer step clips what it receives: plain SGD at lr 1 moves the parameters by
    // exactly the clipped gradient
    let mut sgd = burn::optim::SgdConfig::new().init();
    let moved = TrainStep::optimize(m.clone().with_grad_clip(max), &mut sgd, 1.0.into(), step);
    let delta: Vec<(String, Vec<f32>)> = params_of(&m)
        .into_iter()
        .zip(params_of(&moved))
        .map(|((id, a), (_, b))| (id, a.iter().zip(&b).map(|(x, y)| x - y).collect()))
        .collect();
    let n = global_norm(&delta);
    assert!((n - max).abs() < 1e-3 * max, "the optimizer step's update norm {n} vs the clip {max}");
}

/// Every parameter's value as (id, values).
fn params_of(m: &Lm) -> Vec<(String, Vec<f32>)> {
    struct Values(Vec<(String, Vec<f32>)>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .push((p.id.to_string(), p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()));
        }
    }
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

#[test]
fn kerple_has_parameters_per_layer_t5_and_fire_share_one_set() {
    let _rng = rng_lock();
    let dev = Device::flex();
    // the model's parameters beyond the configured LM's are the encoding's
    let count = |kind: &str| Lm::new(&tiny(kind), &dev).unwrap().num_params() - tiny(kind).num_params();
    assert_eq!(count("kerple"), 2 * 2 * 3, "r1, r2 per head per layer");
    assert_eq!(count("t5"), 32 * 3, "one table of 32 buckets × 3 heads");
    assert!(EncodingConfig::default_for("kerple").unwrap().per_layer());
    for k in ["t5", "fire", "alibi", "rope", "hope-hyp"] {
        assert!(!EncodingConfig::default_for(k).unwrap().per_layer(), "{k} is shared");
    }
}

#[test]
fn sinusoidal_content_and_position_have_vaswanis_ratio_at_the_shared_scale() {
    let _rng = rng_lock();
    let dev = Device::flex();
    let mut c = tiny("sinusoidal");
    c.d_model = 128;
    c.n_heads = 4;
    let (b, s) = (4, 16);
    let t: Vec<i64> = (0..b * s).map(|i| (i * 37 % 256) as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [b, s]), &dev);
    // neither encoding has parameters: the same seed gives both models the same embeddings
    let input = |kind: &str| {
        let mut c = c.clone();
        c.encoding = EncodingConfig::default_for(kind).unwrap();
        dev.seed(9);
        Lm::new(&c, &dev).unwrap().input_embedding(tokens.clone(), 0)
    };
    let (with_pe, content) = (input("sinusoidal"), input("nope"));
    let table = Lm::new(&c, &dev).unwrap().encoding().as_dyn().position_embedding(0..s, &dev).unwrap();
    let added: Vec<f32> = (with_pe - content.clone()).into_data().convert::<f32>().try_to_vec().unwrap();
    let want: Vec<f32> = table
        .clone()
        .unsqueeze_dim::<3>(0)
        .repeat_dim(0, b)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();
    // what is added is the sin/cos table × 0.02 (the embeddings' std), entry by entry
    for (a, w) in added.iter().zip(&want) {
        assert!((a - 0.02 * w).abs() < 1e-6, "added {a} vs 0.02 × {w}");
    }
    let rms = |t: Tensor<3>| t.square().mean().sqrt().into_scalar::<f32>() as f64;
    // content is the shared N(0, 0.02²) embedding, unscaled; position/content = 1/√2 (Vaswani)
    let content_rms = rms(content);
    assert!((content_rms - 0.02).abs() < 0.003, "content RMS {content_rms}");
    let ratio = rms(table.unsqueeze_dim::<3>(0)) * 0.02 / content_rms;
    assert!((ratio - 0.5f64.sqrt()).abs() < 0.1, "position/content = {ratio} (want ≈ 0.71)");
}
