//! Training on real text (`lightning_attention::train`) and the lightning attention layer
//! (`lightning_op::nn`), on NdArray, in one test binary. No network: the text is a small
//! fixture written to a temporary folder.

mod checkpoint;
mod data;
mod fixture;
mod nn;
mod training;
