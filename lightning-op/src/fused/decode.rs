//! The decode step as one kernel: `S' = lambda S + k^T v`, `o = q S'`. A step's work is
//! tiny (`d x e` per head), so the chain of tensor ops it replaces (casts, decay, outer
//! product, add, a batched matrix-vector product) cost a launch each and nothing else.

use burn::tensor::DType;
use burn_cubecl::{CubeRuntime, kernel::into_contiguous, tensor::CubeTensor};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::launch::empty;

/// One unit per state column `(b, h, c)`: walks the column's `d` rows, writing the decayed
/// and updated state and summing `q . S'` in fp32. `q`, `k` `[B, H, D]` and `v` `[B, H, E]`
/// contiguous; `state` `[B, H, D, E]` fp32 read through its strides; `out` `[B, H, E]`,
/// `state_out` `[B, H, D, E]` contiguous. Rows of neighbouring units are adjacent in the
/// state, so every row's loads and stores are coalesced.
#[cube(launch_unchecked)]
pub fn decode_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    slopes: &Tensor<f32>,
    state: &Tensor<f32>,
    out: &mut Tensor<F>,
    state_out: &mut Tensor<f32>,
    #[define(F)] _dtype: StorageType,
) {
    let idx = ABSOLUTE_POS;
    if idx >= out.len() {
        terminate!();
    }
    let heads = q.shape(1);
    let d = q.shape(2);
    let e = v.shape(2);
    let c = idx % e;
    let bh = idx / e;
    let head = bh % heads;
    let batch = bh / heads;
    let lambda = (-slopes[head]).exp();
    let vc = f32::cast_from(v[idx]);
    let s_base = batch * state.stride(0) + head * state.stride(1) + c * state.stride(3);
    let mut acc = 0.0f32;
    for r in 0..d {
        let s = lambda * state[s_base + r * state.stride(2)] + f32::cast_from(k[bh * d + r]) * vc;
        state_out[(bh * d + r) * e + c] = s;
        acc += f32::cast_from(q[bh * d + r]) * s;
    }
    out[idx] = F::cast_from(acc);
}

/// One decode step; `slopes` and `state` fp32. Returns the output `[b, h, e]` in `q`'s
/// dtype and the next state `[b, h, d, e]`.
pub(crate) fn decode<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    slopes: CubeTensor<R>,
    state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let q = into_contiguous(q);
    let [b, h, d] = q.meta.shape().dims::<3>();
    let e = v.meta.shape()[2];
    let out = empty(&q, vec![b, h, e], q.dtype);
    let state_out = empty(&q, vec![b, h, d, e], DType::F32);
    let elements = b * h * e;
    if elements == 0 {
        // No launch: CUDA refuses a launch of zero blocks.
        return (out, state_out);
    }
    let cube_dim = CubeDim::new(&q.client, elements);
    let count = calculate_cube_count_elemwise(&q.client, elements, cube_dim);
    // SAFETY: one unit per output element, guarded by `idx >= out.len()`; every other index
    // is bounded by the shapes the public function checked.
    unsafe {
        decode_kernel::launch_unchecked::<R>(
            &q.client,
            count,
            cube_dim,
            q.clone().into_tensor_arg(),
            into_contiguous(k).into_tensor_arg(),
            into_contiguous(v).into_tensor_arg(),
            into_contiguous(slopes).into_tensor_arg(),
            state.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            state_out.clone().into_tensor_arg(),
            out.dtype.into(),
        );
    }
    (out, state_out)
}
