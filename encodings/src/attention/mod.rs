//! Fused causal attention with the encoding inside, on CubeCL devices and on flex (training and
//! eval): a kernel that never stores a `[seq, seq]` score, probability or bias tensor — memory is
//! O(batch · heads · seq · head_dim) on CubeCL, O(seq · block) scratch per thread on flex — with
//! a recomputing backward (dQ, dK, dV and the encoding's parameter gradients).
//!
//! What each encoding class hands the kernel:
//! - embedding class (NoPE, sinusoidal, learned): nothing — plain causal attention;
//! - rotary class with norm-preserving maps (RoPE in every layout, scaling and partial form,
//!   p-RoPE, HoPE-HF): q and k mapped once by the fused rotary kernel (angles exact at 1e6);
//! - growing maps (HoPE-Hyp, xPos): applied inside the kernel, re-centred per tile (see
//!   [`growing`]), with the gradient to a learnable θ' — finite at any length, no query blocks;
//! - bias class depending on distance only (ALiBi, T5, KERPLE): a `[heads, seq]` table of
//!   `bias(h, Δ)` built by the encoding's own tensor ops; the kernel reads `table[h, i − j]` and
//!   its backward returns the logit gradient summed per distance, so the gradient reaches T5's
//!   table and KERPLE's r1, r2 through ordinary autodiff of the table.
//!
//! - FIRE, whose bias depends on the query position too: the kernel evaluates its MLP per score
//!   from per-head rows of its weights ([`crate::bias::fire::Fire::kernel_rows`]) and returns
//!   their gradient, summed per row in the dQ pass (MLP weights, c and the threshold).
//!
//! On flex ([`cpu`]) the kernel takes the plain forms — embedding class, norm-preserving rotary
//! maps (applied inside the kernel from the encoding's coefficient table) and distance tables;
//! HoPE-Hyp, xPos and FIRE keep the reference attention there.
//!
//! Known limits of the CubeCL kernels (speed, not results): scalar f32 arithmetic with rows held
//! in each lane's registers (`kernel::tile_rows`), no shared-memory tiles and no matrix units;
//! the bias gradient is a third O(L²·d) pass. Tile sizes and a tensor-core path are what a GPU
//! would tune (backends.md).

#[cfg(any(feature = "cube", feature = "flex"))]
mod backend;
#[cfg(feature = "flex")]
pub(crate) mod cpu;
#[cfg(feature = "cube")]
mod kernel;
#[cfg(feature = "cube")]
mod launch;

use burn::prelude::*;

use crate::registry::{EncodingClass, PositionalEncoding};
#[cfg(feature = "cube")]
use crate::rotary::RotaryEncoding;

/// Whether the fused kernel handles `enc` on `device` (see the module doc): every class on a
/// CubeCL device, the plain forms on flex.
pub fn supports(enc: &dyn PositionalEncoding, device: &Device) -> bool {
    let plain_only = on_flex(device);
    match enc.class() {
        EncodingClass::Embedding => true,
        EncodingClass::Rotary => enc.rotary().is_some_and(|r| !plain_only || r.query_block_seen().is_none()),
        EncodingClass::Bias => enc.bias_by_distance() || (!plain_only && enc.fire().is_some()),
    }
}

/// Whether `device` runs the fused attention kernel (a CubeCL or flex device, compiled in).
pub fn available(device: &Device) -> bool {
    crate::rotary::fused_available(device) || on_flex(device)
}

/// A flex device with the flex kernels compiled in.
pub fn on_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    return matches!(device.as_dispatch().clone().inner(), burn::backend::DispatchDevice::Flex(_));
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// `bias(h, Δ)` for Δ = 0..seq as a `[heads, seq]` table, for encodings whose bias depends on
/// the distance only ([`PositionalEncoding::bias_by_distance`]); differentiable.
pub fn distance_bias(enc: &dyn PositionalEncoding, seq: usize, device: &Device) -> Option<Tensor<2>> {
    if !enc.bias_by_distance() {
        return None;
    }
    // One query at seq − 1 against keys 0..seq: key n sits at distance seq − 1 − n.
    let b = enc.attention_bias(seq - 1..seq, 0..seq, device)?; // [heads, 1, seq]
    let heads = b.dims()[0];
    Some(b.reshape([heads, seq]).flip([1]))
}

/// Causal attention of `q, k, v: [batch, heads, seq, head_dim]` (q scaled by 1/√d) with `enc`
/// applied inside, through the fused kernel; the first token sits at absolute position `start`.
/// `table`: the distance-bias table when the caller built it once for every layer
/// ([`distance_bias`]), else it is built here. `None` when the device or encoding is not fused.
pub fn encoded(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    enc: &dyn PositionalEncoding,
    start: usize,
    table: Option<Tensor<2>>,
) -> Option<Tensor<4>> {
    let device = q.device();
    if !available(&device) || !supports(enc, &device) || q.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let seq = q.dims()[2];
    match enc.rotary() {
        #[cfg(feature = "cube")]
        Some(r) if r.query_block_seen().is_some() => Some(growing(q, k, v, r, start + seq)),
        // Flex: the kernel rotates q and k itself (positions re-centred on the first token).
        #[cfg(feature = "flex")]
        Some(r) if on_flex(&device) => {
            let head_dim = q.dims()[3];
            assert_eq!(head_dim, r.spec().head_dim, "q's head_dim against the encoding's");
            let table = crate::rotary::reference::rotation_table(r, seq, start + seq, &device);
            let interleaved = r.spec().layout == crate::rotary::Layout::Interleaved;
            let flags = backend::Flags { rotated: true, interleaved, ..Default::default() };
            Some(launch(q, k, v, None, table, Tensor::ones([3], &device), flags).0)
        }
        // Norm-preserving maps: positions re-centred on the first token (exact, Δ-only scores).
        Some(r) => {
            let (q, k) = r.apply_qk(q, k, &[start], &[start], start + seq);
            Some(causal(q, k, v, None))
        }
        None => match enc.fire() {
            #[cfg(feature = "cube")]
            Some(fire) => {
                let scal = [start as f32, 1.0, 1.0];
                let scal = Tensor::<1>::from_data(TensorData::new(scal.to_vec(), [3]), &device);
                let one = Tensor::<2>::ones([1, 1], &device);
                let flags = backend::Flags { fire: fire.width(), ..Default::default() };
                Some(launch(q, k, v, Some(fire.kernel_rows()), one, scal, flags).0)
            }
            _ => {
                let table = table.or_else(|| distance_bias(enc, seq, &device));
                Some(causal(q, k, v, table))
            }
        },
    }
}

/// A growing map (HoPE-Hyp, xPos) inside the kernel: with tile T = the encoding's safe block,
/// one side is mapped within its own tile (positions i mod T or j mod T: factors within e^±40 for
/// HoPE-Hyp, whose T the kernels derive from θ'; xPos takes the reference's block)
/// and the kernel maps the other side re-centred on the tile it meets (forward, dQ: q
/// at i − j₀ against keys of the tile starting at j₀; dK/dV: k at j − i₀ against queries of the
/// tile starting at i₀). Exact — scores depend on m − n only — and finite at any length.
#[cfg(feature = "cube")]
fn growing(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, r: &RotaryEncoding, context_len: usize) -> Tensor<4> {
    use crate::rotary::{Layout, fused};
    let device = q.device();
    let (table, scal) = fused::map_tensors(r, context_len, &device);
    let spec = r.spec();
    let hyperbolic = matches!(spec.map, crate::rotary::PairMap::Hyperbolic { .. });
    // HoPE-Hyp: the kernels derive T from θ' on the device (it is learnt); xPos: T is fixed.
    let third = match hyperbolic {
        true => spec.theta.iter().cloned().fold(0.0, f64::max),
        false => r.query_block_seen().expect("a growing map").max(1) as f64,
    };
    let t = Tensor::<1>::from_data(TensorData::new(vec![third as f32], [1]), &device);
    let spec = r.spec();
    let flags = backend::Flags {
        has_bias: false,
        mapped: true,
        interleaved: spec.layout == Layout::Interleaved,
        hyperbolic,
        scaled: spec.xpos.is_some(),
        ..Default::default()
    };
    launch(q, k, v, None, table, Tensor::cat(vec![scal, t], 0), flags).0
}

/// Causal attention `softmax(q kᵀ + bias[h, i − j]) v` through the fused kernel.
/// `q, k, v: [batch, heads, seq, head_dim]` with q already scaled (1/√d); `bias: [heads, ≥ seq]`
/// by distance. Panics unless [`available`] for the tensors' device.
pub fn causal(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<2>>) -> Tensor<4> {
    causal_with_lse(q, k, v, bias).0
}

/// [`causal`] and each row's log-sum-exp of the logits, `[batch, heads, seq]` (not
/// differentiable).
pub fn causal_with_lse(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<2>>,
) -> (Tensor<4>, Tensor<3>) {
    #[cfg(any(feature = "cube", feature = "flex"))]
    {
        let device = q.device();
        let one = || Tensor::<2>::ones([1, 1], &device);
        let flags = backend::Flags { has_bias: bias.is_some(), ..Default::default() };
        launch(q, k, v, bias, one(), Tensor::ones([3], &device), flags)
    }
    #[cfg(not(any(feature = "cube", feature = "flex")))]
    {
        let _ = (q, k, v, bias);
        panic!("fused attention needs a CubeCL backend feature (wgpu, cuda, …) or flex")
    }
}

#[cfg(any(feature = "cube", feature = "flex"))]
#[allow(clippy::too_many_arguments)]
fn launch(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<2>>,
    table: Tensor<2>,
    scal: Tensor<1>,
    flags: backend::Flags,
) -> (Tensor<4>, Tensor<3>) {
    use backend::AttentionBackend;
    use burn::backend::Dispatch;
    assert!(available(&q.device()), "fused attention needs a CubeCL or flex device");
    let [_, heads, seq, _] = q.dims();
    assert!(q.dims() == k.dims() && q.dims() == v.dims(), "q, k, v: one shape [batch, heads, seq, head_dim]");
    assert!(q.dtype() == burn::tensor::DType::F32, "fused attention runs in f32");
    assert!(!flags.has_bias || bias.is_some(), "fused attention: has_bias without a bias table");
    if let (Some(b), true) = (&bias, flags.has_bias) {
        let [bh, blen] = b.dims();
        assert!(bh == heads && blen >= seq, "bias table: [heads = {heads}, ≥ {seq}], got [{bh}, {blen}]");
    }
    if flags.fire > 0 {
        let dims = bias.as_ref().map(|b| b.dims());
        assert!(dims == Some([heads, flags.params_per_row()]), "FIRE rows: [heads, 3W + 3], got {dims:?}");
    }
    let bias = bias.unwrap_or_else(|| Tensor::ones([1, 1], &q.device()));
    let (out, lse) = Dispatch::attention_forward(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
        table.into_dispatch(),
        scal.into_dispatch(),
        flags,
    );
    (Tensor::from_dispatch(out), Tensor::from_dispatch(lse))
}
