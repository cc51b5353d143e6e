//! The fused layer ops as a Burn backend extension (Flex, Autodiff): one autodiff node per op,
//! whose backward calls the flex kernels of [`super::flex`].

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};

#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait LayerBackend: Backend {
    /// `a · b`, `a: [m, k]`, `b: [k, n]`, any non-negative strides; a contiguous `[m, n]`.
    fn layer_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `silu(gate) · up`, elementwise.
    fn layer_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `(d gate, d up)` of [`Self::layer_swiglu`] for the output gradient `dy`.
    fn layer_swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// RMSNorm of the rows of `x: [rows, d]` times `gamma: [d]`: `x · r · gamma` with
    /// `r = 1 / sqrt(mean(x²) + eps)` per row.
    fn layer_rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;

    /// `(dx, d gamma)` of [`Self::layer_rms_norm`] for the output gradient `dy`.
    fn layer_rms_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

#[derive(Debug)]
struct MatmulBackward;

impl<B: LayerBackend> Backward<B, 2> for MatmulBackward {
    /// a (kept when b needs a gradient), b (kept when a does).
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    /// dA = dC · Bᵀ, dB = Aᵀ · dC, the transposes read in place.
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let dc = grads.consume::<B>(&ops.node);
        let (a, b) = ops.state;
        if let (Some(node), Some(a)) = (node_b, a) {
            grads.register::<B>(node.id, B::layer_matmul(B::float_transpose(a), dc.clone()));
        }
        if let (Some(node), Some(b)) = (node_a, b) {
            grads.register::<B>(node.id, B::layer_matmul(dc, B::float_transpose(b)));
        }
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: LayerBackend> Backward<B, 2> for SwigluBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_gate, node_up] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (gate, up) = ops.state;
        let (dgate, dup) = B::layer_swiglu_backward(gate, up, dy);
        for (node, g) in [(node_gate, dgate), (node_up, dup)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: LayerBackend> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_x, node_gamma] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, eps) = ops.state;
        let (dx, dgamma) = B::layer_rms_norm_backward(x, gamma, eps, dy);
        for (node, g) in [(node_x, dx), (node_gamma, dgamma)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: LayerBackend, C: CheckpointStrategy> LayerBackend for Autodiff<B, C> {
    fn layer_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
        let prep = MatmulBackward.prepare::<C>([a.node(), b.node()]);
        let (pa, pb) = (a.primitive().clone(), b.primitive().clone());
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::layer_matmul(pa.clone(), pb.clone());
                prep.finish((b_tracked.then_some(pa), a_tracked.then_some(pb)), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_matmul(pa, pb)),
        }
    }

    fn layer_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SwigluBackward.prepare::<C>([gate.node(), up.node()]);
        let (pg, pu) = (gate.primitive().clone(), up.primitive().clone());
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::layer_swiglu(pg.clone(), pu.clone());
                prep.finish((pg, pu), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_swiglu(pg, pu)),
        }
    }

    fn layer_swiglu_backward(
        _gate: FloatTensor<Self>,
        _up: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("layer backward kernels run on the inner backend")
    }

    fn layer_rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let prep = RmsNormBackward.prepare::<C>([x.node(), gamma.node()]);
        let (px, pg) = (x.primitive().clone(), gamma.primitive().clone());
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::layer_rms_norm(px.clone(), pg.clone(), eps);
                prep.finish((px, pg, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_rms_norm(px, pg, eps)),
        }
    }

    fn layer_rms_norm_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _eps: f64,
        _dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("layer backward kernels run on the inner backend")
    }
}
