//! Generation: seeded determinism, greedy == argmax of the parallel forward, batching, and
//! the sampling filters.

use tnl_model::sampling::{Sampler, candidates};
use tnl_model::{GenerateConfig, TnlConfig};

use crate::support::{B, to_vec, token_rows, tokens};

#[test]
fn same_seed_same_tokens() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let prompts = [vec![1, 2, 3], vec![9]];
    let config = GenerateConfig::new(12)
        .with_temperature(1.0)
        .with_top_k(Some(50))
        .with_top_p(Some(0.95))
        .with_seed(42);
    let a = model.generate(&prompts, &config);
    let b = model.generate(&prompts, &config);
    assert_eq!(a, b);
    assert!(
        a.iter()
            .all(|row| row.len() == 12 && row.iter().all(|&t| t < 128))
    );
    let c = model.generate(&prompts, &config.clone().with_seed(43));
    assert_ne!(a, c, "another seed should give other tokens");
}

#[test]
fn greedy_generation_is_the_argmax_of_the_parallel_forward() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let prompt = token_rows(1, 5, 128, 11).remove(0);
    let new = model.generate(
        std::slice::from_ref(&prompt),
        &GenerateConfig::new(8).with_temperature(0.0),
    );
    let new = &new[0];
    let mut all = prompt.clone();
    all.extend(new);
    let logits = to_vec(model.forward(tokens::<B>(&[all.clone()], &device)));
    for (i, &token) in new.iter().enumerate() {
        let pos = prompt.len() - 1 + i;
        let row = &logits[pos * 128..(pos + 1) * 128];
        let argmax = (0..128).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(token, argmax, "token {i}");
    }
    // top-k 1 is greedy at any temperature.
    let top1 = model.generate(
        &[prompt],
        &GenerateConfig::new(8).with_top_k(Some(1)).with_seed(5),
    );
    assert_eq!(&top1[0], new);
}

#[test]
fn a_batch_of_different_lengths_matches_each_prompt_alone() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let prompts = [
        token_rows(1, 7, 128, 12).remove(0),
        vec![3],
        token_rows(1, 3, 128, 13).remove(0),
    ];
    let greedy = GenerateConfig::new(6).with_temperature(0.0);
    let batch = model.generate(&prompts, &greedy);
    for (i, prompt) in prompts.iter().enumerate() {
        assert_eq!(
            batch[i],
            model.generate(std::slice::from_ref(prompt), &greedy)[0],
            "prompt {i}"
        );
    }
}

#[test]
fn generation_stops_at_eos() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device);
    let greedy = GenerateConfig::new(6).with_temperature(0.0);
    let free = model.generate(&[vec![1, 2]], &greedy).remove(0);
    let eos = free[2];
    let first = free.iter().position(|&t| t == eos).unwrap();
    let stopped = model
        .generate(&[vec![1, 2]], &greedy.with_eos_token(Some(eos)))
        .remove(0);
    assert_eq!(stopped, free[..=first]);
}

#[test]
fn sampling_filters() {
    let logits = [1.0f32, 3.0, 2.0, 0.0];
    // Greedy.
    assert_eq!(candidates(&logits, 0.0, None, None), vec![(1, 1.0)]);
    // Full softmax, sorted.
    let all = candidates(&logits, 1.0, None, None);
    assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2, 0, 3]);
    let z: f64 = [1.0f64, 3.0, 2.0, 0.0].iter().map(|l| l.exp()).sum();
    assert!((all[0].1 - 3f64.exp() / z).abs() < 1e-9);
    // Top-k renormalises over the k kept.
    let top2 = candidates(&logits, 1.0, Some(2), None);
    assert_eq!(top2.len(), 2);
    assert!((top2[0].1 - 3f64.exp() / (3f64.exp() + 2f64.exp())).abs() < 1e-9);
    // Top-p keeps the smallest prefix reaching p: p(1) ~ 0.64, p(1) + p(2) ~ 0.88.
    assert_eq!(candidates(&logits, 1.0, None, Some(0.5)).len(), 1);
    assert_eq!(candidates(&logits, 1.0, None, Some(0.8)).len(), 2);
    assert_eq!(candidates(&logits, 1.0, None, Some(1.0)).len(), 4);
    // High temperature flattens.
    let hot = candidates(&logits, 100.0, None, None);
    assert!(hot.iter().all(|c| (c.1 - 0.25).abs() < 0.01));
    // Frequencies follow the probabilities: p = 1/4, 3/4.
    let mut sampler = Sampler::new(1, 1.0, None, None);
    let ones = (0..4000)
        .filter(|_| sampler.sample(&[0.0, 3f32.ln()]) == 1)
        .count();
    assert!((ones as f64 / 4000.0 - 0.75).abs() < 0.03, "{ones}");
}

#[test]
#[should_panic(expected = "sampling: top_p must be in (0, 1], got 1.5")]
fn bad_top_p_panics() {
    candidates(&[0.0, 1.0], 1.0, None, Some(1.5));
}
