//! pezoo-models: a small decoder-only LM whose attention takes any pezoo encoding, its byte
//! tokenizer, corpora (embedded synthetic default, or text files) and burn-train glue.

pub mod attention;
pub mod config;
pub mod corpus;
pub mod data;
pub mod lm;
pub mod tokenizer;
mod train_step;

pub use attention::LayerCapture;
pub use config::{MlpKind, ModelConfig, ModelError};
pub use corpus::{Corpus, DataError};
pub use data::{LmBatch, LmBatcher, RandomWindows, SequentialWindows, token_stream};
pub use lm::{Captured, Lm};
pub use tokenizer::{BYTE_VOCAB, ByteTokenizer};
