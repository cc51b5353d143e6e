//! NoPE: no positional information beyond the causal mask (Kazemnejad et al. 2023).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::inspect::Inspection;
use crate::registry::{EncodingClass, EncodingContext, EncodingKind, PositionalEncoding};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NopeConfig {}

#[derive(Module, Debug)]
pub struct Nope {
    #[module(skip)]
    ctx: EncodingContext,
}

impl EncodingKind for NopeConfig {
    const KIND: &'static str = "nope";
    const SUMMARY: &'static str = "no positional encoding; order only from the causal mask";
    type Module = Nope;

    fn validate(&self, _ctx: &EncodingContext) -> Result<()> {
        Ok(())
    }

    fn init(&self, ctx: &EncodingContext, _device: &Device) -> Result<Nope> {
        Ok(Nope { ctx: *ctx })
    }
}

impl PositionalEncoding for Nope {
    fn class(&self) -> EncodingClass {
        EncodingClass::Embedding
    }

    fn inspect(&self, distances: &[usize], device: &Device) -> Inspection {
        super::inspect_embedding(self, "nope", self.ctx, distances, device)
    }
}
