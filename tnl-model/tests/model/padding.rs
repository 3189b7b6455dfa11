//! Padding masks: padding never enters a state; the loss skips padding targets.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Tensor, TensorData};
use tnl_model::{TnlConfig, shifted_cross_entropy};

use crate::support::{B, assert_close, max_abs_diff, to_vec, token_rows, tokens};

#[test]
fn left_padded_rows_equal_the_rows_alone() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let long = token_rows(1, 9, 128, 6).remove(0);
    let short = token_rows(1, 4, 128, 7).remove(0);
    let pad = 5;
    let mut padded = vec![17; pad]; // any token: masked
    padded.extend(&short);
    let batch = tokens::<B>(&[long.clone(), padded.clone()], &device);
    let mask: Vec<bool> = (0..18).map(|i| i >= 9 && i - 9 < pad).collect();
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [2, 9]), &device);

    let (logits, cache) = model.prefill(batch, Some(mask.clone()));
    let (alone_long, cache_long) = model.prefill(tokens::<B>(&[long], &device), None);
    let (alone_short, cache_short) = model.prefill(tokens::<B>(&[short], &device), None);
    assert_close(
        logits.clone().narrow(0, 0, 1),
        alone_long,
        1e-4,
        "unpadded row",
    );
    assert_close(
        logits.slice([1..2, pad..9]),
        alone_short,
        1e-4,
        "left-padded row",
    );

    // On layers without LRPE the padded row's state is the short prompt's alone: padding
    // added nothing. (On the LRPE layer it is the same state at positions shifted by `pad`.)
    for layer in 1..3 {
        let s = cache.states()[layer].clone();
        let (l, sh) = (
            cache_long.states()[layer].clone(),
            cache_short.states()[layer].clone(),
        );
        assert_close(
            s.clone().narrow(0, 0, 1),
            l,
            1e-4,
            &format!("layer {layer} long"),
        );
        assert_close(s.narrow(0, 1, 1), sh, 1e-4, &format!("layer {layer} short"));
    }
    // And decoding goes on as if the rows were alone.
    let next = tokens::<B>(&[vec![5], vec![6]], &device).reshape([2]);
    let (step, _) = model.step(next, cache);
    let (step_long, _) = model.step(tokens::<B>(&[vec![5]], &device).reshape([1]), cache_long);
    let (step_short, _) = model.step(tokens::<B>(&[vec![6]], &device).reshape([1]), cache_short);
    assert_close(
        step.clone().narrow(0, 0, 1),
        step_long,
        1e-4,
        "step after padded prefill, long",
    );
    assert_close(
        step.narrow(0, 1, 1),
        step_short,
        1e-4,
        "step after padded prefill, short",
    );

    // Without the mask the padding would leak into the short row.
    let unmasked = model.forward(tokens::<B>(&[vec![0; 9], padded], &device));
    let (alone_short, _) = model.prefill(
        tokens::<B>(&[token_rows(1, 4, 128, 7).remove(0)], &device),
        None,
    );
    assert!(max_abs_diff(unmasked.slice([1..2, pad..9]), alone_short) > 1e-5);
}

#[test]
fn masked_loss_averages_over_real_targets_only() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let a = token_rows(1, 6, 128, 8).remove(0);
    let b = token_rows(1, 4, 128, 9).remove(0);
    let mut b_padded = b.clone();
    b_padded.extend([0, 0]); // right padding
    let mask: Vec<bool> = (0..12).map(|i| i >= 10).collect();
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [2, 6]), &device);
    let batch = tokens::<B>(&[a.clone(), b_padded], &device);
    let loss = to_vec(model.loss(batch, Some(mask)))[0];

    let loss_a = to_vec(model.loss(tokens::<B>(&[a], &device), None))[0];
    let loss_b = to_vec(model.loss(tokens::<B>(&[b], &device), None))[0];
    let want = (5.0 * loss_a + 3.0 * loss_b) / 8.0;
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
}

#[test]
fn unmasked_loss_is_the_mean_next_token_nll() {
    let device = Default::default();
    let rows = token_rows(2, 5, 10, 10);
    let logits = Tensor::<B, 3>::random([2, 5, 10], burn::tensor::Distribution::Default, &device);
    let loss = to_vec(shifted_cross_entropy(
        logits.clone(),
        tokens::<B>(&rows, &device),
        None,
    ))[0];
    let log_p = to_vec(log_softmax(logits, 2));
    let mut sum = 0.0;
    for (b, row) in rows.iter().enumerate() {
        for t in 0..4 {
            sum -= log_p[(b * 5 + t) * 10 + row[t + 1]];
        }
    }
    assert!((loss - sum / 8.0).abs() < 1e-5, "{loss} vs {}", sum / 8.0);
}
