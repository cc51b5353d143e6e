//! The CSVs of `zoo compare`: every number per run, and `summary.csv` per encoding with its
//! interval (perplexity: the range over seeds; retrieval: 95% Wilson over pooled prompts).

use std::path::Path;

use anyhow::Result;

use super::{RunResults, copy, copy_counts, passkey, passkey_counts, pooled, ppl, u_score, values, wilson};
use crate::write_atomic;

/// One CSV file, written atomically; fields quoted by the `csv` crate where needed.
struct Csv(::csv::Writer<Vec<u8>>);

impl Csv {
    fn new(header: &[&str]) -> Self {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        w.write_record(header).expect("writing to memory");
        Self(w)
    }
    fn row(&mut self, fields: Vec<String>) {
        self.0.write_record(&fields).expect("writing to memory");
    }
    fn save(self, path: &Path) -> Result<()> {
        let bytes = self.0.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
        write_atomic(path, &bytes)
    }
}

/// Formats a list of values as CSV fields.
macro_rules! fields {
    ($($v:expr),* $(,)?) => { vec![$($v.to_string()),*] };
}

pub(super) fn write_csvs(
    out: &Path,
    runs: &[RunResults],
    encodings: &[String],
    lengths: &[usize],
) -> Result<()> {
    let mut results = Csv::new(&[
        "encoding",
        "seed",
        "multiple",
        "length",
        "loss",
        "ppl",
        "passkey",
        "passkey_trials",
        "copy",
        "copy_trials",
        "u_score",
        "tokens_per_s",
        "compute_path",
    ]);
    let mut pk = Csv::new(&["encoding", "seed", "length", "depth", "trials", "correct", "accuracy"]);
    let mut cp =
        Csv::new(&["encoding", "seed", "length", "distance", "trials", "accuracy", "token_accuracy"]);
    let mut pp = Csv::new(&["encoding", "seed", "length", "bucket", "loss"]);
    let mut bd = Csv::new(&["encoding", "seed", "length", "distance", "weight"]);
    let mut pr = Csv::new(&[
        "encoding",
        "seed",
        "length",
        "layer",
        "pair",
        "theta",
        "q_norm",
        "k_norm",
        "mean",
        "u_contrast",
        "u_share",
        "positional_share",
        "activated",
        "position_independent",
        "hope_hf_dropped",
    ]);
    let nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
    for r in runs {
        let (e, s) = (&r.encoding, r.seed);
        for l in &r.eval {
            let m = l.multiple;
            let (pn, cn) = (passkey_counts(r, m).map_or(0, |c| c.1), copy_counts(r, m).map_or(0, |c| c.1));
            results.row(fields![
                e,
                s,
                m,
                l.length,
                l.loss,
                l.ppl,
                nan(passkey(r, m)),
                pn,
                nan(copy(r, m)),
                cn,
                nan(u_score(r, m)),
                r.tokens_per_s,
                r.compute_path
            ]);
            for (b, v) in l.per_position.iter().enumerate() {
                pp.row(fields![e, s, l.length, b, v]);
            }
        }
        for c in &r.passkey {
            pk.row(fields![e, s, c.length, c.depth, c.trials, c.correct, c.accuracy]);
        }
        for c in &r.copy {
            cp.row(fields![e, s, c.length, c.distance, c.trials, c.accuracy, c.token_accuracy]);
        }
        for a in &r.analyze {
            for (d, w) in a.by_distance.iter().enumerate() {
                bd.row(fields![e, s, a.length, d, w]);
            }
            for l in &a.pairs {
                for p in &l.pairs {
                    pr.row(fields![
                        e,
                        s,
                        a.length,
                        l.layer,
                        p.pair,
                        p.theta,
                        p.q_norm,
                        p.k_norm,
                        p.mean,
                        p.u_contrast,
                        p.u_share,
                        p.positional_share,
                        p.activated,
                        p.position_independent,
                        p.hope_hf_dropped
                    ]);
                }
            }
        }
    }
    // Per encoding and multiple: perplexity mean and range over seeds (n = seeds), retrieval
    // pooled over seeds with its 95% Wilson interval (n = prompts).
    let mut sm = Csv::new(&["encoding", "multiple", "metric", "value", "lo", "hi", "n", "interval"]);
    for e in encodings {
        for &m in lengths {
            let v: Vec<f64> = values(runs, e, |r| ppl(r, m)).into_iter().filter(|x| x.is_finite()).collect();
            if !v.is_empty() {
                let (lo, hi) =
                    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                sm.row(fields![e, m, "ppl", mean, lo, hi, v.len(), "seed range"]);
            }
            for (name, f) in
                [("passkey", passkey_counts as fn(&RunResults, usize) -> _), ("copy", copy_counts)]
            {
                let (k, n) = pooled(runs, e, m, f);
                if n > 0 {
                    let (lo, hi) = wilson(k, n);
                    sm.row(fields![e, m, name, k as f64 / n as f64, lo, hi, n, "wilson95"]);
                }
            }
        }
    }
    for (name, csv) in [
        ("results.csv", results),
        ("passkey.csv", pk),
        ("copy.csv", cp),
        ("per_position.csv", pp),
        ("attention_by_distance.csv", bd),
        ("pairs.csv", pr),
        ("summary.csv", sm),
    ] {
        csv.save(&out.join(name))?;
    }
    Ok(())
}
