//! Generate text from a `train_tnl` checkpoint: the prompt is prefilled with the parallel
//! (blockwise) lightning attention, then each new token is one recurrent step against a
//! constant-size state. Reports tokens per second.
//!
//! ```text
//! cargo run --release --example generate -- --run-dir runs/train_tnl \
//!     --prompt "**JULIET**  " --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 1
//! ```

use std::process::ExitCode;

use clap::Parser;
use lightning_attention::train::cli::{GenerateArgs, generate_main};

fn main() -> ExitCode {
    match generate_main(GenerateArgs::parse()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
