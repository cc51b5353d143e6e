//! Bad configurations give one line naming the field and the allowed range; `inspect` numbers.

mod common;

use common::*;
use pezoo_encodings::{EncodingConfig, EncodingContext, inspect};

fn err(toml: &str, ctx: &EncodingContext) -> String {
    match EncodingConfig::from_toml(toml) {
        Err(e) => e.to_string(),
        Ok(c) => c.validate(ctx).expect_err(toml).to_string(),
    }
}

#[test]
fn bad_configs_name_the_field_and_the_allowed_range() {
    let ctx = EncodingContext::new(64, 4, Some(256));
    let no_len = EncodingContext::new(64, 4, None);
    let odd = EncodingContext::new(63, 4, Some(256));
    let cases: &[(&str, &EncodingContext, &[&str])] = &[
        ("kind = \"rope\"", &odd, &["head_dim", "63", "even"]),
        ("kind = \"hope-hyp\"", &odd, &["head_dim", "even"]),
        ("kind = \"hope-hf\"", &no_len, &["train_len", "required"]),
        ("kind = \"hope-hf\"\ntrain_len = 1", &ctx, &["train_len", "≥ 2"]),
        (
            "kind = \"hope-hyp\"\nangle_scale = 0.1\ntheta_prime = 0.05",
            &ctx,
            &["theta_prime", "0.05", "> max theta_i"],
        ),
        (
            "kind = \"hope-hyp\"\nangle_scale = 0.1\ntheta_prime = 0.1",
            &ctx,
            &["theta_prime", "> max theta_i"],
        ),
        (
            "kind = \"rope\"\nrope_scaling = { rope_type = \"linear\", factor = 0.5 }",
            &ctx,
            &["rope_scaling.factor", "0.5", "≥ 1"],
        ),
        (
            "kind = \"rope\"\nrope_scaling = { rope_type = \"yarn\", factor = 2.0 }",
            &no_len,
            &["original_max_position_embeddings", "required"],
        ),
        ("kind = \"p-rope\"\np = 1.5", &ctx, &["encoding.p", "1.5", "0 < p ≤ 1"]),
        ("kind = \"p-rope\"\np = 0.0", &ctx, &["encoding.p", "0 < p ≤ 1"]),
        ("kind = \"rope\"\npartial_rotary_factor = 0.0", &ctx, &["partial_rotary_factor", "0 < r ≤ 1"]),
        ("kind = \"rope\"\nrope_theta = 0.5", &ctx, &["rope_theta", "> 1"]),
        ("kind = \"t5\"\nmax_distance = 4", &ctx, &["max_distance", "> num_buckets/2"]),
        ("kind = \"learned\"", &no_len, &["max_len", "required"]),
        ("kind = \"rotary\"", &ctx, &["encoding.kind", "unknown encoding `rotary`", "hope-hyp"]),
        ("rope_theta = 10.0", &ctx, &["encoding.kind", "required"]),
        ("kind = \"rope\"\nrope_thta = 10.0", &ctx, &["rope_thta"]),
        ("kind = \"rope\"\nlayout = \"diagonal\"", &ctx, &["diagonal", "half", "interleaved"]),
    ];
    for (toml, c, needles) in cases {
        let e = err(toml, c);
        assert!(!e.contains('\n'), "one line: {e}");
        for n in *needles {
            assert!(e.contains(n), "`{toml}` → `{e}` lacks `{n}`");
        }
    }
}

#[test]
fn every_kind_round_trips_and_inits_with_defaults() {
    let ctx = EncodingContext::new(16, 3, Some(64));
    for kind in EncodingConfig::KINDS {
        let c = EncodingConfig::default_for(kind).unwrap();
        assert_eq!(c.kind(), *kind);
        let back = EncodingConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(back, c, "{kind}");
        let enc = c.init(&ctx, &device()).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let i = enc.as_dyn().inspect(&[0, 1, 7], &device());
        assert_eq!(i.distances.len(), 3, "{kind}");
    }
    assert_eq!(EncodingConfig::catalogue().len(), EncodingConfig::KINDS.len());
}

#[test]
fn inspect_matrices_are_the_closed_forms() {
    let d = 8;
    let ctx = EncodingContext::new(d, 2, Some(128));
    let dists = [0usize, 1, 7, 100, 4096];
    // RoPE: score_i = q_iᵀ R(−Δθ_i) k_i → M = [[cos, sin], [−sin, cos]]
    let r = inspect(&config("kind = \"rope\""), &ctx, &dists, &device()).unwrap();
    for at in &r.distances {
        for (i, m) in at.matrices.as_ref().unwrap().iter().enumerate() {
            let (s, c) = (at.distance as f64 * 10_000f64.powf(-2.0 * i as f64 / d as f64)).sin_cos();
            let want = [[c, s], [-s, c]];
            for a in 0..2 {
                for b in 0..2 {
                    assert!((m[a][b] - want[a][b]).abs() < 1e-12, "rope Δ={} pair {i}", at.distance);
                }
            }
        }
    }
    // HoPE-Hyp: M = e^(−Δθ')[[cosh Δθ_i, sinh Δθ_i], [sinh, cosh]]
    let h = inspect(
        &config("kind = \"hope-hyp\"\nangle_scale = 0.01\ntheta_prime = 0.02\nlearnable = false"),
        &ctx,
        &dists,
        &device(),
    )
    .unwrap();
    for at in &h.distances {
        let dd = at.distance as f64;
        for (i, m) in at.matrices.as_ref().unwrap().iter().enumerate() {
            let t = 0.01 * 10_000f64.powf(-2.0 * i as f64 / d as f64);
            let e = (-dd * 0.02).exp();
            let want =
                [[e * (dd * t).cosh(), e * (dd * t).sinh()], [e * (dd * t).sinh(), e * (dd * t).cosh()]];
            for a in 0..2 {
                for b in 0..2 {
                    let tol = 1e-12 + 1e-9 * want[a][b].abs();
                    assert!(
                        (m[a][b] - want[a][b]).abs() < tol,
                        "hyp Δ={} pair {i}: {:?} vs {want:?}",
                        at.distance,
                        m
                    );
                }
            }
        }
    }
    // ALiBi bias per head, and the JSON form is stable and parseable
    let a = inspect(&config("kind = \"alibi\""), &ctx, &dists, &device()).unwrap();
    let b = a.distances[2].bias.as_ref().unwrap();
    assert!((b[0] + 7.0 * 2f64.powf(-4.0)).abs() < 1e-5 && (b[1] + 7.0 * 2f64.powf(-8.0)).abs() < 1e-5);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["kind"], "rope");
    assert_eq!(json["pairs"][1]["channels"], serde_json::json!([1, 5]));
    assert_eq!(json["distances"][2]["distance"], 7);
    // HoPE-HF marks the dropped pairs: d=8, L=128 → K = ⌊4·ln(128/2π)/ln 1e4⌋ + 1 = 2
    let hf = inspect(&config("kind = \"hope-hf\""), &ctx, &dists, &device()).unwrap();
    let kept: Vec<bool> = hf.pairs.iter().map(|p| p.rotated).collect();
    assert_eq!(kept, [true, true, false, false]);
    assert!(hf.to_text().contains("2 of 4 pairs rotated"));
}
