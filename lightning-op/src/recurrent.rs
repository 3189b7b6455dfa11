//! The recurrent form, for decoding: `S_t = lambda S_{t-1} + k_t^T v_t`, `o_t = q_t S_t`.
//!
//! One token costs `O(d e)` per head whatever the context length: the whole past lives in
//! the fp32 state. Prefill a prompt with
//! [`lightning_attention_with_state`](crate::lightning_attention_with_state), then step
//! token by token from its final state; the outputs equal one parallel call on the whole
//! sequence.

use burn::tensor::{DType, Tensor, backend::Backend};

use crate::{IntoSlopes, LightningBackend, checks, float};

/// One decode step: `q`, `k` `[batch, heads, d]`, `v` `[batch, heads, e]`, `slopes`
/// `[heads]`, `state` `[batch, heads, d, e]`. Returns the output `[batch, heads, e]` (dtype
/// of `q`) and the next state (fp32).
///
/// One kernel launch on `CubeBackend` (CUDA, WGPU, also under Fusion); plain tensor ops on
/// other backends and under autodiff, where gradients flow through them. Pass the slopes
/// as a [`Slopes`](crate::Slopes) when stepping token by token: a plain tensor is read back
/// to check its values on every step.
///
/// # Panics
/// On shape or dtype mismatches and bad slopes, like
/// [`lightning_attention_with_state`](crate::lightning_attention_with_state).
pub fn lightning_decode_step<B: LightningBackend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    slopes: impl IntoSlopes<B>,
    state: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let slopes = slopes.into_slopes("lightning_decode_step").into_tensor();
    check_step(&q, &k, &v, &slopes, &state);
    let (o, state) = B::lightning_decode(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        slopes.into_primitive().tensor(),
        state.cast(DType::F32).into_primitive().tensor(),
    );
    (float(o), float(state))
}

/// The step from plain tensor ops: the default of [`LightningBackend::lightning_decode`].
pub(crate) fn reference_step<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    slopes: Tensor<B, 1>,
    state: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [_, h, _] = q.dims();
    let dtype = q.dtype();
    let [q, k, v] = [q, k, v].map(|t| t.cast(DType::F32));
    let lambda = slopes.cast(DType::F32).neg().exp().reshape([1, h, 1, 1]);
    let state = state * lambda + k.unsqueeze_dim::<4>(3) * v.unsqueeze_dim(2);
    let o = q.unsqueeze_dim::<4>(2).matmul(state.clone()).squeeze_dim(2);
    (o.cast(dtype), state)
}

fn check_step<B: Backend>(
    q: &Tensor<B, 3>,
    k: &Tensor<B, 3>,
    v: &Tensor<B, 3>,
    slopes: &Tensor<B, 1>,
    state: &Tensor<B, 4>,
) {
    let op = "lightning_decode_step";
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    if qd != kd {
        panic!(
            "{op}: q and k must have the same shape [batch, heads, d]; got q {qd:?} and k {kd:?}"
        );
    }
    if qd[..2] != vd[..2] {
        panic!(
            "{op}: v must have the batch and heads of q; got q {qd:?} and v {vd:?} (expected v [{}, {}, e])",
            qd[0], qd[1]
        );
    }
    checks::check_dtypes(op, &[("q", q.dtype()), ("k", k.dtype()), ("v", v.dtype())]);
    let [b, h, d] = qd;
    let e = vd[2];
    checks::check_head_dim(op, "d (q and k)", d, &qd);
    checks::check_head_dim(op, "e (v)", e, &vd);
    checks::check_slopes(op, slopes, h);
    let sd = state.dims();
    if sd != [b, h, d, e] {
        panic!("{op}: state must be [batch, heads, d, e] = [{b}, {h}, {d}, {e}]; got {sd:?}");
    }
}
