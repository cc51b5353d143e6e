//! The score envelope against closed forms computed here, independently, in f64.

mod common;

use common::*;
use pezoo_encodings::{EncodingContext, envelope};

const B: f64 = 10_000.0;

#[test]
fn rope_envelope_is_the_sum_of_cosines_and_random_scores_have_the_right_moments() {
    let d = 16;
    let ctx = EncodingContext::new(d, 1, None);
    let dist = [0usize, 1, 5, 100, 4096, 1_000_000];
    let env = envelope(&config("kind = \"rope\""), &ctx, &dist, 4000, 7, &device()).unwrap();
    assert_eq!(env.distances, dist);
    let c = &env.curves[0];
    for (j, &delta) in dist.iter().enumerate() {
        // q = k = 1: each pair contributes cos + cos (its M(Δ) = R(Δθ)ᵀ summed over entries),
        // and attention scales the content score by 1/√d
        let want: f64 =
            (0..d / 2).map(|i| 2.0 * (delta as f64 * B.powf(-2.0 * i as f64 / d as f64)).cos()).sum::<f64>()
                / (d as f64).sqrt();
        assert!((c.fixed[j] - want).abs() < 1e-6 * (1.0 + want.abs()), "Δ={delta}: {} vs {want}", c.fixed[j]);
        // k = q: E[qᵀR q]/√d = the same; independent q, k: mean 0, std √d/√d = 1
        assert!(
            (c.matched_mean[j] - want).abs() < 0.15,
            "Δ={delta}: matched {} vs {want}",
            c.matched_mean[j]
        );
        assert!(c.random_mean[j].abs() < 0.08, "Δ={delta}: mean {}", c.random_mean[j]);
        let sd = 1.0;
        assert!((c.random_std[j] - sd).abs() < 0.1 * sd, "Δ={delta}: std {} vs {sd}", c.random_std[j]);
    }
}

#[test]
fn hope_hyp_envelope_decays_as_the_closed_form_and_stays_finite() {
    let d = 12;
    let ctx = EncodingContext::new(d, 1, None);
    let cfg = config("kind = \"hope-hyp\"\nangle_scale = 0.05\ntheta_prime = 0.06");
    let dist = [0usize, 1, 10, 100, 1000, 1_000_000];
    let env = envelope(&cfg, &ctx, &dist, 64, 1, &device()).unwrap();
    let c = &env.curves[0];
    for (j, &delta) in dist.iter().enumerate() {
        // q = k = 1: ½e^(−Δ(θ'−θ))·4 + ½e^(−Δ(θ'+θ))·0 per pair
        let want: f64 = (0..d / 2)
            .map(|i| 2.0 * (-(delta as f64) * (0.06 - 0.05 * B.powf(-2.0 * i as f64 / d as f64))).exp())
            .sum::<f64>()
            / (d as f64).sqrt();
        assert!(c.fixed[j].is_finite() && c.random_std[j].is_finite(), "Δ={delta}");
        // θ' is learnable by default: held as an f32 parameter
        assert!((c.fixed[j] - want).abs() < 1e-6 * (1.0 + want), "Δ={delta}: {} vs {want}", c.fixed[j]);
    }
    assert!(c.fixed.windows(2).all(|w| w[1] < w[0]), "monotone decay: {:?}", c.fixed);
}

#[test]
fn alibi_envelope_is_the_content_score_minus_the_slope_per_head() {
    let (d, heads) = (8, 4);
    let ctx = EncodingContext::new(d, heads, None);
    let dist = [0usize, 3, 50];
    let env = envelope(&config("kind = \"alibi\""), &ctx, &dist, 16, 2, &device()).unwrap();
    assert_eq!(env.curves.len(), heads);
    for (h, c) in env.curves.iter().enumerate() {
        let slope = 2f64.powf(-8.0 * (h + 1) as f64 / heads as f64);
        for (j, &delta) in dist.iter().enumerate() {
            // content q·k/√d = d/√d = √d, plus the bias
            let want = (d as f64).sqrt() - slope * delta as f64;
            assert!((c.fixed[j] - want).abs() < 1e-5 * (1.0 + want.abs()), "h={h} Δ={delta}: {}", c.fixed[j]);
            // the same draws at every Δ: the random curve moves by exactly the bias
            let shift = c.random_mean[j] - c.random_mean[0];
            assert!((shift + slope * delta as f64).abs() < 1e-4, "h={h} Δ={delta}: shift {shift}");
        }
    }
}

#[test]
fn nope_envelope_is_flat() {
    let ctx = EncodingContext::new(8, 2, None);
    let env = envelope(&config("kind = \"nope\""), &ctx, &[0, 10, 1000], 32, 3, &device()).unwrap();
    let c = &env.curves[0];
    assert!(
        c.fixed.iter().all(|&f| (f - 4.0).abs() < 1e-12),
        "q = k = 1 over d_model = 16, /√16: {:?}",
        c.fixed
    );
    assert!(c.random_mean.windows(2).all(|w| w[0] == w[1]) && c.random_std[0] > 0.5);
}
