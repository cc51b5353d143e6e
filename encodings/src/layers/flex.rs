//! The layer ops on flex: products through `gemm` into uninitialised buffers, SwiGLU and RMSNorm
//! as parallel passes over fixed-size chunks. Chunks never depend on the thread count, and the
//! one reduction (RMSNorm's d gamma) sums the chunks' partials in chunk order, so results are
//! the same bits on every run and at every thread count (other CPUs may pick other gemm kernels).

use std::mem::MaybeUninit;

use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::backend::LayerBackend;
use crate::attention::cpu::{View, exp, gemm_into};

/// Elements per parallel chunk of the elementwise passes (64 KiB of f32 per input).
const CHUNK: usize = 1 << 14;
/// `m · n · k` from which a product runs on all threads (flex's own threshold).
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;
/// An inner dimension this many times the larger output side is split ([`product`]).
const K_SPLIT: usize = 4;
/// Parts of a split inner dimension (fixed: results must not depend on the thread count).
const K_PARTS: usize = 4;

fn tensor(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, Shape::from(shape.to_vec())))
}

/// A contiguous f32 copy of `t` (none when it already is one).
fn values(t: &FlexTensor) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "the fused layer ops run in f32");
    t.to_contiguous()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// `t: [rows, cols]` as a strided view of its storage (negative strides copied first).
fn view(t: &FlexTensor) -> (FlexTensor, [usize; 2]) {
    assert!(t.dtype() == DType::F32, "the fused layer ops run in f32");
    let l = t.layout();
    assert_eq!(l.num_dims(), 2, "a 2-D operand");
    let t = if l.has_positive_strides() { t.clone() } else { t.to_contiguous() };
    let s = t.layout().shape();
    let dims = [s[0], s[1]];
    (t, dims)
}

fn strided<'a>(t: &'a FlexTensor, [rows, cols]: [usize; 2]) -> View<'a> {
    let l = t.layout();
    let (rs, cs) = (l.strides()[0] as usize, l.strides()[1] as usize);
    View { data: &t.storage::<f32>()[l.start_offset()..], rows, cols, rs, cs }
}

/// `a · b` into a fresh contiguous `[m, n]`. A long inner dimension (a weight's gradient `xᵀ ·
/// dy`, summed over every row of the batch) leaves gemm, which parallelises over output tiles,
/// few tiles: there the inner dimension is cut into [`K_PARTS`] fixed parts computed side by
/// side (each still parallel inside) and summed in order (the same bits whatever the thread
/// count).
fn product(a: View, b: View) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let work = m.saturating_mul(n).saturating_mul(k);
    if work < PARALLEL_PRODUCT {
        return product_with(a, b, gemm::Parallelism::None);
    }
    if k < K_SPLIT * m.max(n) {
        return product_with(a, b, gemm::Parallelism::Rayon(0));
    }
    assert!(b.rows == k && a.fits() && b.fits(), "matmul: operands out of bounds");
    let parts: Vec<Vec<f32>> = (0..K_PARTS)
        .into_par_iter()
        .map(|p| {
            let (k0, k1) = (p * k / K_PARTS, (p + 1) * k / K_PARTS);
            let a = View { data: &a.data[k0 * a.cs..], cols: k1 - k0, ..a };
            let b = View { data: &b.data[k0 * b.rs..], rows: k1 - k0, ..b };
            product_with(a, b, gemm::Parallelism::Rayon(0))
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut out = parts.next().expect("K_PARTS ≥ 1");
    for p in parts {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    out
}

/// [`product`] in one gemm call, never zero-filled: gemm writes every element.
#[allow(unsafe_code)]
fn product_with(a: View, b: View, par: gemm::Parallelism) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits(), "matmul: operands out of bounds");
    if k == 0 || m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    let poison = crate::hooks::poisoned();
    let mut out: Vec<f32> = if poison { vec![f32::NAN; m * n] } else { Vec::with_capacity(m * n) };
    // SAFETY: `fits` keeps every element gemm reads (a: (r, c) < (m, k) at r·rs + c·cs, b: < (k,
    // n)) inside the operands' slices; the destination is this vector's own allocation of m·n
    // f32, written row-major (row stride n) and aliasing neither operand. With `read_dst` false
    // gemm writes every element of the m × n destination without reading it (k > 0 here), so
    // after the call all m·n values are initialised and `set_len` exposes only written ones.
    unsafe {
        gemm_into(out.as_mut_ptr(), n, false, a, b, par);
        out.set_len(m * n);
    }
    out
}

/// `K` outputs of `n` values, filled chunk by chunk in parallel: `fill(offset, chunks)` gets the
/// outputs' chunks starting at element `offset` (all `chunk` long but the last) and must write
/// every element of each; its results come back in chunk order.
#[allow(unsafe_code)]
fn outputs<const K: usize, T: Send>(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, [&mut [MaybeUninit<f32>]; K]) -> T + Sync,
) -> ([Vec<f32>; K], Vec<T>) {
    let mut outs: [Vec<f32>; K] = std::array::from_fn(|_| Vec::with_capacity(n));
    if crate::hooks::poisoned() {
        outs.iter_mut().for_each(|o| o.spare_capacity_mut()[..n].fill(MaybeUninit::new(f32::NAN)));
    }
    let results = {
        let mut parts: Vec<_> =
            outs.iter_mut().map(|o| o.spare_capacity_mut()[..n].chunks_mut(chunk)).collect();
        let chunks: Vec<[&mut [MaybeUninit<f32>]; K]> = (0..n.div_ceil(chunk))
            .map(|_| std::array::from_fn(|j| parts[j].next().expect("one chunk per output")))
            .collect();
        chunks.into_par_iter().enumerate().map(|(i, c)| fill(i * chunk, c)).collect()
    };
    for o in &mut outs {
        // SAFETY: the n elements of each output's spare capacity were split into the chunks
        // above, and `fill` writes every element of every chunk (the contract of this function,
        // kept by its callers below; under the tests' poison switch they start as NaN).
        unsafe { o.set_len(n) };
    }
    (outs, results)
}

/// `σ(g) = 1 / (1 + e^−g)` through the branch-free exp (whose argument is clamped to [−87, 88]:
/// at g < −88 σ is ~6e−39 rather than e^g, an absolute error below 1e−38).
#[inline(always)]
fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + exp(-g))
}

impl LayerBackend for Flex {
    fn layer_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let ((a, da), (b, db)) = (view(&a), view(&b));
        assert_eq!(da[1], db[0], "matmul: [{}, {}] · [{}, {}]", da[0], da[1], db[0], db[1]);
        tensor(product(strided(&a, da), strided(&b, db)), &[da[0], db[1]])
    }

    fn layer_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = gate.layout().shape().to_vec();
        let (g, u) = (values(&gate), values(&up));
        let (g, u) = (slice(&g), slice(&u));
        assert_eq!(g.len(), u.len(), "swiglu: gate and up of one shape");
        let ([y], _) = outputs(g.len(), CHUNK, |at, [y]| {
            let (g, u) = (&g[at..at + y.len()], &u[at..at + y.len()]);
            for i in 0..y.len() {
                y[i].write(g[i] * sigmoid(g[i]) * u[i]);
            }
        });
        tensor(y, &shape)
    }

    fn layer_swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = gate.layout().shape().to_vec();
        let (g, u, dy) = (values(&gate), values(&up), values(&dy));
        let (g, u, dy) = (slice(&g), slice(&u), slice(&dy));
        assert!(g.len() == u.len() && g.len() == dy.len(), "swiglu: gate, up and dy of one shape");
        let ([dg, du], _) = outputs(g.len(), CHUNK, |at, [dg, du]| {
            let n = dg.len();
            let (g, u, dy) = (&g[at..at + n], &u[at..at + n], &dy[at..at + n]);
            for i in 0..n {
                // silu(g) = g σ, silu'(g) = σ (1 + g (1 − σ))
                let s = sigmoid(g[i]);
                dg[i].write(dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)));
                du[i].write(dy[i] * g[i] * s);
            }
        });
        (tensor(dg, &shape), tensor(du, &shape))
    }

    fn layer_rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let shape = x.layout().shape().to_vec();
        let d = shape[1];
        if d == 0 {
            return x;
        }
        let (x, gamma) = (values(&x), values(&gamma));
        let (x, gamma) = (slice(&x), slice(&gamma));
        let ([y], _) = outputs(x.len(), rows_chunk(d), |at, [y]| {
            for (r, y) in y.chunks_mut(d).enumerate() {
                let x = &x[at + r * d..at + (r + 1) * d];
                let inv = inv_rms(x, eps);
                for j in 0..d {
                    y[j].write(x[j] * inv * gamma[j]);
                }
            }
        });
        tensor(y, &shape)
    }

    fn layer_rms_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.layout().shape().to_vec();
        let d = shape[1];
        if d == 0 {
            return (x, gamma);
        }
        let (x, gamma, dy) = (values(&x), values(&gamma), values(&dy));
        let (x, gamma, dy) = (slice(&x), slice(&gamma), slice(&dy));
        // y = x r γ, r = (mean x² + eps)^−½: dx = r (dy γ) − x r³ mean(dy γ x); dγ = Σ_rows dy x r
        let ([dx], partials) = outputs(x.len(), rows_chunk(d), |at, [dx]| {
            let mut dgamma = vec![0f32; d];
            for (r, dx) in dx.chunks_mut(d).enumerate() {
                let (x, dy) = (&x[at + r * d..at + (r + 1) * d], &dy[at + r * d..at + (r + 1) * d]);
                let inv = inv_rms(x, eps);
                let mut dot = 0f32;
                for j in 0..d {
                    dot += dy[j] * gamma[j] * x[j];
                }
                let c = inv * inv * inv * dot / d as f32;
                for j in 0..d {
                    dx[j].write(inv * dy[j] * gamma[j] - c * x[j]);
                    dgamma[j] += dy[j] * x[j] * inv;
                }
            }
            dgamma
        });
        let mut dgamma = vec![0f32; d];
        for p in partials {
            dgamma.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        (tensor(dx, &shape), tensor(dgamma, &[d]))
    }
}

/// Elements per chunk of a row-wise pass: whole rows, about [`CHUNK`] values.
fn rows_chunk(d: usize) -> usize {
    d.max(1) * (CHUNK / d.max(1)).max(1)
}

/// `1 / sqrt(mean(x²) + eps)` of one row.
fn inv_rms(x: &[f32], eps: f64) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len().max(1) as f32 + eps as f32).sqrt()
}
