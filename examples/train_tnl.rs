//! Train TransNormerLLM on text with burn-train's `Learner`, then sample from it with
//! recurrent decoding.
//!
//! ```text
//! cargo run --release --example train_tnl                      # tiny model, Shakespeare, CPU
//! cargo run --release --example train_tnl -- --resume          # continue the run
//! cargo run --release --example train_tnl -- --data my_texts/ --steps 2000
//! cargo run --release --no-default-features --features ddp --example train_tnl -- \
//!     --backend cuda --devices 0,1 --preset 385m --seq-len 2048 --batch-size 8 \
//!     --steps 20000 --checkpoint-every 1000
//! ```
//!
//! `--features ddp` trains on several GPUs through burn-train's DDP (CUDA only in Burn 0.21;
//! see the README's Training section for what was measured).
//!
//! All flags: `cargo run --release --example train_tnl -- --help`. The training code lives in
//! `lightning_attention::train`, compiled once for every backend.

use std::process::ExitCode;

use clap::Parser;
use lightning_attention::train::cli::{TrainArgs, train_main};

fn main() -> ExitCode {
    match train_main(TrainArgs::parse()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
