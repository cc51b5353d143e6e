//! Fused causal attention as a Burn backend extension (Cube, Fusion, Flex, Autodiff). The
//! autodiff node keeps q, k, v, the bias table, the output and the per-row log-sum-exp — all
//! O(L·d) — and its backward recomputes the scores: on CubeCL devices with the dQ, dK/dV and
//! (when the bias is tracked) per-distance bias-gradient kernels, on flex in one pass per
//! (batch, head) ([`super::cpu`]).

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
#[cfg(feature = "cube")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::Shape;
#[cfg(feature = "cube")]
use burn_cubecl::CubeBackend;

#[cfg(feature = "cube")]
use super::launch::{self as kernel, Grads, Inputs};

/// Comptime switches of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// A `[heads, ≥ seq]` distance-bias table is added to the logits.
    pub has_bias: bool,
    /// A growing rotary map (HoPE-Hyp, xPos) is applied in-kernel, re-centred per tile.
    pub mapped: bool,
    /// Pair layout of the map: (2i, 2i + 1) rather than (i, i + r/2).
    pub interleaved: bool,
    /// HoPE-Hyp's boost + damping (else a rotation).
    pub hyperbolic: bool,
    /// xPos's per-pair scale on top of the rotation.
    pub scaled: bool,
    /// FIRE's MLP width W when `bias` holds FIRE's per-head rows `[heads, 3W + 3]` (see
    /// `kernel::fire_mlp`) and `scal[0]` the first token's position; 0 otherwise.
    pub fire: usize,
    /// Flex only: a norm-preserving rotary map applied by the kernel from `table` (`[4 · seq,
    /// pairs]`: `a_q, c_q, a_k, c_k`, see `rotary::reference::rotation_table`), pairs laid out
    /// as `interleaved` says, channels past `2 · pairs` passed through.
    pub rotated: bool,
    /// Backward only: the distance table's gradient is wanted
    /// ([`AttentionBackend::attention_backward_all`]).
    pub bias_grad: bool,
}

impl Flags {
    /// No in-kernel map and no FIRE: plain causal attention, optionally with a distance table
    /// (what the flex kernel runs, and what [`AttentionBackend::attention_backward_all`] serves).
    pub fn plain(&self) -> bool {
        !self.mapped && self.fire == 0
    }

    /// Values per row of dQ's parameter output: FIRE's row gradient, else HoPE-Hyp's dθ'.
    pub fn params_per_row(&self) -> usize {
        if self.fire > 0 { 3 * self.fire + 3 } else { 1 }
    }
}

/// `[batch, heads, seq]`: one value per query row.
#[cfg(feature = "cube")]
fn row_spec(q: &TensorSpec) -> TensorSpec {
    let s = &q.shape;
    TensorSpec::new(Shape::new([s[0], s[1], s[2]]), q.dtype)
}

/// `[batch, heads, seq, P]`: the rows' parameter-gradient shares ([`Flags::params_per_row`]).
#[cfg(feature = "cube")]
fn param_spec(q: &TensorSpec, flags: &Flags) -> TensorSpec {
    let s = &q.shape;
    TensorSpec::new(Shape::new([s[0], s[1], s[2], flags.params_per_row()]), q.dtype)
}

/// Every kernel reads the same six tensors (see [`kernel::Inputs`]); the backward ones also
/// the output gradient, the log-sum-exp and δ.
#[backend_extension(
    Cube: cfg(feature = "cube"),
    Flex: cfg(feature = "flex"),
    Fusion: cfg(feature = "cube"),
    Autodiff
)]
pub trait AttentionBackend: Backend {
    /// `softmax(q kᵀ + bias[h, i − j], causal) v` and the rows' log-sum-exp.
    #[fusion(meta = |q, _k, _v, _b, _t, _s, _f| (q.clone(), row_spec(q)))]
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// dQ and the rows' shares of the parameter gradient (dθ', or FIRE's rows).
    #[fusion(meta = |q, _k, _v, _b, _t, _s, _do, _l, _d, f| (q.clone(), param_spec(q, f)))]
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// (dK, dV).
    #[fusion(meta = |_q, k, v, _b, _t, _s, _do, _l, _d, _f| (k.clone(), v.clone()))]
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The logit gradient summed per (batch, head, distance): `[b, h, s]`.
    #[fusion(meta = |q, _k, _v, _b, _t, _s, _do, _l, _d, _f| row_spec(q))]
    #[allow(clippy::too_many_arguments)]
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
    ) -> FloatTensor<Self>;

    /// The whole backward of a [`Flags::plain`] attention: (dQ, dK, dV, the distance table's
    /// gradient per (batch, head, distance) `[b, h, s]`, zeros unless `flags.bias_grad`). By
    /// default the three kernels above; flex computes it in one pass.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_all(
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        macro_rules! call {
            ($f:path) => {
                $f(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    bias.clone(),
                    table.clone(),
                    scal.clone(),
                    dout.clone(),
                    lse.clone(),
                    delta.clone(),
                    flags,
                )
            };
        }
        let (dq, _) = call!(Self::attention_backward_q);
        let (dk, dv) = call!(Self::attention_backward_kv);
        let db = match flags.has_bias && flags.bias_grad {
            true => call!(Self::attention_backward_bias),
            false => {
                let s = q.shape();
                Self::float_zeros(Shape::new([s[0], s[1], s[2]]), &q.device(), q.dtype().into())
            }
        };
        (dq, dk, dv, db)
    }
}

#[cfg(feature = "cube")]
fn inputs(ts: [FloatTensor<CubeBackend>; 6], flags: Flags) -> Inputs {
    assert!(!flags.rotated, "the CubeCL kernels take rotary maps mapped beforehand or in-kernel");
    let [q, k, v, bias, table, scal] = kernel::contiguous(ts);
    Inputs { q, k, v, bias, table, scal, flags }
}

#[cfg(feature = "cube")]
impl AttentionBackend for CubeBackend {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        kernel::forward(inputs([q, k, v, bias, table, scal], flags))
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
        kernel::backward_q(inputs([q, k, v, bias, table, scal], flags), Grads::new(dout, lse, delta))
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
        kernel::backward_kv(inputs([q, k, v, bias, table, scal], flags), Grads::new(dout, lse, delta))
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
        kernel::backward_bias(inputs([q, k, v, bias, table, scal], flags), Grads::new(dout, lse, delta))
    }
}

/// The saved state: the 6 inputs, out, lse and the flags.
type Saved<B> = ([FloatTensor<B>; 6], FloatTensor<B>, FloatTensor<B>, Flags);

#[derive(Debug)]
struct AttentionBackward;

impl<B: AttentionBackend> Backward<B, 5> for AttentionBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_q, node_k, node_v, node_bias, node_scal] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (ins, out, lse, flags) = ops.state;
        let shape = out.shape();
        let rows = Shape::new([shape[0], shape[1], shape[2]]);
        let delta = B::float_reshape(B::float_sum_dim(B::float_mul(dout.clone(), out), 3), rows);
        let [q, k, v, bias, table, scal] = ins;
        macro_rules! call {
            ($f:path, $flags:expr) => {
                $f(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    bias.clone(),
                    table.clone(),
                    scal.clone(),
                    dout.clone(),
                    lse.clone(),
                    delta.clone(),
                    $flags,
                )
            };
        }
        // [b, h, s] per distance → the table's [h, blen]: summed over the batch, zero for the
        // distances past this sequence.
        let table_grad = |db: FloatTensor<B>| {
            let bias_shape = bias.shape();
            let (h, blen, s) = (bias_shape[0], bias_shape[1], shape[2]);
            let db = B::float_reshape(B::float_sum_dim(db, 0), Shape::new([h, s]));
            if blen > s {
                let zeros = B::float_zeros(Shape::new([h, blen - s]), &db.device(), db.dtype().into());
                B::float_cat(vec![db, zeros], 1)
            } else {
                db
            }
        };
        if flags.plain() {
            let bias_grad = node_bias.is_some() && flags.has_bias;
            let (dq, dk, dv, db) = call!(B::attention_backward_all, Flags { bias_grad, ..flags });
            for (node, g) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
                if let Some(node) = node {
                    grads.register::<B>(node.id, g);
                }
            }
            if let (Some(node), true) = (node_bias, bias_grad) {
                grads.register::<B>(node.id, table_grad(db));
            }
            return;
        }
        let fire = flags.fire > 0;
        if node_q.is_some() || (node_scal.is_some() && flags.hyperbolic) || (node_bias.is_some() && fire) {
            let (dq, dparam) = call!(B::attention_backward_q, flags);
            if let Some(node) = node_q {
                grads.register::<B>(node.id, dq);
            }
            if let (Some(node), true) = (&node_bias, fire) {
                // [b, h, s, P] row shares → FIRE's rows [h, P]
                let [h, p] = [shape[1], flags.params_per_row()];
                let g = B::float_sum_dim(B::float_sum_dim(dparam.clone(), 0), 2);
                grads.register::<B>(node.id, B::float_reshape(g, Shape::new([h, p])));
            }
            if let (Some(node), true) = (node_scal, flags.hyperbolic) {
                // [θ', factor, T]: only θ' is a parameter
                let total = B::float_reshape(B::float_sum(dparam), Shape::new([1]));
                let zeros =
                    B::float_mul_scalar(B::float_cat(vec![total.clone(), total.clone()], 0), 0.0.into());
                grads.register::<B>(node.id, B::float_cat(vec![total, zeros], 0));
            }
        }
        if node_k.is_some() || node_v.is_some() {
            let (dk, dv) = call!(B::attention_backward_kv, flags);
            if let Some(node) = node_k {
                grads.register::<B>(node.id, dk);
            }
            if let Some(node) = node_v {
                grads.register::<B>(node.id, dv);
            }
        }
        if let (Some(node), true) = (node_bias, flags.has_bias) {
            let db = call!(B::attention_backward_bias, flags);
            grads.register::<B>(node.id, table_grad(db));
        }
    }
}

impl<B: AttentionBackend, C: CheckpointStrategy> AttentionBackend for Autodiff<B, C> {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        table: FloatTensor<Self>,
        scal: FloatTensor<Self>,
        flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let prep = AttentionBackward.prepare::<C>([q.node(), k.node(), v.node(), bias.node(), scal.node()]);
        let ins = [&q, &k, &v, &bias, &table, &scal].map(|t| t.primitive().clone());
        let run = |ins: [FloatTensor<B>; 6]| {
            let [q, k, v, bias, table, scal] = ins;
            B::attention_forward(q, k, v, bias, table, scal, flags)
        };
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, lse) = run(ins.clone());
                let state = (ins, out.clone(), lse.clone(), flags);
                (prep.finish(state, out), FloatTensor::<Self>::new(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (out, lse) = run(ins);
                (prep.finish(out), FloatTensor::<Self>::new(lse))
            }
        }
    }

    fn attention_backward_q(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _table: FloatTensor<Self>,
        _scal: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("attention backward kernels run on the inner backend")
    }

    fn attention_backward_kv(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _table: FloatTensor<Self>,
        _scal: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("attention backward kernels run on the inner backend")
    }

    fn attention_backward_bias(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _table: FloatTensor<Self>,
        _scal: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _flags: Flags,
    ) -> FloatTensor<Self> {
        unreachable!("attention backward kernels run on the inner backend")
    }

    fn attention_backward_all(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _table: FloatTensor<Self>,
        _scal: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _flags: Flags,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("attention backward kernels run on the inner backend")
    }
}
