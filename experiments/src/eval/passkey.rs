//! Passkey retrieval in the corpus's own format: a fact `the code of <name> is <dddd>.` hidden at
//! depth d of filler sentences, recalled at the end (`recall: the code of <name> is `); the model
//! must produce the 4 digits greedily (scored by teacher forcing, see [`super::retrieval`]).
//! Accuracy over a grid of lengths × depths.

use crate::run::results::PasskeyCell;
use pezoo_models::Tokenizer;
use pezoo_models::corpus::SplitMix;

use super::retrieval::{Probe, Subject, filler, score};

/// One prompt, its expected answer, and where the fact sentence starts.
#[derive(Debug, Clone)]
pub struct Passkey {
    pub probe: Probe,
    pub key_start: usize,
}

/// A prompt that, followed by its answer (` dddd`: the space and 4 digits, tokenised as in the
/// corpus's `… is dddd.`), fills exactly `len` tokens (so it fits any encoding evaluated at
/// `len`), with the fact at relative depth `depth` ∈ [0, 1] of the filler (0: first, 1: right
/// before the question). Fact and question each start a line.
pub fn passkey_prompt(rng: &mut SplitMix, len: usize, depth: f64, tok: &Tokenizer) -> Option<Passkey> {
    let names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    let name = names[rng.below(names.len())];
    let code = 1000 + rng.below(9000);
    let fact = tok.encode(&format!("the code of {name} is {code}.\n"));
    let question = tok.encode(&format!("recall: the code of {name} is"));
    let answer = tok.encode(&format!(" {code}"));
    let filler_len = len.checked_sub(fact.len() + question.len() + answer.len())?;
    let key_start = (depth.clamp(0.0, 1.0) * filler_len as f64).round() as usize;
    let mut prompt = filler(rng, key_start, tok);
    prompt.extend(&fact);
    prompt.extend(filler(rng, filler_len - key_start, tok));
    prompt.extend(&question);
    Some(Passkey { probe: Probe::new(prompt, answer, tok), key_start })
}

/// Accuracy for each (length, depth): `trials` prompts each, exact match of the 4 digits.
pub fn passkey_grid(
    subject: Subject,
    lengths: &[usize],
    depths: &[f64],
    trials: usize,
    seed: u64,
) -> Vec<PasskeyCell> {
    let mut cells = Vec::new();
    for &length in lengths {
        let mut probes = Vec::new();
        for &depth in depths {
            let mut rng = SplitMix(seed ^ (length as u64) << 20 ^ (depth * 1000.0) as u64);
            let cell: Vec<Probe> = (0..trials)
                .filter_map(|_| passkey_prompt(&mut rng, length, depth, subject.tok))
                .map(|p| p.probe)
                .collect();
            probes.push(cell);
        }
        let flat: Vec<Probe> = probes.iter().flatten().cloned().collect();
        let mut scores = score(subject.model, &flat, subject.query_block, subject.device).into_iter();
        for (&depth, cell) in depths.iter().zip(&probes) {
            let correct = scores.by_ref().take(cell.len()).filter(|s| s.exact).count();
            cells.push(PasskeyCell {
                length,
                depth,
                trials: cell.len(),
                correct,
                accuracy: correct as f64 / cell.len().max(1) as f64,
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
        for tok in [Tokenizer::Bytes, crate::testing::small_bpe()] {
            for (len, depth) in [(200usize, 0.0), (300, 0.5), (512, 1.0), (1000, 0.25)] {
                let mut rng = SplitMix(len as u64);
                let p = passkey_prompt(&mut rng, len, depth, &tok).unwrap();
                let (prompt, answer) = (&p.probe.prompt, tok.decode(&p.probe.answer));
                assert_eq!(prompt.len() + p.probe.answer.len(), len);
                let code = answer.trim_start();
                if matches!(tok, Tokenizer::Bytes) {
                    assert_eq!(answer, code, "bytes: the space joins the prompt (`… is `)");
                }
                assert!(code.len() == 4 && code.parse::<u32>().is_ok_and(|c| (1000..10000).contains(&c)));
                let text = tok.decode(prompt);
                let at = tok.decode(&prompt[p.key_start..]);
                assert!(at.starts_with("the code of "), "{at}");
                let name = at[12..].split(' ').next().unwrap();
                assert!(at.starts_with(&format!("the code of {name} is {code}.\n")), "{at}");
                let before = tok.decode(&prompt[..p.key_start]);
                assert!(before.is_empty() || before.ends_with('\n'), "the fact starts a line");
                assert!(
                    text.ends_with(&format!("\nrecall: the code of {name} is"))
                        || text.ends_with(&format!("\nrecall: the code of {name} is "))
                );
                assert!(!answer.trim().is_empty() && !tok.decode(&p.probe.answer[..1]).trim().is_empty());
                assert_eq!(text.matches("the code of").count(), 2, "one fact, one question");
                let fact_len = tok.encode(&format!("the code of {name} is {code}.\n")).len();
                let question_len = tok.encode(&format!("recall: the code of {name} is")).len();
                let answer_len = tok.encode(&format!(" {code}")).len();
                let filler = len - fact_len - question_len - answer_len;
                assert_eq!(p.key_start, (depth * filler as f64).round() as usize, "depth {depth}");
            }
            assert!(passkey_prompt(&mut SplitMix(1), 10, 0.5, &tok).is_none(), "too short for the fact");
        }
    }
}
