//! Short runs through burn-train's `Learner`: the loss goes down, and a resumed run
//! continues exactly where the uninterrupted one would be.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use lightning_attention::train::cli::train_main;
use lightning_attention::train::model::{LanguageModel, ModelSpec};
use tnl_model::TnlConfig;

use crate::fixture::{TempDir, rng_lock, short_args, write_corpus};

#[test]
fn a_short_run_lowers_the_validation_loss() {
    let _rng = rng_lock();
    let dir = TempDir::new("short-run");
    let data = write_corpus(dir.path());
    let summary = train_main(short_args(&data, &dir.path().join("run"), 40, &[]))
        .expect("the short run trains");
    let valid: Vec<f64> = summary.history.valid.iter().map(|v| v.loss).collect();
    assert_eq!(valid.len(), 4, "one validation per checkpoint: {valid:?}");
    let (first, last) = (valid[0], valid[3]);
    assert!(
        last < first - 0.2,
        "validation loss should fall over the run: {valid:?}"
    );
    assert!(
        last < (256f64).ln() - 1.0,
        "validation loss {last} should be well below uniform bytes ({})",
        (256f64).ln()
    );
    assert!(summary.history.train.len() == 40, "one loss per step");
    assert!(
        dir.path().join("run/checkpoint/model-4.mpk").is_file(),
        "the last checkpoint is on disk"
    );
}

#[test]
fn resuming_gives_the_same_next_step_as_an_uninterrupted_run() {
    let _rng = rng_lock();
    let dir = TempDir::new("resume");
    let data = write_corpus(dir.path());

    let straight = train_main(short_args(&data, &dir.path().join("straight"), 30, &[]))
        .expect("uninterrupted run");

    let interrupted = dir.path().join("interrupted");
    let first = train_main(short_args(&data, &interrupted, 30, &["--stop-after", "2"]))
        .expect("first half");
    assert_eq!(first.history.valid.len(), 2, "stopped after checkpoint 2");
    let resumed =
        train_main(short_args(&data, &interrupted, 30, &["--resume"])).expect("resumed run");
    assert_eq!(resumed.resumed_from, Some(2));

    // Steps 1..=20 agree (same seed), and so does the first step after the resume.
    for step in [1, 20] {
        let a = straight.history.train_loss(step).unwrap();
        let b = first.history.train_loss(step).unwrap();
        assert!((a - b).abs() < 1e-6, "step {step}: {a} vs {b}");
    }
    let a = straight
        .history
        .train_loss(21)
        .expect("step 21 of the straight run");
    let b = resumed
        .history
        .train_loss(21)
        .expect("step 21 of the resumed run");
    assert!(
        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
        "next-step loss after resuming: {b} vs uninterrupted {a}"
    );
    assert!(
        resumed.history.train_loss(20).is_none(),
        "the resumed run starts at 21"
    );
    let (a, b) = (
        straight.final_valid_loss.unwrap(),
        resumed.final_valid_loss.unwrap(),
    );
    assert!((a - b).abs() <= 1e-4, "final validation loss {b} vs {a}");
}

#[test]
fn two_devices_count_every_batch_once_and_train() {
    let _rng = rng_lock();
    let dir = TempDir::new("two-devices");
    let data = write_corpus(dir.path());
    // NdArray: two model copies on the CPU, through burn-train's multi-device strategy.
    let summary = train_main(short_args(
        &data,
        &dir.path().join("run"),
        40,
        &["--devices", "0,1"],
    ))
    .expect("the two-device run trains");
    let steps: Vec<usize> = summary.history.train.iter().map(|&(s, _)| s).collect();
    assert_eq!(
        steps,
        (1..=40).collect::<Vec<_>>(),
        "steps count batches over both devices"
    );
    let valid: Vec<f64> = summary.history.valid.iter().map(|v| v.loss).collect();
    assert_eq!(valid.len(), 4, "one validation per checkpoint: {valid:?}");
    assert!(
        valid[3] < valid[0] - 0.1,
        "validation loss should fall: {valid:?}"
    );
    assert!(summary.history.tokens_per_second() > 0.0);
}

#[test]
fn the_learning_rate_follows_batches_under_every_strategy() {
    use lightning_attention::train::{TrainingConfig, WarmupCosine};
    let config = TrainingConfig::new().with_steps(100).with_warmup_steps(10);
    let one_device = WarmupCosine::new(&config, 1, 1);
    // Two devices: the multi-device strategy steps the schedule once per optimizer step
    // (two batches), DDP twice.
    let multi = WarmupCosine::new(&config, 2, 1);
    let ddp = WarmupCosine::new(&config, 2, 2);
    for optimizer_step in 1..=50 {
        let batches = 2 * optimizer_step;
        let want = one_device.lr_at(batches);
        for (name, got) in [
            ("multi", multi.lr_at(optimizer_step)),
            ("ddp", ddp.lr_at(batches)),
        ] {
            assert!(
                (got - want).abs() < 1e-12,
                "{name}, after {batches} batches: lr {got}, one device {want}"
            );
        }
    }
}

/// DDP clones the model once per GPU: the clones must start from the same weights.
#[test]
fn clones_of_a_new_model_hold_the_same_weights() {
    let _rng = rng_lock();
    let device = Default::default();
    let tokens = Tensor::<NdArray, 2, Int>::from_ints([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
    let spec = ModelSpec::Tnl(TnlConfig::tiny());
    let model = LanguageModel::<NdArray>::new(&spec, &device);
    let (a, b) = (model.clone(), model.clone());
    a.logits(tokens.clone())
        .into_data()
        .assert_eq(&b.logits(tokens.clone()).into_data(), true);

    // The hazard: clones of a model whose weights are not drawn yet draw different ones.
    let lazy: tnl_model::Tnl<NdArray> = TnlConfig::tiny().init(&device);
    let (c, d) = (lazy.clone(), lazy);
    let gap = (c.forward(tokens.clone()) - d.forward(tokens))
        .abs()
        .max()
        .into_scalar();
    assert!(gap > 0.0, "lazily drawn clones should differ (gap {gap})");
}
