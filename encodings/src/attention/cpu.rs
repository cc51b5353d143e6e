//! The fused attention on flex (CPU), for [`Flags::plain`] attention (no in-kernel map, no FIRE):
//! per (batch, head), blocks of [`BLOCK`] queries against the keys they see — the causal blocks
//! past the diagonal are never computed — with one block's scores as scratch (O(BLOCK · seq) per
//! thread, never `[seq, seq]`). The products run through `gemm` (flex's own matmul, SIMD picked
//! at run time); the softmax, the bias and the mask are applied to a block's scores in place.
//! The backward recomputes each block's probabilities from the saved log-sum-exp and produces
//! dQ, dK, dV and the per-distance bias gradient in one pass (five products per block, where the
//! CubeCL path's three kernels recompute the scores three times). A norm-preserving rotary map
//! is applied here too, per head from a coefficient table (`Flags::rotated`; its transpose on
//! dQ, dK), so the model does no rotary tensor ops on flex. Parallel over (batch, head).

use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

mod exp;
pub(crate) use exp::exp;

use super::backend::{AttentionBackend, Flags};

/// Query rows per block: one block's scores (`BLOCK × seq` f32) stay in L2 up to seq ≈ 4096.
const BLOCK: usize = 64;

/// A read-only matrix view: element (r, c) at `data[r · rs + c · cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> View<'a> {
    /// The first `rows` rows of a row-major matrix with `cols` columns.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// Every element lies inside `data`.
    pub(crate) fn fits(&self) -> bool {
        let last = |n: usize, stride: usize| (n - 1).checked_mul(stride);
        self.rows == 0
            || self.cols == 0
            || last(self.rows, self.rs)
                .zip(last(self.cols, self.cs))
                .and_then(|(r, c)| r.checked_add(c))
                .is_some_and(|end| end < self.data.len())
    }
}

/// `dst[m, n] (row stride ld) = (dst if accumulate, else 0) + a · b`, single-threaded (the
/// caller parallelises over heads).
#[allow(unsafe_code)]
fn matmul(dst: &mut [f32], ld: usize, accumulate: bool, a: View, b: View) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits() && n <= ld, "matmul: operands out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    let end = (m - 1).checked_mul(ld).and_then(|r| r.checked_add(n));
    assert!(end.is_some_and(|e| e <= dst.len()), "matmul: destination out of bounds");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(ld).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    // SAFETY: the asserts above keep every element gemm reads (a: (r, c) < (m, k), b: < (k, n))
    // or writes (dst: r · ld + c with r < m, c < n) inside its slice, and `dst` is borrowed
    // mutably, so it aliases neither operand; when accumulating, it is initialised.
    unsafe { gemm_into(dst.as_mut_ptr(), ld, accumulate, a, b, gemm::Parallelism::None) }
}

/// gemm's call for `dst[r · ld + c] = (dst if accumulate, else nothing read) + (a · b)[r, c]`.
///
/// # Safety
/// `a` and `b` must [`View::fits`] with `b.rows == a.cols > 0`; `dst` must be valid for writes
/// at `r · ld + c` (r < a.rows, c < b.cols ≤ ld), initialised there when `accumulate`, and alias
/// neither operand. Without `accumulate` gemm writes every one of those elements unread.
#[allow(unsafe_code)]
pub(crate) unsafe fn gemm_into(
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
    a: View,
    b: View,
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract above.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            ld as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// The logits of query `i` over keys `0..=i` in `row[..=i]` (q·k from the product) plus the
/// distance bias `bias[i − j]`; `row` past `i` is zeroed (masked).
fn logits(row: &mut [f32], i: usize, bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (j, x) in row[..=i].iter_mut().enumerate() {
            *x += b[i - j];
        }
    }
    row[i + 1..].fill(0.0);
}

/// The rotation of one head's rows: `[a, −c; c, a]` per pair, coefficients `[s, pairs]` per side.
#[derive(Clone, Copy)]
struct Rotation<'a> {
    a: &'a [f32],
    c: &'a [f32],
    pairs: usize,
    interleaved: bool,
}

impl Rotation<'_> {
    /// `x [s, d]` → `out`, pairs rotated (or by the transpose `[a, c; −c, a]`, for a gradient),
    /// the channels past the pairs copied.
    fn apply(&self, x: &[f32], out: &mut [f32], d: usize, transpose: bool) {
        let (np, sign) = (self.pairs, if transpose { -1.0 } else { 1.0 });
        for (t, (xr, yr)) in x.chunks(d).zip(out.chunks_mut(d)).enumerate() {
            yr.copy_from_slice(xr);
            let (a, c) = (&self.a[t * np..(t + 1) * np], &self.c[t * np..(t + 1) * np]);
            for p in 0..np {
                let [c1, c2] = if self.interleaved { [2 * p, 2 * p + 1] } else { [p, p + np] };
                let (x1, x2, cs) = (xr[c1], xr[c2], sign * c[p]);
                yr[c1] = a[p] * x1 - cs * x2;
                yr[c2] = cs * x1 + a[p] * x2;
            }
        }
    }
}

/// One (batch, head): q, k, v, dO `[s, d]` and the head's distance-bias row.
#[derive(Clone, Copy)]
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    bias: Option<&'a [f32]>,
    /// Query and key rotations (`Flags::rotated`).
    rot: Option<[Rotation<'a>; 2]>,
    s: usize,
    d: usize,
}

/// A head's rotated q and k.
type Rotated = (Vec<f32>, Vec<f32>);

impl<'a> Head<'a> {
    /// This head with q and k rotated into `buf` (itself when there is no rotation).
    fn rotated<'b>(&self, buf: &'b mut Rotated) -> Head<'b>
    where
        'a: 'b,
    {
        let Some([rq, rk]) = self.rot else { return *self };
        let n = self.s * self.d;
        buf.0.resize(n, 0.0);
        buf.1.resize(n, 0.0);
        rq.apply(self.q, &mut buf.0, self.d, false);
        rk.apply(self.k, &mut buf.1, self.d, false);
        Head { q: &buf.0, k: &buf.1, rot: None, ..*self }
    }

    /// Block of queries `i0..i0 + nq` against keys `0..i0 + nq`: `(nq, nk)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> + use<'a> {
        let s = self.s;
        (0..s).step_by(BLOCK).map(move |i0| {
            let nq = BLOCK.min(s - i0);
            (i0, nq, i0 + nq)
        })
    }

    /// The block's logits `q kᵀ + bias` into `sc[nq, nk]` (zero past the diagonal).
    fn scores(&self, sc: &mut [f32], i0: usize, nq: usize, nk: usize) {
        let d = self.d;
        matmul(sc, nk, false, View::rows(&self.q[i0 * d..], nq, d), View::rows(self.k, nk, d).t());
        for (r, row) in sc.chunks_mut(nk).enumerate() {
            logits(row, i0 + r, self.bias);
        }
    }

    /// `out [s, d]`, `lse [s]`.
    fn forward(&self, out: &mut [f32], lse: &mut [f32], scratch: &mut (Vec<f32>, Rotated)) {
        let d = self.d;
        let (scores, buf) = scratch;
        let head = self.rotated(buf);
        for (i0, nq, nk) in self.blocks() {
            scores.resize(nq * nk, 0.0);
            let sc = &mut scores[..nq * nk];
            head.scores(sc, i0, nq, nk);
            for (r, row) in sc.chunks_mut(nk).enumerate() {
                let valid = &mut row[..=i0 + r];
                let m = valid.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                valid.iter_mut().for_each(|x| *x = exp(*x - m));
                let sum: f32 = valid.iter().sum();
                let inv = 1.0 / sum;
                valid.iter_mut().for_each(|x| *x *= inv);
                lse[i0 + r] = m + sum.ln();
            }
            matmul(&mut out[i0 * d..], d, false, View::rows(sc, nq, nk), View::rows(head.v, nk, d));
        }
    }

    /// dQ, dK, dV `[s, d]` and the logit gradient summed per distance `db [s]` (when wanted).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        g: (&[f32], &[f32], &[f32]),
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        db: &mut [f32],
        bias_grad: bool,
        scratch: &mut (Vec<f32>, Vec<f32>, Rotated),
    ) {
        let (dout, lse, delta) = g;
        let d = self.d;
        let (p_buf, ds_buf, buf) = scratch;
        let head = self.rotated(buf);
        dk.fill(0.0);
        dv.fill(0.0);
        db.fill(0.0);
        for (i0, nq, nk) in self.blocks() {
            p_buf.resize(nq * nk, 0.0);
            ds_buf.resize(nq * nk, 0.0);
            let (p, ds) = (&mut p_buf[..nq * nk], &mut ds_buf[..nq * nk]);
            head.scores(p, i0, nq, nk);
            let d_o = View::rows(&dout[i0 * d..], nq, d);
            matmul(ds, nk, false, d_o, View::rows(head.v, nk, d).t()); // dP = dO vᵀ
            for (r, (prow, drow)) in p.chunks_mut(nk).zip(ds.chunks_mut(nk)).enumerate() {
                let i = i0 + r;
                let (prow, (drow, rest)) = (&mut prow[..=i], drow.split_at_mut(i + 1));
                prow.iter_mut().for_each(|x| *x = exp(*x - lse[i]));
                drow.iter_mut().zip(prow.iter()).for_each(|(g, p)| *g = p * (*g - delta[i]));
                rest.fill(0.0);
                if bias_grad {
                    for (j, g) in drow.iter().enumerate() {
                        db[i - j] += g;
                    }
                }
            }
            let (p, ds) = (View::rows(p, nq, nk), View::rows(ds, nq, nk));
            matmul(&mut dq[i0 * d..], d, false, ds, View::rows(head.k, nk, d)); // dQ = dS k
            matmul(dk, d, true, ds.t(), View::rows(&head.q[i0 * d..], nq, d)); // dK += dSᵀ q
            matmul(dv, d, true, p.t(), d_o); // dV += Pᵀ dO
        }
        if let Some([rq, rk]) = self.rot {
            // gradients w.r.t. the un-rotated q, k: the transposed rotation
            p_buf.resize(p_buf.len().max(dq.len()), 0.0);
            let tmp = &mut p_buf[..dq.len()];
            tmp.copy_from_slice(dq);
            rq.apply(tmp, dq, d, true);
            tmp.copy_from_slice(dk);
            rk.apply(tmp, dk, d, true);
        }
    }
}

/// A contiguous f32 copy of `t`'s values (no copy when it already is one).
fn values(t: &FlexTensor) -> FlexTensor {
    assert!(t.dtype() == DType::F32, "fused attention runs in f32");
    t.to_contiguous()
}

fn tensor(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, Shape::from(shape.to_vec())))
}

/// An output buffer: NaN when the tests' poison switch is on (an unwritten element then fails).
fn output(n: usize) -> Vec<f32> {
    vec![if crate::hooks::poisoned() { f32::NAN } else { 0.0 }; n]
}

/// The values of a contiguous f32 tensor.
fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

struct Problem {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    bias: Option<FlexTensor>,
    /// `Flags::rotated`: the `[4 · seq, pairs]` coefficient table, its pairs and layout.
    rotation: Option<(FlexTensor, usize, bool)>,
    dims: [usize; 4],
}

impl Problem {
    fn new(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
        table: FlexTensor,
        flags: Flags,
    ) -> Self {
        assert!(flags.plain(), "the flex attention kernel takes no in-kernel map and no FIRE");
        let s = q.layout().shape();
        let dims = [s[0], s[1], s[2], s[3]];
        for t in [&k, &v] {
            assert!(
                t.layout().shape().to_vec() == dims.to_vec(),
                "q, k, v: one shape [batch, heads, seq, head_dim]"
            );
        }
        let bias = flags.has_bias.then(|| {
            let bs = bias.layout().shape();
            assert!(bs[0] == dims[1] && bs[1] >= dims[2], "bias table: [heads, ≥ seq]");
            values(&bias)
        });
        let rotation = flags.rotated.then(|| {
            let ts = table.layout().shape();
            assert!(
                ts[0] == 4 * dims[2] && 2 * ts[1] <= dims[3],
                "rotation table: [4 · seq, ≤ head_dim / 2]"
            );
            (values(&table), ts[1], flags.interleaved)
        });
        Self { q: values(&q), k: values(&k), v: values(&v), bias, rotation, dims }
    }

    /// The (batch, head) unit `u`.
    fn head(&self, u: usize) -> Head<'_> {
        let [_, h, s, d] = self.dims;
        fn at(t: &FlexTensor, u: usize, n: usize) -> &[f32] {
            &slice(t)[u * n..(u + 1) * n]
        }
        let bias = self.bias.as_ref().map(|b| {
            let blen = b.layout().shape()[1];
            &slice(b)[(u % h) * blen..(u % h + 1) * blen]
        });
        let rot = self.rotation.as_ref().map(|(t, pairs, interleaved)| {
            let part = |i: usize| &slice(t)[i * s * pairs..(i + 1) * s * pairs];
            let side =
                |i: usize| Rotation { a: part(i), c: part(i + 1), pairs: *pairs, interleaved: *interleaved };
            [side(0), side(2)]
        });
        let n = s * d;
        Head { q: at(&self.q, u, n), k: at(&self.k, u, n), v: at(&self.v, u, n), bias, rot, s, d }
    }

    fn forward(&self) -> (FlexTensor, FlexTensor) {
        let [b, h, s, d] = self.dims;
        let (mut out, mut lse) = (output(b * h * s * d), output(b * h * s));
        if s > 0 && d > 0 {
            out.par_chunks_mut(s * d)
                .zip(lse.par_chunks_mut(s))
                .enumerate()
                .for_each_init(Default::default, |scratch, (u, (o, l))| self.head(u).forward(o, l, scratch));
        }
        (tensor(out, &self.dims), tensor(lse, &[b, h, s]))
    }

    fn backward(
        &self,
        dout: FlexTensor,
        lse: FlexTensor,
        delta: FlexTensor,
        bias_grad: bool,
    ) -> [FlexTensor; 4] {
        let [b, h, s, d] = self.dims;
        let (dout, lse, delta) = (values(&dout), values(&lse), values(&delta));
        let (dout, lse, delta) = (slice(&dout), slice(&lse), slice(&delta));
        let n = b * h * s * d;
        let (mut dq, mut dk, mut dv, mut db) = (output(n), output(n), output(n), output(b * h * s));
        if s > 0 && d > 0 {
            let bias_grad = bias_grad && self.bias.is_some();
            dq.par_chunks_mut(s * d)
                .zip(dk.par_chunks_mut(s * d))
                .zip(dv.par_chunks_mut(s * d))
                .zip(db.par_chunks_mut(s))
                .enumerate()
                .for_each_init(Default::default, |scratch, (u, (((dq, dk), dv), db))| {
                    let g = (
                        &dout[u * s * d..(u + 1) * s * d],
                        &lse[u * s..(u + 1) * s],
                        &delta[u * s..(u + 1) * s],
                    );
                    self.head(u).backward(g, dq, dk, dv, db, bias_grad, scratch);
                });
        }
        let t = |x| tensor(x, &self.dims);
        [t(dq), t(dk), t(dv), tensor(db, &[b, h, s])]
    }
}

impl AttentionBackend for Flex {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        _scal: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        Problem::new(q, k, v, bias, table, flags).forward()
    }

    fn attention_backward_q(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [b, h, s, _] = q.layout().shape().to_vec().try_into().expect("q: [batch, heads, seq, head_dim]");
        let (dq, ..) = Self::attention_backward_all(q, k, v, bias, table, scal, dout, lse, delta, flags);
        (dq, tensor(vec![0.0; b * h * s], &[b, h, s, 1]))
    }

    fn attention_backward_kv(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (_, dk, dv, _) =
            Self::attention_backward_all(q, k, v, bias, table, scal, dout, lse, delta, flags);
        (dk, dv)
    }

    fn attention_backward_bias(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        flags: Flags,
    ) -> FloatTensor<Self> {
        let flags = Flags { bias_grad: true, ..flags };
        Self::attention_backward_all(q, k, v, bias, table, scal, dout, lse, delta, flags).3
    }

    fn attention_backward_all(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        _scal: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let problem = Problem::new(q, k, v, bias, table, flags);
        let [dq, dk, dv, db] = problem.backward(dout, lse, delta, flags.bias_grad);
        (dq, dk, dv, db)
    }
}
