//! The report's "What this shows" lines, generated from the numbers, so `report.md` reads on
//! its own. Each states a comparison and whether the seeds (or the Wilson intervals) separate it;
//! encodings without a value at a length are named as such, never silently left out.

use crate::run::results::RunResults;

use super::{pooled, ppl, u_score, values, wilson};

/// Mean, min, max and count over an encoding's seeds of `f`, finite values only.
#[derive(Debug, Clone, Copy)]
struct Stats {
    mean: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stats(runs: &[RunResults], enc: &str, f: impl Fn(&RunResults) -> Option<f64>) -> Option<Stats> {
    let v: Vec<f64> = values(runs, enc, f).into_iter().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| Stats {
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        n: v.len(),
    })
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// " Not evaluated at m×: a, b." when some are missing.
fn missing(m: usize, v: &[String]) -> String {
    if v.is_empty() { String::new() } else { format!(" Not evaluated at {m}×: {}.", v.join(", ")) }
}

/// Which encodings' perplexity at the longest length is at most 10% above their 1× perplexity,
/// and which has the lowest perplexity at 1× and at the longest length (and whether every seed
/// of it is below every seed of the next).
pub fn perplexity(encodings: &[String], lengths: &[usize], runs: &[RunResults]) -> String {
    let (Some(&first), Some(&last)) = (lengths.first(), lengths.last()) else { return String::new() };
    let mut out = String::from("**What this shows.**");
    if last > first {
        let (mut within, mut beyond, mut absent) = (Vec::new(), Vec::new(), Vec::new());
        for e in encodings {
            let (Some(a), Some(b)) = (stats(runs, e, |r| ppl(r, first)), stats(runs, e, |r| ppl(r, last)))
            else {
                absent.push(e.clone());
                continue;
            };
            let ratio = b.mean / a.mean;
            if ratio <= 1.1 {
                within.push(e.clone());
            } else {
                beyond.push(format!("{e} (×{ratio:.2})"));
            }
        }
        if within.len() + beyond.len() > 0 {
            out.push_str(&format!(
                " At {last}× at most 10% above their {first}× perplexity (means over seeds): {}; more: {}.",
                list(&within),
                list(&beyond)
            ));
        }
        out.push_str(&missing(last, &absent));
    }
    for m in if last > first { vec![first, last] } else { vec![first] } {
        let mut ranked: Vec<(String, Stats)> =
            encodings.iter().filter_map(|e| Some((e.clone(), stats(runs, e, |r| ppl(r, m))?))).collect();
        ranked.sort_by(|a, b| a.1.mean.total_cmp(&b.1.mean));
        match ranked.as_slice() {
            [(best, b), (next, n), ..] => {
                let sep = if b.n < 2 || n.n < 2 {
                    "one seed of either, so no spread to compare"
                } else if b.max < n.min {
                    "every seed of it below every seed of the next"
                } else {
                    "the seed ranges overlap"
                };
                out.push_str(&format!(
                    " Lowest at {m}×: {best} ({:.3}), then {next} ({:.3}): {sep}.",
                    b.mean, n.mean
                ));
            }
            [(best, b)] => out.push_str(&format!(" At {m}× only {best} was evaluated ({:.3}).", b.mean)),
            [] => {}
        }
    }
    out + "\n\n"
}

/// The most accurate encoding per length of a retrieval task (counts pooled over seeds), and
/// whether its 95% Wilson interval clears the runner-up's (ties are said). Empty when every
/// cell is zero (the table's line says so).
pub fn retrieval(
    encodings: &[String],
    lengths: &[usize],
    runs: &[RunResults],
    f: fn(&RunResults, usize) -> Option<(usize, usize)>,
) -> String {
    let mut parts = Vec::new();
    for &m in lengths {
        let mut cells: Vec<(String, usize, usize)> = encodings
            .iter()
            .map(|e| {
                let (k, n) = pooled(runs, e, m, f);
                (e.clone(), k, n)
            })
            .filter(|c| c.2 > 0)
            .collect();
        let rate = |c: &(String, usize, usize)| c.1 as f64 / c.2 as f64;
        cells.sort_by(|a, b| rate(b).total_cmp(&rate(a)));
        let Some(top) = cells.first() else { continue };
        if top.1 == 0 {
            continue;
        }
        let tied: Vec<&str> =
            cells.iter().filter(|c| c.1 * top.2 == top.1 * c.2).map(|c| c.0.as_str()).collect();
        let (best, k, n) = top;
        parts.push(match cells.iter().find(|c| c.1 * top.2 != top.1 * c.2) {
            _ if cells.len() == 1 => format!("at {m}× only {best} was scored: {k}/{n}"),
            _ if tied.len() > 1 => format!("at {m}× tied: {} ({k}/{n} or the same rate)", tied.join(", ")),
            Some((next, k2, n2)) => {
                let clear = wilson(*k, *n).0 > wilson(*k2, *n2).1;
                format!(
                    "at {m}× {best} {k}/{n} vs {next} {k2}/{n2}: {}",
                    if clear { "the intervals do not overlap" } else { "the intervals overlap" }
                )
            }
            None => format!("at {m}× {best} {k}/{n}"),
        });
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("**What this shows.** Most accurate (pooled over seeds) {}.\n\n", parts.join("; "))
}

/// Which encodings' attention is U-shaped (U-score > 1) at each analysed length: on every seed, on none,
/// or on some; those not analysed at a length are named.
pub fn u_shape(encodings: &[String], analyzed: &[usize], runs: &[RunResults]) -> String {
    let mut parts = Vec::new();
    for &m in analyzed {
        let (mut every, mut none, mut some, mut absent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in encodings {
            match stats(runs, e, |r| u_score(r, m)) {
                Some(s) if s.min > 1.0 => every.push(e.clone()),
                Some(s) if s.max <= 1.0 => none.push(e.clone()),
                Some(_) => some.push(e.clone()),
                None => absent.push(e.clone()),
            }
        }
        if every.len() + none.len() + some.len() == 0 {
            continue;
        }
        parts.push(format!(
            "U-shaped (U-score > 1) at {m}× on every seed: {}; on none: {}; on some: {}.{}",
            list(&every),
            list(&none),
            list(&some),
            missing(m, &absent)
        ));
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("**What this shows.** {}\n\n", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run with perplexity `ppl[i]` at multiple 2^i of a 32-token training length, `k` of 20
    /// passkey prompts right at 1×, and U-score `u` at 1×.
    fn run(enc: &str, seed: u64, ppl: &[f64], k: usize, u: f64) -> RunResults {
        let eval = ppl
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::from_value(
                    serde_json::json!({"multiple": 1 << i, "length": 32 << i, "windows": 1,
                    "loss": p.ln(), "ppl": p, "per_position": [p.ln()]}),
                )
                .unwrap()
            })
            .collect();
        let passkey = vec![crate::run::results::PasskeyCell {
            length: 32,
            depth: 0.5,
            trials: 20,
            correct: k,
            accuracy: k as f64 / 20.0,
        }];
        let analyze = vec![
            serde_json::from_value(
                serde_json::json!({"length": 32, "by_distance": [], "layers": [], "mean_u_score": u}),
            )
            .unwrap(),
        ];
        RunResults {
            encoding: enc.into(),
            seed,
            eval,
            passkey,
            copy: Vec::new(),
            analyze,
            tokens_per_s: 1.0,
            compute_path: "reference".into(),
        }
    }

    #[test]
    fn findings_state_what_the_numbers_show_and_whether_seeds_separate_it() {
        let encs: Vec<String> = ["rope", "alibi", "nope"].map(String::from).to_vec();
        let runs = vec![
            run("rope", 0, &[10.0, 30.0], 18, 1.2),
            run("rope", 1, &[10.4, 34.0], 17, 1.3),
            run("alibi", 0, &[10.6, 10.8], 6, 0.9),
            run("alibi", 1, &[11.0, 11.4], 5, 1.1),
            run("nope", 0, &[12.0, 40.0], 0, 0.8),
            run("nope", 1, &[12.2, 44.0], 0, 0.7),
        ];
        let p = perplexity(&encs, &[1, 2], &runs);
        // alibi: 11.1 / 10.8 = 1.03; rope 32 / 10.2 = 3.14; nope 42 / 12.1 = 3.47
        assert!(
            p.contains("At 2× at most 10% above their 1× perplexity (means over seeds): alibi; more: rope (×3.14), nope (×3.47)."),
            "{p}"
        );
        // 1×: rope 10.0–10.4 vs alibi 10.6–11.0: separated; 2×: alibi then rope, separated too
        assert!(
            p.contains("Lowest at 1×: rope (10.200), then alibi (10.800): every seed of it below"),
            "{p}"
        );
        assert!(p.contains("Lowest at 2×: alibi (11.100), then rope (32.000): every seed"), "{p}");
        let close =
            vec![run("a", 0, &[10.0], 0, 1.0), run("a", 1, &[10.5], 0, 1.0), run("b", 0, &[10.3], 0, 1.0)];
        let q = perplexity(&["a".into(), "b".into()], &[1], &close);
        assert!(q.contains("Lowest at 1×: a (10.250), then b (10.300): one seed of either"), "{q}");
        let two = vec![
            run("a", 0, &[10.0], 0, 1.0),
            run("a", 1, &[10.5], 0, 1.0),
            run("b", 0, &[10.3], 0, 1.0),
            run("b", 1, &[10.4], 0, 1.0),
        ];
        let q = perplexity(&["a".into(), "b".into()], &[1], &two);
        assert!(q.contains("Lowest at 1×: a (10.250), then b (10.350): the seed ranges overlap"), "{q}");
        // an encoding without the longest length is named, not dropped
        let short = vec![run("a", 0, &[10.0, 10.5], 0, 1.0), run("b", 0, &[10.2], 0, 1.0)];
        let q = perplexity(&["a".into(), "b".into()], &[1, 2], &short);
        assert!(q.contains("perplexity (means over seeds): a; more: none. Not evaluated at 2×: b."), "{q}");
        assert!(q.contains("At 2× only a was evaluated (10.500)."), "{q}");

        // passkey at 1×: rope 35/40 [0.74, 0.95] vs alibi 11/40 [0.16, 0.43]: clear
        let r = retrieval(&encs, &[1], &runs, crate::report::passkey_counts);
        assert!(
            r.contains("(pooled over seeds) at 1× rope 35/40 vs alibi 11/40: the intervals do not overlap"),
            "{r}"
        );
        let near = vec![run("a", 0, &[10.0], 11, 1.0), run("b", 0, &[10.0], 9, 1.0)];
        let r = retrieval(&["a".into(), "b".into()], &[1], &near, crate::report::passkey_counts);
        assert!(r.contains("at 1× a 11/20 vs b 9/20: the intervals overlap"), "{r}");
        let tie = vec![run("a", 0, &[10.0], 9, 1.0), run("b", 0, &[10.0], 9, 1.0)];
        let r = retrieval(&["a".into(), "b".into()], &[1], &tie, crate::report::passkey_counts);
        assert!(r.contains("at 1× tied: a, b"), "{r}");
        let none = vec![run("nope", 0, &[12.0], 0, 1.0)];
        assert_eq!(
            retrieval(&encs, &[1], &none, crate::report::passkey_counts),
            "",
            "all zero: the table says so"
        );

        let u = u_shape(&encs, &[1, 2], &runs);
        assert!(u.contains("at 1× on every seed: rope; on none: nope; on some: alibi."), "{u}");
        assert!(!u.contains("2×"), "nothing analysed at 2×: no clause: {u}");
    }
}
