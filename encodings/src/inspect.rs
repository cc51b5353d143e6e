//! What an encoding does, as plain numbers: `zoo inspect` prints this, tests read it.
//!
//! Conventions (stable; `--json` emits exactly these fields):
//! - rotary class: for each distance Δ, per pair i, the 2×2 matrix `M_i(Δ)` with
//!   `score_i = q_iᵀ M_i(Δ) k_i` for a query at position Δ and a key at position 0 (the map's
//!   scaling, YaRN attention factor, xPos scale and HoPE-Hyp damping are included);
//! - bias class: per head, the bias `b_h(Δ)` added to the logit of a query at position Δ and a
//!   key at position 0 (FIRE depends on the query position too: this is that convention);
//! - embedding class: the norm of the added position vector at position Δ.

use serde::{Deserialize, Serialize};

use crate::registry::{EncodingClass, EncodingContext};

/// One rotary pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairInfo {
    pub index: usize,
    /// The two channels of the pair within the head (depends on the layout).
    pub channels: [usize; 2],
    /// θ_i used by the map (after scaling; 0 for pairs that are passed through).
    pub theta: f64,
    /// θ_i of the unmodified grid, for reference.
    pub base_theta: f64,
    /// Whether the pair is transformed (false: identity, a pure content channel).
    pub rotated: bool,
}

/// The encoding at one query–key distance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtDistance {
    pub distance: usize,
    /// Rotary class: `M_i(Δ)` per pair, row-major `[[m00, m01], [m10, m11]]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrices: Option<Vec<[[f64; 2]; 2]>>,
    /// Bias class: `b_h(Δ)` per head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias: Option<Vec<f64>>,
    /// Embedding class: ‖PE(Δ)‖₂.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_norm: Option<f64>,
}

/// The full description printed by `zoo inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    pub kind: String,
    pub class: EncodingClass,
    pub context: EncodingContext,
    /// Rotary class: the pair layout (`half` or `interleaved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Rotary class: every pair.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub pairs: Vec<PairInfo>,
    /// Rotary class: channels not in any pair (partial rotary), passed through.
    #[serde(default)]
    pub pass_through_channels: usize,
    pub distances: Vec<AtDistance>,
    /// Free-form facts (e.g. "16 of 32 pairs rotated", HoPE-Hyp θ').
    pub notes: Vec<String>,
}

impl Inspection {
    pub fn new(kind: &str, class: EncodingClass, context: EncodingContext) -> Self {
        Self {
            kind: kind.to_string(),
            class,
            context,
            layout: None,
            pairs: Vec::new(),
            pass_through_channels: 0,
            distances: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A readable table.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let c = &self.context;
        let _ = writeln!(
            s,
            "encoding {} ({:?} class)  head_dim={} heads={} train_len={}",
            self.kind,
            self.class,
            c.head_dim,
            c.n_heads,
            c.train_len.map_or("-".into(), |l| l.to_string())
        );
        for n in &self.notes {
            let _ = writeln!(s, "  {n}");
        }
        if !self.pairs.is_empty() {
            let _ = writeln!(
                s,
                "\n  pairs ({} layout, {} pass-through channels)",
                self.layout.as_deref().unwrap_or("?"),
                self.pass_through_channels
            );
            let _ = writeln!(
                s,
                "  {:>4} {:>9} {:>13} {:>13} {:>12}  rotated",
                "i", "channels", "theta", "base_theta", "wavelength"
            );
            for p in &self.pairs {
                let wl = if p.theta > 0.0 {
                    format!("{:.1}", 2.0 * std::f64::consts::PI / p.theta)
                } else {
                    "inf".into()
                };
                let _ = writeln!(
                    s,
                    "  {:>4} {:>9} {:>13.6e} {:>13.6e} {:>12}  {}",
                    p.index,
                    format!("{},{}", p.channels[0], p.channels[1]),
                    p.theta,
                    p.base_theta,
                    wl,
                    if p.rotated { "yes" } else { "no" }
                );
            }
        }
        for d in &self.distances {
            let _ = writeln!(s, "\n  Δ = {}", d.distance);
            if let Some(ms) = &d.matrices {
                let _ = writeln!(s, "  {:>4}  {:>12} {:>12} {:>12} {:>12}", "i", "m00", "m01", "m10", "m11");
                for (i, m) in ms.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "  {i:>4}  {:>12.6} {:>12.6} {:>12.6} {:>12.6}",
                        m[0][0], m[0][1], m[1][0], m[1][1]
                    );
                }
            }
            if let Some(b) = &d.bias {
                let row: Vec<String> = b.iter().enumerate().map(|(h, v)| format!("h{h}={v:.6}")).collect();
                let _ = writeln!(s, "  bias {}", row.join("  "));
            }
            if let Some(n) = d.embedding_norm {
                let _ = writeln!(s, "  ‖PE‖ = {n:.6}");
            }
        }
        s
    }
}
