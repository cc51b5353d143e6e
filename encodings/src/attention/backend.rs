//! Fused causal attention as a Burn backend extension (Cube, Fusion, Autodiff). The autodiff
//! node keeps q, k, v, the bias table, the output and the per-row log-sum-exp — all O(L·d) —
//! and its backward launches the recomputing kernels: dQ, dK/dV and (when the bias is tracked)
//! the per-distance bias gradient.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::Shape;
use burn_cubecl::CubeBackend;

use super::kernel::{self, Grads, Inputs};

/// `[batch, heads, seq]`: one value per query row.
fn row_spec(q: &TensorSpec) -> TensorSpec {
    let s = &q.shape;
    TensorSpec::new(Shape::new([s[0], s[1], s[2]]), q.dtype)
}

#[backend_extension(Cube, Fusion, Autodiff)]
pub trait AttentionBackend: Backend {
    /// `softmax(q kᵀ + bias[h, i − j], causal) v` and the rows' log-sum-exp. `q, k, v: [b, h, s,
    /// d]` (q pre-scaled), `bias: [h, ≥ s]` by distance (ignored unless `has_bias`).
    #[fusion(meta = |q, _k, _v, _bias, _has_bias| (q.clone(), row_spec(q)))]
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// dQ from the output gradient, the forward's log-sum-exp and `δ = rowsum(dO ∘ O)`.
    #[fusion(dtype = q, shape = q)]
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_q(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self>;

    /// (dK, dV).
    #[fusion(meta = |_q, k, v, _bias, _dout, _lse, _delta, _has_bias| (k.clone(), v.clone()))]
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_kv(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        has_bias: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The logit gradient summed per (batch, head, distance): `[b, h, s]`.
    #[fusion(meta = |q, _k, _v, _bias, _dout, _lse, _delta| row_spec(q))]
    fn attention_backward_bias(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl AttentionBackend for CubeBackend {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        kernel::forward(Inputs::new(q, k, v, bias, has_bias))
    }

    fn attention_backward_q(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        kernel::backward_q(Inputs::new(q, k, v, bias, has_bias), Grads::new(dout, lse, delta))
    }

    fn attention_backward_kv(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        has_bias: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        kernel::backward_kv(Inputs::new(q, k, v, bias, has_bias), Grads::new(dout, lse, delta))
    }

    fn attention_backward_bias(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        delta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        kernel::backward_bias(Inputs::new(q, k, v, bias, true), Grads::new(dout, lse, delta))
    }
}

/// The saved state: q, k, v, bias, out, lse and `has_bias`.
type Saved<B> =
    (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, bool);

#[derive(Debug)]
struct AttentionBackward;

impl<B: AttentionBackend> Backward<B, 4> for AttentionBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_q, node_k, node_v, node_bias] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (q, k, v, bias, out, lse, has_bias) = ops.state;
        let shape = out.shape();
        let rows = Shape::new([shape[0], shape[1], shape[2]]);
        let delta = B::float_reshape(B::float_sum_dim(B::float_mul(dout.clone(), out), 3), rows);
        if let Some(node) = node_q {
            let dq = B::attention_backward_q(
                q.clone(),
                k.clone(),
                v.clone(),
                bias.clone(),
                dout.clone(),
                lse.clone(),
                delta.clone(),
                has_bias,
            );
            grads.register::<B>(node.id, dq);
        }
        if node_k.is_some() || node_v.is_some() {
            let (dk, dv) = B::attention_backward_kv(
                q.clone(),
                k.clone(),
                v.clone(),
                bias.clone(),
                dout.clone(),
                lse.clone(),
                delta.clone(),
                has_bias,
            );
            if let Some(node) = node_k {
                grads.register::<B>(node.id, dk);
            }
            if let Some(node) = node_v {
                grads.register::<B>(node.id, dv);
            }
        }
        if let (Some(node), true) = (node_bias, has_bias) {
            // [b, h, s] per distance → the table's [h, blen]: summed over the batch, zero for the
            // distances past this sequence.
            let bias_shape = bias.shape();
            let (h, blen, s) = (bias_shape[0], bias_shape[1], shape[2]);
            let db = B::attention_backward_bias(q, k, v, bias, dout, lse, delta);
            let db = B::float_reshape(B::float_sum_dim(db, 0), Shape::new([h, s]));
            let db = if blen > s {
                let zeros = B::float_zeros(Shape::new([h, blen - s]), &db.device(), db.dtype().into());
                B::float_cat(vec![db, zeros], 1)
            } else {
                db
            };
            grads.register::<B>(node.id, db);
        }
    }
}

impl<B: AttentionBackend, C: CheckpointStrategy> AttentionBackend for Autodiff<B, C> {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let prep = AttentionBackward.prepare::<C>([q.node(), k.node(), v.node(), bias.node()]);
        let inner = |t: &FloatTensor<Self>| t.primitive().clone();
        let (qi, ki, vi, bi) = (inner(&q), inner(&k), inner(&v), inner(&bias));
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, lse) =
                    B::attention_forward(qi.clone(), ki.clone(), vi.clone(), bi.clone(), has_bias);
                let state = (qi, ki, vi, bi, out.clone(), lse.clone(), has_bias);
                (prep.finish(state, out), FloatTensor::<Self>::new(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (out, lse) = B::attention_forward(qi, ki, vi, bi, has_bias);
                (prep.finish(out), FloatTensor::<Self>::new(lse))
            }
        }
    }

    fn attention_backward_q(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _has_bias: bool,
    ) -> FloatTensor<Self> {
        unreachable!("attention backward kernels run on the inner backend")
    }

    fn attention_backward_kv(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _has_bias: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("attention backward kernels run on the inner backend")
    }

    fn attention_backward_bias(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _bias: FloatTensor<Self>,
        _dout: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("attention backward kernels run on the inner backend")
    }
}
