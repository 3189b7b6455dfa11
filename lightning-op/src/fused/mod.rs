//! Fused CubeCL kernels for `CubeBackend<R, ..>`: one generic impl serves CUDA and WGPU.
//!
//! The forward is one sweep; the backward is three sweeps of the same kernel with the
//! roles of the tensors exchanged (the derivation is in [`crate::reference::backward`]).
//! Where the sequence is segmented, each sweep needs the states entering its segments: the
//! dq sweep's are the forward's transposed (the forward keeps them for it), and the dk and dv
//! sweeps' are transposes of each other (one local pass and scan serve both).
//! The decode step is its own small kernel.

mod cmma;
mod decode;
mod kernel;
mod launch;

use burn::tensor::{DType, FloatDType, Shape, ops::FloatTensor, ops::FloatTensorOps};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use crate::{LightningBackend, LightningGrads, reference::Direction};
use launch::{Entering, Sweep, Swept, entering_shape, state_grad, sweep};

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
        let (o, state, _) = Self::lightning_forward_kept(q, k, v, slopes, initial_state);
        (o, state)
    }

    fn lightning_forward_kept(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
    ) {
        let Swept {
            out,
            state,
            entering,
        } = sweep(Sweep {
            q,
            k,
            v,
            slopes: fp32::<Self>(slopes),
            state: initial_state.map(fp32::<Self>),
            direction: Direction::Forward,
            write_state: true,
            entering: None,
        });
        (
            out,
            state.expect("the forward writes its state"),
            entering.map(Entering::into_states),
        )
    }

    fn lightning_output_kept(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let Swept { out, entering, .. } = sweep(Sweep {
            q,
            k,
            v,
            slopes: fp32::<Self>(slopes),
            state: None,
            direction: Direction::Forward,
            write_state: false,
            entering: None,
        });
        (out, entering.map(Entering::into_states))
    }

    fn lightning_kept_shape(
        device: &Self::Device,
        dtype: DType,
        dims: [usize; 5],
    ) -> Option<Shape> {
        let client = R::client(device);
        entering_shape(&client, dtype, dims).map(Shape::from)
    }

    fn lightning_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
        grad_output: FloatTensor<Self>,
        kept: Option<FloatTensor<Self>>,
    ) -> LightningGrads<Self> {
        let [b, h, n, d] = q.meta.shape().dims::<4>();
        let e = v.meta.shape()[3];
        let (dtype, dims) = (q.dtype, [b, h, n, d, e]);
        let slopes = fp32::<Self>(slopes);
        let has_state = initial_state.is_some();
        let s0_t = initial_state.map(|s| Self::float_swap_dims(fp32::<Self>(s), 2, 3));
        let dq = sweep(Sweep {
            q: grad_output.clone(),
            k: v.clone(),
            v: k.clone(),
            slopes: slopes.clone(),
            state: s0_t,
            direction: Direction::Forward,
            write_state: false,
            entering: kept.map(|states| Entering::of_forward(states, dtype, dims)),
        });
        let dv = sweep(Sweep {
            q: k,
            k: q.clone(),
            v: grad_output.clone(),
            slopes: slopes.clone(),
            state: None,
            direction: Direction::Backward,
            write_state: has_state,
            entering: None,
        });
        let dk = sweep(Sweep {
            q: v,
            k: grad_output,
            v: q,
            slopes,
            state: None,
            direction: Direction::Backward,
            write_state: false,
            entering: dv.entering.map(Entering::transposed),
        });
        LightningGrads {
            q: dq.out,
            k: dk.out,
            v: dv.out,
            initial_state: dv.state,
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
