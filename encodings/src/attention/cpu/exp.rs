//! The softmax's exponential, branch-free so its loops vectorise.

/// `e^x` for the softmax's arguments (x ≤ ~0), branch-free so loops over it vectorise:
/// `2^n · p(r)` with `n = round(x · log₂e)` (by the 1.5·2²³ rounding trick), `r = x − n·ln 2`
/// (Cody–Waite, two parts) and `p` the degree-7 Taylor polynomial (|r| ≤ ln 2 / 2: relative
/// error < 1e-7 plus rounding; tested). Arguments below −87 give exactly 0 (a blend, still
/// branch-free), so far-masked scores add no subnormals to the products or the bias gradient.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let x_in = x;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6; // ln 2 = hi + lo
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    // t's low mantissa bits hold n + 2²², so these are n + 127 in the exponent field
    let bits = (t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127)) << 23;
    let y = p * f32::from_bits(bits);
    if x_in < -87.0 { 0.0 } else { y }
}

#[cfg(test)]
mod tests {
    /// The vectorisable exp against f64 over the softmax's range (and a little above 0).
    #[test]
    fn exp_is_accurate_over_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 88.0 * i as f32 / 200_000.0;
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 4e-7, "relative error {worst:e}");
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(-87.5), 0.0, "below −87: exactly 0, no subnormal");
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert!(super::exp(f32::NAN).is_nan(), "NaN propagates");
        assert!(super::exp(-87.0).is_normal());
        for i in 0..=90_000 {
            let y = super::exp(-90.0 + i as f32 / 1000.0);
            assert!(y == 0.0 || y.is_normal(), "exp({}) = {y:e} is subnormal", -90.0 + i as f32 / 1000.0);
        }
    }
}
