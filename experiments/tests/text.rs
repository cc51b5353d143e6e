//! Real text through the `zoo` binary: a learned BPE on a gzipped .jsonl corpus, evaluation on
//! another corpus in bits per byte, and generation.

mod common;
use common::{MICRO, run, tmp, zoo};

/// Real text end to end: a gzipped .jsonl corpus, a learned BPE saved with the run, evaluation on
/// another corpus in bits per byte, and generation through the run's tokenizer.
#[test]
fn bpe_run_on_jsonl_evaluates_on_another_corpus_and_generates() {
    use std::io::Write;
    let dir = tmp("bpe");
    let mut rng = pezoo_models::corpus::SplitMix(11);
    let mut jsonl = String::new();
    for _ in 0..30 {
        let doc = pezoo_models::corpus::synthetic_document(&mut rng, 900);
        jsonl.push_str(&format!("{}\n", serde_json::json!({ "content": doc })));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(jsonl.as_bytes()).unwrap();
    std::fs::write(dir.join("corpus.jsonl.gz"), gz.finish().unwrap()).unwrap();
    let other: String = (0..4).map(|_| pezoo_models::corpus::synthetic_document(&mut rng, 900)).collect();
    std::fs::write(dir.join("other.txt"), other).unwrap();
    std::fs::write(dir.join("micro.toml"), MICRO.replace("[data]", "[data]\ntext_field = \"content\""))
        .unwrap();
    let run_dir = dir.join("run");
    let out = zoo()
        .current_dir(&dir)
        .args(["train", "--config", "micro.toml", "--data", "corpus.jsonl.gz", "--tokenizer", "bpe:300"])
        .args(["--steps", "20", "--out", run_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(cfg.contains("vocab_size = 300") && cfg.contains("tokenizer = \"bpe:300\""), "{cfg}");
    assert!(run_dir.join("tokenizer.json").exists());

    // evaluated from another directory, on another corpus: per-token and per-byte numbers
    let r = run_dir.to_str().unwrap();
    let other = dir.join("other.txt");
    let out = run(&[
        "eval",
        "--run",
        r,
        "--lengths",
        "1",
        "--data",
        other.to_str().unwrap(),
        "--passkey-trials",
        "0",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval_other.json")).unwrap()).unwrap();
    assert!(
        eval["spec"]["data"].as_str().unwrap().ends_with("other.txt"),
        "the corpus is saved with the result"
    );
    let one = &eval["perplexity"][0];
    let (loss, bpb) = (one["loss"].as_f64().unwrap(), one["bits_per_byte"].as_f64().unwrap());
    // a BPE token stands for more than one byte: fewer bits per byte than bits per token
    assert!(bpb > 0.0 && bpb < loss / std::f64::consts::LN_2, "loss {loss} nats/token, {bpb} bits/byte");
    assert!(!run_dir.join("eval.json").exists(), "the held-out results are not overwritten");
    // text the run trained on is refused or left out, never silently evaluated
    let out = run(&["eval", "--run", r, "--lengths", "1", "--data", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("overlaps the run's training data"), "{err}");

    // greedy generation is deterministic and continues the prompt
    let generate = || run(&["generate", "--run", r, "--prompt", "the code of", "--tokens", "8"]);
    let (a, b) = (generate(), generate());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.starts_with("the code of") && text.len() > "the code of".len(), "{text}");
    assert_eq!(a.stdout, b.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}
