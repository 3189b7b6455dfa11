//! Checkpoints that cannot be resumed from are refused with an error naming the problem,
//! before burn-train would panic on them or load them silently.

use lightning_attention::train::cli::train_main;

use crate::fixture::{TempDir, rng_lock, short_args, write_corpus};

#[test]
fn corrupt_or_mismatched_checkpoints_are_refused() {
    let _rng = rng_lock();
    let dir = TempDir::new("checkpoint");
    let data = write_corpus(dir.path());
    let run = dir.path().join("run");
    train_main(short_args(&data, &run, 30, &["--stop-after", "1"])).expect("first checkpoint");

    // Other settings than the saved ones.
    let err = train_main(short_args(
        &data,
        &run,
        30,
        &["--resume", "--d-model", "64"],
    ))
    .expect_err("another model size must be refused")
    .to_string();
    assert!(
        err.contains("does not match") && err.contains("d_model"),
        "{err}"
    );
    let err = train_main(short_args(
        &data,
        &run,
        30,
        &["--resume", "--weight-decay", "0.5"],
    ))
    .expect_err("another weight decay must be refused")
    .to_string();
    assert!(
        err.contains("does not match") && err.contains("weight_decay"),
        "{err}"
    );

    // A model file that is not a checkpoint.
    let model = run.join("checkpoint/model-1.mpk");
    let good = std::fs::read(&model).unwrap();
    std::fs::write(&model, b"definitely not msgpack").unwrap();
    let err = train_main(short_args(&data, &run, 30, &["--resume"]))
        .expect_err("a corrupt model file must be refused")
        .to_string();
    assert!(
        err.contains("corrupt") && err.contains("model-1.mpk"),
        "{err}"
    );

    // A truncated optimizer file.
    std::fs::write(&model, &good).unwrap();
    let optim = run.join("checkpoint/optim-1.mpk");
    let bytes = std::fs::read(&optim).unwrap();
    std::fs::write(&optim, &bytes[..bytes.len() / 2]).unwrap();
    let err = train_main(short_args(&data, &run, 30, &["--resume"]))
        .expect_err("a truncated optimizer file must be refused")
        .to_string();
    assert!(
        err.contains("corrupt") && err.contains("optim-1.mpk"),
        "{err}"
    );

    // Nothing to resume from.
    let err = train_main(short_args(
        &data,
        &dir.path().join("empty"),
        30,
        &["--resume"],
    ))
    .expect_err("no run folder")
    .to_string();
    assert!(err.contains("no checkpoint to resume from"), "{err}");
}
