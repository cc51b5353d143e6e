//! pezoo-models: a small decoder-only LM whose attention takes any pezoo encoding, its
//! tokenizers (bytes, BPE), corpora (embedded synthetic default, or text files) and burn-train glue.

#![forbid(unsafe_code)]

pub mod attention;
pub mod config;
pub mod corpus;
pub mod data;
pub mod layers;
pub mod lm;
pub mod loader;
pub mod plan;
pub mod score;
pub mod tokenizer;
mod train_step;

pub use attention::LayerCapture;
pub use config::{MlpKind, ModelConfig, ModelError};
pub use corpus::{Corpus, DataError};
pub use data::{LmBatch, LmBatcher, RandomWindows, SequentialWindows, Tokens, token_stream, window_start};
pub use lm::{Captured, DECAY_PATTERN, EMBED_STD, KvCache, Lm};
pub use loader::{EarlyStop, EpochEnd, StepPlan, TrainLoader, expected_coverage};
pub use plan::{PositionPlan, QueryBlock};
pub use tokenizer::{BYTE_VOCAB, ByteTokenizer, Tokenizer, TokenizerSpec};
pub use train_step::{LmOutput, clip_grad_norm};
