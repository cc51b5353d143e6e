//! Text for training and evaluation: the embedded synthetic corpus (no files needed) or UTF-8
//! text from a file or a directory of `.txt` (BOM and Project Gutenberg framing stripped) and
//! `.jsonl` files, optionally gzip-compressed, split deterministically by document into train
//! and held-out validation text.

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    /// A data or tokenizer file that cannot be used.
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
    /// A configuration field out of range.
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn bad(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Bad { path: path.display().to_string(), message: message.into() }
}

/// Documents split into train and validation.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub name: String,
    pub train: Vec<String>,
    pub valid: Vec<String>,
}

/// SplitMix64: a tiny deterministic generator (the corpus must not depend on a crate's RNG).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const NAMES: &[&str] =
    &["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "oscar", "peggy"];
const VERBS: &[&str] = &["sees", "takes", "opens", "finds", "holds", "drops", "moves", "likes"];
const COLORS: &[&str] = &["red", "blue", "green", "black", "white", "gold", "grey", "brown"];
const THINGS: &[&str] = &["key", "door", "lamp", "box", "book", "coin", "map", "ring"];
const PLACES: &[&str] = &["hall", "garden", "tower", "market", "river", "forest"];

/// One synthetic document (~`len` bytes): facts stated early (`the code of bob is 4821.`) and
/// recalled at the end, local facts recalled a few sentences later, local grammar in between, and
/// spans to copy (`copy: …` then `again: …`) — so both perplexity and retrieval (at short and long
/// range) are meaningful.
pub fn synthetic_document(rng: &mut SplitMix, len: usize) -> String {
    let mut doc = String::new();
    let facts: Vec<(&str, u32)> = (0..3).map(|_| (rng.pick(NAMES), 1000 + rng.below(9000) as u32)).collect();
    for (name, code) in &facts {
        doc.push_str(&format!("the code of {name} is {code}.\n"));
    }
    let mut pending_copy: Option<String> = None;
    let mut local: Vec<(&str, u32)> = Vec::new();
    while doc.len() < len {
        match rng.below(12) {
            0 if pending_copy.is_none() => {
                let span: String = (0..10).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
                doc.push_str(&format!("copy: {span}.\n"));
                pending_copy = Some(span);
            }
            1 if pending_copy.is_some() => {
                doc.push_str(&format!("again: {}.\n", pending_copy.take().unwrap()));
            }
            // local facts, recalled a few sentences later (retrieval within a training window)
            2 if local.len() < 2 => {
                let fact = (rng.pick(NAMES), 1000 + rng.below(9000) as u32);
                doc.push_str(&format!("the code of {} is {}.\n", fact.0, fact.1));
                local.push(fact);
            }
            3 if !local.is_empty() => {
                let (name, code) = local.remove(rng.below(local.len()));
                doc.push_str(&format!("recall: the code of {name} is {code}.\n"));
            }
            _ => {
                let (n, v, c, t, p) =
                    (rng.pick(NAMES), rng.pick(VERBS), rng.pick(COLORS), rng.pick(THINGS), rng.pick(PLACES));
                doc.push_str(&format!("{n} {v} the {c} {t} in the {p}.\n"));
            }
        }
    }
    if let Some(span) = pending_copy {
        doc.push_str(&format!("again: {span}.\n"));
    }
    for (name, code) in facts.iter().rev() {
        doc.push_str(&format!("recall: the code of {name} is {code}.\n"));
    }
    doc
}

/// Which synthetic documents to generate (`[data] synthetic_style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticStyle {
    /// [`synthetic_document`]: mostly local grammar, facts recalled at the document's end.
    #[default]
    Mixed,
    /// [`retrieval_document`]: dense in facts recalled and spans copied within a few sentences.
    Retrieval,
    /// [`lookup_document`]: one fact and one span pending at a time, each recalled up to
    /// [`LOOKUP_WITHIN`] sentences later: the situation of the passkey and copy probes.
    Lookup,
}

/// Longest a fact waits for its recall, in sentences, in [`retrieval_document`].
pub const RECALL_WITHIN: usize = 10;

/// One document (~`len` bytes) dense in retrieval, in the same sentence grammar as
/// [`synthetic_document`]: each fact (`the code of bob is 4821.`, its name distinct from the
/// facts still pending) is recalled 1..=[`RECALL_WITHIN`] sentences later, each copied span
/// 1..=4 sentences later, filler in between: half of the codes' digits and of the spans'
/// letters are repeats that only looking back predicts, several times the density of the mixed
/// style (whether a model learns to retrieve from it within a CPU budget is not shown yet).
pub fn retrieval_document(rng: &mut SplitMix, len: usize) -> String {
    let mut doc = String::new();
    let mut facts: Vec<(&str, u32, usize)> = Vec::new(); // name, code, sentence it is due
    let mut copy: Option<(String, usize)> = None;
    let mut step = 0;
    while doc.len() < len {
        step += 1;
        if let Some(i) = facts.iter().position(|f| f.2 <= step) {
            let (name, code, _) = facts.remove(i);
            doc.push_str(&format!("recall: the code of {name} is {code}.\n"));
            continue;
        }
        if copy.as_ref().is_some_and(|c| c.1 <= step) {
            doc.push_str(&format!("again: {}.\n", copy.take().unwrap().0));
            continue;
        }
        match rng.below(10) {
            0..=2 if facts.len() < 6 => {
                let free: Vec<&str> =
                    NAMES.iter().copied().filter(|n| facts.iter().all(|f| f.0 != *n)).collect();
                let (name, code) = (rng.pick(&free), 1000 + rng.below(9000) as u32);
                doc.push_str(&format!("the code of {name} is {code}.\n"));
                facts.push((name, code, step + 1 + rng.below(RECALL_WITHIN)));
            }
            3..=6 if copy.is_none() => {
                let span: String = (0..10).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
                doc.push_str(&format!("copy: {span}.\n"));
                copy = Some((span, step + 1 + rng.below(4)));
            }
            _ => {
                let (n, v, c, t, p) =
                    (rng.pick(NAMES), rng.pick(VERBS), rng.pick(COLORS), rng.pick(THINGS), rng.pick(PLACES));
                doc.push_str(&format!("{n} {v} the {c} {t} in the {p}.\n"));
            }
        }
    }
    facts.sort_by_key(|f| f.2);
    for (name, code, _) in facts {
        doc.push_str(&format!("recall: the code of {name} is {code}.\n"));
    }
    if let Some((span, _)) = copy {
        doc.push_str(&format!("again: {span}.\n"));
    }
    doc
}

/// Default longest wait of a fact or span for its recall, in sentences, in [`lookup_document`]
/// (`[data] recall_within`): about one 128-token window of BPE text (a sentence is ~9 tokens).
pub const LOOKUP_WITHIN: usize = 14;

/// One document (~`len` bytes) in the same sentence grammar as [`synthetic_document`], with at
/// most one fact and one copied span pending at any time. A fact is stated with probability 1/2
/// on a sentence with none pending, else a span with 1/4 when none is pending (so facts come
/// about 1.6× as often as spans: they are the harder lookup, a statement's `is` must not be
/// copied, a recall's must), each recalled 1..=`within` sentences later,
/// log-uniformly (a span due with a recall waits one more): short recalls are common (a small
/// model forms its induction circuit on them within a CPU budget; with uniform waits over a whole
/// window it did not in 4 M tokens). Waits near `within` span about a whole 128-token window, so
/// the longest are rarely inside one training window. The latest fact or span is always the one
/// asked for, as in the passkey and copy probes.
pub fn lookup_document(rng: &mut SplitMix, len: usize, within: usize) -> String {
    let within = within.max(1);
    // ⌊(within+1)^u⌋ for u uniform in [0, 1): P(wait ≤ w) = ln(w+1) / ln(within+1)
    let wait = |rng: &mut SplitMix| {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((within as f64 + 1.0).powf(u) as usize).clamp(1, within)
    };
    let mut doc = String::new();
    let mut fact: Option<(&str, u32, usize)> = None; // name, code, sentence it is due
    let mut copy: Option<(String, usize)> = None;
    let mut step = 0;
    while doc.len() < len {
        step += 1;
        if let Some((name, code, _)) = fact.take_if(|f| f.2 <= step) {
            doc.push_str(&format!("recall: the code of {name} is {code}.\n"));
        } else if let Some((span, _)) = copy.take_if(|c| c.1 <= step) {
            doc.push_str(&format!("again: {span}.\n"));
        } else if fact.is_none() && rng.below(2) == 0 {
            let (name, code) = (rng.pick(NAMES), 1000 + rng.below(9000) as u32);
            doc.push_str(&format!("the code of {name} is {code}.\n"));
            fact = Some((name, code, step + wait(rng)));
        } else if copy.is_none() && rng.below(4) == 0 {
            let span: String = (0..10).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
            doc.push_str(&format!("copy: {span}.\n"));
            copy = Some((span, step + wait(rng)));
        } else {
            let (n, v, c, t, p) =
                (rng.pick(NAMES), rng.pick(VERBS), rng.pick(COLORS), rng.pick(THINGS), rng.pick(PLACES));
            doc.push_str(&format!("{n} {v} the {c} {t} in the {p}.\n"));
        }
    }
    if let Some((name, code, _)) = fact {
        doc.push_str(&format!("recall: the code of {name} is {code}.\n"));
    }
    if let Some((span, _)) = copy {
        doc.push_str(&format!("again: {span}.\n"));
    }
    doc
}

impl Corpus {
    /// The embedded synthetic corpus (mixed style): `docs` documents of ~`doc_len` bytes; every
    /// 10th is held out.
    pub fn synthetic(seed: u64, docs: usize, doc_len: usize) -> Self {
        Self::synthetic_styled(SyntheticStyle::Mixed, seed, docs, doc_len)
    }

    /// The embedded synthetic corpus in `style` (the lookup style with [`LOOKUP_WITHIN`]).
    pub fn synthetic_styled(style: SyntheticStyle, seed: u64, docs: usize, doc_len: usize) -> Self {
        Self::synthetic_within(style, seed, docs, doc_len, LOOKUP_WITHIN)
    }

    /// The embedded synthetic corpus in `style`; lookup facts and spans wait up to `within`
    /// sentences for their recall (the other styles ignore it).
    pub fn synthetic_within(
        style: SyntheticStyle,
        seed: u64,
        docs: usize,
        doc_len: usize,
        within: usize,
    ) -> Self {
        let mut rng = SplitMix(seed);
        let make = |rng: &mut SplitMix| match style {
            SyntheticStyle::Mixed => synthetic_document(rng, doc_len),
            SyntheticStyle::Retrieval => retrieval_document(rng, doc_len),
            SyntheticStyle::Lookup => lookup_document(rng, doc_len, within),
        };
        let all: Vec<String> = (0..docs).map(|_| make(&mut rng)).collect();
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for (i, d) in all.into_iter().enumerate() {
            if i % 10 == 9 { valid.push(d) } else { train.push(d) }
        }
        Self { name: "synthetic".into(), train, valid }
    }

    /// Text from `path`: a file or a directory of files (sorted by name), each `.txt` (one
    /// document) or `.jsonl` (one document per line, the string field `text_field`), optionally
    /// gzip-compressed (`.gz`). Several documents: the last ~10% (at least one) are held out.
    /// One document: its last 10% is held out.
    pub fn from_path(path: &Path, min_bytes: usize, text_field: &str) -> Result<Self, DataError> {
        let mut docs = documents(path, text_field)?;
        let total: usize = docs.iter().map(|d| d.len()).sum();
        if total < min_bytes {
            return Err(bad(path, format!("{total} bytes of text is too short (need ≥ {min_bytes})")));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if docs.len() == 1 {
            let d = docs.pop().unwrap();
            let mut cut = d.len() * 9 / 10;
            while !d.is_char_boundary(cut) {
                cut += 1;
            }
            return Ok(Self { name, train: vec![d[..cut].to_string()], valid: vec![d[cut..].to_string()] });
        }
        let n_valid = (docs.len() / 10).max(1);
        let valid = docs.split_off(docs.len() - n_valid);
        Ok(Self { name, train: docs, valid })
    }
}

/// The kinds of file [`documents`] reads, by name (`.gz` stripped first).
fn is_data_file(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".txt") || name.ends_with(".jsonl")
}

/// Every non-empty document under `path` (see [`Corpus::from_path`]), in file order.
pub fn documents(path: &Path, text_field: &str) -> Result<Vec<String>, DataError> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| bad(path, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_data_file(p))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(bad(path, "directory has no .txt, .jsonl, .txt.gz or .jsonl.gz files"));
        }
        v
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(bad(path, "no such file or directory"));
    };
    let mut docs = Vec::new();
    for f in &files {
        let mut bytes = std::fs::read(f).map_err(|e| bad(f, e.to_string()))?;
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match name.strip_suffix(".gz") {
            Some(inner) => {
                use std::io::Read;
                let mut out = Vec::new();
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_end(&mut out)
                    .map_err(|e| bad(f, format!("not a readable gzip file ({e})")))?;
                bytes = out;
                inner.to_string()
            }
            None => name,
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            bad(f, format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
        })?;
        if text.contains('\0') {
            return Err(bad(f, "looks binary (contains NUL bytes)"));
        }
        if name.ends_with(".jsonl") {
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let at = |m: String| bad(f, format!("line {}: {m}", i + 1));
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| at(format!("not JSON ({e})")))?;
                match v.get(text_field) {
                    Some(serde_json::Value::String(t)) if !t.trim().is_empty() => docs.push(t.clone()),
                    Some(serde_json::Value::String(_)) => {}
                    _ => {
                        return Err(at(format!(
                            "no string field `{text_field}` (data.text_field names the field that holds the text)"
                        )));
                    }
                }
            }
        } else {
            let text = strip_framing(&text);
            if !text.trim().is_empty() {
                docs.push(text.to_string());
            }
        }
    }
    if docs.is_empty() {
        return Err(bad(path, "holds no text"));
    }
    Ok(docs)
}

/// Strips a UTF-8 BOM and Project Gutenberg's header/footer when present.
pub fn strip_framing(text: &str) -> &str {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let start = text.find("*** START OF").and_then(|i| text[i..].find('\n').map(|j| i + j + 1)).unwrap_or(0);
    let body = &text[start..];
    let end = ["*** END OF", "End of the Project Gutenberg", "End of Project Gutenberg"]
        .iter()
        .filter_map(|m| body.find(m))
        .min()
        .unwrap_or(body.len());
    &body[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fact of a retrieval document is recalled once, with its code, within
    /// [`RECALL_WITHIN`] sentences (or at the end); names are distinct among pending facts;
    /// every copied span comes back.
    #[test]
    fn retrieval_documents_recall_each_fact_once_and_soon() {
        let mut rng = SplitMix(5);
        let (mut facts, mut copies) = (0, 0);
        for _ in 0..50 {
            let doc = retrieval_document(&mut rng, 1500);
            let lines: Vec<&str> = doc.lines().collect();
            let mut pending: Vec<(String, String, usize)> = Vec::new();
            let mut span: Option<String> = None;
            for (i, line) in lines.iter().enumerate() {
                if let Some(rest) = line.strip_prefix("recall: the code of ") {
                    let (name, code) = rest.trim_end_matches('.').split_once(" is ").unwrap();
                    let at = pending.iter().position(|p| p.0 == name).expect("recalls a pending fact");
                    let (_, said, when) = pending.remove(at);
                    assert_eq!(code, said, "recalls the code stated");
                    // a line per step; up to 6 other recalls and an `again` may be due at once
                    assert!(
                        i - when <= RECALL_WITHIN + 7 || i + 7 >= lines.len(),
                        "line {i}, stated at {when}"
                    );
                } else if let Some(rest) = line.strip_prefix("the code of ") {
                    let (name, code) = rest.trim_end_matches('.').split_once(" is ").unwrap();
                    assert!(pending.iter().all(|p| p.0 != name), "{name} is pending twice");
                    pending.push((name.into(), code.into(), i));
                    facts += 1;
                } else if let Some(s) = line.strip_prefix("copy: ") {
                    assert!(span.is_none());
                    span = Some(s.into());
                    copies += 1;
                } else if let Some(s) = line.strip_prefix("again: ") {
                    assert_eq!(Some(s.to_string()), span.take());
                }
            }
            assert!(pending.is_empty() && span.is_none(), "everything is recalled by the end");
        }
        assert!(facts > 50 * 6 && copies > 50 * 3, "dense: {facts} facts, {copies} copies");
    }

    /// Lookup documents: at most one fact and one span pending, each recalled with its own code
    /// or letters within [`LOOKUP_WITHIN`] sentences (or at the end), so the latest fact or span
    /// is always the one recalled; recall distances spread over the whole range.
    #[test]
    fn lookup_documents_recall_the_latest_fact_within_the_window() {
        let mut rng = SplitMix(9);
        let (mut waits, mut copies) = (Vec::new(), 0);
        for _ in 0..50 {
            let doc = lookup_document(&mut rng, 1500, LOOKUP_WITHIN);
            let lines: Vec<&str> = doc.lines().collect();
            // each pending item: (what was said, line it was said on)
            let mut fact: Option<(String, usize)> = None;
            let mut span: Option<(String, usize)> = None;
            for (i, line) in lines.iter().enumerate() {
                if let Some(rest) = line.strip_prefix("recall: the code of ") {
                    let (said, at) = fact.take().expect("a fact is pending");
                    assert_eq!(rest, said, "recalls the latest fact, name and code");
                    // recalls come first on their step: a fact never waits longer than `within`
                    assert!(i - at <= LOOKUP_WITHIN || i + 2 >= lines.len(), "line {i}, stated at {at}");
                    waits.push(i - at);
                } else if let Some(rest) = line.strip_prefix("the code of ") {
                    assert!(fact.is_none(), "two facts pending");
                    fact = Some((rest.to_string(), i));
                } else if let Some(s) = line.strip_prefix("copy: ") {
                    assert!(span.is_none(), "two spans pending");
                    span = Some((s.to_string(), i));
                    copies += 1;
                } else if let Some(s) = line.strip_prefix("again: ") {
                    let (said, at) = span.take().expect("a span is pending");
                    assert_eq!(s, said);
                    assert!(i - at <= LOOKUP_WITHIN + 1 || i + 2 >= lines.len());
                }
            }
            assert!(fact.is_none() && span.is_none(), "everything is recalled by the end");
        }
        assert!(waits.len() > 50 * 3 && copies > 50 * 3, "{} facts, {copies} copies", waits.len());
        // log-uniform: P(wait ≤ w) = ln(w+1)/ln(15) (waits cut short by the end of a document
        // count too: a small bias to short waits, well inside the tolerance)
        let short = waits.iter().filter(|&&w| w <= 3).count() as f64 / waits.len() as f64;
        assert!((short - (4f64).ln() / (15f64).ln()).abs() < 0.08, "P(wait ≤ 3) = {short}");
        for d in [1, LOOKUP_WITHIN / 2, LOOKUP_WITHIN] {
            assert!(waits.contains(&d), "a recall {d} sentences later");
        }
    }
}
