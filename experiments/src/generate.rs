//! `zoo generate`: continues a prompt with a trained run's model and tokenizer, one token at a
//! time through a KV cache (greedy, or sampled with a temperature and top-k from a seed).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use clap::Args;
use pezoo_models::corpus::SplitMix;
use pezoo_models::{KvCache, Lm};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A `zoo train --out` directory.
    #[arg(long)]
    pub run: PathBuf,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate (stops early at the end-of-document token).
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// 0 = greedy; otherwise sample from softmax(logits / temperature).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample among the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// The next token from `logits` (`[vocab]` values): argmax when `temperature` is 0 (lowest id on
/// ties), else a draw from the tempered softmax restricted to the `top_k` most likely.
pub fn pick(logits: &[f32], temperature: f64, top_k: usize, rng: &mut SplitMix) -> u32 {
    if temperature == 0.0 {
        let best = logits.iter().enumerate().fold(0, |b, (i, &x)| if x > logits[b] { i } else { b });
        return best as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let top = logits[order[0]] as f64;
    let weights: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - top) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    order[order.len() - 1] as u32
}

/// Generates up to `n` tokens after `prompt` (token ids), calling `each` with every new token;
/// stops after `stop`.
pub fn generate(
    model: &Lm,
    prompt: &[u32],
    n: usize,
    stop: Option<u32>,
    (temperature, top_k, seed): (f64, usize, u64),
    device: &Device,
    mut each: impl FnMut(u32),
) -> Result<Vec<u32>> {
    let mut cache = KvCache::default();
    let mut rng = SplitMix(seed);
    let mut input: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let mut out = Vec::new();
    while out.len() < n {
        let len = input.len();
        let x = Tensor::<2, Int>::from_data(TensorData::new(std::mem::take(&mut input), [1, len]), device);
        let logits = model.forward_cached(x, &mut cache)?; // [1, len, vocab]
        let last = logits.narrow(1, len - 1, 1).reshape([-1]);
        let last = if temperature > 0.0 { softmax(last, 0).log() } else { last }; // finite, ordered
        let v = last.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
        let next = pick(&v, temperature, top_k, &mut rng);
        out.push(next);
        each(next);
        if Some(next) == stop {
            break;
        }
        input.push(next as i64);
    }
    Ok(out)
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature: {} is out of range (allowed: ≥ 0; 0 = greedy)", a.temperature);
    }
    let dir = crate::run::RunDir::new(&a.run);
    let cfg = dir.load_config()?;
    let tok = dir.tokenizer(&cfg)?;
    let prompt = tok.encode(&a.prompt);
    if prompt.is_empty() {
        bail!("--prompt: empty (give at least one character of text)");
    }
    let (device, _) = crate::device::select(&a.device)?;
    let model = dir.load_model(&cfg, &device)?;
    if let Err(e) = model.check_len(0, prompt.len() + a.tokens) {
        bail!("--tokens {} after a {}-token prompt: {e}", a.tokens, prompt.len());
    }
    print!("{}", a.prompt);
    // Everything generated so far is decoded each time and only what is new printed: a
    // character split over byte tokens prints whole, and decoders that treat a sequence's
    // first token specially (Llama's `▁`) see the whole sequence.
    let (mut generated, mut printed) = (Vec::<u32>::new(), String::new());
    let stdout = std::io::stdout();
    let mut show = |ids: &[u32], last: bool| {
        let text = tok.decode(ids);
        if (last || !text.ends_with('\u{FFFD}')) && text.starts_with(&printed) {
            print!("{}", &text[printed.len()..]);
            let _ = stdout.lock().flush();
            printed = text;
        }
    };
    generate(&model, &prompt, a.tokens, Some(tok.eos()), (a.temperature, a.top_k, a.seed), &device, |t| {
        if t != tok.eos() {
            generated.push(t);
            show(&generated, false);
        }
    })?;
    show(&generated, true);
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_argmax_and_sampling_follows_the_tempered_softmax() {
        let logits = [0.0f32, 2.0, 1.0, 2.0];
        assert_eq!(pick(&logits, 0.0, 0, &mut SplitMix(0)), 1, "argmax, lowest id on ties");
        let mut rng = SplitMix(5);
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[pick(&logits, 0.5, 0, &mut rng) as usize] += 1;
        }
        // softmax(logits / 0.5) = e^{0, 4, 2, 4} / Σ
        let z: f64 = [0.0f64, 4.0, 2.0, 4.0].iter().map(|x| x.exp()).sum();
        for (i, c) in counts.iter().enumerate() {
            let p = [0.0f64, 4.0, 2.0, 4.0][i].exp() / z;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((*c as f64 / n as f64 - p).abs() < 5.0 * sd + 1e-4, "token {i}: {c} of {n}, p {p}");
        }
        // top-k 2 keeps ids 1 and 3 only
        let mut rng = SplitMix(6);
        assert!((0..1000).all(|_| matches!(pick(&logits, 1.0, 2, &mut rng), 1 | 3)));
    }

    #[test]
    fn cached_greedy_generation_matches_the_uncached_oracle() {
        let device = crate::device::cpu();
        device.seed(3);
        let toml =
            "d_model = 32\nn_layers = 2\nn_heads = 2\nmax_seq_len = 64\n[encoding]\nkind = \"hope-hyp\"\n";
        let cfg: pezoo_models::ModelConfig = toml::from_str(toml).unwrap();
        let model = Lm::new(&cfg, &device).unwrap();
        let prompt: Vec<u32> = (0..11).map(|i| (i * 29 % 256) as u32).collect();
        let fast = generate(&model, &prompt, 12, None, (0.0, 0, 0), &device, |_| {}).unwrap();
        let slow = crate::eval::retrieval::generate(&model, &prompt, 12, None, &device);
        assert_eq!(fast, slow);
    }
}
