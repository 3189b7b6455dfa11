//! Lightning attention (Lightning Attention-2, arXiv 2401.04658) as a Burn backend extension.
//!
//! Causal linear attention with a per-head decay, `o_t = sum_{j<=t} lambda^(t-j) (q_t . k_j) v_j`
//! with `lambda = exp(-slope)`, computed blockwise: masked attention inside a block and a
//! running `d x e` fp32 state between blocks.
//!
//! Three forms of the same operator, tested against each other:
//! - [`reference`]: the blockwise algorithm from ordinary tensor ops, for every backend;
//! - `fused`: CubeCL kernels for `CubeBackend` (CUDA and WGPU from one generic impl), with
//!   `Fusion` and `Autodiff` wrappers whose backward runs fused kernels too;
//! - [`recurrent`]: one token at a time against the state, for decoding (one kernel launch
//!   on `CubeBackend`, plain tensor ops elsewhere).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use lightning_op::lightning_attention;
//!
//! let device = Default::default();
//! let q = Tensor::<NdArray, 4>::random([1, 2, 10, 8], Distribution::Default, &device);
//! let k = Tensor::random([1, 2, 10, 8], Distribution::Default, &device);
//! let v = Tensor::random([1, 2, 10, 4], Distribution::Default, &device);
//! let slopes = Tensor::from_floats([0.5, 0.0], &device);
//! let o = lightning_attention(q, k, v, slopes);
//! assert_eq!(o.dims(), [1, 2, 10, 4]);
//! ```

mod autodiff;
mod backends;
mod checks;
mod fused;
mod fusion;
pub mod lasp;
pub mod nn;
pub mod oracle;
pub mod recurrent;
pub mod reference;
mod slopes;

pub use autodiff::AutodiffInner;
pub use checks::MAX_HEAD_DIM;
pub use recurrent::lightning_decode_step;
pub use slopes::{IntoSlopes, Slopes};

use burn::tensor::{
    DType, Shape, Tensor, TensorPrimitive,
    backend::{AutodiffBackend, Backend},
    ops::FloatTensor,
};

/// Gradients of one lightning attention call; `initial_state` is set when one was given.
#[derive(Debug)]
pub struct LightningGrads<B: Backend> {
    pub q: FloatTensor<B>,
    pub k: FloatTensor<B>,
    pub v: FloatTensor<B>,
    pub initial_state: Option<FloatTensor<B>>,
}

/// A Burn backend that can run lightning attention.
///
/// The default methods are the [`reference`] implementation, so any backend gets the op
/// with `impl LightningBackend for MyBackend {}`. `CubeBackend` (CUDA, WGPU), `Fusion`
/// and `Autodiff` override them with fused kernels and their own backward.
///
/// Contract of the methods (checked by the public functions, not here): `q`, `k`
/// `[b, h, n, d]`, `v` `[b, h, n, e]` of one dtype, `slopes` `[h]`, the state
/// `[b, h, d, e]` in fp32, `n >= 1`.
pub trait LightningBackend: Backend {
    /// Output `[b, h, n, e]` in the dtype of `q` and final state `[b, h, d, e]` in fp32.
    fn lightning_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o, state) = reference::forward::<Self>(
            float(q),
            float(k),
            float(v),
            float(slopes),
            initial_state.map(float),
        );
        (o.into_primitive().tensor(), state.into_primitive().tensor())
    }

    /// [`lightning_forward`](Self::lightning_forward), also returning what the forward
    /// computed that its backward can reuse, to pass back as `lightning_backward`'s `kept`.
    /// On `CubeBackend`, where the sequence ran in segments: the fp32 states entering them,
    /// which spare the backward's dq sweep a pass over k and v. `None` by default.
    #[allow(clippy::type_complexity)]
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
        let (o, state) = Self::lightning_forward(q, k, v, slopes, initial_state);
        (o, state, None)
    }

    /// [`lightning_forward`](Self::lightning_forward)'s output alone, from a zero state, for
    /// callers that drop the final state ([`lightning_attention`]): a backend may skip what
    /// only the final state needs (`CubeBackend`: where the sequence runs in segments, the
    /// last segment's pass over k and v). By default the forward's output.
    fn lightning_output(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::lightning_output_kept(q, k, v, slopes).0
    }

    /// [`lightning_output`](Self::lightning_output) with what its backward can reuse, as
    /// [`lightning_forward_kept`](Self::lightning_forward_kept)'s `kept` (same shape).
    fn lightning_output_kept(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let (o, _, kept) = Self::lightning_forward_kept(q, k, v, slopes, None);
        (o, kept)
    }

    /// The shape of `lightning_forward_kept`'s `kept` for `q` `[b, h, n, d]` and `v`
    /// `[b, h, n, e]` (`dims = [b, h, n, d, e]`) in `dtype` on `device`, `None` when there
    /// is none. A backend that records operations before running them (`Fusion`) needs it.
    fn lightning_kept_shape(
        device: &Self::Device,
        dtype: DType,
        dims: [usize; 5],
    ) -> Option<Shape> {
        let _ = (device, dtype, dims);
        None
    }

    /// Gradients of `sum(o * grad_output)` with respect to q, k, v and the initial state
    /// (the final state's own gradient is handled by the autodiff wrapper). `kept` is what
    /// `lightning_forward_kept` returned for these inputs, if anything.
    fn lightning_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
        grad_output: FloatTensor<Self>,
        kept: Option<FloatTensor<Self>>,
    ) -> LightningGrads<Self> {
        let _ = kept;
        let has_state = initial_state.is_some();
        let [dq, dk, dv, ds] = reference::backward::<Self>(
            float(q),
            float(k),
            float(v),
            float(slopes),
            initial_state.map(float),
            float(grad_output),
        );
        LightningGrads {
            q: dq.into_primitive().tensor(),
            k: dk.into_primitive().tensor(),
            v: dv.into_primitive().tensor(),
            initial_state: has_state.then(|| ds.into_primitive().tensor()),
        }
    }

    /// Gradients `[dk, dv, d_initial_state]` of `sum(S_n * grad_state)` for the final state
    /// `S_n = lambda^n S_0 + sum_s lambda^(n-1-s) k_s^T v_s` (fp32 `grad_state`).
    fn lightning_state_backward(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        grad_state: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        reference::state_backward::<Self>(float(k), float(v), float(slopes), float(grad_state))
            .map(|t| t.into_primitive().tensor())
    }

    /// One decode step: `q`, `k` `[b, h, d]`, `v` `[b, h, e]`, `slopes` `[h]`, the state
    /// `[b, h, d, e]` in fp32; returns the output `[b, h, e]` in the dtype of `q` and the
    /// next state in fp32.
    fn lightning_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o, state) = recurrent::reference_step::<Self>(
            float(q),
            float(k),
            float(v),
            float(slopes),
            float(state),
        );
        (o.into_primitive().tensor(), state.into_primitive().tensor())
    }
}

/// A [`LightningBackend`] that also tracks gradients.
pub trait LightningAutodiffBackend: LightningBackend + AutodiffBackend {}
impl<B: LightningBackend + AutodiffBackend> LightningAutodiffBackend for B {}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Lightning attention: `q`, `k` `[batch, heads, seq, d]`, `v` `[batch, heads, seq, e]`,
/// `slopes` `[heads]` (`s >= 0`, decay `lambda = exp(-s)`); returns `[batch, heads, seq, e]`.
///
/// No softmax, no scale: TNL normalises the output instead. Panics with the shapes on bad
/// input (see [`lightning_attention_with_state`]). Computes no final state, which spares
/// the fused kernels its store and, on a sequence cut into segments, the last segment's pass
/// over k and v (H200, bf16: 1-9 % of the forward, `benches/NOTES.md` v21d).
pub fn lightning_attention<B: LightningBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: impl IntoSlopes<B>,
) -> Tensor<B, 4> {
    let slopes = slopes.into_slopes("lightning_attention").into_tensor();
    checks::check_attention(&q, &k, &v, &slopes, None);
    let [b, h, n, _] = q.dims();
    if n == 0 {
        return Tensor::empty([b, h, 0, v.dims()[3]], (&q.device(), q.dtype()));
    }
    float(B::lightning_output(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        slopes.into_primitive().tensor(),
    ))
}

/// Lightning attention starting from `initial_state` (`[batch, heads, d, e]`, zeros when
/// `None`); returns the output and the final state `[batch, heads, d, e]` in fp32.
///
/// Gradients flow to q, k, v and the initial state, and from both outputs. Chaining calls
/// through the state equals one call on the concatenated sequence.
///
/// # Panics
/// Before any kernel launch, naming the argument and the shapes: batch, heads or seq of
/// q/k/v differ, q and k head dims differ, `slopes` is not `[heads]` or holds a negative or
/// non-finite value, a head dim is 0 or above [`MAX_HEAD_DIM`], q/k/v dtypes differ, or the
/// initial state is not `[batch, heads, d, e]`. Checking the values of a plain slopes tensor
/// reads it back to the host, a device sync per call; a [`Slopes`] is checked once.
pub fn lightning_attention_with_state<B: LightningBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: impl IntoSlopes<B>,
    initial_state: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let slopes = slopes.into_slopes("lightning_attention").into_tensor();
    checks::check_attention(&q, &k, &v, &slopes, initial_state.as_ref());
    let [b, h, n, d] = q.dims();
    let e = v.dims()[3];
    let initial_state = initial_state.map(|s| s.cast(DType::F32));
    if n == 0 {
        let state =
            initial_state.unwrap_or_else(|| Tensor::zeros([b, h, d, e], (&q.device(), DType::F32)));
        return (Tensor::empty([b, h, 0, e], (&q.device(), q.dtype())), state);
    }
    let (o, state) = B::lightning_forward(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        slopes.into_primitive().tensor(),
        initial_state.map(|s| s.into_primitive().tensor()),
    );
    (float(o), float(state))
}
