//! What passkey and copy share: filler text in the corpus's grammar, and scoring of a prompt's
//! expected answer in **one teacher-forced forward pass**. Greedy decoding reproduces the answer
//! exactly iff, given the correct prefix, the argmax at every answer position is the answer token
//! — so exact match needs no token-by-token generation (tested against [`generate`]).

use burn::prelude::*;
use pezoo_models::corpus::{SplitMix, synthetic_document};
use pezoo_models::{Lm, Tokenizer};

/// `n` tokens of filler: synthetic sentences with no facts, copies or questions (no `code`, no
/// `:`), each line tokenised whole (as the same text would be inside a document), ending at a
/// line break so that whatever follows starts a line. The first line may be cut.
pub fn filler(rng: &mut SplitMix, n: usize, tok: &Tokenizer) -> Vec<u32> {
    let mut f = Vec::new();
    while f.len() < n {
        let doc = synthetic_document(rng, 400);
        for line in doc.lines().filter(|l| !l.contains("code") && !l.contains(':')) {
            f.extend(tok.encode(&format!("{line}\n")));
        }
    }
    f.split_off(f.len() - n)
}

/// What the retrieval grids evaluate: a model, its tokenizer, and how to run it.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub model: &'a Lm,
    pub tok: &'a Tokenizer,
    /// Longest query block of attention (memory at long lengths).
    pub query_block: Option<usize>,
    pub device: &'a Device,
}

/// A prompt and the answer the model should continue it with.
#[derive(Debug, Clone)]
pub struct Probe {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
}

impl Probe {
    /// A probe whose answer starts at its first non-whitespace token: leading tokens that are
    /// only whitespace (the byte tokenizer's ` ` of ` 4821`) move to the prompt, so that what is
    /// scored is the fact itself, whatever the tokenizer.
    pub fn new(mut prompt: Vec<u32>, answer: Vec<u32>, tok: &Tokenizer) -> Self {
        let lead = answer.iter().take_while(|&&t| tok.decode(&[t]).trim().is_empty()).count();
        let lead = lead.min(answer.len() - 1);
        prompt.extend(&answer[..lead]);
        Self { prompt, answer: answer[lead..].to_vec() }
    }
}

/// Pieces the retrieval prompts join (line ends, the fact, the question, the answer): a
/// tokenizer must tokenise them independently ([`Tokenizer::concatenates`]) for the assembled
/// prompts to equal the tokens of their text.
pub const JOINTS: &[&str] = &[
    "alice sees the red key in the hall.\n",
    "the code of bob is 4821.\n",
    "recall: the code of bob is",
    " 4821",
    "copy:",
    " abcdefghij",
    ".\n",
    "again:",
    " abcdefghij",
];

/// How a model did on one probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Greedy generation would reproduce the whole answer.
    pub exact: bool,
    /// Fraction of answer tokens predicted (argmax) given the correct prefix.
    pub token_accuracy: f64,
}

/// Scores each probe with teacher forcing; probes of equal prompt and answer length share a batch.
pub fn score(model: &Lm, probes: &[Probe], query_block: Option<usize>, device: &Device) -> Vec<Score> {
    let mut out = vec![Score { exact: false, token_accuracy: 0.0 }; probes.len()];
    let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        assert!(!p.prompt.is_empty() && !p.answer.is_empty(), "probe {i}: empty prompt or answer");
        let key = (p.prompt.len(), p.answer.len());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    for ((np, na), idx) in groups {
        let len = np + na - 1;
        let per_batch = (8192 / len).max(1);
        for chunk in idx.chunks(per_batch) {
            let data: Vec<i64> = chunk
                .iter()
                .flat_map(|&i| probes[i].prompt.iter().chain(&probes[i].answer[..na - 1]).map(|&t| t as i64))
                .collect();
            let x = Tensor::<2, Int>::from_data(TensorData::new(data, [chunk.len(), len]), device);
            let (logits, _) = model.forward_full(x, 0, query_block, false);
            // the predictions of the answer tokens: positions np−1 .. np+na−2
            let pred = logits.narrow(1, np - 1, na).argmax(2); // [b, na, 1]
            let pred = pred.into_data().convert::<i64>().try_to_vec::<i64>().expect("int predictions");
            for (j, &i) in chunk.iter().enumerate() {
                let hits = probes[i]
                    .answer
                    .iter()
                    .zip(&pred[j * na..(j + 1) * na])
                    .filter(|(a, p)| **a as i64 == **p)
                    .count();
                out[i] = Score { exact: hits == na, token_accuracy: hits as f64 / na as f64 };
            }
        }
    }
    out
}

/// Greedy continuation of `tokens` by `n` tokens, one forward pass per token (the slow path that
/// [`score`] replaces; kept as its test oracle).
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
        let next = logits.slice([0..1, len - 1..len]).reshape([-1]).argmax(0).into_scalar::<i64>();
        out.push(next as u32);
        seq.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pezoo_models::ModelConfig;

    #[test]
    fn filler_has_the_length_ends_a_line_and_has_no_facts() {
        for tok in [Tokenizer::Bytes, crate::testing::small_bpe()] {
            for n in [1usize, 37, 500] {
                let f = filler(&mut SplitMix(n as u64), n, &tok);
                assert_eq!(f.len(), n);
                let text = tok.decode(&f);
                assert!(text.ends_with('\n'), "{text:?}");
                assert!(!text.contains("code") && !text.contains(':'), "{text}");
            }
        }
    }

    /// Teacher-forced exact match equals greedy generation, on an untrained model whose argmax
    /// is arbitrary: probes answered with the model's own greedy output score exact, and a probe
    /// whose answer differs in its last token scores (n−1)/n.
    #[test]
    fn teacher_forced_scoring_agrees_with_greedy_generation() {
        let device = crate::device::cpu();
        device.seed(3);
        let toml = "d_model = 32\nn_layers = 2\nn_heads = 2\nmax_seq_len = 64\n[encoding]\nkind = \"rope\"\n";
        let cfg: ModelConfig = toml::from_str(toml).unwrap();
        let model = Lm::new(&cfg, &device).unwrap();
        let mut probes = Vec::new();
        for (i, len) in [9usize, 9, 23].into_iter().enumerate() {
            let prompt = filler(&mut SplitMix(i as u64 + 10), len, &Tokenizer::Bytes);
            let answer = generate(&model, &prompt, 5, None, &device);
            probes.push(Probe { prompt, answer });
        }
        let mut wrong = probes[2].clone();
        let last = wrong.answer.last_mut().unwrap();
        *last = (*last + 1) % 256;
        probes.push(wrong);
        let s = score(&model, &probes, Some(4), &device);
        for p in &s[..3] {
            assert_eq!(*p, Score { exact: true, token_accuracy: 1.0 });
        }
        assert!(!s[3].exact && (s[3].token_accuracy - 0.8).abs() < 1e-12, "{:?}", s[3]);
    }
}
