//! Byte-level tokenizer: ids 0–255 are bytes, then a few specials. Needs no files, round-trips
//! any UTF-8 exactly.

/// Vocabulary size of the byte tokenizer (256 bytes + specials).
pub const BYTE_VOCAB: usize = 260;
pub const BOS: u32 = 256;
/// Separates documents in a token stream.
pub const EOS: u32 = 257;
pub const PAD: u32 = 258;
pub const SEP: u32 = 259;

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
