//! Passkey retrieval in the corpus's own format: a fact `the code of <name> is <dddd>.` hidden at
//! depth d of filler sentences, recalled at the end (`recall: the code of <name> is `); the model
//! must generate the 4 digits greedily. Accuracy over a grid of lengths × depths.

use burn::prelude::*;
use pezoo_models::corpus::{SplitMix, synthetic_document};
use pezoo_models::{ByteTokenizer, Lm};
use serde::{Deserialize, Serialize};

/// One prompt: tokens, the expected answer, and where the fact sentence starts.
#[derive(Debug, Clone)]
pub struct Passkey {
    pub tokens: Vec<u32>,
    pub answer: String,
    pub key_start: usize,
}

/// Builds a prompt of exactly `len` tokens with the fact at relative depth `depth` ∈ [0, 1]
/// (0: right after the start, 1: right before the question).
pub fn passkey_prompt(rng: &mut SplitMix, len: usize, depth: f64) -> Option<Passkey> {
    let tok = ByteTokenizer;
    let names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    let name = names[rng.below(names.len())];
    let code = 1000 + rng.below(9000);
    let fact = tok.encode(&format!("the code of {name} is {code}.\n"));
    let question = tok.encode(&format!("recall: the code of {name} is "));
    let filler_len = len.checked_sub(fact.len() + question.len())?;
    // filler: the corpus's local grammar, cut at sentence boundaries, with no other facts
    let mut filler = Vec::new();
    while filler.len() < filler_len {
        let doc = synthetic_document(rng, 400);
        for line in doc.lines().filter(|l| !l.contains("code") && !l.contains(':')) {
            filler.extend(tok.encode(line));
            filler.push(b'\n' as u32);
        }
    }
    filler.truncate(filler_len);
    let key_start = (depth.clamp(0.0, 1.0) * filler_len as f64).round() as usize;
    let mut tokens = filler[..key_start].to_vec();
    tokens.extend(&fact);
    tokens.extend(&filler[key_start..]);
    tokens.extend(&question);
    Some(Passkey { tokens, answer: code.to_string(), key_start })
}

/// Greedy continuation of `tokens` by `n` tokens (the model sees the prompt from position 0).
pub fn generate(
    model: &Lm,
    tokens: &[u32],
    n: usize,
    query_block: Option<usize>,
    device: &Device,
) -> Vec<u32> {
    let mut seq: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let len = seq.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, len]), device);
        let (logits, _) = model.forward_full(x, 0, query_block, false);
        let last = logits.slice([0..1, len - 1..len]).reshape([-1]);
        let next = last.argmax(0).into_scalar::<i64>();
        out.push(next as u32);
        seq.push(next);
    }
    out
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PasskeyCell {
    pub length: usize,
    pub depth: f64,
    pub trials: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// Accuracy for each (length, depth): `trials` prompts each, exact match of the 4 digits.
pub fn passkey_grid(
    model: &Lm,
    lengths: &[usize],
    depths: &[f64],
    trials: usize,
    seed: u64,
    query_block: Option<usize>,
    device: &Device,
) -> Vec<PasskeyCell> {
    let tok = ByteTokenizer;
    let mut cells = Vec::new();
    for &length in lengths {
        for &depth in depths {
            let mut rng = SplitMix(seed ^ (length as u64) << 20 ^ (depth * 1000.0) as u64);
            let mut correct = 0;
            let mut done = 0;
            for _ in 0..trials {
                let Some(p) = passkey_prompt(&mut rng, length, depth) else { continue };
                let got = tok.decode(&generate(model, &p.tokens, p.answer.len(), query_block, device));
                correct += usize::from(got == p.answer);
                done += 1;
            }
            cells.push(PasskeyCell {
                length,
                depth,
                trials: done,
                correct,
                accuracy: correct as f64 / done.max(1) as f64,
            });
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_the_length_the_fact_at_its_depth_and_the_question_last() {
        let tok = ByteTokenizer;
        for (len, depth) in [(200usize, 0.0), (300, 0.5), (512, 1.0), (1000, 0.25)] {
            let mut rng = SplitMix(len as u64);
            let p = passkey_prompt(&mut rng, len, depth).unwrap();
            assert_eq!(p.tokens.len(), len);
            let text = tok.decode(&p.tokens);
            let at = tok.decode(&p.tokens[p.key_start..]);
            assert!(
                at.starts_with("the code of ") && at[12..].contains(&format!(" is {}.", p.answer)),
                "{at}"
            );
            let name = at[12..].split(' ').next().unwrap();
            assert!(text.ends_with(&format!("recall: the code of {name} is ")));
            assert_eq!(text.matches("the code of").count(), 2, "one fact, one question");
            let fact_len = at.find('\n').unwrap() + 1;
            let question_len = format!("recall: the code of {name} is ").len();
            let expected = (depth * (len - fact_len - question_len) as f64).round() as usize;
            assert_eq!(p.key_start, expected, "depth {depth}");
        }
        assert!(passkey_prompt(&mut SplitMix(1), 10, 0.5).is_none(), "too short for the fact");
    }
}
