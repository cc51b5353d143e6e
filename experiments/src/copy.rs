//! The copy task in the corpus's own format: `copy: <10 letters>.` then, `distance` tokens after
//! the span starts, `again: ` — the model must reproduce the span (scored by teacher forcing, see
//! [`crate::retrieval`]). Accuracy vs the span's distance, at a given prompt length.

use burn::prelude::*;
use pezoo_models::corpus::SplitMix;
use pezoo_models::{ByteTokenizer, Lm};
use serde::{Deserialize, Serialize};

use crate::retrieval::{Probe, filler, score};

/// Letters in the span (as in the training corpus).
pub const SPAN: usize = 10;
/// Shortest distance: `span.\n` + `again: ` with no filler between.
pub const MIN_DISTANCE: usize = SPAN + 2 + 7;

/// A prompt that, followed by its span, fills exactly `len` tokens; the span's first letter sits
/// `distance` tokens before the answer's first letter. `None` if it does not fit.
pub fn copy_prompt(rng: &mut SplitMix, len: usize, distance: usize) -> Option<Probe> {
    let tok = ByteTokenizer;
    if distance < MIN_DISTANCE {
        return None;
    }
    let pre = len.checked_sub(SPAN + distance + 6)?; // 6 = "copy: "
    let span: String = (0..SPAN).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
    let mut prompt = filler(rng, pre);
    prompt.extend(tok.encode(&format!("copy: {span}.\n")));
    prompt.extend(filler(rng, distance - MIN_DISTANCE));
    prompt.extend(tok.encode("again: "));
    Some(Probe { prompt, answer: tok.encode(&span) })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CopyCell {
    pub length: usize,
    pub distance: usize,
    pub trials: usize,
    /// Fraction of spans reproduced exactly.
    pub accuracy: f64,
    /// Fraction of letters predicted given the correct prefix.
    pub token_accuracy: f64,
}

/// Distances for a prompt of `len` tokens: powers of two from 32, and the longest that fits.
pub fn distances(len: usize) -> Vec<usize> {
    let max = len.saturating_sub(SPAN + 6);
    let mut d: Vec<usize> = (5..).map(|k| 1usize << k).take_while(|&d| d < max).collect();
    if max >= MIN_DISTANCE {
        d.push(max);
    }
    d
}

/// Accuracy per (length, distance), `trials` spans each.
pub fn copy_grid(
    model: &Lm,
    lengths: &[usize],
    trials: usize,
    seed: u64,
    query_block: Option<usize>,
    device: &Device,
) -> Vec<CopyCell> {
    let mut cells = Vec::new();
    for &length in lengths {
        let ds = distances(length);
        let probes: Vec<Vec<Probe>> = ds
            .iter()
            .map(|&d| {
                let mut rng = SplitMix(seed ^ 0xC0FF << 40 ^ (length as u64) << 20 ^ d as u64);
                (0..trials).filter_map(|_| copy_prompt(&mut rng, length, d)).collect()
            })
            .collect();
        let flat: Vec<Probe> = probes.iter().flatten().cloned().collect();
        let mut scores = score(model, &flat, query_block, device).into_iter();
        for (&distance, cell) in ds.iter().zip(&probes) {
            let s: Vec<_> = scores.by_ref().take(cell.len()).collect();
            let n = s.len().max(1) as f64;
            cells.push(CopyCell {
                length,
                distance,
                trials: s.len(),
                accuracy: s.iter().filter(|x| x.exact).count() as f64 / n,
                token_accuracy: s.iter().map(|x| x.token_accuracy).sum::<f64>() / n,
            });
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_prompt_places_the_span_at_the_distance() {
        let tok = ByteTokenizer;
        for (len, d) in [(64usize, 19usize), (128, 32), (128, 112), (1000, 512)] {
            let p = copy_prompt(&mut SplitMix(d as u64), len, d).unwrap();
            assert_eq!(p.prompt.len() + p.answer.len(), len);
            let span = tok.decode(&p.answer);
            assert!(span.len() == SPAN && span.bytes().all(|b| b.is_ascii_lowercase()), "{span}");
            let text = tok.decode(&p.prompt);
            let at = text.find(&format!("copy: {span}.\n")).expect("the span is stated") + 6;
            assert_eq!(p.prompt.len() - at, d, "distance from the span to the answer");
            assert!(text.ends_with("\nagain: ") || text == format!("copy: {span}.\nagain: "), "{text}");
            assert_eq!(text.matches("copy:").count(), 1);
        }
        assert!(copy_prompt(&mut SplitMix(0), 100, 18).is_none(), "below the minimum distance");
        assert!(copy_prompt(&mut SplitMix(0), 100, 85).is_none(), "does not fit");
        assert!(copy_prompt(&mut SplitMix(0), 100, 84).is_some(), "just fits");
        assert_eq!(distances(128), vec![32, 64, 112]);
    }
}
