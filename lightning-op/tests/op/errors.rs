//! Every bad input panics before any launch with the argument, the shapes and what was
//! expected.

use burn::backend::{NdArray, Wgpu};
use burn::tensor::{DType, Tensor, backend::Backend};
use lightning_op::{
    Slopes, lightning_attention, lightning_attention_with_state, lightning_decode_step,
};

type B = NdArray;

fn t<Bk: Backend, const D: usize>(shape: [usize; D]) -> Tensor<Bk, D> {
    Tensor::ones(shape, &Default::default())
}

fn slopes<Bk: Backend>(values: &[f32]) -> Tensor<Bk, 1> {
    Tensor::from_floats(values, &Default::default())
}

#[test]
#[should_panic(
    expected = "lightning_attention: q and k must have the same shape [batch, heads, seq, d]; got q [2, 4, 64, 32] and k [2, 4, 65, 32]"
)]
fn seq_mismatch_q_k() {
    lightning_attention::<B>(
        t([2, 4, 64, 32]),
        t([2, 4, 65, 32]),
        t([2, 4, 64, 16]),
        slopes(&[0.1; 4]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: q and k must have the same shape [batch, heads, seq, d]; got q [2, 4, 64, 32] and k [2, 4, 64, 16]"
)]
fn dim_mismatch_q_k() {
    lightning_attention::<B>(
        t([2, 4, 64, 32]),
        t([2, 4, 64, 16]),
        t([2, 4, 64, 16]),
        slopes(&[0.1; 4]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: v must have the batch, heads and seq of q; got q [2, 4, 64, 32] and v [3, 4, 64, 16] (expected v [2, 4, 64, e])"
)]
fn batch_mismatch_v() {
    lightning_attention::<B>(
        t([2, 4, 64, 32]),
        t([2, 4, 64, 32]),
        t([3, 4, 64, 16]),
        slopes(&[0.1; 4]),
    );
}

#[test]
#[should_panic(expected = "lightning_attention: v must have the batch, heads and seq of q")]
fn heads_mismatch_v() {
    lightning_attention::<B>(
        t([2, 4, 64, 32]),
        t([2, 4, 64, 32]),
        t([2, 5, 64, 16]),
        slopes(&[0.1; 4]),
    );
}

#[test]
#[should_panic(expected = "lightning_attention: slopes must be [heads] = [4]; got [3]")]
fn slopes_length() {
    lightning_attention::<B>(
        t([2, 4, 8, 32]),
        t([2, 4, 8, 32]),
        t([2, 4, 8, 16]),
        slopes(&[0.1; 3]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got -0.5 for head 2"
)]
fn negative_slope() {
    lightning_attention::<B>(
        t([1, 4, 8, 8]),
        t([1, 4, 8, 8]),
        t([1, 4, 8, 8]),
        slopes(&[0.1, 0.0, -0.5, 1.0]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got NaN for head 0"
)]
fn nan_slope() {
    lightning_attention::<B>(
        t([1, 2, 8, 8]),
        t([1, 2, 8, 8]),
        t([1, 2, 8, 8]),
        slopes(&[f32::NAN, 0.0]),
    );
}

#[test]
#[should_panic(expected = "got inf for head 1")]
fn infinite_slope_on_wgpu_before_launch() {
    lightning_attention::<Wgpu>(
        t([1, 2, 8, 8]),
        t([1, 2, 8, 8]),
        t([1, 2, 8, 8]),
        slopes(&[0.0, f32::INFINITY]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: head dim d (q and k) must be in 1..=256; got 257 (shape [1, 1, 4, 257])"
)]
fn head_dim_too_large() {
    lightning_attention::<B>(
        t([1, 1, 4, 257]),
        t([1, 1, 4, 257]),
        t([1, 1, 4, 8]),
        slopes(&[0.1]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: head dim e (v) must be in 1..=256; got 300 (shape [1, 1, 4, 300])"
)]
fn value_dim_too_large_on_wgpu() {
    lightning_attention::<Wgpu>(
        t([1, 1, 4, 8]),
        t([1, 1, 4, 8]),
        t([1, 1, 4, 300]),
        slopes(&[0.1]),
    );
}

#[test]
#[should_panic(expected = "lightning_attention: head dim e (v) must be in 1..=256; got 0")]
fn value_dim_zero() {
    lightning_attention::<B>(
        t([1, 1, 4, 8]),
        t([1, 1, 4, 8]),
        t([1, 1, 4, 0]),
        slopes(&[0.1]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: initial_state must be [batch, heads, d, e] = [2, 4, 32, 16]; got [2, 4, 16, 32]"
)]
fn initial_state_shape() {
    lightning_attention_with_state::<B>(
        t([2, 4, 8, 32]),
        t([2, 4, 8, 32]),
        t([2, 4, 8, 16]),
        slopes(&[0.1; 4]),
        Some(t([2, 4, 16, 32])),
    );
}

#[test]
#[should_panic(expected = "lightning_attention: q and k must have the same dtype; got F32 and F64")]
fn dtype_mismatch() {
    lightning_attention::<B>(
        t([1, 1, 4, 8]),
        t::<B, 4>([1, 1, 4, 8]).cast(DType::F64),
        t([1, 1, 4, 8]),
        slopes(&[0.1]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_decode_step: state must be [batch, heads, d, e] = [1, 2, 8, 4]; got [1, 2, 4, 8]"
)]
fn decode_state_shape() {
    lightning_decode_step::<B>(
        t([1, 2, 8]),
        t([1, 2, 8]),
        t([1, 2, 4]),
        slopes(&[0.1, 0.2]),
        t([1, 2, 4, 8]),
    );
}

#[test]
#[should_panic(
    expected = "lightning_decode_step: v must have the batch and heads of q; got q [1, 2, 8] and v [1, 3, 4] (expected v [1, 2, e])"
)]
fn decode_heads_mismatch() {
    lightning_decode_step::<B>(
        t([1, 2, 8]),
        t([1, 2, 8]),
        t([1, 3, 4]),
        slopes(&[0.1, 0.2]),
        t([1, 2, 8, 4]),
    );
}

#[test]
#[should_panic(
    expected = "Slopes::from_values: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got -1 for head 1"
)]
fn negative_slope_from_values() {
    Slopes::<B>::from_values(&[0.5, -1.0], &Default::default());
}

#[test]
#[should_panic(
    expected = "Slopes::new: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got inf for head 0"
)]
fn infinite_slope_checked_once() {
    Slopes::new(slopes::<B>(&[f32::INFINITY, 0.5]));
}

#[test]
#[should_panic(
    expected = "lightning_decode_step: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got -0.25 for head 1"
)]
fn negative_slope_decode_step() {
    lightning_decode_step::<B>(
        t([1, 2, 8]),
        t([1, 2, 8]),
        t([1, 2, 4]),
        slopes(&[0.5, -0.25]),
        t([1, 2, 8, 4]),
    );
}

#[test]
#[should_panic(expected = "lightning_attention: slopes must be [heads] = [2]; got [3]")]
fn checked_slopes_still_need_one_per_head() {
    lightning_attention::<B>(
        t([1, 2, 8, 8]),
        t([1, 2, 8, 8]),
        t([1, 2, 8, 8]),
        Slopes::from_values(&[0.1, 0.2, 0.3], &Default::default()),
    );
}
