//! Shared by the model tests.

use burn::prelude::*;

/// Sets every float parameter to seeded uniform values in [−1, 1): strong attention, so the
/// logits depend on every score (a freshly initialised model's barely do).
pub struct Randomise(pub u64);

impl burn::module::ModuleMapper for Randomise {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        self.0 += 1;
        let mut rng = pezoo_models::corpus::SplitMix(self.0);
        param.map(|t| {
            let (shape, device) = (t.shape(), t.device());
            let v: Vec<f32> = (0..shape.num_elements())
                .map(|_| (rng.below(1 << 20) as f32 / (1 << 19) as f32) - 1.0)
                .collect();
            Tensor::from_data(TensorData::new(v, shape), &device)
        })
    }
}
