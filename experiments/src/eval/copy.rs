//! The copy task in the corpus's own format: `copy: <10 letters>.`, filler, then `again:` — the
//! model must reproduce the span, whose first answer token sits `distance` tokens after the same
//! token of the stated span (scored by teacher forcing, see [`super::retrieval`]). Accuracy vs
//! distance, at a given prompt length.

use crate::run::results::CopyCell;
use pezoo_models::Tokenizer;
use pezoo_models::corpus::SplitMix;

use super::retrieval::{Probe, Subject, filler, score};

/// Letters in the span (as in the training corpus).
pub const SPAN: usize = 10;

/// A prompt that, followed by its span, fills exactly `len` tokens. The line `copy: <span>.` is
/// stated, filler follows, then `again:`; the answer is ` <span>` (tokenised as in the corpus's
/// `again: <span>.`; a whitespace-only first token joins the prompt, see [`Probe::new`]), whose
/// first token sits `distance` tokens after the same token of the stated span. `None` if it does not fit or `distance` is shorter than the line's tail
/// plus `again:`.
pub fn copy_prompt(rng: &mut SplitMix, len: usize, distance: usize, tok: &Tokenizer) -> Option<Probe> {
    let span: String = (0..SPAN).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
    let (head, body, tail) = (tok.encode("copy:"), tok.encode(&format!(" {span}")), tok.encode(".\n"));
    let question = tok.encode("again:");
    let gap = distance.checked_sub(body.len() + tail.len() + question.len())?;
    let pre = len.checked_sub(head.len() + distance + body.len())?;
    let mut prompt = filler(rng, pre, tok);
    prompt.extend(head.iter().chain(&body).chain(&tail));
    prompt.extend(filler(rng, gap, tok));
    prompt.extend(question);
    Some(Probe::new(prompt, body, tok))
}

/// Distances for a prompt of `len` tokens: powers of two from 32, and the longest that fits a
/// span of up to `SPAN + 1` tokens (every letter and the space its own token).
pub fn distances(len: usize, tok: &Tokenizer) -> Vec<usize> {
    let max = len.saturating_sub(tok.encode("copy:").len() + SPAN + 1);
    let mut d: Vec<usize> = (5..).map(|k| 1usize << k).take_while(|&d| d < max).collect();
    if max >= 32 {
        d.push(max);
    }
    d
}

/// Accuracy per (length, distance), `trials` spans each.
pub fn copy_grid(subject: Subject, lengths: &[usize], trials: usize, seed: u64) -> Vec<CopyCell> {
    let mut cells = Vec::new();
    for &length in lengths {
        let ds = distances(length, subject.tok);
        let probes: Vec<Vec<Probe>> = ds
            .iter()
            .map(|&d| {
                let mut rng = SplitMix(seed ^ 0xC0FF << 40 ^ (length as u64) << 20 ^ d as u64);
                (0..trials).filter_map(|_| copy_prompt(&mut rng, length, d, subject.tok)).collect()
            })
            .collect();
        let flat: Vec<Probe> = probes.iter().flatten().cloned().collect();
        let mut scores = score(subject.model, &flat, subject.query_block, subject.device).into_iter();
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
        for tok in [Tokenizer::Bytes, crate::testing::small_bpe()] {
            for (len, d) in [(64usize, 19usize), (128, 32), (128, 112), (1000, 512)] {
                let p = copy_prompt(&mut SplitMix(d as u64), len, d, &tok).unwrap();
                assert_eq!(p.prompt.len() + p.answer.len(), len);
                let span = tok.decode(&p.answer);
                let letters = span.trim_start();
                assert!(letters.len() == SPAN && letters.bytes().all(|b| b.is_ascii_lowercase()), "{span}");
                let text = tok.decode(&p.prompt);
                assert!(text.contains(&format!("copy: {letters}.\n")), "the span is stated: {text}");
                // the span's tokens appear in the prompt exactly `d` tokens before the answer
                let at = p.prompt.len() - d;
                assert_eq!(&p.prompt[at..at + p.answer.len()], &p.answer[..], "distance");
                let again = text.trim_end_matches(' ');
                assert!(again.ends_with("\nagain:") && again.len() + 1 >= text.len(), "{text}");
                assert_eq!(text.matches("copy:").count(), 1);
            }
        }
        let bytes = Tokenizer::Bytes;
        assert!(copy_prompt(&mut SplitMix(0), 100, 18, &bytes).is_none(), "below the minimum distance");
        assert!(copy_prompt(&mut SplitMix(0), 100, 85, &bytes).is_none(), "does not fit");
        assert!(copy_prompt(&mut SplitMix(0), 100, 84, &bytes).is_some(), "just fits");
        assert_eq!(distances(128, &bytes), vec![32, 64, 112]);
    }
}
