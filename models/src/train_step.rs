//! burn-train glue: the LM's training step (micro-batched gradient accumulation), its optimizer
//! step (a global gradient-norm clip, as PyTorch's `clip_grad_norm_`) and its validation step.
//!
//! Burn's optimizer clips each parameter's gradient on its own; the config promises a *global*
//! clip, so it is done here, on the device (no host read). It runs in [`TrainStep::optimize`],
//! on the gradient the optimizer receives: with data parallelism, the sum of every device's
//! weighted gradient (each batch's loss carries its share of the step, [`LmBatch::loss_weight`]),
//! so the clip sees the whole step's gradient, as on one device.

use burn::module::{ModuleVisitor, Param};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::prelude::*;
use burn::tensor::ExecutionError;
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::data::LmBatch;
use crate::lm::Lm;

/// What a step reports to the metrics: its mean next-token loss (perplexity is `exp` of it).
#[derive(Debug, Clone)]
pub struct LmOutput {
    /// `[1]`, mean cross-entropy in nats per token.
    pub loss: Tensor<1>,
}

impl ItemLazy for LmOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        self.loss.device().flush()?;
        Ok(Self { loss: self.loss.without_autodiff() })
    }
}

impl Adaptor<LossInput> for LmOutput {
    fn adapt(&self) -> LossInput {
        LossInput::new(self.loss.clone())
    }
}

/// Sum of squared gradient entries over every parameter, on the device.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
}

/// Multiplies every gradient by `coef` (`[1]`).
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    coef: Tensor<1>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let coef = self.coef.clone().reshape([1; D]);
            self.grads.register::<D>(param.id, g * coef);
        }
    }
}

/// PyTorch's `clip_grad_norm_` coefficient: min(1, max_norm / (norm + 1e-6)), `[1]`.
fn clip_coef(norm: Tensor<1>, max_norm: f64) -> Tensor<1> {
    norm.add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0)
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (PyTorch's `clip_grad_norm_`:
/// coef = min(1, max_norm / (norm + 1e-6))). Returns the norm before clipping, `[1]`.
pub fn clip_grad_norm<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Option<Tensor<1>> {
    let mut v = SquaredNorm { grads, total: None };
    module.visit(&mut v);
    let norm = v.total?.sqrt();
    let coef = clip_coef(norm.clone(), max_norm);
    module.visit(&mut Scale { grads, coef });
    Some(norm)
}

impl Lm {
    fn step_loss(&self, inputs: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let device = &self.devices()[0];
        self.loss(inputs.to_device(device), targets.to_device(device)).0
    }
}

impl TrainStep for Lm {
    type Input = LmBatch;
    type Output = LmOutput;
    /// This batch's part of one optimizer step's gradient: the batch in `micro_batches` equal
    /// parts, each part's backward freeing its graph before the next; the mean of the parts'
    /// gradients (= the gradient of the batch's mean loss) times `loss_weight` (1 on one
    /// device; with data parallelism the batch's share of the step, so the devices' gradients
    /// sum to the gradient of the whole step's mean loss). Reports the batch's mean loss.
    fn step(&self, batch: LmBatch) -> TrainOutput<LmOutput> {
        let [b, _] = batch.inputs.dims();
        let parts = batch.micro_batches.clamp(1, b);
        let mut acc = GradientsAccumulator::<Lm>::new();
        let mut total: Option<Tensor<1>> = None;
        for i in 0..parts {
            // balanced parts: sizes differ by at most one and cover 0..b exactly
            let (lo, n) = (i * b / parts, (i + 1) * b / parts - i * b / parts);
            let loss =
                self.step_loss(batch.inputs.clone().narrow(0, lo, n), batch.targets.clone().narrow(0, lo, n));
            let part = loss.mul_scalar(n as f64 / b as f64);
            let weighted = part.clone().mul_scalar(batch.loss_weight);
            acc.accumulate(self, GradientsParams::from_grads(weighted.backward(), self));
            let detached = part.detach();
            total = Some(match total {
                Some(t) => t + detached,
                None => detached,
            });
        }
        TrainOutput { grads: acc.grads(), item: LmOutput { loss: total.expect("at least one micro-batch") } }
    }

    /// The optimizer step on the step's whole gradient, clipped globally first when the config
    /// says so.
    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        mut grads: GradientsParams,
    ) -> Self {
        if self.grad_clip > 0.0 {
            clip_grad_norm(&self, &mut grads, self.grad_clip);
        }
        optim.step(lr, self, grads)
    }

    /// As [`Self::optimize`], for gradients held on several devices (burn-train's sharded
    /// optimizer): the norm is taken over every device's part together.
    fn optimize_multi(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        mut grads: MultiGradientsParams,
    ) -> Self {
        if self.grad_clip > 0.0 {
            clip_grad_norm_multi(&self, &mut grads, self.grad_clip);
        }
        optim.step_multi(lr, self, grads)
    }
}

/// [`clip_grad_norm`] over gradients split across devices, whose sum is the step's gradient
/// (burn's sharded optimizer adds the parts): the norm of the per-parameter sum (gathered on
/// the first part's device), every part scaled by the same coefficient.
fn clip_grad_norm_multi<M: Module>(module: &M, grads: &mut MultiGradientsParams, max_norm: f64) {
    let Some(main) = grads.grads.first().map(|(_, d)| d.clone()) else { return };
    let mut sum = GradientsParams::new();
    for (g, _) in &grads.grads {
        module.visit(&mut SumInto { from: g, into: &mut sum, device: &main });
    }
    let mut v = SquaredNorm { grads: &sum, total: None };
    module.visit(&mut v);
    let Some(total) = v.total else { return };
    let coef = clip_coef(total.sqrt(), max_norm);
    for (g, device) in grads.grads.iter_mut() {
        module.visit(&mut Scale { grads: g, coef: coef.clone().to_device(device) });
    }
}

/// Adds every gradient of `from` into `into`, on `device`.
struct SumInto<'a> {
    from: &'a GradientsParams,
    into: &'a mut GradientsParams,
    device: &'a Device,
}

impl ModuleVisitor for SumInto<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.from.get::<D>(param.id) {
            let g = g.to_device(self.device);
            let g = match self.into.remove::<D>(param.id) {
                Some(acc) => acc + g,
                None => g,
            };
            self.into.register::<D>(param.id, g);
        }
    }
}

impl InferenceStep for Lm {
    type Input = LmBatch;
    type Output = LmOutput;
    fn step(&self, batch: LmBatch) -> LmOutput {
        LmOutput { loss: self.step_loss(batch.inputs, batch.targets) }
    }
}
