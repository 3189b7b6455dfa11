//! `Autodiff<B>`: the forward runs `B`'s fused op once and records two graph nodes, one per
//! output, so each gets its own backward and unused outputs cost nothing (a caller that
//! drops the final state gets `B::lightning_output_kept`, which does not compute it):
//! - the output `o`, whose backward is `B::lightning_backward` (the fused backward sweeps),
//!   given what `B::lightning_forward_kept` kept for it;
//! - the final state `S_n = lambda^n S_0 + sum_s lambda^(n-1-s) k_s^T v_s`, whose backward is
//!   `B::lightning_state_backward`.
//!
//! The slopes are constants: they get no gradient.

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::tensor::{DType, Shape, backend::AutodiffBackend, ops::FloatTensor};

use crate::{LightningBackend, LightningGrads};

#[derive(Debug)]
struct OutputBackward;

/// Checkpointed q, k, v, (initial state), the slopes, and what the forward kept for the
/// backward (`LightningBackend::lightning_forward_kept`).
type Saved<B> = (
    NodeId,
    NodeId,
    NodeId,
    Option<NodeId>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
);

impl<B: LightningBackend> Backward<B, 4> for OutputBackward {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v, node_s0] = ops.parents;
        let grad_output = grads.consume::<B>(&ops.node);
        let (q, k, v, s0, slopes, kept) = ops.state;
        let grads_in = B::lightning_backward(
            checkpointer.retrieve_node_output(q),
            checkpointer.retrieve_node_output(k),
            checkpointer.retrieve_node_output(v),
            slopes,
            s0.map(|id| checkpointer.retrieve_node_output(id)),
            grad_output,
            kept,
        );
        let LightningGrads {
            q: dq,
            k: dk,
            v: dv,
            initial_state: ds0,
        } = grads_in;
        for (node, grad) in [(node_q, Some(dq)), (node_k, Some(dk)), (node_v, Some(dv))]
            .into_iter()
            .chain([(node_s0, ds0)])
        {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct FinalStateBackward;

impl<B: LightningBackend> Backward<B, 3> for FinalStateBackward {
    /// Checkpointed k and v, and the slopes.
    type State = (NodeId, NodeId, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_k, node_v, node_s0] = ops.parents;
        let d_state = grads.consume::<B>(&ops.node);
        let (k, v, slopes) = ops.state;
        let [dk, dv, ds0] = B::lightning_state_backward(
            checkpointer.retrieve_node_output(k),
            checkpointer.retrieve_node_output(v),
            slopes,
            d_state,
        );
        for (node, grad) in [(node_k, dk), (node_v, dv), (node_s0, ds0)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// What `Autodiff<B>` asks of `B`. Burn's `distributed` feature (DDP training) makes
/// `Autodiff<B>` an autodiff backend only over a `DistributedBackend`, so this crate's
/// `distributed` feature, which must follow Burn's, adds that bound.
#[cfg(not(feature = "distributed"))]
pub trait AutodiffInner: LightningBackend {}
#[cfg(not(feature = "distributed"))]
impl<B: LightningBackend> AutodiffInner for B {}

/// What `Autodiff<B>` asks of `B`. Burn's `distributed` feature (DDP training) makes
/// `Autodiff<B>` an autodiff backend only over a `DistributedBackend`, so this crate's
/// `distributed` feature, which must follow Burn's, adds that bound.
#[cfg(feature = "distributed")]
pub trait AutodiffInner:
    LightningBackend + burn::tensor::backend::distributed::DistributedBackend
{
}
#[cfg(feature = "distributed")]
impl<B: LightningBackend + burn::tensor::backend::distributed::DistributedBackend> AutodiffInner
    for B
{
}

/// The initial state as the output node's fourth parent: without one, a one-element
/// untracked leaf fills the slot. Not an empty one: filling zero elements is a zero-block
/// launch, which CUDA rejects (`CUDA_ERROR_INVALID_VALUE`) on CubeCL's backend without
/// Burn's fusion.
fn state_parent<B: AutodiffInner, C: CheckpointStrategy>(
    initial_state: Option<FloatTensor<Autodiff<B, C>>>,
    q: &FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    initial_state.unwrap_or_else(|| {
        Autodiff::<B, C>::from_inner(B::float_zeros(
            Shape::new([1]),
            &B::float_device(&q.primitive),
            DType::F32.into(),
        ))
    })
}

/// `o` as a graph node whose backward is `B::lightning_backward`, given `kept`.
fn track_output<B: AutodiffInner, C: CheckpointStrategy>(
    [q, k, v, s0]: [&FloatTensor<Autodiff<B, C>>; 4],
    has_state: bool,
    slopes: FloatTensor<B>,
    o: FloatTensor<B>,
    kept: Option<FloatTensor<B>>,
) -> FloatTensor<Autodiff<B, C>> {
    match OutputBackward
        .prepare::<C>([
            q.node.clone(),
            k.node.clone(),
            v.node.clone(),
            s0.node.clone(),
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let saved = (
                prep.checkpoint(q),
                prep.checkpoint(k),
                prep.checkpoint(v),
                has_state.then(|| prep.checkpoint(s0)),
                slopes,
                kept,
            );
            prep.finish(saved, o)
        }
        OpsKind::UnTracked(prep) => prep.finish(o),
    }
}

impl<B: AutodiffInner, C: CheckpointStrategy> LightningBackend for Autodiff<B, C> {
    fn lightning_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let has_state = initial_state.is_some();
        let s0 = state_parent::<B, C>(initial_state, &q);
        let (o, state, kept) = B::lightning_forward_kept(
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
            slopes.primitive.clone(),
            has_state.then(|| s0.primitive.clone()),
        );
        let o = track_output::<B, C>(
            [&q, &k, &v, &s0],
            has_state,
            slopes.primitive.clone(),
            o,
            kept,
        );

        let state = match FinalStateBackward
            .prepare::<C>([k.node.clone(), v.node.clone(), s0.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let saved = (prep.checkpoint(&k), prep.checkpoint(&v), slopes.primitive);
                prep.finish(saved, state)
            }
            OpsKind::UnTracked(prep) => prep.finish(state),
        };
        (o, state)
    }

    fn lightning_output(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let s0 = state_parent::<B, C>(None, &q);
        let (o, kept) = B::lightning_output_kept(
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
            slopes.primitive.clone(),
        );
        track_output::<B, C>([&q, &k, &v, &s0], false, slopes.primitive, o, kept)
    }

    /// The gradients themselves are not differentiated again (no second order).
    fn lightning_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
        grad_output: FloatTensor<Self>,
        kept: Option<FloatTensor<Self>>,
    ) -> LightningGrads<Self> {
        let grads = B::lightning_backward(
            q.primitive,
            k.primitive,
            v.primitive,
            slopes.primitive,
            initial_state.map(|s| s.primitive),
            grad_output.primitive,
            kept.map(|t| t.primitive),
        );
        LightningGrads {
            q: Self::from_inner(grads.q),
            k: Self::from_inner(grads.k),
            v: Self::from_inner(grads.v),
            initial_state: grads.initial_state.map(Self::from_inner),
        }
    }
}
