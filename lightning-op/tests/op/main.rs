//! lightning-op's tests: the f64 naive definition, the reference, the fused kernels
//! (WGPU, on lavapipe in CI), the recurrent step, sequence segments (LASP), and every bad
//! input.

mod errors;
mod fused;
mod lasp;
mod recurrent;
mod reference;
mod support;
