//! The LM with every encoding: causality, query-chunked attention = full attention, training
//! lowers the loss, config and data errors, tokenizer round trip.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use pezoo_encodings::EncodingConfig;
use pezoo_models::{ByteTokenizer, Corpus, Lm, LmBatcher, ModelConfig, RandomWindows, token_stream};

fn tiny(kind: &str) -> ModelConfig {
    let mut c: ModelConfig = toml::from_str(
        "d_model = 24\nn_layers = 2\nn_heads = 3\nmax_seq_len = 16\n[encoding]\nkind = \"rope\"",
    )
    .unwrap();
    c.encoding = EncodingConfig::default_for(kind).unwrap();
    c
}

fn tokens(b: usize, s: usize, seed: u64) -> Vec<i64> {
    let mut r = pezoo_models::corpus::SplitMix(seed);
    (0..b * s).map(|_| r.below(256) as i64).collect()
}

fn logits(m: &Lm, t: &[i64], b: usize, s: usize, block: Option<usize>, dev: &Device) -> Vec<f32> {
    let x = Tensor::<2, Int>::from_data(TensorData::new(t.to_vec(), [b, s]), dev);
    m.forward_full(x, 0, block, false).0.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn every_encoding_is_causal_and_chunked_attention_matches_full() {
    let dev = Device::flex();
    let (b, s, v) = (2, 13, pezoo_models::BYTE_VOCAB);
    for kind in EncodingConfig::KINDS {
        dev.seed(3);
        let m = Lm::new(&tiny(kind), &dev).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let t = tokens(b, s, 1);
        let full = logits(&m, &t, b, s, None, &dev);
        assert!(full.iter().all(|x| x.is_finite()), "{kind}: finite logits");
        let chunked = logits(&m, &t, b, s, Some(4), &dev);
        for (i, (a, c)) in full.iter().zip(&chunked).enumerate() {
            assert!((a - c).abs() < 1e-4, "{kind}: chunked attention differs at {i}: {a} vs {c}");
        }
        // change the last token: logits at earlier positions must not move
        let mut t2 = t.clone();
        t2[s - 1] = (t2[s - 1] + 1) % 256;
        let changed = logits(&m, &t2, b, s, None, &dev);
        for p in 0..s - 1 {
            for j in 0..v {
                let i = p * v + j;
                assert!((full[i] - changed[i]).abs() < 1e-5, "{kind}: position {p} sees the future");
            }
        }
        let last = (s - 1) * v;
        assert!(
            (0..v).any(|j| (full[last + j] - changed[last + j]).abs() > 1e-6),
            "{kind}: the last position must change"
        );
    }
}

#[test]
fn a_few_steps_lower_the_loss_for_every_encoding() {
    let dev = Device::flex().autodiff();
    let corpus = Corpus::synthetic(1, 20, 600);
    let stream = std::sync::Arc::new(token_stream(&corpus.train, &pezoo_models::Tokenizer::Bytes));
    let windows = RandomWindows::new(stream, 16, 8, 5);
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let items: Vec<Vec<u32>> = (0..8).map(|i| windows.get(i).unwrap()).collect();
    for kind in EncodingConfig::KINDS {
        dev.seed(7);
        let mut model = Lm::new(&tiny(kind), &dev).unwrap();
        let mut optim = AdamWConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..12 {
            let batch = LmBatcher.batch(items.clone(), &dev);
            let (loss, _) = model.loss(batch.inputs, batch.targets);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!((first - (260f32).ln()).abs() < 0.5, "{kind}: initial loss {first} ≈ ln 260");
        assert!(last < first - 1.0, "{kind}: loss {first} → {last} did not drop");
    }
}

#[test]
fn bad_model_configs_name_the_field() {
    let cases = [
        ("n_heads = 5\nd_model = 24", "model.n_heads"),
        ("d_model = 0", "model.d_model"),
        ("norm_eps = 2.0", "model.norm_eps"),
        ("d_model = 30\nn_heads = 2\n[encoding]\nkind = \"rope\"", "encoding.head_dim"),
        ("[encoding]\nkind = \"p-rope\"\np = 2.0", "encoding.p"),
    ];
    for (toml_text, field) in cases {
        let c: ModelConfig = toml::from_str(toml_text).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field) && !e.contains('\n'), "`{toml_text}` → `{e}`");
    }
    let learned = Lm::new(&tiny("learned"), &Device::flex()).unwrap();
    assert!(learned.check_len(0, 16).is_ok());
    let e = learned.check_len(0, 17).unwrap_err().to_string();
    assert!(e.contains("max_len") && e.contains("≤ 16"), "{e}");
}

#[test]
fn byte_tokenizer_round_trips_utf8() {
    let tok = ByteTokenizer;
    let mut r = pezoo_models::corpus::SplitMix(9);
    for _ in 0..200 {
        let s: String = (0..r.below(40))
            .map(|_| {
                loop {
                    let c = r.below(0x11_0000) as u32;
                    if let Some(ch) = char::from_u32(c) {
                        break ch;
                    }
                }
            })
            .collect();
        assert_eq!(tok.decode(&tok.encode(&s)), s);
    }
    assert_eq!(tok.encode("é"), vec![0xC3, 0xA9]);
}

#[test]
fn text_data_is_cleaned_split_by_document_and_bad_data_is_an_error() {
    let dir = std::env::temp_dir().join(format!("pezoo-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let body = "It is a truth universally acknowledged. ".repeat(50);
    for name in ["a", "b", "c"] {
        let framed = format!(
            "\u{feff}The Project Gutenberg eBook header\n*** START OF THE PROJECT GUTENBERG EBOOK {name} ***\n{name}: {body}\n*** END OF THE PROJECT GUTENBERG EBOOK ***\nlicense"
        );
        std::fs::write(dir.join(format!("{name}.txt")), framed).unwrap();
    }
    let c = Corpus::from_path(&dir, 100, "text").unwrap();
    assert_eq!((c.train.len(), c.valid.len()), (2, 1));
    assert!(c.valid[0].starts_with("c: It is") && c.train[0].starts_with("a: "), "held-out = last document");
    assert!(
        c.train.iter().all(|d| !d.contains("Gutenberg") && !d.contains('\u{feff}') && !d.contains("license"))
    );
    // one file: its last 10% is held out
    let one = Corpus::from_path(&dir.join("a.txt"), 100, "text").unwrap();
    assert_eq!(one.train.len() + one.valid.len(), 2);
    // errors
    std::fs::write(dir.join("bin.dat"), [0u8, 159, 146, 150]).unwrap();
    let e = Corpus::from_path(&dir.join("bin.dat"), 10, "text").unwrap_err().to_string();
    assert!(e.contains("not UTF-8") && e.contains("bin.dat"), "{e}");
    std::fs::write(dir.join("short.md"), "tiny").unwrap();
    assert!(
        Corpus::from_path(&dir.join("short.md"), 100, "text").unwrap_err().to_string().contains("too short")
    );
    assert!(
        Corpus::from_path(&dir.join("missing"), 10, "text").unwrap_err().to_string().contains("no such file")
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(Corpus::from_path(&empty, 10, "text").unwrap_err().to_string().contains("no .txt, .jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}
