//! Parallel == recurrent: prefill with the parallel op, then one token at a time through
//! `lightning_decode_step`, against one parallel pass over the whole sequence.

use burn::tensor::Tensor;
use tnl_model::{DecaySchedule, Tnl, TnlConfig};

use crate::support::{B, assert_close, token_rows, tokens};

/// Prefill `prompt_len` tokens, step the rest; every logit within `tol` of `forward`.
fn check_parallel_equals_recurrent(model: &Tnl<B>, rows: &[Vec<usize>], prompt_len: usize) {
    let device = Default::default();
    let (batch, seq) = (rows.len(), rows[0].len());
    let all = tokens::<B>(rows, &device);
    let want = model.forward(all.clone());
    let vocab = want.dims()[2];

    let prompt = all.clone().slice([0..batch, 0..prompt_len]);
    let (logits, mut cache) = model.prefill(prompt, None);
    assert_close(
        logits,
        want.clone().slice([0..batch, 0..prompt_len]),
        1e-4,
        "prefill logits",
    );
    for t in prompt_len..seq {
        let token = all.clone().slice([0..batch, t..t + 1]).reshape([batch]);
        let (logits, next) = model.step(token, cache);
        cache = next;
        let want_t = want
            .clone()
            .slice([0..batch, t..t + 1])
            .reshape([batch, vocab]);
        assert_close(
            logits,
            want_t,
            1e-4,
            &format!("step logits at position {t}"),
        );
    }
    assert_eq!(cache.position(), seq);
}

#[test]
fn step_logits_equal_the_parallel_forward() {
    let device = Default::default();
    let rows = token_rows(2, 12, 128, 3);
    let model = TnlConfig::tiny().init::<B>(&device);
    check_parallel_equals_recurrent(&model, &rows, 5);
    check_parallel_equals_recurrent(&model, &rows, 1);

    // LRPE everywhere, untied head, paper decay, no embedding scale.
    let model = TnlConfig::tiny()
        .with_lrpe_layers(vec![0, 1, 2])
        .with_tie_embeddings(false)
        .with_decay(DecaySchedule::Paper)
        .with_scale_embedding(false)
        .init::<B>(&device);
    check_parallel_equals_recurrent(&model, &rows, 4);
}

#[test]
fn chunked_prefill_equals_one_pass() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let all = tokens::<B>(&token_rows(2, 80, 128, 4), &device);
    let want = model.forward(all.clone());
    let (first, cache) = model.prefill(all.clone().slice([0..2, 0..30]), None);
    let (second, cache) = model.forward_cached(all.slice([0..2, 30..80]), None, Some(cache));
    assert_eq!(cache.position(), 80);
    assert_close(
        Tensor::cat(vec![first, second], 1),
        want,
        1e-4,
        "two chunks",
    );
}

#[test]
fn the_cache_stays_the_same_size() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let rows = token_rows(2, 6, 128, 5);
    let (_, mut cache) = model.prefill(tokens::<B>(&rows, &device), None);
    let shapes: Vec<[usize; 4]> = cache.states().iter().map(|s| s.dims()).collect();
    // Layer 0 has LRPE: d doubles, e does not.
    assert_eq!(shapes, vec![[2, 4, 16, 8], [2, 4, 8, 8], [2, 4, 8, 8]]);
    for i in 0..5 {
        let token = tokens::<B>(&[vec![i], vec![i + 1]], &device).reshape([2]);
        cache = model.step(token, cache).1;
        let now: Vec<[usize; 4]> = cache.states().iter().map(|s| s.dims()).collect();
        assert_eq!(now, shapes);
        assert!(
            cache
                .states()
                .iter()
                .all(|s| s.dtype() == burn::tensor::DType::F32)
        );
    }
    assert_eq!(cache.position(), 11);
}
