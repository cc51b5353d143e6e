//! Learned absolute positions: a `[max_len, d_model]` table; positions ≥ max_len are an error
//! (checked by [`crate::check_positions`] before any forward pass).

use std::ops::Range;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result};
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedConfig {
    /// Table length; default the training length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
}

#[derive(Module, Debug)]
pub struct LearnedAbsolute {
    /// `[max_len, d_model]`
    table: Param<Tensor<2>>,
    #[module(skip)]
    ctx: EncodingContext,
}

impl EncodingKind for LearnedConfig {
    const KIND: &'static str = "learned";
    const SUMMARY: &'static str = "learned absolute position table; hard length limit max_len";
    type Module = LearnedAbsolute;

    fn validate(&self, ctx: &EncodingContext) -> Result<()> {
        ctx.require_train_len(self.max_len, "max_len")?;
        if ctx.d_model == 0 {
            return Err(ConfigError::new("d_model", "0 is out of range (allowed: ≥ 1)"));
        }
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, device: &Device) -> Result<LearnedAbsolute> {
        self.validate(ctx)?;
        let n = ctx.require_train_len(self.max_len, "max_len")?;
        let table = Tensor::random([n, ctx.d_model], Distribution::Normal(0.0, 0.02), device);
        Ok(LearnedAbsolute { table: Param::from_tensor(table), ctx: *ctx })
    }
}

impl PositionalEncoding for LearnedAbsolute {
    fn class(&self) -> EncodingClass {
        EncodingClass::Embedding
    }

    fn position_embedding(&self, positions: Range<usize>, _device: &Device) -> Option<Tensor<2>> {
        let max = self.table.dims()[0];
        assert!(
            positions.end <= max,
            "learned positions {positions:?} exceed max_len {max}: call check_positions first"
        );
        Some(self.table.val().slice([positions]))
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.table.dims()[0])
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        let mut out = super::inspect_embedding(self, "learned", self.ctx, distances, device);
        out.notes.push(format!("max_len = {} (positions beyond are an error)", self.table.dims()[0]));
        out
    }
}
