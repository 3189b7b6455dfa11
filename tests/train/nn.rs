//! `lightning_op::nn::MultiHeadLightningAttention`: shapes, causality, chunked == whole.

use burn::backend::NdArray;
use burn::tensor::{Bool, Distribution, Tensor, TensorData, Tolerance};
use lightning_op::nn::{LightningInput, MultiHeadLightningAttentionConfig, alibi_slopes};

use crate::fixture::rng_lock;

type B = NdArray;

fn layer() -> lightning_op::nn::MultiHeadLightningAttention<B> {
    MultiHeadLightningAttentionConfig::new(32, 4)
        .with_dropout(0.0)
        .init::<B>(&Default::default())
}

#[test]
fn output_has_the_input_shape() {
    let _rng = rng_lock();
    let device = Default::default();
    let attention = layer();
    for [b, n] in [[1, 1], [2, 10], [3, 70]] {
        let x = Tensor::<B, 3>::random([b, n, 32], Distribution::Default, &device);
        let out = attention.forward(LightningInput::self_attn(x));
        assert_eq!(out.context.dims(), [b, n, 32]);
    }
    let x = Tensor::<B, 3>::random([2, 5, 32], Distribution::Default, &device);
    let (_, state) = attention.forward_cached(LightningInput::self_attn(x), None);
    assert_eq!(state.dims(), [2, 4, 8, 8]);
    assert_eq!(alibi_slopes(4).len(), 4);
    assert_eq!(alibi_slopes(6).len(), 6);
}

#[test]
fn future_tokens_do_not_change_past_outputs() {
    let _rng = rng_lock();
    let device = Default::default();
    let attention = layer();
    let x = Tensor::<B, 3>::random([2, 24, 32], Distribution::Default, &device);
    let before = attention
        .forward(LightningInput::self_attn(x.clone()))
        .context;
    // Change tokens 12.. only.
    let noise = Tensor::<B, 3>::random([2, 12, 32], Distribution::Default, &device) * 5.0;
    let changed = Tensor::cat(vec![x.clone().slice([0..2, 0..12]), noise], 1);
    let after = attention
        .forward(LightningInput::self_attn(changed))
        .context;
    before
        .clone()
        .slice([0..2, 0..12])
        .into_data()
        .assert_approx_eq::<f32>(
            &after.clone().slice([0..2, 0..12]).into_data(),
            Tolerance::default(),
        );
    let diff = (before.slice([0..2, 12..24]) - after.slice([0..2, 12..24]))
        .abs()
        .max()
        .into_scalar();
    assert!(diff > 1e-3, "later outputs should see the change");

    // A padded position adds nothing to what follows.
    let mask = Tensor::<B, 2, Bool>::from_data(
        TensorData::new((0..48).map(|i| i % 24 == 3).collect::<Vec<bool>>(), [2, 24]),
        &device,
    );
    let masked = attention
        .forward(LightningInput::self_attn(x.clone()).mask_pad(mask.clone()))
        .context;
    let mut y = x.clone();
    let junk = Tensor::<B, 3>::random([2, 1, 32], Distribution::Default, &device) * 9.0;
    y = y.slice_assign([0..2, 3..4], junk);
    let masked_junk = attention
        .forward(LightningInput::self_attn(y).mask_pad(mask))
        .context;
    masked
        .slice([0..2, 4..24])
        .into_data()
        .assert_approx_eq::<f32>(
            &masked_junk.slice([0..2, 4..24]).into_data(),
            Tolerance::default(),
        );
}

#[test]
fn chunked_forward_cached_equals_one_pass() {
    let _rng = rng_lock();
    let device = Default::default();
    let attention = layer();
    let x = Tensor::<B, 3>::random([2, 40, 32], Distribution::Default, &device);
    let whole = attention
        .forward(LightningInput::self_attn(x.clone()))
        .context;
    let mut state = None;
    let mut parts = Vec::new();
    for (from, to) in [(0, 7), (7, 8), (8, 33), (33, 40)] {
        let chunk = x.clone().slice([0..2, from..to]);
        let (out, next) = attention.forward_cached(LightningInput::self_attn(chunk), state);
        parts.push(out.context);
        state = Some(next);
    }
    Tensor::cat(parts, 1)
        .into_data()
        .assert_approx_eq::<f32>(&whole.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
}
