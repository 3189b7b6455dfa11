//! Fused CubeCL kernels for `CubeBackend<R, ..>`: one generic impl serves CUDA and WGPU.
//!
//! The forward is one sweep; the backward is three sweeps of the same kernel with the
//! roles of the tensors exchanged (the derivation is in [`crate::reference::backward`]).
//! The decode step is its own small kernel.

mod cmma;
mod decode;
mod kernel;
mod launch;

use burn::tensor::{FloatDType, Shape, ops::FloatTensor, ops::FloatTensorOps};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use crate::{LightningBackend, LightningGrads, reference::Direction};
use launch::{Sweep, state_grad, sweep};

impl<R, F, I, BT> LightningBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn lightning_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o, state) = sweep(Sweep {
            q,
            k,
            v,
            slopes: fp32::<Self>(slopes),
            state: initial_state.map(fp32::<Self>),
            direction: Direction::Forward,
            write_state: true,
        });
        (o, state.expect("the forward writes its state"))
    }

    fn lightning_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
        grad_output: FloatTensor<Self>,
    ) -> LightningGrads<Self> {
        let slopes = fp32::<Self>(slopes);
        let has_state = initial_state.is_some();
        let s0_t = initial_state.map(|s| Self::float_swap_dims(fp32::<Self>(s), 2, 3));
        let (dq, _) = sweep(Sweep {
            q: grad_output.clone(),
            k: v.clone(),
            v: k.clone(),
            slopes: slopes.clone(),
            state: s0_t,
            direction: Direction::Forward,
            write_state: false,
        });
        let (dv, ds0) = sweep(Sweep {
            q: k,
            k: q.clone(),
            v: grad_output.clone(),
            slopes: slopes.clone(),
            state: None,
            direction: Direction::Backward,
            write_state: has_state,
        });
        let (dk, _) = sweep(Sweep {
            q: v,
            k: grad_output,
            v: q,
            slopes,
            state: None,
            direction: Direction::Backward,
            write_state: false,
        });
        LightningGrads {
            q: dq,
            k: dk,
            v: dv,
            initial_state: ds0,
        }
    }
    fn lightning_state_backward(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        grad_state: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let n = k.meta.shape()[2];
        let h = k.meta.shape()[1];
        let slopes = fp32::<Self>(slopes);
        let grad_state = fp32::<Self>(grad_state);
        let dk = state_grad(
            v,
            Self::float_swap_dims(grad_state.clone(), 2, 3),
            slopes.clone(),
        );
        let dv = state_grad(k, grad_state.clone(), slopes.clone());
        // dS0 = lambda^n dS, elementwise in fp32.
        let decay = Self::float_exp(Self::float_mul_scalar(
            Self::float_reshape(slopes, Shape::new([1, h, 1, 1])),
            (-(n as f64)).into(),
        ));
        [dk, dv, Self::float_mul(grad_state, decay)]
    }

    fn lightning_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // The state is fp32 by the trait's contract (`lightning_decode_step` casts it).
        decode::decode(q, k, v, fp32::<Self>(slopes), state)
    }
}

fn fp32<B: FloatTensorOps<B> + burn::tensor::backend::Backend>(
    t: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_cast(t, FloatDType::F32)
}
