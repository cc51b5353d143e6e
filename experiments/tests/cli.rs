//! The `zoo` binary end to end: inspect JSON, training with checkpoints, SIGKILL or SIGTERM and
//! resume, and one-line errors (exit code 1, no panic) for bad input.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{MICRO, assert_one_line_error, run, tmp, zoo};

#[test]
fn inspect_json_is_machine_readable() {
    let out = run(&[
        "inspect",
        "--encoding",
        "hope-hf",
        "--head-dim",
        "64",
        "--train-len",
        "512",
        "--distances",
        "0,3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rotated = v["pairs"].as_array().unwrap().iter().filter(|p| p["rotated"] == true).count();
    assert_eq!(rotated, 16);
    assert_eq!(v["distances"][1]["distance"], 3);
    assert_eq!(v["distances"][1]["matrices"].as_array().unwrap().len(), 32);
    assert_one_line_error(
        &run(&["inspect", "--encoding", "hope-hf", "--head-dim", "64"]),
        &["train_len", "required"],
    );
    assert_one_line_error(&run(&["inspect", "--encoding", "rope", "--head-dim", "7"]), &["head_dim", "even"]);
    assert_one_line_error(&run(&["inspect", "--encoding", "rotary"]), &["unknown encoding", "hope-hyp"]);

    // the envelope: every Δ up to 128, q = k = 1 gives Σ 2cos(Δθ_i) (= d at Δ = 0), a valid SVG
    let dir = tmp("envelope");
    let svg = dir.join("env.svg");
    let args = ["inspect", "--encoding", "rope", "--head-dim", "16", "--envelope", "--max-distance", "200"];
    let out = run(&[&args[..], &["--json", "--plot", svg.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d: Vec<u64> = v["distances"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!((&d[..3], d.len() > 129, *d.last().unwrap()), (&[0, 1, 2][..], true, 200));
    let fixed = |j: usize| v["curves"][0]["fixed"][j].as_f64().unwrap();
    // attention's scale: the content score over √head_dim = 4
    let want1: f64 = (0..8).map(|i| 2.0 * 10_000f64.powf(-2.0 * i as f64 / 16.0).cos()).sum::<f64>() / 4.0;
    assert!((fixed(0) - 4.0).abs() < 1e-9 && (fixed(1) - want1).abs() < 1e-9, "{} {}", fixed(0), fixed(1));
    assert_svg(&svg, &["q = k = 1", "random mean + std"]);
    assert_one_line_error(&run(&[&args[..], &["--samples", "0"]].concat()), &["--samples", "≥ 1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file parses as XML, is an `<svg>`, and its text includes each label.
fn assert_svg(path: &std::path::Path, labels: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "{}", path.display());
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).map(str::trim).collect();
    for l in labels {
        assert!(texts.contains(l), "{}: no label `{l}`", path.display());
    }
    let marks = doc.descendants().filter(|n| ["polyline", "rect"].contains(&n.tag_name().name())).count();
    assert!(marks > 2, "{}: nothing drawn", path.display());
}

fn last_row(csv: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(csv).unwrap();
    text.lines().last().unwrap().split(',').map(String::from).collect()
}

/// A safetensors file's tensors by name (raw bytes): the header's metadata order varies.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (s, e) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
            (k.clone(), data[s..e].to_vec())
        })
        .collect()
}

/// Rows of metrics.csv without the timing column (tokens/s differs between runs).
fn metric_rows(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    text.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect()
}

#[test]
fn train_is_killed_or_stopped_by_a_signal_and_resumes_from_its_checkpoint() {
    let dir = tmp("resume");
    let cfg = dir.join("micro.toml");
    // HoPE-Hyp (a learnable θ', read once per forward), two micro-batches per step and the
    // global clip: the parts of a step that could make a resumed run drift.
    let config = MICRO.replace("[train]", "[model.encoding]\nkind = \"hope-hyp\"\n[train]\ngrad_accum = 2");
    std::fs::write(&cfg, config).unwrap();
    let train = |out: &Path| -> Vec<String> {
        ["train", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--device", "flex"]
            .map(String::from)
            .to_vec()
    };
    // The reference: the same run, uninterrupted.
    let whole = dir.join("whole");
    let w = zoo().args(train(&whole)).output().unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));

    let out = dir.join("run");
    let args = train(&out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = zoo().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while !out.join("checkpoint/model-2.bpk").exists() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint written");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, possibly mid-write of the next checkpoint
    child.wait().unwrap();
    assert!(!out.join("model.safetensors").exists(), "killed before the end");

    // without --resume the run directory is protected
    let again = run(&args);
    assert_one_line_error(&again, &["--resume"]);

    // what trains must not change on resume (named by section); what is measured may
    let with = |name: &str, text: String| -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let config = std::fs::read_to_string(&cfg).unwrap();
    let other_training = with("decay.toml", config.replace("[train]", "[train]\nweight_decay = 0.05"));
    let config_path = cfg.to_str().unwrap();
    let using = |c: &str| -> Vec<String> {
        args.iter()
            .map(|&a| if a == config_path { c } else { a })
            .chain(["--resume"])
            .map(String::from)
            .collect()
    };
    let changed = zoo().args(using(&other_training)).output().unwrap();
    assert_one_line_error(&changed, &["--resume: [train] differs", "config.toml"]);
    // resuming on other tokens is refused (here the record is edited; in use, the corpus)
    let record = out.join("data.json");
    let kept = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, kept.replace("\"train_tokens\": ", "\"train_tokens\": 1")).unwrap();
    let state = || {
        let mut files: Vec<_> =
            walk(&out).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
        files.sort();
        files
    };
    let before = state();
    let other_data = zoo().args(using(config_path)).output().unwrap();
    assert_one_line_error(&other_data, &["--resume: the data differ", "data.json"]);
    assert!(state() == before, "a refused resume changes nothing in the run directory");
    std::fs::write(&record, kept).unwrap();
    let other_eval = with("eval.toml", format!("{config}\n[eval]\nlengths = [1, 3]\n"));
    let resumed = zoo().args(using(&other_eval)).output().unwrap();
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&resumed.stderr));
    assert!(stdout.contains("resuming from checkpoint"), "{stdout}");
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(saved.contains("lengths = [1, 3]"), "the new [eval] is saved: {saved}");
    // The same run: same data order, optimizer and schedule → bit-identical weights on flex,
    // and the same metric rows, none repeated.
    let bytes = |p: &Path| tensors(&p.join("model.safetensors"));
    assert!(bytes(&out) == bytes(&whole), "resumed weights differ from the uninterrupted run's");
    assert_eq!(metric_rows(&out), metric_rows(&whole), "metrics.csv of the resumed run");
    let last = last_row(&out.join("metrics.csv"));
    assert_eq!((last[0].as_str(), last[1].as_str()), ("200", "valid"), "ends at the configured step count");

    // A checkpoint write that fails (here: a directory where checkpoint 3 goes) stops the run
    // with one error line naming the step; the last complete checkpoint resumes it.
    let failing = dir.join("failing");
    std::fs::create_dir_all(failing.join("checkpoint/model-3.bpk/x")).unwrap();
    // (--resume: the directory already has a checkpoint/ folder; there is nothing to resume)
    let fargs = [train(&failing), vec!["--resume".to_string()]].concat();
    let f = zoo().args(&fargs).output().unwrap();
    let err = String::from_utf8_lossy(&f.stderr);
    assert_eq!(f.status.code(), Some(1), "a failed checkpoint write is an error: {err}");
    assert!(err.contains("training stopped in step") && err.contains("/200"), "{err}");
    assert!(err.contains("model-3"), "names the file: {err}");
    assert!(!failing.join("model.safetensors").exists(), "no final model after an early stop");
    std::fs::remove_dir_all(failing.join("checkpoint/model-3.bpk")).unwrap();
    let r = zoo().args(&fargs).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(bytes(&failing) == bytes(&whole), "resumed after a failed write: same weights");

    // SIGTERM (Slurm's preemption signal) mid-epoch: the run finishes its step, checkpoints
    // there and exits 1 naming the step; --resume ends with the uninterrupted run's weights.
    // (Checkpoints every 190 steps here: the stop falls inside an epoch, and the data does not
    // depend on the checkpoint cadence.)
    let term = dir.join("term");
    let tcfg = dir.join("term.toml");
    std::fs::write(
        &tcfg,
        std::fs::read_to_string(&cfg).unwrap().replace("checkpoint_every = 20", "checkpoint_every = 190"),
    )
    .unwrap();
    let targs: Vec<String> =
        ["train", "--config", tcfg.to_str().unwrap(), "--out", term.to_str().unwrap(), "--device", "flex"]
            .map(String::from)
            .to_vec();
    let child = zoo().args(&targs).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(term.join("metrics.csv")).unwrap_or_default().contains("\n30,train,") {
        assert!(t0.elapsed() < Duration::from_secs(300), "no step 30");
        std::thread::sleep(Duration::from_millis(2));
    }
    let k = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(k.success());
    let stopped = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{err}");
    let at: usize = err
        .split("stopped by a signal after step ")
        .nth(1)
        .and_then(|r| r.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("names the step: {err}"));
    assert!((30..190).contains(&at), "stopped mid-epoch: step {at}");
    assert!(err.contains(&format!("continues from checkpoint 1 (step {at})")), "{err}");
    let last = last_row(&term.join("metrics.csv"));
    assert_eq!((last[0].clone(), last[1].as_str()), (at.to_string(), "valid"), "validated at the stop");
    assert!(!term.join("model.safetensors").exists());
    let resumed = zoo().args([&targs[..], &["--resume".to_string()]].concat()).output().unwrap();
    let out_text = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{out_text}{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(out_text.contains(&format!("resuming from checkpoint 1 (step {at})")), "{out_text}");
    assert!(bytes(&term) == bytes(&whole), "resumed after SIGTERM: the uninterrupted run's weights");
    let last = last_row(&term.join("metrics.csv"));
    assert_eq!((last[0].as_str(), last[1].as_str()), ("200", "valid"));

    let reported: f64 = String::from_utf8_lossy(&w.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("done in ")?.split("valid loss ").nth(1)?.split(' ').next()?.parse().ok()
        })
        .expect("final valid loss line");
    // zoo eval on the finished run: at 1× the training length over the same 8 held-out windows
    // (valid_batches × batch_size), perplexity equals the one training reported.
    let ev = run(&[
        "eval",
        "--run",
        out.to_str().unwrap(),
        "--lengths",
        "1,2",
        "--tokens",
        "256",
        "--device",
        "flex",
    ]);
    assert!(ev.status.success(), "{}", String::from_utf8_lossy(&ev.stderr));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    let results = &saved["perplexity"];
    let one = &results[0];
    // saved with the settings that produced it: the flags over the run's [eval] defaults
    assert_eq!(saved["spec"]["settings"]["lengths"], serde_json::json!([1, 2]));
    assert_eq!(saved["spec"]["settings"]["tokens"], 256);
    assert_eq!(saved["spec"]["settings"]["buckets"], 16);
    assert_eq!((one["length"].as_u64(), one["windows"].as_u64()), (Some(32), Some(8)));
    assert!((one["loss"].as_f64().unwrap() - reported).abs() < 1e-3, "eval {one} vs training's {reported}");
    assert_eq!(results[1]["length"].as_u64(), Some(64));
    assert_eq!(one["per_position"].as_array().unwrap().len(), 16);
    let mean: f64 =
        one["per_position"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 16.0;
    assert!((mean - one["loss"].as_f64().unwrap()).abs() < 1e-6, "equal buckets average to the loss");
    assert!(out.join("ppl_vs_length.csv").exists());
    assert_one_line_error(
        &run(&["eval", "--run", out.to_str().unwrap(), "--rope-scaling", "bogus"]),
        &["--rope-scaling", "yarn"],
    );
    assert_one_line_error(&run(&["eval", "--run", dir.to_str().unwrap()]), &["--run", "config.toml"]);

    // zoo analyze: one profile per layer, a distance profile per length, weights that sum right
    let an = run(&["analyze", "--run", out.to_str().unwrap(), "--lengths", "1,2", "--device", "flex"]);
    assert!(an.status.success(), "{}", String::from_utf8_lossy(&an.stderr));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analyze.json")).unwrap()).unwrap();
    assert_eq!(saved["settings"], serde_json::json!({"lengths": [1, 2], "windows": 4}));
    let v = &saved["lengths"];
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["layers"].as_array().unwrap().len(), 1, "micro has one layer");
    let bins: f64 =
        v[0]["layers"][0]["relative_bins"].as_array().unwrap().iter().map(|b| b.as_f64().unwrap()).sum();
    assert!((bins - 1.0).abs() < 1e-4, "each query's attention sums to 1 over the bins: {bins}");
    assert_eq!(v[1]["by_distance"].as_array().unwrap().len(), 64);
    // rotary: per-pair statistics for each layer, head_dim / 2 = 8 pairs, shares that sum right
    let pairs = v[0]["pairs"][0]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 8);
    let share: f64 = pairs.iter().map(|p| p["u_share"].as_f64().unwrap().max(0.0)).sum();
    assert!(share == 0.0 || (share - 1.0).abs() < 1e-9, "positive U-shares sum to 1: {share}");
    // eval's copy task: one cell per (length, distance), distances within the prompt
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    let cells = eval["copy"].as_array().unwrap();
    assert!(!cells.is_empty() && cells.iter().all(|c| c["distance"].as_u64() < c["length"].as_u64()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configs_and_data_are_one_line_errors() {
    let dir = tmp("bad");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let out = dir.join("o");
    let o = out.to_str().unwrap();
    let typo = write("typo.toml", "[train]\nbatchsize = 4\n");
    assert_one_line_error(&run(&["train", "--config", &typo, "--out", o]), &["batchsize", "line 2"]);
    let lr = write("lr.toml", "[train]\nlr = 5.0\n");
    assert_one_line_error(&run(&["train", "--config", &lr, "--out", o]), &["train.lr", "0 < lr ≤ 1"]);
    let enc = write(
        "enc.toml",
        "[model.encoding]\nkind = \"hope-hyp\"\ntheta_prime = 0.0001\nangle_scale = 0.01\n",
    );
    assert_one_line_error(&run(&["train", "--config", &enc, "--out", o]), &["theta_prime", "> max theta_i"]);
    let bin = write("data.txt", "\u{0}\u{1}binary");
    assert_one_line_error(
        &run(&["train", "--data", &bin, "--out", o, "--steps", "2"]),
        &["data.path", "data.txt", "binary"],
    );
    let junk = write("tokenizer.json", "{ not json");
    assert_one_line_error(
        &run(&["train", "--tokenizer", &junk, "--out", o, "--steps", "2"]),
        &["data.tokenizer", "tokenizer.json", "not a tokenizer.json"],
    );
    assert_one_line_error(
        &run(&["train", "--tokenizer", "bpe:100000", "--out", o, "--steps", "2"]),
        &["data.tokenizer", "`bpe:100000`", "fills only"],
    );
    assert_one_line_error(
        &run(&["train", "--tokenizer", "bpe:9", "--out", o]),
        &["data.tokenizer", "258 ..="],
    );
    assert!(!out.exists(), "bad data or tokenizers leave no run directory behind");
    assert_one_line_error(&run(&["train", "--data", "/nonexistent/x", "--out", o]), &["no such file"]);
    assert_one_line_error(
        &run(&["train", "--device", "tpu", "--out", o]),
        &["--device", "unknown device `tpu`"],
    );
    assert_one_line_error(&run(&["train", "--encoding", "rotary", "--out", o]), &["unknown encoding"]);
    assert_one_line_error(&run(&["train", "--steps", "0", "--out", o]), &["--steps", "≥ 1"]);
    let every = write("every.toml", "[train]\nsteps = 50\ncheckpoint_every = 80\nwarmup_steps = 5\n");
    assert_one_line_error(
        &run(&["train", "--config", &every, "--out", o]),
        &["checkpoint_every", "≤ steps = 50"],
    );
    // a run directory of an older format is refused, not silently reinterpreted
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("config.toml"), "[model]\nd_model = 32\n").unwrap();
    assert_one_line_error(&run(&["eval", "--run", old.to_str().unwrap()]), &["run format 1", "retrain"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_micro_writes_every_file_and_resumes() {
    let dir = tmp("compare");
    let out = dir.join("cmp");
    let args = [
        "compare",
        "--preset",
        "micro",
        "--encodings",
        "nope,rope,alibi",
        "--seeds",
        "2",
        "--lengths",
        "1,2",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "flex",
    ];
    let first = run(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    for f in [
        "report.md",
        "results.csv",
        "preset.toml",
        "passkey.csv",
        "copy.csv",
        "per_position.csv",
        "attention_by_distance.csv",
        "pairs.csv",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    for svg in
        ["ppl_vs_length.svg", "per_position.svg", "copy.svg", "attention_by_distance.svg", "passkey.svg"]
    {
        assert_svg(&out.join(svg), &["nope", "rope", "alibi"]);
    }
    for enc in ["nope", "rope", "alibi"] {
        for seed in 0..2 {
            let r = out.join(enc).join(format!("seed{seed}"));
            for f in ["model.safetensors", "train.json", "eval.json", "analyze.json", "metrics.csv"] {
                assert!(r.join(f).exists(), "{enc}/seed{seed}/{f}");
            }
        }
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 2 * 2, "encoding × seed × length rows");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "| nope |",
        "| rope |",
        "| alibi |",
        "ppl_vs_length.svg",
        "Passkey",
        "Copy",
        "U-score",
        "| rope | 0 |",
    ] {
        assert!(report.contains(needle), "report lacks {needle}");
    }
    let svg = std::fs::read_to_string(out.join("ppl_vs_length.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "an SVG document");
    assert_eq!(svg.matches("<svg").count(), 1);
    assert!(svg.matches("<polyline").count() >= 3, "one line per encoding");
    // a seed band per encoding, the length axis ticked at the evaluated multiples, seeds named
    assert_eq!(svg.matches("<polygon").count(), 3, "one min–max band per encoding");
    assert_svg(&out.join("ppl_vs_length.svg"), &["1×", "2×"]);
    assert!(svg.contains("mean of 2 seeds"), "the seed count in the title");
    assert!(
        report.matches("**What this shows.**").count() >= 2 && report.contains("n = 2 per cell"),
        "{report}"
    );
    assert!(report.contains("Lowest at 1×") && report.contains("U-shaped (U-score > 1) at 1×"), "{report}");
    // different seeds give different models
    let seed_loss =
        |s: u32| std::fs::read_to_string(out.join("rope").join(format!("seed{s}/eval.json"))).unwrap();
    assert_ne!(seed_loss(0), seed_loss(1));

    let again = run(&args);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert_eq!(stdout.matches("trained, skipping").count(), 6, "{stdout}");
    assert!(!stdout.contains("unigram entropy"), "nothing retrained");
    assert!(!stdout.contains("\neval ") && !stdout.contains("\nanalyze "), "nothing re-measured: {stdout}");
    assert_eq!(std::fs::read_to_string(out.join("results.csv")).unwrap(), csv, "same numbers");
    // flex runs rope, alibi, … through its fused attention
    assert!(report.contains("(fused attention)"), "the compute path beside tokens/s");
    assert_one_line_error(
        &run(&["compare", "--preset", "huge", "--out", out.to_str().unwrap()]),
        &["--preset", "micro, quick, small"],
    );

    // The same sweep in two shards started together, then `compare` without --shard: it trains
    // nothing more and its results equal the sequential sweep's (flex is deterministic).
    let sharded = dir.join("sharded");
    let sargs: Vec<&str> = args
        .iter()
        .map(|&a| if a == out.to_str().unwrap() { sharded.to_str().unwrap() } else { a })
        .collect();
    let list = run(&[&sargs[..], &["--list"]].concat());
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && listed.lines().count() == 1 + 6, "{listed}");
    assert!(listed.contains("   4  alibi  seed 0  ") && listed.contains("alibi/seed0"), "{listed}");
    assert!(!sharded.exists(), "--list writes nothing");
    let shard = |i: usize| {
        zoo()
            .args([&sargs[..], &["--shard", &format!("{i}/2")]].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (s0, s1) = (shard(0), shard(1));
    for s in [s0.wait_with_output().unwrap(), s1.wait_with_output().unwrap()] {
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
        let text = String::from_utf8_lossy(&s.stdout);
        assert_eq!(text.matches(": training").count(), 3, "each shard trains its 3 runs: {text}");
    }
    assert!(!sharded.join("report.md").exists(), "shards write no report");
    let fill = run(&sargs);
    let text = String::from_utf8_lossy(&fill.stdout);
    assert!(fill.status.success(), "{}", String::from_utf8_lossy(&fill.stderr));
    assert_eq!(text.matches("trained, skipping").count(), 6, "{text}");
    let without_timing = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                // the last two columns: tokens_per_s (differs between runs), compute_path
                let (rest, path) = l.rsplit_once(',').unwrap();
                format!("{},{path}", rest.rsplit_once(',').unwrap().0)
            })
            .collect()
    };
    assert_eq!(without_timing(&sharded.join("results.csv")), without_timing(&out.join("results.csv")));
    // other evaluation settings re-run the evaluation only, and the report follows them
    let shorter: Vec<&str> = sargs.iter().map(|&a| if a == "1,2" { "1" } else { a }).collect();
    let re = run(&shorter);
    let text = String::from_utf8_lossy(&re.stdout);
    assert!(re.status.success(), "{}", String::from_utf8_lossy(&re.stderr));
    assert_eq!(text.matches("trained, skipping").count(), 6, "{text}");
    assert_eq!(text.matches("\neval ").count(), 6, "every run re-evaluated: {text}");
    assert!(!text.contains("\nanalyze "), "the analysis settings did not change: {text}");
    let rows = std::fs::read_to_string(sharded.join("results.csv")).unwrap();
    assert_eq!(rows.lines().count(), 1 + 3 * 2, "one length per run now: {rows}");
    // a directory of another plan, and shards out of range, are one-line errors
    let other: Vec<&str> = sargs.iter().map(|&a| if a == "2" { "3" } else { a }).collect();
    assert_one_line_error(&run(&other), &["another plan", "--seeds"]);
    assert_one_line_error(&run(&[&sargs[..], &["--shard", "3/2"]].concat()), &["--shard 3/2", "0 ≤ i < n"]);
    // --slurm: an array over the 6 runs, a report job, and how to submit them
    let slurm = run(&[&sargs[..], &["--slurm", "--partition", "gpu"]].concat());
    assert!(slurm.status.success(), "{}", String::from_utf8_lossy(&slurm.stderr));
    assert!(String::from_utf8_lossy(&slurm.stdout).contains("sbatch --dependency=afterok:$jid"));
    let sweep = std::fs::read_to_string(sharded.join("sweep.sbatch")).unwrap();
    assert!(
        sweep.contains("#SBATCH --array=0-5\n") && sweep.contains("--shard \"${SLURM_ARRAY_TASK_ID}/6\""),
        "{sweep}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_stops_at_exactly_its_steps_and_its_rate_never_rises_after_warm_up() {
    let dir = tmp("steps");
    let cfg = dir.join("micro.toml");
    // checkpoint_every (20) does not divide --steps (30): the last epoch is 10 steps.
    std::fs::write(&cfg, MICRO.replace("log_every = 10", "log_every = 1")).unwrap();
    std::fs::write(dir.join("text.txt"), "the cat sat on the mat. ".repeat(200)).unwrap();
    let out = dir.join("run");
    let o = zoo()
        .current_dir(&dir)
        .args(["train", "--config", "micro.toml", "--steps", "30", "--data", "text.txt"])
        .args(["--out", out.to_str().unwrap(), "--device", "flex"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let train: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r[1] == "train")
        .map(|r| (r[0].parse().unwrap(), r[4].parse().unwrap()))
        .collect();
    assert_eq!(
        train.iter().map(|t| t.0).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>(),
        "one row per step"
    );
    let last = rows.last().unwrap();
    assert_eq!((last[0], last[1]), ("30", "valid"));
    // warm-up is 5 steps; after it the rate only falls, ending at min_lr
    for w in train[5..].windows(2) {
        assert!(w[1].1 <= w[0].1 * (1.0 + 1e-9), "lr rose after warm-up: {w:?}");
    }
    assert!((train[29].1 - 3e-4).abs() < 1e-9, "ends at min_lr: {}", train[29].1);
    // the data path is stored absolute: eval from another directory reads the same text
    let stored = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let abs = dir.join("text.txt");
    assert!(stored.contains(abs.to_str().unwrap()), "absolute data path in {stored}");
    let ev = zoo()
        .current_dir(std::env::temp_dir())
        .args(["eval", "--run", out.to_str().unwrap(), "--lengths", "1", "--device", "flex"])
        .args(["--passkey-trials", "0", "--copy-trials", "0"])
        .output()
        .unwrap();
    assert!(ev.status.success(), "{}", String::from_utf8_lossy(&ev.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() { files.extend(walk(&p)) } else { files.push(p) }
    }
    files
}
