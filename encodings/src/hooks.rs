//! Tests only (feature `test-hooks`): switches the kernel tests flip. Without the feature every
//! switch reads as off, and nothing here is compiled but the readers.

#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// NaN-fill every kernel output before its launch, so an element a kernel fails to write shows
/// as NaN instead of as stale memory (CubeCL and flex kernels alike).
#[cfg(feature = "test-hooks")]
pub static POISON: AtomicBool = AtomicBool::new(false);

/// Forces the CubeCL attention kernels' workgroup layout, `rows_per_lane << 16 | lanes`
/// (0: the device's own choice), so the tests run the GPU layout on lavapipe and back. Any
/// layout gives the same results, so tests running beside the one that sets it still hold.
#[cfg(feature = "test-hooks")]
pub static ATTENTION_LAYOUT: AtomicUsize = AtomicUsize::new(0);

/// Whether outputs are NaN-filled before a launch ([`POISON`]; never without `test-hooks`).
#[inline]
pub(crate) fn poisoned() -> bool {
    #[cfg(feature = "test-hooks")]
    return POISON.load(Ordering::Relaxed);
    #[cfg(not(feature = "test-hooks"))]
    false
}

/// The forced `(rows per lane, lanes)` of [`ATTENTION_LAYOUT`], if any.
#[inline]
#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) fn attention_layout() -> Option<(usize, usize)> {
    #[cfg(feature = "test-hooks")]
    {
        let v = ATTENTION_LAYOUT.load(Ordering::Relaxed);
        if v != 0 {
            return Some((v >> 16, v & 0xffff));
        }
    }
    None
}
