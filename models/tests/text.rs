//! Real text: the tokenizers (bytes, learned BPE, a tokenizer.json) and the corpus formats
//! (.txt, .jsonl, gzip, directories), held to what they must preserve: the text itself, its byte
//! count, and a deterministic split.

use std::io::Write;

use pezoo_models::corpus::{SyntheticStyle, documents};
use pezoo_models::{Corpus, Tokenizer, TokenizerSpec, Tokens, token_stream};

fn books_like() -> Vec<String> {
    // varied English with repeats (so merges have counts), digits, punctuation and non-ASCII
    let mut rng = pezoo_models::corpus::SplitMix(7);
    (0..40)
        .map(|i| {
            let mut d = pezoo_models::corpus::synthetic_document(&mut rng, 800);
            d.push_str(&format!("Miss Woodhouse said “{i} times, naïve café” — 42.\n"));
            d
        })
        .collect()
}

#[test]
fn spec_parses_and_names_the_field_on_bad_input() {
    assert_eq!(TokenizerSpec::parse("bytes").unwrap(), TokenizerSpec::Bytes);
    assert_eq!(TokenizerSpec::parse("bpe:4096").unwrap(), TokenizerSpec::Bpe(4096));
    assert_eq!(
        TokenizerSpec::parse("x/tokenizer.json").unwrap(),
        TokenizerSpec::File("x/tokenizer.json".into())
    );
    for bad in ["bpe:", "bpe:12", "bpe:-5", "bpe:4k", "bpe:99999999", ""] {
        let e = TokenizerSpec::parse(bad).unwrap_err().to_string();
        assert!(e.starts_with("data.tokenizer: "), "{bad}: {e}");
    }
}

#[test]
fn learned_bpe_has_the_vocabulary_round_trips_and_counts_every_byte() {
    let docs = books_like();
    let tok = Tokenizer::learn_bpe(&docs, 400).unwrap();
    assert_eq!(tok.vocab_size(), 400);
    let again = Tokenizer::learn_bpe(&docs, 400).unwrap();
    let sample = "the code of alice is 4821.\nrecall: naïve “café” — 7\n\n  x";
    for text in [sample, docs[3].as_str(), "", "日本語 text \u{1F600}"] {
        let (ids, bytes) = tok.encode_with_bytes(text);
        assert_eq!(tok.decode(&ids), text, "round trip");
        assert_eq!(bytes.iter().map(|&b| b as usize).sum::<usize>(), text.len(), "bytes of {text:?}");
        assert_eq!(ids.len(), bytes.len());
        assert_eq!(again.encode(text), ids, "learning is deterministic");
        // each token's bytes are those its prefix decodes to: running sums match wherever the
        // prefix is whole characters, and the last needs no top-up
        let mut sum = 0usize;
        for i in 0..ids.len() {
            sum += bytes[i] as usize;
            let prefix = tok.decode(&ids[..=i]);
            if !prefix.contains('\u{FFFD}') {
                assert_eq!(sum, prefix.len(), "bytes of the first {} tokens of {text:?}", i + 1);
            }
        }
        assert!(ids.iter().all(|&i| (i as usize) < 400 && i != tok.eos()));
    }
    // merges happened: fewer tokens than bytes on text like the training text
    let n = tok.encode(&docs[5]).len();
    assert!(n * 2 < docs[5].len(), "{n} tokens for {} bytes", docs[5].len());
    // a stream: documents joined by the separator, which stands for no bytes
    let t = Tokens::from_docs(&docs[..3], &tok);
    assert_eq!(t.ids.iter().filter(|&&i| i == tok.eos()).count(), 3);
    let total: usize = docs[..3].iter().map(|d| d.len()).sum();
    assert_eq!(t.bytes.iter().map(|&b| b as usize).sum::<usize>(), total);
    assert_eq!(t.ids.len(), t.bytes.len());
}

#[test]
fn bytes_and_byte_level_bpe_tokenise_line_and_word_pieces_independently() {
    let pieces = ["the code of bob is", " 4821", ".\n", "recall:", " abc", "again:", " xyz"];
    assert!(Tokenizer::Bytes.concatenates(&pieces));
    assert!(Tokenizer::learn_bpe(&books_like(), 400).unwrap().concatenates(&pieces));
    // a piece boundary inside a word is not independent once the word is a merge
    let tok = Tokenizer::learn_bpe(&books_like(), 400).unwrap();
    assert!(!tok.concatenates(&["the co", "de of"]), "{:?}", tok.encode("the code of"));
}

#[test]
fn a_vocabulary_the_data_cannot_fill_is_one_clear_error() {
    let e = Tokenizer::learn_bpe(&["abab abab abab".to_string()], 5000).unwrap_err().to_string();
    assert!(e.starts_with("data.tokenizer: `bpe:5000`: the training split fills only"), "{e}");
}

#[test]
fn a_saved_tokenizer_loads_back_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::learn_bpe(&books_like(), 300).unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    let loaded = Tokenizer::from_file(&path).unwrap();
    let text = "alice sees the red key in the hall.\n";
    assert_eq!(loaded.encode(text), tok.encode(text));
    assert_eq!((loaded.eos(), loaded.vocab_size()), (tok.eos(), 300));
    // the whole training text of the retrieval preset's corpus, not one sentence: a resumed run's
    // tokens (from the saved file) must equal the fresh run's (its data.json is checked)
    let lookup = Corpus::synthetic_styled(SyntheticStyle::Lookup, 3, 40, 1500);
    let learned = Tokenizer::learn_bpe(&lookup.train, 512).unwrap();
    learned.save(&path).unwrap();
    let reloaded = Tokenizer::from_file(&path).unwrap();
    let (a, b) = (token_stream(&lookup.train, &learned), token_stream(&lookup.train, &reloaded));
    assert!(a.len() > 10_000 && a == b, "{} tokens learned, {} reloaded", a.len(), b.len());

    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{ not json").unwrap();
    let e = Tokenizer::from_file(&junk).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: not a tokenizer.json", junk.display())), "{e}");
    let e = Tokenizer::from_file(&dir.path().join("missing.json")).unwrap_err().to_string();
    assert!(e.contains("missing.json: no such tokenizer file"), "{e}");
}

#[test]
fn byte_tokens_count_one_byte_each() {
    let t = Tokens::from_docs(&["héllo".into(), "ab".into()], &Tokenizer::Bytes);
    assert_eq!(t.ids.len(), 6 + 1 + 2 + 1);
    assert_eq!(t.bytes, vec![1, 1, 1, 1, 1, 1, 0, 1, 1, 0]);
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn corpus_formats_txt_jsonl_and_gzip_read_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<String> =
        (0..12).map(|i| format!("document {i}: “text” with a line\nand another {i}.")).collect();
    let jsonl: String =
        docs.iter().map(|d| serde_json::json!({"id": 1, "body": d}).to_string() + "\n").collect();
    std::fs::write(dir.path().join("a.jsonl"), &jsonl).unwrap();
    std::fs::write(dir.path().join("b.jsonl.gz"), gz(jsonl.as_bytes())).unwrap();
    std::fs::write(dir.path().join("c.txt.gz"), gz("\u{feff}one gzipped book".as_bytes())).unwrap();
    std::fs::write(dir.path().join("ignored.csv"), "x,y").unwrap();

    assert_eq!(documents(&dir.path().join("a.jsonl"), "body").unwrap(), docs);
    assert_eq!(documents(&dir.path().join("b.jsonl.gz"), "body").unwrap(), docs);
    let all = documents(dir.path(), "body").unwrap();
    assert_eq!(all.len(), 25);
    assert_eq!(all[24], "one gzipped book", "BOM stripped, files in name order");

    let c = Corpus::from_path(dir.path(), 10, "body").unwrap();
    assert_eq!((c.train.len(), c.valid.len()), (23, 2), "the last ~10% of documents held out");
    assert_eq!(c.valid[1], "one gzipped book");
    let again = Corpus::from_path(dir.path(), 10, "body").unwrap();
    assert_eq!(again.valid, c.valid, "deterministic split");
}

#[test]
fn bad_data_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("nofield.jsonl"), "{\"text\": \"ok\"}\n{\"other\": 1}\n").unwrap();
    std::fs::write(p("notjson.jsonl"), "{\"text\": \"ok\"}\nnot json\n").unwrap();
    std::fs::write(p("bad.txt.gz"), b"not gzip at all").unwrap();
    std::fs::write(p("latin1.txt"), b"caf\xe9").unwrap();
    std::fs::write(p("empty.txt"), "  \n").unwrap();
    let cases = [
        ("nofield.jsonl", "line 2: no string field `text`"),
        ("notjson.jsonl", "line 2: not JSON"),
        ("bad.txt.gz", "not a readable gzip file"),
        ("latin1.txt", "not UTF-8 text (invalid byte at offset 3)"),
        ("empty.txt", "holds no text"),
    ];
    for (name, want) in cases {
        let e = documents(&p(name), "text").unwrap_err().to_string();
        assert!(e.starts_with(&p(name).display().to_string()) && e.contains(want), "{name}: {e}");
        assert_eq!(e.lines().count(), 1);
    }
    let e = Corpus::from_path(&p("notjson.jsonl"), 10, "text").unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
}
