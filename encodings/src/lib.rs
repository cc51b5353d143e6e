//! pezoo-encodings: every positional encoding of the zoo, behind one registry.
//!
//! - [`EncodingConfig`]: serde/TOML configuration tagged by `kind` (Hugging Face names:
//!   `rope_theta`, `partial_rotary_factor`, `rope_scaling`).
//! - [`Encoding`]: the initialised Burn module; [`Encoding::as_dyn`] gives the
//!   [`PositionalEncoding`] interface an attention layer uses: rotary maps on q/k
//!   ([`RotaryEncoding::apply_qk`]), a logits bias for a query × key block, or an embedding.
//! - [`inspect`]: what an encoding does, as numbers (`zoo inspect`); [`envelope`]: the logit
//!   vs distance for fixed and random q, k (`zoo inspect --envelope`).
//!
//! The math and its sources: `../shared/design/encodings.md` (summarised in each module).

#![forbid(unsafe_code)]

pub mod attention;
pub mod bias;
pub mod embedding;
pub mod envelope;
pub mod error;
pub mod inspect;
pub mod registry;
pub mod rotary;

use burn::prelude::Device;

pub use envelope::{Envelope, envelope};
pub use error::ConfigError;
pub use inspect::Inspection;
pub use registry::{
    Encoding, EncodingClass, EncodingConfig, EncodingContext, EncodingKind, PositionalEncoding,
    check_positions,
};
pub use rotary::{Layout, RotaryEncoding, RotarySpec, Side};

/// Builds the encoding for `ctx` and describes it at the given query–key distances.
pub fn inspect(
    config: &EncodingConfig,
    ctx: &EncodingContext,
    distances: &[usize],
    device: &Device,
) -> Result<Inspection, ConfigError> {
    let enc = config.init(ctx, device)?;
    let mut out = enc.as_dyn().inspect(distances, device);
    out.kind = config.kind().to_string();
    out.context = *ctx;
    Ok(out)
}
