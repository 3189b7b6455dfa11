//! The blockwise algorithm written with ordinary Burn tensor ops (matmuls and masks).
//!
//! Every backend can run it; the tests use it as the oracle for the fused kernels. It
//! computes in fp32 whatever the storage dtype and returns the output in the input's dtype.
//!
//! The backward is three more sweeps of the same forward algorithm with the roles of the
//! tensors exchanged (see [`backward`]), exactly as the fused backward does it.

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

/// Tokens per block of the reference sweep.
pub const BLOCK: usize = 64;

/// Output `[b, h, n, e]` (dtype of `q`) and final fp32 state `[b, h, d, e]`.
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: Tensor<B, 1>,
    initial_state: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    sweep(q, k, v, slopes, initial_state, Direction::Forward)
}

/// Gradients `[dq, dk, dv, d_initial_state]` of `sum(o * grad_output)`.
///
/// With `t' = n - 1 - t`, the gradients are lightning attention again:
/// - `dq = LA(q: do, k: v, v: k)` from the state `S0^T`, forward in time;
/// - `dv = LA(q: k, k: q, v: do)` and `dk = LA(q: v, k: do, v: q)` backward in time, whose
///   state is `dKV = sum_t lambda^(t+1) q_t^T do_t`: one decay factor sits in the state
///   update instead of the inter term ([`Direction::Backward`]). The state left after the
///   `dv` sweep is the initial state's gradient.
pub fn backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: Tensor<B, 1>,
    initial_state: Option<Tensor<B, 4>>,
    grad_output: Tensor<B, 4>,
) -> [Tensor<B, 4>; 4] {
    let s0_t = initial_state.map(|s| s.swap_dims(2, 3));
    let (dq, _) = sweep(
        grad_output.clone(),
        v.clone(),
        k.clone(),
        slopes.clone(),
        s0_t,
        Direction::Forward,
    );
    let (dv, ds0) = sweep(
        k,
        q.clone(),
        grad_output.clone(),
        slopes.clone(),
        None,
        Direction::Backward,
    );
    let (dk, _) = sweep(v, grad_output, q, slopes, None, Direction::Backward);
    [dq, dk, dv, ds0]
}

/// Gradients `[dk, dv, d_initial_state]` of `sum(S_n * grad_state)`:
/// `dk_t = lambda^(n-1-t) v_t dS^T`, `dv_t = lambda^(n-1-t) k_t dS`, `dS_0 = lambda^n dS`.
pub fn state_backward<B: Backend>(
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: Tensor<B, 1>,
    grad_state: Tensor<B, 4>,
) -> [Tensor<B, 4>; 3] {
    let [_, h, n, _] = k.dims();
    let dtype = k.dtype();
    let neg_slopes = slopes.cast(DType::F32).reshape([1, h, 1, 1]).neg();
    let powers = TensorData::new((0..n).rev().map(|p| p as f32).collect(), [1, 1, n, 1]);
    let weight =
        (neg_slopes.clone() * Tensor::<B, 4>::from_data(powers, (&k.device(), DType::F32))).exp();
    let grad_state = grad_state.cast(DType::F32);
    let dk = (v.cast(DType::F32) * weight.clone()).matmul(grad_state.clone().swap_dims(2, 3));
    let dv = (k.cast(DType::F32) * weight).matmul(grad_state.clone());
    let ds0 = (neg_slopes * n as f32).exp() * grad_state;
    [dk.cast(dtype), dv.cast(dtype), ds0]
}

/// Which way a sweep walks the sequence, and where its extra decay factor sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `t = 0..n`; inter term `lambda^(i+1) Q KV`, update `lambda^(m-1-j) k_j v_j`.
    Forward,
    /// `t = n-1..0`; inter term `lambda^i Q KV`, update `lambda^(m-j) k_j v_j`.
    Backward,
}

/// One blockwise sweep: for each block of [`BLOCK`] tokens (in sweep order), intra
/// `((Q K^T) * M) V`, inter `diag(lambda^(i+1-shift)) Q KV`, then the state update.
pub fn sweep<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: Tensor<B, 1>,
    initial_state: Option<Tensor<B, 4>>,
    direction: Direction,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let dtype = q.dtype();
    let device = q.device();
    let [b, h, n, d] = q.dims();
    let e = v.dims()[3];
    let reverse = direction == Direction::Backward;
    let shift = if reverse { 1.0 } else { 0.0 };
    let prepare = |t: Tensor<B, 4>| {
        let t = t.cast(DType::F32);
        if reverse { t.flip([2]) } else { t }
    };
    let (q, k, v) = (prepare(q), prepare(k), prepare(v));
    let neg_slopes = slopes.cast(DType::F32).reshape([1, h, 1, 1]).neg();
    let host = |values: Vec<f32>, shape: [usize; 4]| {
        Tensor::<B, 4>::from_data(TensorData::new(values, shape), (&device, DType::F32))
    };

    let mut kv = initial_state
        .map(|s| s.cast(DType::F32))
        .unwrap_or_else(|| Tensor::zeros([b, h, d, e], (&device, DType::F32)));
    let mut outputs = Vec::with_capacity(n.div_ceil(BLOCK));
    for t0 in (0..n).step_by(BLOCK) {
        let m = BLOCK.min(n - t0);
        let rows = t0..t0 + m;
        let (qb, kb, vb) = (
            q.clone().slice([0..b, 0..h, rows.clone(), 0..d]),
            k.clone().slice([0..b, 0..h, rows.clone(), 0..d]),
            v.clone().slice([0..b, 0..h, rows, 0..e]),
        );
        // M_ij = lambda^(i-j) below the diagonal; the exponent is clamped at 0 above it so
        // no exp(+large) is formed, then the mask zeroes those entries.
        let exponent = (0..m * m).map(|x| (x / m).saturating_sub(x % m) as f32);
        let causal = (0..m * m).map(|x| if x % m <= x / m { 1.0 } else { 0.0 });
        let decay_mask = (neg_slopes.clone() * host(exponent.collect(), [1, 1, m, m])).exp()
            * host(causal.collect(), [1, 1, m, m]);
        let intra = (qb.clone().matmul(kb.clone().swap_dims(2, 3)) * decay_mask).matmul(vb.clone());

        let inter_pow = (0..m).map(|i| i as f32 + 1.0 - shift).collect();
        let inter_decay = (neg_slopes.clone() * host(inter_pow, [1, 1, m, 1])).exp();
        outputs.push(intra + inter_decay * qb.matmul(kv.clone()));

        let update_pow = (0..m).map(|j| (m - 1 - j) as f32 + shift).collect();
        let update_decay = (neg_slopes.clone() * host(update_pow, [1, 1, m, 1])).exp();
        let block_decay = (neg_slopes.clone() * m as f32).exp();
        kv = kv * block_decay + (kb * update_decay).swap_dims(2, 3).matmul(vb);
    }
    let out = if outputs.is_empty() {
        Tensor::zeros([b, h, 0, e], (&device, DType::F32))
    } else {
        Tensor::cat(outputs, 2)
    };
    let out = if reverse { out.flip([2]) } else { out };
    (out.cast(dtype), kv)
}
