//! Argument checks, run before any kernel launch, Burn style: panic naming the argument,
//! the shapes got and what was expected.

use burn::tensor::{Tensor, backend::Backend};

/// Largest head dim (d or e) the op accepts, on every backend.
///
/// The fused kernels stream the qk dim through shared memory in chunks and split the value
/// dim across cubes, so the bound comes from the on-chip fp32 state slice (`d x ev`), which
/// must fit next to the block tiles on devices with 32 KiB of shared memory.
pub const MAX_HEAD_DIM: usize = 256;

pub(crate) fn check_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    slopes: &Tensor<B, 1>,
    initial_state: Option<&Tensor<B, 4>>,
) {
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    let op = "lightning_attention";
    if qd != kd {
        panic!(
            "{op}: q and k must have the same shape [batch, heads, seq, d]; got q {qd:?} and k {kd:?}"
        );
    }
    if qd[..3] != vd[..3] {
        panic!(
            "{op}: v must have the batch, heads and seq of q; got q {qd:?} and v {vd:?} \
             (expected v [{}, {}, {}, e])",
            qd[0], qd[1], qd[2]
        );
    }
    check_dtypes(op, &[("q", q.dtype()), ("k", k.dtype()), ("v", v.dtype())]);
    let [b, h, _, d] = qd;
    let e = vd[3];
    check_head_dim(op, "d (q and k)", d, &qd);
    check_head_dim(op, "e (v)", e, &vd);
    check_slopes(op, slopes, h);
    if let Some(state) = initial_state {
        let sd = state.dims();
        if sd != [b, h, d, e] {
            panic!(
                "{op}: initial_state must be [batch, heads, d, e] = [{b}, {h}, {d}, {e}]; got {sd:?}"
            );
        }
    }
}

pub(crate) fn check_dtypes(op: &str, dtypes: &[(&str, burn::tensor::DType)]) {
    let (first, dtype) = dtypes[0];
    for (name, other) in &dtypes[1..] {
        if *other != dtype {
            panic!(
                "{op}: {first} and {name} must have the same dtype; got {dtype:?} and {other:?}"
            );
        }
    }
}

pub(crate) fn check_head_dim(op: &str, name: &str, dim: usize, shape: &[usize]) {
    if dim == 0 || dim > MAX_HEAD_DIM {
        panic!("{op}: head dim {name} must be in 1..={MAX_HEAD_DIM}; got {dim} (shape {shape:?})");
    }
}

/// The slopes' shape (their values are checked by [`crate::IntoSlopes`]).
pub(crate) fn check_slopes<B: Backend>(op: &str, slopes: &Tensor<B, 1>, heads: usize) {
    let [len] = slopes.dims();
    if len != heads {
        panic!("{op}: slopes must be [heads] = [{heads}]; got [{len}]");
    }
}
