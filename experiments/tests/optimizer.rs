//! `zoo train`'s optimizer and schedule: weight decay only on weight matrices and embeddings
//! (an encoding parameter with zero gradient does not move), and a rate that never rises after
//! warm-up and ends at min_lr on the last step.

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use pezoo_encodings::EncodingConfig;
use pezoo_experiments::train::{RunConfig, lr_schedule, optimizer};
use pezoo_models::{Lm, ModelConfig};

/// (path, values) of every float parameter.
#[derive(Default)]
struct Values {
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}
impl ModuleVisitor for Values {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.out
            .push((self.path.join("."), p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()));
    }
}

/// A zero gradient for every parameter.
struct Zeros(GradientsParams);
impl ModuleVisitor for Zeros {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.register::<D>(p.id, p.val().zeros_like());
    }
}

fn values(m: &Lm) -> Vec<(String, Vec<f32>)> {
    let mut v = Values::default();
    m.visit(&mut v);
    v.out
}

#[test]
fn weight_decay_reaches_weight_matrices_and_embeddings_only() {
    let dev = Device::flex().autodiff();
    dev.seed(1);
    for kind in ["hope-hyp", "kerple", "fire", "t5"] {
        let mut c: ModelConfig =
            toml::from_str("d_model = 24\nn_layers = 2\nn_heads = 3\nmax_seq_len = 16").unwrap();
        c.encoding = EncodingConfig::default_for(kind).unwrap();
        let m = Lm::new(&c, &dev).unwrap();
        let before = values(&m);
        let mut z = Zeros(GradientsParams::new());
        m.visit(&mut z);
        let mut t = RunConfig::default().train;
        t.weight_decay = 0.1;
        let lr = 0.5;
        let after = values(&optimizer(&t).step(lr, m, z.0));
        let mut decayed = Vec::new();
        for ((path, x), (_, y)) in before.iter().zip(&after) {
            let shrunk =
                x.iter().zip(y).all(|(u, v)| (v - u * (1.0 - 0.05)).abs() <= 1e-6 * u.abs().max(1.0));
            let still = x == y;
            assert!(shrunk || still, "{kind}: {path} moved by something other than decay");
            if shrunk && !still {
                decayed.push(path.clone());
            }
        }
        let matrices = ["attn.qkv", "attn.out", "mlp.up", "mlp.gate", "mlp.down"];
        let mut want: Vec<String> = vec!["embed.weight".into()];
        for l in 0..2 {
            want.extend(matrices.iter().map(|m| format!("blocks.{l}.{m}.weight")));
        }
        decayed.sort();
        want.sort();
        assert_eq!(decayed, want, "{kind}: the decayed parameters");
        assert!(before.iter().any(|(p, _)| p.starts_with("encodings")), "{kind} has parameters");
    }
}

#[test]
fn the_rate_warms_up_then_only_falls_to_min_lr_at_the_last_step() {
    for (steps, warm) in [(130, 13), (300, 30), (7, 1), (2, 1)] {
        let mut t = RunConfig::default().train;
        (t.steps, t.warmup_steps, t.lr, t.min_lr) = (steps, warm, 2e-3, 2e-4);
        let mut s = lr_schedule(&t).unwrap();
        let lrs: Vec<f64> = (0..steps).map(|_| s.step().base()).collect();
        let peak = lrs.iter().cloned().fold(0.0, f64::max);
        assert!((peak - 2e-3).abs() < 1e-12, "{steps}: peaks at lr");
        for w in lrs[warm..].windows(2) {
            assert!(w[1] <= w[0] + 1e-15, "{steps}: the rate rose after warm-up: {w:?}");
        }
        if steps - warm > 1 {
            assert!((lrs[steps - 1] - 2e-4).abs() < 1e-12, "{steps}: ends at min_lr: {}", lrs[steps - 1]);
        }
    }
}
