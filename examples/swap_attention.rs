//! A small Burn model built with burn-nn's softmax `MultiHeadAttention`, trained on a task
//! that needs attention, then the same model with `lightning_op::nn::MultiHeadLightningAttention`.
//! The swap is the line that builds the layer:
//!
//! ```text
//! - MultiHeadAttentionConfig::new(D_MODEL, HEADS).with_dropout(0.0).init(device)
//! + MultiHeadLightningAttentionConfig::new(D_MODEL, HEADS).with_dropout(0.0).init(device)
//! ```
//!
//! (the forward call keeps its shape: `MhaInput::self_attn(x).mask_attn(causal)` becomes
//! `LightningInput::self_attn(x)`, causal by construction). The model is in
//! `lightning_attention::train::swap`.
//!
//! ```text
//! cargo run --release --example swap_attention [-- --steps 300 --backend ndarray]
//! ```

use std::process::ExitCode;

use clap::Parser;
use lightning_attention::train::cli::{SwapArgs, swap_main};

fn main() -> ExitCode {
    match swap_main(SwapArgs::parse()) {
        Ok(reports) => {
            println!();
            for r in &reports {
                let first = r.losses.first().copied().unwrap_or(f64::NAN);
                let last = r.losses.iter().rev().take(20).sum::<f64>()
                    / r.losses.len().clamp(1, 20) as f64;
                println!(
                    "{:?}: {} params | loss {first:.3} -> {last:.3} (mean of the last 20 steps) | held-out {:.3}, accuracy {:.1}% | {:.1} s",
                    r.kind,
                    r.params,
                    r.eval_loss,
                    100.0 * r.eval_accuracy,
                    r.seconds
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
