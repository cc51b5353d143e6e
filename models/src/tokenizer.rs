//! Tokenizers: bytes (ids 0–255, then a few specials; needs no files, round-trips any UTF-8), a
//! byte-level BPE learned on the training split, or any Hugging Face `tokenizer.json` (GPT-2's,
//! Llama's), through the `tokenizers` crate.
//!
//! Every token also carries the UTF-8 bytes of text it stands for ([`Tokenizer::encode_with_bytes`]),
//! so a loss can be reported in bits per byte: comparable across tokenizers.

use std::path::{Path, PathBuf};

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::ModelWrapper;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::corpus::DataError;

/// Vocabulary size of the byte tokenizer (256 bytes + specials).
pub const BYTE_VOCAB: usize = 260;
pub const BOS: u32 = 256;
/// Separates documents in a token stream.
pub const EOS: u32 = 257;
pub const PAD: u32 = 258;
pub const SEP: u32 = 259;

/// The document separator a learned BPE gets (GPT-2's name for it).
pub const BPE_EOS: &str = "<|endoftext|>";
/// Document separators looked for in a `tokenizer.json`, in this order.
const EOS_NAMES: &[&str] = &[BPE_EOS, "<|end_of_text|>", "</s>", "<eos>", "<|eos|>"];
/// Smallest and largest `bpe:<vocab>`: the 256 byte symbols + the separator + at least one merge;
/// at most what a u32 id and a sane embedding allow.
pub const BPE_VOCAB_RANGE: (usize, usize) = (258, 1 << 20);

#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Bytes back to text; specials are dropped, invalid UTF-8 is replaced (U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn vocab_size(&self) -> usize {
        BYTE_VOCAB
    }
}

/// What `[data] tokenizer` names: `bytes`, `bpe:<vocab>` or a path to a `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSpec {
    Bytes,
    Bpe(usize),
    File(PathBuf),
}

impl TokenizerSpec {
    pub fn parse(s: &str) -> Result<Self, DataError> {
        let err = |m: String| DataError::Field { field: "data.tokenizer".into(), message: m };
        if s == "bytes" {
            return Ok(Self::Bytes);
        }
        if let Some(v) = s.strip_prefix("bpe:") {
            let (lo, hi) = BPE_VOCAB_RANGE;
            return match v.parse::<usize>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(Self::Bpe(n)),
                _ => Err(err(format!("`{s}`: the vocabulary must be an integer in {lo} ..= {hi}"))),
            };
        }
        if s.is_empty() {
            return Err(err("empty (allowed: bytes, bpe:<vocab>, or a path to a tokenizer.json)".into()));
        }
        Ok(Self::File(PathBuf::from(s)))
    }
}

/// A tokenizer of any [`TokenizerSpec`], ready to encode.
#[derive(Clone)]
pub enum Tokenizer {
    Bytes,
    Hf { inner: Box<tokenizers::Tokenizer>, eos: u32 },
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes => write!(f, "Tokenizer::Bytes"),
            Self::Hf { eos, .. } => write!(f, "Tokenizer::Hf(vocab {}, eos {eos})", self.vocab_size()),
        }
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Bad { path: path.display().to_string(), message: message.into() }
}

impl Tokenizer {
    /// Learns a byte-level BPE of exactly `vocab` tokens (the 256 byte symbols, [`BPE_EOS`] and
    /// merges) on `docs`. Deterministic: merges are taken by count, ties by symbol ids.
    pub fn learn_bpe(docs: &[String], vocab: usize) -> Result<Self, DataError> {
        let spec = format!("bpe:{vocab}");
        let err = |m: String| DataError::Field {
            field: "data.tokenizer".into(),
            message: format!("`{spec}`: {m}"),
        };
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(BPE_EOS, true)])
            .build();
        let byte_level = ByteLevel::new(false, false, true);
        let mut tok: tokenizers::TokenizerImpl<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        > = TokenizerBuilder::new()
            .with_model(BPE::default().into())
            .with_pre_tokenizer(Some(byte_level.into()))
            .with_decoder(Some(byte_level.into()))
            .build()
            .map_err(|e| err(e.to_string()))?;
        tok.train(&mut TrainerWrapper::from(trainer), docs.iter()).map_err(|e| err(e.to_string()))?;
        let inner = tokenizers::Tokenizer::from(tok);
        let got = inner.get_vocab_size(true);
        if got < vocab {
            return Err(err(format!(
                "the training split fills only {got} tokens (merges of pairs seen at least twice); choose a vocabulary ≤ {got}"
            )));
        }
        let eos = inner.token_to_id(BPE_EOS).expect("the trainer adds its special token");
        Ok(Self::Hf { inner: Box::new(inner), eos })
    }

    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        if !path.is_file() {
            return Err(file_err(
                path,
                "no such tokenizer file (data.tokenizer: bytes, bpe:<vocab>, or a path to a tokenizer.json)",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| file_err(path, format!("not a tokenizer.json the tokenizers crate reads: {e}")))?;
        let Some(eos) = EOS_NAMES.iter().find_map(|n| inner.token_to_id(n)) else {
            return Err(file_err(
                path,
                format!("has no document separator token (looked for {EOS_NAMES:?})"),
            ));
        };
        Ok(Self::Hf { inner: Box::new(inner), eos })
    }

    /// The `tokenizer.json` text (none for bytes, which needs no file).
    pub fn to_json(&self) -> Option<String> {
        match self {
            Self::Bytes => None,
            Self::Hf { inner, .. } => Some(inner.to_string(false).expect("a loaded tokenizer serialises")),
        }
    }

    /// Writes a `tokenizer.json` (nothing for bytes).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        match self.to_json() {
            None => Ok(()),
            Some(json) => std::fs::write(path, json).map_err(|e| file_err(path, e.to_string())),
        }
    }

    /// The embedding rows the ids need: the largest id + 1 (a tokenizer.json may skip ids).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bytes => BYTE_VOCAB,
            Self::Hf { inner, .. } => inner.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1),
        }
    }

    /// The token that separates documents.
    pub fn eos(&self) -> u32 {
        match self {
            Self::Bytes => EOS,
            Self::Hf { eos, .. } => *eos,
        }
    }

    /// Token ids of `text`, without any special token (no BOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with_bytes(text).0
    }

    /// Token ids of `text`, and the UTF-8 bytes of `text` each token stands for (they sum to
    /// `text.len()`; a byte shared by two tokens counts for the first to reach it; bytes no
    /// token covers, e.g. whitespace a normalizer strips at the end, count for the last).
    pub fn encode_with_bytes(&self, text: &str) -> (Vec<u32>, Vec<u32>) {
        self.try_encode(text).expect("a loaded tokenizer encodes text (checked when loaded)")
    }

    fn try_encode(&self, text: &str) -> Result<(Vec<u32>, Vec<u32>), String> {
        Ok(match self {
            Self::Bytes => (ByteTokenizer.encode(text), vec![1; text.len()]),
            Self::Hf { inner, .. } => {
                let enc = inner.encode(text, false).map_err(|e| e.to_string())?;
                let mut done = 0usize;
                let mut bytes: Vec<u32> = enc
                    .get_offsets()
                    .iter()
                    .map(|&(_, end)| {
                        let end = end.min(text.len());
                        let b = end.saturating_sub(done);
                        done = done.max(end);
                        b as u32
                    })
                    .collect();
                if let Some(last) = bytes.last_mut() {
                    *last += (text.len() - done) as u32; // text no token's offsets reached
                }
                (enc.get_ids().to_vec(), bytes)
            }
        })
    }

    /// Ids back to text; special tokens are dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.try_decode(ids).expect("a loaded tokenizer decodes its ids (checked when loaded)")
    }

    fn try_decode(&self, ids: &[u32]) -> Result<String, String> {
        match self {
            Self::Bytes => Ok(ByteTokenizer.decode(ids)),
            Self::Hf { inner, .. } => inner.decode(ids, true).map_err(|e| e.to_string()),
        }
    }

    /// Whether text pieces tokenise independently: `encode(a) ++ encode(b) == encode(a + b)` for
    /// every adjacent pair of `pieces`. Prompts assembled from separately encoded pieces (passkey,
    /// copy) equal the tokens of their text only then — true of bytes and of GPT-2-style
    /// byte-level BPE at line and word boundaries; not of tokenizers that prefix every encoding
    /// (Llama's `▁`).
    pub fn concatenates(&self, pieces: &[&str]) -> bool {
        pieces.windows(2).all(|w| {
            let mut joint = self.encode(w[0]);
            joint.extend(self.encode(w[1]));
            joint == self.encode(&format!("{}{}", w[0], w[1]))
        })
    }
}
