//! Tests only (feature `test-hooks`): switches the kernel tests flip. Without the feature every
//! switch reads as off, and nothing here is compiled but the readers.

#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicBool, Ordering};

/// NaN-fill every kernel output before its launch, so an element a kernel fails to write shows
/// as NaN instead of as stale memory (CubeCL and flex kernels alike).
#[cfg(feature = "test-hooks")]
pub static POISON: AtomicBool = AtomicBool::new(false);

/// Forces the CubeCL attention kernels' workgroup layout for one head_dim,
/// `head_dim << 32 | rows_per_lane << 16 | lanes` (0: the device's own choice), so the tests run
/// the GPU layout on lavapipe and back. Keyed by head_dim so that tests running beside the one
/// that sets it (other head_dims) keep their own layouts.
#[cfg(feature = "test-hooks")]
pub static ATTENTION_LAYOUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether outputs are NaN-filled before a launch ([`POISON`]; never without `test-hooks`).
#[inline]
pub(crate) fn poisoned() -> bool {
    #[cfg(feature = "test-hooks")]
    return POISON.load(Ordering::Relaxed);
    #[cfg(not(feature = "test-hooks"))]
    false
}

/// The forced `(rows per lane, lanes)` of [`ATTENTION_LAYOUT`] for `head_dim`, if any.
#[inline]
#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) fn attention_layout(head_dim: usize) -> Option<(usize, usize)> {
    #[cfg(feature = "test-hooks")]
    {
        let v = ATTENTION_LAYOUT.load(Ordering::Relaxed);
        let (dim, rpl, lanes) = ((v >> 32) as usize, ((v >> 16) & 0xffff) as usize, (v & 0xffff) as usize);
        if v != 0 && dim == head_dim {
            assert!(rpl > 0 && lanes > 0, "a forced attention layout has rows and lanes ≥ 1");
            return Some((rpl, lanes));
        }
    }
    let _ = head_dim;
    None
}
