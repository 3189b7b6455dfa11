//! TNL and a softmax Transformer of the same width, depth and heads (burn-nn attention under
//! a causal mask, about the same parameter count) trained on the same data for the same
//! steps with the same settings; prints parameters, validation loss and perplexity, training
//! tokens/s, peak memory, and writes both loss curves to a PNG.
//!
//! ```text
//! cargo run --release --example compare_transformer [-- --steps 300 --plot runs/compare/loss_curves.png]
//! ```

use std::process::ExitCode;

use clap::Parser;
use lightning_attention::train::cli::{CompareArgs, compare_main};

fn main() -> ExitCode {
    match compare_main(CompareArgs::parse()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
