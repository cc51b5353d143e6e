//! burn-train glue: the LM's training and validation steps.

use burn::prelude::*;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::data::LmBatch;
use crate::lm::Lm;

impl Lm {
    fn step_output(&self, batch: LmBatch) -> ClassificationOutput {
        let device = &self.devices()[0];
        let (inputs, targets) = (batch.inputs.to_device(device), batch.targets.to_device(device));
        let [b, s] = targets.dims();
        let (loss, logits) = self.loss(inputs, targets.clone());
        ClassificationOutput { loss, output: logits, targets: targets.reshape([b * s]) }
    }
}

impl TrainStep for Lm {
    type Input = LmBatch;
    type Output = ClassificationOutput;
    fn step(&self, batch: LmBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.step_output(batch);
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl InferenceStep for Lm {
    type Input = LmBatch;
    type Output = ClassificationOutput;
    fn step(&self, batch: LmBatch) -> ClassificationOutput {
        self.step_output(batch)
    }
}
